"""Zero downtime (issue 3): reload, binary upgrade, runtime scaling, crash recovery and log
reopening, each under open-loop load (load.py) that mixes a new connection per request with
kept-alive connections, never retries, and must see no failed request.

Every response carries `X-Generation` from `server.response_headers`; the configs written between
reloads/upgrades differ in it, so the load sees which generation served each request.

The reload and scaling tests also read the kernel's `TcpExtListenDrops`, `TcpExtListenOverflows`
and `TcpExtTCPAbortOnClose` (nstat) before and after. When the test runs as root, it first moves
its own process (and so proxyd, the backend and the load) into a private network namespace with
only loopback, so that these counters count this test's sockets alone; otherwise they are
host-wide: ListenDrops/ListenOverflows are then asserted only when no other listener on the host has
a full accept queue, and TCPAbortOnClose (which other tests' sockets also raise) is only printed.
In the private namespace all three must stay at 0 (measured: they do, over every test here).
"""

import ctypes
import fcntl
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import time

import harness
from harness import build_request, children_of, parse_head, hget, pid_alive, wait_until
from load import LoadGen, format_stats

RATE = 300                # requests per second of the load, half on new connections
# The backend holds each request 20 ms, so that at any moment ~6 requests are in flight: a reload,
# upgrade or scale step always finds some to finish on the generation it retires.
LOAD_PATH = "/echo?delay_ms=20"
HDR = "X-Generation"

# Two configs: they differ in X-Generation and in a route (/only-b strips its prefix in "b").
ROUTES = {
    "a": [{"path": "/", "upstream": "b"}],
    "b": [{"path": "/only-b", "upstream": "b", "strip_prefix": True},
          {"path": "/", "upstream": "b"}],
}


def _server(tag, workers, shutdown_timeout="5s"):
    return {"workers": workers, "shutdown_timeout": shutdown_timeout,
            "response_headers": {HDR: tag}}


def _replace_file(path, text):
    """Write text to path atomically (temp file + rename), as a config management tool would."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _write_config(px, tag=None, routes=None, **server):
    """Rewrite px's config file atomically: X-Generation = tag, routes, other [server] keys."""
    over = {"server": dict(server)}
    if tag is not None:
        over["server"]["response_headers"] = {HDR: tag}
    if routes is not None:
        over["routes"] = routes
    px.cfg = harness.merge(px.cfg, over)
    _replace_file(px.config_path, harness.to_toml(px.cfg))


def _ctl_fail(what, r):
    return "%s: exit %d\n--- stdout:\n%s--- stderr:\n%s" % (what, r.returncode, r.stdout, r.stderr)


def _one_line(what, r):
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    assert len(lines) == 1, "%s: expected a one-line result, got %r" % (what, r.stdout)
    return lines[0]


def _current(st):
    return [w for w in st["workers"] if w.get("generation") == st["generation"]]


def _active(ws):
    return [w for w in ws if w.get("state") == "active"]


def _check_new_generation(px, gen_before, n, what):
    """Right after a reload/scale/upgrade returned: generation +1, n active workers of it, and
    the workers of earlier generations no longer active."""
    st = px.status_json()
    assert st["generation"] == gen_before + 1, "%s: generation %r, expected %d\n%r" % (
        what, st["generation"], gen_before + 1, st)
    cur = _current(st)
    assert len(cur) == n and len(_active(cur)) == n, (
        "%s: when the command returned, status shows %d worker(s) of generation %d (%d active), "
        "expected %d active: %r" % (what, len(cur), st["generation"], len(_active(cur)), n, st))
    old_active = [w for w in _active(st["workers"]) if w not in cur]
    assert not old_active, "%s: workers of older generations still active: %r" % (what, old_active)
    return st


def _wait_generation(px, gen, n, timeout, what):
    """After a signal (no reply to wait for): until status shows generation gen with n active."""
    last = {}

    def done():
        st = last["st"] = px.status_json()
        return st["generation"] == gen and len(_active(_current(st))) == n and st
    try:
        return wait_until(done, timeout, 0.05)
    except AssertionError:
        raise AssertionError("%s: status never showed generation %d with %d active workers "
                             "within %.0fs: %r" % (what, gen, n, timeout, last.get("st")))


