"""Client side HTTP: keep-alive, pipelining, HTTP/1.0, HEAD, bodies streamed both ways, memory
bounds, Expect: 100-continue, curl as a real client."""

import hashlib
import json
import os
import socket
import threading
import time

import harness
from harness import build_request, chunked, parse_head, hget, pattern_sha256, wait_until

MiB = 1 << 20


def test_keepalive_many_requests(t):
    be = t.backend()
    px = t.proxy_to(be)
    with px.conn() as c:
        for i in range(30):
            r = c.request("GET", "/echo?i=%d" % i)
            assert r.status == 200 and r.json()["path"] == "/echo?i=%d" % i, r
        r = c.request("POST", "/echo", body=b"abc")
        assert r.json()["body_length"] == 3


def test_pipelining(t):
    px = t.proxy_to(t.backend())
    reqs = [build_request("GET", "/echo?i=%d" % i) for i in range(3)]
    reqs.append(build_request("POST", "/echo?i=3", body=b"x" * 1000))
    reqs.append(build_request("POST", "/echo?i=4", headers=[("Transfer-Encoding", "chunked")],
                              body=chunked(b"y" * 3000)))
    reqs.append(build_request("GET", "/chunked/3"))
    reqs.append(build_request("GET", "/echo?i=6"))
    with px.conn() as c:
        c.send(b"".join(reqs))
        rs = [c.read_response() for _ in range(len(reqs))]
    for i in (0, 1, 2, 3, 4, 6):
        assert rs[i].status == 200 and rs[i].json()["path"] == "/echo?i=%d" % i, (i, rs[i])
    assert rs[3].json()["body_length"] == 1000
    assert rs[4].json()["body_length"] == 3000
    assert rs[5].body == b"chunk 0\nchunk 1\nchunk 2\n", rs[5]


def test_pipelining_slow_first(t):
    """Responses come back in request order even when the first one is slow."""
    px = t.proxy_to(t.backend())
    with px.conn() as c:
        c.send(build_request("GET", "/slow/600") + build_request("GET", "/echo?second"))
        r1 = c.read_response()
        r2 = c.read_response()
    assert r1.body == b"slow 600\n", r1
    assert r2.json()["path"] == "/echo?second", r2


def test_http10_close(t):
    px = t.proxy_to(t.backend())
    with px.conn() as c:
        r = c.request("GET", "/echo", version="HTTP/1.0")
        assert r.status == 200 and r.json()["method"] == "GET", r
        assert c.wait_closed(3), "HTTP/1.0 connection without keep-alive not closed"
    with px.conn() as c:  # no Host header at all is fine in 1.0
        r = c.request("GET", "/echo", version="HTTP/1.0", host=None)
        assert r.status == 200, r


def test_http10_keepalive(t):
    px = t.proxy_to(t.backend())
    with px.conn() as c:
        for i in range(3):
            r = c.request("GET", "/echo?i=%d" % i, headers={"Connection": "keep-alive"},
                          version="HTTP/1.0")
            assert r.status == 200 and r.json()["path"] == "/echo?i=%d" % i, r
            assert r.header("Content-Length") is not None, r.headers
            assert not r.has("Transfer-Encoding"), r.headers
            assert (r.header("Connection") or "").lower() == "keep-alive", (
                "an HTTP/1.0 client needs Connection: keep-alive to keep the connection: %r"
                % r.headers)


def test_http10_unknown_length_closes(t):
    """An HTTP/1.0 client can't take chunked: the body comes plain and ends with the close."""
    px = t.proxy_to(t.backend())
    with px.conn() as c:
        c.send(build_request("GET", "/chunked/5", headers={"Connection": "keep-alive"},
                             version="HTTP/1.0"))
        r = c.read_response()
        assert r.status == 200, r
        assert not r.has("Transfer-Encoding"), r.headers
        assert r.body == b"".join(b"chunk %d\n" % i for i in range(5)), r.body
        if r.header("Content-Length") is None:
            assert c.rd.eof or c.wait_closed(3)


