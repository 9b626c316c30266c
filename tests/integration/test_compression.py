"""Response compression ([compression], route `compress`): gzip and br bodies that decode (Python's
gzip/zlib, the gzip and brotli command-line tools, curl --compressed) to the upstream's bytes,
Accept-Encoding negotiation with q-values and the server's order, the cases left alone (type,
min_size, upstream Content-Encoding, compress = false, 206/304, no [compression]), streaming
(each upstream read flushed), ETag made weak, Vary, HEAD, compression of cache hits (also over
h2c), unknown-length, empty and 3 MB bodies, and an HTTP/1.0 client (body delimited by
close)."""

import gzip
import random
import subprocess
import time
import zlib

import harness
from harness import build_request, parse_head, hget
from test_cache import Origin, cache_proxy, fetch

WORDS = ("proxy cache worker upstream route header request response stream buffer socket "
         "listener compression brotli gzip deflate chunk vary etag client server master "
         "config reload metric latency throughput").split()


def page(n=100 * 1000, seed=1):
    """n bytes of HTML-ish text: compressible, repetitive but not trivially (seeded words)."""
    rnd = random.Random(seed)
    out = bytearray(b"<!doctype html><html><body>\n")
    i = 0
    while len(out) < n:
        i += 1
        words = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(4, 14)))
        out += ("<p id=\"p%d\" class=\"c%d\">%s %d</p>\n" % (
            i, rnd.randint(0, 9), words, rnd.randint(0, 100000))).encode()
    return bytes(out[:n])


BODY = page()


def comp_proxy(t, o, compression=None, routes=None, **cfg):
    """proxyd with [compression] (the given keys; {} = defaults) and route "/" -> o."""
    return t.proxy_to(o, routes=routes or [{"path": "/", "upstream": "b"}],
                      compression=compression if compression is not None else {}, **cfg)


def html(o, path, body=BODY, headers=(), ctype="text/html", **kw):
    o.answer(path, headers=[("Content-Type", ctype)] + list(headers), body=body, **kw)


def get(px, path, ae=None, method="GET", version="HTTP/1.1", headers=None):
    h = dict(headers or {})
    if ae is not None:
        h["Accept-Encoding"] = ae
    return px.request(method, path, headers=h, version=version)


def vary_tokens(r):
    return [v.strip().lower() for h in r.header_all("Vary") for v in h.split(",") if v.strip()]


def brotli_d(data):
    p = subprocess.run(["brotli", "-d", "-c"], input=data, capture_output=True, timeout=20)
    assert p.returncode == 0, "brotli -d failed (%d): %r" % (p.returncode, p.stderr[:300])
    return p.stdout


def gzip_d_cli(data):
    p = subprocess.run(["gzip", "-d", "-c"], input=data, capture_output=True, timeout=20)
    assert p.returncode == 0, "gzip -d failed (%d): %r" % (p.returncode, p.stderr[:300])
    return p.stdout


def assert_compressed(r, enc, original=BODY, what=""):
    ctx = "%s (%s)" % (what, enc)
    assert r.status == 200, "%s: %r" % (ctx, r)
    assert r.header("Content-Encoding") == enc, "%s: Content-Encoding %r: %r" % (
        ctx, r.header("Content-Encoding"), r)
    assert not r.has("Content-Length"), "%s: Content-Length kept: %r" % (ctx, r)
    assert "accept-encoding" in vary_tokens(r), "%s: no Vary: Accept-Encoding: %r" % (ctx, r)
    assert len(r.body) < len(original), "%s: %d compressed bytes for %d" % (
        ctx, len(r.body), len(original))
    if enc == "gzip":
        assert gzip.decompress(r.body) == original, "%s: gzip.decompress differs" % ctx
        assert gzip_d_cli(r.body) == original, "%s: gzip -d differs" % ctx
    else:
        assert brotli_d(r.body) == original, "%s: brotli -d differs" % ctx


def assert_identity(r, original=BODY, vary=None, what=""):
    assert r.status == 200, "%s: %r" % (what, r)
    assert not r.has("Content-Encoding"), "%s: Content-Encoding %r" % (
        what, r.header("Content-Encoding"))
    assert r.body == original, "%s: body of %d bytes differs from the %d upstream bytes" % (
        what, len(r.body or b""), len(original))
    if vary is True:
        assert "accept-encoding" in vary_tokens(r), "%s: no Vary: Accept-Encoding: %r" % (
            what, r)
    elif vary is False:
        assert "accept-encoding" not in vary_tokens(r), "%s: Vary: Accept-Encoding on a " \
            "response that was never a compression candidate: %r" % (what, r)