def _wait_settled(px, n, timeout, what):
    """Until only the n workers of the current generation remain: in status, all active, and as
    the master's only child processes (/proc)."""
    last = {}

    def done():
        st = last["st"] = px.status_json()
        ws = st["workers"]
        pids = {w["pid"] for w in ws}
        kids = last["kids"] = set(children_of(st["master_pid"]))
        return (len(ws) == n and len(_active(_current(st))) == n and kids == pids
                and all(pid_alive(p) for p in pids)) and st
    try:
        return wait_until(done, timeout, 0.1)
    except AssertionError:
        st = last.get("st") or {}
        kids = last.get("kids", set())
        raise AssertionError(
            "%s: %.1fs later there are still other workers than the %d of generation %r.\n"
            "status: %r\nchildren of the master: %r" % (
                what, timeout, n, st.get("generation"), st,
                {p: harness.pid_cmdline(p) for p in kids}))


def _leftover_workers(px, keep):
    """Worker pids seen in status during the test, not in keep, still running as proxyd."""
    return sorted(p for p in px.seen_pids
                  if p not in keep and pid_alive(p) and "proxyd" in harness.pid_cmdline(p))


def _gen_header(px, path="/echo"):
    r = px.get(path, timeout=5)
    assert r.status == 200, r
    return r.header(HDR)


def _wait_header(px, tag, timeout=3.0):
    last = {}

    def done():
        last["v"] = _gen_header(px)
        return last["v"] == tag
    try:
        wait_until(done, timeout, 0.05)
    except AssertionError:
        raise AssertionError("new connections still answered with %s %r, %.0fs after the change "
                             "to %r" % (HDR, last.get("v"), timeout, tag))


def _assert_load_clean(stats):
    print(format_stats(stats))
    assert stats["requests"] > 0 and stats["ok"] > 0, "the load sent nothing:\n" + format_stats(
        stats)
    assert stats["closed_before_response"] == 0, (
        "%d request(s) were written and then the connection closed with no response byte\n%s" % (
            stats["closed_before_response"], format_stats(stats)))
    assert stats["failures"] == 0, "%d failed request(s)\n%s" % (stats["failures"],
                                                                 format_stats(stats))
    assert stats["headers"].get("<none>", 0) == 0, (
        "%d response(s) without %s\n%s" % (stats["headers"]["<none>"], HDR, format_stats(stats)))


# ----------------------------------------------------------------------------------------------
# kernel counters, in a private network namespace when possible

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
NSTAT_KEYS = ("TcpExtListenDrops", "TcpExtListenOverflows", "TcpExtTCPAbortOnClose")


def _own_netns():
    """Move this test's process into a new network namespace with loopback up (root only).
    Must run before anything opens a socket or starts a thread; every process and thread started
    afterwards (backend, proxyd, load) inherits it. True on success; on failure nothing changed."""
    if os.geteuid() != 0 or not hasattr(os, "O_RDONLY"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        old = os.open("/proc/self/ns/net", os.O_RDONLY)
    except OSError:
        return False
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            return False
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                ifr = fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0))
                flags = struct.unpack("16sH22x", ifr)[1]
                fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
            finally:
                s.close()
            ls = socket.socket()
            try:
                ls.bind(("127.0.0.1", 0))
                ls.listen(1)
                socket.create_connection(ls.getsockname(), 1).close()
            finally:
                ls.close()
            return True
        except OSError:
            libc.setns(old, CLONE_NEWNET)
            return False
    finally:
        os.close(old)


def _nstat():
    try:
        r = subprocess.run(["nstat", "-asz"] + list(NSTAT_KEYS), capture_output=True, text=True,
                           timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    out = dict.fromkeys(NSTAT_KEYS, 0)
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in out:
            out[parts[0]] = int(parts[1])
    return out


def _full_listeners(exclude_ports):
    """Other TCP listeners whose accept queue is full right now (they make ListenDrops and
    ListenOverflows grow: e.g. harness.T.blackhole_address in a test running in parallel)."""
    try:
        r = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, timeout=10,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return {"ss unavailable"}
    out = set()
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) < 4 or not parts[1].isdigit() or not parts[2].isdigit():
            continue
        port = parts[3].rsplit(":", 1)[-1]
        if int(parts[1]) > int(parts[2]) and port not in {str(p) for p in exclude_ports}:
            out.add(parts[3])
    return out


