"""JWT authentication ([auth.jwt], routes' auth_required and roles): 401 with WWW-Authenticate,
403 for a missing role, claims forwarded as headers (client copies always removed), algorithms,
HS/RS confusion, alg none, key rotation (keys list and reload), secrets never logged.

Tokens are made by Debian's python3-jwt (PyJWT, with python3-cryptography for RS/ES): an
implementation independent of the proxy's. Hostile tokens (alg none, HS256 signed with the
public key's PEM text) are built by hand, since PyJWT refuses to make them. The key pairs are the
test-only fixtures in tests/data/jwt/, copied into each test's temp dir.
"""

import base64
import hashlib
import hmac
import json
import os
import shutil
import time

import jwt  # python3-jwt

import harness
from harness import assert_error, hall, wait_until

DATA = os.path.join(harness.REPO_ROOT, "tests", "data", "jwt")
ISSUER = "https://auth.test"
AUDIENCE = "proxyd"
SECRET = "integration-test-secret:7f3a9c1e5b2d4f6a8c0e2b4d6f8a1c3e"
OTHER_SECRET = "some-other-secret-nobody-configured-0123456789"


# ----------------------------------------------------------------------------------------------
# helpers

def _fixture(name):
    with open(os.path.join(DATA, name)) as f:
        return f.read()


def _copy_key(t, name, as_name=None):
    """A fixture key file copied into the test's temp dir; returns its path."""
    dst = t.path(as_name or name)
    shutil.copyfile(os.path.join(DATA, name), dst)
    return dst


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_token(header, payload, sign=None):
    """header.payload.signature built by hand; sign(signing_input_bytes) -> signature bytes."""
    h = _b64(json.dumps(header, separators=(",", ":")).encode())
    p = _b64(json.dumps(payload, separators=(",", ":")).encode())
    sig = sign(("%s.%s" % (h, p)).encode()) if sign else b""
    return "%s.%s.%s" % (h, p, _b64(sig))


def _claims(**over):
    now = int(time.time())
    c = {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300,
         "roles": ["user", "dev"]}
    for k, v in over.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def _hs(claims=None, secret=SECRET, alg="HS256", **headers):
    return jwt.encode(claims if claims is not None else _claims(), secret, algorithm=alg,
                      headers=headers or None)


def _pk(name, claims=None, alg="RS256", **headers):
    return jwt.encode(claims if claims is not None else _claims(), _fixture(name), algorithm=alg,
                      headers=headers or None)


def _bearer(token):
    return {"Authorization": "Bearer " + token}


ROUTES = [
    {"path": "/admin", "upstream": "b", "auth_required": True, "roles": ["admin"]},
    {"path": "/public", "upstream": "b"},
    {"path": "/", "upstream": "b", "auth_required": True},
]


def _proxy(t, jwt_cfg=None, routes=None, be=None, **cfg):
    """proxyd in front of one backend with [auth.jwt]; default: HS256 + RS256, one secret and
    the RSA public key, issuer, audience, 5 s leeway, sub/roles forwarded."""
    be = be or t.backend()
    jwt_cfg = jwt_cfg or {}
    full = {"issuer": ISSUER, "audience": AUDIENCE, "leeway": "5s", "roles_claim": "roles",
            "forward_claims": {"sub": "X-User-Id", "roles": "X-User-Roles"}}
    if not {"keys", "secret_file", "public_key_file"} & set(jwt_cfg):
        full["algorithms"] = ["HS256", "RS256"]
        full["keys"] = [{"secret_file": t.write("jwt.secret", SECRET + "\n")},
                        {"public_key_file": _copy_key(t, "rsa.pub.pem")}]
    full.update(jwt_cfg)
    px = t.proxy_to(be, routes=routes or ROUTES, auth={"jwt": full}, **cfg)
    return px, be


def _seen(r):
    """Headers the backend received, from an /echo response."""
    assert r.status == 200, r
    return [tuple(x) for x in r.json()["headers"]]


def assert_401_invalid(r, what=""):
    data = assert_error(r, 401)
    www = r.header("WWW-Authenticate") or ""
    assert www.startswith('Bearer error="invalid_token"'), (
        "%s: WWW-Authenticate %r, expected Bearer error=\"invalid_token\"" % (what, www))
    return data


