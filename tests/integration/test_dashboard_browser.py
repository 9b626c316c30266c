"""The status dashboard ([admin], GET /) in a real browser: Debian's chromium, headless, driven
over the DevTools protocol (cdp.py), everything on 127.0.0.1.

One proxy with three backends in upstream "b" (active health checks every second) and [admin]
with a token file. The browser logs in through the form like a user, sees every server healthy,
sees a backend the test stops turn "down" while the page refreshes itself (no reload), drains a
server with the row's button and the traffic then avoids it, undrains it, changes a weight, sees an
API error shown in the page, triggers a reload, and leaves a screenshot. Then the refusals: without
a session the page and the API answer 401; a cookie without the page's X-CSRF-Token changes
nothing; auto-submitting forms on other origins (another site, 127.0.0.2, and another port of
127.0.0.1, which is the same site so the SameSite cookie does go along) that post to the admin
API and to /logout, opened in the same logged-in browser, change nothing.

When chromium is not installed or cannot start, the tests fail with the reason (scripts/setup
installs chromium: a browser test that quietly passes without a browser would prove nothing).
Set PROXYD_TEST_OUTPUT=DIR to keep the screenshots (the temp dir of a passing test is removed;
scripts/test keeps them under tests/out/)."""

import http.client
import http.server
import json
import os
import secrets
import shutil
import threading
import time

import cdp
import harness

PROPAGATION = 1.0   # seconds an admin change may take to reach every worker (CONTRACT.md)
REFRESH = 2.0       # the page refreshes its numbers this often (issue 12)


# ----------------------------------------------------------------------------------------------
# the proxy and plain HTTP to its admin listener

def _dashboard_proxy(t, backends, interval="1s"):
    token = secrets.token_hex(24)
    token_file = t.write("admin.token", token + "\n")
    port = harness.free_port()
    px = t.proxy_to(*backends,
                    upstream={"health_check": {"path": "/health", "interval": interval,
                                               "timeout": "500ms", "healthy_threshold": 1,
                                               "unhealthy_threshold": 1}},
                    admin={"listen": "127.0.0.1:%d" % port, "token_file": token_file})
    harness.wait_until(lambda: harness.port_accepts(port), msg="admin port")
    px.admin_port, px.admin_token = port, token
    px.admin_url = "http://127.0.0.1:%d" % port
    return px


