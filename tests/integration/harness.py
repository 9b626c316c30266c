"""Integration-test harness for proxyd (stdlib only; run with /usr/bin/python3).

A test is a function `test_NAME(t)` in a `test_*.py` module of this folder; `t` is a `T`: a fresh
temporary directory plus factories for backends and proxies that are all cleaned up (processes
killed by pid) when the test ends, passed or failed. A typical case:

    def test_something(t):
        be = t.backend("b1")                        # threaded HTTP server on 127.0.0.1
        px = t.proxy_to(be)                         # proxyd, one route "/" -> upstream "b" -> be
        r = px.get("/echo?x=1", headers={"X-A": "1"})
        assert r.status == 200 and r.json()["path"] == "/echo?x=1"

Backend behaviours, chosen by path (anything else echoes):
    /echo (or any other path)  200, JSON {backend, method, path, version, headers, body_length,
                               body_sha256}; reads CL and chunked bodies; ?delay_ms=N waits before
                               reading the body
    /status/NNN                that status
    /slow/MS                   sleep, then 200
    /hang                      never responds (until the peer or the test goes away)
    /big/BYTES                 Content-Length body of pattern bytes (see pattern_sha256), streamed
    /chunked/N                 N chunks "chunk I\\n"
    /close-delimited[/BYTES]   no CL/TE; body, then close
    /stream/SECONDS            chunked, one chunk "tick I\\n" per 100 ms
    /headers                   hop-by-hop headers in the response (+ X-Keep: yes)
    /reset                     reads the request, then resets the connection (RST)
    /invalid                   answers garbage that is not HTTP
    /stall                     head with Content-Length 1000, 10 bytes of body, then nothing
    /early                     answers 200 at once without reading the request body, then drains it
A query parameter close=1 makes any answer carry "Connection: close" and close the connection;
Backend(keepalive_idle=S) closes kept-alive connections idle for S seconds; Backend(host="127.0.0.2",
port=P) listens there; Backend(delay=S) answers every request S seconds late; Backend(behave_as=
"/reset") gives every request but /health that path's behaviour (settable while running);
Backend(tls_context=ctx) speaks TLS (an ssl.SSLContext for the server side).
Every response carries "X-Backend: NAME". Backend.connections counts accepted TCP connections,
Backend.requests records every request (method, target, headers, body length and sha256,
time, peer = the (host, port) of the connection it came on).
"""

import hashlib
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import threading
import time

PROXYD = os.environ.get("PROXYD", "proxyd")
PROXYCTL = os.environ.get("PROXYCTL", "proxyctl")
REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def configure(proxyd, proxyctl):
    global PROXYD, PROXYCTL
    PROXYD = os.path.abspath(proxyd)
    PROXYCTL = os.path.abspath(proxyctl)


# ----------------------------------------------------------------------------------------------
# small utilities

def config_errors(r, path):
    """[(line, col, message)] of the FILE:LINE:COLUMN: lines on a completed process's stderr."""
    out = []
    for l in r.stderr.splitlines():
        m = re.match(re.escape(path) + r":(\d+):(\d+): (.*)$", l.strip())
        if m:
            out.append((int(m.group(1)), int(m.group(2)), m.group(3)))
    return out


