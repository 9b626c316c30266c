"""server.timeouts and server.limits seen from the client: 408, 413, 414, 431, keep-alive and
body timeouts, max_connections."""

import time

from harness import Closed, assert_error, build_request, chunked


def test_408_header_timeout(t):
    be = t.backend()
    px = t.proxy_to(be, server={"timeouts": {"header": "1s"}})
    with px.conn() as c:
        t0 = time.monotonic()
        c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n")   # head never completed
        r = c.read_response()
        took = time.monotonic() - t0
        assert_error(r, 408)
        assert 0.8 <= took <= 3, "408 after %.2fs (header timeout 1s)" % took
        assert c.wait_closed(2), "connection not closed after 408"
    assert be.served == 0


def test_408_header_trickle(t):
    """The header timeout bounds the whole head, not the gap between bytes (slowloris)."""
    px = t.proxy_to(t.backend(), server={"timeouts": {"header": "1s"}})
    with px.conn() as c:
        t0 = time.monotonic()
        data = b"GET /echo HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 100
        got = b""
        for i in range(len(data)):
            try:
                c.send(data[i:i + 1])
            except OSError:
                break
            got = c.read_some(0.1)
            if got or time.monotonic() - t0 > 5:
                break
        took = time.monotonic() - t0
        assert got.startswith(b"HTTP/1.1 408") or got.startswith(b"HTTP/1.0 408"), (
            "no 408 while trickling for %.1fs: %r" % (took, got[:100]))
        assert took <= 3, "408 only after %.1fs" % took


def test_413_content_length(t):
    be = t.backend()
    px = t.proxy_to(be, server={"limits": {"max_body_size": 1000}})
    r = px.send_raw(build_request("POST", "/echo", body=b"x" * 1001), check_close=True)
    assert_error(r, 413)
    ok = px.request("POST", "/echo", body=b"x" * 1000)
    assert ok.status == 200 and ok.json()["body_length"] == 1000
    # decided from Content-Length up front: no body needs to be sent (Expect or not)
    with px.conn(timeout=5) as c:
        c.send(build_request("POST", "/echo", headers={"Content-Length": str(50 << 20),
                                                       "Expect": "100-continue"}))
        assert_error(c.read_response(), 413)
    with px.conn(timeout=5) as c:
        c.send(build_request("PUT", "/echo", headers={"Content-Length": str(50 << 20)}))
        assert_error(c.read_response(), 413)
    assert be.served == 1, "only the request within the limit may reach the backend"


def test_413_chunked_body_grows(t):
    """A chunked body that grows past the limit before any response: 413."""
    be = t.backend()
    px = t.proxy_to(be, server={"limits": {"max_body_size": 10000}})
    with px.conn(timeout=10) as c:   # trickled: the 413 comes once the limit is passed
        c.send(build_request("POST", "/echo", headers=[("Transfer-Encoding", "chunked")]))
        sent = 0
        got = b""
        for _ in range(30):
            try:
                c.send(b"3e8\r\n" + b"z" * 1000 + b"\r\n")
                sent += 1000
            except OSError:
                break
            got = c.read_some(0.05)
            if got:
                break
        assert got, "no answer after %d chunked body bytes (limit 10000)" % sent
        c.rd.buf[:0] = got
        assert_error(c.read_response(), 413)
        assert sent > 10000, "answered after only %d bytes" % sent
    with px.conn(timeout=10) as c:
        body = chunked(b"z" * 20000, sizes=(1000,))
        c.send(build_request("POST", "/echo", headers=[("Transfer-Encoding", "chunked")],
                             body=body))
        try:
            r = c.read_response()
        except (Closed, ConnectionResetError) as e:
            raise AssertionError("no 413 for a 20000-byte chunked body (limit 10000): %s" % e)
        assert_error(r, 413)
    ok = px.request("POST", "/echo", headers=[("Transfer-Encoding", "chunked")],
                    body=chunked(b"z" * 9000))
    assert ok.status == 200 and ok.json()["body_length"] == 9000, ok


