"""Load balancing and health (issue 4): the shared view of the backends across all workers.

Every check reads the shared state through `proxyctl status --json` ("upstreams" -> NAME ->
"servers": healthy, circuit, active, requests, ...) and the backends' own records (which backend
answered: the X-Backend response header; what a backend received: Backend.requests, whose
"/health" entries are the active probes). Traffic goes to 127.0.0.1 and 127.0.0.2 only.
"""

import re
import threading
import time

import harness
from harness import Conn, assert_error, wait_until
from load import LoadGen, format_stats


# ----------------------------------------------------------------------------------------------
# helpers

def _servers(px, upstream="b"):
    return px.status_json()["upstreams"][upstream]["servers"]


def _server(px, address, upstream="b"):
    """The status entry of the server whose address (or id) is `address`."""
    for s in _servers(px, upstream):
        if s["address"] == address or s["id"] == address:
            return s
    raise AssertionError("no server %s in status: %r" % (address, _servers(px, upstream)))


def _traffic(be):
    """Requests a backend received, health probes excluded."""
    with be.lock:
        return sum(1 for r in be.requests if not r["target"].startswith("/health"))


def _probes(be, since=0.0, until=None):
    with be.lock:
        return [r for r in be.requests if r["target"].startswith("/health")
                and r["time"] >= since and (until is None or r["time"] < until)]


def _who(resp):
    return resp.header("X-Backend")


def _count(values):
    out = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


class _Bg:
    """A request run in a thread: .resp / .error / .elapsed once .join() returned."""

    def __init__(self, px, path, headers=None, timeout=15.0):
        self.resp = self.error = None
        self.elapsed = None

        def run():
            t0 = time.monotonic()
            try:
                self.resp = px.get(path, headers=headers, timeout=timeout)
            except Exception as e:      # reported by the test
                self.error = e
            self.elapsed = time.monotonic() - t0
        self.th = threading.Thread(target=run, daemon=True)
        self.th.start()

    def join(self, timeout=20.0):
        self.th.join(timeout)
        assert not self.th.is_alive(), "background request still running"
        assert self.error is None, "background request failed: %r" % (self.error,)
        return self.resp


HC_FAST = {"interval": "300ms", "timeout": "200ms", "unhealthy_threshold": 1,
           "healthy_threshold": 1}


# ----------------------------------------------------------------------------------------------
# 1. a backend killed under load

@harness.timeout(50)
def test_balancing_backend_killed_under_load(t):
    """3 backends, 2 workers, GET load: one backend stops -> no failed request; it turns
    unhealthy within interval x unhealthy_threshold + timeout; back on the same port, it gets
    traffic again."""
    interval, timeout, unhealthy = 0.5, 0.3, 2
    bes = [t.backend("b%d" % i) for i in range(3)]
    px = t.proxy_to(*bes, server={"workers": 2}, upstream={"health_check": {
        "interval": "500ms", "timeout": "300ms", "unhealthy_threshold": unhealthy,
        "healthy_threshold": 1}})
    lg = LoadGen(px.port, rate=200, path="/echo", header="X-Backend").start()
    try:
        time.sleep(1.5)
        assert all(_traffic(b) > 20 for b in bes), [_traffic(b) for b in bes]
        victim = bes[2]
        port = victim.port
        t_stop = time.monotonic()
        victim.stop()
        wait_until(lambda: not _server(px, victim.address)["healthy"], timeout=10,
                   interval=0.02, msg="the stopped backend never turned unhealthy")
        took = time.monotonic() - t_stop
        limit = interval * unhealthy + timeout + 0.5
        print("stopped backend unhealthy after %.2fs (limit %.2fs)" % (took, limit))
        assert took <= limit, "unhealthy after %.2fs, limit %.2fs" % (took, limit)
        time.sleep(1.0)                 # load on the two others only
        back = t.backend("b2-back", port=port)
        t_back = time.monotonic()
        wait_until(lambda: _server(px, back.address)["healthy"], timeout=5,
                   msg="the restarted backend never turned healthy")
        wait_until(lambda: _traffic(back) >= 20, timeout=10,
                   msg="the restarted backend got no traffic: %d requests" % _traffic(back))
        print("restarted backend healthy and got 20 requests %.2fs after restart"
              % (time.monotonic() - t_back))
        time.sleep(0.5)
    finally:
        st = lg.stop()
    print(format_stats(st))
    assert st["failures"] == 0, format_stats(st)
    assert st["headers"].get("b2-back", 0) >= 20, st["headers"]


