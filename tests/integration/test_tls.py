"""TLS termination ([tls]) and TLS to upstream servers.

SNI certificate choice (exact names, one-label wildcards, the first certificate as default), RSA and
ECDSA certificates for one name, protocol versions, ALPN, HSTS and X-Forwarded-Proto, session
resumption across workers and reloads (ticket keys held by the master), certificate renewal by
file watch under load - files renamed in place, a Kubernetes secret volume's ..data symlink swap,
certbot's live/ symlinks - (and refusal of a broken or expired replacement), renewal by reload,
upstream TLS verification and session resumption, config errors, and the certificates in
`proxyctl status`.

Certificates are made per test in its temp dir with the openssl CLI (a test CA, then leaf
certificates signed by it with subjectAltName DNS entries): `make_ca`, `make_cert`. An expired one,
which the CLI cannot backdate, is made with python3-cryptography (`make_expired_cert`), which also
parses the certificates the clients are served. Clients: `openssl s_client`, Python's ssl module
(harness.Conn(tls=...), load.LoadGen(tls_context=...)) and curl. The HTTPS backend for upstream
TLS is harness.Backend(tls_context=...). Measurements are printed as "report:" lines.
"""

import datetime
import hashlib
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import time

import harness
from harness import assert_error, hall, wait_until
from load import LoadGen, format_stats

try:   # python3-cryptography: parsing served certificates, and the expired certificate
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID
except ImportError:   # pragma: no cover - Debian's python3-cryptography is a test dependency
    x509 = None


# ----------------------------------------------------------------------------------------------
# certificates (openssl CLI)

def _openssl(args, cwd=None, input=None):
    r = subprocess.run(["openssl"] + list(args), capture_output=True, text=True, timeout=30,
                       cwd=cwd, input=input, stdin=None if input is not None else
                       subprocess.DEVNULL)
    if r.returncode != 0:
        raise AssertionError("openssl %s failed (%d):\n%s%s" % (
            " ".join(args), r.returncode, r.stdout, r.stderr))
    return r


class CA:
    def __init__(self, name, cert, key):
        self.name = name
        self.cert = cert    # PEM path (also the trust anchor file for clients)
        self.key = key


class Cert:
    """A leaf certificate on disk plus the facts the tests compare against."""

    def __init__(self, label, cert, key, names, key_type):
        self.label = label
        self.cert = cert
        self.key = key
        self.names = list(names)
        self.key_type = key_type      # "RSA" | "ECDSA"
        with open(cert) as f:
            pem = f.read()
        info = cert_info(pem)
        self.sha256 = info["sha256"]
        self.serial = info["serial"]
        self.not_after = info["not_after"]
        self.subject = info["subject"]

    def __repr__(self):
        return "<Cert %s %s serial=%x sha256=%s..>" % (self.label, self.names, self.serial,
                                                        self.sha256[:16])


def _certdir(t):
    d = t.path("certs")
    os.makedirs(d, exist_ok=True)
    return d


def make_ca(t, name="ca1", cn=None):
    """A self-signed test CA: certs/NAME.pem, certs/NAME.key."""
    d = _certdir(t)
    cert, key = os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")
    _openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
              "-days", "30", "-sha256", "-subj", "/CN=%s" % (cn or "proxyd test CA %s" % name),
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    return CA(name, cert, key)


def make_cert(t, ca, label, names, key_type="RSA", days=30, cert_path=None, key_path=None,
              cn=None):
    """A leaf certificate for `names` (subjectAltName DNS entries, wildcards allowed) signed by ca,
    with a fresh key (RSA 2048 or ECDSA P-256) and a random serial. Written to cert_path/key_path
    (default certs/LABEL.crt and .key)."""
    d = _certdir(t)
    cert_path = cert_path or os.path.join(d, label + ".crt")
    key_path = key_path or os.path.join(d, label + ".key")
    csr = os.path.join(d, label + ".%d.csr" % secrets.randbits(32))
    ext = csr[:-4] + ".ext"
    if key_type == "RSA":
        newkey = ["-newkey", "rsa:2048"]
        usage = "digitalSignature,keyEncipherment"
    elif key_type == "ECDSA":
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        usage = "digitalSignature"
    else:
        raise ValueError(key_type)
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\n" % ",".join("DNS:" + n for n in names))
        f.write("basicConstraints=critical,CA:FALSE\n")
        f.write("keyUsage=critical,%s\n" % usage)
        f.write("extendedKeyUsage=serverAuth\n")
        f.write("subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    _openssl(["req", "-new"] + newkey + ["-nodes", "-keyout", key_path, "-out", csr,
                                          "-subj", "/CN=%s" % (cn or names[0])])
    serial = "0x%016x" % (secrets.randbits(62) | (1 << 62))
    _openssl(["x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-set_serial", serial,
              "-days", str(days), "-sha256", "-extfile", ext, "-out", cert_path])
    os.unlink(csr)
    os.unlink(ext)
    return Cert(label, cert_path, key_path, names, key_type)


