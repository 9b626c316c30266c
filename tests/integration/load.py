"""Open-loop HTTP/1.1 load on 127.0.0.1 for the zero-downtime tests (stdlib only).

    lg = LoadGen(px.port, rate=300, header="X-Generation").start()
    ...                       # reload, upgrade, scale, kill a worker...
    st = lg.stop()            # dict, see below
    assert st["failures"] == 0, format_stats(st)

A scheduler thread issues requests at a fixed rate (tickets at t0 + n/rate), whether or not earlier
ones have finished: half of them (`fresh_share`) on a new connection each (one request, then the
connection is closed; every other one sends `Connection: close`), the other half on a pool of
`ka_conns` keep-alive connections, each owned by one thread. Nothing is ever retried.

Keep-alive connections: before a request is written on a reused connection, a zero-timeout
select + recv(MSG_PEEK) checks that the server has not already closed it (EOF or RST waiting); if
it has, the connection is replaced and that is not counted as a failure (`ka_reconnects`). A
response with `Connection: close` (or HTTP/1.0 without keep-alive) also retires the connection.
A request that was written and got no complete response IS a failure.

Counted failures (each also listed, with time and detail, in "errors", the first 50):
    connect_refused        connect() refused
    connect_failed         connect() reset or other error
    send_failed            writing the request failed (EPIPE/ECONNRESET)
    closed_before_response request written, then EOF/RST with zero response bytes
    incomplete_response    EOF/RST after some bytes but before the end of the response head
    truncated_body         EOF/RST inside the body (Content-Length or chunked framing unmet)
    status_5xx             a 5xx response
    unexpected_status      any other status than 200
    bad_response           unparseable response, stray bytes after it, or (verify_echo) a body
                           that is not the echo of this very request
    timeout                no complete response within `timeout` seconds of the request start
    tls_failed             (TLS mode) the TLS handshake failed (alert, bad certificate, ...)
Not failures, reported: ok, ka_reconnects (kept-alive connection found closed before a request),
ka_closed_by_server (responses with Connection: close on kept-alive connections), ka_stray
(unsolicited bytes on an idle kept-alive connection: connection dropped), unsent (tickets still
queued at stop), late (requests that started more than 1 s after their scheduled time),
headers (value of `header` -> count, "<none>" if absent, for every complete response),
latency_ms (p50/p99/max, measured from the scheduled time), inflight_max.

TLS mode: LoadGen(port, tls_context=ctx, server_hostname="a.test") speaks HTTPS; every new
connection (fresh or kept-alive) does a full handshake with that context (no session resumption
unless the context's caller arranges it), bounded by the request's timeout.
"""

import collections
import queue
import select
import socket
import ssl
import threading
import time

FAILURE_KINDS = ("connect_refused", "connect_failed", "send_failed", "closed_before_response",
                 "incomplete_response", "truncated_body", "status_5xx", "unexpected_status",
                 "bad_response", "timeout", "tls_failed")


class _Fail(Exception):
    def __init__(self, kind, detail=""):
        Exception.__init__(self, "%s: %s" % (kind, detail))
        self.kind = kind
        self.detail = detail


class _Resp:
    __slots__ = ("status", "headers", "body", "keep")