# ----------------------------------------------------------------------------------------------
# 2. active health checks

def _probe_count(t, workers):
    be = t.backend()
    px = t.proxy_to(be, server={"workers": workers},
                    upstream={"health_check": {"interval": "250ms", "timeout": "200ms"}})
    assert len(px.status_json()["workers"]) == workers
    time.sleep(0.6)
    n_intervals = 12
    a = time.time()
    time.sleep(n_intervals * 0.25)
    b = time.time()
    probes = _probes(be, a, b)
    print("%d worker(s): %d probes in %.2fs (%d intervals of 250ms)" % (
        workers, len(probes), b - a, n_intervals))
    assert abs(len(probes) - n_intervals) <= 1, "%d probes in %d intervals with %d workers" % (
        len(probes), n_intervals, workers)
    assert all(p["method"] == "GET" and p["target"] == "/health" for p in probes), probes[:3]
    assert px.get("/echo").status == 200


def test_balancing_health_probes_1_worker(t):
    _probe_count(t, 1)


def test_balancing_health_probes_4_workers(t):
    _probe_count(t, 4)


@harness.timeout(40)
def test_balancing_health_check_settings(t):
    """method, path, expected_status, timeout, thresholds; 503 when no server is usable."""
    ok = t.backend("ok")
    bad = t.backend("bad", behave_as="/status/500")
    slow = t.backend("slow")
    hc = {"interval": "300ms", "timeout": "200ms", "unhealthy_threshold": 2,
          "healthy_threshold": 2}
    px = t.proxy({
        "upstreams": {
            "ok": {"servers": [{"address": ok.address}], "health_check": dict(
                hc, path="/status/204?x=1", method="head", expected_status=[204, 299])},
            "bad": {"servers": [{"address": bad.address}], "health_check": dict(
                hc, path="/probe")},
            "slow": {"servers": [{"address": slow.address}], "health_check": dict(
                hc, path="/slow/600")},
        },
        "routes": [{"path": "/ok", "upstream": "ok"}, {"path": "/bad", "upstream": "bad"},
                   {"path": "/slow", "upstream": "slow"}],
        "server": {"workers": 2},
    })
    wait_until(lambda: not _server(px, bad.address, "bad")["healthy"], timeout=3,
               msg="a server answering 500 to its probe stayed healthy")
    wait_until(lambda: not _server(px, slow.address, "slow")["healthy"], timeout=4,
               msg="a server answering its probe after the timeout stayed healthy")
    time.sleep(1.0)
    assert _server(px, ok.address, "ok")["healthy"], "204 in expected_status [204, 299]"
    probes = [r for r in ok.requests if r["target"] != "/ok"]
    assert len(probes) >= 3 and all(p["method"] == "HEAD" and p["target"] == "/status/204?x=1"
                                    for p in probes), probes[:3]
    assert px.get("/ok").status == 200
    # no server usable -> 503 from the proxy, nothing forwarded
    before = len(bad.requests)
    assert_error(px.get("/bad"), 503)
    assert_error(px.get("/slow"), 503)
    assert all(r["target"] == "/probe" for r in bad.requests[before:]), bad.requests[before:]
    # healthy_threshold = 2: two good probes in a row before it is used again
    bad.behave_as = None
    ts = time.time()
    wait_until(lambda: _server(px, bad.address, "bad")["healthy"], timeout=3, interval=0.02,
               msg="the backend never turned healthy again")
    good = [p for p in bad.requests if p["time"] >= ts and p["target"] == "/probe"]
    print("healthy again after %d good probes, %.2fs" % (len(good), time.time() - ts))
    assert len(good) >= 2, "healthy after %d good probe(s), healthy_threshold = 2" % len(good)
    assert px.get("/bad").status == 200


# ----------------------------------------------------------------------------------------------
# 3. least_conn with a slow backend; global counts