class NetCounters:
    """nstat deltas over a test; ListenDrops/ListenOverflows must not grow."""

    def __init__(self, isolated, px):
        self.isolated = isolated
        self.px = px
        self.before = _nstat()
        self.foreign = set() if isolated else _full_listeners(px.ports)

    def check(self, assert_abort_on_close=None):
        after = _nstat()
        if self.before is None or after is None:
            print("note: nstat (iproute2) not available: ListenDrops/ListenOverflows/"
                  "TCPAbortOnClose not checked")
            return
        d = {k: after[k] - self.before[k] for k in NSTAT_KEYS}
        print("nstat deltas (%s): %s" % (
            "this test's own network namespace" if self.isolated else "whole host",
            ", ".join("%s=%d" % kv for kv in d.items())))
        if not self.isolated:
            foreign = self.foreign | _full_listeners(self.px.ports)
            if foreign:
                print("note: other listeners on this host have a full accept queue (%s): "
                      "the host-wide counters are not this test's; not asserted" % sorted(foreign))
                return
        assert d["TcpExtListenDrops"] == 0 and d["TcpExtListenOverflows"] == 0, (
            "connections dropped at a listening socket: %r" % d)
        if assert_abort_on_close is None:
            assert_abort_on_close = self.isolated
        if assert_abort_on_close:
            assert d["TcpExtTCPAbortOnClose"] == 0, (
                "sockets closed with unread data (RST sent): %r" % d)


# ----------------------------------------------------------------------------------------------
# reload

