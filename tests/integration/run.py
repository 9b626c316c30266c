#!/usr/bin/python3
"""Run proxyd's integration tests.

    /usr/bin/python3 run.py --proxyd PATH --proxyctl PATH [-k SUBSTRING] [-j N]

Discovers test_*.py in this folder and runs each test_* function in its own child process (fresh
temp dir, own process session so that everything it started can be killed on a timeout), N at a
time. Prints one line per test and, last, "N passed, N failed"; exit code 1 if any failed.
"""

import argparse
import concurrent.futures
import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TIMEOUT = 60


def discover(pattern):
    sys.path.insert(0, HERE)
    tests = []
    for fn in sorted(os.listdir(HERE)):
        if not (fn.startswith("test_") and fn.endswith(".py")):
            continue
        mod = importlib.import_module(fn[:-3])
        for name in sorted(vars(mod)):
            f = getattr(mod, name)
            if name.startswith("test_") and callable(f):
                full = "%s.%s" % (fn[:-3], name)
                if pattern and pattern not in full:
                    continue
                tests.append((full, getattr(f, "timeout", DEFAULT_TIMEOUT),
                              f.__code__.co_firstlineno))
    # keep file order inside a module so related tests run close to each other
    tests.sort(key=lambda x: (x[0].split(".")[0], x[2]))
    return [(n, t) for n, t, _ in tests]


class _TestTimeout(BaseException):
    pass


def run_one(full, proxyd, proxyctl):
    """Child mode: run one test; exit 0 on pass, 1 on failure (traceback on stderr)."""
    sys.path.insert(0, HERE)
    import harness
    harness.configure(proxyd, proxyctl)

    def on_term(signum, frame):
        raise _TestTimeout("killed by run.py: test time limit reached")
    signal.signal(signal.SIGTERM, on_term)
    modname, fname = full.split(".", 1)
    tmp = tempfile.mkdtemp(prefix="pxt-")
    t = harness.T(tmp)
    ok = False
    try:
        func = getattr(importlib.import_module(modname), fname)
        func(t)
        ok = True
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            t.cleanup()
        except BaseException:
            traceback.print_exc()
            ok = False
    if ok:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        sys.stderr.write("(test files kept in %s)\n" % tmp)
    sys.stderr.flush()
    os._exit(0 if ok else 1)


_running = set()
_running_lock = threading.Lock()


def _kill_group(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)   # the child's own session: its proxyd and helpers
    except OSError:
        pass


def run_child(full, limit, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--proxyd", args.proxyd,
           "--proxyctl", args.proxyctl, "--one", full]
    start = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    with _running_lock:
        _running.add(p)
    timed_out = False
    try:
        try:
            out, _ = p.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            p.send_signal(signal.SIGTERM)      # lets the test clean up by pid
            try:
                out, _ = p.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                _kill_group(p)
                out, _ = p.communicate(timeout=10)
        # anything the test left behind in its session
        _kill_group(p)
    finally:
        with _running_lock:
            _running.discard(p)
    elapsed = time.monotonic() - start
    text = out.decode(errors="replace")
    ok = p.returncode == 0 and not timed_out
    if timed_out:
        text += "\ntest exceeded its time limit of %ds\n" % limit
    return full, ok, elapsed, text


def reason_of(text):
    lines = [l for l in text.strip().splitlines()
             if l.strip() and not l.startswith("(test files kept")]
    for l in reversed(lines):
        if not l.startswith(" ") and ("Error" in l or "Exception" in l or "Timeout" in l
                                      or ":" in l):
            return l.strip()[:400]
    return lines[-1].strip()[:400] if lines else "failed"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxyd", required=True)
    ap.add_argument("--proxyctl", required=True)
    ap.add_argument("-k", default="", help="only tests whose module.name contains this")
    ap.add_argument("-j", type=int, default=2, help="tests run in parallel")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.proxyd = os.path.abspath(args.proxyd)
    args.proxyctl = os.path.abspath(args.proxyctl)
    if args.one:
        run_one(args.one, args.proxyd, args.proxyctl)
        return
    tests = discover(args.k)
    for b in (args.proxyd, args.proxyctl):
        if not os.access(b, os.X_OK):
            print("warning: %s is not an executable file" % b, flush=True)
    passed = failed = 0
    t0 = time.monotonic()
    ex = concurrent.futures.ThreadPoolExecutor(max(1, args.j))
    try:
        futs = [ex.submit(run_child, name, limit, args) for name, limit in tests]
        for f in concurrent.futures.as_completed(futs):
            name, ok, elapsed, text = f.result()
            if ok:
                passed += 1
                print("PASS %s (%.1fs)" % (name, elapsed), flush=True)
                # A passing test may report measurements: its lines starting with "report:".
                for line in text.splitlines():
                    if line.startswith("report:"):
                        print("    " + line, flush=True)
            else:
                failed += 1
                print("FAIL %s: %s (%.1fs)" % (name, reason_of(text), elapsed))
                for line in text.rstrip().splitlines():
                    print("    " + line)
                sys.stdout.flush()
        ex.shutdown()
    except KeyboardInterrupt:
        ex.shutdown(wait=False, cancel_futures=True)
        with _running_lock:
            for p in list(_running):
                _kill_group(p)
        failed += 1
        print("interrupted")
    print("# %d tests in %.1fs" % (passed + failed, time.monotonic() - t0))
    print("%d passed, %d failed" % (passed, failed), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