@harness.timeout(40)
def test_balancing_least_conn_avoids_slow_backend(t):
    slow = t.backend("slow", delay=0.2)
    fast = t.backend("fast")
    px = t.proxy_to(slow, fast, server={"workers": 2}, upstream={"balance": "least_conn"})
    lg = LoadGen(px.port, rate=100, path="/echo", header="X-Backend").start()
    time.sleep(4)
    st = lg.stop()
    print(format_stats(st))
    assert st["failures"] == 0, format_stats(st)
    n_slow, n_fast = st["headers"].get("slow", 0), st["headers"].get("fast", 0)
    ratio = n_slow / max(1, n_fast)
    print("least_conn: slow %d, fast %d, slow/fast = %.3f" % (n_slow, n_fast, ratio))
    assert n_fast > 200 and ratio < 0.25, "slow %d fast %d" % (n_slow, n_fast)


def _open_on_both_workers(px, want=6, limit=40):
    """Keep-alive client connections (idle) until both workers hold at least 2 of them and
    there are `want` or more. Returns (connections, {worker pid: connections})."""
    conns = []
    per = {}
    for _ in range(limit):
        conns.append(px.conn(timeout=15))
        time.sleep(0.02)
        per = {w["pid"]: w["connections"] for w in px.status_json()["workers"]}
        if len(conns) >= want and len(per) == 2 and min(per.values()) >= 2 \
                and sum(per.values()) == len(conns):
            return conns, per
    raise AssertionError("connections never spread over both workers: %r" % per)


@harness.timeout(40)
def test_balancing_active_counts_are_global(t):
    """Long requests opened through both workers are all counted in the server's "active"."""
    be = t.backend()
    px = t.proxy_to(be, server={"workers": 2})
    conns, per = _open_on_both_workers(px)
    k = len(conns)
    print("%d connections over the workers: %r" % (k, per))
    try:
        for c in conns:
            c.send(harness.build_request("GET", "/slow/3000"))
        seen = wait_until(lambda: (lambda s: s if s["active"] == k else None)(
            _server(px, be.address)), timeout=2.5, interval=0.02,
            msg="active never reached %d: %r" % (k, _servers(px)))
        print("status while running: %r" % seen)
        for c in conns:
            r = c.read_response()
            assert r.status == 200, r
        wait_until(lambda: _server(px, be.address)["active"] == 0, timeout=3,
                   msg="active did not return to 0: %r" % _servers(px))
        assert _server(px, be.address)["requests"] >= k
    finally:
        for c in conns:
            c.close()


def _spread_long_requests(t, balance, weights):
    """Long requests sent one at a time over connections on both workers, each once the
    previous one is counted: with global counts, least_conn splits them by weight."""
    bes = [t.backend("s%d" % i) for i in range(len(weights))]
    px = t.proxy_to(server={"workers": 2}, upstream={
        "balance": balance,
        "servers": [{"address": b.address, "weight": w} for b, w in zip(bes, weights)]})
    conns, per = _open_on_both_workers(px, want=2 * sum(weights))
    conns = conns[:2 * sum(weights)]
    try:
        for i, c in enumerate(conns):
            c.send(harness.build_request("GET", "/slow/4000"))
            wait_until(lambda: sum(s["active"] for s in _servers(px)) == i + 1, timeout=2,
                       interval=0.01, msg="request %d not counted: %r" % (i, _servers(px)))
        active = {s["address"]: s["active"] for s in _servers(px)}
        got = [active[b.address] for b in bes]
        print("%s over 2 workers %r, weights %r: active %r" % (balance, per, weights, got))
        assert got == [2 * w for w in weights], "active per server %r, weights %r" % (
            got, weights)
        for c in conns:
            assert c.read_response().status == 200
    finally:
        for c in conns:
            c.close()


@harness.timeout(40)
def test_balancing_least_conn_global_spread(t):
    _spread_long_requests(t, "least_conn", [1, 1, 1])


@harness.timeout(40)
def test_balancing_weighted_least_conn_global_spread(t):
    _spread_long_requests(t, "weighted_least_conn", [3, 1])


# ----------------------------------------------------------------------------------------------
# 5. DNS names through hosts_file

def _pair_on_one_port(t):
    """Backends on 127.0.0.1:P and 127.0.0.2:P."""
    for _ in range(10):
        a = t.backend("dns-a")
        try:
            b = t.backend("dns-b", host="127.0.0.2", port=a.port)
            return a, b
        except OSError:
            a.stop()
    raise AssertionError("no port free on both 127.0.0.1 and 127.0.0.2")


