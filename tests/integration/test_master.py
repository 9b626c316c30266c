"""The master process: status, pid file, stop (graceful and fast), signals, supervision."""

import json
import os
import signal
import socket
import subprocess
import re
import time

import harness
from harness import build_request, wait_until


def _refused(port):
    """(True, how) if a new connection gets no HTTP response: refused, reset or closed empty."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1.0)
    except ConnectionRefusedError:
        return True, "refused"
    except OSError as e:
        return True, "connect failed: %s" % e
    try:
        s.settimeout(2.0)
        try:
            s.sendall(build_request("GET", "/echo"))
            data = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return True, "reset"
        except socket.timeout:
            return False, "accepted, no answer within 2s"
        if not data:
            return True, "closed without response"
        return False, "answered: %r" % data[:100]
    finally:
        s.close()


def test_status_human(t):
    px = t.proxy_to(t.backend())
    r = px.proxyctl("status")
    assert r.returncode == 0, r
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    # a summary line, then one line per worker generation
    assert len(lines) == 2, "expected two lines: %r" % r.stdout
    assert str(px.pid) in lines[0], "master pid %d not in %r" % (px.pid, lines[0])
    assert re.fullmatch(r"generation 1 \(active\): 1 worker\(s\), \d+ connection\(s\), "
                        r"0 tunnel\(s\)", lines[1]), lines[1]


def test_status_json(t):
    t0 = time.time()
    px = t.proxy_to(t.backend(), server={"workers": 2})
    st = px.status_json()
    assert st["master_pid"] == px.pid, st
    assert st["version"] == "0.1.0", st
    assert isinstance(st["generation"], int), st
    ws = st["workers"]
    assert len(ws) == 2, st
    assert sorted(w["slot"] for w in ws) == [0, 1], st
    assert len({w["pid"] for w in ws}) == 2, st
    kids = harness.children_of(px.pid)
    for w in ws:
        assert isinstance(w["pid"], int) and harness.pid_alive(w["pid"]), w
        assert w["pid"] in kids, "worker %d is not a child of the master" % w["pid"]
        assert isinstance(w["generation"], int), w
        assert w["state"] == "active", w
        assert isinstance(w["started_at"], (int, float)), w
        assert t0 - 2 <= w["started_at"] <= time.time() + 1, (w, t0)
        assert isinstance(w["connections"], int) and w["connections"] >= 0, w


def test_status_connections(t):
    px = t.proxy_to(t.backend())

    def conns():
        return px.status_json()["workers"][0]["connections"]
    cs = [px.conn() for _ in range(2)]
    try:
        for c in cs:
            assert c.request("GET", "/echo").status == 200
        wait_until(lambda: conns() == 2, 3, 0.1, "status never showed 2 open connections")
    finally:
        for c in cs:
            c.close()
    wait_until(lambda: conns() == 0, 3, 0.1, "status never went back to 0 connections")


def test_proxyctl_with_config(t):
    """proxyctl -c CONFIG finds server.control_socket in that config."""
    px = t.proxy_to(t.backend())
    r = t.run([harness.PROXYCTL, "-c", px.config_path, "status", "--json"])
    assert r.returncode == 0, r
    assert json.loads(r.stdout)["master_pid"] == px.pid


def test_proxyctl_without_master(t):
    r = t.run([harness.PROXYCTL, "-s", t.path("nothing.sock"), "status"])
    assert r.returncode != 0, r
    assert (r.stderr + r.stdout).strip(), "no reason printed"


def test_pid_file(t):
    px = t.proxy_to(t.backend())
    with open(px.pid_file) as f:
        assert f.read().strip() == str(px.pid)
    px.signal(signal.SIGTERM)
    assert px.wait_exit(10) is not None, "master did not exit on SIGTERM"
    assert not os.path.exists(px.pid_file), "pid file left behind"


def test_stop_graceful(t):
    """An in-flight /slow/2000 completes; new connections are refused; proxyctl stop returns once
    the master has exited, with 0."""
    be = t.backend()
    px = t.proxy_to(be)
    c = px.conn()
    c.send(build_request("GET", "/slow/2000"))
    wait_until(lambda: be.served >= 1, 3, msg="request never reached the backend")
    t0 = time.monotonic()
    stopper = t.spawn([harness.PROXYCTL, "-s", px.control_socket, "stop"],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.5)
    refused, how = _refused(px.port)
    r = c.read_response()
    assert r.status == 200 and r.body == b"slow 2000\n", r
    out, err = stopper.communicate(timeout=15)
    took = time.monotonic() - t0
    assert stopper.returncode == 0, "proxyctl stop exit %d: %r %r" % (stopper.returncode, out, err)
    time.sleep(0.2)
    assert px.proc.poll() is not None, "proxyctl stop returned while the master still runs"
    assert refused, "a new connection during the graceful stop was " + how
    assert took < 10, "stop took %.1fs (shutdown_timeout 10s)" % took
    assert not os.path.exists(px.pid_file), "pid file left behind"


def test_stop_fast(t):
    be = t.backend()
    px = t.proxy_to(be)
    c = px.conn()
    c.send(build_request("GET", "/hang"))
    wait_until(lambda: be.served >= 1, 3, msg="request never reached the backend")
    t0 = time.monotonic()
    r = px.proxyctl("stop", "--fast", timeout=10)
    assert r.returncode == 0, r
    assert time.monotonic() - t0 < 3, "stop --fast took %.1fs" % (time.monotonic() - t0)
    assert px.wait_exit(1) is not None, "master still running after stop --fast"
    assert c.wait_closed(2), "in-flight connection not closed by stop --fast"


def test_shutdown_timeout(t):
    """A request that never finishes is cut at shutdown_timeout and the master exits."""
    be = t.backend()
    px = t.proxy_to(be, server={"shutdown_timeout": "1s"})
    c = px.conn()
    c.send(build_request("GET", "/hang"))
    wait_until(lambda: be.served >= 1, 3, msg="request never reached the backend")
    t0 = time.monotonic()
    stopper = t.spawn([harness.PROXYCTL, "-s", px.control_socket, "stop"],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    code = px.wait_exit(6)
    took = time.monotonic() - t0
    assert code is not None, "master still running 6s after stop (shutdown_timeout 1s)"
    assert 0.8 <= took <= 3.5, "master exited after %.1fs, shutdown_timeout is 1s" % took
    assert c.wait_closed(2), "hanging connection not closed"
    stopper.communicate(timeout=10)


def _graceful_signal(t, sig):
    be = t.backend()
    px = t.proxy_to(be)
    c = px.conn()
    c.send(build_request("GET", "/slow/1500"))
    wait_until(lambda: be.served >= 1, 3, msg="request never reached the backend")
    px.signal(sig)
    time.sleep(0.4)
    refused, how = _refused(px.port)
    r = c.read_response()
    assert r.status == 200 and r.body == b"slow 1500\n", r
    code = px.wait_exit(10)
    assert code == 0, "master exit code %r after %s" % (code, sig.name)
    assert refused, "a new connection during the graceful stop was " + how


def test_sigterm_graceful(t):
    _graceful_signal(t, signal.SIGTERM)


def test_sigint_graceful(t):
    _graceful_signal(t, signal.SIGINT)


def test_sigquit_fast(t):
    be = t.backend()
    px = t.proxy_to(be)
    c = px.conn()
    c.send(build_request("GET", "/hang"))
    wait_until(lambda: be.served >= 1, 3, msg="request never reached the backend")
    t0 = time.monotonic()
    px.signal(signal.SIGQUIT)
    assert px.wait_exit(3) is not None, "master still running 3s after SIGQUIT"
    assert c.wait_closed(2), "in-flight connection not closed"
    assert time.monotonic() - t0 < 3


def test_worker_respawn(t):
    """A worker killed with SIGKILL is replaced (new pid in status within 1 s), same slot."""
    be = t.backend()
    px = t.proxy_to(be, server={"workers": 2})
    ws = px.status_json()["workers"]
    victim = ws[0]
    os.kill(victim["pid"], signal.SIGKILL)
    t0 = time.monotonic()
    st = None
    while time.monotonic() - t0 < 1.2:
        st = px.status_json()
        pids = [w["pid"] for w in st["workers"]]
        if len(pids) == 2 and victim["pid"] not in pids and all(map(harness.pid_alive, pids)):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("no replacement worker within 1s: %r" % st)
    new = [w for w in st["workers"] if w["pid"] not in {x["pid"] for x in ws}]
    assert len(new) == 1 and new[0]["slot"] == victim["slot"], st
    for _ in range(10):
        assert px.get("/echo").status == 200


def test_worker_death_keeps_accept_queue(t):
    """The master keeps the listening socket: a connection made while the only worker is dead
    waits in the queue and is served by the replacement (not refused or reset)."""
    be = t.backend()
    px = t.proxy_to(be)
    (pid,) = [w["pid"] for w in px.status_json()["workers"]]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not harness.pid_alive(pid), 2, 0.01)
    r = px.get("/echo", timeout=5)
    assert r.status == 200, r


def test_master_sigkill_workers_exit(t):
    px = t.proxy_to(t.backend(), server={"workers": 2})
    pids = [w["pid"] for w in px.status_json()["workers"]]
    px.proc.kill()
    px.proc.wait(5)
    t0 = time.monotonic()
    wait_until(lambda: not any(map(harness.pid_alive, pids)), 3, 0.05,
               "workers %r still alive 3s after the master was killed" % pids)
    assert time.monotonic() - t0 < 3


def test_multiple_workers_serve(t):
    be = t.backend()
    px = t.proxy_to(be, server={"workers": 3})
    st = px.status_json()
    assert len({w["pid"] for w in st["workers"]}) == 3, st
    for i in range(30):
        r = px.get("/echo?i=%d" % i)
        assert r.status == 200 and r.json()["path"] == "/echo?i=%d" % i


def test_multiple_listen(t):
    be = t.backend()
    p1, p2 = harness.free_port(), harness.free_port()
    px = t.proxy_to(be, server={"workers": 2,
                                "listen": ["127.0.0.1:%d" % p1, "127.0.0.1:%d" % p2]})
    for p in (p1, p2):
        for _ in range(3):
            assert px.get("/echo", port=p).status == 200


def test_workers_auto(t):
    px = t.proxy_to(t.backend(), server={"workers": "auto"})
    want = {os.cpu_count(), len(os.sched_getaffinity(0))}
    n = wait_until(lambda: len(px.status_json()["workers"]) in want and
                   len(px.status_json()["workers"]), 3)
    assert n in want, n
    assert px.get("/echo").status == 200


def test_stop_graceful_closes_idle_keepalive(t):
    """Idle keep-alive connections don't hold a graceful stop up to shutdown_timeout."""
    px = t.proxy_to(t.backend(), server={"shutdown_timeout": "10s"})
    c = px.conn()
    try:
        assert c.request("GET", "/echo").status == 200
        t0 = time.monotonic()
        r = px.proxyctl("stop", timeout=15)
        took = time.monotonic() - t0
        assert r.returncode == 0, r
        assert took < 3, "graceful stop with one idle keep-alive connection took %.1fs" % took
        assert c.wait_closed(1), "idle connection not closed"
    finally:
        c.close()


