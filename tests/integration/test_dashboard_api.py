"""Status dashboard on the admin listener (issue 12), without a browser: login with the right
and wrong token, the session cookie's flags, the page 401 without a session and 200 with one,
the API through the cookie (reads work, changes need X-CSRF-Token, a cross-site form post is
refused), the reload endpoint, logout, and the server-rendered (no-JavaScript) tables.
test_dashboard_browser.py drives the same page in headless Chromium."""

import http.client
import json
import re
import secrets
import urllib.parse

import harness
from test_admin import _admin_proxy


def _request(px, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", px.admin_port, timeout=20)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    raw = r.read()
    conn.close()
    return r, raw


def _login(px, token=None, headers=None):
    form = urllib.parse.urlencode({"token": px.admin_token if token is None else token})
    h = {"Content-Type": "application/x-www-form-urlencoded"}
    h.update(headers or {})
    return _request(px, "POST", "/login", form, h)


class Session:
    """A logged-in browser: its cookie and the CSRF token read from the page."""

    def __init__(self, px):
        self.px = px
        r, _ = _login(px)
        assert r.status == 303, r.status
        self.set_cookie = r.getheader("Set-Cookie")
        self.id = re.match(r"proxyd_session=([0-9a-f]{64});", self.set_cookie).group(1)
        self.cookie = "proxyd_session=" + self.id
        r, page = _request(px, "GET", "/", headers={"Cookie": self.cookie})
        assert r.status == 200, (r.status, page[:300])
        self.page = page.decode()
        self.csrf = re.search(r'<meta name="csrf-token" content="([0-9a-f]{64})">',
                              self.page).group(1)

    def call(self, method, path, body=None, csrf=True, headers=None):
        h = {"Cookie": self.cookie}
        if csrf:
            h["X-CSRF-Token"] = self.csrf if csrf is True else csrf
        if body is not None:
            h["Content-Type"] = "application/json"
            body = json.dumps(body)
        h.update(headers or {})
        r, raw = _request(self.px, method, path, body, h)
        return r.status, json.loads(raw), r


def test_dashboard_login_and_cookie_flags(t):
    px = _admin_proxy(t)
    r, page = _request(px, "GET", "/")
    assert r.status == 401, r.status
    assert b'id="login"' in page and b'name="token"' in page
    assert r.getheader("Content-Type").startswith("text/html")

    r, page = _login(px, token="wrong")
    assert r.status == 401 and b"Wrong token" in page and b'id="login"' in page
    assert r.getheader("Set-Cookie") is None

    r, _ = _login(px)
    assert r.status == 303 and r.getheader("Location") == "/"
    cookie = r.getheader("Set-Cookie")
    parts = [p.strip() for p in cookie.split(";")]
    assert re.fullmatch(r"proxyd_session=[0-9a-f]{64}", parts[0]), cookie
    for flag in ("HttpOnly", "SameSite=Strict", "Path=/", "Secure"):
        assert flag in parts, (flag, cookie)
    assert px.admin_token not in cookie

    # Another site's login form is refused.
    r, _ = _login(px, headers={"Origin": "http://evil.example"})
    assert r.status == 403 and r.getheader("Set-Cookie") is None


def test_dashboard_page_needs_a_session(t):
    px = _admin_proxy(t)
    s = Session(px)
    assert 'id="upstreams"' in s.page and 'id="reload"' in s.page
    assert s.csrf != s.id
    r, _ = _request(px, "GET", "/", headers={"Cookie": "proxyd_session=" + "0" * 64})
    assert r.status == 401
    # The bearer token does not replace a login for the page itself.
    r, _ = _request(px, "GET", "/", headers={"Authorization": "Bearer " + px.admin_token})
    assert r.status == 401
    assert "frame-ancestors 'none'" in (r.getheader("Content-Security-Policy") or "")
    # "no-referrer" would make browsers send "Origin: null" on the page's own posts.
    assert r.getheader("Referrer-Policy") == "same-origin"
    r, script = _request(px, "GET", "/dashboard.js")
    assert r.status == 200 and b"X-CSRF-Token" in script
    assert r.getheader("Content-Type").startswith("text/javascript")


def test_dashboard_api_with_cookie_and_csrf(t):
    be = t.backend()
    px = _admin_proxy(t, be)
    s = Session(px)
    status, body, _ = s.call("GET", "/api/v1/backends", csrf=False)
    assert status == 200 and body["upstreams"]["b"]["servers"][0]["id"] == be.address
    update = {"upstream": "b", "backend": {"id": be.address, "weight": 7}}
    status, body, _ = s.call("PUT", "/api/v1/backends/update", update, csrf=False)
    assert status == 403 and "X-CSRF-Token" in body["error"], body
    status, body, _ = s.call("PUT", "/api/v1/backends/update", update, csrf="0" * 64)
    assert status == 403, body
    status, body, _ = s.call("PUT", "/api/v1/backends/update", update)
    assert status == 200 and body["backend"]["weight"] == 7, body
    # Same origin passes; another origin is refused even with the token.
    origin = {"Origin": "http://127.0.0.1:%d" % px.admin_port}
    update["backend"]["weight"] = 9
    status, body, _ = s.call("PUT", "/api/v1/backends/update", update, headers=origin)
    assert status == 200, body
    status, body, _ = s.call("PUT", "/api/v1/backends/update", update,
                             headers={"Origin": "http://evil.example"})
    assert status == 403 and "cross-origin" in body["error"], body
    # Without any credentials: 401, as before.
    r, raw = _request(px, "GET", "/api/v1/backends")
    assert r.status == 401 and r.getheader("WWW-Authenticate").startswith("Bearer")


def test_dashboard_cross_site_form_post_refused(t):
    be = t.backend()
    px = _admin_proxy(t, be)
    s = Session(px)
    form = urllib.parse.urlencode({"upstream": "b", "backend_id": be.address})
    # What another site's <form method=post> can send: the cookie (had SameSite failed),
    # a form body, its own Origin, and no X-CSRF-Token.
    for path in ("/api/v1/backends/disconnect?upstream=b&backend_id=" + be.address,
                 "/api/v1/config/reload"):
        r, raw = _request(px, "POST", path, form, {
            "Cookie": s.cookie, "Content-Type": "application/x-www-form-urlencoded",
            "Origin": "http://evil.example"})
        assert r.status in (401, 403), (path, r.status, raw)
        # Without the Origin header (an old browser) the missing CSRF token still refuses it.
        r, raw = _request(px, "POST", path, form, {
            "Cookie": s.cookie, "Content-Type": "application/x-www-form-urlencoded"})
        assert r.status == 403, (path, r.status, raw)
    status, body, _ = s.call("GET", "/api/v1/backends")
    assert body["upstreams"]["b"]["servers"][0]["drain"] is False, body
    # Logging out from another site is refused too.
    r, _ = _request(px, "POST", "/logout", "csrf=" + s.csrf, {
        "Cookie": s.cookie, "Content-Type": "application/x-www-form-urlencoded",
        "Origin": "http://evil.example"})
    assert r.status == 403
    assert s.call("GET", "/api/v1/stats/server")[0] == 200


def test_dashboard_logout_ends_the_session(t):
    px = _admin_proxy(t)
    s = Session(px)
    other = Session(px)
    r, _ = _request(px, "POST", "/logout", "", {"Cookie": s.cookie})
    assert r.status == 403  # no CSRF token
    r, _ = _request(px, "POST", "/logout", "csrf=" + s.csrf, {
        "Cookie": s.cookie, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 303 and "Max-Age=0" in r.getheader("Set-Cookie")
    r, _ = _request(px, "GET", "/", headers={"Cookie": s.cookie})
    assert r.status == 401
    assert s.call("GET", "/api/v1/backends")[0] == 401
    assert other.call("GET", "/api/v1/backends")[0] == 200  # one session ended, not all
    # A new admin token logs every browser out.
    with open(t.path("admin.token"), "w") as f:
        f.write(secrets.token_hex(24) + "\n")
    assert px.proxyctl("reload").returncode == 0
    assert other.call("GET", "/api/v1/backends")[0] == 401


def test_dashboard_reload_endpoint(t):
    px = _admin_proxy(t)
    s = Session(px)
    generation = s.call("GET", "/api/v1/stats/server")[1]["generation"]
    status, body, _ = s.call("POST", "/api/v1/config/reload")
    assert status == 200 and body["ok"] is True and body["generation"] == generation + 1, body
    assert "reloaded" in body["message"]
    # Bearer works as for every endpoint; a broken file is refused with the reason.
    with open(px.config_path) as f:
        good = f.read()
    with open(px.config_path, "w") as f:
        f.write(good + "\n[nonsense\n")
    r, raw = _request(px, "POST", "/api/v1/config/reload", None,
                      {"Authorization": "Bearer " + px.admin_token})
    body = json.loads(raw)
    assert r.status == 400 and body["ok"] is False and "invalid" in body["error"], body
    with open(px.config_path, "w") as f:
        f.write(good)


def test_dashboard_tables_without_javascript(t):
    up, down = t.backend(), t.backend()
    px = _admin_proxy(t, up, down, upstream={"health_check": {
        "interval": "200ms", "timeout": "150ms", "unhealthy_threshold": 1}},
        routes=[{"path": "/", "upstream": "b", "name": "web"}])
    for _ in range(10):
        px.get("/echo")
    down.stop()
    s = Session(px)
    harness.wait_until(lambda: not s.call("GET", "/api/v1/backends")[1]["upstreams"]["b"][
        "servers"][1]["healthy"], timeout=5, msg="health check marks the stopped backend down")
    page = Session(px).page
    for be, health in ((up, "healthy"), (down, "down")):
        row = re.search(r'<tr data-upstream="b" data-server="%s">(.*?)</tr>' %
                        re.escape(be.address), page, re.S)
        assert row, (be.address, page[:2000])
        assert '<td class="health %s">%s</td>' % (health, health) in row.group(1), row.group(1)
        assert 'class="drain"' in row.group(1) and 'class="set-weight"' in row.group(1)
        assert 'class="weight"' in row.group(1)
    assert re.search(r'<tr data-route="web">', page), page
    assert 'id="version"' in page and 'id="workers"' in page
    status, body, _ = s.call("GET", "/api/v1/status")
    assert status == 200 and body["workers"][0]["state"] == "active", body
    assert body["generation"] == 1 and "version" in body
    status, body, _ = s.call("GET", "/api/v1/stats/routes")
    assert status == 200 and body["routes"]["web"]["requests"] >= 10, body
    assert set(body["routes"]["web"]["latency_ms"]) == {"p50", "p99"}
