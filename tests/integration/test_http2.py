"""HTTP/2 from clients (issue 8): h2c with prior knowledge on plain listeners (`server.h2c`), ALPN
h2 on TLS listeners (`[tls] alpn`), every stream a request through the same phases as HTTP/1.1
(routing, proxy errors, request ids, forwarding headers, response headers, hop-by-hop removal,
cookies, HEAD, bodies with and without content-length, the access log), many streams on one
connection, flow control on large bodies both ways (and the worker's memory staying small), a
client cancelling a stream, header/URI/body limits per stream, max_concurrent_streams, the body
and keep-alive timeouts, CONNECT refused, rapid reset (CVE-2023-44487), CONTINUATION and PING
floods, GOAWAY on reload and on stop, metrics.

Known client quirk: curl 7.88 (Debian 12) cannot reuse a --http2-prior-knowledge connection for a
second URL ("Error in the HTTP2 framing layer", curl issue 10634); reuse is checked over TLS.

Clients: curl (--http2-prior-knowledge, --http2 over https), nghttp and h2load (nghttp2-client),
and `H2Conn` below: a small HTTP/2 client on a raw socket for what the tools cannot do (frames
written by hand: one request of several on a connection breaking a limit, a rapid-reset burst,
watching for GOAWAY). It encodes header blocks itself (HPACK literals without indexing, no
Huffman) and decodes the server's with libnghttp2's HPACK inflater through ctypes (the library
that curl and nghttp2-client bring; no python3-h2 / python3-hpack needed).

Measurements are printed as "report:" lines.
"""

import ctypes
import ctypes.util
import hashlib
import json
import os
import re
import select
import socket
import struct
import subprocess
import time

import harness
from harness import assert_error, hall, hget, pattern_sha256, wait_until

# ----------------------------------------------------------------------------------------------
# HTTP/2 framing (RFC 9113) and HPACK (RFC 7541)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
FRAME_NAMES = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING",
               "GOAWAY", "WINDOW_UPDATE", "CONTINUATION"]
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
ERRORS = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
          4: "SETTINGS_TIMEOUT", 5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM",
          8: "CANCEL", 9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM",
          12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED"}
CANCEL = 8
ENHANCE_YOUR_CALM = 11
S_ENABLE_PUSH, S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE = 2, 4, 5
HOP_BY_HOP = ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
              "te", "trailer", "x-hop")


def frame(ftype, flags, sid, payload=b""):
    return (struct.pack(">I", len(payload))[1:] + bytes([ftype, flags])
            + struct.pack(">I", sid & 0x7FFFFFFF) + payload)


