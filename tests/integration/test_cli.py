"""proxyd command line: --version, -t (config check) and refusing to start on a bad config."""

import glob
import os
import re
import socket
import time

import harness


def _valid(t, port=None, extra_server="", tail=""):
    port = port or harness.free_port()
    return (
        '[server]\n'
        'listen = ["127.0.0.1:%d"]\n'
        'workers = 1\n'
        'control_socket = "%s"\n'
        '%s'
        '\n'
        '[upstreams.app]\n'
        'servers = [ { address = "127.0.0.1:9" } ]\n'
        '\n'
        '[[routes]]\n'
        'path = "/"\n'
        'upstream = "app"\n'
        '%s' % (port, t.path("ctl.sock"), extra_server, tail))


_errors = harness.config_errors


def _expect_error(r, path, line, *words):
    assert r.returncode == 1, "exit code %r, expected 1; stdout=%r stderr=%r" % (
        r.returncode, r.stdout, r.stderr)
    errs = _errors(r, path)
    assert errs, "no FILE:LINE:COLUMN: error on stderr: %r" % r.stderr
    for ln, col, msg in errs:
        if ln == line and all(w.lower() in msg.lower() for w in words):
            assert col >= 1, "column %d" % col
            return msg
    raise AssertionError("no error at line %d mentioning %r; got %r" % (line, words, errs))


def test_version(t):
    r = t.run([harness.PROXYD, "--version"])
    assert r.returncode == 0, r
    assert r.stdout.strip().splitlines()[0].strip() == "proxyd 0.1.0", repr(r.stdout)


def test_check_valid_config(t):
    r, p = t.check_config(_valid(t))
    assert r.returncode == 0, "exit %d: %s%s" % (r.returncode, r.stdout, r.stderr)
    assert "ok" in (r.stdout + r.stderr).lower(), repr(r.stdout + r.stderr)


def test_check_full_config_valid(t):
    """Every key this issue implements, together, is accepted."""
    text = (
        '[server]\n'
        'listen = ["127.0.0.1:%d", "127.0.0.1:%d"]\n'
        'workers = "auto"\n'
        'control_socket = "%s"\n'
        'pid_file = "%s"\n'
        'max_connections = 100\n'
        'shutdown_timeout = "5s"\n'
        'real_ip_header = "X-Forwarded-For"\n'
        'trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"]\n'
        '\n[server.timeouts]\n'
        'header = "10s"\nbody = "30s"\nkeepalive = "1m"\nupstream_connect = "250ms"\n'
        'upstream_response = "30s"\nupstream_idle = "60s"\n'
        '\n[server.limits]\n'
        'max_header_size = "16KiB"\nmax_body_size = "10MiB"\nmax_uri_size = 8192\n'
        '\n[server.response_headers]\n'
        'X-Content-Type-Options = "nosniff"\n'
        '\n[upstreams.api]\n'
        'balance = "round_robin"\n'
        'keepalive = 16\n'
        'servers = [ { address = "127.0.0.1:3001", weight = 100, id = "api-1" },'
        ' { address = "127.0.0.1:3002" } ]\n'
        '\n[upstreams.empty]\nservers = []\n'
        '\n[[routes]]\npath = "/api/"\nhost = "*.example.com"\nmethods = ["GET", "POST"]\n'
        'upstream = "api"\nstrip_prefix = true\n'
        '\n[[routes]]\npath_exact = "/x"\nupstream = "empty"\n'
        '\n[log]\nlevel = "debug"\nformat = "text"\nerror_log = "-"\naccess_log = ""\n'
        % (harness.free_port(), harness.free_port(), t.path("ctl.sock"), t.path("p.pid")))
    r, p = t.check_config(text)
    assert r.returncode == 0, "exit %d: %s%s" % (r.returncode, r.stdout, r.stderr)


