"""Headers added and removed on the way: X-Forwarded-*, X-Real-IP, X-Request-Id, hop-by-hop,
Host, Proxy-Authorization, server.response_headers."""

import re

import harness
from harness import assert_error, hall, hget

RID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def _seen(r):
    """Headers the backend received, from an /echo response."""
    assert r.status == 200, r
    return [tuple(x) for x in r.json()["headers"]]


def test_forwarded_headers_defaults(t):
    px = t.proxy_to(t.backend())
    r = px.get("/echo", host="example.test:8080")
    h = _seen(r)
    assert hall(h, "X-Forwarded-For") == ["127.0.0.1"], h
    assert hall(h, "X-Forwarded-Proto") == ["http"], h
    assert hall(h, "X-Forwarded-Host") == ["example.test:8080"], h
    assert hall(h, "X-Real-IP") == ["127.0.0.1"], h
    assert hall(h, "Host") == ["example.test:8080"], "Host must be forwarded unchanged: %r" % h
    rid = hall(h, "X-Request-Id")
    assert len(rid) == 1 and RID.match(rid[0]), h
    assert r.header("X-Request-Id") == rid[0], "response X-Request-Id %r != upstream's %r" % (
        r.header("X-Request-Id"), rid[0])


def test_x_forwarded_for_appended(t):
    px = t.proxy_to(t.backend())
    h = _seen(px.get("/echo", headers={"X-Forwarded-For": "203.0.113.9"}))
    assert hall(h, "X-Forwarded-For") == ["203.0.113.9, 127.0.0.1"], h
    h = _seen(px.get("/echo", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9"}))
    assert hall(h, "X-Forwarded-For") == ["198.51.100.1, 203.0.113.9, 127.0.0.1"], h
    # not trusted by default: X-Real-IP stays the peer
    assert hall(h, "X-Real-IP") == ["127.0.0.1"], h


def test_request_id_kept_when_valid(t):
    px = t.proxy_to(t.backend())
    for rid in ("abc-123_X.y", "a", "Z" * 128):
        r = px.get("/echo", headers={"X-Request-Id": rid})
        assert hall(_seen(r), "X-Request-Id") == [rid], rid
        assert r.header("X-Request-Id") == rid


def test_request_id_replaced_when_invalid(t):
    px = t.proxy_to(t.backend())
    seen = set()
    for bad in ("Z" * 129, "has space", "semi;colon", "slash/x", "ü-umlaut", ""):
        r = px.get("/echo", headers=[("X-Request-Id", bad)])
        up = hall(_seen(r), "X-Request-Id")
        assert len(up) == 1 and up[0] != bad and RID.match(up[0]), (bad, up)
        assert r.header("X-Request-Id") == up[0], (bad, up, r.header("X-Request-Id"))
        seen.add(up[0])
    assert len(seen) == 6, "generated ids are not unique: %r" % seen


def test_request_id_generated_unique(t):
    px = t.proxy_to(t.backend())
    with px.conn() as c:
        ids = [c.request("GET", "/echo").header("X-Request-Id") for _ in range(20)]
    assert all(i and RID.match(i) for i in ids), ids
    assert len(set(ids)) == 20, ids


def test_real_ip_from_trusted_proxy(t):
    px = t.proxy_to(t.backend(), server={"real_ip_header": "X-Forwarded-For",
                                         "trusted_proxies": ["127.0.0.1/32", "10.0.0.0/8"]})
    h = _seen(px.get("/echo", headers={"X-Forwarded-For": "203.0.113.7, 10.1.2.3"}))
    assert hall(h, "X-Real-IP") == ["203.0.113.7"], h
    h = _seen(px.get("/echo", headers={"X-Forwarded-For": "198.51.100.2, 203.0.113.7, 10.9.9.9"}))
    assert hall(h, "X-Real-IP") == ["203.0.113.7"], "right-most untrusted expected: %r" % h
    h = _seen(px.get("/echo"))
    assert hall(h, "X-Real-IP") == ["127.0.0.1"], h


def test_real_ip_custom_header(t):
    px = t.proxy_to(t.backend(), server={"real_ip_header": "X-Client-Addr",
                                         "trusted_proxies": ["127.0.0.0/8"]})
    h = _seen(px.get("/echo", headers={"X-Client-Addr": "192.0.2.44"}))
    assert hall(h, "X-Real-IP") == ["192.0.2.44"], h


def test_real_ip_untrusted_peer_ignored(t):
    px = t.proxy_to(t.backend(), server={"real_ip_header": "X-Forwarded-For",
                                         "trusted_proxies": ["10.0.0.0/8"]})
    h = _seen(px.get("/echo", headers={"X-Forwarded-For": "203.0.113.7"}))
    assert hall(h, "X-Real-IP") == ["127.0.0.1"], h
    assert hall(h, "X-Forwarded-For") == ["203.0.113.7, 127.0.0.1"], h


def test_hop_by_hop_request_headers_removed(t):
    px = t.proxy_to(t.backend())
    r = px.get("/echo", headers=[
        ("Connection", "X-Foo, X-Bar"), ("X-Foo", "1"), ("X-Bar", "2"),
        ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"), ("TE", "trailers"),
        ("Trailer", "X-T"), ("Upgrade", "foo"), ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("X-Keep", "yes")])
    h = _seen(r)
    names = {k.lower() for k, _ in h}
    for gone in ("x-foo", "x-bar", "keep-alive", "proxy-connection", "te", "trailer", "upgrade",
                 "proxy-authorization"):
        assert gone not in names, "%s forwarded upstream: %r" % (gone, h)
    for v in hall(h, "Connection"):
        assert "x-foo" not in v.lower() and "x-bar" not in v.lower(), h
    assert hall(h, "X-Keep") == ["yes"], h


def test_proxy_authorization_never_forwarded(t):
    px = t.proxy_to(t.backend())
    h = _seen(px.get("/echo", headers={"Proxy-Authorization": "Bearer secret",
                                       "Authorization": "Bearer kept"}))
    assert not hall(h, "Proxy-Authorization"), h
    assert hall(h, "Authorization") == ["Bearer kept"], h


def test_hop_by_hop_response_headers_removed(t):
    px = t.proxy_to(t.backend())
    r = px.get("/headers")
    assert r.status == 200 and r.body == b"headers\n", r
    for gone in ("X-Hop", "Keep-Alive", "Proxy-Connection", "Trailer", "Upgrade"):
        assert not r.has(gone), "%s passed to the client: %r" % (gone, r.headers)
    for v in r.header_all("Connection"):
        assert "x-hop" not in v.lower(), r.headers
    assert r.header("X-Keep") == "yes", r.headers


def test_end_to_end_headers_kept(t):
    px = t.proxy_to(t.backend())
    h = _seen(px.get("/echo", headers=[("X-Multi", "1"), ("X-Multi", "2"),
                                       ("Cookie", "a=b"), ("User-Agent", "itest")]))
    assert hall(h, "X-Multi") == ["1", "2"], h
    assert hall(h, "Cookie") == ["a=b"] and hall(h, "User-Agent") == ["itest"], h


def test_response_headers_added(t):
    px = t.proxy_to(t.refusing_address(), routes=[
        {"path": "/ok", "upstream": "good"}, {"path": "/down", "upstream": "b"}],
        upstreams={"good": {"servers": [{"address": t.backend().address}]}},
        server={"response_headers": {"X-Content-Type-Options": "nosniff",
                                     "X-Frame-Options": "DENY"}})
    for path, status in (("/ok/echo", 200), ("/nothing", 404), ("/down/x", 502)):
        r = px.get(path)
        assert r.status == status, (path, r)
        assert r.header("X-Content-Type-Options") == "nosniff", (path, r.headers)
        assert r.header("X-Frame-Options") == "DENY", (path, r.headers)
        if status != 200:
            assert_error(r, status)


def test_backend_response_passthrough(t):
    """Status codes and bodies of the backend pass through untouched, on one connection."""
    px = t.proxy_to(t.backend())
    with px.conn() as c:
        for st in (200, 201, 204, 301, 304, 400, 404, 500, 503):
            r = c.request("GET", "/status/%d" % st)
            assert r.status == st, (st, r)
            if st not in (204, 304):
                assert r.body == b"status %d\n" % st, r
            assert hget(r.headers, "X-Backend") == "b1"