def assert_401_missing(r, what=""):
    data = assert_error(r, 401)
    www = r.header("WWW-Authenticate")
    assert www == "Bearer", "%s: WWW-Authenticate %r, expected exactly 'Bearer'" % (what, www)
    return data


# ----------------------------------------------------------------------------------------------
# 401 / 403 / 200

def test_auth_missing_token_401(t):
    px, be = _proxy(t)
    assert_401_missing(px.get("/echo"), "no Authorization")
    assert_401_missing(px.get("/echo", headers={"Authorization": "Basic YWxhZGRpbjpvcGVu"}),
                       "Basic credentials")
    assert_401_missing(px.get("/echo", headers={"Authorization": "Bearer"}), "Bearer, no token")
    assert_401_missing(px.get("/admin/x"), "no Authorization on a role route")
    r = px.get("/echo", headers={"X-Request-Id": "auth-missing-1"})
    assert assert_401_missing(r)["request_id"] == "auth-missing-1"
    assert be.served == 0, "the backend must not see unauthenticated requests"
    # a route without auth_required needs no token
    assert px.get("/public/echo").status == 200


def test_auth_valid_token_forwards_claims(t):
    px, be = _proxy(t)
    token = _hs(_claims(roles=["a", "b"]))
    r = px.get("/echo", headers=_bearer(token))
    h = _seen(r)
    assert hall(h, "X-User-Id") == ["alice"], h
    assert hall(h, "X-User-Roles") == ["a, b"], h
    assert hall(h, "Authorization") == ["Bearer " + token], "Authorization forwarded unchanged"
    # scheme in another case, several spaces
    r = px.get("/echo", headers={"Authorization": "bearer   " + token})
    assert hall(_seen(r), "X-User-Id") == ["alice"]
    # an RS256 token of the same identity
    r = px.get("/echo", headers=_bearer(_pk("rsa.key.pem", _claims(sub="bob"))))
    assert hall(_seen(r), "X-User-Id") == ["bob"]
    # roles as one space-separated string
    r = px.get("/admin/x", headers=_bearer(_hs(_claims(roles="user admin"))))
    assert hall(_seen(r), "X-User-Roles") == ["user admin"]


def test_auth_client_copies_of_claim_headers_are_removed(t):
    px, be = _proxy(t)
    spoof = [("X-User-Id", "root"), ("x-user-roles", "admin"), ("X-User-Id", "root2")]
    # with a token: only the token's values
    r = px.get("/echo", headers=[("Authorization", "Bearer " + _hs())] + spoof)
    h = _seen(r)
    assert hall(h, "X-User-Id") == ["alice"], h
    assert hall(h, "X-User-Roles") == ["user, dev"], h
    # a claim absent from the token: the header is not sent at all
    r = px.get("/echo", headers=[("Authorization", "Bearer " + _hs(_claims(sub=None)))] + spoof)
    h = _seen(r)
    assert hall(h, "X-User-Id") == [], h
    assert hall(h, "X-User-Roles") == ["user, dev"], h
    # a route without auth_required: stripped too, with or without a token
    h = _seen(px.get("/public/echo", headers=spoof))
    assert hall(h, "X-User-Id") == [] and hall(h, "X-User-Roles") == [], h
    h = _seen(px.get("/public/echo", headers=[("Authorization", "Bearer " + _hs())] + spoof))
    assert hall(h, "X-User-Id") == [] or hall(h, "X-User-Id") == ["alice"], h
    assert "root" not in [v for _, v in h], h


def test_auth_missing_role_403(t):
    px, be = _proxy(t)
    r = px.get("/admin/panel", headers=_bearer(_hs(_claims(roles=["user"]))))
    assert_error(r, 403)
    r = px.get("/admin/panel", headers=_bearer(_hs(_claims(roles=None))))
    assert_error(r, 403)
    r = px.get("/admin/panel", headers=_bearer(_hs(_claims(roles=["Admin"]))))
    assert_error(r, 403)
    assert be.served == 0
    assert px.get("/admin/panel", headers=_bearer(_hs(_claims(roles=["x", "admin"])))).status \
        == 200
    # the same tokens are fine where no role is required
    assert px.get("/echo", headers=_bearer(_hs(_claims(roles=["user"])))).status == 200
    assert px.get("/echo", headers=_bearer(_hs(_claims(roles=None)))).status == 200
    # an invalid token on a role route is 401, not 403
    assert_401_invalid(px.get("/admin/panel", headers=_bearer(_hs(secret=OTHER_SECRET))))