def _hpack_int(n, prefix_bits, first=0):
    top = (1 << prefix_bits) - 1
    if n < top:
        return bytes([first | n])
    out = [first | top]
    n -= top
    while n >= 128:
        out.append((n & 127) | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


def hpack_block(headers):
    """Header block of literals without indexing, new names, no Huffman (RFC 7541 6.2.2)."""
    out = bytearray()
    for k, v in headers:
        k = k.encode("latin-1") if isinstance(k, str) else k
        v = v.encode("latin-1") if isinstance(v, str) else v
        out += b"\x00" + _hpack_int(len(k), 7) + k + _hpack_int(len(v), 7) + v
    return bytes(out)


class _NV(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("value", ctypes.c_void_p),
                ("namelen", ctypes.c_size_t), ("valuelen", ctypes.c_size_t),
                ("flags", ctypes.c_uint8)]


_lib = None


def _nghttp2():
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("nghttp2") or "libnghttp2.so.14"
        try:
            lib = ctypes.CDLL(name)
        except OSError as e:
            raise AssertionError("libnghttp2 (Debian libnghttp2-14, which curl and "
                                 "nghttp2-client depend on) is needed to decode HPACK: %s" % e)
        lib.nghttp2_hd_inflate_new.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        lib.nghttp2_hd_inflate_new.restype = ctypes.c_int
        lib.nghttp2_hd_inflate_hd2.argtypes = [ctypes.c_void_p, ctypes.POINTER(_NV),
                                               ctypes.POINTER(ctypes.c_int), ctypes.c_void_p,
                                               ctypes.c_size_t, ctypes.c_int]
        lib.nghttp2_hd_inflate_hd2.restype = ctypes.c_ssize_t
        lib.nghttp2_hd_inflate_end_headers.argtypes = [ctypes.c_void_p]
        lib.nghttp2_hd_inflate_end_headers.restype = ctypes.c_int
        lib.nghttp2_hd_inflate_del.argtypes = [ctypes.c_void_p]
        lib.nghttp2_hd_inflate_del.restype = None
        _lib = lib
    return _lib


class Inflater:
    """One connection's HPACK decoder (libnghttp2's nghttp2_hd_inflater)."""

    def __init__(self):
        self.lib = _nghttp2()
        self.p = ctypes.c_void_p()
        rv = self.lib.nghttp2_hd_inflate_new(ctypes.byref(self.p))
        assert rv == 0, "nghttp2_hd_inflate_new: %d" % rv

    def decode(self, block):
        n = len(block)
        buf = (ctypes.c_uint8 * max(1, n)).from_buffer_copy(block if n else b"\0")
        base = ctypes.addressof(buf)
        off = 0
        out = []
        while True:
            nv = _NV()
            fl = ctypes.c_int(0)
            rv = self.lib.nghttp2_hd_inflate_hd2(self.p, ctypes.byref(nv), ctypes.byref(fl),
                                                 ctypes.c_void_p(base + off), n - off, 1)
            if rv < 0:
                raise AssertionError("HPACK block from the server does not decode (%d): %r" % (
                    rv, bytes(block[:200])))
            off += rv
            if fl.value & 0x02:   # NGHTTP2_HD_INFLATE_EMIT
                out.append((ctypes.string_at(nv.name, nv.namelen).decode("latin-1"),
                            ctypes.string_at(nv.value, nv.valuelen).decode("latin-1")))
            if fl.value & 0x01:   # NGHTTP2_HD_INFLATE_FINAL
                self.lib.nghttp2_hd_inflate_end_headers(self.p)
                break
            if not fl.value & 0x02 and off >= n:
                break
        return out

    def close(self):
        if self.p:
            self.lib.nghttp2_hd_inflate_del(self.p)
            self.p = ctypes.c_void_p()


class H2Closed(Exception):
    """The server closed (or reset) the connection."""


class _Timeout(Exception):
    pass


class H2Stream:
    def __init__(self, sid, send_window):
        self.sid = sid
        self.headers = None       # final response head, pseudo-headers included
        self.interim = []
        self.trailers = None
        self.data = bytearray()
        self.ended = False        # END_STREAM from the server
        self.rst = None           # RST_STREAM error code from the server
        self.send_window = send_window
        self.data_frames = 0


class H2Response(harness.HeaderAccess):
    """Looks enough like harness.Response for assert_error."""

    def __init__(self, st):
        hdrs = st.headers or []
        self.sid = st.sid
        self.status = int(hget(hdrs, ":status", "0"))
        self.reason = ""
        self.pseudo = [(k, v) for k, v in hdrs if k.startswith(":")]
        self.headers = [(k, v) for k, v in hdrs if not k.startswith(":")]
        self.body = bytes(st.data)
        self.trailers = st.trailers
        self.rst = st.rst
        self.ended = st.ended
        self.data_frames = st.data_frames

    def __repr__(self):
        return "<H2Response stream %d status %s rst %s headers %r body %r>" % (
            self.sid, self.status, self.rst, self.headers, self.body[:200])


class H2Conn:
    """An HTTP/2 client connection on a raw socket; every wait bounded.

    window: the receive window it announces (per stream and for the connection); with
    auto_window it gives back every DATA byte at once (WINDOW_UPDATE), so responses flow."""

    def __init__(self, port, timeout=10.0, tls=None, server_hostname=None, window=1 << 24,
                 handshake=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=server_hostname)
        self.timeout = timeout
        self.buf = bytearray()
        self.eof = False
        self.was_reset = False
        self.streams = {}
        self.next_sid = 1
        self.goaways = []          # (last_stream_id, error_code, debug data), in order
        self.frame_log = []        # (type name, flags, stream) of every frame received
        self.peer_settings = {}
        self.got_settings = False
        self.settings_acked = False
        self.conn_send_window = 65535
        self.peer_initial_window = 65535
        self.peer_max_frame = 16384
        self.auto_window = True
        self.inflater = Inflater()
        self._hdr = None            # (sid, flags, bytearray) while a header block continues
        if handshake:
            self.send(PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", S_ENABLE_PUSH, 0)
                                      + struct.pack(">HI", S_INITIAL_WINDOW_SIZE, window)))
            if window > 65535:
                self.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", window - 65535)))
            self.wait(lambda: self.got_settings, timeout, "the server's SETTINGS frame")

    # -- I/O

    def send(self, data):
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            # what the server sent before it closed can still be read (drain, wait)
            self.was_reset = True
            raise H2Closed("send failed: %r" % e)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Timeout()
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(262144)
        except socket.timeout:
            raise _Timeout()
        except (ConnectionResetError, BrokenPipeError):
            self.eof = True
            self.was_reset = True
            return False
        finally:
            self.sock.settimeout(self.timeout)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_frame(self, deadline):
        """(type, flags, stream, payload), or None at EOF. Raises _Timeout at the deadline."""
        while True:
            if len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + length:
                    ftype, flags = self.buf[3], self.buf[4]
                    sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
                    payload = bytes(self.buf[9:9 + length])
                    del self.buf[:9 + length]
                    return ftype, flags, sid, payload
            if self.eof or not self._fill(deadline):
                return None

    def pump(self, deadline):
        """Read and handle one frame; False at EOF."""
        f = self.read_frame(deadline)
        if f is None:
            return False
        self._handle(*f)
        return True

    def wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v:
                return v
            try:
                if not self.pump(deadline):
                    v = pred()
                    if v:
                        return v
                    raise H2Closed("connection closed (%s) while waiting for %s; last frames: "
                                   "%s" % ("reset" if self.was_reset else "EOF", what,
                                           self.describe_frames()))
            except _Timeout:
                raise AssertionError("%s: not within %.1fs; last frames: %s" % (
                    what, timeout, self.describe_frames()))

    def drain(self, budget=0.0):
        """Handle whatever has arrived (and more for `budget` seconds); False once closed."""
        deadline = time.monotonic() + budget
        while not self.eof:
            r, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
            if not r and not self.buf:
                return True
            try:
                if not self.pump(max(deadline, time.monotonic() + 0.05)):
                    return False
            except _Timeout:
                if time.monotonic() >= deadline:
                    return True
        return False

    def describe_frames(self, n=12):
        def one(f):
            name, flags, sid, extra = f
            return "%s(flags=0x%x, stream=%d%s)" % (name, flags, sid, extra)
        return ", ".join(one(f) for f in self.frame_log[-n:]) or "none"

    # -- frames in

    def _handle(self, ftype, flags, sid, payload):
        extra = ""
        if ftype == GOAWAY and len(payload) >= 8:
            extra = ", last=%d, %s" % (int.from_bytes(payload[:4], "big") & 0x7FFFFFFF,
                                       ERRORS.get(int.from_bytes(payload[4:8], "big"), "?"))
        elif ftype == RST_STREAM and len(payload) >= 4:
            extra = ", %s" % ERRORS.get(int.from_bytes(payload[:4], "big"), "?")
        elif ftype == DATA:
            extra = ", %d bytes" % len(payload)
        if len(self.frame_log) > 2000:
            del self.frame_log[:1000]
        self.frame_log.append((FRAME_NAMES[ftype] if ftype < 10 else "type%d" % ftype, flags,
                               sid, extra))
        if self._hdr is not None and ftype != CONTINUATION:
            raise AssertionError("frame %d inside a header block of stream %d" % (ftype,
                                                                                 self._hdr[0]))
        if ftype == DATA:
            body = payload
            if flags & PADDED:
                body = payload[1:len(payload) - payload[0]]
            st = self.streams.get(sid)
            if st is not None:
                st.data += body
                st.data_frames += 1
                if flags & END_STREAM:
                    st.ended = True
            if self.auto_window and payload:
                inc = struct.pack(">I", len(payload))
                out = frame(WINDOW_UPDATE, 0, 0, inc)
                if not flags & END_STREAM:
                    out += frame(WINDOW_UPDATE, 0, sid, inc)
                try:
                    self.send(out)
                except H2Closed:
                    pass
        elif ftype in (HEADERS, PUSH_PROMISE):
            block = payload
            if flags & PADDED:
                block = block[1:len(block) - block[0]]
            if ftype == HEADERS and flags & PRIORITY_FLAG:
                block = block[5:]
            if ftype == PUSH_PROMISE:
                block = block[4:]
            self._hdr = (sid, flags, bytearray(block), ftype)
            if flags & END_HEADERS:
                self._end_headers()
        elif ftype == CONTINUATION:
            assert self._hdr is not None and self._hdr[0] == sid, "stray CONTINUATION"
            self._hdr[2].extend(payload)
            if flags & END_HEADERS:
                self._end_headers()
        elif ftype == RST_STREAM:
            st = self.streams.get(sid)
            if st is not None:
                st.rst = int.from_bytes(payload[:4], "big")
        elif ftype == SETTINGS:
            if flags & ACK:
                self.settings_acked = True
                return
            for i in range(0, len(payload) - 5, 6):
                ident, value = struct.unpack(">HI", payload[i:i + 6])
                self.peer_settings[ident] = value
                if ident == S_INITIAL_WINDOW_SIZE:
                    delta = value - self.peer_initial_window
                    self.peer_initial_window = value
                    for st in self.streams.values():
                        st.send_window += delta
                elif ident == S_MAX_FRAME_SIZE:
                    self.peer_max_frame = value
            self.got_settings = True
            try:
                self.send(frame(SETTINGS, ACK, 0))
            except H2Closed:
                pass
        elif ftype == PING:
            if not flags & ACK:
                try:
                    self.send(frame(PING, ACK, 0, payload))
                except H2Closed:
                    pass
        elif ftype == GOAWAY:
            self.goaways.append((int.from_bytes(payload[:4], "big") & 0x7FFFFFFF,
                                 int.from_bytes(payload[4:8], "big"), bytes(payload[8:])))
        elif ftype == WINDOW_UPDATE:
            inc = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if sid == 0:
                self.conn_send_window += inc
            elif sid in self.streams:
                self.streams[sid].send_window += inc

    def _end_headers(self):
        sid, flags, block, ftype = self._hdr
        self._hdr = None
        hdrs = self.inflater.decode(bytes(block))   # always: keeps the dynamic table in step
        if ftype == PUSH_PROMISE:
            return
        st = self.streams.get(sid)
        if st is None:
            st = self.streams[sid] = H2Stream(sid, self.peer_initial_window)
        status = hget(hdrs, ":status")
        if st.headers is None:
            if status is not None and status.startswith("1"):
                st.interim.append(int(status))
            else:
                st.headers = hdrs
        else:
            st.trailers = hdrs
        if flags & END_STREAM:
            st.ended = True

    # -- requests

    def send_headers(self, sid, headers, end_stream):
        block = hpack_block(headers)
        step = self.peer_max_frame
        pieces = [block[i:i + step] for i in range(0, len(block), step)] or [b""]
        out = bytearray()
        for i, p in enumerate(pieces):
            last = i == len(pieces) - 1
            fl = END_HEADERS if last else 0
            if i == 0:
                out += frame(HEADERS, fl | (END_STREAM if end_stream else 0), sid, p)
            else:
                out += frame(CONTINUATION, fl, sid, p)
        self.send(bytes(out))

    def send_data(self, sid, data, end=True, timeout=None):
        """DATA frames within the server's flow-control windows; False if the server ended or
        reset the stream first (the rest is not sent)."""
        st = self.streams[sid]
        deadline = time.monotonic() + (timeout or self.timeout)
        off, n = 0, len(data)
        while True:
            if st.rst is not None or self.eof or (st.ended and st.headers is not None):
                return False
            chunk = min(n - off, self.conn_send_window, st.send_window, self.peer_max_frame)
            if chunk <= 0 and off < n:
                try:
                    if not self.pump(deadline):
                        return False
                except _Timeout:
                    raise AssertionError("stream %d: no flow-control window to send the body "
                                         "within %.1fs (%d of %d bytes sent); frames: %s" % (
                                             sid, timeout or self.timeout, off, n,
                                             self.describe_frames()))
                continue
            last = off + chunk >= n
            self.send(frame(DATA, END_STREAM if (end and last) else 0, sid,
                            bytes(data[off:off + chunk])))
            off += chunk
            self.conn_send_window -= chunk
            st.send_window -= chunk
            if last:
                return True

    def request(self, method="GET", path="/", headers=(), body=None, authority="test.local",
                scheme="http", content_length=True, end_stream=None):
        """Open a stream; returns its id. Header names must be lowercase. body: sent as DATA
        (with a content-length header unless content_length=False or one is given)."""
        sid = self.next_sid
        self.next_sid += 2
        hdrs = [(":method", method), (":scheme", scheme), (":authority", authority),
                (":path", path)] + list(headers)
        if (body is not None and content_length
                and not any(k.lower() == "content-length" for k, _ in headers)):
            hdrs.append(("content-length", str(len(body))))
        self.streams[sid] = H2Stream(sid, self.peer_initial_window)
        end = True if end_stream is None else end_stream
        self.send_headers(sid, hdrs, end and body is None)
        if body is not None:
            self.send_data(sid, body, end=end)
        return sid

    def response(self, sid, timeout=None):
        st = self.streams[sid]
        self.wait(lambda: st.ended or st.rst is not None, timeout or self.timeout,
                  "the response on stream %d" % sid)
        return H2Response(st)

    def fetch(self, method="GET", path="/", headers=(), body=None, timeout=None, **kw):
        return self.response(self.request(method, path, headers, body, **kw), timeout)

    def wait_goaway(self, timeout):
        return self.wait(lambda: self.goaways, timeout, "a GOAWAY frame")[0]

    def wait_closed(self, timeout):
        """True if the server closes the connection within timeout (frames meanwhile handled)."""
        deadline = time.monotonic() + timeout
        try:
            while self.pump(deadline):
                pass
            return True
        except _Timeout:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        self.inflater.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


