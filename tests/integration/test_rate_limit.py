"""Rate limits ([rate_limits.NAME], a route's rate_limit = "NAME"), against CONTRACT.md.

Semantics checked: a token bucket of capacity `burst` refilled at requests_per_minute/60 per
second, exact across the workers of a host (store = "local", shared memory) and across hosts
(store = "redis", one Lua script per decision in a real redis-server started by the test on
127.0.0.1). Every answer of a limited route carries RateLimit-Limit / RateLimit-Remaining /
RateLimit-Reset; a denial is a 429 proxy error with Retry-After >= 1.

Keys: "ip" (the client address), "header:NAME" (a request without the header, or with it empty,
is keyed as "": all such requests share one bucket), "jwt:CLAIM" (a claim of the verified
token).
"""

import base64
import hashlib
import hmac
import json
import os
import threading
import time

import harness
from harness import Conn, assert_error, build_request, free_port, port_accepts, wait_until

REDIS_SERVER = "/usr/bin/redis-server"


# ----------------------------------------------------------------------------------------------
# helpers

def _limited_proxy(t, be, limits, routes=None, workers=2, name="proxyd", **cfg):
    """proxyd in front of `be` with the given [rate_limits] and routes (default: "/" limited by
    the first limit)."""
    if routes is None:
        routes = [{"path": "/", "upstream": "b", "rate_limit": sorted(limits)[0]}]
    return t.proxy_to(be, routes=routes, rate_limits=limits, name=name,
                      server={"workers": workers}, **cfg)


def _burst(port, n_conns, per_conn, path="/echo", headers=None):
    """n_conns connections opened first, then all at once send `per_conn` pipelined requests
    each; returns (responses, seconds from the first send to the last response)."""
    conns = [Conn(port, timeout=15) for _ in range(n_conns)]
    results = [None] * n_conns
    errors = []
    barrier = threading.Barrier(n_conns + 1)

    def run(i):
        c = conns[i]
        try:
            barrier.wait(10)
            c.send(build_request("GET", path, headers) * per_conn)
            results[i] = [c.read_response() for _ in range(per_conn)]
        except Exception as e:       # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n_conns)]
    for th in threads:
        th.start()
    barrier.wait(10)
    t0 = time.monotonic()
    for th in threads:
        th.join(30)
    elapsed = time.monotonic() - t0
    for c in conns:
        c.close()
    assert not errors, "requests failed: %s" % errors[:5]
    return [r for rs in results for r in rs], elapsed


def _ints(resp, name):
    v = resp.header(name)
    assert v is not None and v.isdigit(), "%s: %r in %r" % (name, v, resp.headers)
    return int(v)


def _check_allowed(resp, burst):
    assert resp.status == 200, resp
    assert _ints(resp, "RateLimit-Limit") == burst
    assert 0 <= _ints(resp, "RateLimit-Remaining") < burst
    assert 1 <= _ints(resp, "RateLimit-Reset")
    assert not resp.has("Retry-After"), resp


def _check_denied(resp, burst):
    assert_error(resp, 429)
    assert _ints(resp, "Retry-After") >= 1
    assert _ints(resp, "RateLimit-Limit") == burst
    assert _ints(resp, "RateLimit-Remaining") == 0
    assert _ints(resp, "RateLimit-Reset") >= 1


def _statuses(px, n, path="/echo", headers=None, port=None):
    """n requests in a row on one keep-alive connection: the list of statuses."""
    with px.conn(port=port) as c:
        return [c.request("GET", path, headers).status for _ in range(n)]


def _redis(t, password=None):
    """A redis-server of the test's own on a free 127.0.0.1 port (killed by pid at cleanup)."""
    assert os.access(REDIS_SERVER, os.X_OK), (
        "%s is not installed: the redis store tests need it (scripts/setup installs "
        "redis-server)" % REDIS_SERVER)
    for _ in range(3):
        port = free_port()
        args = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", t.tmp]
        if password:
            args += ["--requirepass", password]
        log = open(t.path("redis-%d.log" % port), "wb")
        proc = t.spawn(args, stdout=log, stderr=log)
        try:
            wait_until(lambda: port_accepts(port) or proc.poll() is not None, timeout=5)
        except AssertionError:
            pass
        if proc.poll() is None and port_accepts(port):
            return proc, port
        proc.kill()
    raise AssertionError("redis-server did not start")


def _jwt(secret, claims):
    """An HS256 token (stdlib only)."""
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), ("%s.%s" % (head, body)).encode(), hashlib.sha256).digest()
    return "%s.%s.%s" % (head, body, b64(sig))


# ----------------------------------------------------------------------------------------------
# (a) local store: exact across workers

