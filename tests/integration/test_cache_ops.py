"""The response cache across the proxy's own life: reloads (the same size keeps what is stored, a
new max_size starts empty while the counters go on, a bad reload changes nothing), a worker
killed while it serves, and a binary upgrade (the new master adopts the store)."""
import os
import signal
import urllib.request

import harness
from harness import wait_until
from test_zero_downtime import _install, _installed_binary


def _cached_proxy(t, be, workers=2, max_size="8MiB", binary=None, metrics=False):
    cfg = {
        "server": {"workers": workers},
        "cache": {"max_size": max_size, "max_object_size": "256KiB"},
    }
    if metrics:
        cfg["metrics"] = {}
    return t.proxy_to(be, routes=[{"path": "/", "upstream": "b", "cache": {"ttl": "5m"}}],
                      binary=binary, **cfg)


def _x_cache(px, path):
    r = px.get(path)
    assert r.status == 200, (path, r.status, r.body[:200])
    return r.header("X-Cache")


def _backend_saw(be, path):
    with be.lock:
        return sum(1 for rec in be.requests if rec.get("target") == path)


def _write_config(px, cfg):
    with open(px.config_path, "w") as f:
        f.write(harness.to_toml(cfg))


def _metric(px, name, **labels):
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % px.metrics_port,
                                  timeout=5).read().decode()
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if series == name or (want and series == "%s{%s}" % (name, want)):
            return float(value)
    return None


def _hits_everywhere(px, path, times=12):
    """New connections (spread over the workers by SO_REUSEPORT): every one a HIT."""
    got = [_x_cache(px, path) for _ in range(times)]
    assert got == ["HIT"] * times, got


@harness.timeout(120)
def test_cache_survives_reload_worker_crash_and_binary_upgrade(t):
    binpath = _installed_binary(t)
    be = t.backend()
    px = _cached_proxy(t, be, binary=binpath)
    path = "/echo?kept=1"
    assert _x_cache(px, path) == "MISS"
    _hits_everywhere(px, path)

    r = px.proxyctl("reload", timeout=30)
    assert r.returncode == 0, r
    _hits_everywhere(px, path)

    st = px.status_json()
    victim = [w["pid"] for w in st["workers"] if w.get("state") == "active"][0]
    os.kill(victim, signal.SIGKILL)

    def replaced():
        ws = [w for w in px.status_json()["workers"] if w.get("state") == "active"]
        return len(ws) == 2 and victim not in [w["pid"] for w in ws]
    wait_until(replaced, 10, 0.05, "the killed worker was not replaced")
    _hits_everywhere(px, path)

    master0 = px.status_json()["master_pid"]
    _install(binpath)
    r = px.proxyctl("upgrade", timeout=60)
    assert r.returncode == 0, "upgrade: %d %s %s" % (r.returncode, r.stdout, r.stderr)
    st = px.status_json()
    px.seen_pids.add(st["master_pid"])
    assert st["master_pid"] != master0, st
    wait_until(lambda: not harness.pid_alive(master0), 15, 0.05, "the old master still runs")
    _hits_everywhere(px, path)
    assert _backend_saw(be, "/echo?kept=1") == 1, be.requests


@harness.timeout(60)
def test_cache_reload_with_new_max_size_starts_empty_and_counters_go_on(t):
    be = t.backend()
    px = _cached_proxy(t, be, workers=1, metrics=True)
    assert _x_cache(px, "/echo?a") == "MISS"
    assert _x_cache(px, "/echo?a") == "HIT"
    assert _metric(px, "proxyd_cache_max_bytes") == 8 * 1024 * 1024

    cfg = dict(px.cfg)
    cfg["cache"] = {"max_size": "4MiB", "max_object_size": "256KiB"}
    _write_config(px, cfg)
    r = px.proxyctl("reload", timeout=30)
    assert r.returncode == 0, r
    assert _metric(px, "proxyd_cache_max_bytes") == 4 * 1024 * 1024
    # A new store: what the old one held is gone, the counts are not.
    assert _x_cache(px, "/echo?a") == "MISS"
    assert _x_cache(px, "/echo?a") == "HIT"
    assert _metric(px, "proxyd_cache_requests_total", result="hit") == 2
    assert _metric(px, "proxyd_cache_requests_total", result="miss") == 2
    assert _backend_saw(be, "/echo?a") == 2


@harness.timeout(60)
def test_cache_bad_reload_reports_location_and_keeps_serving_from_cache(t):
    be = t.backend()
    px = _cached_proxy(t, be, workers=1)
    assert _x_cache(px, "/echo?b") == "MISS"
    good = open(px.config_path).read()
    bad = good.replace('ttl = "5m"', 'ttl = "0s"')
    assert bad != good
    with open(px.config_path, "w") as f:
        f.write(bad)
    r = px.proxyctl("reload", timeout=30)
    assert r.returncode == 1, r
    line = [i + 1 for i, text in enumerate(bad.splitlines()) if 'ttl = "0s"' in text][0]
    assert "proxyd.toml:%d:" % line in r.stdout + r.stderr, (r.stdout, r.stderr)
    assert _x_cache(px, "/echo?b") == "HIT"
    assert _backend_saw(be, "/echo?b") == 1


@harness.timeout(60)
def test_cache_vary_and_conditionals_with_a_head_larger_than_16k(t):
    """The request's headers are kept for Vary and the conditional headers, whatever the size
    server.limits allows (here 64 KiB; the parser's default is 16 KiB)."""
    from test_cache import Origin, cache_proxy, xcache
    o = Origin(t)
    o.answer("/v", headers=[("Content-Type", "text/plain"), ("Vary", "X-Big"),
                            ("ETag", '"v1"')], body=b"varies by a big header")
    px = cache_proxy(t, o, server={"limits": {"max_header_size": "64KiB"}})
    # A key (variant values included) is at most 16 KiB; the head around it is larger.
    big = {"X-Big": "b" * 8000, "X-Filler": "f" * 30000}
    assert xcache(px.get("/v", headers=big)) == "MISS"
    r = px.get("/v", headers=big)
    assert (r.status, xcache(r), r.body) == (200, "HIT", b"varies by a big header"), r
    r = px.get("/v", headers=dict(big, **{"If-None-Match": '"v1"'}))
    assert (r.status, xcache(r)) == (304, "HIT"), r
    other = dict(big, **{"X-Big": "c" * 8000})
    assert xcache(px.get("/v", headers=other)) == "MISS"
    assert xcache(px.get("/v", headers=other)) == "HIT"
    assert o.count("/v") == 2
