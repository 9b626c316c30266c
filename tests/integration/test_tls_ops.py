"""TLS operations: proxyctl reload-tls, workers without privileges (keys read by the master
only), PROXY protocol before the handshake, session tickets kept across a binary upgrade.
Certificates come from test_tls's helpers (openssl CLI)."""

import os
import pwd
import socket
import ssl
import time

import harness
from test_tls import (client_ctx, fmt_utc, https_get, make_ca, make_cert, make_expired_cert,
                      replace_file, replace_pair, served_sha256, status_entry, tls_proxy)
from test_zero_downtime import _installed_binary


def _serves(px, ctx, name, cert, timeout=5.0):
    """Waits until new handshakes get `cert` (bounded)."""
    harness.wait_until(lambda: served_sha256(px.tls_port, ctx, name) == cert.sha256,
                       timeout=timeout, msg="%s served on %s" % (cert.label, name))


def test_tls_reload_tls_command(t):
    ca = make_ca(t)
    old = make_cert(t, ca, "site", ["a.test"])
    new = make_cert(t, ca, "site-new", ["a.test"], days=60)
    px, _ = tls_proxy(t, [old], server={"workers": 2})
    ctx = client_ctx(ca)
    r = px.proxyctl("reload-tls")
    assert r.returncode == 0 and "unchanged" in r.stdout, r
    gen = px.status_json()["generation"]

    replace_pair(new.cert, new.key, old.cert, old.key)
    r = px.proxyctl("reload-tls", timeout=30)
    assert r.returncode == 0, r
    assert px.status_json()["generation"] == gen + 1
    _serves(px, ctx, "a.test", new, timeout=2.0)
    resp, _ = https_get(px.tls_port, ctx, "a.test")
    assert resp.status == 200

    replace_file("not a certificate\n", old.cert, is_text=True)
    r = px.proxyctl("reload-tls", timeout=30)
    print("report: reload-tls with a corrupt file: exit %d: %s %s" % (
        r.returncode, r.stdout.strip(), r.stderr.strip()))
    assert r.returncode == 1, r
    assert "no PEM certificate" in r.stderr and old.cert in r.stderr, r
    assert px.status_json()["generation"] == gen + 1, "a refused renewal started workers"
    assert served_sha256(px.tls_port, ctx, "a.test") == new.sha256
    assert "renewal refused" in px.proxyctl("status").stdout


def test_tls_reload_tls_refuses_expired_certificate(t):
    """`proxyctl reload-tls` with an expired (well-formed, matching) cert+key pair in place: exit 1
    naming the file and the expiry, no new generation, the old certificate still served, the
    refusal in status (--json error and the human "renewal refused" line)."""
    ca = make_ca(t)
    old = make_cert(t, ca, "site", ["a.test"])
    exp = make_expired_cert(t, ca, "expired", ["a.test"])
    px, _ = tls_proxy(t, [old], server={"workers": 2})
    ctx = client_ctx(ca)
    assert served_sha256(px.tls_port, ctx, "a.test") == old.sha256
    gen = px.status_json()["generation"]

    replace_pair(exp.cert, exp.key, old.cert, old.key)
    r = px.proxyctl("reload-tls", timeout=30)
    print("report: reload-tls with an expired certificate: exit %d: %s %s" % (
        r.returncode, r.stdout.strip(), r.stderr.strip()))
    assert r.returncode == 1, r
    out = r.stdout + r.stderr
    day = fmt_utc(exp.not_after)[:10]
    assert old.cert in out and "expired" in out and day in out, (
        "the refusal should name %s and say it expired on %s: %r" % (old.cert, day, out))
    assert px.status_json()["generation"] == gen, "a refused renewal started workers"
    for _ in range(5):
        assert served_sha256(px.tls_port, ctx, "a.test") == old.sha256, (
            "the expired certificate (or another one) is served after a refused reload-tls")
    resp, _ = https_get(px.tls_port, ctx, "a.test")
    assert resp.status == 200, resp
    ent = status_entry(px, old.cert)
    assert "expired" in ent.get("error", ""), "status --json: %r" % ent
    assert ent.get("not_after") == old.not_after, ent
    human = px.proxyctl("status").stdout
    assert any("renewal refused" in l and "expired" in l for l in human.splitlines()), human


def test_tls_reload_tls_without_tls_section(t):
    px = t.proxy_to(t.backend())
    r = px.proxyctl("reload-tls")
    assert r.returncode == 1 and "no [tls]" in r.stderr, r