def test_auth_invalid_tokens_401(t):
    px, be = _proxy(t)
    now = int(time.time())
    good = _hs()
    head, payload, sig = good.split(".")
    forged_payload = _b64(json.dumps(_claims(sub="mallory")).encode())
    mid = len(sig) // 2
    cases = {
        "expired": _hs(_claims(exp=now - 60)),
        "not yet valid": _hs(_claims(nbf=now + 60)),
        "wrong issuer": _hs(_claims(iss="https://evil.test")),
        "no issuer": _hs(_claims(iss=None)),
        "wrong audience": _hs(_claims(aud="other")),
        "audience array without ours": _hs(_claims(aud=["a", "b"])),
        "no audience": _hs(_claims(aud=None)),
        "wrong secret": _hs(secret=OTHER_SECRET),
        "tampered payload": "%s.%s.%s" % (head, forged_payload, sig),
        "tampered signature": "%s.%s.%s%s%s" % (head, payload, sig[:mid],
                                                "A" if sig[mid] != "A" else "B", sig[mid + 1:]),
        "no signature": "%s.%s." % (head, payload),
        "algorithm not allowed": _hs(alg="HS512"),
        "wrong secret under a kid": _hs(secret=OTHER_SECRET, kid="nope"),
        "garbage": "not-a-jwt",
        "dots": "...",
        "two parts": "%s.%s" % (head, payload),
        "huge": "A" * 9000 + "." + payload + "." + sig,
        "es256 (not configured)": _pk("ec256.key.pem", alg="ES256"),
    }
    for what, token in cases.items():
        assert_401_invalid(px.get("/echo", headers=_bearer(token)), what)
    assert be.served == 0, "no invalid token may reach the backend"
    # no configured key has a kid: a token's kid does not matter (every key is tried)
    assert px.get("/echo", headers=_bearer(_hs(kid="anything"))).status == 200
    # still fine afterwards
    assert px.get("/echo", headers=_bearer(good)).status == 200


def test_auth_audience_array_and_leeway(t):
    px, be = _proxy(t)
    now = int(time.time())
    ok = {
        "audience array with ours": _claims(aud=["other", AUDIENCE]),
        "expired within leeway": _claims(exp=now - 2),
        "nbf within leeway": _claims(nbf=now + 2),
        "no exp": _claims(exp=None),
    }
    for what, c in ok.items():
        r = px.get("/echo", headers=_bearer(_hs(c)))
        assert r.status == 200, "%s: %r" % (what, r)
    assert_401_invalid(px.get("/echo", headers=_bearer(_hs(_claims(exp=now - 20)))), "expired")
    assert_401_invalid(px.get("/echo", headers=_bearer(_hs(_claims(nbf=now + 20)))), "nbf")


def test_auth_alg_none_refused(t):
    px, be = _proxy(t)
    for none in ("none", "None", "NONE"):
        for header in ({"alg": none}, {"alg": none, "typ": "JWT"}):
            token = _raw_token(header, _claims())
            assert_401_invalid(px.get("/echo", headers=_bearer(token)), "alg %r" % none)
            # with something in the signature place
            token = _raw_token(header, _claims(), lambda m: b"x")
            assert_401_invalid(px.get("/echo", headers=_bearer(token)), "alg %r + sig" % none)
    assert be.served == 0


def test_auth_hs_rs_confusion_refused(t):
    """algorithms HS256 + RS256, a public key and a different secret: an HS256 token whose MAC
    key is the public key's PEM text must not pass."""
    px, be = _proxy(t, {"algorithms": ["RS256", "HS256"],
                        "keys": [{"public_key_file": _copy_key(t, "rsa.pub.pem")},
                                 {"secret_file": t.write("jwt.secret", OTHER_SECRET)}]})
    pem = _fixture("rsa.pub.pem")
    for key in (pem.encode(), pem.rstrip("\n").encode()):
        forged = _raw_token({"alg": "HS256", "typ": "JWT"}, _claims(),
                            lambda m: hmac.new(key, m, hashlib.sha256).digest())
        assert_401_invalid(px.get("/echo", headers=_bearer(forged)), "HS256 keyed by the PEM")
    assert be.served == 0
    assert px.get("/echo", headers=_bearer(_pk("rsa.key.pem"))).status == 200
    assert px.get("/echo", headers=_bearer(_hs(secret=OTHER_SECRET))).status == 200


