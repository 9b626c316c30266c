"""CORS on a route (`cors = {...}`): the proxy answers preflights itself (204, or 403 for an
origin or method it does not allow) and adds Access-Control-* headers to proxied responses for
allowed origins only. Routes without cors pass OPTIONS to the backend untouched."""

from harness import assert_error

CORS = {
    "allowed_origins": ["https://app.example.com", "https://*.example.org"],
    "allowed_methods": ["GET", "POST"],
    "allowed_headers": ["Content-Type", "X-Token"],
    "allow_credentials": True,
    "max_age": "10m",
    "expose_headers": ["X-Request-Id"],
}


def _setup(t, cors=None):
    """/api has cors (CORS by default), everything else goes to the same backend without it."""
    be = t.backend()
    px = t.proxy_to(be, routes=[{"path": "/api", "upstream": "b", "cors": cors or CORS},
                                {"path": "/", "upstream": "b"}])
    return px, be


def _preflight(px, origin, method="POST", req_headers="content-type, x-token", path="/api/x"):
    h = [("Origin", origin), ("Access-Control-Request-Method", method)]
    if req_headers is not None:
        h.append(("Access-Control-Request-Headers", req_headers))
    return px.request("OPTIONS", path, headers=h)


def _tokens(value):
    return [x.strip().lower() for x in (value or "").split(",") if x.strip()]


def _vary(r):
    out = []
    for v in r.header_all("Vary"):
        out += _tokens(v)
    return out


def _cors_names(r):
    return [k for k, _ in r.headers if k.lower().startswith("access-control-")]


def test_cors_preflight_answered_by_proxy(t):
    px, be = _setup(t)
    r = _preflight(px, "https://app.example.com")
    assert r.status == 204, r
    assert r.header("Access-Control-Allow-Origin") == "https://app.example.com", r.headers
    assert r.header("Access-Control-Allow-Credentials") == "true", r.headers
    assert _tokens(r.header("Access-Control-Allow-Methods")) == ["get", "post"], r.headers
    assert _tokens(r.header("Access-Control-Allow-Headers")) == ["content-type", "x-token"], \
        r.headers
    assert r.header("Access-Control-Max-Age") == "600", r.headers
    assert "origin" in _vary(r), "Vary must name Origin: %r" % r.headers
    assert len(r.header_all("Access-Control-Allow-Origin")) == 1, r.headers
    assert not r.body, "a 204 has no body: %r" % r.body
    assert r.header("X-Backend") is None, "the preflight reached the backend: %r" % r.headers
    assert be.served == 0, "the backend saw the preflight: %r" % be.requests


def test_cors_preflight_keeps_connection(t):
    """A preflight answer is a normal response: the connection stays usable."""
    px, be = _setup(t)
    with px.conn() as c:
        r = c.request("OPTIONS", "/api/x", headers=[("Origin", "https://app.example.com"),
                                                    ("Access-Control-Request-Method", "GET")])
        assert r.status == 204, r
        r = c.request("GET", "/api/x", headers=[("Origin", "https://app.example.com")])
        assert r.status == 200 and r.header("X-Backend") == "b1", r
    assert be.served == 1


def test_cors_preflight_disallowed_origin_403(t):
    px, be = _setup(t)
    for origin in ("https://evil.com", "http://app.example.com", "https://app.example.com:8443",
                   "https://app.example.com.evil.com", "null"):
        r = _preflight(px, origin)
        assert_error(r, 403)
        assert _cors_names(r) == [], (origin, r.headers)
    assert be.served == 0, be.requests


def test_cors_preflight_method_not_allowed_403(t):
    px, be = _setup(t)
    r = _preflight(px, "https://app.example.com", method="DELETE")
    assert_error(r, 403)
    assert _cors_names(r) == [], r.headers
    assert be.served == 0


def test_cors_wildcard_origin_pattern(t):
    px, be = _setup(t)
    for origin in ("https://a.example.org", "https://a.b.example.org", "https://X-1.Example.Org"):
        r = _preflight(px, origin, method="GET", req_headers=None)
        assert r.status == 204, (origin, r)
        assert r.header("Access-Control-Allow-Origin") == origin, (origin, r.headers)
    for origin in ("https://example.org", "https://evil-example.org", "https://evilexample.org",
                   "http://a.example.org", "https://a.example.org.evil.com",
                   "https://a.example.org:444"):
        r = _preflight(px, origin, method="GET", req_headers=None)
        assert_error(r, 403)
        assert _cors_names(r) == [], (origin, r.headers)
    assert be.served == 0


