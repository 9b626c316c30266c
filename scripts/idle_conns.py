#!/usr/bin/python3
"""Idle keep-alive client for scripts/bench (stdlib only).

Opens COUNT keep-alive connections to HOST:PORT; on each one sends one GET and reads the
whole response, then keeps the socket open and idle. Talks to its parent over stdin/stdout,
one JSON object per line:

    -> {"phase": "open", "ok": N, "failed": M, "errors": {...}, "seconds": S}
    <- "check"      second request on every open connection
    -> {"phase": "check", "ok": N, "failed": M, "errors": {...}, "seconds": S}
    <- "close" / EOF
    -> {"phase": "closed"}

At most WINDOW connections are connecting or have a request in flight at once, so neither the
proxy's accept backlog nor its upstream pool is flooded: what is measured is idle connections.
"""

import argparse
import errno
import json
import resource
import selectors
import socket
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: proxyd-bench-idle\r\n\r\n"


class Conn:
    __slots__ = ("sock", "buf", "state", "deadline", "error")

    def __init__(self):
        self.sock = None
        self.buf = bytearray()
        self.state = "new"
        self.deadline = 0.0
        self.error = None


def response_complete(buf):
    """None while incomplete; else (ok, reason). ok means a 200 on a reusable connection."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > 65536:
            return (False, "head too large")
        return None
    head = bytes(buf[:end]).decode("latin-1")
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        return (False, "bad status line")
    status = parts[1]
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), []).append(v.strip())
    body = buf[end + 4:]
    conn_tokens = ",".join(headers.get("connection", [])).lower()
    if "close" in conn_tokens:
        return (False, "Connection: close")
    if parts[0] == "HTTP/1.0" and "keep-alive" not in conn_tokens:
        return (False, "HTTP/1.0 without keep-alive")
    te = ",".join(headers.get("transfer-encoding", [])).lower()
    if "chunked" in te:
        done = chunked_done(body)
        if done is None:
            return None
        if not done:
            return (False, "bad chunked body")
    elif "content-length" in headers:
        try:
            cl = int(headers["content-length"][0])
        except ValueError:
            return (False, "bad Content-Length")
        if len(body) < cl:
            return None
        if len(body) > cl:
            return (False, "extra bytes after the body")
    else:
        return (False, "close-delimited response")
    if status != "200":
        return (False, "status " + status)
    return (True, "")


def chunked_done(body):
    """None: incomplete, True: complete, False: malformed."""
    pos = 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            return None
        size_s = bytes(body[pos:eol]).split(b";")[0].strip()
        try:
            size = int(size_s, 16)
        except ValueError:
            return False
        pos = eol + 2
        if size == 0:
            # trailers end with an empty line
            while True:
                eol = body.find(b"\r\n", pos)
                if eol < 0:
                    return None
                if eol == pos:
                    return True
                pos = eol + 2
        if len(body) < pos + size + 2:
            return None
        if body[pos + size:pos + size + 2] != b"\r\n":
            return False
        pos += size + 2


def run_phase(conns, host, port, window, timeout, connect):
    """Send one request on each conn (connecting first if `connect`); returns stats."""
    sel = selectors.EpollSelector()
    start = time.monotonic()
    todo = list(conns)
    todo.reverse()
    inflight = 0
    errors = {}

    def fail(c, reason):
        nonlocal inflight
        c.state = "failed"
        c.error = reason
        errors[reason] = errors.get(reason, 0) + 1
        if c.sock is not None:
            try:
                sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
            c.sock.close()
            c.sock = None
        inflight -= 1

    def send_request(c):
        try:
            n = c.sock.send(REQUEST)
        except OSError as e:
            fail(c, "send: " + (errno.errorcode.get(e.errno, str(e.errno))))
            return
        if n != len(REQUEST):
            fail(c, "short send")
            return
        c.buf = bytearray()
        c.state = "reading"
        try:
            sel.modify(c.sock, selectors.EVENT_READ, c)
        except KeyError:
            sel.register(c.sock, selectors.EVENT_READ, c)

    while todo or inflight:
        now = time.monotonic()
        while todo and inflight < window:
            c = todo.pop()
            inflight += 1
            c.deadline = now + timeout
            if connect:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                c.sock = s
                rc = s.connect_ex((host, port))
                if rc not in (0, errno.EINPROGRESS):
                    s.close()
                    c.sock = None
                    fail(c, "connect: " + errno.errorcode.get(rc, str(rc)))
                    continue
                c.state = "connecting"
                sel.register(s, selectors.EVENT_WRITE, c)
            else:
                if c.sock is None:
                    inflight -= 1
                    continue
                send_request(c)
        events = sel.select(timeout=0.2)
        for key, _ in events:
            c = key.data
            if c.state == "connecting":
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(c, "connect: " + errno.errorcode.get(err, str(err)))
                    continue
                send_request(c)
            elif c.state == "reading":
                try:
                    data = c.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    fail(c, "recv: " + errno.errorcode.get(e.errno, str(e.errno)))
                    continue
                if not data:
                    fail(c, "closed by the proxy")
                    continue
                c.buf += data
                r = response_complete(c.buf)
                if r is None:
                    continue
                if not r[0]:
                    fail(c, r[1])
                    continue
                sel.unregister(c.sock)
                c.state = "idle"
                c.buf = bytearray()
                inflight -= 1
        now = time.monotonic()
        for key in list(sel.get_map().values()):
            c = key.data
            if now > c.deadline:
                fail(c, "timeout")
    sel.close()
    ok = sum(1 for c in conns if c.state == "idle")
    return {"ok": ok, "failed": len(conns) - ok, "errors": errors,
            "seconds": round(time.monotonic() - start, 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = a.count + 64
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            print(json.dumps({"phase": "open", "ok": 0, "failed": a.count,
                              "errors": {f"open-files limit {hard} < {need}": a.count},
                              "seconds": 0}), flush=True)
            return 1
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))

    conns = [Conn() for _ in range(a.count)]
    r = run_phase(conns, a.host, a.port, a.window, a.timeout, connect=True)
    print(json.dumps(dict(phase="open", **r)), flush=True)

    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "check":
            alive = [c for c in conns if c.state == "idle"]
            r = run_phase(alive, a.host, a.port, a.window, a.timeout, connect=False)
            r["failed"] += a.count - len(alive)   # never opened counts as not served
            print(json.dumps(dict(phase="check", **r)), flush=True)
        elif cmd == "close":
            break
    for c in conns:
        if c.sock is not None:
            c.sock.close()
    print(json.dumps({"phase": "closed"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
