"""Routing (path prefix/exact, host, methods, order, strip_prefix), 404, round robin, pooling."""

import time
import harness
from harness import assert_error


def _setup(t, routes, n=2, **cfg):
    """Backends a, b, c... each alone in upstream of the same name; returns (proxy, backends)."""
    names = "abcdef"[:n]
    bes = {x: t.backend(x) for x in names}
    ups = {x: {"servers": [{"address": bes[x].address}]} for x in names}
    px = t.proxy(harness.merge({"upstreams": ups, "routes": routes}, cfg))
    return px, bes


def _who(px, path, **kw):
    r = px.request(kw.pop("method", "GET"), path, **kw)
    return r.header("X-Backend") if r.status == 200 else r.status


def test_route_path_segment_prefix(t):
    px, _ = _setup(t, [{"path": "/api", "upstream": "a"}, {"path": "/", "upstream": "b"}])
    for p in ("/api", "/api/", "/api/x", "/api/x/y", "/api?q=1", "/api/?q=1"):
        assert _who(px, p) == "a", p
    for p in ("/apix", "/apix/y", "/ap", "/", "/other/api"):
        assert _who(px, p) == "b", p


def test_route_path_forms_equivalent(t):
    """"/api", "/api/" and "/api/*" all match /api, /api/, /api/x but never /apix."""
    px, _ = _setup(t, [{"path": "/one/", "upstream": "a"}, {"path": "/two/*", "upstream": "a"},
                       {"path": "/three", "upstream": "a"}, {"path": "/", "upstream": "b"}])
    for base in ("/one", "/two", "/three"):
        for p in (base, base + "/", base + "/x"):
            assert _who(px, p) == "a", p
        assert _who(px, base + "x") == "b", base + "x"


def test_route_no_match_404(t):
    px, _ = _setup(t, [{"path": "/api", "upstream": "a"}], n=1)
    r = px.get("/apix")
    assert_error(r, 404)
    r = px.get("/nothing", headers={"X-Request-Id": "my-id.404"})
    data = assert_error(r, 404)
    assert data["request_id"] == "my-id.404"


def test_route_path_exact(t):
    px, _ = _setup(t, [{"path_exact": "/x", "upstream": "a"}, {"path": "/", "upstream": "b"}])
    assert _who(px, "/x") == "a"
    assert _who(px, "/x?q=1") == "a"
    for p in ("/x/", "/x/y", "/xy"):
        assert _who(px, p) == "b", p


def test_route_host_exact_and_wildcard(t):
    px, _ = _setup(t, [{"path": "/", "host": "api.example.com", "upstream": "a"},
                       {"path": "/", "host": "*.example.com", "upstream": "b"},
                       {"path": "/", "upstream": "c"}], n=3)
    assert _who(px, "/", host="api.example.com") == "a"
    assert _who(px, "/", host="api.example.com:8080") == "a", "port of Host must be ignored"
    assert _who(px, "/", host="www.example.com") == "b"
    assert _who(px, "/", host="www.example.com:81") == "b"
    assert _who(px, "/", host="example.com") == "c"
    assert _who(px, "/", host="wwwexample.com") == "c"
    assert _who(px, "/", host="other.test") == "c"


def test_route_host_case_insensitive(t):
    px, _ = _setup(t, [{"path": "/", "host": "api.example.com", "upstream": "a"},
                       {"path": "/", "upstream": "b"}])
    assert _who(px, "/", host="API.Example.COM") == "a"


def test_route_host_no_fallback_404(t):
    px, _ = _setup(t, [{"path": "/", "host": "api.example.com", "upstream": "a"}], n=1)
    assert_error(px.get("/", host="other.example.com"), 404)


def test_route_methods(t):
    px, _ = _setup(t, [{"path": "/m", "methods": ["GET", "POST"], "upstream": "a"},
                       {"path": "/", "upstream": "b"}])
    assert _who(px, "/m") == "a"
    assert _who(px, "/m", method="POST", body=b"x") == "a"
    assert _who(px, "/m", method="DELETE") == "b"
    assert _who(px, "/m", method="PUT", body=b"x") == "b"


def test_route_methods_no_fallback_404(t):
    px, _ = _setup(t, [{"path": "/", "methods": ["GET"], "upstream": "a"}], n=1)
    assert _who(px, "/") == "a"
    assert_error(px.request("DELETE", "/"), 404)


def test_route_first_match_wins(t):
    px, _ = _setup(t, [{"path": "/", "upstream": "a"}, {"path": "/api", "upstream": "b"}])
    assert _who(px, "/api/x") == "a"


def test_route_strip_prefix(t):
    px, bes = _setup(t, [{"path": "/api", "upstream": "a", "strip_prefix": True},
                         {"path": "/keep", "upstream": "a"}], n=1)
    cases = {"/api/x?q=1": "/x?q=1", "/api": "/", "/api/": "/", "/api?q=1": "/?q=1",
             "/api/x/y": "/x/y", "/keep/x": "/keep/x"}
    for sent, seen in cases.items():
        r = px.get(sent)
        assert r.status == 200, (sent, r)
        assert r.json()["path"] == seen, "%s -> backend saw %s, expected %s" % (
            sent, r.json()["path"], seen)