def test_auth_every_algorithm_interop(t):
    """PyJWT-made tokens of all eight algorithms, with and without typ."""
    px, be = _proxy(t, {
        "algorithms": ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384"],
        "keys": [{"secret_file": t.write("jwt.secret", SECRET)},
                 {"public_key_file": _copy_key(t, "rsa.pub.pem")},
                 {"public_key_file": _copy_key(t, "ec256.pub.pem")},
                 {"public_key_file": _copy_key(t, "ec384.pub.pem")}]})
    tokens = {
        "HS256": _hs(alg="HS256"), "HS384": _hs(alg="HS384"), "HS512": _hs(alg="HS512"),
        "RS256": _pk("rsa.key.pem", alg="RS256"), "RS384": _pk("rsa.key.pem", alg="RS384"),
        "RS512": _pk("rsa.key.pem", alg="RS512"), "ES256": _pk("ec256.key.pem", alg="ES256"),
        "ES384": _pk("ec384.key.pem", alg="ES384"),
        "HS256 without typ": _hs(typ=None),
        "ES256 without typ": _pk("ec256.key.pem", alg="ES256", typ=None),
    }
    for what, token in tokens.items():
        r = px.get("/echo", headers=_bearer(token))
        assert r.status == 200, "%s: %r" % (what, r)
        assert hall(_seen(r), "X-User-Id") == ["alice"], what
    # RS token signed by a key that is not configured
    assert_401_invalid(px.get("/echo", headers=_bearer(_pk("rsa2.key.pem"))), "rsa2")


# ----------------------------------------------------------------------------------------------
# rotation

def test_auth_keys_list_rotation(t):
    px, be = _proxy(t, {"algorithms": ["HS256", "RS256"],
                        "keys": [{"kid": "old", "secret_file": t.write("old.secret", SECRET)},
                                 {"kid": "new", "public_key_file": _copy_key(t, "rsa.pub.pem")}]})
    ok = {
        "old kid": _hs(kid="old"),
        "new kid": _pk("rsa.key.pem", kid="new"),
        "old, no kid": _hs(),
        "new, no kid": _pk("rsa.key.pem"),
    }
    for what, token in ok.items():
        assert px.get("/echo", headers=_bearer(token)).status == 200, what
    bad = {
        "unknown kid": _hs(kid="older"),
        "HS256 under the public key's kid": _hs(kid="new"),
        "RS256 under the secret's kid": _pk("rsa.key.pem", kid="old"),
        "old kid, other secret": _hs(secret=OTHER_SECRET, kid="old"),
    }
    for what, token in bad.items():
        assert_401_invalid(px.get("/echo", headers=_bearer(token)), what)