def test_listen_address_in_use(t):
    """A listen address that can't be bound: proxyd exits non-zero with the reason."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        port = s.getsockname()[1]
        px = t.proxy({"server": {"listen": ["127.0.0.1:%d" % port]},
                      "upstreams": {"b": {"servers": [{"address": "127.0.0.1:9"}]}},
                      "routes": [{"path": "/", "upstream": "b"}]}, start=False)
        px.start(wait=False)
        code = px.wait_exit(10)
        assert code not in (None, 0), "exit code %r" % code
        assert str(port) in px.output() or "in use" in px.output().lower(), px.output()
    finally:
        s.close()


def _listen_inodes(port):
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if int(parts[1].rsplit(":", 1)[1], 16) == port and parts[3] == "0A":
                        inodes.add(parts[9])
        except OSError:
            pass
    return inodes


def _fd_sockets(pid):
    out = set()
    d = "/proc/%d/fd" % pid
    for fd in os.listdir(d):
        try:
            target = os.readlink(os.path.join(d, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def test_master_holds_socket_per_slot(t):
    """The master binds each listen address once per worker slot (SO_REUSEPORT) and keeps
    those sockets open."""
    p1, p2 = harness.free_port(), harness.free_port()
    px = t.proxy_to(t.backend(), server={"workers": 3,
                                         "listen": ["127.0.0.1:%d" % p1, "127.0.0.1:%d" % p2]})
    held = _fd_sockets(px.pid)
    for p in (p1, p2):
        listening = _listen_inodes(p)
        assert len(listening) == 3, "%d listening sockets on port %d, expected 3 (one per slot)" % (
            len(listening), p)
        assert listening <= held, "the master does not hold all listening sockets of port %d" % p