def test_balancing_dns_two_records(t):
    a, b = _pair_on_one_port(t)
    hosts = t.write("hosts", "# test\n127.0.0.1 lbtest.internal other\n"
                             "127.0.0.2   lbtest.internal  # second record\n")
    name = "lbtest.internal:%d" % a.port
    px = t.proxy_to(name, server={"workers": 2, "hosts_file": hosts})
    ids = sorted(s["id"] for s in _servers(px))
    assert ids == ["%s#127.0.0.1:%d" % (name, a.port), "%s#127.0.0.2:%d" % (name, a.port)], ids
    who = _count(_who(px.get("/echo")) for _ in range(20))
    print("responses by backend: %r" % who)
    assert who.get("dns-a", 0) >= 5 and who.get("dns-b", 0) >= 5, who


@harness.timeout(45)
def test_balancing_dns_change_without_reload(t):
    a, b = _pair_on_one_port(t)
    hosts = t.write("hosts", "127.0.0.1 lbtest.internal\n")
    name = "lbtest.internal:%d" % a.port
    px = t.proxy_to(server={"workers": 2, "hosts_file": hosts}, upstream={
        "servers": [{"address": name, "id": "web", "weight": 2}], "resolve_interval": "500ms"})
    assert [s["id"] for s in _servers(px)] == ["web#127.0.0.1:%d" % a.port]
    gen0 = px.status_json()["generation"]
    lg = LoadGen(px.port, rate=100, path="/echo", header="X-Backend").start()
    try:
        time.sleep(1.0)
        t.write("hosts", "127.0.0.1 lbtest.internal\n127.0.0.2 lbtest.internal\n")
        wait_until(lambda: len(_servers(px)) == 2, timeout=5,
                   msg="second record never became a server: %r" % _servers(px))
        assert sorted(s["id"] for s in _servers(px)) == [
            "web#127.0.0.1:%d" % a.port, "web#127.0.0.2:%d" % a.port]
        assert all(s["weight"] == 2 for s in _servers(px)), _servers(px)
        wait_until(lambda: _traffic(b) >= 10, timeout=5, msg="new server got no traffic")
        gen1 = px.status_json()["generation"]
        t.write("hosts", "127.0.0.2 lbtest.internal\n")
        wait_until(lambda: [s["id"] for s in _servers(px)] == ["web#127.0.0.2:%d" % a.port],
                   timeout=5, msg="removed record still a server: %r" % _servers(px))
        # Workers of the older generations finish what they hold (an idle keep-alive connection
        # is served once more, with Connection: close); once they are gone, nothing reaches a.
        wait_until(lambda: not any(w["state"] == "draining" for w in px.status_json()["workers"]),
                   timeout=10, msg="old generations still draining: %r" % px.status_json())
        n_a = _traffic(a)
        time.sleep(1.0)
        assert _traffic(a) == n_a, "removed server still gets traffic"
        gen2 = px.status_json()["generation"]
    finally:
        st = lg.stop()
    print("generations %d -> %d -> %d" % (gen0, gen1, gen2))
    print(format_stats(st))
    assert gen0 < gen1 < gen2, (gen0, gen1, gen2)
    assert st["failures"] == 0, format_stats(st)


# ----------------------------------------------------------------------------------------------
# 6. algorithms and per-server options

def test_balancing_weighted_round_robin(t):
    a, b = t.backend("a"), t.backend("b")
    px = t.proxy_to(upstream={"balance": "weighted_round_robin", "servers": [
        {"address": a.address, "weight": 3}, {"address": b.address, "weight": 1}]})
    seq = []
    with px.conn() as c:
        for _ in range(400):
            r = c.request("GET", "/echo")
            assert r.status == 200
            seq.append(_who(r))
    n = _count(seq)
    runs = [len(m.group(0)) for m in re.finditer(r"a+", "".join(seq))]
    print("weights 3:1 -> %r, longest run of a: %d, first: %s" % (n, max(runs),
                                                                 "".join(seq[:16])))
    assert abs(n.get("a", 0) - 300) <= 4 and abs(n.get("b", 0) - 100) <= 4, n
    assert max(runs) <= 3 and "bb" not in "".join(seq), "not smooth: %s" % "".join(seq[:40])