def _uid_of(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError("no Uid line for %d" % pid)


@harness.timeout(60)
def test_tls_workers_drop_privileges_keys_stay_with_master(t):
    """server.user: workers run as that user, the keys are readable by root only, and TLS,
    renewal (watch) and log reopening all keep working."""
    ca = make_ca(t)
    old = make_cert(t, ca, "site", ["a.test"])
    new = make_cert(t, ca, "site-new", ["a.test"], days=60)
    for cert in (old, new):
        os.chmod(cert.key, 0o600)
    if os.geteuid() != 0:
        px, _ = tls_proxy(t, [old], server={"user": "nobody"})
        harness.wait_until(lambda: "has no effect" in px.output(), msg="not-root warning")
        print("report: not root: only the warning is checked")
        return
    nobody = pwd.getpwnam("nobody")
    # The temp dir must be traversable by the workers' user for the log files only; the keys
    # are not readable by it.
    os.chmod(t.tmp, 0o755)
    px, be = tls_proxy(t, [old], server={"user": "nobody", "workers": 2}, watch=True)
    os.chmod(px.dir, 0o755)
    st = px.status_json()
    workers = [w["pid"] for w in st["workers"]]
    assert [_uid_of(p) for p in workers] == [nobody.pw_uid] * len(workers), st
    assert _uid_of(px.pid) == 0
    with open(old.key, "rb"):
        pass  # root can read it ...
    assert os.stat(old.key).st_mode & 0o077 == 0  # ... nobody else can
    ctx = client_ctx(ca)
    r, _ = https_get(px.tls_port, ctx, "a.test")
    assert r.status == 200, r

    replace_pair(new.cert, new.key, old.cert, old.key)
    _serves(px, ctx, "a.test", new, timeout=3.0)

    os.rename(px.access_log, px.access_log + ".1")
    assert px.proxyctl("reopen").returncode == 0
    r, _ = https_get(px.tls_port, ctx, "a.test", path="/after-reopen")
    assert r.status == 200
    harness.wait_until(lambda: os.path.exists(px.access_log) and
                       "/after-reopen" in open(px.access_log).read(),
                       msg="access log written after reopen by the unprivileged workers")
    assert os.stat(px.access_log).st_uid == nobody.pw_uid


def test_tls_proxy_protocol_before_handshake(t):
    ca = make_ca(t)
    cert = make_cert(t, ca, "site", ["a.test"])
    px, be = tls_proxy(t, [cert], server={"proxy_protocol": True,
                                          "trusted_proxies": ["127.0.0.1/32"]})
    ctx = client_ctx(ca)
    for header in (b"PROXY TCP4 10.1.2.3 10.0.0.1 5555 443\r\n",
                   b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + bytes([10, 9, 8, 7, 10, 0, 0, 1]) +
                   (4444).to_bytes(2, "big") + (443).to_bytes(2, "big")):
        s = socket.create_connection(("127.0.0.1", px.tls_port), timeout=5)
        s.sendall(header)
        with ctx.wrap_socket(s, server_hostname="a.test") as tls:
            tls.sendall(b"GET /echo HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
        want = b"10.1.2.3" if header.startswith(b"PROXY") else b"10.9.8.7"
        assert want in data, data
    # Without the header, the ClientHello is not a PROXY header: the connection is closed.
    s = socket.create_connection(("127.0.0.1", px.tls_port), timeout=5)
    try:
        ctx.wrap_socket(s, server_hostname="a.test")
        raise AssertionError("a TLS handshake without a PROXY header was accepted")
    except (ssl.SSLError, ConnectionError, OSError):
        pass
    finally:
        s.close()


@harness.timeout(90)
def test_tls_session_resumes_after_binary_upgrade(t):
    ca = make_ca(t)
    cert = make_cert(t, ca, "site", ["a.test"])
    binpath = _installed_binary(t)
    be = t.backend()
    px = t.proxy_to(be, binary=binpath, server={"workers": 2},
                    tls={"listen": ["127.0.0.1:%d" % harness.free_port()],
                         "certificates": [{"cert": cert.cert, "key": cert.key}]})
    px.tls_port = px.tls_ports[0]
    ctx = client_ctx(ca)
    r, facts = https_get(px.tls_port, ctx, "a.test")
    assert r.status == 200
    session = facts["session"]
    old_master = px.status_json()["master_pid"]
    r = px.proxyctl("upgrade", timeout=60)
    assert r.returncode == 0, r
    harness.wait_until(lambda: px.status_json()["master_pid"] != old_master, timeout=10,
                       msg="the new master answers")
    reused = 0
    for _ in range(20):
        r, facts = https_get(px.tls_port, ctx, "a.test", session=session)
        assert r.status == 200
        reused += facts["reused"]
    print("report: after upgrade %d/20 connections resumed the session from before" % reused)
    assert reused == 20
