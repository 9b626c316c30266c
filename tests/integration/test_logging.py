"""Access log (json and text, one line per request) and the error log file."""

import json
import os
import time

from harness import wait_until


def _lines(path):
    if not os.path.exists(path):
        return []
    with open(path, errors="replace") as f:
        return [l for l in f.read().splitlines() if l.strip()]


def _wait_lines(path, n, timeout=2.5):
    return wait_until(lambda: len(_lines(path)) >= n and _lines(path), timeout, 0.05,
                      "access log %s has %d lines, expected %d" % (path, len(_lines(path)), n))


def test_access_log_json(t):
    be = t.backend()
    px = t.proxy_to(be, log={"format": "json"})
    r1 = px.get("/echo?x=1", headers={"X-Request-Id": "log-test-1"})
    r2 = px.request("POST", "/echo", body=b"q" * 1000, headers={"X-Request-Id": "log-test-2"})
    r3 = px.get("/status/404")
    assert (r1.status, r2.status, r3.status) == (200, 200, 404)
    lines = _wait_lines(px.access_log, 3)
    time.sleep(0.3)
    lines = _lines(px.access_log)
    assert len(lines) == 3, "expected exactly 3 lines (one per request): %r" % lines
    recs = []
    for l in lines:
        try:
            recs.append(json.loads(l))
        except ValueError:
            raise AssertionError("access log line is not JSON: %r" % l)
    keys = {"time", "client", "method", "path", "status", "bytes_in", "bytes_out",
            "duration_ms", "upstream", "request_id"}
    for rec in recs:
        assert keys <= set(rec), "missing keys %r in %r" % (keys - set(rec), rec)
    by_id = {rec["request_id"]: rec for rec in recs}
    a = by_id["log-test-1"]
    assert a["method"] == "GET" and a["path"].startswith("/echo"), a
    assert int(a["status"]) == 200, a
    assert "127.0.0.1" in str(a["client"]), a
    assert str(be.port) in str(a["upstream"]), a
    assert float(a["duration_ms"]) >= 0, a
    assert int(a["bytes_out"]) >= len(r1.body), a
    b = by_id["log-test-2"]
    assert b["method"] == "POST" and int(b["bytes_in"]) >= 1000, b
    c = by_id[r3.header("X-Request-Id")]
    assert int(c["status"]) == 404, c


def test_access_log_text(t):
    px = t.proxy_to(t.backend(), log={"format": "text"})
    r = px.get("/echo?text=1", headers={"X-Request-Id": "text-log-1"})
    assert r.status == 200
    lines = _wait_lines(px.access_log, 1)
    time.sleep(0.2)
    lines = _lines(px.access_log)
    assert len(lines) == 1, lines
    l = lines[0]
    for part in ("GET", "/echo", "200", "text-log-1"):
        assert part in l, "%r not in access log line %r" % (part, l)


def test_access_log_proxy_errors(t):
    """Requests answered by the proxy itself are logged too, with their status."""
    px = t.proxy_to(t.refusing_address(), routes=[{"path": "/api", "upstream": "b"}],
                    log={"format": "json"})
    r404 = px.get("/nothing")
    r502 = px.get("/api/x")
    assert (r404.status, r502.status) == (404, 502)
    _wait_lines(px.access_log, 2)
    recs = {}
    for l in _lines(px.access_log):
        rec = json.loads(l)
        recs[rec["request_id"]] = rec
    assert int(recs[r404.header("X-Request-Id")]["status"]) == 404, recs
    assert int(recs[r502.header("X-Request-Id")]["status"]) == 502, recs


def test_access_log_off(t):
    px = t.proxy_to(t.backend(), log={"access_log": ""})
    assert px.get("/echo").status == 200
    time.sleep(0.5)
    assert not _lines(px.access_log), "access log written although access_log = \"\""


def test_error_log_file(t):
    """error_log goes to the configured file; an upstream failure is logged there."""
    px = t.proxy_to(t.refusing_address(), log={"level": "info"})
    assert px.get("/x").status == 502
    wait_until(lambda: os.path.exists(px.error_log) and os.path.getsize(px.error_log) > 0, 2.5,
               msg="nothing in the error log %s" % px.error_log)