def _with_demo_state(t, path):
    """The examples name files their scripts/try-* make in /tmp/proxyd-NAME/ (secrets,
    certificates): check a copy pointing at the same files made here instead."""
    text = open(path).read()
    refs = sorted(set(re.findall(r"/tmp/proxyd-[a-z]+/[\w.]+", text)))
    if not refs:
        return path
    state = os.path.join(t.tmp, "demo-state-" + os.path.basename(path))
    os.makedirs(state, exist_ok=True)
    for ref in refs:
        local = os.path.join(state, os.path.basename(ref))
        text = text.replace(ref, local)
        if ref.endswith((".secret", ".token")):
            with open(local, "w") as out:
                out.write(os.urandom(24).hex() + "\n")
        elif ref.endswith(".key"):
            cert = local[:-len(".key")] + ".crt"
            r = t.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                       "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=demo",
                       "-keyout", local, "-out", cert])
            assert r.returncode == 0, r.stderr
    copy = os.path.join(state, os.path.basename(path))
    with open(copy, "w") as out:
        out.write(text)
    return copy


def test_check_shipped_configs(t):
    """conf/proxyd.toml and conf/examples/*.toml pass `proxyd -t`."""
    files = [os.path.join(harness.REPO_ROOT, "conf", "proxyd.toml")]
    files += sorted(glob.glob(os.path.join(harness.REPO_ROOT, "conf", "examples", "*.toml")))
    assert os.path.exists(files[0]), "conf/proxyd.toml is missing"
    bad = []
    for f in files:
        f = _with_demo_state(t, f)
        r = t.run([harness.PROXYD, "-t", "-c", f])
        if r.returncode != 0:
            bad.append("%s: exit %d: %s" % (f, r.returncode, r.stderr.strip()[:500]))
    assert not bad, "\n".join(bad)


def test_check_syntax_error(t):
    text = '[server]\nlisten = ["127.0.0.1:1"]\nworkers = = 1\n'
    r, p = t.check_config(text)
    _expect_error(r, p, 3)


def test_check_unknown_key_did_you_mean(t):
    text = _valid(t).replace("listen = ", "lisen = ")
    r, p = t.check_config(text)
    msg = _expect_error(r, p, 2, "lisen")
    assert 'did you mean "listen"?' in msg, msg


def test_check_wrong_type(t):
    text = _valid(t).replace("workers = 1", 'workers = "four"')
    r, p = t.check_config(text)
    _expect_error(r, p, 3)


def test_check_unknown_upstream(t):
    text = _valid(t, tail='\n[[routes]]\npath = "/x"\nupstream = "nope"\n')
    lines = text.splitlines()
    up_line = lines.index('upstream = "nope"') + 1
    r, p = t.check_config(text)
    errs = _errors(r, p)
    assert r.returncode == 1, r
    assert any(l in (up_line, up_line - 2) and "nope" in m for l, c, m in errs), (
        "expected an error naming upstream 'nope' at line %d: %r / %r" % (up_line, errs, r.stderr))


def test_check_bad_durations(t):
    """A bare number (suggesting a unit) and an unknown unit: both reported."""
    text = _valid(t, extra_server='\n[server.timeouts]\nheader = 10\nkeepalive = "10 parsecs"\n')
    lines = text.splitlines()
    l1 = lines.index("header = 10") + 1
    l2 = lines.index('keepalive = "10 parsecs"') + 1
    r, p = t.check_config(text)
    _expect_error(r, p, l1)
    _expect_error(r, p, l2)


def test_check_bad_size(t):
    text = _valid(t, extra_server='\n[server.limits]\nmax_body_size = "10XB"\n')
    line = text.splitlines().index('max_body_size = "10XB"') + 1
    r, p = t.check_config(text)
    _expect_error(r, p, line)


def test_check_duplicate_listen(t):
    port = harness.free_port()
    text = _valid(t, port).replace('listen = ["127.0.0.1:%d"]' % port,
                                   'listen = ["127.0.0.1:%d", "127.0.0.1:%d"]' % (port, port))
    r, p = t.check_config(text)
    _expect_error(r, p, 2, "duplicate")


