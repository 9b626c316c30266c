"""Admin REST API ([admin]): the endpoints, each with good input, bad input (400), unknown names
(404), no/wrong token (401), wrong method (405) and wrong content type (415). The runtime backend
endpoints and PUT /api/v1/config are covered in depth by test_admin_backends.py."""

import http.client
import json
import os
import secrets

import harness


def _admin_proxy(t, *backends, **cfg):
    token = secrets.token_hex(24)
    token_file = t.write("admin.token", token + "\n")
    port = harness.free_port()
    be = backends or (t.backend(),)
    px = t.proxy_to(*be, admin={"listen": "127.0.0.1:%d" % port, "token_file": token_file},
                    **cfg)
    harness.wait_until(lambda: harness.port_accepts(port), msg="admin port")
    px.admin_port, px.admin_token = port, token
    return px


def _call(px, method, path, body=None, token=True, content_type="application/json"):
    conn = http.client.HTTPConnection("127.0.0.1", px.admin_port, timeout=20)
    headers = {}
    if token is True:
        headers["Authorization"] = "Bearer " + px.admin_token
    elif token:
        headers["Authorization"] = token
    data = None
    if body is not None:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        if content_type:
            headers["Content-Type"] = content_type
    conn.request(method, path, body=data, headers=headers)
    r = conn.getresponse()
    raw = r.read()
    conn.close()
    try:
        payload = json.loads(raw)
    except ValueError:
        raise AssertionError("%s %s: %d, not JSON: %r" % (method, path, r.status, raw[:200]))
    return r.status, payload, r


def test_admin_token_required(t):
    px = _admin_proxy(t)
    for token in (None, "Bearer wrong", "Basic " + px.admin_token, "Bearer " + px.admin_token[:-1],
                  "Bearer " + px.admin_token + "x"):
        status, body, r = _call(px, "GET", "/api/v1/backends", token=token)
        assert status == 401, (token, status, body)
        assert "error" in body and r.getheader("WWW-Authenticate", "").startswith("Bearer")
    status, _, _ = _call(px, "GET", "/api/v1/backends", token="bearer " + px.admin_token)
    assert status == 200  # the scheme is case-insensitive


def test_admin_token_rotates_on_reload(t):
    px = _admin_proxy(t)
    old = px.admin_token
    new = secrets.token_hex(24)
    with open(t.path("admin.token"), "w") as f:
        f.write(new + "\n")
    assert px.proxyctl("reload").returncode == 0
    assert _call(px, "GET", "/api/v1/stats/server", token="Bearer " + old)[0] == 401
    px.admin_token = new
    assert _call(px, "GET", "/api/v1/stats/server")[0] == 200


def test_admin_backends_and_stats(t):
    be = t.backend()
    px = _admin_proxy(t, be)
    for _ in range(20):
        assert px.get("/echo").status == 200
    status, body, _ = _call(px, "GET", "/api/v1/backends")
    assert status == 200 and list(body["upstreams"]) == ["b"], body
    server = body["upstreams"]["b"]["servers"][0]
    assert server["id"] == be.address and server["healthy"] is True and server["requests"] == 20
    status, body, _ = _call(px, "GET", "/api/v1/backends?upstream=b")
    assert status == 200 and list(body["upstreams"]) == ["b"]
    status, body, _ = _call(px, "GET", "/api/v1/backends?upstream=nope")
    assert status == 404 and "nope" in body["error"]

    status, body, _ = _call(px, "GET", "/api/v1/stats/server")
    assert status == 200, body
    assert body["requests_completed"] == 20, body
    for key in ("requests_per_second", "latency_ms", "connections_active", "workers"):
        assert key in body, (key, body)

    path = "/api/v1/stats/backend?upstream=b&backend_id=%s" % be.address
    status, body, _ = _call(px, "GET", path)
    assert status == 200 and body["requests"] == 20 and body["latency_ms"]["p99"] > 0, body
    assert _call(px, "GET", "/api/v1/stats/backend?upstream=b")[0] == 400
    assert _call(px, "GET", "/api/v1/stats/backend?upstream=b&backend_id=zz")[0] == 404
    assert _call(px, "GET", "/api/v1/stats/backend?upstream=zz&backend_id=zz")[0] == 404


def test_admin_report(t):
    be = t.backend()
    px = _admin_proxy(t, be)
    good = {"upstream": "b", "backend_id": be.address,
            "performance": {"cpu_usage": 10, "memory_usage": 20, "load_avg_1": 0.5}}
    status, body, _ = _call(px, "POST", "/api/v1/report", good)
    assert status == 200 and body == {"ok": True}, body
    bad = dict(good, performance={"cpu_usage": 300, "memory_usage": 20, "load_avg_1": 0.5})
    assert _call(px, "POST", "/api/v1/report", bad)[0] == 400
    assert _call(px, "POST", "/api/v1/report", {"upstream": "b"})[0] == 400
    assert _call(px, "POST", "/api/v1/report", dict(good, backend_id="zz"))[0] == 404
    assert _call(px, "POST", "/api/v1/report", dict(good, upstream="zz"))[0] == 404
    assert _call(px, "POST", "/api/v1/report", "{not json")[0] == 400
    assert _call(px, "POST", "/api/v1/report", json.dumps(good), content_type="text/plain")[0] \
        == 415


