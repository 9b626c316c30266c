"""Errors the proxy produces itself: 400 (malformed and ambiguous requests, then close), 502
(refused, reset, invalid response, connect timeout), 503 (no servers), 504 (no response head in
time), upstream_idle, and no input crashing a worker."""

import os
import random
import socket
import time

from harness import Closed, assert_error, build_request, wait_until


def _expect_400(t, px, be, raw, forwarded_ok=False):
    """raw request -> 400 JSON, connection closed, nothing reached the backend."""
    before = be.served
    with px.conn(timeout=5) as c:
        c.send(raw)
        try:
            r = c.read_response()
        except (Closed, ConnectionResetError) as e:
            raise AssertionError("no response to %r: %s" % (raw[:120], e))
        try:
            assert_error(r, 400)
        except AssertionError as e:
            raise AssertionError("for %r: %s" % (raw[:120], e))
        assert c.wait_closed(3), "connection not closed after 400 for %r" % raw[:120]
    if not forwarded_ok:
        time.sleep(0.05)
        assert be.served == before, "%r was forwarded to the backend" % raw[:120]


def _px(t):
    be = t.backend()
    return t.proxy_to(be), be


def test_400_garbage(t):
    px, be = _px(t)
    for raw in (b"HELLO\r\n\r\n",
                b"GET\r\n\r\n",
                b"GET /echo\r\nHost: x\r\n\r\n",
                b"GET /echo HTTP/1.1 extra\r\nHost: x\r\n\r\n",
                b"GET /echo HTTP/9.9x\r\nHost: x\r\n\r\n",
                b"GET /echo FTP/1.1\r\nHost: x\r\n\r\n",
                b"G(T /echo HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /echo HTTP/1.1\r\nNo colon here\r\n\r\n",
                b"GET /echo HTTP/1.1\r\n: empty-name\r\n\r\n",
                b"GET /echo HTTP/1.1\r\nBad\x01Name: x\r\n\r\n",
                b"GET /echo HTTP/1.1\r\nX: a\x00b\r\n\r\n",
                b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40 + b"\r\n\r\n"):
        _expect_400(t, px, be, raw)
    assert px.get("/echo").status == 200