class _Reader:
    """Reads one response from a socket, every recv bounded by the request's deadline."""

    def __init__(self, sock, deadline):
        self.sock = sock
        self.deadline = deadline
        self.buf = bytearray()
        self.received = 0       # response bytes received on this request
        self.phase = "head"     # head | body

    def _fill(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Fail("timeout", "no complete response (phase %s, %d bytes)" % (
                self.phase, self.received))
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise _Fail("timeout", "no complete response (phase %s, %d bytes)" % (
                self.phase, self.received))
        except OSError as e:       # ECONNRESET mostly
            self._lost("%s" % (e.__class__.__name__,))
        if not data:
            self._lost("EOF")
        self.received += len(data)
        self.buf += data

    def _lost(self, how):
        if self.received == 0:
            raise _Fail("closed_before_response", how + " with no response byte")
        if self.phase == "head":
            raise _Fail("incomplete_response", "%s after %d bytes of head: %r" % (
                how, self.received, bytes(self.buf[:120])))
        raise _Fail("truncated_body", "%s inside the body (%d bytes received)" % (
            how, self.received))

    def head(self):
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                h = bytes(self.buf[:i + 4])
                del self.buf[:i + 4]
                return h
            if len(self.buf) > 65536:
                raise _Fail("bad_response", "head longer than 64 KiB")
            self._fill()

    def line(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                ln = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return ln
            if len(self.buf) > 65536:
                raise _Fail("bad_response", "chunk line too long")
            self._fill()

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def to_eof(self):
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise _Fail("timeout", "close-delimited body not finished")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise _Fail("timeout", "close-delimited body not finished")
            except OSError as e:
                raise _Fail("truncated_body", "%s in a close-delimited body" % e.__class__.__name__)
            if not data:
                out = bytes(self.buf)
                self.buf.clear()
                return out
            self.received += len(data)
            self.buf += data

    def response(self):
        while True:
            self.phase = "head"
            head = self.head()
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise _Fail("bad_response", "bad status line %r" % lines[0][:100])
            status = int(parts[1])
            headers = {}
            for ln in lines[1:]:
                if ln:
                    k, _, v = ln.partition(":")
                    headers.setdefault(k.strip().lower(), v.strip())
            if 100 <= status < 200:
                continue           # interim response
            break
        self.phase = "body"
        conn_tokens = [x.strip().lower() for x in headers.get("connection", "").split(",")]
        if parts[0] == "HTTP/1.1":
            keep = "close" not in conn_tokens
        else:
            keep = "keep-alive" in conn_tokens
        te = headers.get("transfer-encoding")
        cl = headers.get("content-length")
        if status in (204, 304):
            body = b""
        elif te is not None:
            if te.split(",")[-1].strip().lower() != "chunked":
                raise _Fail("bad_response", "transfer-encoding %r" % te)
            pieces = []
            while True:
                ln = self.line().strip()
                try:
                    size = int(ln.split(b";")[0], 16)
                except ValueError:
                    raise _Fail("bad_response", "bad chunk size line %r" % ln[:50])
                if size == 0:
                    while self.line() not in (b"\r\n", b"\n"):
                        pass
                    break
                pieces.append(self.exact(size))
                if self.line() not in (b"\r\n", b"\n"):
                    raise _Fail("bad_response", "no CRLF after chunk data")
            body = b"".join(pieces)
        elif cl is not None:
            try:
                n = int(cl)
            except ValueError:
                raise _Fail("bad_response", "Content-Length %r" % cl)
            body = self.exact(n)
        else:
            body = self.to_eof()
            keep = False
        if self.buf:
            raise _Fail("bad_response", "%d stray bytes after the response: %r" % (
                len(self.buf), bytes(self.buf[:80])))
        r = _Resp()
        r.status, r.headers, r.body, r.keep = status, headers, body, keep
        return r


def _connect(port, deadline, tls_context=None, server_hostname=None):
    left = max(0.05, deadline - time.monotonic())
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=left)
    except ConnectionRefusedError:
        raise _Fail("connect_refused", "connect refused")
    except socket.timeout:
        raise _Fail("timeout", "connect timed out")
    except OSError as e:
        raise _Fail("connect_failed", "connect: %s" % e)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls_context is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            s.close()
            raise _Fail("timeout", "before the TLS handshake")
        s.settimeout(left)
        try:
            s = tls_context.wrap_socket(s, server_hostname=server_hostname)
        except socket.timeout:
            s.close()
            raise _Fail("timeout", "TLS handshake timed out")
        except ssl.SSLError as e:
            s.close()
            raise _Fail("tls_failed", "TLS handshake: %s" % e)
        except OSError as e:
            s.close()
            raise _Fail("connect_failed", "TLS handshake: %r" % e)
    return s


def _send(sock, data, deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Fail("timeout", "before sending")
    sock.settimeout(left)
    try:
        sock.sendall(data)
    except socket.timeout:
        raise _Fail("timeout", "sending the request")
    except OSError as e:
        raise _Fail("send_failed", "send: %s" % e)


def _peer_closed(sock):
    """None if the idle connection looks alive, else why it is unusable ("eof", "rst", "stray")."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return "stray"
    try:
        r, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return "error"
    if not r:
        return None
    if isinstance(sock, ssl.SSLSocket):
        # Readable may mean a TLS record that carries no data (a late session ticket): read
        # without blocking to tell it from close_notify/EOF/RST or stray bytes.
        sock.setblocking(False)
        try:
            data = sock.recv(1)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return None
        except OSError:
            return "rst"
        return "eof" if not data else "stray"
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None
    except OSError:
        return "rst"
    return "eof" if not data else "stray"


class LoadGen:
    def __init__(self, port, rate=300, path="/echo", header="X-Generation", ka_conns=16,
                 fresh_threads=32, timeout=5.0, fresh_share=0.5, verify_echo=True,
                 max_duration=300.0, host=None, tls_context=None, server_hostname=None):
        self.port = port
        self.tls_context = tls_context
        self.server_hostname = server_hostname
        self.rate = float(rate)
        self.path = path
        self.header = header.lower() if header else None
        self.header_name = header
        self.ka_conns = ka_conns
        self.fresh_threads = fresh_threads
        self.timeout = timeout
        self.fresh_share = fresh_share
        self.verify_echo = verify_echo
        self.max_duration = max_duration
        self.host = host or "127.0.0.1:%d" % port
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._fresh_q = queue.Queue()
        self._ka_q = queue.Queue()
        self._threads = []
        self._ka_socks = [None] * ka_conns
        self._counts = collections.Counter()
        self._headers = collections.Counter()
        self._errors = []
        self._latencies = []
        self._inflight = 0
        self._inflight_max = 0
        self._started = 0
        self._late_max = 0.0
        self._t0 = None
        self._t_end = None

    # -- public

    def start(self):
        self._t0 = time.monotonic()
        th = threading.Thread(target=self._schedule, name="load-sched", daemon=True)
        self._threads.append(th)
        for i in range(self.fresh_threads):
            self._threads.append(threading.Thread(target=self._fresh_loop, daemon=True,
                                                  name="load-fresh-%d" % i))
        for i in range(self.ka_conns):
            self._threads.append(threading.Thread(target=self._ka_loop, args=(i,), daemon=True,
                                                  name="load-ka-%d" % i))
        for th in self._threads:
            th.start()
        return self

    def inflight(self):
        """Requests started (connect or liveness check begun) and not finished yet."""
        with self._lock:
            return self._inflight

    def started(self):
        with self._lock:
            return self._started

    def elapsed(self):
        return time.monotonic() - self._t0

    def stats(self):
        """A snapshot of the counts so far (same shape as stop()'s result)."""
        with self._lock:
            c = collections.Counter(self._counts)
            headers = dict(self._headers)
            errors = list(self._errors)
            lat = sorted(self._latencies)
            inflight_max = self._inflight_max
            started = self._started
            late_max = self._late_max
        end = self._t_end or time.monotonic()
        out = {k: c.get(k, 0) for k in FAILURE_KINDS}
        out["failures"] = sum(out[k] for k in FAILURE_KINDS)
        for k in ("ok", "ka_reconnects", "ka_closed_by_server", "ka_stray", "unsent", "late",
                  "fresh", "ka"):
            out[k] = c.get(k, 0)
        out["requests"] = started
        out["duration_s"] = round(end - self._t0, 2) if self._t0 else 0.0
        out["rate"] = self.rate
        out["headers"] = headers
        out["errors"] = errors
        out["inflight_max"] = inflight_max
        out["late_max_ms"] = round(late_max * 1000, 1)

        def pct(p):
            if not lat:
                return None
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1)
        out["latency_ms"] = {"p50": pct(0.5), "p99": pct(0.99),
                             "max": round(lat[-1] * 1000, 1) if lat else None}
        return out

    def stop(self):
        """Stop issuing requests, let those in flight finish (bounded by timeout), close the
        kept-alive connections; return the stats."""
        self._stop.set()
        deadline = time.monotonic() + self.timeout + 5
        for th in self._threads:
            th.join(max(0.1, deadline - time.monotonic()))
        unsent = 0
        for q in (self._fresh_q, self._ka_q):
            while True:
                try:
                    q.get_nowait()
                    unsent += 1
                except queue.Empty:
                    break
        stuck = [th.name for th in self._threads if th.is_alive()]
        with self._lock:
            self._counts["unsent"] += unsent
            if stuck:
                self._errors.append((round(self.elapsed(), 3), "internal",
                                     "threads still running at stop: %r" % stuck[:5]))
        for i, s in enumerate(self._ka_socks):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
                self._ka_socks[i] = None
        self._t_end = time.monotonic()
        return self.stats()

    # -- internals

    def _schedule(self):
        n = 0
        acc = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - self._t0 > self.max_duration:
                self._stop.set()
                break
            due = int((now - self._t0) * self.rate) + 1
            while n < due:
                sched = self._t0 + n / self.rate
                acc += self.fresh_share
                if acc >= 1.0:
                    acc -= 1.0
                    self._fresh_q.put((n, sched))
                else:
                    self._ka_q.put((n, sched))
                n += 1
            nxt = self._t0 + n / self.rate
            time.sleep(max(0.0005, min(0.01, nxt - time.monotonic())))

    def _take(self, q):
        while not self._stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    def _begin(self, sched, mode):
        now = time.monotonic()
        with self._lock:
            self._inflight += 1
            self._started += 1
            self._counts[mode] += 1
            if self._inflight > self._inflight_max:
                self._inflight_max = self._inflight
            late = now - sched
            if late > self._late_max:
                self._late_max = late
            if late > 1.0:
                self._counts["late"] += 1

    def _end(self, sched, kind, detail="", resp=None, mode=""):
        now = time.monotonic()
        with self._lock:
            self._inflight -= 1
            self._counts[kind] += 1
            if resp is not None and self.header:
                self._headers[resp.headers.get(self.header, "<none>")] += 1
            if kind == "ok":
                self._latencies.append(now - sched)
            elif len(self._errors) < 50:
                self._errors.append((round(now - self._t0, 3), kind, "%s %s" % (mode, detail)))

    def _request_bytes(self, n, close):
        target = "%s%slg=%d" % (self.path, "&" if "?" in self.path else "?", n)
        lines = ["GET %s HTTP/1.1" % target, "Host: %s" % self.host, "User-Agent: proxyd-loadgen"]
        if close:
            lines.append("Connection: close")
        return target, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _check(self, resp, target):
        """-> (kind, detail) for a complete response."""
        if resp.status >= 500:
            return "status_5xx", "status %d body %r" % (resp.status, resp.body[:200])
        if resp.status != 200:
            return "unexpected_status", "status %d body %r" % (resp.status, resp.body[:200])
        if self.verify_echo and ('"path": "%s"' % target).encode() not in resp.body:
            return "bad_response", "body is not the echo of %s: %r" % (target, resp.body[:200])
        return "ok", ""

    def _fresh_loop(self):
        while True:
            item = self._take(self._fresh_q)
            if item is None:
                return
            n, sched = item
            self._begin(sched, "fresh")
            deadline = time.monotonic() + self.timeout
            target, data = self._request_bytes(n, close=(n % 4 in (0, 1)))
            sock = None
            resp = None
            try:
                sock = _connect(self.port, deadline, self.tls_context, self.server_hostname)
                _send(sock, data, deadline)
                resp = _Reader(sock, deadline).response()
                kind, detail = self._check(resp, target)
            except _Fail as f:
                kind, detail = f.kind, f.detail
            except Exception as e:          # a bug here must not look like a pass
                kind, detail = "bad_response", "loadgen: %r" % e
            finally:
                if sock is not None:
                    try:
                        sock.close()
                    except OSError:
                        pass
            self._end(sched, kind, detail, resp, "fresh")

    def _ka_loop(self, i):
        sock = None
        while True:
            item = self._take(self._ka_q)
            if item is None:
                break
            n, sched = item
            self._begin(sched, "ka")
            deadline = time.monotonic() + self.timeout
            target, data = self._request_bytes(n, close=False)
            resp = None
            try:
                if sock is not None:
                    why = _peer_closed(sock)
                    if why is not None:
                        with self._lock:
                            self._counts["ka_stray" if why == "stray" else "ka_reconnects"] += 1
                        sock.close()
                        sock = self._ka_socks[i] = None
                if sock is None:
                    sock = self._ka_socks[i] = _connect(self.port, deadline, self.tls_context,
                                                        self.server_hostname)
                _send(sock, data, deadline)
                resp = _Reader(sock, deadline).response()
                kind, detail = self._check(resp, target)
                if not resp.keep:
                    with self._lock:
                        self._counts["ka_closed_by_server"] += 1
                    sock.close()
                    sock = self._ka_socks[i] = None
            except _Fail as f:
                kind, detail = f.kind, f.detail
            except Exception as e:
                kind, detail = "bad_response", "loadgen: %r" % e
            if kind != "ok" and sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
                sock = self._ka_socks[i] = None
            self._end(sched, kind, detail, resp, "ka")


def format_stats(st):
    """A few readable lines for test output."""
    fails = ", ".join("%s=%d" % (k, st[k]) for k in FAILURE_KINDS if st[k])
    lines = [
        "load: %d requests in %.1fs at %g/s (fresh %d, keep-alive %d): ok %d, failures %d%s" % (
            st["requests"], st["duration_s"], st["rate"], st["fresh"], st["ka"], st["ok"],
            st["failures"], " (%s)" % fails if fails else ""),
        "      closed_before_response=%d ka_reconnects=%d ka_closed_by_server=%d ka_stray=%d "
        "unsent=%d late=%d late_max=%sms inflight_max=%d latency=%r" % (
            st["closed_before_response"], st["ka_reconnects"], st["ka_closed_by_server"],
            st["ka_stray"], st["unsent"], st["late"], st["late_max_ms"], st["inflight_max"],
            st["latency_ms"]),
        "      headers: %r" % (st["headers"],),
    ]
    for e in st["errors"][:20]:
        lines.append("      error at %.3fs: %s %s" % e)
    return "\n".join(lines)

