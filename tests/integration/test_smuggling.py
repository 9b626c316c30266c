"""Request smuggling end to end: every ambiguous request gets its documented status (400 unless
said otherwise, see common/http/parser.hpp) and NOTHING of it reaches the upstream, which here is a
raw TCP listener recording every byte it receives; requests hidden in bodies stay bodies; and
Expect: 100-continue (a 100 before the body, none before an early final status)."""

import json
import socket
import threading
import time

from harness import Closed, assert_error, build_request, chunked, parse_head, hget, wait_until


class RawBackend:
    """An upstream on 127.0.0.1 that records every byte it receives, per connection, and answers
    each request it can frame (proxyd sends Content-Length or chunked bodies) with 200 and JSON
    {"method", "target", "headers", "body"}. Anything it cannot frame is recorded in .errors and
    the connection is closed. Stopped by the test's cleanup (T.cleanup calls stop())."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.lock = threading.Lock()
        self.chunks = []         # (connection number, bytes) in arrival order
        self.requests = []       # dicts, as answered
        self.errors = []
        self.connections = 0
        self.closed_connections = 0
        self._stop = threading.Event()
        self._conns = []
        self._threads = []
        self._accept = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept.start()

    @property
    def received(self):
        with self.lock:
            return b"".join(c for _, c in self.chunks)

    def received_on(self, n):
        with self.lock:
            return b"".join(c for k, c in self.chunks if k == n)

    def targets(self):
        with self.lock:
            return [r["target"] for r in self.requests]

    def stop(self):
        self._stop.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._accept.join(2)
        for th in self._threads:
            th.join(2)

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
                n = self.connections
                self._conns.append(conn)
            th = threading.Thread(target=self._serve, args=(conn, n), daemon=True)
            self._threads.append(th)
            th.start()

    def _recv(self, conn, n, buf):
        """More bytes into buf; False on EOF or stop."""
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return False
            if not data:
                return False
            with self.lock:
                self.chunks.append((n, data))
            buf += data
            return True
        return False

    def _take_line(self, conn, n, buf):
        while b"\r\n" not in buf:
            if not self._recv(conn, n, buf):
                return None
        i = buf.index(b"\r\n")
        line = bytes(buf[:i])
        del buf[:i + 2]
        return line

    def _take(self, conn, n, buf, size):
        while len(buf) < size:
            if not self._recv(conn, n, buf):
                return None
        data = bytes(buf[:size])
        del buf[:size]
        return data

    def _serve(self, conn, n):
        conn.settimeout(0.2)
        buf = bytearray()
        try:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buf:
                    if not self._recv(conn, n, buf):
                        return
                i = buf.index(b"\r\n\r\n")
                head = bytes(buf[:i + 4])
                del buf[:i + 4]
                first, headers = parse_head(head)
                method, target, _ = first.split(" ", 2)
                te = hget(headers, "Transfer-Encoding")
                cl = hget(headers, "Content-Length")
                body = b""
                if te is not None:
                    if te.lower() != "chunked" or cl is not None:
                        self.errors.append("bad framing from proxy: %r" % head)
                        return
                    parts = []
                    while True:
                        line = self._take_line(conn, n, buf)
                        if line is None:
                            return  # body never completed: no request
                        size = int(line.split(b";")[0], 16)
                        if size == 0:
                            while True:
                                t = self._take_line(conn, n, buf)
                                if t is None:
                                    return
                                if t == b"":
                                    break
                            break
                        data = self._take(conn, n, buf, size + 2)
                        if data is None:
                            return
                        parts.append(data[:-2])
                    body = b"".join(parts)
                elif cl is not None:
                    body = self._take(conn, n, buf, int(cl))
                    if body is None:
                        return
                rec = {"method": method, "target": target, "headers": headers,
                       "body": body.decode("latin-1"), "connection": n}
                with self.lock:
                    self.requests.append(rec)
                out = json.dumps(rec).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(out) + out)
        except (OSError, ValueError) as e:
            self.errors.append("backend: %r" % e)
        finally:
            with self.lock:
                self.closed_connections += 1
            try:
                conn.close()
            except OSError:
                pass


def _setup(t, **cfg):
    be = RawBackend()
    t._backends.append(be)  # stopped by T.cleanup() like harness backends
    px = t.proxy_to(be.address, **cfg)
    return px, be


def _send_expect(px, raw, status, what):
    """raw on a new connection -> one response with `status` (a JSON proxy error for 4xx), then
    the proxy closes. Bytes are sent in one write, as a smuggler would."""
    with px.conn(timeout=5) as c:
        try:
            c.send(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            r = c.read_response()
        except (Closed, ConnectionResetError) as e:
            raise AssertionError("%s: no response to %r: %s" % (what, raw[:200], e))
        if status >= 400:
            try:
                assert_error(r, status)
            except AssertionError as e:
                raise AssertionError("%s: %r: %s" % (what, raw[:200], e))
        else:
            assert r.status == status, (what, raw[:200], r)
        assert c.wait_closed(3), "%s: connection kept open after %d" % (what, status)
        return r


H = b"Host: a.example\r\n"

# (name, raw request, status). All are rejected while the head is read, so the upstream must
# never see a byte of them. A request hidden after each (in the body, or pipelined) never
# reaches the upstream either.
HIDDEN = b"GET /smuggled HTTP/1.1\r\nHost: a.example\r\n\r\n"
HEAD_VECTORS = [
    # Content-Length + Transfer-Encoding
    ("CL.TE", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 6\r\nTransfer-Encoding: chunked"
     b"\r\n\r\n0\r\n\r\nG", 400),
    ("TE.CL", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 3"
     b"\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", 400),
    ("CL0.TE", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\nTransfer-Encoding: chunked"
     b"\r\n\r\n0\r\n\r\n" + HIDDEN, 400),
    # Content-Length values
    ("CL differing duplicates", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
     b"Content-Length: %d\r\n\r\nhello" % (5 + len(HIDDEN)) + HIDDEN, 400),
    ("CL list 5, 6", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nhello!", 400),
    ("CL list 5, 5", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello", 400),
    ("CL +5", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", 400),
    ("CL -1", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400),
    ("CL 1 0", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1 0\r\n\r\n0123456789", 400),
    ("CL junk", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: abc5\r\n\r\nhello", 400),
    ("CL hex", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x10\r\n\r\n" + b"x" * 16, 400),
    ("CL overflow", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 18446744073709551621\r\n\r\n"
     b"hello", 400),
    ("CL 20 digits", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999\r\n\r\n",
     400),
    ("Content_Length", b"POST / HTTP/1.1\r\n" + H + b"Content_Length: %d\r\n\r\n" % len(HIDDEN)
     + HIDDEN, 400),
    # Transfer-Encoding values
    ("TE xchunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n"
     b"0\r\n\r\n" + HIDDEN, 400),
    ("TE chunked, identity", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, identity"
     b"\r\n\r\n0\r\n\r\n" + HIDDEN, 400),
    ("TE identity, chunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity, chunked"
     b"\r\n\r\n0\r\n\r\n" + HIDDEN, 400),
    ("TE chunked, chunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked"
     b"\r\n\r\n0\r\n\r\n" + HIDDEN, 400),
    ("TE duplicated lines", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + HIDDEN, 400),
    ("TE gzip + chunked lines", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n" + HIDDEN, 400),
    ("TE empty", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\r\n\r\n0\r\n\r\n" + HIDDEN,
     400),
    ("Transfer_Encoding", b"POST / HTTP/1.1\r\n" + H + b"Transfer_Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n" + HIDDEN, 400),
    # line endings
    ("bare LF head", b"GET / HTTP/1.1\nHost: a.example\n\n" + HIDDEN, 400),
    ("bare LF one line", b"GET / HTTP/1.1\r\nHost: a.example\nX: y\r\n\r\n", 400),
    ("bare LF hides TE", b"POST / HTTP/1.1\r\n" + H + b"X: a\nTransfer-Encoding: chunked\r\n"
     b"Content-Length: 3\r\n\r\n0\r\n\r\n", 400),
    ("bare CR", b"GET / HTTP/1.1\r\nHost: a.example\rX: y\r\n\r\n", 400),
    ("bare CR hides TE", b"POST / HTTP/1.1\r\n" + H + b"X: a\rTransfer-Encoding: chunked\r\n"
     b"\r\n0\r\n\r\n", 400),
    # bytes in names and values
    ("NUL in value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n", 400),
    ("0x01 in value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x01b\r\n\r\n", 400),
    ("0x08 in value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x08b\r\n\r\n", 400),
    ("DEL in value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x7fb\r\n\r\n", 400),
    ("VT in TE value", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\x0b\r\n\r\n"
     b"0\r\n\r\n", 400),
    ("NUL in name", b"GET / HTTP/1.1\r\n" + H + b"X\x00Y: z\r\n\r\n", 400),
    ("0x01 in name", b"GET / HTTP/1.1\r\n" + H + b"X\x01Y: z\r\n\r\n", 400),
    ("space in name", b"GET / HTTP/1.1\r\n" + H + b"Foo Bar: z\r\n\r\n", 400),
    ("@ in name", b"GET / HTTP/1.1\r\n" + H + b"Foo@: z\r\n\r\n", 400),
    ("empty name", b"GET / HTTP/1.1\r\n" + H + b": z\r\n\r\n", 400),
    # whitespace before the colon, obs-fold
    ("Host SP colon", b"GET / HTTP/1.1\r\nHost :a.example\r\n\r\n", 400),
    ("TE HTAB colon", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding\t: chunked\r\n\r\n"
     b"0\r\n\r\n" + HIDDEN, 400),
    ("CL SP colon", b"POST / HTTP/1.1\r\n" + H + b"Content-Length : %d\r\n\r\n" % len(HIDDEN)
     + HIDDEN, 400),
    ("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n b\r\n\r\n", 400),
    ("obs-fold TE", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\r\n chunked\r\n\r\n"
     b"0\r\n\r\n" + HIDDEN, 400),
    ("fold first line", b"GET / HTTP/1.1\r\n Host: a.example\r\n\r\n", 400),
    # Host
    ("two Host", b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n", 400),
    ("two equal Host", b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n", 400),
    ("no Host", b"GET / HTTP/1.1\r\nX: y\r\n\r\n", 400),
    ("absolute-form without Host", b"GET http://a.example/ HTTP/1.1\r\n\r\n", 400),
    ("userinfo authority", b"GET http://u@a.example/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("Host with @", b"GET / HTTP/1.1\r\nHost: u@a.example\r\n\r\n", 400),
    # request line
    ("bad method", b"G(T / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("leading space", b" GET / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("double space", b"GET  / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("version trailing SP", b"GET / HTTP/1.1 \r\n" + H + b"\r\n", 400),
    ("version junk", b"GET / HTTP/1.1x\r\n" + H + b"\r\n", 400),
    ("version lowercase", b"GET / http/1.1\r\n" + H + b"\r\n", 400),
    ("second request line", b"GET / HTTP/1.1 GET /smuggled HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("HTTP/1.2", b"GET / HTTP/1.2\r\n" + H + b"\r\n", 505),
    ("HTTP/2.0", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("CONNECT", b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", 400),
]


def test_smuggling_head_vectors_rejected_nothing_forwarded(t):
    px, be = _setup(t)
    for name, raw, status in HEAD_VECTORS:
        # Also pipelined: a valid request right behind must not be served on that connection.
        _send_expect(px, raw + build_request("GET", "/after-" + name.replace(" ", "_"),
                                             host="a.example"), status, name)
        assert be.received == b"", "%s: the upstream received %r" % (name, be.received[:300])
    time.sleep(0.3)  # anything late would be a bug too
    assert be.received == b"", "the upstream received %r" % be.received[:300]
    assert be.connections == 0, "the proxy opened %d upstream connections" % be.connections
    # The backend works: a valid request does get through.
    r = px.get("/ok", host="a.example")
    assert r.status == 200 and r.json()["target"] == "/ok", r
    assert be.targets() == ["/ok"], be.targets()


def test_smuggling_vectors_each_in_pieces(t):
    """Vectors whose decisive byte arrives in a later packet are rejected the same way."""
    px, be = _setup(t)
    for name, raw, status in HEAD_VECTORS[::4]:
        with px.conn(timeout=5) as c:
            try:
                for i in range(0, len(raw), 7):
                    c.send(raw[i:i + 7])
                    time.sleep(0.002)
            except (BrokenPipeError, ConnectionResetError):
                pass
            r = c.read_response()
            assert r.status == status, (name, r)
            assert c.wait_closed(3), name
    time.sleep(0.2)
    assert be.received == b"", be.received[:300]


def test_smuggling_identical_duplicate_content_length_accepted(t):
    """Documented: equal duplicate Content-Length lines are one length; the upstream gets one."""
    px, be = _setup(t)
    with px.conn(timeout=5) as c:
        c.send(b"POST /dup HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\n"
               b"hello")
        r = c.read_response()
    assert r.status == 200, r
    j = r.json()
    assert j["body"] == "hello", j
    assert [k.lower() for k, _ in j["headers"]].count("content-length") == 1, j["headers"]
    assert be.received.count(b"Content-Length") == 1, be.received


def test_smuggling_request_in_body_stays_body(t):
    """A request hidden in a Content-Length or chunked body reaches the upstream as body bytes
    of one request, never as a request of its own; the next real request follows it."""
    px, be = _setup(t)
    with px.conn(timeout=5) as c:
        c.send(build_request("POST", "/cl", body=HIDDEN, host="a.example") +
               build_request("POST", "/te", headers=[("Transfer-Encoding", "chunked")],
                             body=chunked(HIDDEN + b"0\r\n\r\n" + HIDDEN, sizes=(5, 40)),
                             host="a.example") +
               build_request("GET", "/last", host="a.example"))
        r1, r2, r3 = c.read_response(), c.read_response(), c.read_response()
    assert r1.status == 200 and r1.json()["body"] == HIDDEN.decode(), r1
    assert r2.status == 200 and r2.json()["body"] == (HIDDEN + b"0\r\n\r\n" + HIDDEN).decode(), r2
    assert r3.status == 200 and r3.json()["target"] == "/last", r3
    assert be.targets() == ["/cl", "/te", "/last"], be.targets()
    assert not be.errors, be.errors


def test_smuggling_chunked_body_errors_never_complete_upstream(t):
    """Errors inside a chunked body are found after the head was accepted: the client gets 400
    and is closed. If the head has already been forwarded, the upstream is left with a request
    that never ends (no last chunk) on a connection the proxy closes; nothing after the bad
    framing is forwarded."""
    px, be = _setup(t)
    bad_bodies = [
        ("size 17 digits", b"10000000000000000\r\n"),
        ("size 2^63", b"8000000000000000\r\n"),
        ("size 2^64-1", b"FFFFFFFFFFFFFFFF\r\n"),
        ("size 0x10", b"0x10\r\n0123456789abcdef\r\n0\r\n\r\n"),
        ("bad ext", b"1;\r\nx\r\n0\r\n\r\n"),
        ("space before size", b" 1\r\nx\r\n0\r\n\r\n"),
        ("negative", b"-1\r\nx\r\n0\r\n\r\n"),
        ("missing CRLF after data", b"5\r\nhelloX\r\n0\r\n\r\n"),
        ("LF-only size line", b"5\nhello\r\n0\r\n\r\n"),
        ("LF-only after data", b"5\r\nhello\n0\r\n\r\n"),
        ("LF-only last chunk", b"5\r\nhello\r\n0\n\n"),
        ("bare CR in trailer", b"0\r\nX: a\rb\r\n\r\n"),
    ]
    for name, body in bad_bodies:
        _send_expect(px, b"POST /chunked-" + name.replace(" ", "_").encode() + b" HTTP/1.1\r\n"
                     + H + b"Transfer-Encoding: chunked\r\n\r\n" + body + HIDDEN, 400, name)
    # In one write the whole body is judged before the head leaves: nothing at all upstream.
    time.sleep(0.2)
    assert be.received == b"", be.received[:300]

    # Head first, bad framing later: the head has gone upstream by then, but the request is
    # never completed there, and the upstream connection is closed rather than reused.
    for name, body in bad_bodies:
        before = be.connections
        with px.conn(timeout=5) as c:
            c.send(b"POST /late HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n")
            wait_until(lambda: be.connections > before and b"/late" in be.received_on(before + 1),
                       3, msg="%s: head not forwarded" % name)
            c.send(body + HIDDEN)
            r = c.read_response()
            assert_error(r, 400)
            assert c.wait_closed(3), name
        n = before + 1
        wait_until(lambda: be.closed_connections >= n, 3,
                   msg="%s: upstream connection left open" % name)
        got = be.received_on(n)
        assert b"/smuggled" not in got, (name, got)
        assert not got.endswith(b"0\r\n\r\n"), (name, got)
    time.sleep(0.2)
    assert be.requests == [], "the upstream completed a request: %r" % be.requests
    assert b"/smuggled" not in be.received
    assert not be.errors, be.errors


def test_smuggling_absolute_form_authority_wins(t):
    """RFC 9112 3.2.2: the authority of an absolute-form target overrides Host. The proxy routes
    on it and sends it as the one Host upstream (X-Forwarded-Host is that same value)."""
    px, be = _setup(t, routes=[{"host": "a.example", "path": "/", "upstream": "b"}])
    with px.conn(timeout=5) as c:
        c.send(b"GET http://a.example/x?q=1 HTTP/1.1\r\nHost: b.example\r\n\r\n")
        r = c.read_response()
    assert r.status == 200, r
    j = r.json()
    assert j["target"] == "/x?q=1", j
    hosts = [v for k, v in j["headers"] if k.lower() == "host"]
    assert hosts == ["a.example"], j["headers"]
    assert hget(j["headers"], "X-Forwarded-Host") == "a.example", j["headers"]
    assert b"b.example" not in be.received, be.received
    # The Host header alone does not route to a.example when the target says otherwise.
    with px.conn(timeout=5) as c:
        c.send(b"GET http://b.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n")
        r = c.read_response()
    assert_error(r, 404)
    assert be.targets() == ["/x?q=1"], be.targets()


def test_smuggling_expect_100_continue(t):
    """The 100 comes before the body is sent; then the final response."""
    px, be = _setup(t)
    body = b"x" * 5000
    with px.conn(timeout=5) as c:
        c.send(b"POST /up HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\nContent-Length: %d\r\n"
               b"\r\n" % len(body))
        head = c.rd.read_head()
        assert head == b"HTTP/1.1 100 Continue\r\n\r\n", head
        assert body not in be.received
        c.send(body)
        r = c.read_response()
        assert r.status == 200 and r.interim == [], r
        assert r.json()["body"] == body.decode(), r
        # Chunked, and the token in another case.
        c.send(b"POST /up2 HTTP/1.1\r\n" + H + b"Expect: 100-Continue\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
        head = c.rd.read_head()
        assert head.startswith(b"HTTP/1.1 100 "), head
        c.send(chunked(b"abc"))
        r = c.read_response()
        assert r.status == 200 and r.json()["body"] == "abc", r
    # Expect is hop-by-hop for the proxy: the upstream never sees it.
    assert b"expect" not in be.received.lower(), be.received


def test_smuggling_expect_rejected_early_no_100(t):
    """A request rejected from its head alone (413 from Content-Length, 400, 404) gets its final
    status without a 100 Continue first, and the body is never asked for."""
    px, be = _setup(t, routes=[{"path": "/api", "upstream": "b"}],
                    server={"limits": {"max_body_size": 1000}})
    cases = [
        (413, b"POST /api/up HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\n"
              b"Content-Length: 1001\r\n\r\n"),
        (413, b"POST /api/up HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\n"
              b"Content-Length: 52428800\r\n\r\n"),
        (400, b"POST /api/up HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\n"
              b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
        (404, b"POST /elsewhere HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\n"
              b"Content-Length: 10\r\n\r\n"),
    ]
    for status, raw in cases:
        with px.conn(timeout=5) as c:
            c.send(raw)
            r = c.read_response()
            assert r.interim == [], "a 100 before the %d: %r" % (status, r.interim)
            assert_error(r, status)
    assert be.received == b"", be.received[:300]


def test_smuggling_expect_other_values_ignored(t):
    """Documented: an Expect other than 100-continue is neither a 417 nor forwarded; the request
    is handled normally (no 100 is sent, the client sends its body)."""
    px, be = _setup(t)
    for value in (b"100-continuex", b"100-continue, foo", b"200-ok"):
        with px.conn(timeout=5) as c:
            c.send(b"POST /up HTTP/1.1\r\n" + H + b"Expect: " + value + b"\r\n"
                   b"Content-Length: 3\r\n\r\n")
            assert c.read_some(0.4) == b"", "a response before the body for Expect: %r" % value
            c.send(b"abc")
            r = c.read_response()
            assert r.status == 200 and r.interim == [], (value, r)
            assert r.json()["body"] == "abc"
    assert b"expect" not in be.received.lower(), be.received