def test_400_content_length_and_transfer_encoding(t):
    px, be = _px(t)
    _expect_400(t, px, be, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    _expect_400(t, px, be, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                           b"Content-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n")


def test_400_bad_content_length(t):
    px, be = _px(t)
    for cl in (b"Content-Length: 5\r\nContent-Length: 6", b"Content-Length: 5, 6",
               b"Content-Length: -1", b"Content-Length: abc", b"Content-Length: +5",
               b"Content-Length: 0x5"):
        _expect_400(t, px, be, b"POST /echo HTTP/1.1\r\nHost: x\r\n" + cl + b"\r\n\r\nhello")


def test_400_bad_transfer_encoding(t):
    px, be = _px(t)
    for te in (b"gzip", b"chunked, gzip", b"xchunked", b"chunked\r\nTransfer-Encoding: gzip"):
        _expect_400(t, px, be, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + te +
                    b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")


def test_400_bad_chunk_size(t):
    px, be = _px(t)
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    for body in (b"zz\r\nhello\r\n0\r\n\r\n", b"-5\r\nhello\r\n0\r\n\r\n",
                 b"ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n", b"5\r\nhelloXX0\r\n\r\n"):
        # the head may already have gone upstream when the bad chunk is seen
        _expect_400(t, px, be, head + body, forwarded_ok=True)


def test_400_obs_fold(t):
    px, be = _px(t)
    _expect_400(t, px, be, b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n")
    _expect_400(t, px, be, b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n")


def test_400_bare_cr(t):
    px, be = _px(t)
    _expect_400(t, px, be, b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n")
    _expect_400(t, px, be, b"GET /echo HTTP/1.1\rHost: x\r\n\r\n")


def test_400_whitespace_before_colon(t):
    px, be = _px(t)
    _expect_400(t, px, be, b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n")
    _expect_400(t, px, be, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello")
    _expect_400(t, px, be, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding\t: chunked"
                           b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")


def test_400_keeps_earlier_pipelined_responses(t):
    """A malformed request after a good one on the same connection: 200, then 400, then close."""
    px, be = _px(t)
    with px.conn(timeout=5) as c:
        c.send(build_request("GET", "/echo?good") + b"BROKEN REQUEST\r\n\r\n")
        r1 = c.read_response()
        assert r1.status == 200 and r1.json()["path"] == "/echo?good", r1
        assert_error(c.read_response(), 400)
        assert c.wait_closed(3)


def test_502_upstream_refused(t):
    be = t.backend()
    px = t.proxy_to(t.refusing_address(), routes=[
        {"path": "/ok", "upstream": "good"}, {"path": "/", "upstream": "b"}],
        upstreams={"good": {"servers": [{"address": be.address}]}})
    pids = px.worker_pids()
    for _ in range(3):
        assert_error(px.get("/x"), 502)
    # Three consecutive failures open the server's circuit (passive health): with no server
    # left, the answer is 503 until the backoff lets a trial request through.
    with px.conn() as c:       # the client connection survives a proxy error
        assert_error(c.request("GET", "/x"), 503)
        assert c.request("GET", "/ok/echo").status == 200
    assert px.get("/ok/echo").status == 200, "worker stopped serving after a 502"
    assert px.worker_pids() == pids, "worker pids changed: %r -> %r" % (pids, px.worker_pids())


def test_502_upstream_reset(t):
    be = t.backend()
    px = t.proxy_to(be)
    assert_error(px.get("/reset"), 502)
    assert px.get("/echo").status == 200


def test_502_upstream_invalid_response(t):
    be = t.backend()
    px = t.proxy_to(be)
    assert_error(px.get("/invalid"), 502)
    assert px.get("/echo").status == 200


def test_502_upstream_connect_timeout(t):
    """A server whose connect hangs: 502 after timeouts.upstream_connect."""
    px = t.proxy_to(t.blackhole_address(), server={"timeouts": {"upstream_connect": "500ms"}})
    t0 = time.monotonic()
    r = px.get("/x", timeout=10)
    took = time.monotonic() - t0
    assert_error(r, 502)
    assert 0.3 <= took <= 3, "502 after %.2fs (upstream_connect 500ms)" % took


def test_502_one_bad_server_others_serve(t):
    """With one refusing and one good server, every request gets an answer (502 or 200) and
    the good server keeps being used."""
    be = t.backend()
    px = t.proxy_to(t.refusing_address(), be)
    codes = [px.get("/echo").status for _ in range(10)]
    assert set(codes) <= {200, 502}, codes
    assert 200 in codes and be.served >= 5, codes


def test_503_no_servers(t):
    px = t.proxy_to(t.backend(), routes=[{"path": "/none", "upstream": "empty"},
                                         {"path": "/", "upstream": "b"}],
                    upstreams={"empty": {"servers": []}})
    assert_error(px.get("/none"), 503)
    assert px.get("/echo").status == 200


def test_504_upstream_response_timeout(t):
    be = t.backend()
    px = t.proxy_to(be, server={"timeouts": {"upstream_response": "1s"}})
    t0 = time.monotonic()
    r = px.get("/hang", timeout=10)
    took = time.monotonic() - t0
    assert_error(r, 504)
    assert 0.8 <= took <= 3, "504 after %.2fs (upstream_response 1s)" % took
    assert px.get("/slow/300").status == 200
    assert px.get("/echo").status == 200


def test_upstream_idle_timeout(t):
    """Response head sent, then the body stalls: the client connection is cut after
    timeouts.upstream_idle (the response can no longer become an error status)."""
    px = t.proxy_to(t.backend(), server={"timeouts": {"upstream_idle": "1s",
                                                      "upstream_response": "10s"}})
    with px.conn(timeout=10) as c:
        c.send(build_request("GET", "/stall"))
        head = c.rd.read_head()
        assert b" 200 " in head.split(b"\r\n")[0], head
        t0 = time.monotonic()
        assert c.wait_closed(5), "stalled response still open after 5s (upstream_idle 1s)"
        took = time.monotonic() - t0
        assert took <= 3.5, "cut after %.1fs" % took
    assert px.get("/echo").status == 200


def test_malformed_inputs_do_not_crash_worker(t):
    """Random and hostile inputs: the worker (same pid) keeps serving."""
    px, be = _px(t)
    pids = px.worker_pids()
    rnd = random.Random(1234)
    inputs = [os.urandom(n) for n in (1, 10, 100, 1000, 20000)]
    inputs += [bytes(rnd.randrange(32, 127) for _ in range(500)) + b"\r\n\r\n"]
    inputs += [b"GET /" + b"A" * 100000 + b" HTTP/1.1\r\n\r\n",
               b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 5000 + b"\r\n",
               b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"1;" + b"e" * 20000 + b"\r\nx\r\n0\r\n\r\n",
               b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n0\r\n" + b"T: x\r\n" * 3000 + b"\r\n",
               b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 50,
               b"\r\n" * 1000, b"\x00" * 1000, b"GET / HTTP/1.1\r\n\r\n\r\n\r\n",
               b"GET http://other.example/abs HTTP/1.1\r\nHost: x\r\n\r\n",
               b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
               b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: x\r\n\r\n"]
    for i in range(40):   # random mutations of a valid request
        base = bytearray(build_request("POST", "/echo?x=1", {"X-A": "b"}, b"hello"))
        for _ in range(rnd.randrange(1, 6)):
            base[rnd.randrange(len(base))] = rnd.randrange(256)
        inputs.append(bytes(base))
    for data in inputs:
        try:
            s = socket.create_connection(("127.0.0.1", px.port), timeout=2)
        except OSError as e:
            raise AssertionError("proxy stopped accepting: %s" % e)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and s.recv(65536):
                pass
        except OSError:
            pass
        finally:
            s.close()
    assert px.get("/echo").status == 200
    assert px.worker_pids() == pids, "a worker died: %r -> %r" % (pids, px.worker_pids())
    wait_until(lambda: px.proc.poll() is None, 1)


def test_every_proxy_error_format(t):
    """Each status the proxy produces itself: JSON body with request_id == X-Request-Id, and
    server.response_headers added."""
    be = t.backend()
    px = t.proxy_to(be, routes=[{"path": "/dead", "upstream": "dead"},
                                {"path": "/empty", "upstream": "empty"},
                                {"path": "/app", "upstream": "b", "strip_prefix": True}],
                    upstreams={"dead": {"servers": [{"address": t.refusing_address()}]},
                               "empty": {"servers": []}},
                    server={"response_headers": {"X-RH": "on"},
                            "limits": {"max_body_size": 100, "max_uri_size": 512,
                                       "max_header_size": 2048},
                            "timeouts": {"header": "1s", "upstream_response": "1s"}})
    cases = {
        400: b"NOT HTTP AT ALL\r\n\r\n",
        404: build_request("GET", "/nothing"),
        408: b"GET /app/echo HTTP/1.1\r\nHost: x\r\n",
        413: build_request("POST", "/app/echo", body=b"x" * 101),
        414: build_request("GET", "/app/" + "u" * 600),
        431: build_request("GET", "/app/echo", headers={"X-Big": "h" * 3000}),
        502: build_request("GET", "/dead/x"),
        503: build_request("GET", "/empty/x"),
        504: build_request("GET", "/app/hang"),
    }
    bad = []
    for status, raw in cases.items():
        try:
            r = px.send_raw(raw, timeout=5)
            assert_error(r, status)
            assert r.header("X-RH") == "on", "no response header X-RH on %d" % status
        except Exception as e:
            bad.append("%d: %s" % (status, e))
    assert not bad, "\n".join(bad)


def test_400_host_rules(t):
    """HTTP/1.1 without Host, or with two Host headers (routing would be ambiguous): 400."""
    px, be = _px(t)
    _expect_400(t, px, be, b"GET /echo HTTP/1.1\r\n\r\n")
    _expect_400(t, px, be, b"GET /echo HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n")
