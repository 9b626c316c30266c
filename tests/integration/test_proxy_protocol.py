"""`[server] proxy_protocol = true`: every connection starts with a PROXY protocol v1 or v2 header
from an L4 balancer, and the address it carries is the client's (X-Forwarded-For, X-Real-IP).
A connection without a valid header is closed without a response and never reaches a backend.

With real_ip_header + trusted_proxies, the address from the PROXY header is the peer that
trusted_proxies is checked against (not the balancer's TCP address): the balancer is transparent,
as if the client had connected directly, so real_ip_header is believed only when the client named
by the PROXY header is itself a trusted proxy."""

import socket
import struct
import time

from harness import build_request, hall

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src, dst, sport=51000, dport=443):
    fam = "TCP6" if ":" in src else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def v2(src=None, dst=None, sport=51000, dport=443, command=1, tlvs=b""):
    """A v2 header; command 1 = PROXY, 0 = LOCAL (no addresses)."""
    if src is None:
        fam, block = 0x00, b""
    elif ":" in src:
        fam = 0x21
        block = (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
                 + struct.pack("!HH", sport, dport))
    else:
        fam = 0x11
        block = (socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(socket.AF_INET, dst)
                 + struct.pack("!HH", sport, dport))
    body = block + tlvs
    return V2_SIG + bytes([0x20 | command, fam]) + struct.pack("!H", len(body)) + body


def tlv(kind, value):
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def _setup(t, **server):
    be = t.backend()
    px = t.proxy_to(be, server=dict({"proxy_protocol": True}, **server))
    return px, be


def _seen(r):
    assert r.status == 200, r
    return [tuple(x) for x in r.json()["headers"]]


def _send_request(px, header, path="/echo", headers=None):
    with px.conn(timeout=5) as c:
        c.send(header + build_request("GET", path, headers))
        return c.read_response()


def _assert_client(r, ip, xff=None):
    h = _seen(r)
    assert hall(h, "X-Real-IP") == [ip], h
    assert hall(h, "X-Forwarded-For") == [xff or ip], h


def test_proxy_protocol_v1_ipv4(t):
    px, be = _setup(t)
    _assert_client(_send_request(px, v1("203.0.113.7", "127.0.0.1")), "203.0.113.7")
    assert be.served == 1


def test_proxy_protocol_v1_ipv6(t):
    px, be = _setup(t)
    _assert_client(_send_request(px, v1("2001:db8::42", "2001:db8::1")), "2001:db8::42")


def test_proxy_protocol_v1_unknown_keeps_peer(t):
    px, be = _setup(t)
    _assert_client(_send_request(px, b"PROXY UNKNOWN\r\n"), "127.0.0.1")


def test_proxy_protocol_v2_ipv4_with_tlvs(t):
    px, be = _setup(t)
    hdr = v2("198.51.100.23", "127.0.0.1", tlvs=tlv(0x01, b"http/1.1") + tlv(0x04, b"\0" * 7))
    _assert_client(_send_request(px, hdr), "198.51.100.23")


def test_proxy_protocol_v2_ipv6(t):
    px, be = _setup(t)
    _assert_client(_send_request(px, v2("2001:db8:aa::5", "2001:db8::1")), "2001:db8:aa::5")


def test_proxy_protocol_v2_local_keeps_peer(t):
    """LOCAL: the balancer's own health check; the TCP peer is the client."""
    px, be = _setup(t)
    _assert_client(_send_request(px, v2(command=0)), "127.0.0.1")


def test_proxy_protocol_header_in_pieces(t):
    """The header may arrive in several segments, and split from the request."""
    px, be = _setup(t)
    hdr = v2("192.0.2.99", "127.0.0.1")
    with px.conn(timeout=5) as c:
        for piece in (hdr[:5], hdr[5:14], hdr[14:20], hdr[20:]):
            c.send(piece)
            time.sleep(0.05)
        c.send(build_request("GET", "/echo"))
        _assert_client(c.read_response(), "192.0.2.99")
    with px.conn(timeout=5) as c:
        hdr = v1("192.0.2.98", "127.0.0.1")
        c.send(hdr[:9])
        time.sleep(0.05)
        c.send(hdr[9:] + build_request("GET", "/echo")[:10])
        time.sleep(0.05)
        c.send(build_request("GET", "/echo")[10:])
        _assert_client(c.read_response(), "192.0.2.98")


def test_proxy_protocol_keepalive(t):
    """One header, then several requests on the connection: all carry the header's address."""
    px, be = _setup(t)
    with px.conn(timeout=5) as c:
        c.send(v1("203.0.113.50", "127.0.0.1"))
        for _ in range(2):
            _assert_client(c.request("GET", "/echo"), "203.0.113.50")
        # pipelined after the header too
        c.send(build_request("GET", "/echo") + build_request("GET", "/echo"))
        _assert_client(c.read_response(), "203.0.113.50")
        _assert_client(c.read_response(), "203.0.113.50")
    assert be.served == 4


