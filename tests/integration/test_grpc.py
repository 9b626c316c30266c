"""gRPC routes and HTTP/2 upstreams.

A route with protocol = "grpc" goes to an upstream with protocol = "h2c" (or "h2" over TLS): the
call is proxied on a stream of a shared HTTP/2 connection, trailers (grpc-status, grpc-message,
custom metadata) reach the client, server-streaming responses stream, grpc-timeout bounds the
upstream wait, and the proxy's own errors are trailers-only gRPC statuses (UNAVAILABLE when no
server answers, DEADLINE_EXCEEDED when the deadline passes).

The server is grpc_peer.py (python3-grpcio, generic handlers over raw bytes); the clients are
python3-grpcio channels (they speak HTTP/2 with prior knowledge: [server] h2c = true) and, for
the upstream side alone, raw HTTP/1.1 requests carrying gRPC frames.
"""

import json
import os
import ssl
import struct
import sys
import threading
import time

import grpc

import harness
from harness import wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "grpc_peer.py")
BIG = 4 * 1024 * 1024
MAX_MESSAGE = 64 * 1024 * 1024


# ----------------------------------------------------------------------------------------------
# helpers

class Peer:
    """A grpc_peer.py process on a free port of 127.0.0.1."""

    def __init__(self, t, name="g1", tls=None):
        self.name = name
        extra = ["--tls", tls.cert, tls.key] if tls else []
        self.log_path = t.path("%s.log" % name)
        for attempt in range(3):
            self.port = harness.free_port()
            ready = t.path("%s.%d.ready" % (name, attempt))
            with open(self.log_path, "ab") as log:
                self.proc = t.spawn([sys.executable, PEER, "--port", str(self.port),
                                     "--name", name, "--ready", ready] + extra,
                                    stdout=log, stderr=log)
            wait_until(lambda: os.path.exists(ready) or self.proc.poll() is not None, 15,
                       msg="grpc_peer %s did not start within 15s" % name)
            if os.path.exists(ready):
                break
        else:
            raise AssertionError("grpc_peer %s failed to start" % name)
        self.address = "127.0.0.1:%d" % self.port


def grpc_proxy(t, *addresses, route=None, server=None, upstream=None, h2c=True, name="proxyd"):
    """proxyd with h2c on its listener (unless h2c=False: HTTP/1.1 clients only), upstream "g"
    (h2c) and a gRPC route "/" -> "g"."""
    servers = [{"address": a} for a in addresses]
    cfg = {"server": harness.merge({"h2c": True} if h2c else {}, server or {}),
           "upstreams": {"g": harness.merge({"protocol": "h2c", "servers": servers},
                                            upstream or {})},
           "routes": [harness.merge({"path": "/", "upstream": "g", "protocol": "grpc"},
                                    route or {})]}
    return t.proxy(cfg, name=name)


class Client:
    """A gRPC channel to proxyd and the test.Echo methods, every call with a deadline."""

    def __init__(self, port):
        self.channel = grpc.insecure_channel(
            "127.0.0.1:%d" % port,
            options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                     ("grpc.max_send_message_length", MAX_MESSAGE),
                     ("grpc.enable_retries", 0)])
        self.unary = self.channel.unary_unary("/test.Echo/Unary")
        self.server_stream = self.channel.unary_stream("/test.Echo/ServerStream")
        self.client_stream = self.channel.stream_unary("/test.Echo/ClientStream")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.channel.close()


def frame(message):
    return b"\x00" + struct.pack(">I", len(message)) + message


def unframe(body):
    assert len(body) >= 5 and body[0] == 0, body[:16]
    (length,) = struct.unpack(">I", body[1:5])
    assert len(body) == 5 + length, (len(body), length)
    return body[5:]


GRPC_HEADERS = {"Content-Type": "application/grpc", "TE": "trailers"}


# ----------------------------------------------------------------------------------------------
# the upstream side, from an HTTP/1.1 client (gRPC frames in the body; trailers are dropped)