# ----------------------------------------------------------------------------------------------
# helpers

def h2_proxy(t, *backends, server=None, **cfg):
    """proxyd with server.h2c = true (plain listener speaks HTTP/2 with prior knowledge too)."""
    return t.proxy_to(*backends, server=harness.merge({"h2c": True}, server or {}), **cfg)


def run(t, args, timeout=60, **kw):
    try:
        return t.run(args, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        raise AssertionError("%s did not finish within %ds" % (" ".join(args)[:300], timeout))


def curl(t, args, timeout=30):
    return run(t, ["curl", "-sS", "--max-time", str(timeout - 5)] + list(args), timeout=timeout)


def curl_h2(t, url, extra=(), timeout=30):
    """curl --http2-prior-knowledge -i URL: (first line, headers, body)."""
    r = curl(t, ["--http2-prior-knowledge", "-i"] + list(extra) + [url], timeout=timeout)
    assert r.returncode == 0, "curl --http2-prior-knowledge %s failed (%d): %s" % (
        url, r.returncode, r.stderr)
    return split_curl_i(r.stdout)


def split_curl_i(out):
    """curl -i output (text mode: CRLF already turned into LF) -> (status line, headers, body)."""
    out = out.replace("\r\n", "\n")
    head, _, body = out.partition("\n\n")
    lines = head.split("\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return lines[0].strip(), headers, body


def log_tail(px, n=30):
    return "\n".join(px.output().splitlines()[-n:])


def access_lines(px):
    if not os.path.exists(px.access_log):
        return []
    with open(px.access_log, errors="replace") as f:
        return [l for l in f.read().splitlines() if l.strip()]


def access_records(px):
    out = []
    for l in access_lines(px):
        try:
            out.append(json.loads(l))
        except ValueError:
            raise AssertionError("access log line is not JSON: %r" % l)
    return out


def worker_pid(px):
    pids = px.worker_pids()
    assert len(pids) == 1, pids
    return pids[0]


def echo_of(resp):
    try:
        return resp.json()
    except ValueError:
        raise AssertionError("not the backend's JSON echo: %r" % (resp,))


def assert_hop_by_hop_free(headers, what):
    bad = [(k, v) for k, v in headers if k.lower() in HOP_BY_HOP]
    assert not bad, "%s: hop-by-hop / connection-specific headers present: %r" % (what, bad)


# ----------------------------------------------------------------------------------------------
# 1. h2c with prior knowledge, and HTTP/1.1 on the same listener

def test_h2c_prior_knowledge_and_http1_same_listener(t):
    """server.h2c = true: curl --http2-prior-knowledge gets HTTP/2 200 through to an HTTP/1.1
    upstream with the forwarding headers; the same port still serves HTTP/1.1; a raw client sees
    the server's SETTINGS first and gets a generated request id."""
    be = t.backend()
    px = h2_proxy(t, be, server={"response_headers": {"X-Test-Header": "h2"}})
    url = "http://127.0.0.1:%d/echo?x=1" % px.port
    first, headers, body = curl_h2(t, url, ["-H", "X-Request-Id: h2-req-1"])
    assert first.startswith("HTTP/2 200"), "curl: %r %r\n%s" % (first, headers, log_tail(px))
    assert hget(headers, "x-request-id") == "h2-req-1", headers
    assert hget(headers, "x-test-header") == "h2", headers
    assert_hop_by_hop_free(headers, "curl's HTTP/2 response")
    echo = json.loads(body)
    assert echo["method"] == "GET" and echo["path"] == "/echo?x=1", echo
    assert echo["version"] == "HTTP/1.1", "the upstream speaks HTTP/1.1: %r" % echo
    up = echo["headers"]
    assert hget(up, "Host") == "127.0.0.1:%d" % px.port, "Host from :authority: %r" % up
    assert "127.0.0.1" in (hget(up, "X-Forwarded-For") or ""), up
    assert hget(up, "X-Forwarded-Proto") == "http", up
    assert hget(up, "X-Real-IP") == "127.0.0.1", up
    assert hget(up, "X-Request-Id") == "h2-req-1", up
    assert not any(k.startswith(":") for k, _ in up), "pseudo-headers sent upstream: %r" % up

    # HTTP/1.1 on the same listener
    r = px.get("/echo?h1=1")
    assert r.status == 200 and r.version == "HTTP/1.1", r
    assert r.json()["path"] == "/echo?h1=1"
    assert r.header("X-Test-Header") == "h2", r.headers

    # raw client: SETTINGS is the server's first frame; a generated, valid request id
    with H2Conn(px.port) as c:
        assert c.frame_log[0][0] == "SETTINGS", c.describe_frames()
        r = c.fetch("GET", "/echo?raw=1")
        assert r.status == 200, r
        rid = r.header("x-request-id")
        assert rid and re.fullmatch(r"[A-Za-z0-9._-]{1,128}", rid), r.headers
        assert hget(echo_of(r)["headers"], "X-Request-Id") == rid
        # an invalid client id is replaced
        r = c.fetch("GET", "/echo", [("x-request-id", "bad id!")])
        assert r.status == 200 and r.header("x-request-id") not in (None, "bad id!"), r.headers
    assert be.served == 4, [q["target"] for q in be.requests]
    # X-Forwarded-Host is the client's Host as sent: :authority in HTTP/2
    assert hget(up, "X-Forwarded-Host") == "127.0.0.1:%d" % px.port, (
        "X-Forwarded-Host missing or wrong upstream of an HTTP/2 request: %r" % up)


def test_h2c_off_rejects_prior_knowledge(t):
    """h2c = false (the default): the connection preface is a bad HTTP/1 request (400 or just a
    close), nothing reaches the upstream, and HTTP/1.1 still works."""
    be = t.backend()
    px = t.proxy_to(be)
    with px.conn(timeout=5) as c:
        c.send(PREFACE + frame(SETTINGS, 0, 0))
        data = b""
        deadline = time.monotonic() + 5
        closed = False
        while time.monotonic() < deadline:
            try:
                got = c.sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not got:
                closed = True
                break
            data += got
    assert closed, "the connection stayed open 5s after an HTTP/2 preface (h2c off): %r" % data
    if data:
        assert re.match(rb"HTTP/1\.[01] (400|505) ", data), (
            "expected an HTTP/1 400 (or 505) answer to the preface, got %r" % data[:300])
        assert data[3:4] != b"\x04", "answered with an HTTP/2 SETTINGS frame though h2c is off"
    r = curl(t, ["--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version}",
                 "http://127.0.0.1:%d/echo" % px.port])
    assert r.returncode != 0 or r.stdout.strip() != "2", (
        "curl --http2-prior-knowledge got HTTP/2 with h2c off: %r %r" % (r.stdout, r.stderr))
    assert be.served == 0, [q["target"] for q in be.requests]
    r = px.get("/echo")
    assert r.status == 200 and be.served == 1


# ----------------------------------------------------------------------------------------------
# 2. every stream goes through the request phases

def test_h2_request_phases_on_one_connection(t):
    """On one HTTP/2 connection: 404 and 502 JSON errors with request id; X-Request-Id kept and echoed;
    cookies (several fields) joined with "; " toward the HTTP/1.1 upstream; TE not forwarded;
    response_headers added; the upstream's hop-by-hop headers dropped; HEAD; POST with and
    without content-length (byte-exact); one access log line per stream."""
    be = t.backend()
    routes = [{"path": p, "upstream": "b"} for p in ("/echo", "/headers", "/big", "/status")]
    routes.append({"path": "/down", "upstream": "dead"})
    px = h2_proxy(t, be, routes=routes, log={"format": "json"},
                  upstreams={"dead": {"servers": [{"address": t.refusing_address()}]}},
                  server={"response_headers": {"X-Content-Type-Options": "nosniff"}})
    body1 = os.urandom(5000)
    body2 = os.urandom(200000)    # more than the 65,535-byte default window: flow control
    with H2Conn(px.port) as c:
        r = c.fetch("GET", "/nothing/here")
        data = assert_error(r, 404)
        assert r.header("x-content-type-options") == "nosniff", r.headers

        r = c.fetch("GET", "/echo?phase=1", [("x-request-id", "phase-1"), ("cookie", "a=1"),
                                             ("cookie", "b=2"), ("x-custom", "yes"),
                                             ("te", "trailers"),
                                             ("x-forwarded-for", "10.9.8.7"),
                                             ("proxy-authorization", "Basic YTpi")])
        assert r.status == 200, r
        assert r.header("x-request-id") == "phase-1", r.headers
        assert r.header("x-content-type-options") == "nosniff", r.headers
        up = echo_of(r)["headers"]
        assert hall(up, "Cookie") == ["a=1; b=2"], "cookies upstream: %r" % up
        assert hget(up, "X-Custom") == "yes", up
        assert hget(up, "X-Request-Id") == "phase-1", up
        assert hget(up, "X-Forwarded-Proto") == "http", up
        assert hall(up, "X-Forwarded-For") == ["10.9.8.7, 127.0.0.1"], up
        assert hget(up, "Proxy-Authorization") is None, "Proxy-Authorization forwarded: %r" % up
        assert hget(up, "Host") == "test.local", up
        assert hget(up, "TE") is None, "TE forwarded upstream: %r" % up

        r = c.fetch("GET", "/headers")
        assert r.status == 200 and r.body == b"headers\n", r
        assert r.header("x-keep") == "yes", r.headers
        assert_hop_by_hop_free(r.headers, "GET /headers over HTTP/2")

        r = c.fetch("HEAD", "/big/1000")
        assert r.status == 200 and r.body == b"", r
        assert r.header("content-length") in (None, "1000"), r.headers
        assert r.data_frames <= 1, "HEAD answered with %d DATA frames" % r.data_frames

        r = c.fetch("POST", "/echo?cl=1", [("content-type", "application/octet-stream")],
                    body=body1)
        e = echo_of(r)
        assert (e["body_length"], e["body_sha256"]) == (
            len(body1), hashlib.sha256(body1).hexdigest()), e

        r = c.fetch("POST", "/echo?nocl=1", body=body2, content_length=False, timeout=15)
        e = echo_of(r)
        assert (e["body_length"], e["body_sha256"]) == (
            len(body2), hashlib.sha256(body2).hexdigest()), e
        up = e["headers"]
        assert hget(up, "Content-Length") is not None or (
            (hget(up, "Transfer-Encoding") or "").lower() == "chunked"), up
        r = c.fetch("GET", "/down/x")
        assert_error(r, 502)
        r = c.fetch("GET", "/echo?last=1")
        assert r.status == 200, r
        assert not c.goaways, c.goaways
    assert be.served == 6, [q["target"] for q in be.requests]
    recs = wait_until(lambda: len(access_lines(px)) >= 8 and access_records(px), 3, 0.05,
                      "access log: fewer than 8 lines for 8 streams")
    time.sleep(0.3)
    recs = access_records(px)
    assert len(recs) == 8, "expected one access log line per stream (8): %r" % recs
    by_path = {str(x.get("path")): x for x in recs}
    byid = {x.get("request_id"): x for x in recs}
    assert int(byid["phase-1"]["status"]) == 200 and byid["phase-1"]["method"] == "GET", recs
    assert byid[data["request_id"]]["status"] in (404, "404"), recs
    posts = [x for x in recs if x.get("method") == "POST"]
    assert len(posts) == 2 and all(int(x["bytes_in"]) >= len(body1) for x in posts), posts
    assert any(p.startswith("/headers") for p in by_path), recs


# ----------------------------------------------------------------------------------------------
# 3. TLS: ALPN

def test_h2_tls_alpn(t):
    """[tls] alpn = ["h2", "http/1.1"]: a client offering h2 gets it (raw client and curl --http2),
    X-Forwarded-Proto is https; an HTTP/1.1-only client still works. The default alpn offers
    http/1.1 only."""
    import test_tls as tt
    ca = tt.make_ca(t)
    cert = tt.make_cert(t, ca, "a", ["a.test"])
    be = t.backend()
    px, _ = tt.tls_proxy(t, [cert], backend=be, alpn=["h2", "http/1.1"])
    ctx = tt.client_ctx(ca, alpn=["h2", "http/1.1"])
    with H2Conn(px.tls_port, tls=ctx, server_hostname="a.test") as c:
        assert c.sock.selected_alpn_protocol() == "h2", c.sock.selected_alpn_protocol()
        r = c.fetch("GET", "/echo?tls=1", authority="a.test", scheme="https")
        assert r.status == 200, r
        up = echo_of(r)["headers"]
        assert hget(up, "X-Forwarded-Proto") == "https", up
        assert hget(up, "Host") == "a.test", up
        r2 = c.fetch("GET", "/echo?tls=2", authority="a.test", scheme="https")
        assert r2.status == 200
    url = "https://a.test:%d/echo?via=curl" % px.tls_port
    r = curl(t, ["--http2", "-i", "--cacert", ca.cert, "--resolve",
                 "a.test:%d:127.0.0.1" % px.tls_port, url])
    assert r.returncode == 0, "curl --http2 %s: %s\n%s" % (url, r.stderr, log_tail(px))
    first, headers, body = split_curl_i(r.stdout)
    assert first.startswith("HTTP/2 200"), "curl --http2 over TLS: %r" % first
    assert hget(json.loads(body)["headers"], "X-Forwarded-Proto") == "https"
    # HTTP/1.1-only client on the same TLS listener
    r, f = tt.https_get(px.tls_port, tt.client_ctx(ca, alpn=["http/1.1"]), "a.test")
    assert f["alpn"] == "http/1.1" and r.status == 200, (f["alpn"], r)
    # h2c is off here: the plain listener does not speak HTTP/2
    assert px.get("/echo").status == 200

    # default alpn: h2 is not offered
    px2, _ = tt.tls_proxy(t, [cert], backend=be, name="proxyd-default-alpn")
    r, f = tt.https_get(px2.tls_port, tt.client_ctx(ca, alpn=["h2", "http/1.1"]), "a.test")
    assert f["alpn"] == "http/1.1" and r.status == 200, (f["alpn"], r)
    r = curl(t, ["--http2", "-s", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                 "--cacert", ca.cert, "--resolve", "a.test:%d:127.0.0.1" % px2.tls_port,
                 "https://a.test:%d/echo" % px2.tls_port])
    assert r.returncode == 0 and r.stdout.strip() == "1.1 200", (r.stdout, r.stderr)


# ----------------------------------------------------------------------------------------------
# 4. many streams on one connection

def _nghttp_codes(out):
    """nghttp -s: the status code of each stream from the statistics table."""
    codes = []
    for line in out.splitlines():
        m = re.match(r"\s*\d+\s+\+\S+\s+\+\S+\s+\S+\s+(\d{3})\s+\S+\s+\S+", line)
        if m:
            codes.append(int(m.group(1)))
    return codes


def _h2load(t, url, n, c, m, timeout=60, extra=()):
    r = run(t, ["h2load", "-n", str(n), "-c", str(c), "-m", str(m), "-N", "10"] + list(extra)
            + [url], timeout=timeout)
    out = r.stdout
    m1 = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                   r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    m2 = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    assert m1 and m2, "h2load output not understood (exit %d):\n%s\n%s" % (r.returncode, out,
                                                                          r.stderr)
    return r, [int(x) for x in m1.groups()], [int(x) for x in m2.groups()]


@harness.timeout(90)
def test_h2_many_concurrent_streams(t):
    """nghttp -m 100 (100 concurrent streams on one connection) and h2load -n 1000 -c 2 -m 50:
    every stream succeeds, the backend sees each request, the access log has a line each."""
    be = t.backend()
    px = h2_proxy(t, be)
    url = "http://127.0.0.1:%d/echo?nghttp=1" % px.port
    r = run(t, ["nghttp", "-n", "-s", "-m", "100", "-t", "20", url], timeout=40)
    codes = _nghttp_codes(r.stdout)
    assert r.returncode == 0 and codes == [200] * 100, (
        "nghttp -m 100: exit %d, %d status codes %r\n%s\n%s\n%s" % (
            r.returncode, len(codes), sorted(set(codes)), r.stdout[-2000:], r.stderr[-2000:],
            log_tail(px)))
    assert be.served == 100, be.served

    t0 = time.monotonic()
    r, req, st = _h2load(t, "http://127.0.0.1:%d/echo?h2load=1" % px.port, 1000, 2, 50)
    took = time.monotonic() - t0
    print("report: h2load -n 1000 -c 2 -m 50 through proxyd: %.2fs; %s" % (
        took, " ".join(l.strip() for l in r.stdout.splitlines() if l.startswith("finished in"))))
    assert "h2c" in r.stdout, "h2load did not speak h2c:\n%s" % r.stdout
    assert req[3] == 1000 and req[4] == 0 and req[5] == 0 and req[6] == 0, (
        "h2load requests: %r\n%s\n%s" % (req, r.stdout, log_tail(px)))
    assert st[0] == 1000, "h2load status codes: %r\n%s" % (st, r.stdout)
    try:
        wait_until(lambda: be.served == 1100 and len(access_lines(px)) == 1100, 5, 0.05)
    except AssertionError:
        raise AssertionError("after 1100 streams: the backend saw %d, the access log has %d "
                             "lines" % (be.served, len(access_lines(px))))
    # the worker is still fine
    assert px.get("/echo").status == 200


def test_h2_curl_reuses_one_connection(t):
    """curl with 5 URLs over one HTTP/2 connection (ALPN h2 on TLS: curl 7.88's reuse of a
    --http2-prior-knowledge connection is broken, curl issue 10634), and nghttp with 5 URIs over
    h2c: every stream answered, and the access log shows one client address:port per run."""
    import test_tls as tt
    ca = tt.make_ca(t)
    cert = tt.make_cert(t, ca, "a", ["a.test"])
    be = t.backend()
    px = h2_proxy(t, be, log={"format": "json"},
                  tls=tt.tls_section([cert], alpn=["h2", "http/1.1"]))
    port = px.tls_ports[0]
    args = ["--http2", "--cacert", ca.cert, "--resolve", "a.test:%d:127.0.0.1" % port,
            "-w", "%{http_version} %{http_code} %{num_connects}\\n"]
    for i in range(5):
        args += ["-o", "/dev/null", "https://a.test:%d/echo?curl=%d" % (port, i)]
    r = curl(t, args)
    assert r.returncode == 0, r.stderr
    rows = [l.split() for l in r.stdout.splitlines() if l.strip()]
    assert rows == [["2", "200", "1"]] + [["2", "200", "0"]] * 4, (
        "curl: version, status, new connections per URL: %r" % rows)
    wait_until(lambda: be.served == 5, 3, 0.05)

    uris = ["http://127.0.0.1:%d/echo?nghttp=%d" % (px.port, i) for i in range(5)]
    r = run(t, ["nghttp", "-n", "-s", "-t", "10"] + uris, timeout=30)
    assert r.returncode == 0 and _nghttp_codes(r.stdout) == [200] * 5, (r.stdout, r.stderr)
    wait_until(lambda: be.served == 10, 3, 0.05)
    recs = wait_until(lambda: len(access_lines(px)) >= 10 and access_records(px), 3, 0.05,
                      "access log: fewer than 10 lines for 10 streams")
    by_run = {}
    for x in recs:
        q = str(x.get("path", ""))
        key = "curl" if "curl=" in q else "nghttp" if "nghttp=" in q else "?"
        by_run.setdefault(key, set()).add(str(x.get("client")))
    print("report: access log clients per run: %r" % by_run)
    for key in ("curl", "nghttp"):
        assert len(by_run.get(key, ())) == 1, (
            "%s's 5 requests came from %r: expected one connection" % (key, by_run.get(key)))


# ----------------------------------------------------------------------------------------------
# 5. large bodies: flow control both ways, memory bounded

def _sample_rss(px, proc, deadline):
    base = px.rss_kib()
    peak = base
    while proc.poll() is None and time.monotonic() < deadline:
        peak = max(peak, px.rss_kib())
        time.sleep(0.05)
    return base, peak


@harness.timeout(90)
def test_h2_large_download_slow_client(t):
    """A 48 MiB response to a client reading at ~12 MB/s (curl --limit-rate: it stops opening
    its window) arrives byte-exact; proxyd's memory does not grow by anything near the body."""
    size = 48 << 20
    be = t.backend()
    px = h2_proxy(t, be)
    assert px.get("/big/1000").status == 200     # warm up: pools, buffers
    out = t.path("download.bin")
    t0 = time.monotonic()
    base = px.rss_kib()
    p = t.spawn(["curl", "-sS", "--http2-prior-knowledge", "--limit-rate", "12M",
                 "--max-time", "50", "-o", out, "-w", "%{http_version} %{http_code}",
                 "http://127.0.0.1:%d/big/%d" % (px.port, size)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, peak = _sample_rss(px, p, time.monotonic() + 55)
    try:
        so, se = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        raise AssertionError("curl still running after 55s")
    took = time.monotonic() - t0
    assert p.returncode == 0 and so.decode().strip() == "2 200", (p.returncode, so, se,
                                                                   log_tail(px))
    h = hashlib.sha256()
    with open(out, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    assert os.path.getsize(out) == size, os.path.getsize(out)
    assert h.hexdigest() == pattern_sha256(size), "downloaded body differs"
    grow = (peak - base) / 1024.0
    print("report: 48 MiB download at 12 MB/s in %.1fs; proxyd RSS %.1f MiB -> peak %.1f MiB "
          "(+%.1f MiB)" % (took, base / 1024.0, peak / 1024.0, grow))
    if not harness.sanitized():
        assert grow < 16, ("proxyd's RSS grew by %.1f MiB during a 48 MiB download to a slow "
                           "client: the body is buffered instead of flow-controlled" % grow)


@harness.timeout(90)
def test_h2_large_upload(t):
    """A 20 MiB upload with content-length (curl --data-binary @FILE) and without (curl -T - from
    stdin), byte-exact at the backend. The first one's backend waits 2 s before reading: meanwhile
    proxyd must not take in the whole body (its windows stop the client)."""
    size = 20 << 20
    be = t.backend()
    px = h2_proxy(t, be, server={"limits": {"max_body_size": "64MiB"}})
    src = t.path("upload.bin")
    data = os.urandom(size)
    with open(src, "wb") as f:
        f.write(data)
    want = hashlib.sha256(data).hexdigest()
    del data
    assert px.get("/echo").status == 200
    url = "http://127.0.0.1:%d/echo?delay_ms=2000" % px.port
    base = px.rss_kib()
    p = t.spawn(["curl", "-sS", "--http2-prior-knowledge", "--max-time", "50", "-w",
                 "\n%{http_version} %{http_code}", "--data-binary", "@" + src, "-H",
                 "Content-Type: application/octet-stream", url],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, peak = _sample_rss(px, p, time.monotonic() + 55)
    so, se = p.communicate(timeout=10)
    assert p.returncode == 0, (p.returncode, se, log_tail(px))
    body, _, tail = so.decode().rpartition("\n")
    assert tail.strip() == "2 200", (tail, body[:300], se)
    e = json.loads(body)
    assert (e["body_length"], e["body_sha256"]) == (size, want), e
    assert hget(e["headers"], "Content-Length") == str(size), e["headers"]
    grow = (peak - base) / 1024.0
    print("report: 20 MiB upload (backend reads after 2 s): proxyd RSS +%.1f MiB at peak" % grow)
    if not harness.sanitized():
        assert grow < 12, ("proxyd's RSS grew by %.1f MiB while the backend was not reading a "
                           "20 MiB upload: the body is buffered, not flow-controlled" % grow)

    # without content-length: curl -T - reads stdin of unknown length
    r = _run_stdin(t, src, px.port)
    body, _, tail = r.stdout.rpartition("\n")
    assert r.returncode == 0 and tail.strip() == "2 200", (r.returncode, tail, r.stderr)
    e = json.loads(body)
    assert (e["body_length"], e["body_sha256"]) == (size, want), e
    assert hget(e["headers"], "Content-Length") is None, (
        "the client sent no length, yet upstream got one: %r" % e["headers"])


def _run_stdin(t, src, port):
    with open(src, "rb") as f:
        try:
            return subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--max-time", "50",
                                   "-X", "POST", "-T", "-", "-w", "\n%{http_version} %{http_code}",
                                   "http://127.0.0.1:%d/echo?nocl=1" % port],
                                  capture_output=True, text=True, timeout=60, stdin=f)
        except subprocess.TimeoutExpired:
            raise AssertionError("curl -T - did not finish within 60s")


# ----------------------------------------------------------------------------------------------
# 6. limits, per stream

def test_h2_limits_per_stream(t):
    """On one connection: a header list over max_header_size -> 431, a :path over max_uri_size
    -> 414, a content-length over max_body_size -> 413, a body without content-length growing
    past it -> 413 (or the stream reset): each a JSON error for that stream only; requests
    within the limits before and after on the same connection get 200."""
    be = t.backend()
    px = h2_proxy(t, be, server={"limits": {"max_header_size": "4KiB", "max_uri_size": "1KiB",
                                            "max_body_size": 10000}})
    with H2Conn(px.port) as c:
        r = c.fetch("GET", "/echo?before=1", [("x-fill", "f" * 2000)])
        assert r.status == 200, r

        r = c.fetch("GET", "/echo?big-headers=1", [("x-big", "a" * 8000)])
        assert r.rst is None or r.headers, "431 case: stream reset (%s) without a response" % (
            ERRORS.get(r.rst))
        assert_error(r, 431)
        r = c.fetch("GET", "/echo?many-headers=1",
                    [("x-h%d" % i, "v" * 100) for i in range(60)])
        assert_error(r, 431)

        r = c.fetch("GET", "/echo?after-431=1")
        assert r.status == 200, "the connection should survive a 431: %r" % r

        r = c.fetch("GET", "/echo?" + "q" * 2000)
        assert_error(r, 414)

        sid = c.request("POST", "/echo?cl-too-big=1", [("content-length", "20000")],
                        end_stream=False)
        r = c.response(sid)
        assert_error(r, 413)

        sid = c.request("POST", "/echo?grows=1", end_stream=False)
        c.send_data(sid, b"z" * 30000, end=True)
        r = c.response(sid)
        if r.headers:
            assert_error(r, 413)
        else:
            assert r.rst is not None, r

        r = c.fetch("POST", "/echo?ok-body=1", body=b"k" * 10000)
        assert r.status == 200 and echo_of(r)["body_length"] == 10000, r
        r = c.fetch("GET", "/echo?after=1")
        assert r.status == 200, r
        bad_goaway = [g for g in c.goaways if g[1] != 0]
        assert not bad_goaway, "connection-level error for stream-level limits: %r" % bad_goaway
    targets = [q["target"] for q in be.requests]
    assert all("big-headers" not in x and "many-headers" not in x and "cl-too-big" not in x
               and "qqqq" not in x for x in targets), targets
    assert all(q["body_length"] <= 10000 for q in be.requests), [
        (q["target"], q["body_length"]) for q in be.requests]
    for want in ("/echo?before=1", "/echo?after-431=1", "/echo?ok-body=1", "/echo?after=1"):
        assert want in targets, (want, targets)


def test_h2_max_concurrent_streams(t):
    """limits.max_concurrent_streams = 4 is announced in SETTINGS. A client that keeps to it gets
    every stream answered (8 requests, 4 at a time, on one connection). One that opens 6 at once
    after acknowledging the setting breaks the protocol: libnghttp2 ends the connection (GOAWAY
    PROTOCOL_ERROR; RFC 9113 5.1.2 would allow a stream error, see docs/configuration.md); nothing
    beyond the limit reaches the upstream, and the worker serves a new connection at once."""
    be = t.backend()
    px = h2_proxy(t, be, server={"limits": {"max_concurrent_streams": 4}})
    with H2Conn(px.port) as c:
        assert c.peer_settings.get(3) == 4, "SETTINGS_MAX_CONCURRENT_STREAMS: %r" % (
            c.peer_settings,)
        c.wait(lambda: c.settings_acked, 3, "the ACK of our SETTINGS")
        for batch in range(2):
            sids = [c.request("GET", "/slow/300?b=%d&i=%d" % (batch, i)) for i in range(4)]
            rs = [c.response(x, 10) for x in sids]
            assert all(r.status == 200 for r in rs), rs
        assert not [g for g in c.goaways if g[1] != 0], c.goaways
    assert be.served == 8, [q["target"] for q in be.requests]

    with H2Conn(px.port) as c:
        c.wait(lambda: c.settings_acked, 3, "the ACK of our SETTINGS")
        sids = [c.request("GET", "/slow/1000?i=%d" % i) for i in range(6)]
        try:
            c.response(sids[-1], 10)
        except H2Closed:
            pass
        codes = [ERRORS.get(g[1], g[1]) for g in c.goaways]
        print("report: 6 streams at once with max_concurrent_streams 4 (acknowledged): GOAWAY %r"
              % codes)
        assert codes and codes[-1] == "PROTOCOL_ERROR", codes
    time.sleep(0.5)
    assert be.served <= 8 + 4, [q["target"] for q in be.requests]
    with H2Conn(px.port) as c:
        r = c.fetch("GET", "/echo?after=1")
        assert r.status == 200, r


def test_h2_body_timeout(t):
    """timeouts.body (1s) per stream: a request body that stalls gets 408 (JSON) and a response
    the client does not read is reset; the connection serves other streams meanwhile."""
    be = t.backend()
    px = h2_proxy(t, be, server={"timeouts": {"body": "1s"}})
    with H2Conn(px.port, window=65535) as c:
        sid = c.request("POST", "/echo?stall=1", [("content-length", "1000")], end_stream=False)
        c.send_data(sid, b"x" * 10, end=False)
        t0 = time.monotonic()
        r = c.response(sid, 6)
        took = time.monotonic() - t0
        if r.headers:
            assert_error(r, 408)
        else:
            raise AssertionError("stalled request body: reset (%s) without a 408" % (
                ERRORS.get(r.rst)))
        assert 0.8 <= took <= 4, "408 after %.1fs (body timeout 1s)" % took
        r = c.fetch("GET", "/echo?between=1")
        assert r.status == 200, r
        # a response the client stops reading (its window shut) is reset
        c.auto_window = False
        sid = c.request("GET", "/big/%d" % (8 << 20))
        st = c.streams[sid]
        t0 = time.monotonic()
        c.wait(lambda: st.rst is not None or st.ended, 8, "a reset of the unread response")
        took = time.monotonic() - t0
        assert st.rst is not None and not st.ended, "the unread 8 MiB response ended?"
        print("report: unread response reset after %.1fs (%s)" % (took, ERRORS.get(st.rst)))
        assert took <= 5, took
        c.auto_window = True
        c.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 24)))
        r = c.fetch("GET", "/echo?after=1")
        assert r.status == 200, r
        bad = [g for g in c.goaways if g[1] != 0]
        assert not bad, bad
    assert not any("stall=1" in q["target"] and q["body_length"] == 1000 for q in be.requests)


def test_h2_connect_rejected(t):
    """CONNECT over HTTP/2 (no :path/:scheme) is answered 400, and nothing reaches the upstream;
    the connection goes on."""
    be = t.backend()
    px = h2_proxy(t, be)
    with H2Conn(px.port) as c:
        sid = c.next_sid
        c.next_sid += 2
        c.streams[sid] = H2Stream(sid, c.peer_initial_window)
        c.send_headers(sid, [(":method", "CONNECT"), (":authority", "example.test:443")], False)
        r = c.response(sid, 5)
        if r.headers:
            assert_error(r, 400)
        else:
            raise AssertionError("CONNECT: reset (%s) without a 400" % ERRORS.get(r.rst))
        r = c.fetch("GET", "/echo")
        assert r.status == 200, r
    assert be.served == 1, [q["target"] for q in be.requests]


def _established_to(port):
    """Established TCP connections on this host whose remote end is 127.0.0.1:port."""
    want = ":%04X" % port
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[2].endswith(want) and parts[3] == "01":
                n += 1
    return n


def test_h2_client_cancels_stream(t):
    """A client that stops reading a 50 MiB response (its window stays shut) and then cancels
    the stream (RST_STREAM CANCEL): proxyd holds little meanwhile, drops the upstream connection
    that was carrying the body, and the client connection goes on serving other streams."""
    be = t.backend()
    big = t.backend("big")
    px = h2_proxy(t, be, upstreams={"big": {"servers": [{"address": big.address}]}},
                  routes=[{"path": "/big", "upstream": "big"}, {"path": "/", "upstream": "b"}],
                  log={"format": "json"})
    base = px.rss_kib()
    with H2Conn(px.port, window=65535) as c:
        c.auto_window = False
        sid = c.request("GET", "/big/%d" % (50 << 20))
        st = c.streams[sid]
        c.wait(lambda: len(st.data) >= 65535 or st.ended, 5, "the first 64 KiB of /big")
        c.drain(1.0)
        assert len(st.data) <= 65535, "%d bytes sent past a 65,535-byte window" % len(st.data)
        assert _established_to(big.port) == 1, "no upstream connection carries /big"
        held = (px.rss_kib() - base) / 1024.0
        c.send(frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL)))
        c.auto_window = True
        c.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 24)))
        r = c.fetch("GET", "/echo?after-cancel=1")
        assert r.status == 200, r
        wait_until(lambda: _established_to(big.port) == 0, 3, 0.05,
                   "the upstream connection of the cancelled 50 MiB response is still open 3s "
                   "after RST_STREAM")
        r = c.fetch("GET", "/big/1000")
        assert r.status == 200 and len(r.body) == 1000, r
        assert not c.goaways, c.goaways
    print("report: proxyd RSS while a 50 MiB response waited on a shut window: +%.1f MiB" % held)
    if not harness.sanitized():
        assert held < 16, "proxyd took in %.1f MiB of a response the client was not reading" % (
            held)
    recs = wait_until(lambda: len(access_lines(px)) >= 3 and access_records(px), 3, 0.05)
    assert any(str(x.get("path", "")).startswith("/big/%d" % (50 << 20)) for x in recs), recs