@harness.timeout(100)
def test_reload_50_times_under_load(t):
    """50 reloads, 100-500 ms apart (5 of them by SIGHUP), alternating two configs, under load:
    no failed request, both generations' header seen, and after shutdown_timeout only the last
    generation's workers remain."""
    isolated = _own_netns()
    be = t.backend()
    px = t.proxy_to(be, routes=ROUTES["a"], server=_server("a", 2, "5s"))
    net = NetCounters(isolated, px)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print("pauses: random seed %d" % seed)
    gen0 = px.status_json()["generation"]
    took = []
    lg = LoadGen(px.port, rate=RATE, path=LOAD_PATH).start()
    try:
        time.sleep(0.5)
        tag = "a"
        for i in range(1, 51):
            tag = "b" if i % 2 else "a"
            _write_config(px, tag, ROUTES[tag])
            what = "reload #%d" % i
            t0 = time.monotonic()
            if i % 10 == 5:
                what += " (SIGHUP)"
                px.signal(signal.SIGHUP)
                _wait_generation(px, gen0 + i, 2, 10, what)
            else:
                r = px.proxyctl("reload", timeout=30)
                assert r.returncode == 0, _ctl_fail(what, r)
                line = _one_line(what, r)
                assert re.search(r"\b%d\b" % (gen0 + i), line), (
                    "%s: the result %r does not give the new generation %d" % (
                        what, line, gen0 + i))
                _check_new_generation(px, gen0 + i - 1, 2, what)
            took.append(time.monotonic() - t0)
            last_change = time.monotonic()
            time.sleep(rng.uniform(0.1, 0.5))
        _wait_header(px, tag)
        time.sleep(0.3)
    finally:
        stats = lg.stop()
    took.sort()
    print("reload took: median %.0f ms, max %.0f ms" % (took[len(took) // 2] * 1000,
                                                         took[-1] * 1000))
    _assert_load_clean(stats)
    assert stats["headers"].get("a") and stats["headers"].get("b"), (
        "both generations should have served requests: %r" % stats["headers"])
    # the last config's route is in effect
    want = "/echo" if tag == "b" else "/only-b/echo"
    assert px.get("/only-b/echo").json()["path"] == want
    # old workers: gone by shutdown_timeout (+3 s margin for the master to notice and reap)
    st = _wait_settled(px, 2, max(0.5, last_change + 5 + 3 - time.monotonic()),
                       "after the last reload + shutdown_timeout (5s)")
    assert st["generation"] == gen0 + 50, st
    left = _leftover_workers(px, {w["pid"] for w in st["workers"]})
    assert not left, "workers of old generations still running: %r" % {
        p: harness.pid_cmdline(p) for p in left}
    print("worker pids seen: %d" % len(px.seen_pids))
    net.check()


def _assert_invalid(what, r, path, line=None):
    assert r.returncode == 1, _ctl_fail(what + ": expected exit 1", r)
    locs = re.findall(re.escape(path) + r":(\d+):(\d+): \S", r.stderr)
    assert locs, "%s: no `%s:LINE:COLUMN: message` on stderr: %r" % (what, path, r.stderr)
    if line is not None:
        assert any(int(l) == line for l, _ in locs), (
            "%s: error expected at line %d: %r" % (what, line, r.stderr))


@harness.timeout(60)
def test_reload_invalid_config_keeps_serving(t):
    """An invalid config on reload: exit 1 with FILE:LINE:COL, nothing changes (same workers, same
    generation, same responses), traffic continues; SIGHUP with it is logged and ignored; fixing
    the file makes the next reload work."""
    isolated = _own_netns()
    be = t.backend()
    px = t.proxy_to(be, server=_server("a", 2, "5s"))
    net = NetCounters(isolated, px)
    st0 = px.status_json()
    gen0 = st0["generation"]
    pids0 = sorted(w["pid"] for w in st0["workers"])
    good = open(px.config_path).read()

    def unchanged(what):
        st = px.status_json()
        assert st["generation"] == gen0, "%s: generation changed: %r" % (what, st)
        assert sorted(w["pid"] for w in st["workers"]) == pids0, (
            "%s: the workers changed (was %r): %r" % (what, pids0, st))
        assert len(_active(st["workers"])) == 2, "%s: %r" % (what, st)
        assert _gen_header(px) == "a"

    lg = LoadGen(px.port, rate=RATE, path=LOAD_PATH).start()
    try:
        time.sleep(0.5)
        # a semantic error: a route naming an upstream that does not exist
        bad = good + '\n[[routes]]\npath = "/x"\nupstream = "nope"\n'
        line = bad.splitlines().index('upstream = "nope"') + 1
        _replace_file(px.config_path, bad)
        r = px.proxyctl("reload", timeout=30)
        print("semantic error: exit %d, stderr %r" % (r.returncode, r.stderr))
        _assert_invalid("reload of a route to a missing upstream", r, px.config_path, line)
        unchanged("after the invalid reload")
        time.sleep(0.3)
        # a TOML syntax error
        _replace_file(px.config_path, good + '\n[server.timeouts\nheader = "1s"\n')
        r = px.proxyctl("reload", timeout=30)
        print("syntax error: exit %d, stderr %r" % (r.returncode, r.stderr))
        _assert_invalid("reload of a TOML syntax error", r, px.config_path)
        unchanged("after the second invalid reload")
        # SIGHUP with an invalid file: nothing changes either
        px.signal(signal.SIGHUP)
        time.sleep(1.0)
        unchanged("after SIGHUP with an invalid config")
        assert px.proc.poll() is None, "the master exited after SIGHUP with an invalid config"
        time.sleep(0.3)
        mid = lg.stats()
        assert set(mid["headers"]) == {"a"}, (
            "responses changed while the config was invalid: %r" % mid["headers"])
        # fixed: the next reload works
        _write_config(px, "b")
        r = px.proxyctl("reload", timeout=30)
        assert r.returncode == 0, _ctl_fail("reload of the fixed config", r)
        _check_new_generation(px, gen0, 2, "reload of the fixed config")
        _wait_header(px, "b")
        time.sleep(0.5)
    finally:
        stats = lg.stop()
    _assert_load_clean(stats)
    print("the config is checked in %s" % ("isolation" if isolated else "the host namespace"))
    net.check()


def _read_chunk(rd):
    """One chunk's data from a chunked body, or None at its end (trailers consumed)."""
    size_line = rd.read_line().strip()
    size = int(size_line.split(b";")[0], 16)
    if size == 0:
        while rd.read_line() not in (b"\r\n", b"\n"):
            pass
        return None
    out = []
    rd.read_exact(size, out.append)
    assert rd.read_line() in (b"\r\n", b"\n"), "no CRLF after chunk data"
    return b"".join(out)


@harness.timeout(60)
def test_reload_keeps_long_response(t):
    """A 10 s chunked stream that started before a reload completes intact on the old worker,
    which drains (shutdown_timeout 30s) and exits once the stream's connection is gone."""
    be = t.backend()
    px = t.proxy_to(be, server=_server("a", 1, "30s"))
    st0 = px.status_json()
    gen0 = st0["generation"]
    (old,) = st0["workers"]
    c = px.conn(timeout=15)
    try:
        t0 = time.monotonic()
        c.send(build_request("GET", "/stream/10"))
        first, headers = parse_head(c.rd.read_head())
        assert first.split(" ")[1] == "200", first
        assert hget(headers, HDR) == "a", headers
        assert (hget(headers, "Transfer-Encoding") or "").lower() == "chunked", headers
        got = []
        while len(got) < 5:
            got.append(_read_chunk(c.rd))
        _write_config(px, "b")
        r = px.proxyctl("reload", timeout=30)
        assert r.returncode == 0, _ctl_fail("reload during the stream", r)
        st = _check_new_generation(px, gen0, 1, "reload during the stream")
        mine = [w for w in st["workers"] if w["pid"] == old["pid"]]
        assert mine and mine[0]["state"] == "draining", (
            "the worker serving the stream should be draining: %r" % st)
        _wait_header(px, "b")
        gaps = []
        last = time.monotonic()
        while True:
            piece = _read_chunk(c.rd)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
            if piece is None:
                break
            got.append(piece)
        took = time.monotonic() - t0
        body = b"".join(got)
        want = b"".join(b"tick %d\n" % i for i in range(100))
        print("stream: %d bytes in %.1fs, largest gap %.0f ms" % (len(body), took,
                                                                  max(gaps) * 1000))
        assert body == want, "stream body differs: got %d bytes, ends %r" % (len(body),
                                                                             body[-40:])
        assert took >= 9.0, "the stream ended after %.1fs" % took
    finally:
        c.close()
    wait_until(lambda: not pid_alive(old["pid"]), 5, 0.1,
               "the draining worker %d is still running 5s after its last connection closed "
               "(shutdown_timeout is 30s, it has nothing left to do)" % old["pid"])
    _wait_settled(px, 1, 3, "after the stream")


# ----------------------------------------------------------------------------------------------
# scaling

@harness.timeout(90)
def test_scale_workers_under_load(t):
    """workers 1 -> 4 -> 1 -> 3 with `proxyctl workers N`, then a reload back to the file's
    `workers` (1), under load: no failed request, the right number of active workers each time."""
    isolated = _own_netns()
    be = t.backend()
    px = t.proxy_to(be, server=_server("a", 1, "5s"))
    net = NetCounters(isolated, px)
    gen = px.status_json()["generation"]
    lg = LoadGen(px.port, rate=RATE, path=LOAD_PATH).start()
    try:
        time.sleep(0.5)
        for bad in ("0", "x"):
            r = px.proxyctl("workers", bad, timeout=30)
            assert r.returncode != 0, _ctl_fail("workers %s should be refused" % bad, r)
            assert (r.stdout + r.stderr).strip(), "workers %s: no reason given" % bad
            assert px.status_json()["generation"] == gen, "workers %s changed something" % bad
        for n in (4, 1, 3):
            what = "workers %d" % n
            r = px.proxyctl("workers", str(n), timeout=30)
            assert r.returncode == 0, _ctl_fail(what, r)
            _one_line(what, r)
            st = _check_new_generation(px, gen, n, what)
            gen += 1
            time.sleep(1.5)
            st = px.status_json()
            assert len(_active(st["workers"])) == n and st["generation"] == gen, (
                "%s: 1.5s later: %r" % (what, st))
            print("%s: %d active, %d draining" % (what, len(_active(st["workers"])),
                                                  len(st["workers"]) - len(_active(st["workers"]))))
        r = px.proxyctl("reload", timeout=30)
        assert r.returncode == 0, _ctl_fail("reload after workers 3", r)
        _check_new_generation(px, gen, 1, "reload after `workers 3` (the file says 1)")
        time.sleep(1.0)
    finally:
        stats = lg.stop()
    _assert_load_clean(stats)
    st = _wait_settled(px, 1, 8, "after scaling + shutdown_timeout (5s)")
    left = _leftover_workers(px, {w["pid"] for w in st["workers"]})
    assert not left, "retired workers still running: %r" % left
    net.check()


# ----------------------------------------------------------------------------------------------
# binary upgrade

def _install(path):
    """A fresh copy of the proxyd under test, atomically renamed to path (as a package would)."""
    tmp = path + ".new"
    shutil.copy2(harness.PROXYD, tmp)
    os.replace(tmp, path)


def _installed_binary(t):
    d = t.path("bin")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "proxyd")
    _install(path)
    return path