def test_413_chunked_after_response_started_closes(t):
    """Once the response has started, a chunked body growing past the limit closes the
    connection."""
    be = t.backend()
    px = t.proxy_to(be, server={"limits": {"max_body_size": 10000}})
    with px.conn(timeout=10) as c:
        c.send(build_request("POST", "/early", headers=[("Transfer-Encoding", "chunked")]))
        c.send(b"3e8\r\n" + b"z" * 1000 + b"\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body == b"early\n", r
        closed = False
        for _ in range(30):
            try:
                c.send(b"3e8\r\n" + b"z" * 1000 + b"\r\n")
            except OSError:
                closed = True
                break
            time.sleep(0.02)
        assert closed or c.wait_closed(3), "connection still open after 30000 body bytes " \
                                           "(limit 10000)"


def test_414_uri_too_long(t):
    be = t.backend()
    px = t.proxy_to(be, server={"limits": {"max_uri_size": 1024}})
    r = px.get("/echo?" + "a" * 2000)
    assert_error(r, 414)
    assert px.get("/echo?" + "a" * 900).status == 200
    assert be.served == 1


def test_431_header_too_large(t):
    be = t.backend()
    px = t.proxy_to(be, server={"limits": {"max_header_size": 4096}})
    assert_error(px.get("/echo", headers={"X-Big": "b" * 8000}), 431)
    many = [("X-H%d" % i, "v" * 50) for i in range(100)]
    assert_error(px.get("/echo", headers=many), 431)
    assert px.get("/echo", headers={"X-Big": "b" * 2000}).status == 200
    assert be.served == 1


def test_keepalive_timeout(t):
    px = t.proxy_to(t.backend(), server={"timeouts": {"keepalive": "1s"}})
    with px.conn() as c:
        for _ in range(4):           # busy connection: requests 0.4 s apart stay on it
            assert c.request("GET", "/echo").status == 200
            time.sleep(0.4)
        t0 = time.monotonic()
        assert c.wait_closed(4), "idle keep-alive connection not closed (keepalive 1s)"
        took = time.monotonic() - t0
        assert 0.3 <= took <= 3, "closed after %.1fs of idleness (keepalive 1s)" % took


def test_body_timeout(t):
    """A client that stops sending its body is cut off after timeouts.body."""
    px = t.proxy_to(t.backend(), server={"timeouts": {"body": "1s"}})
    with px.conn() as c:
        c.send(build_request("POST", "/echo", headers={"Content-Length": "100"}) + b"0123456789")
        t0 = time.monotonic()
        assert c.wait_closed(5), "connection with a stalled body still open after 5s (body 1s)"
        took = time.monotonic() - t0
        assert took <= 3.5, "closed after %.1fs" % took


def test_max_connections(t):
    """1 worker, max_connections = 3: a fourth connection waits until one of three closes."""
    px = t.proxy_to(t.backend(), server={"max_connections": 3})
    cs = [px.conn(timeout=5) for _ in range(3)]
    fourth = None
    try:
        for c in cs:
            assert c.request("GET", "/echo").status == 200
        fourth = px.conn(timeout=5)
        fourth.send(build_request("GET", "/echo?fourth"))
        early = fourth.read_some(1.0)
        assert early == b"", "fourth connection answered at once: %r" % early[:100]
        for c in cs:                  # the three still work
            assert c.request("GET", "/echo").status == 200
        cs[0].close()
        r = fourth.read_response()
        assert r.status == 200 and r.json()["path"] == "/echo?fourth", r
    finally:
        for c in cs + [fourth]:
            if c:
                c.close()


def test_timeouts_do_not_cut_active_requests(t):
    """header, body, keepalive and upstream_idle of 1 s don't cut a slow response, a long
    stream or an upload that keeps moving."""
    px = t.proxy_to(t.backend(), server={"timeouts": {
        "header": "1s", "body": "1s", "keepalive": "1s", "upstream_idle": "1s",
        "upstream_response": "3s"}})
    with px.conn(timeout=10) as c:
        r = c.request("GET", "/slow/1500")
        assert r.status == 200 and r.body == b"slow 1500\n", r
        r = c.request("GET", "/stream/2")
        assert r.status == 200 and r.body.count(b"tick") == 20, r
        c.send(build_request("POST", "/echo", headers=[("Transfer-Encoding", "chunked")]))
        for _ in range(5):
            c.send(b"a\r\n0123456789\r\n")
            time.sleep(0.5)
        c.send(b"0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.json()["body_length"] == 50, r