def test_h2_idle_connections_time_out(t):
    """timeouts.keepalive (1s) closes an idle HTTP/2 connection after its last stream, and one
    that never sends a request; a connection with a request in flight is not cut."""
    be = t.backend()
    px = h2_proxy(t, be, server={"timeouts": {"keepalive": "1s", "header": "1s"}})
    with H2Conn(px.port) as used, H2Conn(px.port) as silent, H2Conn(px.port) as busy:
        sid = busy.request("GET", "/slow/2500")
        assert used.fetch("GET", "/echo").status == 200
        t0 = time.monotonic()
        closed_used = used.wait_closed(5)
        took_used = time.monotonic() - t0
        closed_silent = silent.wait_closed(1)
        r = busy.response(sid, 5)
        print("report: idle h2 connection closed after %.1fs (GOAWAY %r); never-used one: GOAWAY "
              "%r" % (took_used, [(g[0], ERRORS.get(g[1])) for g in used.goaways],
                      [(g[0], ERRORS.get(g[1])) for g in silent.goaways]))
        assert closed_used, "an idle HTTP/2 connection still open 5s after its last stream " \
                            "(keepalive 1s)"
        assert closed_silent, "an HTTP/2 connection that sent no request still open after 6s"
        assert r.status == 200 and r.body == b"slow 2500\n", r


