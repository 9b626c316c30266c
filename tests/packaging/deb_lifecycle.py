#!/usr/bin/python3
"""The .deb's life, as CI checks it (from tests/packaging/run). Run as root on a disposable
machine or container where proxyd is not installed: it installs, upgrades and purges the package.

    tests/packaging/deb_lifecycle.py dist/proxyd_0.1.0_amd64.deb dist/proxyd_0.1.1_amd64.deb

1. dpkg -i the first package; every packaged file is there, the proxyd user and group exist,
   the unit passes `systemd-analyze verify`.
2. proxyd runs from the installed files and the default config: started by the package when
   systemd runs, else started here directly (as root: workers drop to proxyd); a demo backend
   listens on 127.0.0.1:3000, and a request through 127.0.0.1:8080 gets its answer.
3. dpkg -i the second package (a higher version) under continuous load: 0 failed requests, and
   `proxyctl status` and `proxyd --version` show the new version.
4. dpkg --purge: proxyd is stopped, and nothing of it is left (files, directories, user, group,
   systemd enablement).
"""

import ctypes
import grp
import json
import os
import pwd
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from load import LoadGen, format_stats  # noqa: E402

PACKAGED = [
    "/usr/sbin/proxyd", "/usr/bin/proxyctl", "/etc/proxyd/proxyd.toml",
    "/lib/systemd/system/proxyd.service", "/etc/logrotate.d/proxyd", "/usr/lib/tmpfiles.d/proxyd.conf",
    "/usr/share/man/man8/proxyd.8.gz", "/usr/share/man/man8/proxyctl.8.gz",
    "/usr/share/man/man5/proxyd.toml.5.gz", "/usr/share/doc/proxyd/README.md",
    "/usr/share/doc/proxyd/configuration.md", "/var/log/proxyd", "/var/lib/proxyd",
    "/run/proxyd",  # the tmpfiles rule's, for a proxyd started by hand
]
LEFTOVERS = [
    "/etc/proxyd", "/var/log/proxyd", "/var/lib/proxyd", "/run/proxyd", "/usr/sbin/proxyd",
    "/usr/bin/proxyctl", "/lib/systemd/system/proxyd.service", "/etc/logrotate.d/proxyd",
    "/usr/lib/tmpfiles.d/proxyd.conf",
    "/usr/share/doc/proxyd", "/etc/systemd/system/multi-user.target.wants/proxyd.service",
    "/var/lib/systemd/deb-systemd-helper-enabled/proxyd.service",
]