def test_admin_methods_paths_and_pending_endpoints(t):
    px = _admin_proxy(t)
    status, body, r = _call(px, "DELETE", "/api/v1/stats/server")
    assert status == 405 and r.getheader("Allow") == "GET", (status, body)
    assert _call(px, "GET", "/api/v1/nothing")[0] == 404
    # the endpoints that change things, called without a body or query: 400 with the reason
    # (no longer 501 "not implemented")
    for method, path in (("PUT", "/api/v1/config"),
                         ("POST", "/api/v1/backends/add"), ("PUT", "/api/v1/backends/update"),
                         ("DELETE", "/api/v1/backends/remove"),
                         ("POST", "/api/v1/backends/disconnect")):
        status, body, _ = _call(px, method, path)
        assert status == 400 and body.get("error"), (method, path, status, body)
        assert "not implemented" not in body["error"], (method, path, body)


def test_admin_reload_tls(t):
    """POST /api/v1/config/reload-tls: "unchanged" with nothing new; after a renewal 200 ok, and
    from then on every new handshake gets the new certificate (2 workers: the answer comes
    once the new generation serves); a garbage file: 400 with the errors, the new certificate
    stays."""
    from test_tls import client_ctx, https_get, make_ca, make_cert, replace_pair, served_sha256
    ca = make_ca(t)
    old = make_cert(t, ca, "site", ["a.test"])
    new = make_cert(t, ca, "site-new", ["a.test"], days=60)
    old_sha, new_sha = old.sha256, new.sha256
    px = _admin_proxy(t, server={"workers": 2},
                      tls={"listen": ["127.0.0.1:%d" % harness.free_port()],
                           "certificates": [{"cert": old.cert, "key": old.key}]})
    tls_port = px.tls_ports[0]
    ctx = client_ctx(ca)
    assert served_sha256(tls_port, ctx, "a.test") == old_sha
    status, body, _ = _call(px, "POST", "/api/v1/config/reload-tls")
    assert status == 200 and "unchanged" in body["message"], body
    gen = px.status_json()["generation"]
    replace_pair(new.cert, new.key, old.cert, old.key)
    status, body, _ = _call(px, "POST", "/api/v1/config/reload-tls")
    assert status == 200 and body["ok"] is True, body
    served = [served_sha256(tls_port, ctx, "a.test") for _ in range(10)]
    labels = ["new" if s == new_sha else "old" if s == old_sha else s[:16] for s in served]
    assert labels == ["new"] * 10, (
        "right after reload-tls answered 200 (%r), new handshakes got %r" % (body, labels))
    r, facts = https_get(tls_port, ctx, "a.test")
    assert r.status == 200 and facts["sha256"] == new_sha, r
    assert px.status_json()["generation"] == gen + 1
    with open(old.cert, "w") as f:
        f.write("garbage\n")
    status, body, _ = _call(px, "POST", "/api/v1/config/reload-tls")
    assert status == 400 and body["ok"] is False and body["errors"], body
    assert served_sha256(tls_port, ctx, "a.test") == new_sha, (
        "a refused reload-tls changed the served certificate")
    assert px.status_json()["generation"] == gen + 1


def test_admin_config_errors(t):
    short = t.write("short.token", "abc\n")
    base = '[server]\nlisten = ["127.0.0.1:%d"]\n' % harness.free_port()
    cases = [
        ('[admin]\nlisten = "127.0.0.1:1"\n', 3, "token_file"),
        ('[admin]\ntoken_file = "%s"\n' % short, 3, "listen"),
        ('[admin]\nlisten = "127.0.0.1:1"\ntoken_file = "%s"\n' % short, 5, "shorter than 16"),
        ('[admin]\nlisten = "127.0.0.1:1"\ntoken_file = "/nonexistent/t"\n', 5, "cannot read"),
        ('[admin]\nlisten = "127.0.0.1:1"\ntokenfile = "x"\n', 5, "did you mean"),
    ]
    for text, line, words in cases:
        r, path = t.check_config(base + text)
        assert r.returncode == 1, (text, r)
        assert ("%s:%d:" % (path, line)) in r.stderr and words in r.stderr, (text, r.stderr)
        assert "abc" not in r.stderr  # a token never shows


def test_admin_get_config_effective_and_secret_free(t):
    from test_tls import make_ca, make_cert
    ca = make_ca(t)
    cert = make_cert(t, ca, "site", ["a.test"])
    be = t.backend()
    secret = "s3cr3t-" + secrets.token_hex(16)
    secret_file = t.write("jwt.secret", secret + "\n")
    px = _admin_proxy(
        t, be, server={"workers": 2, "shutdown_timeout": "7s"},
        routes=[{"path": "/api", "upstream": "b", "name": "api", "auth_required": True},
                {"path_exact": "/x", "upstream": "b"}],
        auth={"jwt": {"algorithms": ["HS256"], "secret_file": secret_file}},
        tls={"listen": ["127.0.0.1:%d" % harness.free_port()],
             "certificates": [{"cert": cert.cert, "key": cert.key}]})
    status, body, _ = _call(px, "GET", "/api/v1/config")
    assert status == 200, body
    cfg = body["config"]
    assert cfg["server"]["workers"] == 2 and cfg["server"]["shutdown_timeout"] == "7s", cfg["server"]
    assert cfg["upstreams"]["b"]["servers"][0]["address"] == be.address
    assert [r.get("path") or r.get("path_exact") for r in cfg["routes"]] == ["/api/", "/x"]
    assert cfg["routes"][0]["name"] == "api" and cfg["routes"][0]["auth_required"] is True
    assert cfg["tls"]["certificates"] == [{"cert": cert.cert, "key": cert.key}]
    assert cfg["auth"]["jwt"]["keys"] == [{"secret_file": secret_file}]
    assert cfg["admin"]["token_file"].endswith("admin.token")
    text = json.dumps(body)
    key_pem = open(cert.key).read()
    for hidden in (secret, px.admin_token, key_pem.splitlines()[1]):
        assert hidden not in text, "a secret is shown by GET /api/v1/config"
    assert body["generation"] == px.status_json()["generation"]