# ----------------------------------------------------------------------------------------------
# 7. rapid reset (CVE-2023-44487)

@harness.timeout(60)
def test_h2_rapid_reset(t):
    """5000 HEADERS+RST_STREAM(CANCEL) pairs on one connection, as fast as they can be written:
    proxyd answers with GOAWAY(ENHANCE_YOUR_CALM) or ends the connection, the backend does not see
    thousands of requests, and the worker (same pid) answers a normal request at once."""
    be = t.backend()
    px = h2_proxy(t, be)
    pid = worker_pid(px)
    n_pairs = 5000
    block = hpack_block([(":method", "GET"), (":scheme", "http"), (":authority", "test.local"),
                         (":path", "/slow/200")])
    sent = 0
    stopped = None
    t0 = time.monotonic()
    with H2Conn(px.port, timeout=5) as c:
        sid = 1
        try:
            while sent < n_pairs:
                batch = bytearray()
                for _ in range(100):
                    batch += frame(HEADERS, END_HEADERS | END_STREAM, sid, block)
                    batch += frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL))
                    sid += 2
                c.send(bytes(batch))
                sent += 100
                if not c.drain(0.0) or c.goaways:
                    stopped = "goaway" if c.goaways else "closed"
                    break
        except H2Closed as e:
            stopped = "closed (%s)" % e
        except socket.timeout:
            stopped = "proxyd stopped reading"
        took = time.monotonic() - t0
        if not c.goaways and not c.eof:
            c.drain(3.0)     # also reads what came before a reset that failed our send
        closed = c.wait_closed(5.0) if not c.eof else True
        goaways = list(c.goaways)
        frames = c.describe_frames(8)
    print("report: rapid reset: %d pairs sent in %.2fs before %s; GOAWAY %r; closed %s; backend "
          "requests %d" % (sent, took, stopped or "the end of the burst",
                           [(g[0], ERRORS.get(g[1], g[1])) for g in goaways], closed, be.served))
    assert goaways or closed, ("after %d HEADERS+RST_STREAM pairs: no GOAWAY and the connection "
                               "is still open; last frames: %s" % (sent, frames))
    if goaways:
        desc = [(g[0], ERRORS.get(g[1], g[1])) for g in goaways]
        assert all(g[1] == ENHANCE_YOUR_CALM for g in goaways), (
            "GOAWAY (last stream, code) %r: expected ENHANCE_YOUR_CALM (0xb)" % desc)
        lasts = [g[0] for g in goaways]
        assert lasts == sorted(lasts, reverse=True), (
            "GOAWAY last-stream-ids %r increase (RFC 9113 6.8: MUST NOT): %r" % (lasts, desc))
    assert sent < n_pairs or goaways, "the whole burst was accepted and no GOAWAY came"
    assert closed, "the connection stayed open 5s after GOAWAY(ENHANCE_YOUR_CALM)"
    # the worker is responsive
    t1 = time.monotonic()
    first, headers, body = curl_h2(t, "http://127.0.0.1:%d/echo?after=1" % px.port,
                                   ["--max-time", "5"])
    assert first.startswith("HTTP/2 200"), first
    assert time.monotonic() - t1 < 2, "the request after the burst took %.1fs" % (
        time.monotonic() - t1)
    assert px.get("/echo?h1-after=1").status == 200
    assert worker_pid(px) == pid, "the worker was replaced (crashed?)"
    time.sleep(0.5)
    slow = sum(1 for q in be.requests if q["target"].startswith("/slow/"))
    assert slow < 1500, "the backend received %d of %d reset requests" % (slow, sent)


