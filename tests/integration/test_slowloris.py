"""Slowloris: many connections that send a request head one byte a second and never finish it.

The header timeout alone (10 s here) would let each of them hold a connection for 10 s; the
minimum-rate rule (`[server.limits] min_request_rate`, `[server.timeouts] min_rate_grace`)
closes a head that, after the grace period, has arrived slower than min_request_rate bytes/s on
average. The attacker below keeps 1,000 such connections open (re-opening each one the proxy
closes, like the real tool) while a normal client makes 50 requests, one every 100 ms; the same
50 requests are first measured without the attack. Latencies are printed (run.py shows a test's
output when it fails; run this module alone to see them:
`run.py ... -k test_slowloris`).
"""

import errno
import math
import resource
import selectors
import socket
import threading
import time

import harness

ATTACK_CONNECTIONS = 1000
GRACE = 2.0          # min_rate_grace
HEADER_TIMEOUT = 10.0
REQUESTS = 50
REQUEST_GAP = 0.1    # seconds between the normal client's requests
REQUEST_TIMEOUT = 5.0
HEAD_START = b"GET / HTTP/1.1\r\nHost: x\r\n"
TRICKLE = b"X-Loris: " + b"a" * 4096   # one byte a second, never reaches CRLF


def _raise_fd_limit(need):
    """Soft RLIMIT_NOFILE up to the hard limit (capped at 20,000); proxyd, started afterwards,
    inherits it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 20000 if hard == resource.RLIM_INFINITY else min(hard, 20000)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    assert soft >= need, "RLIMIT_NOFILE %d (hard %r) is below the %d this test needs" % (
        soft, hard, need)


def _percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list."""
    k = max(0, math.ceil(p / 100.0 * len(sorted_values)) - 1)
    return sorted_values[min(k, len(sorted_values) - 1)]


def _summary(values):
    v = sorted(values)
    return "median %.1f ms, p99 %.1f ms, max %.1f ms" % (
        _percentile(v, 50) * 1000, _percentile(v, 99) * 1000, v[-1] * 1000)


class _Loris:
    """One slow connection: non-blocking connect, the start of a head, then a byte a second."""

    __slots__ = ("sock", "opened", "connected", "sent", "next_send", "generation")

    def __init__(self, port, generation):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.generation = generation
        self.opened = time.monotonic()
        self.connected = False
        self.sent = 0
        self.next_send = 0.0
        err = self.sock.connect_ex(("127.0.0.1", port))
        if err not in (0, errno.EINPROGRESS):
            self.sock.close()
            raise OSError(err, "connect")


class Attack:
    """Keeps `n` slowloris connections open from one thread (selectors, non-blocking sockets).
    Each connection the proxy closes (a 408 or a plain close) is recorded with its lifetime and
    replaced while the attack runs."""

    def __init__(self, port, n):
        self.port = port
        self.n = n
        self.sel = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.lifetimes = []          # (generation, seconds from connect to the proxy's close)
        self.closed_with_408 = 0
        self.closed_silently = 0
        self.connect_errors = 0
        self.open_count = 0
        self.established = 0         # connections that completed connect and sent their start
        self._stop = threading.Event()
        self._reopen = True
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()

    def stop_reopening(self):
        self._reopen = False

    def stop(self):
        self._stop.set()
        self._thread.join(10)

    def _open(self, generation):
        try:
            c = _Loris(self.port, generation)
        except OSError:
            self.connect_errors += 1
            return
        self.sel.register(c.sock, selectors.EVENT_WRITE, c)
        self.open_count += 1

    def _close(self, c):
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        self.open_count -= 1

    def _on_event(self, c, now):
        if not c.connected:
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.connect_errors += 1
                self._close(c)
                return
            c.connected = True
            try:
                c.sock.send(HEAD_START)
            except OSError:
                self.connect_errors += 1
                self._close(c)
                return
            c.next_send = now + 1.0
            self.sel.modify(c.sock, selectors.EVENT_READ, c)
            with self.lock:
                self.established += 1
            return
        try:
            data = c.sock.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        except BlockingIOError:
            return
        with self.lock:
            self.lifetimes.append((c.generation, now - c.opened))
            if data.startswith(b"HTTP/1.1 408") or data.startswith(b"HTTP/1.0 408"):
                self.closed_with_408 += 1
            else:
                self.closed_silently += 1
        self._close(c)
        if self._reopen and not self._stop.is_set():
            self._open(c.generation + 1)

    def _trickle(self, now):
        for key in list(self.sel.get_map().values()):
            c = key.data
            if c.connected and now >= c.next_send:
                c.next_send = now + 1.0
                try:
                    c.sock.send(TRICKLE[c.sent % len(TRICKLE):c.sent % len(TRICKLE) + 1])
                    c.sent += 1
                except BlockingIOError:
                    pass
                except OSError:
                    pass   # reset: the read side reports it

    def _run(self):
        try:
            for _ in range(self.n):
                self._open(0)
            last_trickle = 0.0
            while not self._stop.is_set():
                for key, _ in self.sel.select(0.05):
                    self._on_event(key.data, time.monotonic())
                now = time.monotonic()
                if now - last_trickle >= 0.1:
                    last_trickle = now
                    self._trickle(now)
        finally:
            for key in list(self.sel.get_map().values()):
                try:
                    key.fileobj.close()
                except OSError:
                    pass
            self.sel.close()