def test_balancing_consistent_hash_header(t):
    bes = [t.backend("h%d" % i) for i in range(3)]
    px = t.proxy_to(*bes, server={"workers": 2},
                    upstream={"balance": "consistent_hash", "hash_key": "header:X-Key"})
    owner = {}
    for rnd in range(3):
        for k in range(90):
            key = "user-%d" % k
            r = px.get("/echo", headers={"X-Key": key})     # new connection: either worker
            assert r.status == 200
            if rnd == 0:
                owner[key] = _who(r)
            else:
                assert _who(r) == owner[key], "key %s: %s then %s" % (key, owner[key], _who(r))
    share = _count(owner.values())
    print("90 keys over 3 servers: %r" % share)
    assert len(share) == 3 and min(share.values()) >= 12, share
    assert px.get("/echo").status == 200        # no key: still served


def test_balancing_ip_hash_and_sse_balance(t):
    bes = [t.backend("i%d" % i) for i in range(3)]
    px = t.proxy_to(*bes, server={"workers": 2}, upstream={"balance": "ip_hash"},
                    routes=[{"path": "/rr", "upstream": "rr", "sse_balance": "ip_hash"},
                            {"path": "/", "upstream": "b"}],
                    upstreams={"rr": {"servers": [{"address": b.address} for b in bes]}})
    who = _count(_who(px.get("/echo")) for _ in range(20))
    assert len(who) == 1, "ip_hash: one client address, several servers %r" % who
    sse = {"Accept": "text/html, text/event-stream;q=0.9"}
    who_sse = _count(_who(px.get("/rr/x", headers=sse)) for _ in range(20))
    who_rr = _count(_who(px.get("/rr/x")) for _ in range(21))
    print("ip_hash %r; route sse_balance=ip_hash over round_robin: sse %r, other %r" % (
        who, who_sse, who_rr))
    assert len(who_sse) == 1, "sse_balance = ip_hash not applied: %r" % who_sse
    assert len(who_rr) == 3 and min(who_rr.values()) >= 5, who_rr


def test_balancing_least_time_prefers_fast(t):
    slow = t.backend("slow", delay=0.05)
    fast = t.backend("fast")
    px = t.proxy_to(slow, fast, server={"workers": 2}, upstream={"balance": "least_time"})
    who = []
    for _ in range(150):
        who.append(_who(px.get("/echo")))
    n = _count(who[50:])
    print("least_time, last 100: %r" % n)
    assert n.get("fast", 0) >= 80, n


def test_balancing_adaptive_follows_reports(t):
    busy = t.backend("busy")
    idle = t.backend("idle")
    px = t.proxy_to(busy, idle, server={"workers": 2}, upstream={"balance": "adaptive"})
    before = _count(_who(px.get("/echo")) for _ in range(40))
    assert before.get("busy", 0) >= 10 and before.get("idle", 0) >= 10, before
    busy_id = _server(px, busy.address)["id"]
    r = px.proxyctl("report", "b", busy_id, "95", "90", "8")
    assert r.returncode == 0, r
    r = px.proxyctl("report", "b", "nope", "1", "1", "1")
    assert r.returncode != 0 and "unknown backend" in (r.stdout + r.stderr), r
    r = px.proxyctl("report", "b", busy_id, "250", "1", "1")
    assert r.returncode != 0, r
    after = _count(_who(px.get("/echo")) for _ in range(100))
    print("adaptive before %r, after a busy report %r" % (before, after))
    # score busy = 0.05..0.1 vs idle 1.0: the busy one gets a small share
    assert after.get("busy", 0) <= 20 and after.get("idle", 0) >= 80, after