def test_round_robin(t):
    bes = [t.backend(n) for n in ("r1", "r2", "r3")]
    px = t.proxy_to(*bes)
    with px.conn() as c:
        seq = [c.request("GET", "/echo").header("X-Backend") for _ in range(9)]
    for i in range(0, 9, 3):
        assert sorted(seq[i:i + 3]) == ["r1", "r2", "r3"], seq
    assert [b.served for b in bes] == [3, 3, 3], seq
    # separate client connections rotate as well
    seq = [px.get("/echo").header("X-Backend") for _ in range(6)]
    assert sorted(seq) == ["r1", "r1", "r2", "r2", "r3", "r3"], seq


def test_upstream_connections_pooled(t):
    be = t.backend()
    px = t.proxy_to(be)
    with px.conn() as c:
        for i in range(40):
            assert c.request("GET", "/echo?i=%d" % i).status == 200
    assert be.served == 40
    assert be.connections <= 2, "backend saw %d TCP connections for 40 requests" % be.connections
    before = be.connections
    for i in range(20):   # new client connection each time: the pool is per worker
        assert px.get("/echo?j=%d" % i).status == 200
    assert be.connections - before <= 2, (
        "backend saw %d new connections for 20 sequential clients" % (be.connections - before))


def test_upstream_closing_after_every_response_loses_nothing(t):
    """A backend that keeps connections "alive" but closes each right after its response: the
    close races the next request for the pooled connection. Body-less requests that lose the race
    go again on a fresh connection: none fails. (A request whose body was already sent cannot be
    sent again: it loses such a race with a 502, as with nginx; a probe before reuse makes that
    rarer but cannot close the window, so it is not asserted here.)"""
    import threading
    be = t.backend(keepalive_idle=0.0)
    px = t.proxy_to(be, server={"workers": 1})
    errors = []

    def client(k):
        try:
            with px.conn() as c:
                for i in range(60):
                    method = "DELETE" if i % 3 == 2 else "GET"
                    r = c.request(method, "/echo?k=%d&i=%d" % (k, i))
                    if r.status != 200:
                        errors.append((k, i, r.status))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((k, repr(e)))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors[:5]
    assert be.served >= 240, be.served
    print("report: backend got %d requests over %d connections" % (be.served, be.connections))


def test_upstream_pool_surplus_kept_for_grace_then_trimmed_to_keepalive(t):
    """keepalive = 2 with bursts of 8 concurrent slow requests: the first burst opens 8 upstream
    connections; all 8 go back to the pool (6 beyond keepalive, for a 2 s grace), so a second
    burst right after opens none. Once the grace is over the pool holds 2, and the next request
    reuses one of them."""
    import threading
    be = t.backend(delay=0.3)
    px = t.proxy_to(be, upstream={"keepalive": 2}, server={"workers": 1})

    def burst(tag):
        errors = []

        def one(k):
            try:
                with px.conn() as c:
                    r = c.request("GET", "/echo?%s=%d" % (tag, k))
                    if r.status != 200:
                        errors.append((k, r.status))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append((k, repr(e)))
        threads = [threading.Thread(target=one, args=(k,)) for k in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        assert not errors, errors

    burst("first")
    assert be.connections == 8, be.connections
    burst("second")
    assert be.connections == 8, "the second burst opened %d more" % (be.connections - 8)
    open_now = len(be._conns)
    assert open_now == 8, open_now
    deadline = time.time() + 6
    while time.time() < deadline and len(be._conns) > 2:
        time.sleep(0.1)
    assert len(be._conns) == 2, "after the grace %d stay open, expected keepalive = 2" % (
        len(be._conns))
    with px.conn() as c:
        assert c.request("GET", "/echo?after=1").status == 200
    assert be.connections == 8, be.connections


def test_upstream_connection_close_not_reused(t):
    """A backend answer with "Connection: close" ends that upstream connection: the next
    request goes over a new one and succeeds."""
    be = t.backend()
    px = t.proxy_to(be)
    with px.conn() as c:
        for i in range(5):
            r = c.request("GET", "/echo?close=1&i=%d" % i)
            assert r.status == 200 and r.json()["path"] == "/echo?close=1&i=%d" % i, r
    assert be.connections == 5, "expected one upstream connection per request, saw %d" % (
        be.connections)


def test_upstream_idle_close_detected(t):
    """A backend that closes idle keep-alive connections after 0.2 s: requests 0.5 s apart all
    succeed (the pool drops connections closed by the server)."""
    import time
    be = t.backend(keepalive_idle=0.2)
    px = t.proxy_to(be)
    with px.conn() as c:
        for i in range(4):
            r = c.request("GET", "/echo?i=%d" % i)
            assert r.status == 200, "request %d after an upstream idle close: %r" % (i, r)
            time.sleep(0.5)
    for i in range(3):
        assert px.get("/echo").status == 200
        time.sleep(0.5)