# ----------------------------------------------------------------------------------------------

def test_compression_gzip(t):
    o = Origin(t)
    html(o, "/p")
    px = comp_proxy(t, o)
    r = get(px, "/p", "gzip")
    assert_compressed(r, "gzip", what="Accept-Encoding: gzip")
    assert r.header("Transfer-Encoding", "").lower() == "chunked", r
    # keep-alive: the chunked compressed body ends cleanly, the next request works
    with px.conn() as c:
        for i in range(3):
            r = c.request("GET", "/p", headers={"Accept-Encoding": "gzip"})
            assert gzip.decompress(r.body) == BODY, i
        r = c.request("GET", "/p")
        assert_identity(r, vary=True, what="no Accept-Encoding after gzip on one connection")


def test_compression_br(t):
    o = Origin(t)
    html(o, "/p", ctype="text/html; charset=utf-8")
    px = comp_proxy(t, o)
    r = get(px, "/p", "br")
    assert_compressed(r, "br", what="Accept-Encoding: br, text/html; charset=utf-8")
    assert r.header("Content-Type") == "text/html; charset=utf-8"


def test_compression_curl(t):
    o = Origin(t)
    html(o, "/p")
    html(o, "/j", ctype="application/json", body=b'{"k": [' + b", ".join(
        b'"%d"' % i for i in range(20000)) + b"]}")
    px = comp_proxy(t, o)
    for path, extra, enc, want in (("/p", [], "br", BODY),
                                   ("/p", ["-H", "Accept-Encoding: gzip"], "gzip", BODY),
                                   ("/j", [], "br", o.answers["/j"]["body"])):
        hdr, out = t.path("h.txt"), t.path("b.bin")
        r = t.run(["curl", "-sS", "--compressed", "-D", hdr, "-o", out, "--max-time", "15"]
                  + extra + [px.url + path])
        assert r.returncode == 0, r.stderr
        heads = open(hdr, "rb").read().decode("latin-1").lower()
        assert "content-encoding: %s" % enc in heads, (extra, heads)
        assert open(out, "rb").read() == want, "curl --compressed %r: body differs" % extra


def test_compression_q_values(t):
    o = Origin(t)
    html(o, "/p")
    px = comp_proxy(t, o)
    for ae, enc in (("gzip;q=0.5, br;q=0.9", "br"),
                    ("gzip;q=0.9, br;q=0.5", "gzip"),
                    ("br;q=0, gzip", "gzip"),
                    ("gzip, br", "br"),              # tie: server order (br first)
                    ("deflate, gzip;q=1.0, br;q=0.999", "gzip"),
                    ("GZIP", "gzip"),
                    ("*", "br"),
                    ("gzip;q=0, *", "br"),
                    ("br;q=0, *;q=0.5", "gzip"),
                    ("x-custom, gzip ; q=0.8", "gzip")):
        assert_compressed(get(px, "/p", ae), enc, what="Accept-Encoding: %s" % ae)
    for ae in ("identity", "gzip;q=0, br;q=0", "deflate", "*;q=0", "", "br;q=0, gzip;q=0.000"):
        assert_identity(get(px, "/p", ae), vary=True, what="Accept-Encoding: %r" % ae)
    assert_identity(get(px, "/p"), vary=True, what="no Accept-Encoding")


def test_compression_unknown_length_and_large(t):
    o = Origin(t)
    small = page(300, seed=4)
    o.answer("/chunked-small", headers=[("Content-Type", "text/html")],
             chunks=[(small[:100], 0), (small[100:], 0)])
    html(o, "/close", no_length=True)
    large = page(3 * 1000 * 1000, seed=5)
    html(o, "/large", body=large)
    px = comp_proxy(t, o, {"min_size": "1KiB"})
    r = get(px, "/chunked-small", "gzip")
    assert_compressed(r, "gzip", small, what="chunked upstream (length unknown), 300 bytes")
    for enc in ("gzip", "br"):
        assert_compressed(get(px, "/close", enc), enc, what="close-delimited upstream")
        assert_compressed(get(px, "/large", enc), enc, large, what="3 MB body")


def test_compression_server_order(t):
    o = Origin(t)
    html(o, "/p")
    px = comp_proxy(t, o, {"algorithms": ["gzip", "br"]})
    assert_compressed(get(px, "/p", "br, gzip"), "gzip", what="algorithms gzip first, a tie")
    assert_compressed(get(px, "/p", "br;q=1, gzip;q=0.5"), "br", what="client prefers br")
    px2 = comp_proxy(t, o, {"algorithms": ["gzip"]}, name="gzip-only")
    assert_identity(get(px2, "/p", "br"), vary=True,
                    what="algorithms = [gzip], Accept-Encoding: br")
    assert_compressed(get(px2, "/p", "br, gzip"), "gzip", what="algorithms = [gzip]")