def wait_until(pred, timeout=5.0, interval=0.05, msg=None):
    """Call pred() until it returns a truthy value (returned) or timeout seconds pass (raise)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(msg or "condition not met within %.1fs" % timeout)
        time.sleep(interval)


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def port_accepts(port, timeout=0.5):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError:
        return False
    s.close()
    return True


_PATTERN = bytes(range(256)) * 1024  # 256 KiB; /big and /close-delimited bodies repeat it


def pattern_chunks(n):
    full, rest = divmod(n, len(_PATTERN))
    for _ in range(full):
        yield _PATTERN
    if rest:
        yield _PATTERN[:rest]


def pattern_bytes(n):
    return b"".join(pattern_chunks(n))


def pattern_sha256(n):
    h = hashlib.sha256()
    for c in pattern_chunks(n):
        h.update(c)
    return h.hexdigest()


def pid_alive(pid):
    """True if the process exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def pid_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def children_of(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            out.append(int(d))
    return out



def socket_owner(proxy_port, client_port, pids):
    """The pid (among pids) holding the accepted socket 127.0.0.1:proxy_port <- client_port."""
    want_l, want_r = ":%04X" % proxy_port, ":%04X" % client_port
    inode = None
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[1].endswith(want_l) and parts[2].endswith(want_r):
                inode = parts[9]
                break
    if inode is None:
        return None
    target = "socket:[%s]" % inode
    for pid in pids:
        try:
            for fd in os.listdir("/proc/%d/fd" % pid):
                try:
                    if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == target:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


def descendants_of(pid):
    """Every process below pid (its children, theirs, ...), from /proc."""
    out, todo = [], [pid]
    while todo:
        for child in children_of(todo.pop()):
            if child not in out:
                out.append(child)
                todo.append(child)
    return out


_sanitized = None


def sanitized():
    """True if the proxyd binary is built with AddressSanitizer (memory bounds don't apply)."""
    global _sanitized
    if _sanitized is None:
        try:
            with open(PROXYD, "rb") as f:
                _sanitized = b"__asan_init" in f.read()
        except OSError:
            _sanitized = False
    return _sanitized


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# ----------------------------------------------------------------------------------------------
# HTTP parsing shared by the client helpers and the backend

class Closed(Exception):
    """The peer closed the connection."""


class Reader:
    """Buffered reads from a socket. `should_stop` is polled whenever a recv times out."""

    def __init__(self, sock, should_stop=None, idle_limit=30.0):
        self.sock = sock
        self.buf = bytearray()
        self.should_stop = should_stop
        self.idle_limit = idle_limit
        self.eof = False

    def _fill(self, size=262144):
        if self.eof:
            return False
        deadline = time.monotonic() + self.idle_limit
        while True:
            try:
                data = self.sock.recv(size)
            except socket.timeout:
                if self.should_stop is None:
                    raise
                if self.should_stop() or time.monotonic() > deadline:
                    raise Closed("stopped")
                continue
            if not data:
                self.eof = True
                return False
            self.buf += data
            return True

    def read_head(self, limit=1 << 20):
        """Bytes up to and including the blank line; b"" if EOF before any byte."""
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                head = bytes(self.buf[:i + 4])
                del self.buf[:i + 4]
                return head
            if len(self.buf) > limit:
                raise ValueError("head too long")
            if not self._fill():
                if self.buf:
                    raise Closed("EOF in the middle of a head: %r" % bytes(self.buf[:200]))
                return b""

    def read_line(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            if len(self.buf) > 65536:
                raise ValueError("line too long")
            if not self._fill():
                raise Closed("EOF in the middle of a line")

    def read_exact(self, n, sink):
        left = n
        while left > 0:
            if not self.buf and not self._fill():
                raise Closed("EOF with %d of %d body bytes missing" % (left, n))
            take = min(left, len(self.buf))
            sink(bytes(self.buf[:take]))
            del self.buf[:take]
            left -= take

    def read_to_eof(self, sink):
        while True:
            if self.buf:
                sink(bytes(self.buf))
                self.buf.clear()
            if not self._fill():
                return

    def read_chunked(self, sink):
        """Decode a chunked body into sink; returns the trailer lines."""
        while True:
            line = self.read_line().strip()
            size = int(line.split(b";")[0], 16)
            if size == 0:
                trailers = []
                while True:
                    t = self.read_line()
                    if t in (b"\r\n", b"\n"):
                        return trailers
                    trailers.append(t)
            self.read_exact(size, sink)
            if self.read_line() not in (b"\r\n", b"\n"):
                raise ValueError("missing CRLF after chunk data")


def parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    first = lines[0]
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.append((name, value.strip(" \t")))
    return first, headers


def hget(headers, name, default=None):
    name = name.lower()
    for k, v in headers:
        if k.lower() == name:
            return v
    return default


def hall(headers, name):
    name = name.lower()
    return [v for k, v in headers if k.lower() == name]


class HeaderAccess:
    """Lookups on an object's `headers` (a list of (name, value)) and `body`, for the responses
    of every client in the tests."""

    def header(self, name, default=None):
        return hget(self.headers, name, default)

    def header_all(self, name):
        return hall(self.headers, name)

    def has(self, name):
        return any(k.lower() == name.lower() for k, _ in self.headers)

    def json(self):
        return json.loads(self.body)


class Response(HeaderAccess):
    def __init__(self, version, status, reason, headers, body, interim=()):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.interim = list(interim)   # 1xx responses seen before this one (status codes)

    def __iter__(self):
        """status, headers, body = resp"""
        return iter((self.status, self.headers, self.body))

    def __repr__(self):
        return "<Response %s %s %r body=%r>" % (self.status, self.reason, self.headers,
                                                self.body[:200])


def read_response(rd, method="GET", sink=None):
    """Read one response from a Reader. The body goes to sink if given (then .body is None)."""
    interim = []
    while True:
        head = rd.read_head()
        if not head:
            raise Closed("connection closed before any response byte")
        first, headers = parse_head(head)
        parts = first.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ValueError("bad status line %r" % first)
        status = int(parts[1])
        if 100 <= status < 200 and status != 101:
            interim.append(status)
            continue
        break
    chunks = []
    put = sink if sink is not None else chunks.append
    te = hget(headers, "Transfer-Encoding")
    cl = hget(headers, "Content-Length")
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        pass
    elif te is not None:
        if te.split(",")[-1].strip().lower() == "chunked":
            rd.read_chunked(put)
        else:
            rd.read_to_eof(put)
    elif cl is not None:
        rd.read_exact(int(cl), put)
    else:
        rd.read_to_eof(put)
    body = None if sink is not None else b"".join(chunks)
    return Response(parts[0], status, parts[2] if len(parts) > 2 else "", headers, body, interim)


def build_request(method="GET", path="/", headers=None, body=None, version="HTTP/1.1",
                  host="test.local"):
    """Request bytes. headers: dict or list of pairs. Host and Content-Length added if missing."""
    hdrs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {k.lower() for k, _ in hdrs}
    if host is not None and "host" not in names:
        hdrs.insert(0, ("Host", host))
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        hdrs.append(("Content-Length", str(len(body))))
    head = "%s %s %s\r\n" % (method, path, version)
    head += "".join("%s: %s\r\n" % (k, v) for k, v in hdrs) + "\r\n"
    return head.encode("latin-1") + (body or b"")


def chunked(data, sizes=(1000, 7, 65536, 3)):
    """Encode data as a chunked body with varying chunk sizes."""
    out = bytearray()
    i = k = 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        k += 1
        piece = data[i:i + n]
        i += n
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    out += b"0\r\n\r\n"
    return bytes(out)


class Conn:
    """A client connection to the proxy (or anything on 127.0.0.1), every operation bounded."""

    def __init__(self, port, timeout=10.0, tls=None, server_hostname=None, session=None):
        """tls: an ssl.SSLContext to speak TLS with (server_hostname: the SNI name, None for no
        SNI; session: an ssl.SSLSession to resume). The handshake is bounded by timeout."""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=server_hostname,
                                        session=session)
        self.timeout = timeout
        self.rd = Reader(self.sock)

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method="GET", path="/", headers=None, body=None, version="HTTP/1.1",
                host="test.local", sink=None):
        self.send(build_request(method, path, headers, body, version, host))
        return self.read_response(method, sink)

    def read_response(self, method="GET", sink=None):
        return read_response(self.rd, method, sink)

    def read_some(self, timeout=1.0):
        """Whatever arrives within timeout (b"" if nothing or closed)."""
        if self.rd.buf:
            data = bytes(self.rd.buf)
            self.rd.buf.clear()
            return data
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            return b""
        finally:
            self.sock.settimeout(self.timeout)

    def read_until_close(self):
        """Everything until the peer closes (bounded by the socket timeout per read)."""
        out = []
        try:
            self.rd.read_to_eof(out.append)
        except ConnectionResetError:
            pass
        return b"".join(out)

    def wait_closed(self, timeout=3.0):
        """True if the peer closes (EOF or RST) within timeout; data read meanwhile is dropped."""
        if self.rd.eof:
            return True
        self.rd.buf.clear()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            finally:
                self.sock.settimeout(self.timeout)
            if not data:
                return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def assert_error(resp, status):
    """A proxy-generated error: status, JSON body {"error", "request_id" == X-Request-Id}."""
    assert resp.status == status, "expected %d, got %d %s; headers=%r body=%r" % (
        status, resp.status, resp.reason, resp.headers, (resp.body or b"")[:300])
    ct = (resp.header("Content-Type") or "").split(";")[0].strip().lower()
    assert ct == "application/json", "Content-Type %r, expected application/json" % ct
    try:
        data = json.loads(resp.body)
    except ValueError:
        raise AssertionError("error body is not JSON: %r" % resp.body[:300])
    assert isinstance(data.get("error"), str) and data["error"], "no error text: %r" % data
    rid = resp.header("X-Request-Id")
    assert rid, "no X-Request-Id header on the error response"
    assert data.get("request_id") == rid, "request_id %r != X-Request-Id %r" % (
        data.get("request_id"), rid)
    return data