def _install_script(path, text):
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)


def _pid_file(px):
    try:
        with open(px.pid_file) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None


def _stop_current_master(px):
    """Graceful stop of whichever master now answers on the control socket (after upgrades it is
    not our child: the harness's cleanup only kills by pid what it has seen)."""
    try:
        st = px.status_json()
        px.seen_pids.add(st["master_pid"])
        px.proxyctl("stop", timeout=15)
    except Exception as e:
        print("stopping the current master: %r" % e)


@harness.timeout(120)
def test_upgrade_5_times_under_load(t):
    """5 binary upgrades (a fresh copy of the binary renamed over the master's path each time; one
    of them by SIGUSR2) under load: no failed request; each time a new master pid (in status and
    the pid file) running the new file, generation +1, the config file re-read; the old master and
    its workers exit after draining."""
    isolated = _own_netns()
    binpath = _installed_binary(t)
    be = t.backend()
    px = t.proxy_to(be, server=_server("u0", 2, "5s"), binary=binpath)
    net = NetCounters(isolated, px)
    try:
        st = px.status_json()
        master, gen = st["master_pid"], st["generation"]
        assert master == px.pid, st
        lg = LoadGen(px.port, rate=RATE, path=LOAD_PATH).start()
        try:
            time.sleep(0.5)
            for i in range(1, 6):
                tag = "u%d" % i
                what = "upgrade #%d" % i
                _write_config(px, tag)
                _install(binpath)
                old_master = master
                old_workers = [w["pid"] for w in st["workers"]]
                t0 = time.monotonic()
                if i == 3:
                    what += " (SIGUSR2)"
                    os.kill(old_master, signal.SIGUSR2)
                    wait_until(lambda: px.status_json()["master_pid"] != old_master, 15, 0.05,
                               "%s: no new master within 15s" % what)
                    _wait_generation(px, gen + 1, 2, 10, what)
                else:
                    r = px.proxyctl("upgrade", timeout=60)
                    assert r.returncode == 0, _ctl_fail(what, r)
                    print("%s: %s (%.0f ms)" % (what, _one_line(what, r),
                                                 (time.monotonic() - t0) * 1000))
                st = _check_new_generation(px, gen, 2, what)
                gen += 1
                master = st["master_pid"]
                px.seen_pids.add(master)
                assert master != old_master, "%s: master pid unchanged: %r" % (what, st)
                exe = os.readlink("/proc/%d/exe" % master)
                assert exe == binpath, "%s: the new master runs %r, not %r" % (what, exe, binpath)
                kids = set(children_of(master))
                assert {w["pid"] for w in _current(st)} <= kids, (
                    "%s: the new workers are not children of the new master %d: %r" % (
                        what, master, st))
                wait_until(lambda: _pid_file(px) == master, 2, 0.05,
                           "%s: pid file holds %r, the new master is %d" % (
                               what, _pid_file(px), master))
                _wait_header(px, tag)
                gone = wait_until(
                    lambda: not any(pid_alive(p) for p in [old_master] + old_workers), 5 + 3,
                    0.1, "%s: the old master %d or its workers %r still run 8s later "
                    "(shutdown_timeout 5s)" % (what, old_master, old_workers))
                print("%s: old master gone after %.1fs" % (what, time.monotonic() - t0))
                if i == 1:
                    assert gone and px.proc.wait(2) == 0, (
                        "the first master exited with %r" % px.proc.returncode)
                time.sleep(0.5)
        finally:
            stats = lg.stop()
        _assert_load_clean(stats)
        missing = [("u%d" % i) for i in range(6) if not stats["headers"].get("u%d" % i)]
        assert not missing, "no response from generation(s) %r: %r" % (missing, stats["headers"])
        st = _wait_settled(px, 2, 3, "after the last upgrade")
        left = _leftover_workers(px, {w["pid"] for w in st["workers"]} | {master})
        assert not left, "old masters/workers still running: %r" % {
            p: harness.pid_cmdline(p) for p in left}
        net.check(assert_abort_on_close=False)
    finally:
        _stop_current_master(px)