def test_compression_not_applied(t):
    o = Origin(t)
    html(o, "/png", ctype="image/png")
    html(o, "/tiny", body=b"<p>tiny</p>" * 9)    # 99 bytes < min_size 1KiB
    pre = gzip.compress(BODY)
    html(o, "/pre", body=pre, headers=[("Content-Encoding", "gzip")])
    html(o, "/partial", body=BODY[:50000], headers=[("Content-Range", "bytes 0-49999/100000")],
         status=206)
    o.answer("/nm", status=304, headers=[("Content-Type", "text/html"), ("ETag", '"n"')])
    html(o, "/off/p")
    px = comp_proxy(t, o, {"min_size": "1KiB"},
                    routes=[{"path": "/off", "upstream": "b", "compress": False},
                            {"path": "/", "upstream": "b"}])
    for ae in ("gzip", "br"):
        assert_identity(get(px, "/png", ae), vary=False, what="image/png, %s" % ae)
        r = get(px, "/tiny", ae)
        assert_identity(r, b"<p>tiny</p>" * 9, what="99 bytes < min_size, %s" % ae)
        r = get(px, "/pre", ae)
        assert r.header("Content-Encoding") == "gzip" and r.body == pre, (
            "upstream Content-Encoding: gzip must pass untouched (%s): %r" % (ae, r))
        r = get(px, "/partial", ae)
        assert r.status == 206 and not r.has("Content-Encoding") and r.body == BODY[:50000], (
            "206 (%s): %r" % (ae, r))
        r = get(px, "/nm", ae)
        assert r.status == 304 and not r.has("Content-Encoding") and not r.body, (
            "304 (%s): %r" % (ae, r))
        assert_identity(get(px, "/off/p", ae), vary=False, what="route compress = false, %s" % ae)
    # the section absent: nothing is compressed, no Vary added
    px2 = t.proxy_to(o, name="nocompression")
    for ae in ("gzip", "br", "gzip, br"):
        assert_identity(get(px2, "/tiny", ae), b"<p>tiny</p>" * 9, vary=False,
                        what="no [compression], %s" % ae)
        r = px2.request("GET", "/off/p", headers={"Accept-Encoding": ae})
        assert_identity(r, vary=False, what="no [compression], %s" % ae)
        assert r.header("Content-Length") == str(len(BODY)), r


def test_compression_types(t):
    o = Origin(t)
    for path, ctype in (("/css", "text/css"), ("/csv", "text/csv"), ("/json", "application/json"),
                        ("/js", "application/javascript"), ("/xml", "application/xml"),
                        ("/upper", "TEXT/CSS; charset=UTF-8")):
        html(o, path, ctype=ctype)
    px = comp_proxy(t, o)   # the default types
    for path in ("/css", "/json", "/js", "/upper"):
        assert_compressed(get(px, path, "gzip"), "gzip", what="default types, %s" % path)
    for path in ("/csv", "/xml"):
        assert_identity(get(px, path, "gzip"), vary=False, what="default types, %s" % path)
    px2 = comp_proxy(t, o, {"types": ["text/*"]}, name="wild")
    for path in ("/css", "/csv", "/upper"):
        assert_compressed(get(px2, path, "gzip"), "gzip", what="types text/*, %s" % path)
    for path in ("/json", "/xml"):
        assert_identity(get(px2, path, "gzip"), vary=False, what="types text/*, %s" % path)


def test_compression_head(t):
    o = Origin(t)
    html(o, "/p")
    px = comp_proxy(t, o)
    r = get(px, "/p", "gzip", method="HEAD")
    assert r.status == 200 and r.header("Content-Encoding") == "gzip", r
    assert "accept-encoding" in vary_tokens(r), r
    assert not r.has("Content-Length"), "HEAD: the same headers as the GET (no CL): %r" % r
    with px.conn() as c:     # nothing follows the head on the connection
        r = c.request("HEAD", "/p", headers={"Accept-Encoding": "br"})
        assert r.header("Content-Encoding") == "br", r
        r = c.request("GET", "/p", headers={"Accept-Encoding": "gzip"})
        assert gzip.decompress(r.body) == BODY