def test_head_request(t):
    px = t.proxy_to(t.backend())
    with px.conn(timeout=5) as c:
        r = c.request("HEAD", "/big/100000")
        assert r.status == 200 and r.header("Content-Length") == "100000", r
        r = c.request("HEAD", "/chunked/3")
        assert r.status == 200, r
        r = c.request("GET", "/echo?after-head")   # nothing of a body left in between
        assert r.json()["path"] == "/echo?after-head", r
        assert c.read_some(0.3) == b"", "stray bytes after the responses"


def test_upload_content_length(t):
    px = t.proxy_to(t.backend())
    data = os.urandom(5 * MiB)
    r = px.request("POST", "/echo", body=data, timeout=30)
    assert r.status == 200, r
    j = r.json()
    assert j["body_length"] == len(data) and j["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_upload_chunked(t):
    be = t.backend()
    px = t.proxy_to(be)
    data = os.urandom(5 * MiB + 12345)
    with px.conn(timeout=30) as c:
        r = c.request("PUT", "/echo", headers=[("Transfer-Encoding", "chunked")],
                      body=chunked(data))
        assert r.status == 200, r
        j = r.json()
        assert j["method"] == "PUT"
        assert j["body_length"] == len(data), j
        assert j["body_sha256"] == hashlib.sha256(data).hexdigest()
        # the connection is still usable
        assert c.request("GET", "/echo").status == 200


def test_download_content_length(t):
    px = t.proxy_to(t.backend())
    n = 20 * MiB + 7
    h = hashlib.sha256()
    with px.conn(timeout=30) as c:
        r = c.request("GET", "/big/%d" % n, sink=h.update)
        assert r.status == 200 and r.header("Content-Length") == str(n), r
        assert h.hexdigest() == pattern_sha256(n)
        assert c.request("GET", "/echo").status == 200


def test_download_chunked(t):
    px = t.proxy_to(t.backend())
    with px.conn() as c:
        r = c.request("GET", "/chunked/200")
        assert r.status == 200, r
        assert r.body == b"".join(b"chunk %d\n" % i for i in range(200))
        assert c.request("GET", "/echo").status == 200


def test_download_close_delimited(t):
    px = t.proxy_to(t.backend())
    n = 3 * MiB + 5
    h = hashlib.sha256()
    with px.conn(timeout=30) as c:
        r = c.request("GET", "/close-delimited/%d" % n, sink=h.update)
        assert r.status == 200, r
        assert h.hexdigest() == pattern_sha256(n), "close-delimited body corrupted"
        if r.has("Transfer-Encoding") or r.has("Content-Length"):
            # re-framed for the client: the connection may be kept
            if not c.rd.eof:
                try:
                    assert c.request("GET", "/echo").status == 200
                except harness.Closed:
                    pass
        else:
            assert c.rd.eof, "no framing but connection not closed"
    # the proxy keeps working afterwards
    assert px.get("/echo").status == 200


def test_streaming_is_incremental(t):
    """Chunks of a slow stream reach the client as they come, not at the end."""
    px = t.proxy_to(t.backend())
    with px.conn() as c:
        t0 = time.monotonic()
        c.send(build_request("GET", "/stream/1.5"))
        head = c.rd.read_head()
        assert b" 200 " in head.split(b"\r\n")[0], head
        first = None
        stamps = []

        def sink(b):
            stamps.append(time.monotonic() - t0)
        c.rd.read_chunked(sink) if b"chunked" in head.lower() else c.rd.read_to_eof(sink)
        first = stamps[0]
    assert first < 0.8, "first chunk after %.2fs (stream lasts 1.5s): buffered" % first
    assert stamps[-1] >= 1.3, stamps


def _sample_rss(px, peak):
    peak[0] = max(peak[0], px.rss_kib())


@harness.timeout(90)
def test_download_large_bounded_memory(t):
    """200 MiB to a slow reader: master+workers RSS stays under 100 MiB; body intact."""
    px = t.proxy_to(t.backend())
    n = 200 * MiB
    base = px.rss_kib()
    peak = [base]
    h = hashlib.sha256()
    got = 0
    with px.conn(timeout=30) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        c.send(build_request("GET", "/big/%d" % n))
        head = c.rd.read_head()
        _, headers = parse_head(head)
        assert hget(headers, "Content-Length") == str(n), head
        if c.rd.buf:
            got += len(c.rd.buf)
            h.update(c.rd.buf)
            c.rd.buf.clear()
        t0 = time.monotonic()
        last = 0
        while time.monotonic() - t0 < 3.0:         # slow phase: ~1 MiB/s
            data = c.sock.recv(32768)
            assert data, "closed early"
            got += len(data)
            h.update(data)
            time.sleep(0.03)
            if time.monotonic() - last > 0.25:
                _sample_rss(px, peak)
                last = time.monotonic()
        _sample_rss(px, peak)
        c.rd.read_exact(n - got, h.update)         # then read the rest fast
    assert h.hexdigest() == pattern_sha256(n), "body corrupted"
    if not harness.sanitized():   # ASan's shadow memory and quarantine make RSS meaningless
        assert peak[0] < 100 * 1024, "proxy RSS peaked at %d KiB (started at %d KiB)" % (
            peak[0], base)


@harness.timeout(90)
def test_upload_large_bounded_memory(t):
    """150 MiB upload to a backend that reads it only after 3 s: RSS stays under 100 MiB."""
    be = t.backend()
    px = t.proxy_to(be, server={"limits": {"max_body_size": 1 << 30}})
    n = 150 * MiB
    base = px.rss_kib()
    peak = [base]
    err = []
    c = px.conn(timeout=30)
    try:
        def sender():
            try:
                c.send(build_request("POST", "/echo?delay_ms=3000",
                                     headers={"Content-Length": str(n)}))
                for chunk in harness.pattern_chunks(n):
                    c.send(chunk)
            except Exception as e:   # reported below
                err.append(e)
        th = threading.Thread(target=sender, daemon=True)
        th.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.7:
            _sample_rss(px, peak)
            time.sleep(0.2)
        r = c.read_response()
        th.join(30)
        assert not err, err
        assert r.status == 200, r
        j = r.json()
        assert j["body_length"] == n and j["body_sha256"] == pattern_sha256(n), j
    finally:
        c.close()
    if not harness.sanitized():   # ASan's shadow memory and quarantine make RSS meaningless
        assert peak[0] < 100 * 1024, "proxy RSS peaked at %d KiB (started at %d KiB)" % (
            peak[0], base)


def test_expect_100_continue(t):
    px = t.proxy_to(t.backend())
    data = os.urandom(100000)
    with px.conn(timeout=5) as c:
        c.send(build_request("POST", "/echo", headers={"Content-Length": str(len(data)),
                                                       "Expect": "100-continue"}))
        head = c.rd.read_head()
        assert head.startswith(b"HTTP/1.1 100"), "expected 100 Continue first, got %r" % head
        c.send(data)
        r = c.read_response()
        assert r.status == 200, r
        assert r.json()["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_expect_100_continue_curl(t):
    px = t.proxy_to(t.backend())
    data = os.urandom(2 * MiB)
    src = t.path("upload.bin")
    with open(src, "wb") as f:
        f.write(data)
    t0 = time.monotonic()
    r = t.run(["curl", "-sS", "-m", "20", "--expect100-timeout", "6", "-H",
               "Expect: 100-continue", "--data-binary", "@" + src, "-o", t.path("out.json"),
               "-w", "%{http_code}", px.url + "/echo"], timeout=30)
    took = time.monotonic() - t0
    assert r.returncode == 0 and r.stdout == "200", r
    with open(t.path("out.json")) as f:
        j = json.load(f)
    assert j["body_sha256"] == hashlib.sha256(data).hexdigest()
    assert took < 4, "took %.1fs: curl waited for a 100 Continue that never came" % took


def test_curl_client(t):
    px = t.proxy_to(t.backend())
    r = t.run(["curl", "-sS", "-m", "10", "-H", "X-From-Curl: 1", px.url + "/echo?q=curl"])
    assert r.returncode == 0, r
    j = json.loads(r.stdout)
    assert j["path"] == "/echo?q=curl" and ["X-From-Curl", "1"] in j["headers"], j
    data = os.urandom(300000)
    src = t.path("up.bin")
    with open(src, "wb") as f:
        f.write(data)
    r = t.run(["curl", "-sS", "-m", "10", "-H", "Transfer-Encoding: chunked", "--data-binary",
               "@" + src, px.url + "/echo"])
    assert r.returncode == 0, r
    assert json.loads(r.stdout)["body_sha256"] == hashlib.sha256(data).hexdigest()
    r = t.run(["curl", "-sS", "-m", "10", "--http1.0", px.url + "/chunked/4"])
    assert r.returncode == 0 and r.stdout == "chunk 0\nchunk 1\nchunk 2\nchunk 3\n", r
    # several URLs on one connection
    r = t.run(["curl", "-sS", "-m", "10", "-o", "/dev/null", "-o", "/dev/null", "-w",
               "%{http_code} %{num_connects}\n", px.url + "/echo?1", px.url + "/echo?2"])
    assert r.returncode == 0 and r.stdout.split("\n")[:2] == ["200 1", "200 0"], r


def test_client_connection_close(t):
    px = t.proxy_to(t.backend())
    with px.conn() as c:
        r = c.request("GET", "/echo", headers={"Connection": "close"})
        assert r.status == 200, r
        assert c.rd.eof or c.wait_closed(3), "connection kept after Connection: close"


def test_upload_chunk_extensions_and_trailers(t):
    px = t.proxy_to(t.backend())
    body = b"5;ext=1\r\nhello\r\n6;a=b;c\r\n world\r\n0\r\nX-Trailer: y\r\n\r\n"
    with px.conn() as c:
        r = c.request("POST", "/echo", headers=[("Transfer-Encoding", "Chunked")], body=body)
        assert r.status == 200, r
        j = r.json()
        assert j["body_length"] == 11, j
        assert j["body_sha256"] == hashlib.sha256(b"hello world").hexdigest()
        assert c.request("GET", "/echo?next").json()["path"] == "/echo?next"


def test_client_abort_mid_download(t):
    """A client that goes away in the middle of a big response leaves no broken state: the
    following requests get correct answers."""
    be = t.backend()
    px = t.proxy_to(be)
    for _ in range(3):
        c = px.conn()
        c.send(build_request("GET", "/big/%d" % (50 * MiB)))
        c.rd.read_head()
        c.rd.read_exact(200000, lambda b: None)
        c.close()
    for i in range(20):
        r = px.get("/echo?i=%d" % i, timeout=5)
        assert r.status == 200 and r.json()["path"] == "/echo?i=%d" % i, r
    h = hashlib.sha256()
    r = px.request("GET", "/big/1000000", timeout=10, )
    h.update(r.body)
    assert h.hexdigest() == pattern_sha256(1000000)


def test_client_abort_mid_upload(t):
    be = t.backend()
    px = t.proxy_to(be)
    for _ in range(3):
        c = px.conn()
        c.send(build_request("POST", "/echo", headers={"Content-Length": str(MiB)}))
        c.send(b"u" * 100000)
        time.sleep(0.1)
        c.close()
    for i in range(20):
        r = px.request("POST", "/echo?i=%d" % i, body=b"v" * 1000, timeout=5)
        assert r.status == 200 and r.json()["path"] == "/echo?i=%d" % i, r
        assert r.json()["body_length"] == 1000


def test_concurrent_clients(t):
    """40 clients at once, 10 keep-alive requests each, 2 workers: every answer right."""
    be = t.backend()
    px = t.proxy_to(be, server={"workers": 2})
    errors = []

    def client(k):
        try:
            with px.conn(timeout=10) as c:
                for i in range(10):
                    body = b"%d-%d" % (k, i)
                    r = c.request("POST", "/echo?k=%d&i=%d" % (k, i), body=body)
                    j = r.json()
                    if r.status != 200 or j["path"] != "/echo?k=%d&i=%d" % (k, i) or \
                            j["body_sha256"] != hashlib.sha256(body).hexdigest():
                        errors.append((k, i, r))
        except Exception as e:
            errors.append((k, repr(e)))
    ths = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(40)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(30)
    assert not any(th.is_alive() for th in ths), "clients still running after 30s"
    assert not errors, errors[:5]
    assert be.served == 400


def test_pipelined_after_proxy_error_with_body(t):
    """A request answered by the proxy itself (404) whose body was sent too must not corrupt
    the next pipelined request: it is answered correctly, unless the 404 said Connection: close."""
    px = t.proxy_to(t.backend(), routes=[{"path": "/api", "upstream": "b"}])
    with px.conn(timeout=5) as c:
        c.send(build_request("POST", "/nope", body=b"GET /api/smuggled HTTP/1.1\r\n\r\n") +
               build_request("POST", "/nope", headers=[("Transfer-Encoding", "chunked")],
                             body=chunked(b"x" * 3000)) +
               build_request("GET", "/api/echo?after"))
        r1 = c.read_response()
        assert r1.status == 404, r1
        if "close" in (r1.header("Connection") or "").lower():
            return
        r2 = c.read_response()
        assert r2.status == 404, "body of the first request parsed as a request? %r" % r2
        if "close" in (r2.header("Connection") or "").lower():
            return
        r3 = c.read_response()
        assert r3.status == 200 and r3.json()["path"] == "/api/echo?after", r3


def test_connection_close_with_nothing_unread_closes_at_once(t):
    """A "Connection: close" request whose head and body were read whole, with nothing more
    from the client: the proxy closes its socket right after the response (no lingering, which
    would hold the descriptor until the client closes). Seen from the client: after the whole
    response and EOF, what it sends next is refused (RST), as only a closed socket does; a
    lingering one would read and drop it."""
    px = t.proxy_to(t.backend())
    for method, body in (("GET", None), ("POST", b"x" * 5000)):
        with px.conn(timeout=5) as c:
            c.send(build_request(method, "/echo", headers=[("Connection", "close")], body=body))
            r = c.read_response()
            assert r.status == 200, r
            assert c.read_until_close() == b""
            refused = False
            for _ in range(20):
                try:
                    c.sock.sendall(b"more")
                    time.sleep(0.05)
                except (BrokenPipeError, ConnectionResetError):
                    refused = True
                    break
            assert refused, "%s: the proxy still reads the connection after closing it" % method


def test_connection_close_with_unread_input_lingers_and_loses_no_response(t):
    """"Connection: close" with a pipelined request behind it, unread: closing at once would
    send a RST that can destroy the response in flight. The proxy shuts down its side and reads
    until the client is done, so a client that reads late still gets the whole 2 MB response."""
    px = t.proxy_to(t.backend())
    size = 2 * 1024 * 1024
    with px.conn(timeout=10) as c:
        c.send(build_request("GET", "/big/%d" % size, headers=[("Connection", "close")]) +
               build_request("GET", "/echo?never-read"))
        time.sleep(0.5)  # the response fills the socket buffers meanwhile
        r = c.read_response()
        assert r.status == 200, r
        assert len(r.body) == size, len(r.body)
        assert c.read_until_close() == b""