# ----------------------------------------------------------------------------------------------
# Backend

class Backend:
    def __init__(self, name="b1", keepalive_idle=None, host="127.0.0.1", port=0, delay=0.0,
                 behave_as=None, tls_context=None):
        """keepalive_idle: close a kept-alive connection after that many idle seconds.
        host, port: where to listen (e.g. "127.0.0.2", or the port of a stopped backend to
        bring it back). delay: seconds every request waits (after its body is read) before it
        is answered, whatever its path. behave_as: a path (e.g. "/reset", "/status/503") whose
        behaviour every request gets instead of its own, except /health; an attribute, so a
        test may change it (None = normal) while the backend runs. tls_context: an
        ssl.SSLContext (server side): every accepted connection speaks TLS (handshake in the
        connection's thread; .tls_handshakes / .tls_failures count them, .tls_errors says why)."""
        self.name = name
        self.tls_context = tls_context
        self.tls_handshakes = 0
        self.tls_failures = 0
        self.tls_errors = []
        self.keepalive_idle = keepalive_idle
        self.delay = delay
        self.behave_as = behave_as
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(512)
        self.sock.settimeout(0.2)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.address = "%s:%d" % (host, self.port)
        self.lock = threading.Lock()
        self.connections = 0
        self.requests = []
        self._stop = threading.Event()
        self._threads = []
        self._conns = set()
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept_thread.start()

    @property
    def served(self):
        with self.lock:
            return len(self.requests)

    def last(self):
        with self.lock:
            return self.requests[-1] if self.requests else None

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
        self._accept_thread.join(2)
        for th in list(self._threads):
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
                self._conns.add(conn)
                self._threads = [th for th in self._threads if th.is_alive()]
            th = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(th)
            th.start()

    # -- per connection

    def _serve(self, conn):
        if self.tls_context is not None:
            raw = conn
            raw.settimeout(5.0)
            try:
                conn = self.tls_context.wrap_socket(raw, server_side=True)
            except (OSError, ValueError) as e:
                with self.lock:
                    self.tls_failures += 1
                    self.tls_errors.append(repr(e))
                    self._conns.discard(raw)
                try:
                    raw.close()
                except OSError:
                    pass
                return
            with self.lock:
                self.tls_handshakes += 1
                self._conns.discard(raw)
                self._conns.add(conn)
        conn.settimeout(0.25)
        rd = Reader(conn, should_stop=self._stop.is_set, idle_limit=120.0)
        try:
            first = True
            while not self._stop.is_set():
                if not first and self.keepalive_idle is not None and not rd.buf:
                    r, _, _ = select.select([conn], [], [], self.keepalive_idle)
                    if not r:
                        break
                first = False
                if not self._one(conn, rd):
                    break
        except (Closed, OSError, ValueError):
            pass
        finally:
            with self.lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def _sleep(self, seconds):
        return self._stop.wait(seconds)

    def _send(self, conn, data):
        mv = memoryview(data)
        deadline = time.monotonic() + 120
        while mv:
            try:
                n = conn.send(mv)
            except socket.timeout:
                if self._stop.is_set() or time.monotonic() > deadline:
                    raise Closed("stopped while sending")
                continue
            mv = mv[n:]

    def _head(self, status, headers, reason=None):
        reason = reason or {200: "OK", 100: "Continue"}.get(status, "Status")
        lines = ["HTTP/1.1 %d %s" % (status, reason), "X-Backend: %s" % self.name]
        lines += ["%s: %s" % kv for kv in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _respond(self, conn, method, status, body=b"", headers=(), keep=True):
        hdrs = list(headers)
        if status not in (204, 304):
            hdrs.append(("Content-Length", str(len(body))))
        if not keep:
            hdrs.append(("Connection", "close"))
        data = self._head(status, hdrs)
        if method != "HEAD" and status not in (204, 304):
            data += body
        self._send(conn, data)
        return keep

    def _wait_peer_gone(self, conn, limit=120.0):
        deadline = time.monotonic() + limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            r, _, _ = select.select([conn], [], [], 0.2)
            if r:
                try:
                    if not conn.recv(65536):
                        return
                except socket.timeout:
                    continue
                except OSError:
                    return

    def _one(self, conn, rd):
        head = rd.read_head()
        if not head:
            return False
        first, headers = parse_head(head)
        method, target, version = first.split(" ", 2)
        path, _, query = target.partition("?")
        if self.behave_as is not None and path != "/health":
            path = self.behave_as
        params = dict(p.partition("=")[::2] for p in query.split("&") if p)
        conn_tokens = [x.strip().lower() for x in (hget(headers, "Connection") or "").split(",")]
        if version == "HTTP/1.1":
            keep = "close" not in conn_tokens
        else:
            keep = "keep-alive" in conn_tokens
        try:
            peer = conn.getpeername()
        except OSError:
            peer = None
        rec = {"method": method, "target": target, "version": version, "headers": headers,
               "body_length": 0, "body_sha256": hashlib.sha256(b"").hexdigest(),
               "time": time.time(), "peer": peer}

        if path == "/reset":
            self._record(rec)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if path == "/early":
            self._record(rec)
            self._respond(conn, method, 200, b"early\n")
            self._wait_peer_gone(conn)
            return False

        if "delay_ms" in params:
            self._sleep(int(params["delay_ms"]) / 1000.0)
        te = hget(headers, "Transfer-Encoding")
        cl = hget(headers, "Content-Length")
        has_body = te is not None or (cl is not None and int(cl) > 0)
        if has_body and (hget(headers, "Expect") or "").lower() == "100-continue":
            self._send(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
        h = hashlib.sha256()
        n = [0]

        def sink(b):
            n[0] += len(b)
            h.update(b)
        if te is not None:
            rd.read_chunked(sink)
        elif cl is not None:
            rd.read_exact(int(cl), sink)
        rec["body_length"] = n[0]
        rec["body_sha256"] = h.hexdigest()
        self._record(rec)
        if self.delay and self._sleep(self.delay):
            return False
        if params.get("close") == "1":
            keep = False
        return self._dispatch(conn, rd, method, path, params, rec, keep)

    def _record(self, rec):
        with self.lock:
            self.requests.append(rec)

    def _dispatch(self, conn, rd, method, path, params, rec, keep):
        m = re.fullmatch(r"/status/(\d{3})", path)
        if m:
            st = int(m.group(1))
            return self._respond(conn, method, st, b"status %d\n" % st, keep=keep)
        m = re.fullmatch(r"/slow/(\d+)", path)
        if m:
            if self._sleep(int(m.group(1)) / 1000.0):
                return False
            return self._respond(conn, method, 200, b"slow %s\n" % m.group(1).encode(), keep=keep)
        if path == "/hang":
            self._wait_peer_gone(conn)
            return False
        m = re.fullmatch(r"/big/(\d+)", path)
        if m:
            size = int(m.group(1))
            hdrs = [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
            self._send(conn, self._head(200, hdrs))
            if method != "HEAD":
                for c in pattern_chunks(size):
                    self._send(conn, c)
            return keep
        m = re.fullmatch(r"/chunked/(\d+)", path)
        if m:
            self._send(conn, self._head(200, [("Content-Type", "text/plain"),
                                               ("Transfer-Encoding", "chunked")]))
            if method != "HEAD":
                for i in range(int(m.group(1))):
                    piece = b"chunk %d\n" % i
                    self._send(conn, b"%x\r\n%s\r\n" % (len(piece), piece))
                self._send(conn, b"0\r\n\r\n")
            return keep
        m = re.fullmatch(r"/close-delimited(?:/(\d+))?", path)
        if m:
            self._send(conn, self._head(200, [("Content-Type", "application/octet-stream")]))
            if method != "HEAD":
                size = int(m.group(1)) if m.group(1) else 3000
                for c in pattern_chunks(size):
                    self._send(conn, c)
            conn.shutdown(socket.SHUT_WR)
            return False
        m = re.fullmatch(r"/stream/(\d+(?:\.\d+)?)", path)
        if m:
            self._send(conn, self._head(200, [("Content-Type", "text/plain"),
                                               ("Transfer-Encoding", "chunked")]))
            for i in range(int(float(m.group(1)) * 10)):
                piece = b"tick %d\n" % i
                self._send(conn, b"%x\r\n%s\r\n" % (len(piece), piece))
                if self._sleep(0.1):
                    return False
            self._send(conn, b"0\r\n\r\n")
            return keep
        if path == "/headers":
            return self._respond(conn, method, 200, b"headers\n", headers=[
                ("Connection", "X-Hop"), ("X-Hop", "1"), ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "keep-alive"), ("Trailer", "X"), ("Upgrade", "foo"),
                ("X-Keep", "yes")], keep=keep)
        if path == "/invalid":
            self._send(conn, b"this is not http\r\n\r\n")
            return False
        if path == "/stall":
            self._send(conn, self._head(200, [("Content-Length", "1000")]) + b"0123456789")
            self._wait_peer_gone(conn)
            return False
        body = json.dumps({
            "backend": self.name, "method": method, "path": rec["target"],
            "version": rec["version"], "headers": [[k, v] for k, v in rec["headers"]],
            "body_length": rec["body_length"], "body_sha256": rec["body_sha256"],
        }).encode()
        return self._respond(conn, method, 200, body, headers=[("Content-Type",
                                                                "application/json")], keep=keep)


# ----------------------------------------------------------------------------------------------
# TOML writing

def _toml_key(k):
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join("%s = %s" % (_toml_key(k), _toml_value(x))
                                for k, x in v.items()) + " }"
    raise TypeError("cannot write %r as TOML" % (v,))


def to_toml(cfg):
    """dict -> TOML text. Nested dicts become [tables]; a top-level list of dicts becomes
    [[array.tables]]; lists of dicts deeper down are written inline."""
    out = []

    def table(path, d, header):
        subs = []
        scalars = []
        for k, v in d.items():
            if isinstance(v, dict):
                subs.append((k, v))
            elif (not path and isinstance(v, list) and v
                  and all(isinstance(x, dict) for x in v)):
                subs.append((k, v))
            else:
                scalars.append("%s = %s" % (_toml_key(k), _toml_value(v)))
        if header and (scalars or not subs or header.startswith("[[")):
            out.append("")
            out.append(header)
        out.extend(scalars)
        for k, v in subs:
            p = path + [k]
            name = ".".join(_toml_key(x) for x in p)
            if isinstance(v, dict):
                table(p, v, "[%s]" % name)
            else:
                for item in v:
                    table(p, item, "[[%s]]" % name)

    table([], cfg, None)
    return "\n".join(out).lstrip("\n") + "\n"


def merge(base, over):
    """Deep merge of dicts; a None value in `over` deletes the key."""
    out = dict(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


# ----------------------------------------------------------------------------------------------
# Proxy

class Proxy:
    def __init__(self, t, cfg, name="proxyd", binary=None):
        self.t = t
        self.name = name
        self.binary = binary   # the proxyd executable to start (default: the one under test)
        self.dir = os.path.join(t.tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        self.sock_path = os.path.join(self.dir, "ctl.sock")
        self.pid_file = os.path.join(self.dir, "proxyd.pid")
        self.error_log = os.path.join(self.dir, "error.log")
        self.access_log = os.path.join(self.dir, "access.log")
        self.config_path = os.path.join(self.dir, "proxyd.toml")
        self.user_cfg = cfg
        self.proc = None
        self.seen_pids = set()
        self.port = None
        self.ports = []
        self.tls_ports = []    # [tls] listen ports (waited for at start like server.listen)
        self.metrics_port = None   # [metrics] listen port (waited for at start too)

    def _build(self):
        auto_port = free_port()
        base = {
            "server": {
                "listen": ["127.0.0.1:%d" % auto_port],
                "workers": 1,
                "control_socket": self.sock_path,
                "pid_file": self.pid_file,
                "shutdown_timeout": "10s",
            },
            "log": {"error_log": self.error_log, "access_log": self.access_log},
        }
        cfg = merge(base, self.user_cfg)
        m = cfg.get("metrics")
        if isinstance(m, dict) and "listen" not in m:
            # a [metrics] section without listen gets a free port (px.metrics_port)
            cfg["metrics"] = dict(m, listen="127.0.0.1:%d" % free_port())
        self.cfg = cfg
        self.ports = [int(a.rsplit(":", 1)[1]) for a in cfg["server"]["listen"]]
        self.port = self.ports[0]
        tls = cfg.get("tls")
        self.tls_ports = [int(a.rsplit(":", 1)[1]) for a in (tls or {}).get("listen", [])]
        m = cfg.get("metrics")
        self.metrics_port = (int(m["listen"].rsplit(":", 1)[1])
                             if isinstance(m, dict) and isinstance(m.get("listen"), str) else None)
        self.control_socket = cfg["server"].get("control_socket", self.sock_path)
        with open(self.config_path, "w") as f:
            f.write(to_toml(cfg))

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, wait=True, attempts=3):
        for attempt in range(attempts):
            self._build()
            self.stdout_path = os.path.join(self.dir, "stdout.txt")
            self.stderr_path = os.path.join(self.dir, "stderr.txt")
            with open(self.stdout_path, "wb") as so, open(self.stderr_path, "wb") as se:
                self.proc = subprocess.Popen([self.binary or PROXYD, "-c", self.config_path],
                                             stdout=so,
                                             stderr=se, stdin=subprocess.DEVNULL, cwd=self.dir)
            self.t._procs.append(self)
            if not wait:
                return self
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if all(port_accepts(p, 0.3) for p in self.ports + self.tls_ports +
                       ([self.metrics_port] if self.metrics_port else [])):
                    self._note_pids()
                    self._wait_workers()
                    return self
                time.sleep(0.05)
            out = self.output()
            if self.proc.poll() is not None and "in use" in out and attempt + 1 < attempts:
                continue  # lost a race for the free port: retry on another one
            self.stop()
            raise AssertionError("proxyd did not start listening on %r within 10s (exit code %r)"
                                 "\n--- config:\n%s--- output:\n%s" % (
                                     self.ports + self.tls_ports, self.proc.returncode,
                                     open(self.config_path).read(), out[-3000:]))
        return self

    def output(self):
        """stdout + stderr + error log so far."""
        out = ""
        for p in (getattr(self, "stdout_path", None), getattr(self, "stderr_path", None),
                  self.error_log):
            if p and os.path.exists(p):
                with open(p, errors="replace") as f:
                    out += f.read()
        return out

    def _wait_workers(self):
        want = self.cfg["server"].get("workers", 1)
        if not isinstance(want, int):
            return
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                st = self.status_json()
                ws = st.get("workers", [])
                if len(ws) >= want and all(w.get("state", "active") == "active" for w in ws):
                    return
            except Exception:
                return  # status not available: the port accepting is all we can wait for
            time.sleep(0.05)

    def _note_pids(self):
        if self.proc and self.proc.poll() is None:
            for c in children_of(self.proc.pid):
                self.seen_pids.add(c)

    def proxyctl(self, *args, timeout=20):
        return subprocess.run([PROXYCTL, "-s", self.control_socket] + list(args),
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def status_json(self):
        r = self.proxyctl("status", "--json", timeout=10)
        if r.returncode != 0:
            raise AssertionError("proxyctl status --json failed (%d): %s%s" % (
                r.returncode, r.stdout, r.stderr))
        try:
            st = json.loads(r.stdout)
        except ValueError:
            raise AssertionError("proxyctl status --json printed no JSON: %r" % r.stdout)
        for w in st.get("workers", []):
            if isinstance(w.get("pid"), int):
                self.seen_pids.add(w["pid"])
        return st

    def worker_pids(self):
        try:
            return sorted(w["pid"] for w in self.status_json()["workers"])
        except AssertionError:
            return sorted(children_of(self.proc.pid))

    def rss_kib(self):
        pids = [self.proc.pid] + children_of(self.proc.pid)
        return sum(rss_kib(p) for p in pids)

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=5, sig=None):
        """SIGTERM (or sig), SIGKILL after timeout; then kill by pid any worker that was seen
        (status or /proc) and is still alive."""
        if self.proc is None:
            return
        self._note_pids()
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig or signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pid in self.seen_pids:
            if pid_alive(pid) and "proxyd" in pid_cmdline(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    # -- client helpers

    def conn(self, timeout=10.0, port=None):
        return Conn(port or self.port, timeout)

    def request(self, method="GET", path="/", headers=None, body=None, version="HTTP/1.1",
                host="test.local", timeout=10.0, port=None):
        with self.conn(timeout, port) as c:
            return c.request(method, path, headers, body, version, host)

    def get(self, path, headers=None, **kw):
        return self.request("GET", path, headers, **kw)

    def send_raw(self, data, timeout=10.0, method="GET", check_close=False):
        """Send bytes on a new connection, read one response. With check_close, the response
        gets .closed = whether the proxy closed the connection within 3 s afterwards."""
        with self.conn(timeout) as c:
            c.send(data)
            r = c.read_response(method)
            if check_close:
                r.closed = c.wait_closed(3.0)
            return r


# ----------------------------------------------------------------------------------------------
# per-test context

class T:
    def __init__(self, tmp):
        self.tmp = tmp
        self._procs = []       # Proxy objects and Popen objects to kill at the end
        self._backends = []
        self._sockets = []
        self._n = 0

    def backend(self, name=None, **kw):
        self._n += 1
        b = Backend(name or "b%d" % self._n, **kw)
        self._backends.append(b)
        return b

    def proxy(self, cfg=None, start=True, name="proxyd", binary=None):
        p = Proxy(self, cfg or {}, name, binary)
        if start:
            p.start()
        return p

    def proxy_to(self, *backends, routes=None, upstream=None, name="proxyd", binary=None, **cfg):
        """proxyd with upstream "b" holding the backends (Backend objects or addresses) and the
        given routes (default: "/" -> "b"). Extra sections as keyword dicts (server={...}).
        binary: start that proxyd executable instead of the one under test."""
        servers = [{"address": b if isinstance(b, str) else b.address} for b in backends]
        base = {"upstreams": {"b": merge({"servers": servers}, upstream or {})},
                "routes": routes or [{"path": "/", "upstream": "b"}]}
        return self.proxy(merge(base, cfg), name=name, binary=binary)

    def refusing_address(self):
        """127.0.0.1:PORT where connections are refused (bound, never listening)."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        self._sockets.append(s)
        return "127.0.0.1:%d" % s.getsockname()[1]

    def blackhole_address(self):
        """127.0.0.1:PORT where a connect hangs: a listener whose accept queue is full."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        s.listen(0)
        self._sockets.append(s)
        addr = s.getsockname()
        for _ in range(4):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.setblocking(False)
            c.connect_ex(addr)
            self._sockets.append(c)
        time.sleep(0.1)
        return "127.0.0.1:%d" % addr[1]

    def path(self, name):
        return os.path.join(self.tmp, name)

    def write(self, name, text):
        p = self.path(name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def run(self, args, timeout=20, **kw):
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, **kw)

    def check_config(self, text, name="check.toml"):
        """proxyd -t -c FILE on the given TOML text (or dict); returns (CompletedProcess, path)."""
        if isinstance(text, dict):
            text = to_toml(text)
        p = self.write(name, text)
        return self.run([PROXYD, "-t", "-c", p], timeout=20), p

    def spawn(self, args, **kw):
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, **kw)
        self._procs.append(p)
        return p

    def cleanup(self):
        for b in self._backends:       # first: in-flight proxied requests end at once
            b.stop()
        for p in reversed(self._procs):
            try:
                if isinstance(p, Proxy):
                    p.stop()
                elif p.poll() is None:
                    p.kill()
                    p.wait(5)
            except Exception:
                pass
        for s in self._sockets:
            s.close()
        reports = []
        for p in self._procs:
            if isinstance(p, Proxy):
                out = p.output()
                for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
                    i = out.find(marker)
                    if i >= 0:
                        reports.append("%s: %s" % (p.dir, out[max(0, i - 200):i + 3000]))
                        break
        if reports:
            raise AssertionError("sanitizer report in proxyd's output:\n" + "\n".join(reports))


def timeout(seconds):
    """Decorator: this test's time limit in run.py (default 60 s)."""
    def deco(f):
        f.timeout = seconds
        return f
    return deco