def test_check_workers_zero(t):
    text = _valid(t).replace("workers = 1", "workers = 0")
    r, p = t.check_config(text)
    _expect_error(r, p, 3)


def test_check_cache_and_compression(t):
    """`proxyd -t` accepts a route's cache/compress, [cache] and [compression]; a bad value in
    each is reported at its line."""
    tail = ('cache = { ttl = "5m", stale_while_revalidate = "30s", stale_if_error = "5m", '
            'authorization = false }\n'
            'compress = false\n\n'
            '[cache]\nmax_size = "100MiB"\nmax_object_size = "1MiB"\n\n'
            '[compression]\ntypes = ["text/html", "text/*"]\nmin_size = "1KiB"\n'
            'algorithms = ["br", "gzip"]\n')
    r, p = t.check_config(_valid(t, tail=tail))
    assert r.returncode == 0, r
    bad = (tail.replace('ttl = "5m"', 'ttl = "0s"')
           .replace('max_object_size = "1MiB"', 'max_object_size = "200MiB"')
           .replace('["br", "gzip"]', '["br", "zstd"]'))
    text = _valid(t, tail=bad)
    lines = text.splitlines()
    r, p = t.check_config(text)
    _expect_error(r, p, next(i for i, l in enumerate(lines, 1) if l.startswith("cache = {")),
                  "ttl", "greater than 0")
    _expect_error(r, p, lines.index('max_object_size = "200MiB"') + 1, "max_object_size")
    _expect_error(r, p, lines.index('algorithms = ["br", "zstd"]') + 1, "zstd")


def test_check_reports_every_error(t):
    """Several semantic errors in one file: each on its own FILE:LINE:COLUMN line."""
    text = _valid(t, tail='\n[[routes]]\npath = "/x"\nupstream = "nope"\n')
    text = text.replace("workers = 1", "workers = 0").replace(
        'control_socket', 'control_sockett')
    r, p = t.check_config(text)
    errs = _errors(r, p)
    assert r.returncode == 1, r
    lines = {l for l, c, m in errs}
    assert len(errs) >= 3 and {3, 4} <= lines, "expected errors on lines 3, 4 and the route: %r" % (
        r.stderr)


def test_check_does_not_bind(t):
    """-t must not bind the listen address (here held by another socket without reuseport), nor
    create the control socket or pid file."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        port = s.getsockname()[1]
        text = _valid(t, port, extra_server='pid_file = "%s"\n' % t.path("p.pid"))
        r, p = t.check_config(text)
        assert r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr)
        assert not os.path.exists(t.path("ctl.sock")), "-t created the control socket"
        assert not os.path.exists(t.path("p.pid")), "-t wrote the pid file"
    finally:
        s.close()


def test_invalid_config_does_not_start(t):
    """proxyd -c BAD exits 1 without binding, serving, or writing its pid file."""
    port = harness.free_port()
    text = _valid(t, port, extra_server='pid_file = "%s"\n' % t.path("p.pid"),
                  tail='\n[[routes]]\npath = "/x"\nupstream = "nope"\n')
    cfg = t.write("bad.toml", text)
    p = t.spawn([harness.PROXYD, "-c", cfg], stdout=open(t.path("out"), "w"),
                stderr=open(t.path("err"), "w"))
    deadline = time.monotonic() + 10
    served = False
    while p.poll() is None and time.monotonic() < deadline:
        if harness.port_accepts(port, 0.2):
            served = True
        time.sleep(0.05)
    assert p.poll() == 1, "exit code %r (expected 1 within 10s)" % p.poll()
    assert not served and not harness.port_accepts(port), "it accepted connections on %d" % port
    assert not os.path.exists(t.path("p.pid")), "pid file written"
    err = open(t.path("err")).read()
    assert "nope" in err, "error not reported on stderr: %r" % err


def test_check_missing_file(t):
    r = t.run([harness.PROXYD, "-t", "-c", t.path("does-not-exist.toml")])
    assert r.returncode == 1, r
    assert "does-not-exist.toml" in r.stderr, r.stderr