def _assert_still_serving(px, master0, gen0, pids0, what, tag="a"):
    st = px.status_json()
    assert st["master_pid"] == master0, "%s: the master changed: %r" % (what, st)
    assert st["generation"] == gen0, "%s: the generation changed: %r" % (what, st)
    assert sorted(w["pid"] for w in st["workers"]) == pids0, (
        "%s: the workers changed (were %r): %r" % (what, pids0, st))
    assert _pid_file(px) == master0, "%s: pid file holds %r" % (what, _pid_file(px))
    assert _gen_header(px) == tag


@harness.timeout(90)
def test_upgrade_missing_binary_fails(t):
    """`proxyctl upgrade` with nothing at the master's path, then with a binary that exits at once:
    exit 1 with the reason each time, the old master keeps serving (under load, no failure);
    then the real binary again: the upgrade works."""
    binpath = _installed_binary(t)
    be = t.backend()
    px = t.proxy_to(be, server=_server("a", 2, "5s"), binary=binpath)
    try:
        st0 = px.status_json()
        master0, gen0 = st0["master_pid"], st0["generation"]
        pids0 = sorted(w["pid"] for w in st0["workers"])
        lg = LoadGen(px.port, rate=RATE, path=LOAD_PATH).start()
        try:
            time.sleep(0.5)
            os.unlink(binpath)
            r = px.proxyctl("upgrade", timeout=60)
            print("missing binary: exit %d: %r %r" % (r.returncode, r.stdout, r.stderr))
            assert r.returncode == 1, _ctl_fail("upgrade with no binary at the path", r)
            assert (r.stdout + r.stderr).strip(), "upgrade with no binary: no reason given"
            _assert_still_serving(px, master0, gen0, pids0, "after the upgrade without binary")
            time.sleep(0.3)
            _install_script(binpath, "#!/bin/sh\nexit 3\n")
            r = px.proxyctl("upgrade", timeout=60)
            print("failing binary: exit %d: %r %r" % (r.returncode, r.stdout, r.stderr))
            assert r.returncode == 1, _ctl_fail("upgrade to a binary that exits 3", r)
            assert (r.stdout + r.stderr).strip(), "upgrade to a failing binary: no reason given"
            _assert_still_serving(px, master0, gen0, pids0, "after the failed upgrade")
            time.sleep(0.3)
            _install(binpath)
            _write_config(px, "b")
            r = px.proxyctl("upgrade", timeout=60)
            assert r.returncode == 0, _ctl_fail("upgrade after the failed ones", r)
            st = _check_new_generation(px, gen0, 2, "upgrade after the failed ones")
            px.seen_pids.add(st["master_pid"])
            assert st["master_pid"] != master0, st
            _wait_header(px, "b")
            wait_until(lambda: not pid_alive(master0), 8, 0.1,
                       "the old master still runs 8s after the upgrade")
            time.sleep(0.3)
        finally:
            stats = lg.stop()
        _assert_load_clean(stats)
    finally:
        _stop_current_master(px)


