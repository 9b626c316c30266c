"""Response cache (route `cache = {...}`, [cache]): what is stored and what is not (Cache-Control,
Expires, Set-Cookie, Authorization, Vary, status, size and its boundary, truncated responses,
Range/conditional misses), freshness and Age, HEAD/GET/POST, the key (query, Host, long keys),
conditional requests answered from the cache (304), one upstream request for a stampede (also
of an expired entry; a non-storable fill releases the waiters; the filling client going away),
hits shared by every worker and kept over a reload and worker kills, LRU eviction within
max_size (also concurrent, with body integrity), stale_if_error (down, 5xx, timeout, window),
stale_while_revalidate, the admin purge, the cache metrics and the config errors.

The upstream is `Origin` (below): a threaded HTTP/1.1 server whose answer is set per path (status,
headers, body, chunked pieces with pauses, delay) and that counts the requests per path, so that
"the backend saw exactly N requests" is checked exactly. test_compression.py uses it too.
"""

import collections
import email.utils
import http.client
import http.server
import json
import os
import random
import re
import secrets
import signal
import socket
import threading
import time

import harness
from harness import Conn, assert_error, wait_until


# ----------------------------------------------------------------------------------------------
# the upstream: answers set per path, requests counted per path

class OriginRequest:
    """One request the origin received: method, target, path (no query), headers (lower-cased
    name -> value, repeated ones joined with ", "), body, time (monotonic)."""

    def __init__(self, method, target, headers, body):
        self.method = method
        self.target = target
        self.path = target.partition("?")[0]
        self.headers = headers
        self.body = body
        self.time = time.monotonic()


class _OriginHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 15          # an idle kept-alive connection's thread ends after that
    origin = None         # set on the subclass Origin makes

    def setup(self):
        super().setup()
        with self.origin.lock:
            self.origin._conns.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.origin.lock:
                self.origin._conns.discard(self.connection)

    def log_message(self, *args):
        pass

    def _serve(self):
        o = self.origin
        n = int(self.headers.get("Content-Length") or 0)
        body_in = self.rfile.read(n) if n else b""
        hdrs = {}
        for k in set(k.lower() for k in self.headers.keys()):
            hdrs[k] = ", ".join(self.headers.get_all(k))
        req = OriginRequest(self.command, self.path, hdrs, body_in)
        a = o._answer_for(req.path)
        with o.lock:
            o.requests.append(req)
        if a["delay"] and o._stop.wait(a["delay"]):
            self.close_connection = True
            return
        status = a["status"](req) if callable(a["status"]) else a["status"]
        headers = a["headers"](req) if callable(a["headers"]) else list(a["headers"])
        body = a["body"](req) if callable(a["body"]) else a["body"]
        chunks = a["chunks"]
        self.send_response_only(status, a.get("reason"))
        self.send_header("X-Origin", o.name)
        for k, v in headers:
            self.send_header(k, v)
        has_cl = any(k.lower() == "content-length" for k, _ in headers)
        if a.get("close"):
            self.close_connection = True
        if chunks is not None:
            self.send_header("Transfer-Encoding", "chunked")
        elif a.get("no_length"):
            self.send_header("Connection", "close")   # the body ends with the connection
        elif status not in (204, 304) and not has_cl:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD" or status in (204, 304):
            return
        if chunks is None:
            self.wfile.write(body)
            return
        for piece, pause in chunks:
            self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            with o.lock:
                o.sent[req.path].append(time.monotonic())
            if pause and o._stop.wait(pause):
                self.close_connection = True
                return
        self.wfile.write(b"0\r\n\r\n")

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve


class Origin:
    """Threaded HTTP/1.1 upstream on 127.0.0.1. `answer(path, ...)` sets what a path gets
    (paths without one get 200 text/plain "default PATH"); `count(path)` is how many requests
    for that path (query ignored) arrived, `count_target(target)` for the exact target.
    Every response carries X-Origin: NAME. `stop()` closes the listener and every connection
    (the upstream is then down: connections are refused)."""

    def __init__(self, t, name="origin"):
        self.name = name
        self.lock = threading.Lock()
        self.answers = {}
        self.requests = []
        self.sent = collections.defaultdict(list)   # path -> monotonic time of each chunk sent
        self._stop = threading.Event()
        self._conns = set()
        handler = type("Handler", (_OriginHandler,), {"origin": self})
        server_cls = type("Server", (http.server.ThreadingHTTPServer,),
                          {"request_queue_size": 256, "daemon_threads": True})
        self.server = server_cls(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.address = "127.0.0.1:%d" % self.port
        self.stopped = False
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        t._backends.append(self)   # T.cleanup stops it

    def answer(self, path, status=200, headers=(), body=b"", chunks=None, delay=0.0,
               reason=None, close=False, no_length=False):
        """status: a code or fn(OriginRequest) -> code; headers: [(name, value)] or
        fn(OriginRequest) -> list (a Content-Length given here
        is sent as is, whatever the body); body: bytes or fn(OriginRequest) -> bytes; chunks:
        [(bytes, pause seconds after it)] sent chunked (body is then unused); delay: seconds
        to wait before answering; close: close the connection after the answer; no_length: no
        Content-Length, the body is delimited by closing the connection."""
        with self.lock:
            self.answers[path] = {"status": status, "headers": headers, "body": body,
                                  "chunks": chunks, "delay": delay, "reason": reason,
                                  "close": close, "no_length": no_length}

    def _answer_for(self, path):
        with self.lock:
            a = self.answers.get(path)
        if a is None:
            a = {"status": 200, "headers": [("Content-Type", "text/plain")],
                 "body": ("default %s\n" % path).encode(), "chunks": None, "delay": 0.0}
        return a

    def count(self, path=None):
        with self.lock:
            return sum(1 for r in self.requests if path is None or r.path == path)

    def count_target(self, target):
        with self.lock:
            return sum(1 for r in self.requests if r.target == target)

    def last(self, path=None):
        with self.lock:
            rs = [r for r in self.requests if path is None or r.path == path]
        return rs[-1] if rs else None

    def stop(self):
        if self.stopped:
            return
        self.stopped = True
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(2)


# ----------------------------------------------------------------------------------------------
# helpers

def http_date(ts):
    return email.utils.formatdate(ts, usegmt=True)


def cache_proxy(t, origin, route_cache=None, routes=None, **cfg):
    """proxyd with one route "/" -> origin with cache = {ttl = "60s", **route_cache} (or the
    routes given); cfg: more sections ([cache] as cache={...})."""
    if routes is None:
        routes = [{"path": "/", "upstream": "b",
                   "cache": dict({"ttl": "60s"}, **(route_cache or {}))}]
    return t.proxy_to(origin, routes=routes, **cfg)


def xcache(r):
    return r.header("X-Cache")


def fetch(px, path, want=None, method="GET", headers=None, host="test.local", body=None,
          status=200, what=""):
    """One request on a new connection; checks the status and (if want) X-Cache."""
    r = px.request(method, path, headers=headers, body=body, host=host)
    ctx = "%s %s (Host %s, %r)%s" % (method, path, host, headers, " " + what if what else "")
    assert r.status == status, "%s: status %d, expected %d: %r" % (ctx, r.status, status, r)
    if want is not None:
        assert xcache(r) == want, "%s: X-Cache %r, expected %r: %r" % (ctx, xcache(r), want, r)
    return r


def assert_age(r, what=""):
    age = r.header("Age")
    assert age is not None and age.isdigit(), "%s: no numeric Age header on a %s: %r" % (
        what, xcache(r), r)
    return int(age)


def scrape(px):
    """{name: [(labels, value)]} from the metrics endpoint."""
    with Conn(px.metrics_port, timeout=5) as c:
        r = c.request("GET", "/metrics")
    assert r.status == 200, "GET /metrics: %r" % r
    out = collections.defaultdict(list)
    for line in r.body.decode("utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)", line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[m.group(1)].append((labels, float(m.group(3))))
    return out


def mval(sc, name, **labels):
    """Sum of the samples named `name` whose labels include `labels`; None if there is none."""
    vals = [v for l, v in sc.get(name, []) if all(l.get(k) == x for k, x in labels.items())]
    return sum(vals) if vals else None


def cache_counts(sc):
    return {res: mval(sc, "proxyd_cache_requests_total", result=res)
            for res in ("hit", "miss", "stale", "bypass")}


def concurrent(n, fn, timeout=15.0):
    """Run fn(i) in n threads released together; returns [(result or exception, seconds)]."""
    barrier = threading.Barrier(n)
    out = [None] * n

    def run(i):
        try:
            barrier.wait(timeout)
            t0 = time.monotonic()
            try:
                out[i] = (fn(i), time.monotonic() - t0)
            except Exception as e:   # reported by the caller
                out[i] = (e, time.monotonic() - t0)
        except threading.BrokenBarrierError as e:
            out[i] = (e, 0.0)
    ths = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(timeout)
    return out


# ----------------------------------------------------------------------------------------------
# hit, miss, methods, key

def test_cache_miss_then_hit(t):
    o = Origin(t)
    o.answer("/a", headers=[("Content-Type", "text/plain")], body=b"payload of /a\n" * 50)
    px = cache_proxy(t, o)
    r1 = fetch(px, "/a", "MISS")
    r2 = fetch(px, "/a", "HIT")
    assert r1.body == r2.body == b"payload of /a\n" * 50, (r1, r2)
    assert_age(r2, "GET /a")
    assert r2.header("Content-Type") == "text/plain", r2
    assert r2.header("X-Origin") == "origin", "the stored head lost upstream headers: %r" % r2
    r3 = fetch(px, "/a", "HIT")
    assert r3.body == r1.body
    assert o.count("/a") == 1, "backend saw %d requests for /a, expected 1" % o.count("/a")
    # the request's Cache-Control and Pragma are ignored (like nginx)
    r = fetch(px, "/a", "HIT", headers={"Cache-Control": "no-cache, max-age=0",
                                        "Pragma": "no-cache"})
    assert r.body == r1.body
    # keep-alive: hits on one connection
    with px.conn() as c:
        for i in range(5):
            r = c.request("GET", "/a")
            assert r.status == 200 and xcache(r) == "HIT" and r.body == r1.body, (i, r)
    assert o.count("/a") == 1


def test_cache_head_and_get_separate(t):
    o = Origin(t)
    o.answer("/h", headers=[("Content-Type", "text/plain")], body=b"h" * 1000)
    px = cache_proxy(t, o)
    r = fetch(px, "/h", "MISS", method="HEAD")
    assert r.header("Content-Length") == "1000", r
    r = fetch(px, "/h", "HIT", method="HEAD")
    assert r.header("Content-Length") == "1000", r
    assert_age(r, "HEAD /h")
    # with no body: the connection stays usable after a HEAD hit
    with px.conn() as c:
        r = c.request("HEAD", "/h")
        assert r.status == 200 and xcache(r) == "HIT", r
        r = c.request("HEAD", "/h")
        assert r.status == 200 and xcache(r) == "HIT", r
    r = fetch(px, "/h", "MISS", what="(a GET after HEADs: HEAD and GET are separate keys)")
    assert r.body == b"h" * 1000
    r = fetch(px, "/h", "HIT")
    assert r.body == b"h" * 1000
    methods = [q.method for q in o.requests]
    assert methods == ["HEAD", "GET"], "backend saw %r, expected one HEAD then one GET" % methods


def test_cache_post_bypass(t):
    o = Origin(t)
    o.answer("/p", headers=[("Content-Type", "text/plain")], body=b"stored")
    px = cache_proxy(t, o)
    fetch(px, "/p", "MISS")
    fetch(px, "/p", "HIT")
    for i in range(3):
        r = fetch(px, "/p", "BYPASS", method="POST", body=b"x=%d" % i)
        assert r.header("X-Origin") == "origin", r
    assert [q.method for q in o.requests] == ["GET", "POST", "POST", "POST"], [
        q.method for q in o.requests]
    assert [q.body for q in o.requests[1:]] == [b"x=0", b"x=1", b"x=2"]
    for m in ("PUT", "DELETE"):
        fetch(px, "/p", "BYPASS", method=m, body=b"")
    assert o.count("/p") == 6


def test_cache_query_in_key(t):
    o = Origin(t)
    o.answer("/q", body=lambda req: ("target %s" % req.target).encode())
    px = cache_proxy(t, o)
    assert fetch(px, "/q?x=1", "MISS").body == b"target /q?x=1"
    assert fetch(px, "/q?x=2", "MISS").body == b"target /q?x=2"
    assert fetch(px, "/q", "MISS").body == b"target /q"
    assert fetch(px, "/q?x=1", "HIT").body == b"target /q?x=1"
    assert fetch(px, "/q?x=2", "HIT").body == b"target /q?x=2"
    assert fetch(px, "/q", "HIT").body == b"target /q"
    assert o.count("/q") == 3


def test_cache_host_in_key(t):
    o = Origin(t)
    o.answer("/k", body=lambda req: ("host %s" % req.headers.get("host")).encode())
    px = cache_proxy(t, o)
    assert fetch(px, "/k", "MISS", host="one.test").body == b"host one.test"
    assert fetch(px, "/k", "MISS", host="two.test").body == b"host two.test"
    assert fetch(px, "/k", "HIT", host="one.test").body == b"host one.test"
    assert fetch(px, "/k", "HIT", host="two.test").body == b"host two.test"
    # the key's host is lower-cased and has no port
    r = fetch(px, "/k", "HIT", host="ONE.test:%d" % px.port)
    assert r.body == b"host one.test", r
    assert o.count("/k") == 2


# ----------------------------------------------------------------------------------------------
# what is stored

def test_cache_not_stored_no_store_private_no_cache(t):
    o = Origin(t)
    for path, cc in (("/ns", "no-store"), ("/pr", "private, max-age=60"),
                     ("/nc", "no-cache"), ("/nc2", "public, max-age=60, no-cache"),
                     ("/ma0", "max-age=0")):
        o.answer(path, headers=[("Cache-Control", cc)], body=b"body " + path.encode())
    px = cache_proxy(t, o)
    for path in ("/ns", "/pr", "/nc", "/nc2", "/ma0"):
        for i in range(3):
            r = fetch(px, path, "MISS", what="(Cache-Control: %s)" % o.answers[path]["headers"])
            assert r.body == b"body " + path.encode()
        assert o.count(path) == 3, "%s: backend saw %d requests, expected 3 (not stored)" % (
            path, o.count(path))


def test_cache_max_age_expires(t):
    o = Origin(t)
    o.answer("/m", headers=[("Cache-Control", "max-age=1")], body=b"m")
    px = cache_proxy(t, o, {"ttl": "60s"})
    fetch(px, "/m", "MISS")
    fetch(px, "/m", "HIT")
    time.sleep(1.5)
    fetch(px, "/m", "MISS", what="(max-age=1, 1.5 s later: expired despite route ttl 60s)")
    fetch(px, "/m", "HIT")
    assert o.count("/m") == 2


def test_cache_s_maxage_beats_max_age(t):
    o = Origin(t)
    o.answer("/short", headers=[("Cache-Control", "max-age=60, s-maxage=1")], body=b"s")
    o.answer("/long", headers=[("Cache-Control", "max-age=1, s-maxage=60")], body=b"l")
    px = cache_proxy(t, o, {"ttl": "60s"})
    fetch(px, "/short", "MISS")
    fetch(px, "/long", "MISS")
    fetch(px, "/short", "HIT")
    fetch(px, "/long", "HIT")
    time.sleep(1.5)
    fetch(px, "/short", "MISS", what="(s-maxage=1 beats max-age=60)")
    fetch(px, "/long", "HIT", what="(s-maxage=60 beats max-age=1)")
    assert o.count("/short") == 2 and o.count("/long") == 1


def test_cache_expires_header(t):
    o = Origin(t)
    now = time.time()
    o.answer("/past", headers=[("Date", http_date(now)), ("Expires", http_date(now - 3600))],
             body=b"past")
    o.answer("/invalid", headers=[("Expires", "0")], body=b"invalid")
    # Expires 2 s after Date: the lifetime is Expires - Date = 2 s, although the route says 60s
    o.answer("/soon", headers=lambda req: [("Date", http_date(time.time())),
                                           ("Expires", http_date(time.time() + 2))],
             body=b"soon")
    px = cache_proxy(t, o, {"ttl": "60s"})
    for i in range(2):
        fetch(px, "/past", "MISS", what="(Expires in the past)")
        fetch(px, "/invalid", "MISS", what="(Expires: 0 = already expired)")
    assert o.count("/past") == 2 and o.count("/invalid") == 2
    fetch(px, "/soon", "MISS")
    t0 = time.monotonic()
    fetch(px, "/soon", "HIT")
    time.sleep(max(0.0, 3.2 - (time.monotonic() - t0)))
    fetch(px, "/soon", "MISS", what="(Expires = Date + 2 s, 3 s later)")
    assert o.count("/soon") == 2


def test_cache_route_ttl(t):
    o = Origin(t)
    o.answer("/r", body=b"ttl")
    px = cache_proxy(t, o, {"ttl": "1s"})
    fetch(px, "/r", "MISS")
    r = fetch(px, "/r", "HIT")
    assert assert_age(r) <= 1
    time.sleep(1.5)
    fetch(px, "/r", "MISS", what="(route ttl 1s, 1.5 s later)")
    fetch(px, "/r", "HIT")
    assert o.count("/r") == 2


def test_cache_set_cookie_not_stored(t):
    o = Origin(t)
    o.answer("/c", headers=[("Set-Cookie", "sid=abc; Path=/"),
                            ("Cache-Control", "public, max-age=60")], body=b"cookie")
    px = cache_proxy(t, o)
    for i in range(3):
        r = fetch(px, "/c", "MISS", what="(Set-Cookie)")
        assert r.header("Set-Cookie") == "sid=abc; Path=/", r
    assert o.count("/c") == 3


def test_cache_authorization(t):
    o = Origin(t)
    o.answer("/a", body=lambda req: ("auth=%s" % req.headers.get("authorization")).encode())
    px = cache_proxy(t, o, routes=[
        {"path": "/open", "upstream": "b", "cache": {"ttl": "60s", "authorization": True}},
        {"path": "/", "upstream": "b", "cache": {"ttl": "60s"}}])
    auth = {"Authorization": "Bearer token-1"}
    # authorization = false (default): never served from nor stored in the cache
    for i in range(2):
        r = fetch(px, "/a", "BYPASS", headers=auth, what="(Authorization, route default)")
        assert r.body == b"auth=Bearer token-1"
    fetch(px, "/a", "MISS")
    fetch(px, "/a", "HIT")
    r = fetch(px, "/a", "BYPASS", headers=auth, what="(Authorization after a stored GET)")
    assert r.body == b"auth=Bearer token-1", "an Authorization request got the cached body"
    assert o.count("/a") == 4
    # authorization = true: stored and hit
    o.answer("/open/x", body=b"shared")
    fetch(px, "/open/x", "MISS", headers=auth)
    fetch(px, "/open/x", "HIT", headers=auth)
    fetch(px, "/open/x", "HIT")
    assert o.count("/open/x") == 1


def test_cache_vary(t):
    o = Origin(t)
    o.answer("/v", headers=[("Vary", "Accept-Language"), ("Content-Type", "text/plain")],
             body=lambda req: ("lang=%s" % req.headers.get("accept-language", "-")).encode())
    o.answer("/star", headers=[("Vary", "*")], body=b"star")
    px = cache_proxy(t, o)
    en, fr = {"Accept-Language": "en"}, {"Accept-Language": "fr"}
    assert fetch(px, "/v", "MISS", headers=en).body == b"lang=en"
    assert fetch(px, "/v", "MISS", headers=fr).body == b"lang=fr"
    assert fetch(px, "/v", "HIT", headers=en).body == b"lang=en"
    assert fetch(px, "/v", "HIT", headers=fr).body == b"lang=fr"
    assert fetch(px, "/v", "MISS").body == b"lang=-"
    assert fetch(px, "/v", "HIT").body == b"lang=-"
    r = fetch(px, "/v", "HIT", headers=fr)
    assert r.body == b"lang=fr" and "accept-language" in (r.header("Vary") or "").lower(), r
    assert o.count("/v") == 3
    for i in range(3):
        fetch(px, "/star", "MISS", what="(Vary: *)")
    assert o.count("/star") == 3


def test_cache_status_stored_or_not(t):
    o = Origin(t)
    o.answer("/nf", status=404, body=b"not found here")
    o.answer("/gone", status=410, body=b"gone")
    o.answer("/moved", status=301, headers=[("Location", "/elsewhere")], body=b"")
    o.answer("/err", status=500, body=b"broken")
    o.answer("/created", status=201, body=b"created")
    o.answer("/nc", status=204)
    px = cache_proxy(t, o)
    for path, status, stored in (("/nf", 404, True), ("/gone", 410, True),
                                 ("/moved", 301, True), ("/nc", 204, True),
                                 ("/err", 500, False), ("/created", 201, False)):
        r1 = fetch(px, path, "MISS", status=status)
        r2 = fetch(px, path, "HIT" if stored else "MISS", status=status,
                   what="(status %d %s)" % (status, "stored" if stored else "not stored"))
        assert r1.body == r2.body, (r1, r2)
        assert o.count(path) == (1 if stored else 2), (path, o.count(path))
    assert fetch(px, "/moved", "HIT", status=301).header("Location") == "/elsewhere"


def test_cache_max_object_size(t):
    o = Origin(t)
    big = os.urandom(100 * 1000)
    small = os.urandom(10 * 1000)
    o.answer("/big", headers=[("Content-Type", "application/octet-stream")], body=big)
    o.answer("/bigchunked", headers=[("Content-Type", "application/octet-stream")],
             chunks=[(big[i:i + 8192], 0) for i in range(0, len(big), 8192)])
    o.answer("/small", headers=[("Content-Type", "application/octet-stream")], body=small)
    o.answer("/smallchunked", headers=[("Content-Type", "application/octet-stream")],
             chunks=[(small[i:i + 4000], 0) for i in range(0, len(small), 4000)])
    px = cache_proxy(t, o, cache={"max_object_size": "64KiB"})
    for path, body in (("/big", big), ("/bigchunked", big)):
        for i in range(3):
            r = fetch(px, path, "MISS", what="(100 KB > max_object_size 64KiB)")
            assert r.body == body, "%s: body of %d bytes, expected %d intact" % (
                path, len(r.body), len(body))
        assert o.count(path) == 3
    for path in ("/small", "/smallchunked"):
        assert fetch(px, path, "MISS").body == small
        assert fetch(px, path, "HIT").body == small
        assert o.count(path) == 1


def test_cache_object_size_boundary(t):
    o = Origin(t)
    o.answer("/eq", body=b"e" * 65536)
    o.answer("/over", body=b"o" * 65537)
    o.answer("/eqc", chunks=[(b"c" * 32768, 0), (b"c" * 32768, 0)])
    o.answer("/overc", chunks=[(b"d" * 32768, 0), (b"d" * 32769, 0)])
    px = cache_proxy(t, o, cache={"max_object_size": "64KiB"})
    wrong = []
    for path, n, stored in (("/eq", 65536, True), ("/over", 65537, False),
                            ("/eqc", 65536, True), ("/overc", 65537, False)):
        assert len(fetch(px, path, "MISS").body) == n
        r = fetch(px, path)
        assert len(r.body) == n
        if xcache(r) != ("HIT" if stored else "MISS"):
            wrong.append("%s (%d body bytes%s): second GET %s" % (
                path, n, ", chunked" if path.endswith("c") else "", xcache(r)))
    assert not wrong, "max_object_size 64KiB = 65536: " + "; ".join(wrong)


def test_cache_range_and_conditional_misses_not_stored(t):
    """A miss that carries Range or If-None-Match goes upstream with it; the 206 / 304 it gets
    is passed on but is not what later plain GETs receive."""
    o = Origin(t)
    full = bytes(range(256)) * 40

    def status(req):
        if req.headers.get("range"):
            return 206
        if req.headers.get("if-none-match") == '"e1"':
            return 304
        return 200

    def headers(req):
        h = [("ETag", '"e1"'), ("Content-Type", "application/octet-stream")]
        if req.headers.get("range"):
            h.append(("Content-Range", "bytes 0-9/%d" % len(full)))
        return h

    def body(req):
        return full[:10] if req.headers.get("range") else full
    o.answer("/r", status=status, headers=headers, body=body)
    o.answer("/c", status=status, headers=headers, body=body)
    px = cache_proxy(t, o)
    r = px.get("/r", headers={"Range": "bytes=0-9"})
    assert r.status in (206, 200), r
    if r.status == 206:
        assert r.body == full[:10], r
    else:
        assert r.body == full, r
    r = px.get("/r")
    assert r.status == 200 and r.body == full, "a plain GET after a Range miss: %r" % r
    r = px.get("/c", headers={"If-None-Match": '"e1"'})
    assert r.status == 304 and not r.body, r
    r = px.get("/c")
    assert r.status == 200 and r.body == full, "a plain GET after a conditional miss: %r" % r
    r = fetch(px, "/c", "HIT")
    assert r.body == full


def test_cache_long_key_and_big_head(t):
    o = Origin(t)
    big_headers = [("X-Big-%d" % i, "v" * 1000) for i in range(20)]
    o.answer("/bh", headers=big_headers, body=b"big head")
    o.answer("/long", body=lambda req: req.target.encode())
    px = cache_proxy(t, o)
    fetch(px, "/bh", "MISS")
    r = fetch(px, "/bh", "HIT")
    assert [(k, v) for k, v in r.headers if k.startswith("X-Big-")] == big_headers, r.headers
    q = "/long?" + "&".join("k%d=%s" % (i, "x" * 20) for i in range(150))
    assert fetch(px, q, "MISS").body == q.encode()
    assert fetch(px, q, "HIT").body == q.encode()
    assert fetch(px, q + "y", "MISS").body == (q + "y").encode()


@harness.timeout(30)
def test_cache_concurrent_hits_large_object(t):
    o = Origin(t)
    body = os.urandom(1536 * 1024)
    o.answer("/big", headers=[("Content-Type", "application/octet-stream")], body=body)
    px = cache_proxy(t, o, cache={"max_object_size": "2MiB", "max_size": "16MiB"},
                     server={"workers": 2})
    fetch(px, "/big", "MISS")
    res = concurrent(40, lambda i: _raw_get(px.port, "/big"))
    for r, _ in res:
        assert not isinstance(r, Exception), r
        assert r.status == 200 and xcache(r) == "HIT" and r.body == body, (
            r.status, xcache(r), len(r.body))
    assert o.count("/big") == 1


@harness.timeout(30)
def test_cache_expired_entry_stampede(t):
    """An expired entry without stale_while_revalidate: concurrent requests refresh it once."""
    o = Origin(t)
    o.answer("/x", body=b"v1")
    px = cache_proxy(t, o, {"ttl": "1s"}, server={"workers": 2})
    fetch(px, "/x", "MISS")
    time.sleep(1.5)
    o.answer("/x", body=b"v2", delay=1.0)
    res = concurrent(20, lambda i: _raw_get(px.port, "/x"))
    for r, _ in res:
        assert not isinstance(r, Exception), r
        assert r.status == 200 and r.body == b"v2", r
    assert o.count("/x") == 2, "backend saw %d (1 fill + 1 refresh expected)" % o.count("/x")
    labels = collections.Counter(xcache(r) for r, _ in res)
    assert labels == {"MISS": 1, "HIT": 19}, dict(labels)


def test_cache_age_grows(t):
    o = Origin(t)
    o.answer("/g", body=b"g")
    px = cache_proxy(t, o)
    fetch(px, "/g", "MISS")
    assert assert_age(fetch(px, "/g", "HIT")) == 0
    time.sleep(2.2)
    age = assert_age(fetch(px, "/g", "HIT"))
    assert 2 <= age <= 3, age


def test_cache_hop_by_hop_not_replayed(t):
    o = Origin(t)
    o.answer("/h", headers=[("Connection", "X-Hop"), ("X-Hop", "1"), ("Keep-Alive", "timeout=5"),
                            ("X-Keep", "yes")], body=b"hop")
    px = cache_proxy(t, o)
    for want in ("MISS", "HIT"):
        r = fetch(px, "/h", want)
        assert r.header("X-Keep") == "yes" and not r.has("X-Hop") and not r.has(
            "Keep-Alive"), (want, r.headers)
    with px.conn() as c:   # HTTP/1.0 client on a hit: a length, then the proxy closes
        r = c.request("GET", "/h", version="HTTP/1.0")
        assert r.status == 200 and xcache(r) == "HIT" and r.body == b"hop", r
        assert r.header("Content-Length") == "3", r
        assert c.wait_closed(3.0)


# ----------------------------------------------------------------------------------------------
# conditional requests

def test_cache_conditional_etag(t):
    o = Origin(t)
    o.answer("/e", headers=[("ETag", '"v1"'), ("Cache-Control", "max-age=60"),
                            ("Content-Type", "text/plain")], body=b"etag body\n" * 10)
    px = cache_proxy(t, o)
    fetch(px, "/e", "MISS")
    for inm in ('"v1"', 'W/"v1"', '"x", "v1"', '"a","v1" , "b"', "*"):
        r = fetch(px, "/e", "HIT", headers={"If-None-Match": inm}, status=304,
                  what="(If-None-Match %s)" % inm)
        assert r.header("ETag") == '"v1"', r
        assert r.header("Cache-Control") == "max-age=60", r
        assert not r.body, r
    # the connection stays in sync after a 304 (no body bytes sent)
    with px.conn() as c:
        r = c.request("GET", "/e", headers={"If-None-Match": '"v1"'})
        assert r.status == 304, r
        r = c.request("GET", "/e")
        assert r.status == 200 and r.body == b"etag body\n" * 10, r
    for inm in ('"v2"', '"x", "y"', 'W/"v2"'):
        r = fetch(px, "/e", "HIT", headers={"If-None-Match": inm}, status=200,
                  what="(If-None-Match %s does not match)" % inm)
        assert r.body == b"etag body\n" * 10
    assert o.count("/e") == 1


def test_cache_conditional_last_modified(t):
    o = Origin(t)
    lm = time.time() - 86400
    o.answer("/lm", headers=[("Last-Modified", http_date(lm))], body=b"lm body")
    px = cache_proxy(t, o)
    fetch(px, "/lm", "MISS")
    for ims in (lm + 3600, lm):
        r = fetch(px, "/lm", "HIT", headers={"If-Modified-Since": http_date(ims)}, status=304,
                  what="(If-Modified-Since %s, Last-Modified %s)" % (http_date(ims),
                                                                      http_date(lm)))
        assert not r.body and r.header("Last-Modified") == http_date(lm), r
    r = fetch(px, "/lm", "HIT", headers={"If-Modified-Since": http_date(lm - 3600)}, status=200,
              what="(If-Modified-Since earlier than Last-Modified)")
    assert r.body == b"lm body"
    # If-None-Match wins over If-Modified-Since (no ETag stored: INM does not match -> 200)
    r = fetch(px, "/lm", "HIT", headers={"If-Modified-Since": http_date(lm + 3600),
                                         "If-None-Match": '"zzz"'}, status=200,
              what="(If-None-Match present: If-Modified-Since ignored)")
    assert r.body == b"lm body"
    assert o.count("/lm") == 1


# ----------------------------------------------------------------------------------------------
# stampede, workers

def _raw_get(port, path, host="test.local", timeout=15.0, headers=None):
    with Conn(port, timeout=timeout) as c:
        return c.request("GET", path, headers=headers, host=host)


@harness.timeout(40)
def test_cache_stampede(t):
    o = Origin(t)
    body = b"".join(b"stampede line %d\n" % i for i in range(2000))
    o.answer("/s", headers=[("Content-Type", "text/plain")], body=body, delay=1.0)
    px = cache_proxy(t, o, server={"workers": 2})
    n = 100
    socks = []
    for i in range(n):
        c = Conn(px.port, timeout=15)
        socks.append(c)
    try:
        pids = px.worker_pids()

        def one(i):
            return socks[i].request("GET", "/s")
        t0 = time.monotonic()
        res = concurrent(n, one, timeout=20)
        took = time.monotonic() - t0
        owners = collections.Counter(harness.socket_owner(px.port, c.sock.getsockname()[1], pids)
                                     for c in socks)
    finally:
        for c in socks:
            c.close()
    errors = [(i, r) for i, (r, _) in enumerate(res) if isinstance(r, Exception)]
    assert not errors, "%d of %d requests failed: %r" % (len(errors), n, errors[:5])
    bad = [(i, r) for i, (r, _) in enumerate(res) if r.status != 200 or r.body != body]
    assert not bad, "%d of %d responses not 200 with the body: %r" % (len(bad), n, bad[:3])
    assert o.count("/s") == 1, "backend saw %d requests for one key, expected 1 (owners %r)" % (
        o.count("/s"), dict(owners))
    labels = collections.Counter(xcache(r) for r, _ in res)
    assert labels == {"MISS": 1, "HIT": n - 1}, "X-Cache: %r" % dict(labels)
    assert len([p for p in owners if p]) == 2, (
        "the 100 connections did not reach both workers: %r" % dict(owners))
    print("report: stampede of %d over workers %r took %.2fs" % (n, dict(owners), took))


@harness.timeout(30)
def test_cache_stampede_not_storable(t):
    """The filler's response is not storable: the waiters go upstream themselves (at once, not
    one after the other, and not after the 5 s wait)."""
    o = Origin(t)
    o.answer("/ns", headers=[("Cache-Control", "no-store")], body=b"fresh each time",
             delay=0.5)
    px = cache_proxy(t, o, server={"workers": 2})
    n = 10
    t0 = time.monotonic()
    res = concurrent(n, lambda i: _raw_get(px.port, "/ns"))
    took = time.monotonic() - t0
    errors = [r for r, _ in res if isinstance(r, Exception)]
    assert not errors, errors[:3]
    for r, _ in res:
        assert r.status == 200 and r.body == b"fresh each time" and xcache(r) == "MISS", r
    assert o.count("/ns") == n, "backend saw %d requests for %d clients" % (o.count("/ns"), n)
    assert took < 3.0, "%d concurrent requests for a no-store response took %.2fs (0.5 s " \
        "upstream): the waiters did not go upstream together" % (n, took)


def test_cache_incomplete_response_not_stored(t):
    o = Origin(t)
    o.answer("/cut", headers=[("Content-Length", "100000")], body=b"x" * 1000, close=True)
    px = cache_proxy(t, o)
    for i in range(2):
        with px.conn() as c:
            c.send(harness.build_request("GET", "/cut"))
            head = c.rd.read_head()
            assert head, "no response head"
            status, headers = harness.parse_head(head)
            assert " 200 " in status and harness.hget(headers, "X-Cache") == "MISS", (i, head)
            got = []
            try:
                c.rd.read_exact(100000, got.append)
                raise AssertionError("the client got 100000 bytes of a 1000-byte body")
            except (harness.Closed, ConnectionResetError):
                pass
    assert o.count("/cut") == 2, "a truncated response was stored (backend saw %d)" % (
        o.count("/cut"))
    o.answer("/cut", body=b"whole")
    assert fetch(px, "/cut", "MISS").body == b"whole"
    assert fetch(px, "/cut", "HIT").body == b"whole"


def test_cache_cross_worker(t):
    o = Origin(t)
    o.answer("/x", headers=[("Content-Type", "text/plain")], body=b"shared between workers")
    px = cache_proxy(t, o, server={"workers": 2}, metrics={})
    pids = px.worker_pids()
    assert len(pids) == 2, pids
    owners = collections.Counter()
    hit_owners = collections.Counter()
    for i in range(20):
        with px.conn() as c:
            r = c.request("GET", "/x")
            owner = harness.socket_owner(px.port, c.sock.getsockname()[1], pids)
        assert r.status == 200 and r.body == b"shared between workers", r
        assert xcache(r) == ("MISS" if i == 0 else "HIT"), (i, owner, r)
        owners[owner] += 1
        if i:
            hit_owners[owner] += 1
    assert o.count("/x") == 1, "backend saw %d, expected 1; connections per worker %r" % (
        o.count("/x"), dict(owners))
    assert len([p for p in hit_owners if p]) == 2, (
        "hits were not served by both workers (SO_REUSEPORT spread %r); retry" % dict(owners))

    def exact():
        c = cache_counts(scrape(px))
        return c if c["hit"] == 19 and c["miss"] == 1 else None
    try:
        wait_until(exact, 5, msg="")
    except AssertionError:
        raise AssertionError("cache metrics %r, expected hit 19 miss 1" % cache_counts(
            scrape(px)))


# ----------------------------------------------------------------------------------------------
# eviction

@harness.timeout(60)
def test_cache_eviction_lru(t):
    o = Origin(t)
    size = 50 * 1000

    def body(req):
        i = int(req.path.rsplit("/", 1)[1])
        return (b"%06d" % i) * (size // 6) + b"x" * (size % 6)
    for i in range(60):
        o.answer("/e/%d" % i, headers=[("Content-Type", "application/octet-stream")], body=body)
    px = cache_proxy(t, o, cache={"max_size": "1MiB", "max_object_size": "64KiB"}, metrics={})
    sc = scrape(px)
    assert mval(sc, "proxyd_cache_max_bytes") == 1048576, (
        "proxyd_cache_max_bytes %r" % mval(sc, "proxyd_cache_max_bytes"))
    peak = 0
    for i in range(60):
        r = fetch(px, "/e/%d" % i, "MISS")
        assert len(r.body) == size and r.body[:6] == b"%06d" % i, (i, r)
        b = mval(scrape(px), "proxyd_cache_bytes")
        assert b is not None, "no proxyd_cache_bytes"
        assert b <= 1048576, "after storing /e/%d: proxyd_cache_bytes %d > max_size 1048576" % (
            i, b)
        peak = max(peak, b)
    assert peak > 512 * 1024, "the cache never held more than %d bytes of 1 MiB" % peak
    # the most recently used are still there
    for i in range(59, 54, -1):
        r = fetch(px, "/e/%d" % i, "HIT", what="(one of the 5 most recent of 60 objects)")
        assert r.body[:6] == b"%06d" % i
    # the earliest were evicted
    for i in range(5):
        fetch(px, "/e/%d" % i, "MISS", what="(one of the earliest: evicted)")
    sc = scrape(px)
    ev = mval(sc, "proxyd_cache_evictions_total")
    assert ev is not None and ev > 0, "proxyd_cache_evictions_total %r" % ev
    entries = mval(sc, "proxyd_cache_entries")
    assert entries is not None and 5 <= entries < 60, "proxyd_cache_entries %r" % entries
    assert mval(sc, "proxyd_cache_bytes") <= 1048576


@harness.timeout(40)
def test_cache_eviction_concurrent_integrity(t):
    """Two workers storing, hitting and evicting 50 KB objects at once: every body matches its
    key (no torn or mixed-up object), the bytes never pass max_size."""

    o = Origin(t)
    size = 50 * 1000

    def body(req):
        return (req.path.encode() + b";") * (size // (len(req.path) + 1) + 1)
    for i in range(120):
        o.answer("/e/%d" % i, headers=[("Content-Type", "application/octet-stream")], body=body)
    px = cache_proxy(t, o, cache={"max_size": "1MiB", "max_object_size": "64KiB"},
                     server={"workers": 2}, metrics={})
    stop = threading.Event()
    problems = []
    counts = collections.Counter()
    peak = [0]

    def client(k):
        rnd = random.Random(k)
        while not stop.is_set():
            i = int(rnd.random() ** 2 * 120)    # a skewed mix: hits and misses
            path = "/e/%d" % i
            try:
                with px.conn(timeout=10) as c:
                    for _ in range(3):
                        r = c.request("GET", path)
                        counts[xcache(r)] += 1
                        want = (path.encode() + b";") * (size // (len(path) + 1) + 1)
                        if r.status != 200 or r.body != want:
                            problems.append((path, r.status, xcache(r), len(r.body or b"")))
            except Exception as e:
                problems.append((path, repr(e)))

    def scraper():
        while not stop.is_set():
            b = mval(scrape(px), "proxyd_cache_bytes") or 0
            peak[0] = max(peak[0], b)
            if b > 1048576:
                problems.append(("proxyd_cache_bytes", b))
            time.sleep(0.02)
    ths = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(6)]
    ths.append(threading.Thread(target=scraper, daemon=True))
    for th in ths:
        th.start()
    time.sleep(5)
    stop.set()
    for th in ths:
        th.join(15)
    assert not problems, "%d problems: %r" % (len(problems), problems[:5])
    assert counts["HIT"] > 50 and counts["MISS"] > 20, dict(counts)
    ev = mval(scrape(px), "proxyd_cache_evictions_total")
    assert ev and ev > 0, ev
    print("report: concurrent eviction: %r, peak bytes %d, evictions %d" % (
        dict(counts), peak[0], ev))


# ----------------------------------------------------------------------------------------------
# stale copies

def test_cache_stale_if_error_upstream_down(t):
    o = Origin(t)
    o.answer("/a", headers=[("Content-Type", "text/plain"), ("ETag", '"s1"')],
             body=b"still good\n" * 20)
    px = cache_proxy(t, o, {"ttl": "1s", "stale_if_error": "30s"})
    r1 = fetch(px, "/a", "MISS")
    fetch(px, "/a", "HIT")
    o.stop()
    time.sleep(1.5)
    for i in range(3):
        r = fetch(px, "/a", "STALE", what="(upstream down, within stale_if_error)")
        assert r.body == r1.body, r
        assert assert_age(r) >= 1, r
    r = fetch(px, "/a", headers={"If-None-Match": '"s1"'}, status=304,
              what="(conditional on a stale-served copy)")
    assert not r.body and xcache(r) in ("STALE", "HIT"), r


def test_cache_stale_if_error_5xx(t):
    o = Origin(t)
    for p in ("/503", "/500", "/504"):
        o.answer(p, body=b"good " + p.encode())
    px = cache_proxy(t, o, {"ttl": "1s", "stale_if_error": "30s"})
    for p in ("/503", "/500", "/504"):
        fetch(px, p, "MISS")
    time.sleep(1.5)
    for p in ("/503", "/500", "/504"):
        o.answer(p, status=int(p[1:]), body=b"upstream error")
        r = fetch(px, p, "STALE", what="(upstream answers %s)" % p[1:])
        assert r.body == b"good " + p.encode(), r
        assert o.count(p) == 2, "%s: the upstream was not asked again (%d)" % (p, o.count(p))
    # an upstream 404 is an answer, not an error: passed on
    o.answer("/404", body=b"there")
    fetch(px, "/404", "MISS")
    time.sleep(1.3)
    o.answer("/404", status=404, body=b"not any more")
    r = fetch(px, "/404", status=404, what="(404 after expiry is not an error)")
    assert r.body == b"not any more"


def test_cache_no_stale_if_error(t):
    o = Origin(t)
    o.answer("/a", body=b"a")
    o.answer("/b", body=b"b")
    px = cache_proxy(t, o, {"ttl": "1s"})
    fetch(px, "/a", "MISS")
    fetch(px, "/b", "MISS")
    time.sleep(1.5)
    o.answer("/b", status=503, body=b"unavailable")
    r = fetch(px, "/b", status=503, what="(no stale_if_error: the 503 passes)")
    assert r.body == b"unavailable" and r.header("X-Origin") == "origin", r
    o.stop()
    r = px.get("/a")
    assert_error(r, 502)


def test_cache_stale_if_error_window_ends(t):
    o = Origin(t)
    o.answer("/a", body=b"a")
    px = cache_proxy(t, o, {"ttl": "1s", "stale_if_error": "1s"})
    fetch(px, "/a", "MISS")
    o.stop()
    time.sleep(1.4)
    fetch(px, "/a", "STALE")
    time.sleep(1.4)
    assert_error(px.get("/a"), 502)


@harness.timeout(40)
def test_cache_stale_while_revalidate(t):
    o = Origin(t)
    o.answer("/w", headers=[("Content-Type", "text/plain")], body=b"version 1")
    px = cache_proxy(t, o, {"ttl": "1s", "stale_while_revalidate": "30s"})
    fetch(px, "/w", "MISS")
    fetch(px, "/w", "HIT")
    time.sleep(1.5)
    o.answer("/w", headers=[("Content-Type", "text/plain")], body=b"version 2", delay=1.0)
    first = {}

    def refresh():
        t0 = time.monotonic()
        try:
            first["r"] = _raw_get(px.port, "/w")
        except Exception as e:
            first["r"] = e
        first["took"] = time.monotonic() - t0
    th = threading.Thread(target=refresh, daemon=True)
    th.start()
    wait_until(lambda: o.count("/w") == 2, 3, msg="the refresh did not reach the upstream")
    res = concurrent(5, lambda i: _raw_get(px.port, "/w"))
    for r, took in res:
        assert not isinstance(r, Exception), r
        assert r.status == 200 and xcache(r) == "STALE" and r.body == b"version 1", r
        assert took < 0.5, "a STALE answer took %.2fs (refresh in progress)" % took
        assert_age(r)
    th.join(10)
    r = first.get("r")
    assert r is not None and not isinstance(r, Exception), first
    assert r.status == 200 and r.body == b"version 2" and xcache(r) == "MISS", r
    assert o.count("/w") == 2, "backend saw %d, expected 2 (one refresh)" % o.count("/w")
    r = fetch(px, "/w", "HIT")
    assert r.body == b"version 2"
    assert o.count("/w") == 2


def test_cache_stale_if_error_upstream_timeout(t):
    o = Origin(t)
    o.answer("/t", body=b"kept")
    px = cache_proxy(t, o, {"ttl": "1s", "stale_if_error": "30s"},
                     server={"timeouts": {"upstream_response": "500ms"}})
    fetch(px, "/t", "MISS")
    time.sleep(1.5)
    o.answer("/t", body=b"late", delay=3.0)
    t0 = time.monotonic()
    r = fetch(px, "/t", "STALE", what="(upstream_response timeout 500ms, upstream 3 s late)")
    took = time.monotonic() - t0
    assert r.body == b"kept" and took < 2.0, (r, took)


def test_cache_pipelined_hit_behind_slow_miss(t):
    """A hit queued behind a slow miss on one connection waits its turn (responses in order)."""
    o = Origin(t)
    o.answer("/slow", body=b"slow body", delay=0.6)
    o.answer("/fast", body=b"fast body")
    px = cache_proxy(t, o)
    fetch(px, "/fast", "MISS")
    reqs = [harness.build_request("GET", p) for p in ("/slow", "/fast", "/fast", "/slow")]
    with px.conn() as c:
        c.send(b"".join(reqs))
        rs = [c.read_response() for _ in reqs]
    assert [(xcache(r), r.body) for r in rs] == [
        ("MISS", b"slow body"), ("HIT", b"fast body"), ("HIT", b"fast body"),
        ("HIT", b"slow body")], rs


@harness.timeout(30)
def test_cache_filler_client_gone(t):
    """The client whose miss fills the cache goes away while the upstream is slow: a client
    waiting for the same key still gets its answer (from the completed fill or upstream)."""
    o = Origin(t)
    o.answer("/f", body=b"filled", delay=1.0)
    px = cache_proxy(t, o, server={"workers": 2})
    a = px.conn()
    a.send(harness.build_request("GET", "/f"))
    wait_until(lambda: o.count("/f") == 1, 3, msg="the first request did not reach upstream")
    out = {}

    def waiter():
        t0 = time.monotonic()
        try:
            out["r"] = _raw_get(px.port, "/f")
        except Exception as e:
            out["r"] = e
        out["took"] = time.monotonic() - t0
    th = threading.Thread(target=waiter, daemon=True)
    th.start()
    time.sleep(0.2)
    a.close()
    th.join(10)
    r = out.get("r")
    assert r is not None and not isinstance(r, Exception), out
    assert r.status == 200 and r.body == b"filled" and xcache(r) in ("HIT", "MISS"), r
    assert out["took"] < 6.5, "the waiter took %.2fs" % out["took"]
    assert o.count("/f") <= 2, o.count("/f")
    print("report: filler gone: waiter got %s after %.2fs, upstream saw %d" % (
        xcache(r), out["took"], o.count("/f")))


def test_cache_after_reload(t):
    o = Origin(t)
    o.answer("/r", body=b"before reload")
    px = cache_proxy(t, o, server={"workers": 2})
    fetch(px, "/r", "MISS")
    old = set(px.worker_pids())
    r = px.proxyctl("reload")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_until(lambda: not (set(px.worker_pids()) & old), 10, msg="old workers still there")
    for i in range(6):
        r = fetch(px, "/r", "HIT", what="(after a reload: the master's store is kept)")
        assert r.body == b"before reload"
    fetch(px, "/new", "MISS")
    fetch(px, "/new", "HIT")
    assert o.count("/r") == 1


@harness.timeout(40)
def test_cache_worker_killed_mid_traffic(t):
    """SIGKILL of a worker while both store and hit (it may hold the store's mutex): the
    replacement and the other worker go on storing and hitting, nothing hangs."""
    o = Origin(t)
    o.answer("/hot", body=b"hot" * 1000)
    px = cache_proxy(t, o, server={"workers": 2})
    fetch(px, "/hot", "MISS")
    stop = threading.Event()
    errors = []
    done = [0]

    def load(k):
        i = 0
        while not stop.is_set():
            i += 1
            try:
                with px.conn(timeout=5) as c:
                    for path in ("/k%d/%d" % (k, i), "/hot"):
                        r = c.request("GET", path)
                        if r.status != 200:
                            errors.append((path, r.status))
                done[0] += 1
            except (OSError, harness.Closed):
                pass   # a connection of the killed worker
    ths = [threading.Thread(target=load, args=(k,), daemon=True) for k in range(4)]
    for th in ths:
        th.start()
    try:
        for round_ in range(3):
            time.sleep(0.5)
            victim = px.worker_pids()[round_ % 2]
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: len(px.worker_pids()) == 2 and victim not in px.worker_pids(), 5,
                       msg="no replacement worker")
        time.sleep(0.5)
    finally:
        stop.set()
        for th in ths:
            th.join(10)
    assert not errors, errors[:5]
    assert done[0] > 20, done[0]
    before = o.count("/hot")
    for i in range(10):
        fetch(px, "/hot", "HIT", what="(after killing workers)")
    assert o.count("/hot") == before
    fetch(px, "/after", "MISS")
    fetch(px, "/after", "HIT")


# ----------------------------------------------------------------------------------------------
# admin purge, metrics

def _admin_call(px, method, path, token=True):
    conn = http.client.HTTPConnection("127.0.0.1", px.admin_port, timeout=10)
    headers = {"Authorization": "Bearer " + px.admin_token} if token else {}
    conn.request(method, path, headers=headers)
    r = conn.getresponse()
    raw = r.read()
    conn.close()
    try:
        return r.status, json.loads(raw)
    except ValueError:
        raise AssertionError("%s %s: %d, not JSON: %r" % (method, path, r.status, raw[:200]))


def test_cache_purge(t):
    o = Origin(t)
    token = secrets.token_hex(24)
    token_file = t.write("admin.token", token + "\n")
    port = harness.free_port()
    px = cache_proxy(t, o, admin={"listen": "127.0.0.1:%d" % port, "token_file": token_file},
                     metrics={})
    wait_until(lambda: harness.port_accepts(port), msg="admin port")
    px.admin_port, px.admin_token = port, token
    keys = [("/a/1", "test.local"), ("/a/2", "test.local"), ("/ab", "test.local"),
            ("/b/1", "test.local"), ("/a/1", "other.test")]
    for p, h in keys:
        fetch(px, p, "MISS", host=h)
        fetch(px, p, "HIT", host=h)
    status, body = _admin_call(px, "DELETE", "/api/v1/cache?prefix=/a", token=False)
    assert status == 401, (status, body)
    fetch(px, "/a/1", "HIT")
    status, body = _admin_call(px, "DELETE", "/api/v1/cache?prefix=/a/&host=test.local")
    assert (status, body) == (200, {"purged": 2}), (status, body)
    fetch(px, "/a/1", "MISS", what="(purged)")
    fetch(px, "/a/2", "MISS", what="(purged)")
    fetch(px, "/ab", "HIT", what="(prefix /a/ does not cover /ab)")
    fetch(px, "/b/1", "HIT", what="(not purged)")
    fetch(px, "/a/1", "HIT", host="other.test", what="(other host: not purged)")
    # without host: every host; /a covers /a/1, /a/2, /ab on test.local and /a/1 on other.test
    status, body = _admin_call(px, "DELETE", "/api/v1/cache?prefix=/a")
    assert (status, body) == (200, {"purged": 4}), (status, body)
    for p, h in keys:
        fetch(px, p, "HIT" if p == "/b/1" else "MISS", host=h)
    status, body = _admin_call(px, "DELETE", "/api/v1/cache?key_prefix=/b&host=TEST.local")
    assert (status, body) == (200, {"purged": 1}), (status, body)
    fetch(px, "/b/1", "MISS")
    status, body = _admin_call(px, "DELETE", "/api/v1/cache?prefix=/nothing")
    assert (status, body) == (200, {"purged": 0}), (status, body)
    # Vary variants go with their base
    o.answer("/v", headers=[("Vary", "Accept-Language")],
             body=lambda req: req.headers.get("accept-language", "-").encode())
    for lang in ("en", "fr"):
        fetch(px, "/v", "MISS", headers={"Accept-Language": lang})
        fetch(px, "/v", "HIT", headers={"Accept-Language": lang})
    status, body = _admin_call(px, "DELETE", "/api/v1/cache?prefix=/v")
    assert status == 200 and body.get("purged", 0) >= 2, (status, body)
    for lang in ("en", "fr"):
        r = fetch(px, "/v", "MISS", headers={"Accept-Language": lang}, what="(variant purged)")
        assert r.body == lang.encode()
    sc = scrape(px)
    assert (mval(sc, "proxyd_cache_purges_total") or 0) > 0, sc.get("proxyd_cache_purges_total")


@harness.timeout(40)
def test_cache_metrics(t):
    o = Origin(t)
    o.answer("/m", body=b"m")
    o.answer("/s/x", body=b"s")
    px = cache_proxy(t, o, routes=[
        {"path": "/s", "upstream": "b", "cache": {"ttl": "1s", "stale_if_error": "30s"}},
        {"path": "/plain", "upstream": "b"},
        {"path": "/", "upstream": "b", "cache": {"ttl": "60s"}}],
        server={"workers": 2}, metrics={})
    sc = scrape(px)
    assert cache_counts(sc) in ({"hit": 0, "miss": 0, "stale": 0, "bypass": 0},
                                {"hit": None, "miss": None, "stale": None, "bypass": None}), (
        cache_counts(sc))
    fetch(px, "/m", "MISS")
    fetch(px, "/m", "HIT")
    fetch(px, "/m", "HIT")
    fetch(px, "/m", "BYPASS", method="POST", body=b"p")
    fetch(px, "/m", "BYPASS", headers={"Authorization": "Basic eDp5"})
    fetch(px, "/s/x", "MISS")
    r = px.get("/plain/y")
    assert r.status == 200 and not r.has("X-Cache"), "a route without cache: %r" % r
    time.sleep(1.5)
    o.answer("/s/x", status=503, body=b"down")
    fetch(px, "/s/x", "STALE")
    want = {"hit": 2, "miss": 2, "stale": 1, "bypass": 2}
    last = {}

    def exact():
        sc = last["sc"] = scrape(px)
        return cache_counts(sc) == want
    try:
        wait_until(exact, 5)
        time.sleep(0.4)
        assert exact()
    except AssertionError:
        raise AssertionError("proxyd_cache_requests_total %r, expected %r; %r" % (
            cache_counts(last["sc"]), want,
            {k: v for k, v in last["sc"].items() if k.startswith("proxyd_cache")}))
    sc = last["sc"]
    assert mval(sc, "proxyd_cache_stores_total") == 2, mval(sc, "proxyd_cache_stores_total")
    assert mval(sc, "proxyd_cache_entries") == 2, mval(sc, "proxyd_cache_entries")
    b = mval(sc, "proxyd_cache_bytes")
    assert b is not None and 2 <= b <= mval(sc, "proxyd_cache_max_bytes"), b
    assert mval(sc, "proxyd_cache_max_bytes") == 100 * 1024 * 1024


def test_cache_config_errors(t):
    base = ('[server]\nlisten = ["127.0.0.1:%d"]\n' % harness.free_port() +
            '[upstreams.b]\nservers = [{ address = "127.0.0.1:9" }]\n'
            '[[routes]]\npath = "/"\nupstream = "b"\n')
    for extra, line, needle in (
            ('cache = {}\n', 8, '"ttl"'),
            ('cache = { ttl = "0s" }\n', 8, '"ttl"'),
            ('cache = { ttl = "5m", bogus = 1 }\n', 8, '"bogus"'),
            ('cache = { ttl = "5m", stale_while_revalidate = "soon" }\n', 8,
             "stale_while_revalidate"),
            ('cache = { ttl = "5m", authorization = "yes" }\n', 8, "authorization"),
            ('compress = "no"\n', 8, '"compress"'),
            ('cache = { ttl = "5m" }\n[cache]\nmax_object_size = "lots"\n', 10,
             "max_object_size"),
            ('[compression]\nalgorithms = ["zstd"]\n', 9, "zstd")):
        r, path = t.check_config(base + extra)
        errs = harness.config_errors(r, path)
        assert r.returncode != 0 and errs, "accepted: %r\n%s" % (extra, r.stderr)
        assert errs[0][0] == line and needle in errs[0][2], (extra, errs)
    r, path = t.check_config(base + 'cache = { ttl = "5m", stale_if_error = "1h" }\n'
                             'compress = false\n[cache]\nmax_size = "8MiB"\n'
                             'max_object_size = "64KiB"\n[compression]\nmin_size = 0\n'
                             'types = ["text/*"]\nalgorithms = ["gzip"]\n')
    assert r.returncode == 0, r.stderr