def _normal_client(px):
    """REQUESTS sequential requests, each on a new connection, REQUEST_GAP apart; latencies."""
    lat = []
    for i in range(REQUESTS):
        t0 = time.monotonic()
        r = px.get("/echo?i=%d" % i, timeout=REQUEST_TIMEOUT)
        took = time.monotonic() - t0
        assert r.status == 200, "request %d: %r" % (i, r)
        lat.append(took)
        time.sleep(max(0.0, REQUEST_GAP - took))
    return lat


@harness.timeout(90)
def test_slowloris_min_rate(t):
    _raise_fd_limit(ATTACK_CONNECTIONS + 500)
    be = t.backend()
    px = t.proxy_to(be, server={
        "workers": 2,
        "timeouts": {"header": "%ds" % HEADER_TIMEOUT, "min_rate_grace": "%ds" % GRACE},
        "limits": {"min_request_rate": 512},
    })
    base = _normal_client(px)
    print("report: baseline (no attack):   %s" % _summary(base))

    attack = Attack(px.port, ATTACK_CONNECTIONS)
    t_attack = time.monotonic()
    attack.start()
    try:
        harness.wait_until(lambda: attack.established >= ATTACK_CONNECTIONS, timeout=5,
                           msg="1000 slowloris connections not established within 5s")
        setup = time.monotonic() - t_attack
        under = _normal_client(px)
        print("report: under attack (%d slow connections): %s" % (ATTACK_CONNECTIONS, _summary(under)))
        # let the first generation finish, then stop replacing closed connections
        harness.wait_until(
            lambda: sum(1 for g, _ in attack.lifetimes if g == 0) >= ATTACK_CONNECTIONS,
            timeout=HEADER_TIMEOUT, interval=0.1,
            msg="slowloris connections still open after %.0fs: the min-rate rule did not "
                "close them" % HEADER_TIMEOUT)
        attack.stop_reopening()
    finally:
        attack.stop()

    with attack.lock:
        first = sorted(life for g, life in attack.lifetimes if g == 0)
        total = len(attack.lifetimes)
        w408, silent, errs = attack.closed_with_408, attack.closed_silently, attack.connect_errors
    print("report: attack: %d connections in %.2fs; %d closed by the proxy (%d with 408, %d silently), "
          "%d connect errors" % (ATTACK_CONNECTIONS, setup, total, w408, silent, errs))
    print("report: first-generation lifetime: min %.2fs, median %.2fs, max %.2fs (grace %.0fs, header "
          "timeout %.0fs)" % (first[0], _percentile(first, 50), first[-1], GRACE, HEADER_TIMEOUT))

    assert errs <= ATTACK_CONNECTIONS // 100, "%d slowloris connects failed" % errs
    # closed by the min-rate rule: after the grace period, well before the header timeout
    assert first[0] >= GRACE - 0.3, "a slow head was closed after %.2fs, before the %.0fs grace" % (
        first[0], GRACE)
    assert first[-1] <= GRACE + 3.0, (
        "slowest slowloris connection lived %.2fs (grace %.0fs, header timeout %.0fs)" % (
            first[-1], GRACE, HEADER_TIMEOUT))
    # the normal client: every request fine, none anywhere near its timeout
    assert max(under) < 1.0, "a request took %.2fs under attack" % max(under)
    assert be.served == 2 * REQUESTS, "the backend saw %d requests (slow heads must not reach " \
                                      "it)" % be.served