def test_proxy_protocol_header_only_at_start(t):
    """A second PROXY line later on the connection is not a header but a malformed request."""
    px, be = _setup(t)
    with px.conn(timeout=5) as c:
        c.send(v1("203.0.113.50", "127.0.0.1"))
        _assert_client(c.request("GET", "/echo"), "203.0.113.50")
        c.send(v1("198.51.100.1", "127.0.0.1") + build_request("GET", "/echo"))
        r = c.read_response()
        assert r.status == 400, r
    assert be.served == 1


def _assert_dropped(px, data, close_within=3.0):
    """The proxy closes the connection without sending a byte."""
    with px.conn(timeout=5) as c:
        try:
            c.send(data)
        except OSError:
            return
        t0 = time.monotonic()
        got = b""
        while time.monotonic() - t0 < close_within:
            c.sock.settimeout(max(0.05, close_within - (time.monotonic() - t0)))
            try:
                chunk = c.sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                assert got == b"", "response sent before closing: %r" % got[:200]
                return
            got += chunk
        raise AssertionError("connection not closed within %.1fs (got %r) after %r" % (
            close_within, got[:200], data[:60]))


def test_proxy_protocol_missing_header_dropped(t):
    px, be = _setup(t)
    _assert_dropped(px, build_request("GET", "/echo"))
    _assert_dropped(px, b"PROXY TCP4 203.0.113.7 127.0.0.1 80\r\n" + build_request("GET", "/"))
    _assert_dropped(px, b"PROXY TCP4 203.0.113.7  127.0.0.1 80 443\r\n")   # double space
    _assert_dropped(px, b"PROXY TCP4 2001:db8::1 127.0.0.1 80 443\r\n")    # wrong family
    _assert_dropped(px, b"PROXY TCP4 203.0.113.7 127.0.0.1 80 65536\r\n")
    _assert_dropped(px, b"PROXY UNKNOWN " + b"x" * 120 + b"\r\n")         # longer than 107
    _assert_dropped(px, V2_SIG + b"\x11\x11\x00\x0c" + b"\0" * 12)          # version 1
    _assert_dropped(px, V2_SIG + b"\x21\x12\x00\x0c" + b"\0" * 12)          # DGRAM
    _assert_dropped(px, V2_SIG + b"\x21\x11\x00\x04" + b"\0" * 4)           # short block
    _assert_dropped(px, V2_SIG + b"\x21\x11\xff\xff" + b"\0" * 100)         # length > 4096
    _assert_dropped(px, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")   # a TLS ClientHello
    assert be.served == 0, be.requests
    assert be.connections == 0, "a connection without a PROXY header reached the backend"
    # the proxy is still fine
    _assert_client(_send_request(px, v1("203.0.113.7", "127.0.0.1")), "203.0.113.7")


def test_proxy_protocol_incomplete_header_times_out(t):
    """A connection stuck in the middle of its PROXY header is bounded by the header timeout."""
    px, be = _setup(t, timeouts={"header": "1s"})
    t0 = time.monotonic()
    _assert_dropped(px, b"PROXY TCP4 203.0.113.7 ", close_within=4.0)
    assert time.monotonic() - t0 >= 0.5
    _assert_dropped(px, V2_SIG[:7], close_within=4.0)
    assert be.served == 0


def test_proxy_protocol_with_trusted_proxies(t):
    """The PROXY address is the peer checked against trusted_proxies. 127.0.0.0/8 (the
    balancer's own TCP address here) is trusted too, to show that it is not what is checked."""
    px, be = _setup(t, real_ip_header="X-Forwarded-For",
                    trusted_proxies=["10.0.0.0/8", "127.0.0.0/8"])
    # a trusted proxy in front of the balancer: its X-Forwarded-For is believed
    r = _send_request(px, v1("10.1.2.3", "127.0.0.1"),
                      headers={"X-Forwarded-For": "203.0.113.7"})
    h = _seen(r)
    assert hall(h, "X-Real-IP") == ["203.0.113.7"], h
    assert hall(h, "X-Forwarded-For") == ["203.0.113.7, 10.1.2.3"], h
    # an untrusted client: its X-Forwarded-For is only appended to, never believed, even though
    # the TCP peer (127.0.0.1) is in trusted_proxies
    r = _send_request(px, v1("198.51.100.9", "127.0.0.1"),
                      headers={"X-Forwarded-For": "203.0.113.7"})
    h = _seen(r)
    assert hall(h, "X-Real-IP") == ["198.51.100.9"], h
    assert hall(h, "X-Forwarded-For") == ["203.0.113.7, 198.51.100.9"], h
    # v2 and IPv6 alike
    r = _send_request(px, v2("2001:db8::9", "2001:db8::1"),
                      headers={"X-Forwarded-For": "203.0.113.7"})
    assert hall(_seen(r), "X-Real-IP") == ["2001:db8::9"]
    # LOCAL keeps the TCP peer, which is trusted here
    r = _send_request(px, v2(command=0), headers={"X-Forwarded-For": "203.0.113.8"})
    assert hall(_seen(r), "X-Real-IP") == ["203.0.113.8"]


def test_proxy_protocol_off_by_default(t):
    """Without proxy_protocol a PROXY line is just a malformed request (400)."""
    be = t.backend()
    px = t.proxy_to(be)
    r = px.send_raw(v1("203.0.113.7", "127.0.0.1") + build_request("GET", "/echo"))
    assert r.status == 400, r
    assert be.served == 0