@harness.timeout(40)
def test_balancing_backup_only_when_primaries_down(t):
    a, b, c = t.backend("a"), t.backend("b"), t.backend("backup")
    px = t.proxy_to(server={"workers": 2}, upstream={"health_check": HC_FAST, "servers": [
        {"address": a.address}, {"address": b.address}, {"address": c.address, "backup": True}]})
    assert _server(px, c.address)["backup"] is True
    who = _count(_who(px.get("/echo")) for _ in range(20))
    assert "backup" not in who and who.get("a") and who.get("b"), who
    port_a = a.port
    a.stop()
    wait_until(lambda: not _server(px, a.address)["healthy"], timeout=3)
    who = _count(_who(px.get("/echo")) for _ in range(10))
    assert who == {"b": 10}, "one primary left: %r" % who
    b.stop()
    wait_until(lambda: not _server(px, b.address)["healthy"], timeout=3)
    rs = [px.get("/echo") for _ in range(10)]
    assert [r.status for r in rs] == [200] * 10, rs
    assert _count(_who(r) for r in rs) == {"backup": 10}
    a2 = t.backend("a2", port=port_a)
    wait_until(lambda: _server(px, a2.address)["healthy"], timeout=3)
    time.sleep(0.2)
    n_backup = _traffic(c)
    who = _count(_who(px.get("/echo")) for _ in range(10))
    assert who == {"a2": 10} and _traffic(c) == n_backup, "primary back: %r" % who


@harness.timeout(40)
def test_balancing_sticky_cookie(t):
    bes = [t.backend("k%d" % i) for i in range(3)]
    px = t.proxy_to(*bes, server={"workers": 2},
                    upstream={"sticky": {"cookie": "srv"}, "health_check": HC_FAST})
    r = px.get("/echo")
    sc = r.header_all("Set-Cookie")
    assert len(sc) == 1, r.headers
    m = re.fullmatch(r"srv=([0-9a-f]{16}); Path=/; HttpOnly", sc[0])
    assert m, "Set-Cookie %r" % sc[0]
    first = _who(r)
    for i in range(15):
        cookie = "srv=%s" % m.group(1) if i % 2 else "a=1; srv=%s; b=2" % m.group(1)
        r2 = px.get("/echo", headers={"Cookie": cookie})
        assert r2.status == 200 and _who(r2) == first, "pinned to %s, went to %s" % (
            first, _who(r2))
    free = _count(_who(px.get("/echo")) for _ in range(12))
    assert len(free) == 3, "without the cookie requests are balanced: %r" % free
    r3 = px.get("/echo", headers={"Cookie": "srv=0000000000000000"})
    assert r3.status == 200 and re.fullmatch(r"srv=[0-9a-f]{16}; Path=/; HttpOnly",
                                             r3.header("Set-Cookie") or ""), r3.headers
    # the pinned server goes down: another one, and a new cookie that pins to it
    victim = [b for b in bes if b.name == first][0]
    victim.stop()
    wait_until(lambda: not _server(px, victim.address)["healthy"], timeout=3)
    r4 = px.get("/echo", headers={"Cookie": "srv=%s" % m.group(1)})
    assert r4.status == 200 and _who(r4) != first, r4
    m4 = re.fullmatch(r"srv=([0-9a-f]{16}); Path=/; HttpOnly", r4.header("Set-Cookie") or "")
    assert m4 and m4.group(1) != m.group(1), "no new cookie: %r" % r4.headers
    for _ in range(6):
        assert _who(px.get("/echo", headers={"Cookie": "srv=%s" % m4.group(1)})) == _who(r4)