def test_cors_actual_request_allowed_origin(t):
    px, be = _setup(t)
    r = px.get("/api/x", headers={"Origin": "https://app.example.com"})
    assert r.status == 200 and r.header("X-Backend") == "b1", r
    assert r.json()["path"] == "/api/x"
    assert r.header("Access-Control-Allow-Origin") == "https://app.example.com", r.headers
    assert len(r.header_all("Access-Control-Allow-Origin")) == 1, r.headers
    assert r.header("Access-Control-Allow-Credentials") == "true", r.headers
    assert "origin" in _vary(r), r.headers
    assert _tokens(r.header("Access-Control-Expose-Headers")) == ["x-request-id"], r.headers
    assert r.header("Access-Control-Allow-Methods") is None, "preflight-only header on GET"
    assert r.header("Access-Control-Max-Age") is None, r.headers
    # the backend sees the request as sent, Origin included
    seen = dict((k.lower(), v) for k, v in r.json()["headers"])
    assert seen.get("origin") == "https://app.example.com", seen

    r = px.request("POST", "/api/x", headers={"Origin": "https://z.example.org"}, body=b"{}")
    assert r.status == 200, r
    assert r.header("Access-Control-Allow-Origin") == "https://z.example.org", r.headers


def test_cors_actual_request_disallowed_origin(t):
    px, be = _setup(t)
    for origin in ("https://evil.com", "https://evil-example.org", "https://example.org"):
        r = px.get("/api/x", headers={"Origin": origin})
        assert r.status == 200 and r.header("X-Backend") == "b1", (origin, r)
        assert _cors_names(r) == [], (origin, r.headers)
    r = px.get("/api/x")   # no Origin at all: not a CORS request
    assert r.status == 200 and _cors_names(r) == [], r.headers
    assert be.served == 4


def test_cors_options_without_request_method_is_proxied(t):
    """OPTIONS without Access-Control-Request-Method is not a preflight: it goes upstream, and
    the response gets the headers of an actual CORS response."""
    px, be = _setup(t)
    r = px.request("OPTIONS", "/api/x", headers={"Origin": "https://app.example.com"})
    assert r.status == 200 and r.header("X-Backend") == "b1", r
    assert r.json()["method"] == "OPTIONS"
    assert r.header("Access-Control-Allow-Origin") == "https://app.example.com", r.headers
    assert be.served == 1


def test_cors_route_without_cors_passes_options(t):
    px, be = _setup(t)
    r = _preflight(px, "https://app.example.com", path="/other")
    assert r.status == 200 and r.header("X-Backend") == "b1", r
    data = r.json()
    assert data["method"] == "OPTIONS" and data["path"] == "/other", data
    seen = dict((k.lower(), v) for k, v in data["headers"])
    assert seen.get("access-control-request-method") == "POST", seen
    assert seen.get("origin") == "https://app.example.com", seen
    assert _cors_names(r) == [], r.headers
    r = px.get("/other", headers={"Origin": "https://app.example.com"})
    assert r.status == 200 and _cors_names(r) == [], r.headers
    assert be.served == 2


def test_cors_any_origin_without_credentials(t):
    """allowed_origins = ["*"] without credentials: a literal "*", and the requested headers are
    echoed when allowed_headers is not set."""
    px, be = _setup(t, cors={"allowed_origins": ["*"], "allowed_methods": ["GET", "PUT"]})
    r = _preflight(px, "https://anyone.test", method="PUT", req_headers="x-a, x-b")
    assert r.status == 204, r
    assert r.header("Access-Control-Allow-Origin") == "*", r.headers
    assert r.header("Access-Control-Allow-Credentials") is None, r.headers
    assert _tokens(r.header("Access-Control-Allow-Headers")) == ["x-a", "x-b"], r.headers
    assert r.header("Access-Control-Max-Age") is None, r.headers
    r = _preflight(px, "https://anyone.test", method="PUT", req_headers="x-a, (bad)")
    assert_error(r, 403)
    r = px.get("/api/x", headers={"Origin": "https://anyone.test"})
    assert r.status == 200, r
    assert r.header("Access-Control-Allow-Origin") == "*", r.headers
    assert "origin" not in _vary(r), r.headers
    assert be.served == 1