@harness.timeout(60)
def test_auth_key_rotation_by_reload(t):
    """public_key_file rewritten with a new key + reload: new tokens pass, old ones do not."""
    key_path = _copy_key(t, "rsa.pub.pem", "current.pub.pem")
    px, be = _proxy(t, {"algorithms": ["RS256"], "public_key_file": key_path})
    old_token = _pk("rsa.key.pem")
    new_token = _pk("rsa2.key.pem")
    assert px.get("/echo", headers=_bearer(old_token)).status == 200
    assert_401_invalid(px.get("/echo", headers=_bearer(new_token)), "new key before reload")

    shutil.copyfile(os.path.join(DATA, "rsa2.pub.pem"), key_path + ".tmp")
    os.replace(key_path + ".tmp", key_path)
    r = px.proxyctl("reload", timeout=30)
    assert r.returncode == 0, "reload failed: %s%s" % (r.stdout, r.stderr)
    # (old workers may still take a connection or two while they hand over)
    wait_until(lambda: px.get("/echo", headers=_bearer(new_token)).status == 200
               and px.get("/echo", headers=_bearer(old_token)).status == 401, 10,
               msg="after the reload: the new key's token not accepted or the old one still is")
    for _ in range(3):
        assert_401_invalid(px.get("/echo", headers=_bearer(old_token)), "old key after reload")
        assert px.get("/echo", headers=_bearer(new_token)).status == 200

    # a keys list covering both: the overlap period
    px.cfg = harness.merge(px.cfg, {"auth": {"jwt": {"public_key_file": None, "keys": [
        {"kid": "k1", "public_key_file": _copy_key(t, "rsa.pub.pem", "k1.pub.pem")},
        {"kid": "k2", "public_key_file": key_path}]}}})
    with open(px.config_path + ".tmp", "w") as f:
        f.write(harness.to_toml(px.cfg))
    os.replace(px.config_path + ".tmp", px.config_path)
    r = px.proxyctl("reload", timeout=30)
    assert r.returncode == 0, "reload failed: %s%s" % (r.stdout, r.stderr)
    k2_mismatch = _pk("rsa.key.pem", kid="k2")  # old key's token under the new key's kid
    k1 = _pk("rsa.key.pem", kid="k1")
    wait_until(lambda: px.get("/echo", headers=_bearer(k1)).status == 200
               and px.get("/echo", headers=_bearer(new_token)).status == 200
               and px.get("/echo", headers=_bearer(k2_mismatch)).status == 401, 10,
               msg="the old key is not accepted again after the reload with both keys")
    assert px.get("/echo", headers=_bearer(old_token)).status == 200
    assert px.get("/echo", headers=_bearer(new_token)).status == 200
    assert px.get("/echo", headers=_bearer(_pk("rsa2.key.pem", kid="k2"))).status == 200
    assert_401_invalid(px.get("/echo", headers=_bearer(k2_mismatch)), "k2")


# ----------------------------------------------------------------------------------------------
# cache and logs

def test_auth_cached_token_expires(t):
    """A token accepted (and cached) is refused once its exp has passed."""
    px, be = _proxy(t, {"leeway": "0s"})
    exp = int(time.time()) + 1
    token = _hs(_claims(exp=exp))
    for _ in range(3):
        assert px.get("/echo", headers=_bearer(token)).status == 200
    # now > exp: from 1 s after exp on (whole seconds)
    time.sleep(max(0.0, exp + 1.05 - time.time()))
    assert_401_invalid(px.get("/echo", headers=_bearer(token)), "expired while cached")


def _lines(path):
    if not os.path.exists(path):
        return []
    with open(path, errors="replace") as f:
        return [l for l in f.read().splitlines() if l.strip()]


def test_auth_secret_never_logged(t):
    secret = "S3CRET-canary-value-%d-never-log-me" % os.getpid()
    secret_path = t.write("canary.secret", secret + "\n")
    px, be = _proxy(t, {"algorithms": ["HS256", "RS256"],
                        "keys": [{"kid": "a", "secret_file": secret_path},
                                 {"kid": "b", "public_key_file": _copy_key(t, "rsa.pub.pem")}]},
                    log={"level": "debug"})
    now = int(time.time())
    failing = [
        _hs(secret=OTHER_SECRET, kid="a"),
        _hs(_claims(exp=now - 100), secret=secret, kid="a"),
        _hs(secret=secret, kid="zzz"),
        _hs(_claims(iss="x"), secret=secret, kid="a"),
        _raw_token({"alg": "none"}, _claims()),
        _raw_token({"alg": "HS256", "kid": "b"}, _claims(),
                   lambda m: hmac.new(_fixture("rsa.pub.pem").encode(), m,
                                      hashlib.sha256).digest()),
    ]
    for token in failing:
        assert px.get("/echo", headers=_bearer(token)).status == 401
    assert px.get("/admin/x", headers=_bearer(_hs(secret=secret, kid="a"))).status == 403
    assert px.get("/echo", headers=_bearer(_hs(secret=secret, kid="a"))).status == 200
    n = len(failing) + 2
    wait_until(lambda: len(_lines(px.access_log)) >= n, 5,
               msg="access log has %d lines, expected %d" % (len(_lines(px.access_log)), n))
    # a reload reads the key files again: their content must not be logged then either
    r = px.proxyctl("reload", timeout=30)
    assert r.returncode == 0, r.stderr
    assert secret not in r.stdout + r.stderr
    time.sleep(0.3)
    for name, text in (("access log", "\n".join(_lines(px.access_log))),
                       ("error log + stdout/stderr", px.output())):
        assert secret not in text, "the secret appears in the %s" % name
        assert secret[:12] not in text, "part of the secret appears in the %s" % name