def run(*cmd, check=True, timeout=300):
    print("+ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.stdout.strip():
        print(r.stdout.rstrip())
    if r.stderr.strip():
        print(r.stderr.rstrip())
    if check and r.returncode != 0:
        sys.exit("FAILED (exit %d): %s" % (r.returncode, " ".join(cmd)))
    return r


def deb_version(path):
    return run("dpkg-deb", "-f", path, "Version").stdout.strip()


def systemd_runs():
    return os.path.isdir("/run/systemd/system")


def status():
    r = subprocess.run(["proxyctl", "status", "--json"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, "proxyctl status: %s" % r.stderr
    return json.loads(r.stdout)


def become_subreaper():
    """The master started here execs its successor as a child on upgrade and exits; the
    successor is then reparented to this process (not to a PID 1 that may never reap it), so its
    end can be waited for and no zombie is mistaken for a live proxyd."""
    PR_SET_CHILD_SUBREAPER = 36
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0, os.strerror(ctypes.get_errno())


def reap_children():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def live_proxyd_pids():
    pids = []
    for pid in run("pgrep", "-x", "proxyd", check=False).stdout.split():
        try:
            with open("/proc/%s/stat" % pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            pids.append(pid)
    return pids


def process_user(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return pwd.getpwuid(int(line.split()[1])).pw_name
    return None


def wait_serving(deadline_s=20):
    end = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen("http://127.0.0.1:8080/hello", timeout=2) as resp:
                return resp.status, resp.read()
        except Exception as e:  # noqa: BLE001 - anything: not up yet
            if time.monotonic() > end:
                sys.exit("proxyd does not answer on 127.0.0.1:8080: %s" % e)
            time.sleep(0.2)


def main():
    if len(sys.argv) != 3 or os.geteuid() != 0:
        sys.exit(__doc__)
    first, second = sys.argv[1], sys.argv[2]
    v1, v2 = deb_version(first), deb_version(second)
    if run("dpkg", "--compare-versions", v2, "gt", v1, check=False).returncode != 0:
        sys.exit("%s must be a higher version than %s" % (v2, v1))
    if run("dpkg-query", "-W", "proxyd", check=False).returncode == 0:
        sys.exit("proxyd is installed already: run this on a machine without it")

    become_subreaper()

    # 1. install
    run("dpkg", "-i", first)
    missing = [p for p in PACKAGED if not os.path.exists(p)]
    assert not missing, "not installed: %s" % missing
    pwd.getpwnam("proxyd")
    grp.getgrnam("proxyd")
    log_dir = os.stat("/var/log/proxyd")
    assert pwd.getpwuid(log_dir.st_uid).pw_name == "proxyd", "owner of /var/log/proxyd"
    # systemd-analyze prints some findings without failing: any output is a failure here.
    verify = run("systemd-analyze", "verify", "/lib/systemd/system/proxyd.service")
    assert not (verify.stdout + verify.stderr).strip(), "systemd-analyze verify has findings"
    run("proxyd", "-t", "-c", "/etc/proxyd/proxyd.toml")

    # 2. serve
    backend = subprocess.Popen(["/usr/bin/python3", os.path.join(ROOT, "scripts", "demo_backend.py"),
                                "3000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    direct = None
    try:
        if systemd_runs():
            run("systemctl", "is-active", "proxyd.service")
        else:
            direct = subprocess.Popen(["/usr/sbin/proxyd", "-c", "/etc/proxyd/proxyd.toml"])
        code, body = wait_serving()
        assert code == 200, (code, body[:200])
        before = status()
        assert before["version"] == v1, "status shows %s, want %s" % (before["version"], v1)
        workers = [w["pid"] for w in before["workers"]]
        for pid in workers:
            assert process_user(pid) == "proxyd", "worker %d runs as %s" % (pid, process_user(pid))
        print("v%s serving: master %d, workers %s (user proxyd)" % (v1, before["master_pid"], workers))

        # 3. upgrade under load
        lg = LoadGen(8080, rate=200, path="/hello", header=None, verify_echo=False).start()
        time.sleep(2)
        run("dpkg", "-i", second)
        time.sleep(3)
        st = lg.stop()
        print(format_stats(st))
        assert st["failures"] == 0, "failed requests during the upgrade"
        assert st["ok"] > 0
        after = status()
        assert after["version"] == v2, "status shows %s, want %s" % (after["version"], v2)
        assert after["master_pid"] != before["master_pid"], "the master was not replaced"
        print("v%s serving: master %d" % (v2, after["master_pid"]))
        assert run("proxyd", "--version").stdout.strip() == "proxyd " + v2
        run("proxyctl", "reopen")

        # 4. purge
        run("dpkg", "--purge", "proxyd")
        if direct is not None:
            # the master started here was upgraded (exec'd its successor as a child) and is gone;
            # the successor was stopped by prerm through proxyctl stop.
            direct.wait(timeout=60)
        left = [p for p in LEFTOVERS if os.path.lexists(p)]
        assert not left, "left after purge: %s" % left
        for db, name in ((pwd.getpwnam, "user"), (grp.getgrnam, "group")):
            try:
                db("proxyd")
                sys.exit("the proxyd %s is left after purge" % name)
            except KeyError:
                pass
        reap_children()
        procs = live_proxyd_pids()
        assert not procs, "proxyd processes left: %s" % procs
    finally:
        backend.terminate()
        if direct is not None and direct.poll() is None:
            direct.kill()
    print("deb lifecycle: ok (%s -> %s)" % (v1, v2))


if __name__ == "__main__":
    main()