def test_h2c_upstream_from_http1_client(t):
    peer = Peer(t)
    for protocol in ("grpc", "http"):
        px = grpc_proxy(t, peer.address, route={"protocol": protocol}, h2c=False)
        r = px.request("POST", "/test.Echo/Unary", headers=GRPC_HEADERS, body=frame(b"hello"))
        assert r.status == 200, r
        assert r.header("content-type") == "application/grpc", r
        assert r.header("x-peer") == "g1", r
        assert unframe(r.body) == b"hello", r
        r = px.request("POST", "/test.Echo/Unary", headers=dict(GRPC_HEADERS, **{
            "X-Request-Id": "grpc-req-1", "X-Forwarded-For": "192.0.2.7"}),
            body=frame(b"headers"))
        assert r.status == 200, r
        seen = json.loads(unframe(r.body))
        assert seen["x-request-id"] == "grpc-req-1", seen
        assert seen["x-forwarded-for"] == "192.0.2.7, 127.0.0.1", seen
        assert seen["x-real-ip"] == "127.0.0.1" and seen["x-forwarded-proto"] == "http", seen
        assert r.header("x-request-id") == "grpc-req-1", r
        px.stop()


def test_h2c_upstream_large_bodies_from_http1_client(t):
    peer = Peer(t)
    px = grpc_proxy(t, peer.address, h2c=False)
    message = harness.pattern_bytes(BIG)
    r = px.request("POST", "/test.Echo/Unary", headers=GRPC_HEADERS, body=frame(message),
                   timeout=30)
    assert r.status == 200, r
    assert unframe(r.body) == message
    r = px.request("POST", "/test.Echo/Unary", headers=GRPC_HEADERS,
                   body=frame(b"big:%d" % BIG), timeout=30)
    assert unframe(r.body) == (bytes(range(256)) * (BIG // 256 + 1))[:BIG]


def test_grpc_errors_as_trailers_only_to_http1_client(t):
    px = grpc_proxy(t, t.refusing_address(), h2c=False)
    r = px.request("POST", "/test.Echo/Unary", headers=GRPC_HEADERS, body=frame(b"x"))
    assert r.status == 200, r
    assert r.header("content-type") == "application/grpc", r
    assert r.header("grpc-status") == "14", r
    assert r.header("content-length") == "0" and r.body == b"", r
    assert r.header("x-request-id"), r


def test_grpc_timeout_from_http1_client(t):
    """The proxy's own grpc-timeout handling, without a client timer that would fire first."""
    peer = Peer(t)
    px = grpc_proxy(t, peer.address, h2c=False)
    started = time.monotonic()
    r = px.request("POST", "/test.Echo/Unary", headers=dict(GRPC_HEADERS, **{
        "grpc-timeout": "300m"}), body=frame(b"sleep:5"))
    assert r.status == 200 and r.header("grpc-status") == "4", r
    assert 0.25 < time.monotonic() - started < 3
    # (The server got the deadline too, and may answer first with its own DEADLINE_EXCEEDED,
    # trailers-only: the same answer.) Without grpc-timeout the call is not cut.
    r = px.request("POST", "/test.Echo/Unary", headers=GRPC_HEADERS, body=frame(b"sleep:0.5"))
    assert r.status == 200 and unframe(r.body) == b"slept", r


def test_h2_upstream_over_tls(t):
    import test_tls
    ca = test_tls.make_ca(t)
    cert = test_tls.make_cert(t, ca, "grpc", ["grpc.test"])
    peer = Peer(t, tls=cert)
    server = {"address": peer.address, "tls": True, "sni": "grpc.test", "ca_file": ca.cert}
    px = t.proxy({"upstreams": {"g": {"protocol": "h2", "servers": [server]}},
                  "routes": [{"path": "/", "upstream": "g", "protocol": "grpc"}]})
    for i in range(3):
        r = px.request("POST", "/test.Echo/Unary", headers=GRPC_HEADERS, body=frame(b"tls%d" % i))
        assert r.status == 200 and unframe(r.body) == b"tls%d" % i, r
    r = px.request("POST", "/test.Echo/Unary", headers=GRPC_HEADERS, body=frame(b"headers"))
    assert json.loads(unframe(r.body))["x-forwarded-proto"] == "http"
    # A TLS server that does not select h2 in ALPN (an HTTPS/1.1 backend) is not spoken to.
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert.cert, cert.key)
    sctx.set_alpn_protocols(["http/1.1"])
    https = t.backend("https1", tls_context=sctx)
    plain = {"address": https.address, "tls": True, "sni": "grpc.test", "ca_file": ca.cert}
    px2 = t.proxy({"upstreams": {"g": {"protocol": "h2", "servers": [plain]}},
                   "routes": [{"path": "/", "upstream": "g", "protocol": "grpc"}]},
                  name="proxyd2")
    r = px2.request("POST", "/test.Echo/Unary", headers=GRPC_HEADERS, body=frame(b"x"))
    assert r.status == 200 and r.header("grpc-status") == "14", r
    wait_until(lambda: "did not select HTTP/2" in open(t.path("proxyd2/error.log")).read(), 5)


# ----------------------------------------------------------------------------------------------
# a gRPC client through proxyd

def test_grpc_unary_ok_and_trailers(t):
    peer = Peer(t)
    px = grpc_proxy(t, peer.address)
    with Client(px.port) as client:
        answer, call = client.unary.with_call(b"ping", timeout=10)
        assert answer == b"ping"
        assert call.code() == grpc.StatusCode.OK
        assert ("x-peer", "g1") in tuple(call.initial_metadata())
        assert ("x-peer-trailer", "g1") in tuple(call.trailing_metadata()), \
            call.trailing_metadata()
        # Many calls share one upstream connection, concurrently.
        results = [None] * 20

        def one(i):
            results[i] = client.unary(b"n%d" % i, timeout=10)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(15)
        assert results == [b"n%d" % i for i in range(20)]


@harness.timeout(60)
def test_grpc_server_streaming_streams(t):
    peer = Peer(t)
    px = grpc_proxy(t, peer.address)
    with Client(px.port) as client:
        arrivals = []
        for message in client.server_stream(b"5:400", timeout=20):
            arrivals.append((time.time(), json.loads(message)))
        assert [m["i"] for _, m in arrivals] == [0, 1, 2, 3, 4]
        # The first message arrived before the last one was even sent: nothing was buffered.
        first_arrival = arrivals[0][0]
        last_sent = arrivals[-1][1]["sent"]
        assert first_arrival < last_sent - 1.0, (first_arrival, last_sent)
        for arrived, message in arrivals:
            assert arrived - message["sent"] < 0.3, (arrived, message)


def test_grpc_non_ok_status_preserved(t):
    peer = Peer(t)
    px = grpc_proxy(t, peer.address)
    with Client(px.port) as client:
        try:
            client.unary(b"status:NOT_FOUND:no such thing \xc3\xa9 100%", timeout=10)
            raise AssertionError("the call succeeded")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, e
            assert e.details() == "no such thing \u00e9 100%", e.details()
            assert ("x-peer-trailer", "g1") in tuple(e.trailing_metadata())


def test_grpc_unavailable_when_upstream_down(t):
    px = grpc_proxy(t, t.refusing_address())
    with Client(px.port) as client:
        try:
            client.unary(b"x", timeout=10)
            raise AssertionError("the call succeeded")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e
    # A server that goes away is UNAVAILABLE too, and so is an upstream with every server down.
    peer = Peer(t, "g2")
    px2 = grpc_proxy(t, peer.address, name="proxyd2")
    with Client(px2.port) as client:
        assert client.unary(b"up", timeout=10) == b"up"
        peer.proc.kill()
        peer.proc.wait(10)
        try:
            client.unary(b"x", timeout=10)
            raise AssertionError("the call succeeded")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e


def test_grpc_deadline_exceeded(t):
    peer = Peer(t)
    px = grpc_proxy(t, peer.address)
    with Client(px.port) as client:
        started = time.monotonic()
        try:
            client.unary(b"sleep:5", timeout=0.5)
            raise AssertionError("the call succeeded")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e
        assert time.monotonic() - started < 3


@harness.timeout(90)
def test_grpc_large_unary(t):
    peer = Peer(t)
    px = grpc_proxy(t, peer.address)
    with Client(px.port) as client:
        message = harness.pattern_bytes(BIG)
        assert client.unary(message, timeout=30) == message
        assert client.client_stream(iter([b"a" * 100000] * 40), timeout=30) == b"40:4000000"


def test_grpc_client_cancel_resets_upstream_stream(t):
    peer = Peer(t)
    px = grpc_proxy(t, peer.address)
    with Client(px.port) as client:
        stream = client.server_stream(b"50:100", timeout=20)
        assert json.loads(next(stream))["i"] == 0
        stream.cancel()
        # The shared upstream connection is still good for the next calls.
        for i in range(3):
            assert client.unary(b"after%d" % i, timeout=10) == b"after%d" % i
        # Four calls logged: the cancelled stream among them.
        wait_until(lambda: open(t.path("proxyd/access.log")).read().count("/test.Echo/") == 4, 5)