def _flood(px, c, batches, limit_s=20.0):
    """Write the byte strings from `batches` until proxyd ends the connection, stops reading
    (a send blocks for the socket timeout), sends GOAWAY, or the batches run out. Returns
    (bytes sent, how it stopped, peak RSS growth in MiB)."""
    base = px.rss_kib()
    peak = base
    sent = 0
    how = "all sent"
    deadline = time.monotonic() + limit_s
    for i, b in enumerate(batches):
        try:
            c.send(b)
        except H2Closed:
            how = "closed"
            break
        except socket.timeout:
            how = "proxyd stopped reading"
            break
        sent += len(b)
        if i % 16 == 0:
            peak = max(peak, px.rss_kib())
            if not c.drain(0.0):
                how = "closed"
                break
            if c.goaways:
                how = "goaway"
                break
        if time.monotonic() > deadline:
            how = "time limit"
            break
    peak = max(peak, px.rss_kib())
    return sent, how, (peak - base) / 1024.0


@harness.timeout(60)
def test_h2_continuation_flood(t):
    """A header block that never ends (HEADERS without END_HEADERS, then CONTINUATION frames of
    16 KiB each, up to 32 MiB; CVE-2024-27316 style): proxyd ends the connection long before, its
    memory stays small, and the worker goes on serving."""
    be = t.backend()
    px = h2_proxy(t, be)
    pid = worker_pid(px)

    def batches():
        yield frame(HEADERS, 0, 1, hpack_block([(":method", "GET"), (":scheme", "http"),
                                                (":authority", "x"), (":path", "/echo")]))
        piece = hpack_block([("x-flood", "v" * 16000)])
        one = frame(CONTINUATION, 0, 1, piece)
        for _ in range(2048 // 16):
            yield one * 16
    with H2Conn(px.port, timeout=3) as c:
        sent, how, grow = _flood(px, c, batches())
        if how in ("all sent", "time limit", "proxyd stopped reading"):
            closed = c.wait_closed(3)
        else:
            closed = True
        goaways = [(g[0], ERRORS.get(g[1], g[1])) for g in c.goaways]
        resp = c.streams.get(1)
    print("report: CONTINUATION flood: %.1f MiB written, then %s; GOAWAY %r; closed %s; RSS +%.1f "
          "MiB" % (sent / 1048576.0, how, goaways, closed, grow))
    assert resp is None or resp.headers is None or int(hget(resp.headers, ":status")) >= 400
    assert sent < 8 << 20, ("proxyd took %.1f MiB of one never-ending header block (%s)" % (
        sent / 1048576.0, how))
    assert closed, "the connection stayed open after the flood (%s)" % how
    if not harness.sanitized():
        assert grow < 16, "RSS grew by %.1f MiB during the flood" % grow
    r = curl_h2(t, "http://127.0.0.1:%d/echo?after=1" % px.port, ["--max-time", "5"])
    assert r[0].startswith("HTTP/2 200"), r[0]
    assert worker_pid(px) == pid, "the worker was replaced (crashed?)"
    assert be.served == 1, [q["target"] for q in be.requests]


@harness.timeout(60)
def test_h2_ping_flood_client_not_reading(t):
    """A client that sends PING frames (17 MiB of them) and never reads the ACKs (CVE-2019-9512
    style): proxyd ends the connection or stops reading it, without queueing ACKs in memory;
    the worker goes on serving."""
    be = t.backend()
    px = h2_proxy(t, be)
    pid = worker_pid(px)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # before connect: a small window
    s.settimeout(3)
    s.connect(("127.0.0.1", px.port))
    s.sendall(PREFACE + frame(SETTINGS, 0, 0))
    ping = frame(PING, 0, 0, b"12345678")
    batch = ping * 4096
    base = px.rss_kib()
    peak = base
    sent = 0
    how = "all sent"
    t0 = time.monotonic()
    try:
        for i in range(256):               # 256 x 4096 PINGs = 1M PINGs, 17 MiB
            try:
                s.sendall(batch)
            except (BrokenPipeError, ConnectionResetError):
                how = "closed"
                break
            except socket.timeout:
                how = "proxyd stopped reading"
                break
            sent += len(batch)
            if i % 8 == 0:
                peak = max(peak, px.rss_kib())
            if time.monotonic() - t0 > 30:
                how = "time limit"
                break
        peak = max(peak, px.rss_kib())
    finally:
        s.close()
    grow = (peak - base) / 1024.0
    print("report: PING flood without reading: %.1f MiB of PINGs written, then %s; RSS +%.1f MiB"
          % (sent / 1048576.0, how, grow))
    if not harness.sanitized():
        assert grow < 24, "proxyd's RSS grew by %.1f MiB queueing PING ACKs" % grow
    r = curl_h2(t, "http://127.0.0.1:%d/echo?after=1" % px.port, ["--max-time", "5"])
    assert r[0].startswith("HTTP/2 200"), r[0]
    assert worker_pid(px) == pid, "the worker was replaced (crashed?)"


# ----------------------------------------------------------------------------------------------
# 8. draining on reload

def _rewrite_config(px, tag):
    px.cfg = harness.merge(px.cfg, {"server": {"response_headers": {"X-Generation": tag}}})
    tmp = px.config_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(harness.to_toml(px.cfg))
    os.replace(tmp, px.config_path)


@harness.timeout(90)
def test_h2_reload_goaway_and_drain(t):
    """proxyctl reload with an HTTP/2 connection that has a 3 s request in flight and another
    idle one: both get GOAWAY (NO_ERROR); the in-flight response completes on the old worker;
    the idle connection is closed; new connections are served by the new generation; the old
    worker exits once its connections are gone (long before shutdown_timeout)."""
    be = t.backend()
    px = h2_proxy(t, be, server={"shutdown_timeout": "30s",
                                 "response_headers": {"X-Generation": "a"}})
    old = worker_pid(px)
    busy = H2Conn(px.port, timeout=15)
    idle = H2Conn(px.port, timeout=15)
    try:
        sid = busy.request("GET", "/slow/3000")
        wait_until(lambda: any(q["target"] == "/slow/3000" for q in be.requests), 3, 0.02,
                   "the slow request did not reach the backend")
        r = idle.fetch("GET", "/echo?idle=1")
        assert r.status == 200 and r.header("x-generation") == "a", r
        _rewrite_config(px, "b")
        t0 = time.monotonic()
        res = px.proxyctl("reload", timeout=30)
        assert res.returncode == 0, "reload: %s %s" % (res.stdout, res.stderr)
        g = busy.wait_goaway(5)
        print("report: GOAWAY on the busy connection %.2fs after reload started: last stream "
              "%d, %s" % (time.monotonic() - t0, g[0], ERRORS.get(g[1], g[1])))
        assert g[1] == 0, "GOAWAY with %s, expected NO_ERROR" % ERRORS.get(g[1], g[1])
        # after a shutdown notice (last = 2^31-1) the final GOAWAY names the last stream taken;
        # a stream opened after that one is not processed (refused or ignored)
        late = None
        try:
            busy.wait(lambda: any(x[0] < 0x7FFFFFFF for x in busy.goaways), 3,
                      "a final GOAWAY (last stream < 2^31-1)")
            late = busy.request("GET", "/echo?after-goaway=1")
        except AssertionError:
            print("report: no final GOAWAY within 3s of the shutdown notice while stream %d "
                  "was in flight" % sid)
        r = busy.response(sid, timeout=10)
        assert r.status == 200 and r.body == b"slow 3000\n", r
        assert r.header("x-generation") == "a", r.headers
        assert r.rst is None, r
        assert all(x[0] >= sid for x in busy.goaways), (
            "a GOAWAY's last stream id excludes the in-flight stream %d: %r" % (sid, busy.goaways))
        if late is not None:
            busy.drain(0.5)
            late_st = busy.streams[late]
            final = min(x[0] for x in busy.goaways)
            assert late_st.headers is None, (
                "stream %d opened after GOAWAY(last=%d) was answered: %r" % (
                    late, final, H2Response(late_st)))
            assert late_st.rst in (None, 7), (
                "late stream reset with %s, expected REFUSED_STREAM" % ERRORS.get(late_st.rst))
            assert not any("after-goaway" in q["target"] for q in be.requests), (
                "a stream opened after the final GOAWAY reached the upstream")
        gi = idle.wait_goaway(5)
        assert gi[1] == 0, gi
        assert idle.wait_closed(5), "the idle HTTP/2 connection was not closed after GOAWAY"
        # new connections: the new generation
        first, headers, body = curl_h2(t, "http://127.0.0.1:%d/echo?new=1" % px.port)
        assert first.startswith("HTTP/2 200") and hget(headers, "x-generation") == "b", (
            first, headers)
        busy_closed = busy.wait_closed(5)
    finally:
        busy.close()
        idle.close()
    print("report: busy connection closed by proxyd after its last stream: %s" % busy_closed)
    wait_until(lambda: not harness.pid_alive(old), 8, 0.1,
               "the old worker %d still runs 8s after its HTTP/2 connections ended "
               "(shutdown_timeout 30s)" % old)


@harness.timeout(60)
def test_h2_graceful_stop(t):
    """proxyctl stop with a 2 s HTTP/2 request in flight: GOAWAY (NO_ERROR) at once, the response
    completes, then proxyd exits."""
    be = t.backend()
    px = h2_proxy(t, be, server={"shutdown_timeout": "20s"})
    with H2Conn(px.port, timeout=15) as c:
        sid = c.request("GET", "/slow/2000")
        wait_until(lambda: be.served == 1, 3, 0.02)
        p = t.spawn([harness.PROXYCTL, "-s", px.control_socket, "stop"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        g = c.wait_goaway(5)
        assert g[1] == 0 and g[0] >= sid, g
        r = c.response(sid, 10)
        assert r.status == 200 and r.body == b"slow 2000\n", r
        assert c.wait_closed(5), "connection still open after its last stream while stopping"
    try:
        p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError("proxyctl stop did not return within 20s")
    assert px.wait_exit(10) is not None, "proxyd still running 10s after its last connection"


# ----------------------------------------------------------------------------------------------
# 9. metrics

def _requests_total(px, status=None):
    with harness.Conn(px.metrics_port, timeout=5) as c:
        r = c.request("GET", px.cfg["metrics"].get("path", "/metrics"))
    assert r.status == 200, r
    total = 0.0
    for line in r.body.decode().splitlines():
        m = re.match(r"proxyd_requests_total\{([^}]*)\}\s+(\S+)", line)
        if m and (status is None or 'status="%s"' % status in m.group(1)):
            total += float(m.group(2))
    return total


def test_h2_metrics_and_status(t):
    """Requests made over HTTP/2 count in proxyd_requests_total exactly (one per stream), as
    HTTP/1.1 ones do."""
    be = t.backend()
    px = h2_proxy(t, be, metrics={}, server={"workers": 2})
    base = _requests_total(px, 200)
    r, req, st = _h2load(t, "http://127.0.0.1:%d/echo?m=1" % px.port, 300, 2, 20)
    assert req[3] == 300 and st[0] == 300, (req, st, r.stdout)
    with H2Conn(px.port) as c:
        for i in range(5):
            assert c.fetch("GET", "/echo?raw=%d" % i).status == 200
        assert c.fetch("GET", "/status/404").status == 404
    assert px.get("/echo").status == 200
    try:
        wait_until(lambda: _requests_total(px, 200) - base == 306, 5, 0.1)
    except AssertionError:
        raise AssertionError("proxyd_requests_total{status=200} grew by %r, expected 306" % (
            _requests_total(px, 200) - base))
    time.sleep(0.5)
    assert _requests_total(px, 200) - base == 306
    assert _requests_total(px, 404) >= 1