@harness.timeout(150)
def test_upgrade_not_ready_refuses_overlap_and_times_out(t):
    """The new binary starts but never becomes ready: a second upgrade meanwhile is refused at
    once (exit 1); the first fails with exit 1 and the reason after the readiness timeout, the
    hung process is killed, and the old master keeps serving throughout (under load)."""
    binpath = _installed_binary(t)
    be = t.backend()
    px = t.proxy_to(be, server=_server("a", 2, "5s"), binary=binpath)
    marker = t.path("hung.pid")
    hung = None
    try:
        st0 = px.status_json()
        master0, gen0 = st0["master_pid"], st0["generation"]
        pids0 = sorted(w["pid"] for w in st0["workers"])
        _install_script(binpath, "#!/bin/sh\necho $$ > %s\nexec sleep 300\n" % marker)
        lg = LoadGen(px.port, rate=RATE, path=LOAD_PATH).start()
        try:
            time.sleep(0.5)
            t0 = time.monotonic()
            first = t.spawn([harness.PROXYCTL, "-s", px.control_socket, "upgrade"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            wait_until(lambda: os.path.exists(marker) and open(marker).read().strip(), 10, 0.05,
                       "the master never started the new binary")
            hung = int(open(marker).read())
            time.sleep(0.2)
            t1 = time.monotonic()
            r = px.proxyctl("upgrade", timeout=60)
            print("overlapping upgrade: exit %d in %.2fs: %r %r" % (
                r.returncode, time.monotonic() - t1, r.stdout, r.stderr))
            assert r.returncode == 1, _ctl_fail("an upgrade while one is in progress", r)
            assert (r.stdout + r.stderr).strip(), "overlapping upgrade: no reason given"
            assert time.monotonic() - t1 < 5, "the overlapping upgrade was not refused at once"
            assert first.poll() is None, (
                "the first upgrade already ended (%.1fs after it began): %r" % (
                    time.monotonic() - t0, first.communicate()))
            out, err = first.communicate(timeout=120)
            took = time.monotonic() - t0
            print("not-ready upgrade: exit %d after %.1fs: %r %r" % (first.returncode, took, out,
                                                                    err))
            assert first.returncode == 1, "upgrade to a binary that never gets ready: exit %d: " \
                "%r %r" % (first.returncode, out, err)
            assert (out + err).strip(), "upgrade timeout: no reason given"
            wait_until(lambda: not pid_alive(hung), 5, 0.1,
                       "the never-ready process %d still runs 5s after the upgrade failed" % hung)
            _assert_still_serving(px, master0, gen0, pids0, "after the upgrade timed out")
            time.sleep(0.5)
        finally:
            stats = lg.stop()
        _assert_load_clean(stats)
    finally:
        if hung and pid_alive(hung):
            try:
                os.kill(hung, signal.SIGKILL)
            except OSError:
                pass
        _stop_current_master(px)


# ----------------------------------------------------------------------------------------------
# supervision, logs

@harness.timeout(60)
def test_kill_worker_under_load(t):
    """SIGKILL of one of 2 workers under load: a replacement in the same slot within 1 s; the only
    failures are requests in flight at that instant."""
    be = t.backend()
    px = t.proxy_to(be, server=_server("a", 2, "5s"))
    lg = LoadGen(px.port, rate=RATE, path=LOAD_PATH).start()
    try:
        time.sleep(1.5)
        st = px.status_json()
        victim = st["workers"][0]
        inflight0, started0 = lg.inflight(), lg.started()
        t_kill = time.monotonic()
        kill_at = lg.elapsed()
        os.kill(victim["pid"], signal.SIGKILL)
        wait_until(lambda: not pid_alive(victim["pid"]), 2, 0.001, "the worker did not die")
        started_meanwhile = lg.started() - started0
        t_dead = time.monotonic()
        found = None
        while time.monotonic() - t_kill < 2.0:
            st = px.status_json()
            t_seen = time.monotonic()
            new = [w for w in st["workers"]
                   if w["pid"] != victim["pid"] and w.get("slot") == victim.get("slot")
                   and pid_alive(w["pid"])]
            if new:
                found = (new[0], t_seen - t_kill)
                break
            time.sleep(0.02)
        assert found, "no replacement worker 2s after SIGKILL: %r" % st
        print("victim %d (slot %r, %r open connections): died %.1f ms after kill; replacement %d "
              "in status %.0f ms after kill" % (
                  victim["pid"], victim.get("slot"), victim.get("connections"),
                  (t_dead - t_kill) * 1000, found[0]["pid"], found[1] * 1000))
        assert found[1] <= 1.0, "replacement seen only %.2fs after the kill" % found[1]
        time.sleep(2.0)
        assert len(_active(px.status_json()["workers"])) == 2
    finally:
        stats = lg.stop()
    print(format_stats(stats))
    bound = inflight0 + started_meanwhile
    print("failures %d; bound: %d requests in flight at the kill + %d started before the worker "
          "was gone" % (stats["failures"], inflight0, started_meanwhile))
    assert stats["failures"] <= bound, (
        "%d failures, but only %d requests can have been in flight on the killed worker\n%s" % (
            stats["failures"], bound, format_stats(stats)))
    late = [e for e in stats["errors"] if not kill_at - 0.05 <= e[0] <= kill_at + 1.0]
    assert not late, "failures outside the second after the kill (at %.3fs): %r" % (kill_at, late)
    for kind in ("connect_refused", "status_5xx", "timeout", "unexpected_status", "bad_response"):
        assert stats[kind] == 0, "%s=%d after a worker was killed\n%s" % (
            kind, stats[kind], format_stats(stats))


def _log_lines(path):
    if not os.path.exists(path):
        return ""
    with open(path, errors="replace") as f:
        return f.read()


def test_reopen_logs(t):
    """After access.log is renamed, `proxyctl reopen` (and SIGUSR1) make new lines go to a new
    access.log; lines of requests before the reopen stay in the renamed file."""
    be = t.backend()
    px = t.proxy_to(be, server={"workers": 2}, log={"format": "json"})
    log = px.access_log

    def get_all(tag, n=20):
        for i in range(n):
            assert px.get("/echo/mark-%s-%d" % (tag, i)).status == 200

    def wait_marks(path, tag, n=20):
        try:
            wait_until(lambda: all(('/mark-%s-%d"' % (tag, i)) in _log_lines(path)
                                   for i in range(n)), 3, 0.05)
        except AssertionError:
            raise AssertionError("%s lacks lines of requests /echo/mark-%s-*:\n%s" % (
                path, tag, _log_lines(path)[-2000:]))

    get_all("before")
    wait_marks(log, "before")
    os.rename(log, log + ".1")
    r = px.proxyctl("reopen", timeout=20)
    assert r.returncode == 0, _ctl_fail("reopen", r)
    _one_line("reopen", r)
    get_all("after")
    wait_marks(log, "after")
    time.sleep(0.3)
    assert "/mark-after-" not in _log_lines(log + ".1"), "lines still go to the renamed file"
    assert "/mark-before-" not in _log_lines(log)
    # SIGUSR1: no reply to wait for, so requests until one lands in the new file
    os.rename(log, log + ".2")
    px.signal(signal.SIGUSR1)
    k = [0]

    def landed():
        k[0] += 1
        assert px.get("/echo/mark-probe-%d" % k[0]).status == 200
        return "/mark-probe-" in _log_lines(log)
    wait_until(landed, 3, 0.1, "no line in a new access.log within 3s of SIGUSR1")
    get_all("usr1")
    wait_marks(log, "usr1")
    time.sleep(0.3)
    assert "/mark-usr1-" not in _log_lines(log + ".2"), "after SIGUSR1, lines still go to the " \
        "renamed file"