def _read_chunks_timed(c, deadline):
    """(monotonic time, data) of every chunk of a chunked body until the last chunk."""
    rd = c.rd
    out = []
    while time.monotonic() < deadline:
        line = rd.read_line().strip()
        size = int(line.split(b";")[0], 16)
        if size == 0:
            while rd.read_line() not in (b"\r\n", b"\n"):
                pass
            return out
        parts = []
        rd.read_exact(size, parts.append)
        out.append((time.monotonic(), b"".join(parts)))
        assert rd.read_line() in (b"\r\n", b"\n")
    raise AssertionError("chunked body not finished in time")


@harness.timeout(30)
def test_compression_streaming(t):
    o = Origin(t)
    first, second = page(6000, seed=2), page(6000, seed=3)
    o.answer("/s", headers=[("Content-Type", "text/html")], chunks=[(first, 1.5), (second, 0)])
    px = comp_proxy(t, o)
    with px.conn() as c:
        c.send(build_request("GET", "/s", headers={"Accept-Encoding": "gzip"}))
        head = c.rd.read_head()
        status, headers = parse_head(head)
        assert " 200 " in status and hget(headers, "Content-Encoding") == "gzip", head
        d = zlib.decompressobj(31)
        got = b""
        first_done = None
        chunks = _read_chunks_timed(c, time.monotonic() + 10)
    for when, data in chunks:
        got += d.decompress(data)
        if first_done is None and len(got) >= len(first):
            first_done = when
    assert got == first + second and d.eof, "the stream decodes to %d bytes, expected %d" % (
        len(got), len(first + second))
    sent = o.sent["/s"]
    assert len(sent) == 2
    assert first_done is not None and first_done < sent[1], (
        "the first piece decoded only %.2fs after the upstream sent it (the second was sent "
        "%.2fs after it): not flushed per upstream read" % (first_done - sent[0],
                                                              sent[1] - sent[0]))
    # br: bytes arrive before the second piece is sent too
    with px.conn() as c:
        c.send(build_request("GET", "/s", headers={"Accept-Encoding": "br"}))
        head = c.rd.read_head()
        assert hget(parse_head(head)[1], "Content-Encoding") == "br", head
        chunks = _read_chunks_timed(c, time.monotonic() + 10)
    sent = o.sent["/s"][2:]
    early = b"".join(d for when, d in chunks if when < sent[1])
    assert early, "br: nothing arrived before the upstream's second piece"
    assert brotli_d(b"".join(d for _, d in chunks)) == first + second
    # the brotli tool prints nothing for a stream that is cut short, curl's decoder does: curl
    # gives up during the upstream's pause with what it decoded, which must be the first piece
    out = t.path("early.txt")
    r = t.run(["curl", "-sS", "--compressed", "-N", "-H", "Accept-Encoding: br", "--max-time",
               "1.0", "-o", out, px.url + "/s"])
    assert r.returncode == 28, "curl ended with %d, expected 28 (timed out in the pause): %s" % (
        r.returncode, r.stderr)
    got = open(out, "rb").read()
    assert got == first, "br: the bytes before the pause decode to %d bytes of %d" % (
        len(got), len(first))


def test_compression_etag_weak(t):
    o = Origin(t)
    html(o, "/strong", headers=[("ETag", '"abc"')])
    html(o, "/weak", headers=[("ETag", 'W/"xyz"')])
    px = comp_proxy(t, o)
    r = get(px, "/strong", "gzip")
    assert r.header("Content-Encoding") == "gzip" and r.header("ETag") == 'W/"abc"', r
    r = get(px, "/strong", "br")
    assert r.header("Content-Encoding") == "br" and r.header("ETag") == 'W/"abc"', r
    r = get(px, "/strong")
    assert not r.has("Content-Encoding") and r.header("ETag") == '"abc"', r
    r = get(px, "/weak", "gzip")
    assert r.header("Content-Encoding") == "gzip" and r.header("ETag") == 'W/"xyz"', r


def test_compression_vary_merged(t):
    o = Origin(t)
    html(o, "/v", headers=[("Vary", "Accept-Language")])
    px = comp_proxy(t, o)
    for ae in ("gzip", None):
        r = get(px, "/v", ae)
        toks = vary_tokens(r)
        assert "accept-language" in toks and "accept-encoding" in toks, (ae, r.header_all("Vary"))
        assert toks.count("accept-encoding") == 1, r.header_all("Vary")