@harness.timeout(60)
def test_rate_limit_local_exact_across_workers(t):
    """workers = 2, burst 20, 60 rpm: 100 requests at once over 50 connections -> exactly 20
    allowed (plus one per second the burst took, if it took that long), the rest 429."""
    be = t.backend()
    px = _limited_proxy(t, be, {"per_ip": {"key": "ip", "requests_per_minute": 60,
                                           "burst": 20}})
    assert len(px.status_json()["workers"]) == 2
    resps, elapsed = _burst(px.port, 50, 2)
    ok = [r for r in resps if r.status == 200]
    denied = [r for r in resps if r.status != 200]
    print("report: %d allowed, %d denied in %.3fs (2 workers, burst 20)" % (
        len(ok), len(denied), elapsed))
    refills = int(elapsed)        # one token per second after the first request
    assert 20 <= len(ok) <= 20 + refills, "%d allowed in %.2fs, burst 20" % (len(ok), elapsed)
    assert len(resps) == 100
    for r in ok:
        _check_allowed(r, 20)
    for r in denied:
        _check_denied(r, 20)
    if len(ok) == 20:
        # Each remaining count was handed out once: the two workers shared one bucket.
        assert sorted(_ints(r, "RateLimit-Remaining") for r in ok) == list(range(20))
    assert be.served == len(ok), "the backend saw %d requests, %d were allowed" % (
        be.served, len(ok))
    totals = px.status_json()["totals"]
    assert totals["rate_limited"] == len(denied), totals
    assert totals["rate_limit_table"]["denials"] == len(denied), totals


# ----------------------------------------------------------------------------------------------
# (b) header keys: independent buckets; a request without the header is keyed as ""

def test_rate_limit_header_keys(t):
    be = t.backend()
    px = _limited_proxy(t, be, {
        "by_key": {"key": "header:X-Api-Key", "requests_per_minute": 6, "burst": 3},
        "other": {"key": "header:X-Api-Key", "requests_per_minute": 6, "burst": 3},
    }, routes=[{"path": "/a", "upstream": "b", "rate_limit": "by_key"},
               {"path": "/b", "upstream": "b", "rate_limit": "by_key"},
               {"path": "/c", "upstream": "b", "rate_limit": "other"},
               {"path": "/free", "upstream": "b"}])
    assert _statuses(px, 5, "/a", {"X-Api-Key": "alice"}) == [200, 200, 200, 429, 429]
    assert _statuses(px, 5, "/a", {"X-Api-Key": "bob"}) == [200, 200, 200, 429, 429]
    # The key is the header's value, case-sensitive.
    assert _statuses(px, 1, "/a", {"X-Api-Key": "Alice"}) == [200]
    # Two routes naming one limit share its buckets; another limit has its own.
    assert _statuses(px, 1, "/b", {"X-Api-Key": "alice"}) == [429]
    assert _statuses(px, 3, "/c", {"X-Api-Key": "alice"}) == [200, 200, 200]
    # Without the header: keyed as "", one bucket shared by every such request (from any
    # connection), which an empty header value also uses.
    assert _statuses(px, 2, "/a") == [200, 200]
    assert _statuses(px, 1, "/a", {"X-Api-Key": ""}) == [200]
    r = px.get("/a")
    _check_denied(r, 3)
    # A route without rate_limit is not limited and carries no RateLimit-* headers.
    r = px.get("/free", headers={"X-Api-Key": "alice"})
    assert r.status == 200 and not r.has("RateLimit-Limit"), r


def test_rate_limit_ip_key_and_headers(t):
    """key = "ip": every connection from 127.0.0.1 shares a bucket; numbers in the headers."""
    be = t.backend()
    px = _limited_proxy(t, be, {"per_ip": {"key": "ip", "requests_per_minute": 6, "burst": 4}},
                        workers=1)
    remaining = []
    for _ in range(4):
        r = px.get("/echo")           # a new connection each time
        _check_allowed(r, 4)
        remaining.append(_ints(r, "RateLimit-Remaining"))
        assert _ints(r, "RateLimit-Reset") <= 40
    assert remaining == [3, 2, 1, 0]
    r = px.get("/echo")
    _check_denied(r, 4)
    # 6 rpm: one token every 10 s; the bucket is full again 40 s after the first request.
    assert 9 <= _ints(r, "Retry-After") <= 10, r.headers
    assert 39 <= _ints(r, "RateLimit-Reset") <= 40, r.headers
    assert be.served == 4


# ----------------------------------------------------------------------------------------------
# (c) refill

def test_rate_limit_refill(t):
    """600 rpm = one token every 100 ms, never more than burst."""
    be = t.backend()
    px = _limited_proxy(t, be, {"fast": {"key": "ip", "requests_per_minute": 600, "burst": 2}})
    with px.conn() as c:
        st = [c.request("GET", "/echo").status for _ in range(3)]
        assert st == [200, 200, 429], st
        time.sleep(0.15)
        st = [c.request("GET", "/echo").status for _ in range(2)]
        assert st == [200, 429], st
        r = c.request("GET", "/echo")
        assert r.status == 429 and _ints(r, "Retry-After") == 1, r
        time.sleep(1.0)                # 10 tokens' worth, but the bucket holds 2
        st = [c.request("GET", "/echo").status for _ in range(3)]
        assert st == [200, 200, 429], st