def make_expired_cert(t, ca, label, names):
    """A leaf valid from 10 days ago until yesterday, signed by ca (python3-cryptography: the
    openssl CLI cannot date a certificate in the past)."""
    assert x509 is not None, "python3-cryptography is needed"
    d = _certdir(t)
    with open(ca.key, "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    with open(ca.cert, "rb") as f:
        ca_cert = x509.load_pem_x509_certificate(f.read())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=10))
            .not_valid_after(now - datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = os.path.join(d, label + ".crt"), os.path.join(d, label + ".key")
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return Cert(label, cert_path, key_path, names, "RSA")


def cert_info(pem):
    """Facts of a PEM certificate: sha256 (of the DER), serial, subject, names (SAN DNS),
    key_type, not_after (unix seconds)."""
    if isinstance(pem, bytes):
        pem = pem.decode()
    der = ssl.PEM_cert_to_DER_cert(pem)
    return der_info(der)


def der_info(der):
    info = {"sha256": hashlib.sha256(der).hexdigest()}
    c = x509.load_der_x509_certificate(der)
    info["serial"] = c.serial_number
    info["subject"] = c.subject.rfc4514_string()
    try:
        san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        info["names"] = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        info["names"] = []
    pk = c.public_key()
    info["key_type"] = ("RSA" if isinstance(pk, rsa.RSAPublicKey) else
                        "ECDSA" if isinstance(pk, ec.EllipticCurvePublicKey) else type(pk).__name__)
    na = getattr(c, "not_valid_after_utc", None) or c.not_valid_after.replace(
        tzinfo=datetime.timezone.utc)
    info["not_after"] = int(na.timestamp())
    return info


def replace_pair(cert_src, key_src, cert_dst, key_dst, key_first=True):
    """Atomically put a new cert+key in place: copy both to temp names in the destination
    directory, then rename (key first by default) - as a renewal tool would. Returns the time
    (monotonic) just before the first rename."""
    tmp_c, tmp_k = cert_dst + ".new", key_dst + ".new"
    shutil.copyfile(cert_src, tmp_c)
    shutil.copyfile(key_src, tmp_k)
    t0 = time.monotonic()
    if key_first:
        os.rename(tmp_k, key_dst)
        os.rename(tmp_c, cert_dst)
    else:
        os.rename(tmp_c, cert_dst)
        os.rename(tmp_k, key_dst)
    return t0


def replace_file(src_text_or_path, dst, is_text=False):
    tmp = dst + ".new"
    if is_text:
        with open(tmp, "w") as f:
            f.write(src_text_or_path)
    else:
        shutil.copyfile(src_text_or_path, tmp)
    os.rename(tmp, dst)


def fmt_utc(ts):
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


# ----------------------------------------------------------------------------------------------
# clients

def client_ctx(ca=None, verify=True, check_hostname=True, min_version=None, max_version=None,
               ciphers=None, alpn=None):
    """A client SSLContext trusting the test CA (verify=False: no verification at all)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(ca.cert)
        ctx.check_hostname = check_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    if ciphers:
        ctx.set_ciphers(ciphers)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def tls_conn(port, ctx, name=None, session=None, timeout=5.0):
    return harness.Conn(port, timeout, tls=ctx, server_hostname=name, session=session)


def conn_facts(c):
    s = c.sock
    der = s.getpeercert(binary_form=True)
    return {"sha256": hashlib.sha256(der).hexdigest() if der else None,
            "der": der, "version": s.version(), "cipher": s.cipher()[0],
            "reused": s.session_reused, "alpn": s.selected_alpn_protocol()}


def https_get(port, ctx, name=None, path="/echo", session=None, timeout=5.0):
    """One new TLS connection, one GET: (Response, facts of the connection)."""
    with tls_conn(port, ctx, name, session, timeout) as c:
        facts = conn_facts(c)
        r = c.request("GET", path, host=name or "127.0.0.1")
        facts["session"] = c.sock.session
    return r, facts


def served_sha256(port, ctx, name=None, timeout=5.0):
    """The sha256 of the certificate a new TLS handshake gets (no request)."""
    with tls_conn(port, ctx, name, timeout=timeout) as c:
        return hashlib.sha256(c.sock.getpeercert(binary_form=True)).hexdigest()


def try_served(port, ctx, name=None):
    """served_sha256, or "handshake failed: ..." instead of raising."""
    try:
        return served_sha256(port, ctx, name)
    except (ssl.SSLError, OSError) as e:
        return "handshake failed: %r" % e


class SClient:
    """The result of one `openssl s_client` run."""

    def __init__(self, cmd, r):
        self.cmd = " ".join(cmd)
        self.rc = r.returncode
        self.out = r.stdout + r.stderr
        m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", r.stdout, re.S)
        self.pem = m.group(0) if m else None
        self.info = cert_info(self.pem) if self.pem else None
        # "New, TLSv1.3, Cipher is ..." (the SSL-Session block with "Protocol :" is not always
        # printed for TLS 1.3: it waits for a ticket, and stdin's EOF may come first)
        m = re.search(r"^New, (\S+), Cipher is", self.out, re.M) or re.search(
            r"^\s*Protocol\s*:\s*(\S+)", self.out, re.M)
        self.protocol = m.group(1) if m else None
        m = re.search(r"Cipher is (\S+)", self.out)
        self.cipher = m.group(1) if m else None
        m = re.search(r"ALPN protocol: (\S+)", self.out)
        self.alpn = m.group(1) if m else None
        m = re.search(r"Verify return code: (\d+) \(([^)]*)\)", self.out)
        self.verify = (int(m.group(1)), m.group(2)) if m else None
        m = re.search(r"Peer signature type: (\S+)", self.out)
        self.peer_sigtype = m.group(1) if m else None

    @property
    def ok(self):
        return self.rc == 0 and self.pem is not None and self.cipher not in (None, "(NONE)")

    def error_lines(self):
        return [l for l in self.out.splitlines()
                if "error" in l.lower() or "alert" in l.lower() or "errno" in l.lower()]

    def describe(self):
        return "%s\n  exit %d, protocol %s, cipher %s, alpn %s, verify %r, cert %s\n  %s" % (
            self.cmd, self.rc, self.protocol, self.cipher, self.alpn, self.verify,
            (self.info["subject"], self.info["names"], self.info["key_type"]) if self.info
            else None, "\n  ".join(self.error_lines()[:5]) or "(no error line)")


def s_client(port, *args, servername=None, cafile=None, timeout=15):
    """openssl s_client to 127.0.0.1:port; servername None = no SNI (-noservername). stdin is
    empty: the client handshakes, prints the session and quits."""
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port]
    cmd += ["-noservername"] if servername is None else ["-servername", servername]
    if cafile:
        cmd += ["-CAfile", cafile]
    cmd += list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    return SClient(cmd, r)


def curl(args, timeout=20):
    r = subprocess.run(["curl", "-sS", "--max-time", "10"] + list(args), capture_output=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    return r


# ----------------------------------------------------------------------------------------------
# proxy setup and diagnostics

def tls_section(certs, port=None, **over):
    port = port or harness.free_port()
    sec = {"listen": ["127.0.0.1:%d" % port],
           "certificates": [{"cert": c.cert, "key": c.key} if isinstance(c, Cert) else c
                            for c in certs]}
    sec.update(over)
    return sec


def tls_proxy(t, certs, backend=None, server=None, name="proxyd", **tls_over):
    """proxyd with route / -> the backend (a new one by default), a plain listener and a TLS
    listener (px.tls_port) with these certificates (Cert objects or {cert, key} dicts)."""
    be = backend or t.backend()
    px = t.proxy_to(be, tls=tls_section(certs, **tls_over), server=server or {}, name=name)
    px.tls_port = px.tls_ports[0]
    return px, be


def log_tail(px, n=40, grep=None):
    out = px.output()
    lines = out.splitlines()
    if grep:
        lines = [l for l in lines if re.search(grep, l, re.I)]
    return "\n".join(lines[-n:])


def label_of(sha, certs):
    for c in certs:
        if c.sha256 == sha:
            return c.label
    return "unknown certificate %s" % (sha[:16] if sha else sha)


def tls_status(px):
    st = px.status_json()
    assert isinstance(st.get("tls"), dict), "status --json has no \"tls\" object: %s" % (
        json.dumps(st)[:2000])
    certs = st["tls"].get("certificates")
    assert isinstance(certs, list), "status tls has no certificates list: %r" % st["tls"]
    return certs


def _same_path(a, b):
    return a == b or os.path.realpath(a) == os.path.realpath(b)


def status_entry(px, cert_path):
    certs = tls_status(px)
    for e in certs:
        if _same_path(str(e.get("cert")), cert_path):
            return e
    raise AssertionError("no certificate entry for %s in status --json: %r" % (cert_path, certs))


def assert_serves(port, ctx, name, want, certs, n=1, what=""):
    """n new connections all get certificate `want` and a 200 for GET /echo."""
    for i in range(n):
        r, f = https_get(port, ctx, name)
        assert f["sha256"] == want.sha256, "%s: connection %d for %r got %s, expected %s" % (
            what, i, name, label_of(f["sha256"], certs), want.label)
        assert r.status == 200, "%s: status %d: %r" % (what, r.status, r)


# ----------------------------------------------------------------------------------------------
# 1. SNI

def test_tls_sni_selects_certificate(t):
    """Exact names, a one-label wildcard, and the first certificate without SNI; openssl s_client
    and Python's ssl both see the right certificate (verified against the test CA)."""
    ca = make_ca(t)
    a = make_cert(t, ca, "a", ["a.test", "www.a.test"])
    b = make_cert(t, ca, "b", ["b.test"])
    w = make_cert(t, ca, "wild", ["*.wild.test"])
    certs = [a, b, w]
    px, be = tls_proxy(t, certs)
    cases = [("a.test", a), ("www.a.test", a), ("b.test", b), ("x.wild.test", w), (None, a)]
    for name, want in cases:
        extra = ["-verify_hostname", name] if name else []
        sc = s_client(px.tls_port, *extra, servername=name, cafile=ca.cert)
        assert sc.ok, "s_client handshake failed for SNI %r:\n%s\n--- proxyd log:\n%s" % (
            name, sc.describe(), log_tail(px))
        assert sc.info["sha256"] == want.sha256, (
            "SNI %r: s_client got %s (subject %s, SAN %r), expected %s (%r)\n%s" % (
                name, label_of(sc.info["sha256"], certs), sc.info["subject"], sc.info["names"],
                want.label, want.names, sc.describe()))
        assert sc.info["names"] == want.names, (name, sc.info)
        assert sc.verify == (0, "ok"), "SNI %r: verification against the test CA: %r\n%s" % (
            name, sc.verify, sc.describe())
    # Python ssl: hostname checked by the client where there is a name
    for name, want in cases:
        ctx = client_ctx(ca, check_hostname=name is not None)
        try:
            with tls_conn(px.tls_port, ctx, name) as c:
                pc = c.sock.getpeercert()
                f = conn_facts(c)
                r = c.request("GET", "/echo", host=name or "127.0.0.1")
        except (ssl.SSLError, OSError) as e:
            raise AssertionError("Python ssl to SNI %r failed: %r\n--- proxyd log:\n%s" % (
                name, e, log_tail(px)))
        sans = [v for k, v in pc.get("subjectAltName", ()) if k == "DNS"]
        assert f["sha256"] == want.sha256 and sans == want.names, (
            "Python ssl, SNI %r: got SAN %r (%s), expected %s %r" % (
                name, sans, label_of(f["sha256"], certs), want.label, want.names))
        assert r.status == 200 and r.json()["backend"] == be.name, r
    # not asserted (the contract does not say): what names nobody serves get
    for name in ("unknown.test", "a.b.wild.test"):
        sc = s_client(px.tls_port, servername=name)
        print("report: SNI %r (no certificate names it): %s" % (
            name, label_of(sc.info["sha256"], certs) if sc.ok else
            "handshake failed: %s" % (sc.error_lines()[:1],)))


# ----------------------------------------------------------------------------------------------
# 2. RSA and ECDSA for one name

def test_tls_rsa_and_ecdsa_for_one_name(t):
    ca = make_ca(t)
    r = make_cert(t, ca, "dual-rsa", ["dual.test"], "RSA")
    e = make_cert(t, ca, "dual-ec", ["dual.test"], "ECDSA")
    certs = [r, e]
    px, be = tls_proxy(t, certs)
    checks = [
        (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"), e),
        (("-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"), r),
        (("-tls1_3", "-sigalgs", "ECDSA+SHA256"), e),
        (("-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256:rsa_pss_pss_sha256"), r),
        (("-tls1_2", "-sigalgs", "ECDSA+SHA256"), e),
        (("-tls1_2", "-sigalgs", "RSA+SHA256"), r),
    ]
    for args, want in checks:
        sc = s_client(px.tls_port, *args, servername="dual.test", cafile=ca.cert)
        assert sc.ok, "client restricted to %s (%s): handshake failed\n%s\n--- log:\n%s" % (
            want.key_type, " ".join(args), sc.describe(), log_tail(px))
        assert sc.info["sha256"] == want.sha256, (
            "client restricted to %s (%s) got the %s certificate\n%s" % (
                want.key_type, " ".join(args), sc.info["key_type"], sc.describe()))
    for ciphers, want in (("ECDHE-ECDSA-AES128-GCM-SHA256", e), ("ECDHE-RSA-AES128-GCM-SHA256", r)):
        ctx = client_ctx(ca, max_version=ssl.TLSVersion.TLSv1_2, ciphers=ciphers)
        resp, f = https_get(px.tls_port, ctx, "dual.test")
        assert f["sha256"] == want.sha256 and resp.status == 200, (
            "Python ssl TLS 1.2 with %s got %s (status %d)" % (
                ciphers, label_of(f["sha256"], certs), resp.status))
    # a client that takes both: print which one it gets (not asserted)
    sc = s_client(px.tls_port, servername="dual.test")
    print("report: unrestricted s_client got the %s certificate (%s, %s)" % (
        sc.info and sc.info["key_type"], sc.protocol, sc.peer_sigtype))
    # status: both entries with their key types
    for c in certs:
        ent = status_entry(px, c.cert)
        assert ent.get("key_type") == c.key_type, "status entry for %s: key_type %r, expected %r" % (
            c.label, ent.get("key_type"), c.key_type)
        assert [n.lower() for n in ent.get("names", [])] == ["dual.test"], ent


# ----------------------------------------------------------------------------------------------
# 3. protocol versions

def test_tls_versions(t):
    ca = make_ca(t)
    a = make_cert(t, ca, "a", ["a.test"])
    px, be = tls_proxy(t, [a], min_version="1.2")
    sc = s_client(px.tls_port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", servername="a.test")
    assert not sc.ok, "a TLS 1.1 handshake succeeded with min_version = 1.2:\n" + sc.describe()
    reason = sc.error_lines()
    print("report: TLS 1.1 against min_version 1.2: %s" % (reason[:2],))
    assert re.search(r"alert protocol version|alert number 70", sc.out), (
        "TLS 1.1 refused, but not with a protocol_version alert from the server:\n%s\n%s" % (
            sc.describe(), sc.out[-1500:]))
    for flag, proto, tv in (("-tls1_2", "TLSv1.2", ssl.TLSVersion.TLSv1_2),
                            ("-tls1_3", "TLSv1.3", ssl.TLSVersion.TLSv1_3)):
        sc = s_client(px.tls_port, flag, servername="a.test", cafile=ca.cert)
        assert sc.ok and sc.protocol == proto, "%s with min_version 1.2:\n%s\n--- log:\n%s" % (
            flag, sc.describe(), log_tail(px))
        ctx = client_ctx(ca, min_version=tv, max_version=tv)
        r, f = https_get(px.tls_port, ctx, "a.test")
        assert f["version"] == proto and r.status == 200, (proto, f["version"], r)

    px13, _ = tls_proxy(t, [a], backend=be, name="proxyd13", min_version="1.3")
    sc = s_client(px13.tls_port, "-tls1_2", servername="a.test")
    assert not sc.ok, "a TLS 1.2 handshake succeeded with min_version = 1.3:\n" + sc.describe()
    print("report: TLS 1.2 against min_version 1.3: %s" % (sc.error_lines()[:2],))
    assert re.search(r"alert protocol version|alert number 70", sc.out), (
        "TLS 1.2 refused by a 1.3-only listener, but not with a protocol_version alert:\n%s" % (
            sc.describe()))
    ctx = client_ctx(ca, max_version=ssl.TLSVersion.TLSv1_2)
    try:
        https_get(px13.tls_port, ctx, "a.test")
        raise AssertionError("Python ssl TLS 1.2 handshake succeeded with min_version = 1.3")
    except ssl.SSLError:
        pass
    sc = s_client(px13.tls_port, "-tls1_3", servername="a.test", cafile=ca.cert)
    assert sc.ok and sc.protocol == "TLSv1.3", sc.describe()


# ----------------------------------------------------------------------------------------------
# 4. ALPN, curl, X-Forwarded-Proto, HSTS

def test_tls_alpn_curl_forwarded_proto_hsts(t):
    ca = make_ca(t)
    a = make_cert(t, ca, "a", ["a.test"])
    px, be = tls_proxy(t, [a], alpn=["http/1.1"], hsts="max-age=31536000")
    sc = s_client(px.tls_port, "-alpn", "http/1.1", servername="a.test", cafile=ca.cert)
    assert sc.ok and sc.alpn == "http/1.1", "ALPN http/1.1:\n%s\n%s" % (sc.describe(),
                                                                        sc.out[-1500:])
    # curl over https, name resolved to 127.0.0.1, verified against the test CA
    url = "https://a.test:%d/echo?via=curl" % px.tls_port
    r = curl(["-i", "--cacert", ca.cert, "--resolve", "a.test:%d:127.0.0.1" % px.tls_port, url])
    assert r.returncode == 0, "curl %s failed (%d): %s\n--- proxyd log:\n%s" % (
        url, r.returncode, r.stderr.decode(errors="replace"), log_tail(px))
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    first, headers = harness.parse_head(head + b"\r\n\r\n")
    assert first.startswith("HTTP/1.1 200"), "curl: %r" % first
    sts = hall(headers, "Strict-Transport-Security")
    assert sts == ["max-age=31536000"], "HTTPS response Strict-Transport-Security %r; headers %r" % (
        sts, headers)
    echo = json.loads(body)
    assert echo["path"] == "/echo?via=curl", echo
    xfp = [v for k, v in echo["headers"] if k.lower() == "x-forwarded-proto"]
    assert xfp == ["https"], "backend saw X-Forwarded-Proto %r over TLS (headers %r)" % (
        xfp, echo["headers"])
    # Python ssl with ALPN, keep-alive: several requests on one TLS connection
    ctx = client_ctx(ca, alpn=["http/1.1"])
    with tls_conn(px.tls_port, ctx, "a.test") as c:
        assert c.sock.selected_alpn_protocol() == "http/1.1", c.sock.selected_alpn_protocol()
        for i in range(3):
            resp = c.request("GET", "/echo?ka=%d" % i, host="a.test")
            assert resp.status == 200 and resp.json()["path"] == "/echo?ka=%d" % i, resp
            assert resp.header_all("Strict-Transport-Security") == ["max-age=31536000"], resp
    # the plain listener of the same proxy: no HSTS, X-Forwarded-Proto http
    resp = px.get("/echo?plain=1")
    assert resp.status == 200, resp
    assert not resp.has("Strict-Transport-Security"), (
        "a plain-HTTP response carries Strict-Transport-Security: %r" % resp.headers)
    xfp = [v for k, v in resp.json()["headers"] if k.lower() == "x-forwarded-proto"]
    assert xfp == ["http"], "plain listener: backend saw X-Forwarded-Proto %r" % xfp


def test_tls_alpn_order(t):
    """ALPN follows the server's order: with ["h2", "http/1.1"] a client offering both gets h2 (and
    is served HTTP/2), one offering only http/1.1 gets it; with ["http/1.1"] h2 is never chosen
    and a client offering only h2 is refused (no_application_protocol)."""
    ca = make_ca(t)
    a = make_cert(t, ca, "a", ["a.test"])
    px, be = tls_proxy(t, [a], alpn=["h2", "http/1.1"])
    sc = s_client(px.tls_port, "-alpn", "http/1.1,h2", servername="a.test", cafile=ca.cert)
    assert sc.ok and sc.alpn == "h2", "client offering http/1.1,h2 should get h2:\n%s" % sc.describe()
    sc = s_client(px.tls_port, "-alpn", "http/1.1", servername="a.test", cafile=ca.cert)
    assert sc.ok and sc.alpn == "http/1.1", sc.describe()
    r, f = https_get(px.tls_port, client_ctx(ca, alpn=["http/1.1"]), "a.test")
    assert f["alpn"] == "http/1.1" and r.status == 200, (f["alpn"], r)
    out = subprocess.run(["curl", "-s", "--http2", "--cacert", ca.cert, "-o", "/dev/null",
                          "-w", "%{http_version} %{http_code}",
                          "--resolve", "a.test:%d:127.0.0.1" % px.tls_port,
                          "https://a.test:%d/" % px.tls_port],
                         capture_output=True, text=True, timeout=10)
    assert out.stdout == "2 200", (out.stdout, out.stderr)

    px2, be2 = tls_proxy(t, [a], alpn=["http/1.1"], name="proxyd2")
    sc = s_client(px2.tls_port, "-alpn", "h2,http/1.1", servername="a.test", cafile=ca.cert)
    assert sc.ok and sc.alpn == "http/1.1", sc.describe()
    sc = s_client(px2.tls_port, "-alpn", "h2", servername="a.test", cafile=ca.cert)
    assert not sc.ok or sc.alpn != "h2", sc.describe()


# ----------------------------------------------------------------------------------------------
# 5. session resumption across workers and reloads

def _resume_many(px, ctx, session, n, what):
    """n new connections with `session`, each one request; all must be resumed. Keeps them open
    until all are made, then reads the per-worker connection counts. -> {pid: connections}"""
    conns = []
    not_resumed = []
    try:
        for i in range(n):
            c = tls_conn(px.tls_port, ctx, "a.test", session=session)
            conns.append(c)
            if not c.sock.session_reused:
                not_resumed.append((i, c.sock.version()))
            r = c.request("GET", "/echo?resume=%d" % i, host="a.test")
            assert r.status == 200, "%s: request %d: %r" % (what, i, r)
        per_worker = {}
        try:
            per_worker = {w["pid"]: w.get("connections") for w in px.status_json()["workers"]
                          if w.get("state", "active") == "active"}
        except AssertionError:
            pass
    finally:
        for c in conns:
            c.close()
    assert not not_resumed, "%s: %d of %d connections were not resumed (first: %r)\n--- log:\n%s" % (
        what, len(not_resumed), n, not_resumed[:5], log_tail(px))
    return per_worker


def _assert_both_workers(per, n, what):
    """The open-connection counts of _resume_many: 2 active workers, each holding some of the n
    resumed connections (a ticket one worker issued was accepted by the other)."""
    assert len(per) == 2, "%s: expected 2 active workers in status, got %r" % (what, per)
    assert all(isinstance(v, int) and v > 0 for v in per.values()), (
        "%s: each of the 2 workers should hold some of the %d resumed connections, got %r" % (
            what, n, per))
    assert sum(per.values()) >= n, "%s: workers hold %d connections, %d are open: %r" % (
        what, sum(per.values()), n, per)


def _resumption(t, version):
    ca = make_ca(t)
    a = make_cert(t, ca, "a", ["a.test"])
    px, be = tls_proxy(t, [a], server={"workers": 2}, session_tickets=True,
                       session_ticket_rotation="1h")
    ctx = client_ctx(ca, max_version=version)
    with tls_conn(px.tls_port, ctx, "a.test") as c:
        r = c.request("GET", "/echo?first=1", host="a.test")   # TLS 1.3 tickets come after
        assert r.status == 200, r
        proto = c.sock.version()
        saved = c.sock.session
        assert not c.sock.session_reused
    assert saved is not None and saved.has_ticket, (
        "%s: the first connection got no session ticket (session %r, has_ticket %r)" % (
            proto, saved, saved and saved.has_ticket))
    print("report: %s ticket lifetime hint %ss" % (proto, saved.ticket_lifetime_hint))
    per = _resume_many(px, ctx, saved, 50, "%s before reload" % proto)
    print("report: %s: 50/50 resumed before reload; open connections per worker %r" % (
        proto, per))
    _assert_both_workers(per, 50, "%s before reload" % proto)
    gen = px.status_json().get("generation")
    rr = px.proxyctl("reload", timeout=30)
    assert rr.returncode == 0, "reload failed: %s%s" % (rr.stdout, rr.stderr)
    st = px.status_json()
    assert st.get("generation") != gen, "generation unchanged after reload: %r" % st
    per = _resume_many(px, ctx, saved, 50, "%s after reload (new workers)" % proto)
    print("report: %s: 50/50 resumed after reload; open connections per worker %r" % (
        proto, per))
    _assert_both_workers(per, 50, "%s after reload (new workers)" % proto)


def test_tls_resumption_tls13_across_workers_and_reload(t):
    _resumption(t, ssl.TLSVersion.TLSv1_3)


def test_tls_resumption_tls12_across_workers_and_reload(t):
    _resumption(t, ssl.TLSVersion.TLSv1_2)


# ----------------------------------------------------------------------------------------------
# 6. renewal by file watch under load

def _wait_switch(px, ctx, frm, to, certs, t0, limit=10.0):
    """Poll with new connections until `to` is served. -> (delay in s or None, odd results)."""
    seen = []
    while time.monotonic() < t0 + limit:
        sha = try_served(px.tls_port, ctx, "a.test")
        if sha == to.sha256:
            return time.monotonic() - t0, seen
        if sha != frm.sha256:
            seen.append((round(time.monotonic() - t0, 3),
                         sha if sha.startswith("handshake") else label_of(sha, certs)))
        time.sleep(0.02)
    return None, seen


@harness.timeout(90)
def test_tls_watch_renewal_under_load(t):
    """Two renewals by atomic rename under HTTPS load (new connections and keep-alive, 2
    workers): key renamed first, then (second renewal) cert renamed first. Each must be served
    within 2 s; no request fails; no handshake in between gets anything but the old or new
    certificate."""
    ca = make_ca(t)
    d = _certdir(t)
    live_cert, live_key = os.path.join(d, "site.crt"), os.path.join(d, "site.key")
    old = make_cert(t, ca, "old", ["a.test"], cert_path=live_cert, key_path=live_key)
    new = make_cert(t, ca, "new", ["a.test"])           # certs/new.crt, certs/new.key
    new2 = make_cert(t, ca, "new2", ["a.test"])
    certs = [old, new, new2]
    px, be = tls_proxy(t, [old], server={"workers": 2}, watch=True)
    ctx = client_ctx(ca)
    assert served_sha256(px.tls_port, ctx, "a.test") == old.sha256
    lg = LoadGen(px.tls_port, rate=120, path="/echo", header=None, ka_conns=8, fresh_threads=16,
                 tls_context=client_ctx(ca), server_hostname="a.test").start()
    rounds = []
    try:
        time.sleep(1.5)
        for frm, to, key_first in ((old, new, True), (new, new2, False)):
            t0 = replace_pair(to.cert, to.key, live_cert, live_key, key_first=key_first)
            delay, seen = _wait_switch(px, ctx, frm, to, certs, t0)
            time.sleep(1.5)   # load goes on over the new certificate
            after = []
            for _ in range(10):
                sha = try_served(px.tls_port, ctx, "a.test")
                after.append(sha if sha.startswith("handshake") else label_of(sha, certs))
            rounds.append((to, key_first, delay, seen, after))
            if delay is None:
                break
    finally:
        st = lg.stop()
    for to, key_first, delay, seen, after in rounds:
        print("report: renewal to %s (%s renamed first) served %s after the rename" % (
            to.label, "key" if key_first else "cert",
            "%.0f ms" % (delay * 1000) if delay is not None else "NEVER (10 s)"))
    print("report: " + format_stats(st).splitlines()[0])
    print("report: 'keeping the current certificate' lines during the renewals: %d" % len(
        _keep_lines(px)))
    for to, key_first, delay, seen, after in rounds:
        what = "renewal to %s (%s renamed first)" % (to.label, "key" if key_first else "cert")
        assert not seen, "%s: during the switch, handshakes got: %r" % (what, seen)
        assert delay is not None, "%s: not served within 10 s of the rename\n--- proxyd log:\n%s" % (
            what, log_tail(px))
        assert delay <= 2.0, "%s: served %.2f s after the rename (limit 2 s)" % (what, delay)
        assert after == [to.label] * 10, "%s: after the switch, new connections got %r" % (
            what, after)
    assert st["failures"] == 0 and st["ok"] > 100, format_stats(st) + "\n--- log:\n" + log_tail(px)
    ent = status_entry(px, live_cert)
    assert "error" not in ent, "status shows an error after good renewals: %r" % ent
    assert ent.get("not_after") == new2.not_after, (ent, new2.not_after)


# ----------------------------------------------------------------------------------------------
# 6b. renewal by symlink swap: a Kubernetes secret volume (cert-manager), certbot's live/ links

def _relink(target, link):
    """Point the symlink `link` at `target` atomically: a new symlink under a temp name in the
    same directory, renamed over the old one."""
    tmp = os.path.join(os.path.dirname(link), ".%s.tmp" % os.path.basename(link))
    os.symlink(target, tmp)
    os.rename(tmp, link)


class KubeSecretVolume:
    """A secret volume as kubelet's AtomicWriter lays it out (cert-manager renews the secret):
    DIR/..TIMESTAMP/{tls.crt,tls.key} real files, DIR/..data -> ..TIMESTAMP, DIR/tls.crt ->
    ..data/tls.crt, DIR/tls.key -> ..data/tls.key. An update writes a new ..TIMESTAMP dir,
    creates the symlink ..data_tmp -> it, renames ..data_tmp over ..data, then removes the old
    dir. proxyd is given DIR/tls.crt and DIR/tls.key."""

    def __init__(self, d, first):
        self.dir = d
        self.n = 0
        os.makedirs(d)
        self.current = self._payload(first)
        os.symlink(self.current, os.path.join(d, "..data"))
        for f in ("tls.crt", "tls.key"):
            os.symlink(os.path.join("..data", f), os.path.join(d, f))
        self.cert, self.key = os.path.join(d, "tls.crt"), os.path.join(d, "tls.key")

    def _payload(self, c):
        self.n += 1
        name = "..2026_12_02_08_%02d_00.%09d" % (self.n, secrets.randbits(29))
        p = os.path.join(self.dir, name)
        os.mkdir(p)
        shutil.copyfile(c.cert, os.path.join(p, "tls.crt"))
        shutil.copyfile(c.key, os.path.join(p, "tls.key"))
        return name

    def renew(self, c):
        """-> monotonic time just before the ..data swap."""
        new = self._payload(c)
        tmp = os.path.join(self.dir, "..data_tmp")
        os.symlink(new, tmp)
        t0 = time.monotonic()
        os.rename(tmp, os.path.join(self.dir, "..data"))
        shutil.rmtree(os.path.join(self.dir, self.current))
        self.current = new
        return t0

    def describe(self):
        return "..data -> %s" % os.readlink(os.path.join(self.dir, "..data"))


class CertbotLineage:
    """certbot's layout: DIR/live/NAME/{cert,privkey,chain,fullchain}.pem are relative symlinks
    to ../../archive/NAME/KINDN.pem. A renewal writes version N+1 of the four files into
    archive/NAME/, then re-points the live links in certbot's order (cert, privkey, chain,
    fullchain), each one atomically (symlink under a temp name, renamed over the link).
    proxyd is given live/NAME/fullchain.pem (leaf + CA) and live/NAME/privkey.pem."""

    KINDS = ("cert", "privkey", "chain", "fullchain")

    def __init__(self, d, name, first, ca):
        self.name = name
        self.ca = ca
        self.live = os.path.join(d, "live", name)
        self.archive = os.path.join(d, "archive", name)
        os.makedirs(self.live)
        os.makedirs(self.archive)
        self.version = 0
        self._write(first)
        for kind in self.KINDS:
            os.symlink(self._target(kind), os.path.join(self.live, kind + ".pem"))
        self.cert = os.path.join(self.live, "fullchain.pem")
        self.key = os.path.join(self.live, "privkey.pem")

    def _target(self, kind):
        return os.path.join("..", "..", "archive", self.name, "%s%d.pem" % (kind, self.version))

    def _write(self, c):
        self.version += 1
        with open(c.cert) as f:
            leaf = f.read()
        with open(c.key) as f:
            key = f.read()
        with open(self.ca.cert) as f:
            chain = f.read()
        for kind, text in (("cert", leaf), ("privkey", key), ("chain", chain),
                           ("fullchain", leaf + chain)):
            with open(os.path.join(self.archive, "%s%d.pem" % (kind, self.version)), "w") as f:
                f.write(text)

    def renew(self, c):
        """-> monotonic time just before the first live link is replaced."""
        self._write(c)
        t0 = time.monotonic()
        for kind in self.KINDS:
            _relink(self._target(kind), os.path.join(self.live, kind + ".pem"))
        return t0

    def describe(self):
        return "fullchain.pem -> %s, privkey.pem -> %s" % (
            os.readlink(self.cert), os.readlink(self.key))


def _symlink_renewals(t, make_layout, style):
    """watch = true on paths that are symlinks, 2 workers, HTTPS load (new connections and
    keep-alive): two renewals in the layout's own way. Each new certificate (checked by its
    serial in the served leaf) must be served within 2 s of the swap, only the old or the new
    one is served meanwhile, and no request fails."""
    ca = make_ca(t)
    c0 = make_cert(t, ca, "gen0", ["a.test"])
    c1 = make_cert(t, ca, "gen1", ["a.test"])
    c2 = make_cert(t, ca, "gen2", ["a.test"])
    certs = [c0, c1, c2]
    layout = make_layout(t, ca, c0)
    px, be = tls_proxy(t, [{"cert": layout.cert, "key": layout.key}], server={"workers": 2},
                       watch=True)
    ctx = client_ctx(ca)
    assert_serves(px.tls_port, ctx, "a.test", c0, certs, 2, "%s: at start" % style)
    lg = LoadGen(px.tls_port, rate=100, path="/echo", header=None, ka_conns=6, fresh_threads=12,
                 tls_context=client_ctx(ca), server_hostname="a.test").start()
    rounds = []
    try:
        time.sleep(1.0)
        for frm, to in ((c0, c1), (c1, c2)):
            t0 = layout.renew(to)
            delay, seen = _wait_switch(px, ctx, frm, to, certs, t0, limit=6.0)
            where = layout.describe()
            time.sleep(1.0)   # load goes on over the new certificate
            after = []
            for i in range(5):
                r, f = https_get(px.tls_port, ctx, "a.test", path="/echo?after=%d" % i)
                after.append((der_info(f["der"])["serial"], r.status))
            rounds.append((to, delay, seen, after, where))
            if delay is None:
                break
    finally:
        st = lg.stop()
    for to, delay, seen, after, where in rounds:
        print("report: %s renewal to %s (%s) served %s after the swap" % (
            style, to.label, where,
            "%.0f ms" % (delay * 1000) if delay is not None else "NEVER (6 s)"))
    print("report: " + format_stats(st).splitlines()[0])
    print("report: 'keeping the current certificate' lines during the renewals: %d" % len(
        _keep_lines(px)))
    for to, delay, seen, after, where in rounds:
        what = "%s renewal to %s (%s)" % (style, to.label, where)
        assert delay is not None, "%s: not served within 6 s of the swap\n--- proxyd log:\n%s" % (
            what, log_tail(px))
        assert delay <= 2.0, "%s: served %.2f s after the swap (limit 2 s)" % (what, delay)
        assert not seen, "%s: during the switch, handshakes got: %r" % (what, seen)
        assert after == [(to.serial, 200)] * 5, (
            "%s: afterwards new connections got (serial, status) %r, expected serial %x" % (
                what, [("%x" % s, st_) for s, st_ in after], to.serial))
    assert st["failures"] == 0 and st["ok"] > 100, (
        "%s: %s\n--- log:\n%s" % (style, format_stats(st), log_tail(px)))
    ent = status_entry(px, layout.cert)
    assert "error" not in ent, "status shows an error after good renewals: %r" % ent
    assert ent.get("not_after") == c2.not_after, (ent, c2.not_after)


def _kube_layout(t, ca, first):
    return KubeSecretVolume(os.path.join(_certdir(t), "secret-volume"), first)


def _certbot_layout(t, ca, first):
    return CertbotLineage(os.path.join(_certdir(t), "letsencrypt"), "a.test", first, ca)


@harness.timeout(60)
def test_tls_watch_kubernetes_secret_symlink_swap(t):
    _symlink_renewals(t, _kube_layout, "cert-manager ..data swap")


@harness.timeout(60)
def test_tls_watch_certbot_live_symlinks(t):
    _symlink_renewals(t, _certbot_layout, "certbot live/ links")


# ----------------------------------------------------------------------------------------------
# 7. a broken replacement is refused

def _keeps_serving(px, ctx, want, certs, seconds, what):
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        try:
            r, f = https_get(px.tls_port, ctx, "a.test", path="/echo?keep=%d" % n)
        except (ssl.SSLError, OSError) as e:
            raise AssertionError("%s: handshake/request %d failed: %r\n--- log:\n%s" % (
                what, n, e, log_tail(px)))
        assert f["sha256"] == want.sha256, "%s: connection %d got %s, expected %s" % (
            what, n, label_of(f["sha256"], certs), want.label)
        assert r.status == 200, "%s: %r" % (what, r)
        n += 1
        time.sleep(0.1)
    return n


def _keep_lines(px):
    return [l for l in px.output().splitlines() if "keeping the current certificate" in l]


@harness.timeout(90)
def test_tls_watch_refuses_broken_certificate(t):
    ca = make_ca(t)
    d = _certdir(t)
    live_cert, live_key = os.path.join(d, "site.crt"), os.path.join(d, "site.key")
    old = make_cert(t, ca, "old", ["a.test"], cert_path=live_cert, key_path=live_key)
    other = make_cert(t, ca, "other", ["a.test"])      # its cert does not match old's key
    new = make_cert(t, ca, "new", ["a.test"])
    certs = [old, other, new]
    px, be = tls_proxy(t, [old], watch=True)
    ctx = client_ctx(ca)
    _keeps_serving(px, ctx, old, certs, 0.3, "before")

    # 1. garbage over the certificate
    replace_file("this is not a certificate\n", live_cert, is_text=True)
    _keeps_serving(px, ctx, old, certs, 3.0, "after garbage replaced the cert file")
    lines = wait_until(lambda: _keep_lines(px), 3.0, 0.1,
                       "no 'keeping the current certificate' line in the error log after a "
                       "garbage cert file\n--- log:\n%s" % log_tail(px))
    print("report: garbage cert file: %s" % lines[-1][:300])
    ent = status_entry(px, live_cert)
    assert isinstance(ent.get("error"), str) and ent["error"], (
        "status --json entry has no error after a refused re-read: %r" % ent)
    print("report: status error: %s" % ent["error"])
    assert ent.get("not_after") == old.not_after, ent

    # 2. a valid certificate that does not match the key in place
    count = len(_keep_lines(px))
    replace_file(other.cert, live_cert)
    _keeps_serving(px, ctx, old, certs, 3.0, "after a non-matching cert replaced the cert file")
    lines = wait_until(lambda: len(_keep_lines(px)) > count and _keep_lines(px), 3.0, 0.1,
                       "no new 'keeping the current certificate' line after a cert that does not "
                       "match the key\n--- log:\n%s" % log_tail(px))
    print("report: mismatching cert: %s" % lines[-1][:300])
    ent = status_entry(px, live_cert)
    assert isinstance(ent.get("error"), str) and "match" in ent["error"].lower(), (
        "status --json error after a cert/key mismatch should say so: %r" % ent)

    # 3. a valid pair: picked up
    t0 = replace_pair(new.cert, new.key, live_cert, live_key)
    try:
        wait_until(lambda: try_served(px.tls_port, ctx, "a.test") == new.sha256, 5.0, 0.05)
    except AssertionError:
        now = try_served(px.tls_port, ctx, "a.test")
        raise AssertionError("the valid replacement was not served within 5 s (now: %s)\n"
                             "--- log:\n%s" % (
                                 now if now.startswith("handshake") else label_of(now, certs),
                                 log_tail(px)))
    print("report: valid replacement after refused ones served %.0f ms after the rename" % (
        (time.monotonic() - t0) * 1000))
    _keeps_serving(px, ctx, new, certs, 0.5, "after the valid replacement")
    ent = wait_until(lambda: (lambda e: "error" not in e and e)(status_entry(px, live_cert)),
                     3.0, 0.1, "status --json still shows an error after a good re-read: %r" % (
                         status_entry(px, live_cert),))
    assert ent.get("not_after") == new.not_after, ent


@harness.timeout(60)
def test_tls_watch_refuses_expired_certificate(t):
    """A renewal that delivers an expired (but well-formed, matching) cert+key pair by watch is
    refused: the old certificate keeps being served, the error log says "keeping the current
    certificate ... expired on DATE", status --json and the human status show the error, no new
    generation starts. A valid pair afterwards is picked up and clears the error."""
    ca = make_ca(t)
    d = _certdir(t)
    live_cert, live_key = os.path.join(d, "site.crt"), os.path.join(d, "site.key")
    old = make_cert(t, ca, "old", ["a.test"], cert_path=live_cert, key_path=live_key)
    exp = make_expired_cert(t, ca, "expired", ["a.test"])
    new = make_cert(t, ca, "new", ["a.test"])
    certs = [old, exp, new]
    assert exp.not_after < time.time(), "the test certificate is not expired: %s" % fmt_utc(
        exp.not_after)
    px, be = tls_proxy(t, [old], watch=True)
    ctx = client_ctx(ca)
    _keeps_serving(px, ctx, old, certs, 0.3, "before")
    gen = px.status_json().get("generation")

    replace_pair(exp.cert, exp.key, live_cert, live_key)
    lines = wait_until(lambda: [l for l in _keep_lines(px) if "expired" in l], 3.0, 0.1,
                       "no 'keeping the current certificate ... expired' line in the error log "
                       "after an expired pair replaced the files\n--- log:\n%s" % log_tail(px))
    print("report: expired replacement: %s" % lines[-1][:300])
    assert live_cert in lines[-1], "the log line does not name %s: %r" % (live_cert, lines[-1])
    day = time.strftime("%Y-%m-%d", time.gmtime(exp.not_after))
    assert day in lines[-1], "the log line does not give the expiry date %s: %r" % (day, lines[-1])
    _keeps_serving(px, ctx, old, certs, 2.0, "after an expired pair replaced the files")
    ent = status_entry(px, live_cert)
    assert isinstance(ent.get("error"), str) and "expired" in ent["error"], (
        "status --json entry should carry the expiry refusal: %r" % ent)
    assert ent.get("not_after") == old.not_after, (
        "status shows not_after %r, the certificate in use expires %d" % (
            ent.get("not_after"), old.not_after))
    human = px.proxyctl("status").stdout
    assert any("renewal refused" in l and "expired" in l for l in human.splitlines()), (
        "human status does not show the refused renewal:\n%s" % human)
    assert px.status_json().get("generation") == gen, "a refused renewal started a generation"

    replace_pair(new.cert, new.key, live_cert, live_key)
    try:
        wait_until(lambda: try_served(px.tls_port, ctx, "a.test") == new.sha256, 3.0, 0.05)
    except AssertionError:
        raise AssertionError("a valid pair after the expired one was not served within 3 s"
                             "\n--- log:\n%s" % log_tail(px))
    ent = wait_until(lambda: (lambda e: "error" not in e and e)(status_entry(px, live_cert)),
                     3.0, 0.1, "status --json still shows an error after a good re-read: %r" % (
                         status_entry(px, live_cert),))
    assert ent.get("not_after") == new.not_after, ent


# ----------------------------------------------------------------------------------------------
# 8. renewal by reload (no watch)

def test_tls_reload_renews_certificate(t):
    ca = make_ca(t)
    d = _certdir(t)
    live_cert, live_key = os.path.join(d, "site.crt"), os.path.join(d, "site.key")
    old = make_cert(t, ca, "old", ["a.test"], cert_path=live_cert, key_path=live_key)
    new = make_cert(t, ca, "new", ["a.test"])
    certs = [old, new]
    px, be = tls_proxy(t, [old])          # watch defaults to false
    ctx = client_ctx(ca)
    assert_serves(px.tls_port, ctx, "a.test", old, certs, 2, "at start")
    replace_pair(new.cert, new.key, live_cert, live_key)
    time.sleep(1.5)
    assert_serves(px.tls_port, ctx, "a.test", old, certs, 3,
                  "files replaced, no watch, no reload yet")
    r = px.proxyctl("reload", timeout=30)
    assert r.returncode == 0, "reload failed: %s%s\n--- log:\n%s" % (r.stdout, r.stderr,
                                                                      log_tail(px))
    assert_serves(px.tls_port, ctx, "a.test", new, certs, 10, "right after the reload returned")
    gen = px.status_json().get("generation")

    replace_file("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
                 live_cert, is_text=True)
    r = px.proxyctl("reload", timeout=30)
    out = r.stdout + r.stderr
    print("report: reload with a corrupt cert: exit %d: %s" % (r.returncode, out.strip()[:400]))
    assert r.returncode == 1, "reload with a corrupt certificate file: exit %d (expected 1): %s" % (
        r.returncode, out)
    assert "site.crt" in out or "certificate" in out.lower(), (
        "the reload error does not name the certificate problem: %r" % out)
    assert px.status_json().get("generation") == gen, "generation changed by a failed reload"
    assert_serves(px.tls_port, ctx, "a.test", new, certs, 5, "after the refused reload")


# ----------------------------------------------------------------------------------------------
# 9. TLS to upstream servers

def _tls_backend(t):
    """CA-1, CA-2, and an HTTPS backend whose certificate (backend.test) CA-1 signed; the list of
    SNI names the backend received."""
    ca1 = make_ca(t, "ca1")
    ca2 = make_ca(t, "ca2")
    bcert = make_cert(t, ca1, "backend", ["backend.test"])
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(bcert.cert, bcert.key)
    sni_seen = []

    def on_sni(sslobj, name, c):
        sni_seen.append(name)
    sctx.sni_callback = on_sni
    be = t.backend("tlsb", tls_context=sctx)
    return ca1, ca2, be, sni_seen


def _tls_upstream(be, **kw):
    server = {"address": be.address, "tls": True}
    server.update(kw)
    return {"servers": [server]}


def test_tls_upstream(t):
    """ca_file = the backend's CA -> 200 (SNI sent, one pooled TLS connection reused); another
    CA, a wrong sni, or the system store (which does not know the test CA) -> 502."""
    ca1, ca2, be, sni_seen = _tls_backend(t)
    upstreams = {
        "ca1": _tls_upstream(be, sni="backend.test", verify=True, ca_file=ca1.cert),
        "ca2": _tls_upstream(be, sni="backend.test", ca_file=ca2.cert),
        "badsni": _tls_upstream(be, sni="other.test", ca_file=ca1.cert),
        "system": _tls_upstream(be, sni="backend.test"),
    }
    routes = [{"path": "/" + n, "upstream": n} for n in upstreams]
    px = t.proxy({"upstreams": upstreams, "routes": routes})

    # reuse: 5 sequential requests on one client connection -> one upstream TLS connection
    with px.conn() as c:
        for i in range(5):
            r = c.request("GET", "/ca1/echo?i=%d" % i)
            assert r.status == 200, "ca_file = CA-1: %r\n--- log:\n%s\n--- backend TLS errors: " \
                "%r" % (r, log_tail(px), be.tls_errors)
            assert r.json()["path"] == "/ca1/echo?i=%d" % i, r.json()
    assert be.connections == 1 and be.tls_handshakes == 1, (
        "5 sequential requests: backend saw %d TCP connections, %d TLS handshakes (expected 1)" % (
            be.connections, be.tls_handshakes))
    hdrs = be.last()["headers"]
    assert harness.hget(hdrs, "X-Forwarded-Proto") == "http", hdrs
    assert sni_seen and set(sni_seen) == {"backend.test"}, "backend saw SNI %r" % sni_seen
    before = be.connections
    for i in range(5):
        assert px.get("/ca1/echo?fresh=%d" % i).status == 200
    print("report: 5 requests from 5 client connections opened %d new upstream TLS "
          "connections" % (be.connections - before))
    assert be.connections - before <= 1, (
        "pooled upstream TLS connection not reused across client connections: %d new" % (
            be.connections - before))

    results = {}
    for name, want in (("ca2", 502), ("badsni", 502), ("system", 502), ("ca1", 200)):
        f0 = be.tls_failures
        r = px.get("/%s/echo" % name)
        time.sleep(0.2)   # the backend's side of a refused handshake ends a moment later
        results[name] = (r.status, be.tls_failures - f0)
        if want == 502:
            assert_error(r, 502)
        else:
            assert r.status == 200 and r.json()["backend"] == be.name, (
                "%s: %r\n--- log:\n%s" % (name, r, log_tail(px)))
    print("report: upstream TLS (status, backend-side handshake failures): %r" % results)
    for line in log_tail(px, 6, r"tls|ssl|certif|verif").splitlines():
        print("report: logged: %s" % line[:300])


def test_tls_upstream_verify_false(t):
    """verify = false: the backend's certificate is not checked - neither against the system
    store (no ca_file) nor against a ca_file of another CA."""
    ca1, ca2, be, sni_seen = _tls_backend(t)
    px = t.proxy({"upstreams": {"nv": _tls_upstream(be, sni="backend.test", verify=False)},
                  "routes": [{"path": "/", "upstream": "nv"}]})
    r = px.get("/echo?nv=1")
    assert r.status == 200 and r.json()["backend"] == be.name, (
        "verify = false without ca_file: %r\n--- log:\n%s" % (r, log_tail(px)))
    px.stop()
    try:
        px2 = t.proxy({"upstreams": {"nv": _tls_upstream(be, sni="backend.test", verify=False,
                                                         ca_file=ca2.cert)},
                       "routes": [{"path": "/", "upstream": "nv"}]}, name="proxyd2")
    except AssertionError as e:
        errs = [l for l in str(e).splitlines() if ".toml:" in l]
        raise AssertionError("a server with verify = false and ca_file = CA-2 is not accepted: "
                             "%s" % (" | ".join(errs) or str(e)[-1500:]))
    r = px2.get("/echo?nv=2")
    assert r.status == 200 and r.json()["backend"] == be.name, (
        "verify = false with ca_file = CA-2 (not the backend's CA): %r\n--- log:\n%s" % (
            r, log_tail(px2)))


class RecordingServerContext(ssl.SSLContext):
    """A server-side SSLContext (for harness.Backend(tls_context=...)) that records, for every
    handshake it completes, (protocol version, session_reused) in .handshakes."""

    def wrap_socket(self, *args, **kwargs):
        s = super().wrap_socket(*args, **kwargs)
        self.handshakes.append((s.version(), s.session_reused))
        return s


def _upstream_resumption(t, version, proto, n=6):
    """A TLS backend (maximum version `version`) that closes the connection after every response
    (Connection: close), so each of n requests needs a new upstream handshake: the first one is
    full, every later one must resume the session proxyd kept from the previous connection (the
    backend's SSL object says session_reused)."""
    ca = make_ca(t)
    bcert = make_cert(t, ca, "backend", ["backend.test"])
    sctx = RecordingServerContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.handshakes = []
    sctx.load_cert_chain(bcert.cert, bcert.key)
    if version is not None:
        sctx.maximum_version = version
    be = t.backend("tlsb", tls_context=sctx)
    px = t.proxy({"upstreams": {"u": _tls_upstream(be, sni="backend.test", ca_file=ca.cert)},
                  "routes": [{"path": "/", "upstream": "u"}]})
    for i in range(n):
        r = px.get("/echo?close=1&i=%d" % i)
        assert r.status == 200 and r.json()["backend"] == be.name, (
            "request %d: %r\n--- log:\n%s\n--- backend TLS errors: %r" % (
                i, r, log_tail(px), be.tls_errors))
    hs = wait_until(lambda: len(sctx.handshakes) >= n and list(sctx.handshakes), 3.0, 0.05,
                    "the backend completed %d TLS handshakes, expected %d" % (
                        len(sctx.handshakes), n))
    resumed = sum(1 for _, reused in hs if reused)
    print("report: upstream %s: %d requests with Connection: close -> %d TCP connections, "
          "%d handshakes, %d resumed (per handshake: %s)" % (
              proto, n, be.connections, len(hs), resumed,
              "".join("R" if r_ else "F" for _, r_ in hs)))
    assert be.connections == n and len(hs) == n, (
        "the backend closes after every response, so %d requests should take %d connections: "
        "%d TCP, %d TLS handshakes" % (n, n, be.connections, len(hs)))
    assert {v for v, _ in hs} == {proto}, "upstream handshakes used %r, expected %s" % (hs, proto)
    assert not hs[0][1], "the first upstream handshake claims to resume: %r" % hs
    assert resumed >= n - 1, (
        "%s: only %d of the %d later upstream handshakes resumed the session (F = full, "
        "R = resumed: %s)\n--- log:\n%s" % (proto, resumed, n - 1,
                                             "".join("R" if r_ else "F" for _, r_ in hs),
                                             log_tail(px)))


def test_tls_upstream_session_resumption_tls13(t):
    _upstream_resumption(t, None, "TLSv1.3")


def test_tls_upstream_session_resumption_tls12(t):
    _upstream_resumption(t, ssl.TLSVersion.TLSv1_2, "TLSv1.2")


# ----------------------------------------------------------------------------------------------
# 10. config errors

def _cfg_text(t, cert_lines, extra=""):
    """(text, {marker: line number}) with [tls] certificates written one entry per line."""
    lines = [
        '[server]',
        'listen = ["127.0.0.1:%d"]' % harness.free_port(),
        'workers = 1',
        'control_socket = "%s"' % t.path("ctl.sock"),
        '',
        '[tls]',
        'listen = ["127.0.0.1:%d"]' % harness.free_port(),
        'certificates = [',
    ]
    where = {}
    for marker, entry in cert_lines:
        where[marker] = len(lines) + 1
        lines.append('  %s,' % entry)
    lines += [']', 'min_version = "1.2"', '']
    lines += ['[upstreams.app]']
    where["servers"] = len(lines) + 1
    lines += [extra or 'servers = [ { address = "127.0.0.1:9" } ]', '',
              '[[routes]]', 'path = "/"', 'upstream = "app"', '']
    return "\n".join(lines), where


_errors = harness.config_errors


def _expect(r, path, line, words, what):
    assert r.returncode == 1, "%s: exit %d, expected 1\nstdout=%r\nstderr=%r" % (
        what, r.returncode, r.stdout, r.stderr)
    errs = _errors(r, path)
    for ln, col, msg in errs:
        if ln == line and col >= 1 and any(w.lower() in msg.lower() for w in words):
            print("report: %s -> %s:%d:%d: %s" % (what, os.path.basename(path), ln, col, msg))
            return msg
    raise AssertionError("%s: no FILE:LINE:COL error at line %d mentioning one of %r; got %r\n"
                         "stderr=%r" % (what, line, words, errs, r.stderr))


def test_tls_config_errors(t):
    ca = make_ca(t)
    a = make_cert(t, ca, "a", ["a.test"])
    b = make_cert(t, ca, "b", ["b.test"])
    x = make_expired_cert(t, ca, "expired", ["old.test"])

    def entry(cert, key):
        return '{ cert = "%s", key = "%s" }' % (cert, key)

    # valid, with paths relative to the config file's directory (t.tmp)
    text, _ = _cfg_text(t, [("a", entry("certs/a.crt", "certs/a.key")),
                            ("b", entry(b.cert, b.key))],
                        extra='servers = [ { address = "127.0.0.1:9", tls = true, '
                              'sni = "backend.test", verify = true, ca_file = "%s" } ]' % ca.cert)
    r, p = t.check_config(text)
    assert r.returncode == 0, "a valid TLS config is refused (%d):\n%s%s\n%s" % (
        r.returncode, r.stdout, r.stderr, text)

    missing = t.path("certs/missing.crt")
    text, where = _cfg_text(t, [("a", entry(a.cert, a.key)), ("m", entry(missing, a.key))])
    r, p = t.check_config(text, "missing.toml")
    _expect(r, p, where["m"], ["missing.crt"], "missing cert file")

    text, where = _cfg_text(t, [("mm", entry(a.cert, b.key)), ("b", entry(b.cert, b.key))])
    r, p = t.check_config(text, "mismatch.toml")
    _expect(r, p, where["mm"], ["match"], "cert/key mismatch")

    text, where = _cfg_text(t, [("a", entry(a.cert, a.key)), ("x", entry(x.cert, x.key))])
    r, p = t.check_config(text, "expired.toml")
    msg = _expect(r, p, where["x"], ["expired"], "expired certificate")
    assert time.strftime("%Y-%m-%d", time.gmtime(x.not_after)) in msg, (
        "the expiry error does not give the date %s: %r" % (fmt_utc(x.not_after), msg))

    text, where = _cfg_text(t, [("a", entry(a.cert, a.key))],
                            extra='servers = [ { address = "127.0.0.1:9", tls = true, '
                                  'ca_file = "%s" } ]' % t.path("certs/no-ca.pem"))
    r, p = t.check_config(text, "noca.toml")
    _expect(r, p, where["servers"], ["no-ca.pem"], "missing upstream ca_file")


# ----------------------------------------------------------------------------------------------
# 11. proxyctl status

def test_tls_status_shows_certificates(t):
    ca = make_ca(t)
    a = make_cert(t, ca, "a", ["a.test", "*.a.test"], days=30)
    e = make_cert(t, ca, "e", ["e.test"], "ECDSA", days=90)
    # a with a path relative to the config file (in t.tmp/proxyd/), e absolute
    os.makedirs(t.path("proxyd"), exist_ok=True)
    px, be = tls_proxy(t, [{"cert": "../certs/a.crt", "key": "../certs/a.key"}, e])
    certs = tls_status(px)
    assert len(certs) == 2, "status shows %d certificates, expected 2: %r" % (len(certs), certs)
    for c, ent in zip((a, e), certs):
        assert _same_path(str(ent.get("cert")), c.cert), (
            "status cert path %r, expected %s (resolved)" % (ent.get("cert"), c.cert))
        assert ent.get("not_after") == c.not_after, "%s: not_after %r, certificate says %d (%s)" % (
            c.label, ent.get("not_after"), c.not_after, fmt_utc(c.not_after))
        assert ent.get("expires") == fmt_utc(c.not_after), (c.label, ent.get("expires"),
                                                            fmt_utc(c.not_after))
        assert sorted(n.lower() for n in ent.get("names", [])) == sorted(c.names), (c.names, ent)
        assert ent.get("key_type") == c.key_type, (c.key_type, ent)
        assert "error" not in ent, ent
    r = px.proxyctl("status")
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    for c, ent in zip((a, e), certs):
        mine = [l for l in lines if str(ent["cert"]) in l]
        assert mine, "human status has no line with %s:\n%s" % (ent["cert"], r.stdout)
        assert any("expires" in l and fmt_utc(c.not_after)[:10] in l for l in mine), (
            "human status line for %s lacks 'expires' and the date %s: %r" % (
                c.label, fmt_utc(c.not_after)[:10], mine))
    print("report: status lines: %r" % [l for l in lines if "expires" in l])