def test_compression_of_cache_hits(t):
    o = Origin(t)
    html(o, "/c", headers=[("ETag", '"c1"')])
    px = cache_proxy(t, o, compression={})
    r = fetch(px, "/c", "MISS", headers={"Accept-Encoding": "gzip"})
    assert_compressed(r, "gzip", what="cache MISS")
    r = fetch(px, "/c", "HIT", headers={"Accept-Encoding": "br"})
    assert_compressed(r, "br", what="cache HIT")
    assert r.header("ETag") == 'W/"c1"', r
    r = fetch(px, "/c", "HIT")
    assert_identity(r, vary=True, what="cache HIT, no Accept-Encoding")
    assert r.header("ETag") == '"c1"', r
    r = fetch(px, "/c", "HIT", headers={"Accept-Encoding": "gzip, br;q=0.1"})
    assert_compressed(r, "gzip", what="cache HIT")
    assert o.count("/c") == 1, "backend saw %d, expected 1" % o.count("/c")
    # the upstream was asked without a preference the cache would have to remember
    r = fetch(px, "/c", "HIT", headers={"Accept-Encoding": "gzip", "If-None-Match": 'W/"c1"'},
              status=304)
    assert not r.body
    # The 304 names what its 200 would have varied on (RFC 9110 15.4.5).
    assert "accept-encoding" in vary_tokens(r), r


def test_compression_http10_close_delimited(t):
    o = Origin(t)
    html(o, "/p")
    px = comp_proxy(t, o)
    for extra in ({}, {"Connection": "keep-alive"}):
        with px.conn() as c:
            r = c.request("GET", "/p", headers=dict({"Accept-Encoding": "gzip"}, **extra),
                          version="HTTP/1.0")
            assert r.header("Content-Encoding") == "gzip", r
            assert not r.has("Content-Length") and not r.has("Transfer-Encoding"), (
                "HTTP/1.0 %r: %r" % (extra, r))
            assert gzip.decompress(r.body) == BODY
            assert c.wait_closed(3.0), "the connection stayed open after a close-delimited body"
    with px.conn() as c:   # no compression asked: the length is known
        r = c.request("GET", "/p", headers={"Connection": "keep-alive"}, version="HTTP/1.0")
        assert r.header("Content-Length") == str(len(BODY)) and r.body == BODY, r


def test_compression_and_cache_h2c(t):
    o = Origin(t)
    html(o, "/c")
    px = cache_proxy(t, o, compression={}, server={"h2c": True})
    seen = []
    for extra, enc in (([], "br"), (["-H", "Accept-Encoding: gzip"], "gzip"), ([], "br"),
                       (None, None)):
        hdr, out = t.path("h.txt"), t.path("b.bin")
        args = ["curl", "-sS", "--http2-prior-knowledge", "-D", hdr, "-o", out,
                "--max-time", "15"]
        args += ["--compressed"] + extra if extra is not None else []
        r = t.run(args + [px.url + "/c"])
        assert r.returncode == 0, r.stderr
        heads = open(hdr, "rb").read().decode("latin-1").lower()
        assert heads.startswith("http/2 200"), heads
        if enc:
            assert "content-encoding: %s" % enc in heads, heads
        else:
            assert "content-encoding" not in heads, heads
        assert "vary: accept-encoding" in heads, heads
        assert open(out, "rb").read() == BODY, "h2c %r: body differs" % extra
        seen.append(next((l.split(":", 1)[1].strip() for l in heads.splitlines()
                          if l.startswith("x-cache:")), None))
    assert seen == ["miss", "hit", "hit", "hit"], seen
    assert o.count("/c") == 1


def test_compression_empty_and_tiny_unknown_length(t):
    """A compressed answer is a valid stream even when the upstream sends no body bytes."""
    o = Origin(t)
    o.answer("/empty", headers=[("Content-Type", "text/html")], chunks=[])
    o.answer("/one", headers=[("Content-Type", "text/html")], chunks=[(b"x", 0)])
    o.answer("/nobody", status=204, headers=[("Content-Type", "text/html")])
    px = comp_proxy(t, o)
    for path, want in (("/empty", b""), ("/one", b"x")):
        for enc in ("gzip", "br"):
            r = get(px, path, enc)
            assert r.status == 200, r
            if r.has("Content-Encoding"):
                assert r.header("Content-Encoding") == enc, r
                got = gzip.decompress(r.body) if enc == "gzip" else brotli_d(r.body)
                assert got == want, (path, enc, r)
            else:
                assert r.body == want, (path, enc, r)
    r = get(px, "/nobody", "gzip")
    assert r.status == 204 and not r.has("Content-Encoding") and not r.body, r
    # Content-Length: 0 with min_size = 0: nothing to compress, no Content-Encoding on no bytes.
    o.answer("/zero", headers=[("Content-Type", "text/html")], body=b"")
    px0 = comp_proxy(t, o, compression={"min_size": "0B"}, name="proxyd-min0")
    for enc in ("gzip", "br"):
        r = get(px0, "/zero", enc)
        assert r.status == 200 and not r.has("Content-Encoding") and r.body == b"", (enc, r)