@harness.timeout(40)
def test_balancing_max_connections(t):
    a, b = t.backend("a"), t.backend("b")
    px = t.proxy_to(server={"workers": 2, "timeouts": {"upstream_connect": "1s"}}, upstream={
        "balance": "consistent_hash", "hash_key": "header:X-Key",
        "servers": [{"address": a.address, "max_connections": 1},
                    {"address": b.address, "max_connections": 1}]})
    key = {"X-Key": "same"}
    home = _who(px.get("/echo", headers=key))
    # the key's server is busy -> the same key goes to the other one
    for _ in range(3):
        slow = _Bg(px, "/slow/1200", key)
        wait_until(lambda: sum(s["active"] for s in _servers(px)) == 1, timeout=2)
        r = px.get("/echo", headers=key)
        assert r.status == 200 and _who(r) != home, "full server %s chosen again" % home
        assert _who(slow.join()) == home
    # both busy: waits up to upstream_connect, then 503
    s1, s2 = _Bg(px, "/slow/3000", key), None
    wait_until(lambda: sum(s["active"] for s in _servers(px)) == 1, timeout=2)
    s2 = _Bg(px, "/slow/3000", key)
    wait_until(lambda: sum(s["active"] for s in _servers(px)) == 2, timeout=2)
    assert all(s["active"] == 1 for s in _servers(px)), _servers(px)
    t0 = time.monotonic()
    r = px.get("/echo", headers=key)
    waited = time.monotonic() - t0
    print("all full: %d after %.2fs" % (r.status, waited))
    assert_error(r, 503)
    assert 0.8 <= waited <= 2.0, "waited %.2fs, upstream_connect = 1s" % waited
    s1.join()
    s2.join()
    # both busy for a short while: the waiting request gets the first free server
    s1 = _Bg(px, "/slow/500", key)
    wait_until(lambda: sum(s["active"] for s in _servers(px)) == 1, timeout=2)
    s2 = _Bg(px, "/slow/500", key)
    wait_until(lambda: sum(s["active"] for s in _servers(px)) == 2, timeout=2)
    t0 = time.monotonic()
    r = px.get("/echo", headers=key)
    waited = time.monotonic() - t0
    print("queued: %d after %.2fs" % (r.status, waited))
    assert r.status == 200 and waited < 1.0, (r, waited)
    s1.join()
    s2.join()


def test_balancing_retry_idempotent_only(t):
    rst = t.backend("rst", behave_as="/reset")     # reads the request head, then RST
    good = t.backend("good")
    px = t.proxy_to(rst, good, upstreams={"dead": {"servers": [
        {"address": t.refusing_address()}, {"address": t.refusing_address()}]}},
        routes=[{"path": "/dead", "upstream": "dead"}, {"path": "/", "upstream": "b"}])
    # POST: not retried once sent -> 502, the other server never sees it
    for _ in range(4):
        n_rst, n_good = len(rst.requests), len(good.requests)
        r = px.request("POST", "/echo", body=b"payload")
        if len(rst.requests) > n_rst:
            assert_error(r, 502)
            assert len(good.requests) == n_good, "POST replayed: %r" % good.requests[-1]
            break
        assert r.status == 200 and _who(r) == "good", r
    else:
        raise AssertionError("no POST reached the resetting backend")
    # GET: retried on the other server
    for _ in range(4):
        n_rst = len(rst.requests)
        r = px.get("/echo?g=1")
        assert r.status == 200 and _who(r) == "good", r
        if len(rst.requests) > n_rst:
            assert good.requests[-1]["method"] == "GET" and \
                good.requests[-1]["target"] == "/echo?g=1"
            break
    else:
        raise AssertionError("no GET reached the resetting backend")
    # every server refuses: all tried -> 502
    assert_error(px.get("/dead/x"), 502)


@harness.timeout(30)
def test_balancing_passive_health_counts_502_to_504_only(t):
    """A 500 (or 404) is the application's answer, not a failing server: 10 in a row leave the
    circuit closed. Three 502s open it (as 503s do in test_balancing_circuit_breaker)."""
    be = t.backend()
    px = t.proxy_to(be)
    for _ in range(10):
        assert px.get("/status/500").status == 500
        assert px.get("/status/404").status == 404
    s = _server(px, be.address)
    assert s["circuit"] == "closed" and s["available"], s
    assert px.get("/echo").status == 200
    for _ in range(3):
        assert px.get("/status/502").status == 502
    s = _server(px, be.address)
    assert s["circuit"] == "open" and not s["available"], s