# ----------------------------------------------------------------------------------------------
# (d) redis store: shared across hosts; Redis down -> on_redis_error

@harness.timeout(60)
def test_rate_limit_redis_shared_by_two_proxies(t):
    password = "rl-secret-%d" % os.getpid()
    redis, port = _redis(t, password)
    pw_file = t.write("redis.pw", password + "\n")
    be = t.backend()

    def limit(on_error, burst):
        return {"key": "header:X-Api-Key", "requests_per_minute": 6, "burst": burst,
                "store": "redis", "redis": "127.0.0.1:%d" % port,
                "redis_password_file": pw_file, "on_redis_error": on_error,
                "redis_timeout": "250ms"}

    limits = {"shared_allow": limit("allow", 10), "shared_deny": limit("deny", 10)}
    routes = [{"path": "/allow", "upstream": "b", "rate_limit": "shared_allow"},
              {"path": "/deny", "upstream": "b", "rate_limit": "shared_deny"}]
    px1 = _limited_proxy(t, be, limits, routes, name="px1")
    px2 = _limited_proxy(t, be, limits, routes, name="px2")

    # Two hosts, one bucket: 15 requests to each, concurrently -> 10 allowed in all.
    out = {}

    def hammer(px):
        out[px.name] = _burst(px.port, 5, 3, "/allow", {"X-Api-Key": "k1"})[0]
    ths = [threading.Thread(target=hammer, args=(px,)) for px in (px1, px2)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(30)
    resps = out["px1"] + out["px2"]
    ok = [r for r in resps if r.status == 200]
    print("redis store: %d + %d allowed of 30 (burst 10)" % (
        sum(r.status == 200 for r in out["px1"]), sum(r.status == 200 for r in out["px2"])))
    assert len(ok) == 10, [r.status for r in resps]
    for r in ok:
        _check_allowed(r, 10)
    for r in resps:
        if r.status != 200:
            _check_denied(r, 10)
    assert sorted(_ints(r, "RateLimit-Remaining") for r in ok) == list(range(10))
    # The other limit and the other keys are untouched.
    assert _statuses(px1, 1, "/deny", {"X-Api-Key": "k1"}) == [200]
    assert _statuses(px2, 1, "/allow", {"X-Api-Key": "k2"}) == [200]

    # Redis goes away: "allow" lets requests through, "deny" answers 503.
    redis.kill()
    redis.wait(5)
    t0 = time.monotonic()
    for px in (px1, px2):
        for _ in range(3):
            r = px.get("/allow", headers={"X-Api-Key": "k1"})   # k1 was exhausted: still 200
            assert r.status == 200, r
            assert_error(px.get("/deny", headers={"X-Api-Key": "k3"}), 503)
    took = time.monotonic() - t0
    print("12 requests with Redis down answered in %.2fs" % took)
    assert took < 12 * 0.25 + 2, "requests waited too long for a dead Redis: %.2fs" % took
    for px in (px1, px2):
        wait_until(lambda: "127.0.0.1:%d" % port in px.output(), timeout=3,
                   msg="the error log does not mention the Redis failure:\n" + px.output())
        log = px.output()
        assert "redis" in log.lower(), log
        assert password not in log, "the Redis password is in the log"
        assert password not in open(px.config_path).read()


# ----------------------------------------------------------------------------------------------
# (e) jwt:CLAIM keys

def test_rate_limit_jwt_claim_key(t):
    secret = "jwt-secret-for-rate-limits"
    secret_file = t.write("jwt.secret", secret + "\n")
    be = t.backend()
    px = _limited_proxy(
        t, be, {"per_user": {"key": "jwt:sub", "requests_per_minute": 6, "burst": 2}},
        routes=[{"path": "/", "upstream": "b", "auth_required": True,
                 "rate_limit": "per_user"}],
        auth={"jwt": {"algorithms": ["HS256"], "secret_file": secret_file}})
    now = int(time.time())

    def bearer(sub):
        return {"Authorization": "Bearer " + _jwt(secret, {"sub": sub, "iat": now,
                                                           "exp": now + 3600})}
    assert _statuses(px, 3, "/echo", bearer("alice")) == [200, 200, 429]
    assert _statuses(px, 3, "/echo", bearer("bob")) == [200, 200, 429]
    # Another token for the same subject shares the subject's bucket.
    other = {"Authorization": "Bearer " + _jwt(secret, {"sub": "alice", "iat": now - 1,
                                                         "exp": now + 60})}
    r = px.get("/echo", headers=other)
    _check_denied(r, 2)
    # No token on an auth_required route: 401 before any rate limiting.
    assert_error(px.get("/echo"), 401)