def _http(px, method, path, headers=None, body=None):
    """(status, {lower-case header: value}, body bytes) of one request to the admin listener."""
    conn = http.client.HTTPConnection("127.0.0.1", px.admin_port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def _api(px, method, path, body=None):
    """A Bearer-token call; (status, JSON)."""
    headers = {"Authorization": "Bearer " + px.admin_token}
    data = None
    if body is not None:
        data = json.dumps(body)
        headers["Content-Type"] = "application/json"
    status, _, raw = _http(px, method, path, headers, data)
    return status, json.loads(raw)


def _servers(px):
    status, body = _api(px, "GET", "/api/v1/backends?upstream=b")
    assert status == 200, (status, body)
    return {s["id"]: s for s in body["upstreams"]["b"]["servers"]}


def _wait_healthy(px, backends):
    harness.wait_until(lambda: all(s["healthy"] for s in _servers(px).values()), timeout=5,
                       msg="the API does not show every server healthy: %r" % _servers(px))


def _proxied(be):
    """Requests the backend got through the proxy (the health probes left out)."""
    return sum(1 for r in list(be.requests) if r["target"].startswith("/echo"))


def _send(px, n):
    for i in range(n):
        r = px.get("/echo?i=%d" % i)
        assert r.status == 200, (i, r.status, r.body[:200])


# ----------------------------------------------------------------------------------------------
# the browser

def _launch(t):
    """The browser; fails the test when chromium cannot run here."""
    try:
        return cdp.Chromium.launch(t.path("chromium"), spawn=t.spawn)
    except cdp.Unavailable as e:
        raise AssertionError("the dashboard browser test needs chromium (scripts/setup installs "
                             "it): %s" % e)


def _row(server_id):
    return ("document.querySelector('#upstreams [data-upstream=\"b\"][data-server=' + %s + ']')"
            % json.dumps(json.dumps(server_id)))


def _state(page, server_id):
    """What the page shows of a server: {health, drained, weight, text}, or None without its
    row. The hooks (master/dashboard_page.hpp): cells .health ("healthy" / "down"),
    .drain-state ("draining" / "no") and .weight-value."""
    return page.evaluate("""(() => {
        const r = %s;
        if (!r) return null;
        const get = (sel) => { const e = r.querySelector(sel);
                               return e ? e.textContent.trim() : null; };
        const c = r.cloneNode(true);
        c.querySelectorAll('button, input, select, textarea').forEach(e => e.remove());
        const drain = get('.drain-state');
        return {health: get('.health'), weight: get('.weight-value'),
                drained: drain === null ? null : /drain/i.test(drain),
                text: c.textContent.replace(/\\s+/g, ' ').trim()};
    })()""" % _row(server_id))


def _wait_state(page, server_id, timeout, msg, **want):
    """Until the page shows the server with every given field (health=..., drained=...)."""
    deadline = time.monotonic() + timeout
    while True:
        st = _state(page, server_id)
        if st is not None and all(st.get(k) == v for k, v in want.items()):
            return st
        if time.monotonic() >= deadline:
            raise AssertionError("%s: the page did not show %s as %r within %.1fs; it shows %r"
                                 "\n(#message: %r)" % (msg, server_id, want, timeout, st,
                                                       _message(page)))
        page.conn.pump(0.1)


def _message(page):
    try:
        return page.evaluate("(document.getElementById('message') || {}).textContent || ''")
    except cdp.Error as e:
        return "(%s)" % e


def _wait_api(page, pred, timeout, what):
    """Until pred() (an API check) holds; the failure names what and shows #message then."""
    try:
        harness.wait_until(pred, timeout=timeout)
    except AssertionError:
        raise AssertionError("%s within %.0fs; #message: %r" % (what, timeout, _message(page)))


def _refreshes(page, since):
    """[(time, headers)] of the page's GET /api/v1/backends calls after event index since."""
    return [(p["timestamp"], p["request"]["headers"])
            for s, m, p in page.conn.events[since:]
            if s == page.session and m == "Network.requestWillBeSent"
            and p["request"]["method"] == "GET"
            and p["request"]["url"].split("?")[0].endswith("/api/v1/backends")]


def _click_in_row(page, server_id, selector):
    """A real mouse click on `selector` inside the server's row."""
    sel = page.evaluate("""(() => {
        const r = %s;
        if (!r) return null;
        const e = r.querySelector(%s);
        if (!e) return null;
        e.setAttribute('data-test-click', '1');
        return true;
    })()""" % (_row(server_id), json.dumps(selector)))
    assert sel, "no %s in the row of %s: %r" % (selector, server_id, _state(page, server_id))
    page.click("[data-test-click='1']")
    page.evaluate("document.querySelectorAll('[data-test-click]').forEach("
                  "e => e.removeAttribute('data-test-click'))")


def _login(page, px, token):
    """Open the page, see the login form, type the token, submit it; returns once the page
    with the upstream table is there."""
    page.navigate(px.admin_url + "/")
    page.wait_for("!!document.querySelector('form#login input[name=\"token\"]')", timeout=5,
                  msg="the login form (form#login with input name=token) on GET /")
    assert page.evaluate("document.querySelector('#upstreams') === null"), (
        "the login page shows the upstream table before any login")
    form = page.evaluate("""(() => { const f = document.getElementById('login');
        return {method: (f.getAttribute('method') || '').toLowerCase(),
                action: new URL(f.action, location.href).pathname}; })()""")
    assert form == {"method": "post", "action": "/login"}, form
    page.evaluate("document.querySelector('#login input[name=\"token\"]').focus()")
    page.insert_text(token)
    page.evaluate("document.getElementById('login').requestSubmit()")
    page.wait_for("location.pathname === '/' && !!document.querySelector('#upstreams')",
                  timeout=10, msg="the dashboard after the login")


def _session_cookie(page, px):
    cookies = [c for c in page.cookies(px.admin_url + "/") if c["name"] == "proxyd_session"]
    assert len(cookies) == 1, page.cookies(px.admin_url + "/")
    return cookies[0]


def _keep(t, name):
    out = os.environ.get("PROXYD_TEST_OUTPUT")
    if out:
        os.makedirs(out, exist_ok=True)
        shutil.copy(t.path(name), os.path.join(out, name))


def _check_screenshot(page, path):
    data = page.screenshot(path)
    w, h = cdp.png_size(data)
    assert w >= 800 and h >= 300, (w, h)
    colors = cdp.png_colors(data)
    assert len(data) > 5000 and len(colors) >= 8, (
        "the screenshot looks blank: %d bytes, %d colours" % (len(data), len(colors)))
    return w, h, len(data)


# ----------------------------------------------------------------------------------------------
# other origins that try to act with the logged-in browser

class _Origin:
    """A tiny web site on host:free port whose pages auto-submit forms to the admin listener."""

    def __init__(self, host, pages):
        handler_pages = pages

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                body = handler_pages.get(self.path.split("?")[0])
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.srv = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.srv.daemon_threads = True
        self.url = "http://%s:%d" % (host, self.srv.server_address[1])
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def _form_page(action, fields=(), enctype=None):
    inputs = "".join('<input type="hidden" name="%s" value="%s">'
                     % (_attr(n), _attr(v)) for n, v in fields)
    enc = ' enctype="%s"' % enctype if enctype else ""
    return ('<!doctype html><html><body><h1>cute cats</h1>'
            '<form id="f" method="post" action="%s"%s>%s</form>'
            '<script>document.getElementById("f").submit()</script></body></html>'
            % (_attr(action), enc, inputs))


def _attr(s):
    return (s.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
            .replace(">", "&gt;"))


def _attack(chrome, origin_url, path, admin_url):
    """Open origin_url+path in a new tab of the logged-in browser; its form posts to the admin
    listener. Returns (status of the admin listener's first answer, whether the post carried the
    session cookie, the text the tab then shows)."""
    page = chrome.new_page()
    try:
        since = len(page.conn.events)
        page.navigate(origin_url + path)

        def answered(p):
            r = p.get("response", {})
            return r.get("url", "").startswith(admin_url)
        page.conn.wait_event("Network.responseReceived", page.session, answered,
                             timeout=10, since=since)
        page.wait_for("location.href.startsWith(%s) && document.readyState === 'complete'"
                      % json.dumps(admin_url), timeout=5, msg="the form post's answer")
        # the admin listener's first answer: a redirect (a 303 after a logout, say) shows only
        # as the redirectResponse of the next request
        status = None
        for s, m, p in page.conn.events[since:]:
            if s != page.session:
                continue
            r = (p.get("redirectResponse") if m == "Network.requestWillBeSent"
                 else p.get("response") if m == "Network.responseReceived" else None)
            if r and answered({"response": r}):
                status = r["status"]
                break
        # did the browser send the session cookie along (SameSite lets it for the same site)?
        posted = [p["requestId"] for s, m, p in page.conn.events[since:]
                  if s == page.session and m == "Network.requestWillBeSent"
                  and p["request"]["url"].startswith(admin_url)
                  and p["request"]["method"] == "POST"]
        cookie_sent = any(
            c.get("cookie", {}).get("name") == "proxyd_session" and not c.get("blockedReasons")
            for s, m, p in page.conn.events[since:]
            if s == page.session and m == "Network.requestWillBeSentExtraInfo"
            and p.get("requestId") in posted for c in p.get("associatedCookies", []))
        text = page.evaluate("document.body ? document.body.innerText : ''") or ""
        return status, cookie_sent, text.strip()[:300]
    finally:
        page.close()


# ----------------------------------------------------------------------------------------------

@harness.timeout(150)
def test_dashboard_browser(t):
    A, B, C = t.backend("A"), t.backend("B"), t.backend("C")
    px = _dashboard_proxy(t, [A, B, C])

    # without a session: the login form (401), and the API refuses
    status, headers, body = _http(px, "GET", "/")
    assert status == 401, (status, body[:300])
    assert headers.get("content-type", "").startswith("text/html"), headers
    assert b'id="login"' in body and b'name="token"' in body, body[:500]
    assert px.admin_token.encode() not in body
    status, _, body = _http(px, "GET", "/api/v1/backends")
    assert status == 401, (status, body[:300])
    status, _, body = _http(px, "GET", "/api/v1/backends",
                            {"Cookie": "proxyd_session=" + "0" * 64})
    assert status == 401, ("a made-up session id", status, body[:300])
    status, _, _ = _http(px, "POST", "/login", {"Content-Type":
                                                "application/x-www-form-urlencoded"},
                         "token=" + "x" * 48)
    assert status == 401, ("a wrong token logs in", status)

    _wait_healthy(px, [A, B, C])
    chrome = _launch(t)
    origins = []
    try:
        page = chrome.new_page()
        _login(page, px, px.admin_token)
        logged_in = len(page.conn.events)
        t_login = time.monotonic()
        cookie = _session_cookie(page, px)
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict", cookie
        assert "proxyd_session" not in page.evaluate("document.cookie"), (
            "the cookie is not HttpOnly")
        assert px.admin_token not in page.evaluate("document.documentElement.outerHTML"), (
            "the page carries the admin token")

        # every server healthy
        for be in (A, B, C):
            _wait_state(page, be.address, 6, "after the login", health="healthy", drained=False)

        # a stopped backend turns "down" in the page, refreshing by itself (no reload)
        page.evaluate("window.__sameDocument = true")
        A.stop()
        stopped = time.monotonic()
        _wait_state(page, A.address, 1.0 + 0.5 + REFRESH + 2.5, "backend A stopped",
                    health="down")
        down_after = time.monotonic() - stopped
        assert page.evaluate("window.__sameDocument === true"), (
            "the page was reloaded: the health must come from its own refresh")
        for be in (B, C):
            assert _state(page, be.address)["health"] == "healthy", _state(page, be.address)

        # drain B with its button: no request reaches it, C takes them all
        assert _servers(px)[B.address]["drain"] is False
        _click_in_row(page, B.address, "button.drain")
        _wait_api(page, lambda: _servers(px)[B.address]["drain"] is True, 3,
                  "the drain button did not drain B (the API shows drain = false)")
        _wait_state(page, B.address, 2 * REFRESH + 1, "after the drain button", drained=True)
        time.sleep(PROPAGATION)
        b0, c0 = _proxied(B), _proxied(C)
        _send(px, 20)
        assert _proxied(B) == b0, "the drained server B got %d request(s)" % (_proxied(B) - b0)
        assert _proxied(C) == c0 + 20, (_proxied(C) - c0)

        # undrain: B serves again
        _click_in_row(page, B.address, "button.undrain")
        _wait_api(page, lambda: _servers(px)[B.address]["drain"] is False, 3,
                  "the undrain button did not undrain B")
        _wait_state(page, B.address, 2 * REFRESH + 1, "after the undrain button", drained=False)
        time.sleep(PROPAGATION)
        b0 = _proxied(B)
        _send(px, 20)
        assert _proxied(B) > b0, "B got no request after the undrain"

        # a new weight through the row's input and button
        _set_weight(page, C.address, "5")
        _wait_api(page, lambda: _servers(px)[C.address]["weight"] == 5, 3,
                  "set-weight did not change C's weight to 5")
        _wait_state(page, C.address, 2 * REFRESH + 1, "after set-weight", weight="5")
        # a refused change: the API's own error message in the page
        status, err = _api(px, "PUT", "/api/v1/backends/update",
                           {"upstream": "b", "backend": {"id": C.address, "weight": 0}})
        assert status == 400 and err.get("error"), (status, err)
        page.evaluate("(document.getElementById('message') || {}).textContent = ''")
        _set_weight(page, C.address, "0")
        page.wait_for("(document.getElementById('message') || {textContent: ''}).textContent"
                      ".includes(%s)" % json.dumps(err["error"]), timeout=5,
                      msg="the API's error %r in #message" % err["error"])
        assert _servers(px)[C.address]["weight"] == 5

        # reload from the page: a new generation
        gen = px.status_json()["generation"]
        page.click("#reload")
        _wait_api(page, lambda: px.status_json()["generation"] == gen + 1, 10,
                  "the reload button did not reload")
        assert _servers(px)[C.address]["weight"] == 5   # runtime changes survive the reload
        # the workers table follows: the new generation's workers within two refreshes
        harness.wait_until(lambda: all(w["generation"] == gen + 1 and w["state"] == "active"
                                       for w in px.status_json()["workers"]), timeout=10,
                           msg="the new generation's workers did not become active")
        pids = [str(w["pid"]) for w in px.status_json()["workers"]]
        page.wait_for("(() => { const t = document.querySelector('#workers tbody');"
                      " const cells = t ? [...t.querySelectorAll('td')]"
                      ".map(c => c.textContent.trim()) : [];"
                      " return %s.every(p => cells.includes(p)); })()" % json.dumps(pids),
                      timeout=2 * REFRESH + 1,
                      msg="the new worker pids %r in table#workers (no page reload)" % pids)

        # let the page refresh once more, then the picture
        page.conn.pump(REFRESH + 0.5)
        _wait_state(page, A.address, 2 * REFRESH + 1, "after the reload", health="down")
        w, h, size = _check_screenshot(page, t.path("dashboard.png"))
        _keep(t, "dashboard.png")

        # the page refreshed itself every 2 s all along, each call with the CSRF token
        calls = _refreshes(page, logged_in)
        elapsed = time.monotonic() - t_login
        gaps = [b[0] - a[0] for a, b in zip(calls, calls[1:])]
        assert len(calls) >= elapsed / REFRESH - 1 and max(gaps + [0]) <= REFRESH + 1.0, (
            "the page's refreshes (GET /api/v1/backends): %d in the %.1fs since the login, "
            "gaps %r" % (len(calls), elapsed, [round(g, 2) for g in gaps]))
        csrf = page.evaluate("document.querySelector('meta[name=\"csrf-token\"]').content")
        assert csrf and csrf != cookie["value"], "the CSRF token is the session id"
        for _, hdrs in calls:
            got = {k.lower(): v for k, v in hdrs.items()}.get("x-csrf-token")
            assert got == csrf, ("a refresh without the page's X-CSRF-Token", hdrs)

        # the session cookie alone reads, but changes nothing without the page's CSRF token
        cookie_hdr = {"Cookie": "proxyd_session=" + cookie["value"]}
        status, _, body = _http(px, "GET", "/api/v1/backends", cookie_hdr)
        assert status == 200, (status, body[:300])
        upd = json.dumps({"upstream": "b", "backend": {"id": C.address, "drain": True}})
        for extra in ({}, {"X-CSRF-Token": "0" * 64}, {"X-CSRF-Token": cookie["value"]}):
            status, _, body = _http(px, "PUT", "/api/v1/backends/update",
                                    dict(cookie_hdr, **extra, **{"Content-Type":
                                                                "application/json"}), upd)
            assert status in (401, 403), ("a cookie call without the CSRF token", extra, status,
                                          body[:300])
        status, _, body = _http(px, "POST", "/api/v1/backends/disconnect?upstream=b&backend_id="
                                + C.address, cookie_hdr)
        assert status in (401, 403), (status, body[:300])
        assert _servers(px)[C.address]["drain"] is False

        # forms on other origins, posted by the logged-in browser, change nothing
        target = px.admin_url
        pages = {
            "/disconnect": _form_page(target + "/api/v1/backends/disconnect?upstream=b&backend_id="
                                      + C.address),
            # text/plain makes the body JSON-looking: {"upstream":..., "x":"="}
            "/update": _form_page(target + "/api/v1/backends/update",
                                  [('{"upstream": "b", "backend": {"id": "%s", "drain": true},'
                                    ' "x": "' % C.address, '"}')], enctype="text/plain"),
            "/logout": _form_page(target + "/logout"),
        }
        answers = []
        for host in ("127.0.0.2", "127.0.0.1"):   # another site; the same site on another port
            o = _Origin(host, pages)
            origins.append(o)
            for path in ("/disconnect", "/update", "/logout"):
                status, cookie_sent, text = _attack(chrome, o.url, path, target)
                answers.append((o.url + path, status, cookie_sent, text[:120]))
                assert status is not None and status >= 400, (
                    "a form on %s%s was accepted: %r %r" % (o.url, path, status, text))
                if host == "127.0.0.1":
                    # the same site: the cookie goes along, and the CSRF check must refuse
                    assert cookie_sent, ("the same-site form post went without the session "
                                         "cookie: the CSRF check was not tested", answers)
        servers = _servers(px)
        assert servers[C.address]["drain"] is False and servers[B.address]["drain"] is False, (
            "a cross-site form drained a server", answers)
        status, _, _ = _http(px, "GET", "/api/v1/backends", cookie_hdr)
        assert status == 200, ("a cross-site form post to /logout ended the session", answers)
        page.navigate(px.admin_url + "/")
        page.wait_for("!!document.querySelector('#upstreams')", timeout=5,
                      msg="still logged in after the cross-site /logout posts")

        # the page's own logout, when it has one, ends the session on the server too
        logout = "no logout button"
        if page.evaluate("!!document.querySelector('#logout [type=submit]')"):
            page.click("#logout [type=submit]")
            page.wait_for("!!document.querySelector('form#login')", timeout=5,
                          msg="the login form after the logout")
            status, _, _ = _http(px, "GET", "/api/v1/backends", cookie_hdr)
            assert status == 401, ("the session still works after the logout", status)
            logout = "the logout button ended the session"

        print("report: dashboard: backend down shown %.1fs after it stopped; screenshot %dx%d, "
              "%d bytes; %s; other origins' form posts answered %s"
              % (down_after, w, h, size, logout, ", ".join(
                  "%s %d%s" % (a[0].split("//")[1], a[1], " (with the cookie)" if a[2] else "")
                  for a in answers)))
    finally:
        for o in origins:
            o.stop()
        chrome.close()


def _set_weight(page, server_id, value):
    ok = page.evaluate("""(() => {
        const r = %s;
        const i = r && r.querySelector('input.weight');
        if (!i) return false;
        i.focus(); i.select();
        return true;
    })()""" % _row(server_id))
    assert ok, "no input.weight in the row of %s" % server_id
    page.evaluate("(() => { const i = %s.querySelector('input.weight'); i.value = '';"
                  " i.dispatchEvent(new Event('input', {bubbles: true})); })()" % _row(server_id))
    page.insert_text(value)
    _click_in_row(page, server_id, "button.set-weight")


@harness.timeout(90)
def test_dashboard_browser_without_javascript(t):
    """With JavaScript off the login form still works and the page is a server-rendered table
    with each server's health."""
    A, B = t.backend("A"), t.backend("B")
    px = _dashboard_proxy(t, [A, B])
    _wait_healthy(px, [A, B])
    chrome = _launch(t)
    try:
        page = chrome.new_page()
        page.call("Emulation.setScriptExecutionDisabled", {"value": True})
        page.navigate(px.admin_url + "/")
        page.wait_for("!!document.querySelector('form#login input[name=\"token\"]')", timeout=5,
                      msg="the login form")
        page.evaluate("document.querySelector('#login input[name=\"token\"]').focus()")
        page.insert_text(px.admin_token)
        # a click on the form's submit control: without scripts only the browser can submit
        has_submit = page.evaluate("!!document.querySelector('#login [type=submit], "
                                   "#login button:not([type])')")
        assert has_submit, "the login form has no submit button"
        page.click("#login [type=submit], #login button:not([type])")
        page.wait_for("location.pathname === '/' && !!document.querySelector('#upstreams')",
                      timeout=10, msg="the server-rendered page after the login")
        for be in (A, B):
            _wait_state(page, be.address, 0.5, "server-rendered", health="healthy")
        A.stop()
        time.sleep(1.0 + 0.5 + 1.0)   # a failed probe (interval + timeout) and some slack
        page.navigate(px.admin_url + "/")
        st = _state(page, A.address)
        assert st and st["health"] == "down", st
        assert _state(page, B.address)["health"] == "healthy"
        _check_screenshot(page, t.path("dashboard-nojs.png"))
        _keep(t, "dashboard-nojs.png")
    finally:
        chrome.close()