@harness.timeout(40)
def test_balancing_circuit_breaker(t):
    bad = t.backend("bad", behave_as="/status/503")
    good = t.backend("good")
    px = t.proxy_to(bad, good)

    def hit_bad(limit=6):
        """Requests until one reaches `bad` (its 503 passes through); the others -> good."""
        for _ in range(limit):
            n = len(bad.requests)
            r = px.get("/echo")
            if len(bad.requests) > n:
                return r
            assert r.status == 200 and _who(r) == "good", r
        raise AssertionError("no request reached the failing server in %d" % limit)

    for _ in range(3):
        assert hit_bad().status == 503
    s = _server(px, bad.address)
    print("after 3 failures: %r" % s)
    assert s["circuit"] == "open" and not s["available"], s
    assert s["failures"] >= 3, s
    n = len(bad.requests)
    assert [_who(px.get("/echo")) for _ in range(6)] == ["good"] * 6
    assert len(bad.requests) == n, "an open circuit got traffic"
    # after 1 s: one trial, which fails -> open for 2 s
    time.sleep(1.1)
    print("after 1.1 s: %r" % _server(px, bad.address)["circuit"])
    assert hit_bad().status == 503
    assert _server(px, bad.address)["circuit"] == "open"
    time.sleep(1.2)
    n = len(bad.requests)
    assert [_who(px.get("/echo")) for _ in range(4)] == ["good"] * 4
    assert len(bad.requests) == n, "circuit reopened for less than 2 s"
    # backoff over, the server has recovered: the trial succeeds and closes the circuit
    time.sleep(1.0)
    bad.behave_as = None
    r = hit_bad()
    assert r.status == 200, r
    s = _server(px, bad.address)
    assert s["circuit"] == "closed" and s["available"], s
    who = _count(_who(px.get("/echo")) for _ in range(10))
    assert who.get("bad", 0) >= 4, who


def _conns_by_worker(px, per_worker, limit=40):
    """Client connections, each attributed to the worker that accepted it (the worker whose
    open-connection count in status went up): {pid: [Conn]} with >= per_worker on two workers.
    Also returns every connection opened, to close."""
    def counts():
        return {w["pid"]: w["connections"] for w in px.status_json()["workers"]}
    by = {}
    opened = []
    before = wait_until(lambda: (lambda n: n if sum(n.values()) == 0 else None)(counts()),
                        timeout=3, msg="client connections still open in status")
    for _ in range(limit):
        c = px.conn(timeout=15)
        opened.append(c)
        now = wait_until(lambda: (lambda n: n if sum(n.values()) == sum(before.values()) + 1
                                  else None)(counts()), timeout=2, interval=0.01)
        pid = [p for p in now if now[p] > before.get(p, 0)][0]
        by.setdefault(pid, []).append(c)
        before = now
        full = [p for p in by if len(by[p]) >= per_worker]
        if len(full) >= 2:
            return {p: by[p] for p in full[:2]}, opened
    raise AssertionError("connections never spread over two workers: %r" % {
        p: len(v) for p, v in by.items()})


@harness.timeout(40)
def test_balancing_least_conn_sees_other_workers_requests(t):
    """Long requests pinned (sticky cookie) to server P through worker A; then requests without
    the cookie through worker B: least_conn in B must see A's requests on P and choose Q."""
    s0, s1 = t.backend("s0"), t.backend("s1")
    px = t.proxy_to(s0, s1, server={"workers": 2},
                    upstream={"balance": "least_conn", "sticky": {"cookie": "srv"}})
    r = px.get("/echo")
    cookie = r.header("Set-Cookie").split(";")[0]
    pinned = _who(r)
    by, opened = _conns_by_worker(px, 3)
    (pid_a, conns_a), (pid_b, conns_b) = sorted(by.items())
    conns_a, conns_b = conns_a[:3], conns_b[:2]
    try:
        for c in conns_a:
            c.send(harness.build_request("GET", "/slow/4000", headers={"Cookie": cookie}))
        try:
            wait_until(lambda: sum(s["active"] for s in _servers(px)) == 3, timeout=2)
        except AssertionError:
            raise AssertionError("3 pinned requests sent, status %r, workers %r, backends %r" % (
                _servers(px), px.status_json()["workers"],
                [(r["target"], r["headers"]) for r in s0.requests + s1.requests]))
        for i, c in enumerate(conns_b):
            c.send(harness.build_request("GET", "/slow/4000"))
            wait_until(lambda: sum(s["active"] for s in _servers(px)) == 4 + i, timeout=2)
        active = {s["address"]: s["active"] for s in _servers(px)}
        print("pinned %s; worker %d holds 3 pinned, worker %d sent 2 free: active %r" % (
            pinned, pid_a, pid_b, active))
        p_be = s0 if pinned == "s0" else s1
        q_be = s1 if pinned == "s0" else s0
        assert active[p_be.address] == 3 and active[q_be.address] == 2, active
        assert [_who(c.read_response()) for c in conns_a] == [pinned] * 3
        assert [_who(c.read_response()) for c in conns_b] == [q_be.name] * 2
    finally:
        for c in opened:
            c.close()
