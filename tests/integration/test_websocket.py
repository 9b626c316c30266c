"""WebSocket tunnelling and SSE streaming.

A WebSocket opening handshake (GET, HTTP/1.1, Upgrade: websocket, Connection: Upgrade) goes to the
upstream with Upgrade/Connection kept; its 101 is relayed and the connection pair then carries
bytes both ways until a side closes, `timeouts.tunnel_idle` passes, or a draining worker reaches
`shutdown_timeout`. Tunnels count as active on their server (least_conn, status "active"), per
worker in status ("tunnels"), and are logged / counted in metrics when they end, with status 101.
Other upgrades (h2c) are stripped as hop-by-hop; a 101 to anything but a WebSocket handshake is a
502. Response bodies (Server-Sent Events) are streamed as they arrive.

The WebSocket servers are ws_peer.py processes (python3-websockets, echo; /hello sends the
handshake headers they saw; /close/S closes after S seconds; GET /_stats is their own count of
open and closed connections); the clients use websockets.connect in asyncio, every await bounded.
"""

import asyncio
import base64
import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import websockets

import harness
from harness import Conn, assert_error, build_request, hall, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "ws_peer.py")
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# ----------------------------------------------------------------------------------------------
# helpers

class Peer:
    """A ws_peer.py process (mode "ws" or "sse") on a free port of 127.0.0.1."""

    def __init__(self, t, name, mode="ws"):
        self.name = name
        self.log_path = t.path("%s.log" % name)
        for attempt in range(3):
            self.port = harness.free_port()
            ready = t.path("%s.%d.ready" % (name, attempt))
            with open(self.log_path, "ab") as log:
                self.proc = t.spawn([sys.executable, PEER, mode, "--port", str(self.port),
                                     "--name", name, "--ready", ready],
                                    stdout=log, stderr=log)
            wait_until(lambda: os.path.exists(ready) or self.proc.poll() is not None, 10,
                       msg="ws_peer %s did not start within 10s" % name)
            if os.path.exists(ready):
                break
        else:
            raise AssertionError("ws_peer %s failed to start:\n%s" % (name, self.log()))
        self.address = "127.0.0.1:%d" % self.port

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()[-3000:]

    def stats(self):
        """The server's own view: {open, total, closed: [{path, code, time, opened}], ...}."""
        with Conn(self.port, timeout=5) as c:
            r = c.request("GET", "/_stats")
        assert r.status == 200, r
        return r.json()

    def closed(self, path):
        return [c for c in self.stats()["closed"] if c["path"] == path]


def _run(coro, timeout=45):
    """Run a test coroutine, bounded."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Clients:
    """WebSocket clients of one coroutine; close_all() (bounded) at its end."""

    def __init__(self, px):
        self.px = px
        self.open = []

    async def connect(self, path="/echo", port=None, **kw):
        url = "ws://127.0.0.1:%d%s" % (port or self.px.port, path)
        opts = dict(open_timeout=5, close_timeout=2, max_size=None, ping_interval=None,
                    compression=None)
        opts.update(kw)
        ws = await asyncio.wait_for(websockets.connect(url, **opts), 10)
        self.open.append(ws)
        return ws

    async def close_all(self):
        if self.open:
            await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in self.open),
                                                  return_exceptions=True), 10)


async def _echo(ws, msg, timeout=5.0):
    await asyncio.wait_for(ws.send(msg), timeout)
    got = await asyncio.wait_for(ws.recv(), timeout)
    assert type(got) is type(msg) and got == msg, "echo mismatch: sent %s %d, got %s %d" % (
        type(msg).__name__, len(msg), type(got).__name__, len(got))


async def _hello(ws, timeout=5.0):
    """The first message on a /hello connection: what the server saw of the handshake."""
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def _in_thread(f, *a, **kw):
    return await asyncio.to_thread(f, *a, **kw)


async def _wait(pred, timeout=5.0, msg=None):
    return await asyncio.to_thread(wait_until, pred, timeout, 0.05, msg)


def _tunnels(px):
    """{pid: tunnels} over all workers in status --json."""
    return {w["pid"]: w["tunnels"] for w in px.status_json()["workers"]}


def _active(px, upstream="b"):
    """{address: active} of the upstream's servers in status --json."""
    return {s["address"]: s["active"] for s in px.status_json()["upstreams"][upstream]["servers"]}


GEN_LINE = re.compile(r"^generation (\d+) \((\w+)\): (\d+) worker\(s\), (\d+) connection\(s\), "
                      r"(\d+) tunnel\(s\)$")


def _generation_lines(px):
    """{generation: (state, workers, connections, tunnels)} from the human `proxyctl status`."""
    r = px.proxyctl("status")
    assert r.returncode == 0, "proxyctl status: %d %s%s" % (r.returncode, r.stdout, r.stderr)
    out = {}
    for line in r.stdout.splitlines():
        m = GEN_LINE.match(line.strip())
        if m:
            out[int(m.group(1))] = (m.group(2), int(m.group(3)), int(m.group(4)),
                                    int(m.group(5)))
    assert out, "no 'generation N (STATE): ... tunnel(s)' line in:\n%s" % r.stdout
    return out, r.stdout


def _accept_for(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def _raw_handshake(path="/echo", key="dGhlIHNhbXBsZSBub25jZQ==", extra=()):
    return build_request("GET", path, [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                       ("Sec-WebSocket-Key", key),
                                       ("Sec-WebSocket-Version", "13")] + list(extra))


def _read_n(c, n, timeout=3.0):
    """Up to n bytes from a harness Conn, waiting at most timeout for all of them."""
    got = b""
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += c.read_some(0.2)
    return got


def _log_tail(px, n=40):
    return "\n".join(px.output().splitlines()[-n:])


# ----------------------------------------------------------------------------------------------
# 1. echo through proxyd

def test_websocket_echo(t):
    """Text and binary frames of 1 B .. 1 MiB echo through proxyd (2 workers), and a burst of
    8 x 1 MiB in flight both ways at once (beyond the tunnel's watermarks). The handshake reaches
    the server with Upgrade/Connection and the forwarding headers; the client's 101 carries a
    valid Sec-WebSocket-Accept (websockets.connect checks it); a subprotocol and
    permessage-deflate are negotiated through the proxy."""
    peer = Peer(t, "ws1")
    px = t.proxy_to(peer.address, server={"workers": 2})

    async def main():
        cl = Clients(px)
        try:
            ws = await cl.connect("/hello?x=1", extra_headers={"X-Client": "yes"})
            rh = ws.response_headers
            assert (rh.get("Upgrade") or "").lower() == "websocket", list(rh.raw_items())
            assert "upgrade" in (rh.get("Connection") or "").lower(), list(rh.raw_items())
            assert rh.get("Sec-WebSocket-Accept"), list(rh.raw_items())
            hello = await _hello(ws)
            h = [tuple(x) for x in hello["headers"]]
            assert hello["path"] == "/hello?x=1", hello
            assert [v.lower() for v in hall(h, "Upgrade")] == ["websocket"], h
            conn = hall(h, "Connection")
            assert len(conn) == 1 and "upgrade" in conn[0].lower(), h
            assert hall(h, "X-Forwarded-For") == ["127.0.0.1"], h
            assert hall(h, "X-Real-IP") == ["127.0.0.1"], h
            assert hall(h, "X-Forwarded-Proto") == ["http"], h
            assert len(hall(h, "X-Request-Id")) == 1, h
            assert hall(h, "X-Client") == ["yes"], h
            assert hall(h, "Sec-WebSocket-Version") == ["13"], h
            assert len(hall(h, "Sec-WebSocket-Key")) == 1, h
            assert hall(h, "Host") == ["127.0.0.1:%d" % px.port], h
            assert hello["peer"][0] == "127.0.0.1", hello
            assert rh.get("X-Request-Id") == hall(h, "X-Request-Id")[0], (
                rh.get("X-Request-Id"), h)

            sizes = [1, 2, 125, 126, 127, 1000, 65535, 65536, 65537, 300000, 1 << 20]
            for n in sizes:
                await _echo(ws, os.urandom(n), 10)
                await _echo(ws, base64.b64encode(os.urandom(n))[:n].decode(), 10)

            # a burst: 8 x 1 MiB sent while the echoes are read, in order
            msgs = [os.urandom(1 << 20) for _ in range(8)]

            async def send_all():
                for m in msgs:
                    await ws.send(m)
            t0 = time.monotonic()
            sender = asyncio.ensure_future(send_all())
            for i, m in enumerate(msgs):
                got = await asyncio.wait_for(ws.recv(), 15)
                assert got == m, "burst message %d: %d bytes back, differs" % (i, len(got))
            await asyncio.wait_for(sender, 5)
            took = time.monotonic() - t0
            print("report: 8 MiB burst echoed through the tunnel in %.2fs" % took)

            # a second connection, on whatever worker takes it, negotiating a subprotocol and
            # permessage-deflate: Sec-WebSocket-Protocol / -Extensions pass both ways
            ws2 = await cl.connect("/echo", subprotocols=["chat.v2"], compression="deflate")
            assert ws2.subprotocol == "chat.v2", ws2.subprotocol
            assert [e.name for e in ws2.extensions] == ["permessage-deflate"], ws2.extensions
            for n in (1, 70000):
                await _echo(ws2, os.urandom(n))
            await _echo(ws2, "compressible " * 100000)
            await asyncio.wait_for(ws.close(), 5)
            await asyncio.wait_for(ws2.close(), 5)
            assert ws.close_code == 1000 and ws2.close_code == 1000, (ws.close_code,
                                                                      ws2.close_code)
        finally:
            await cl.close_all()
    _run(main())
    wait_until(lambda: peer.stats()["open"] == 0, 3, msg="server still holds connections")
    st = peer.stats()
    assert st["total"] == 2 and [c["code"] for c in st["closed"]] == [1000, 1000], st


# ----------------------------------------------------------------------------------------------
# 2. many tunnels at once

@harness.timeout(60)
def test_websocket_100_concurrent_tunnels(t):
    """100 tunnels open at once through 2 workers, each echoing while all are open: status
    --json shows 100 tunnels over both worker pids, the server 100 connections; after all close
    both drop to 0."""
    N = 100
    peer = Peer(t, "ws-many")
    px = t.proxy_to(peer.address, server={"workers": 2})
    pids = px.worker_pids()
    assert len(pids) == 2, pids

    async def main():
        cl = Clients(px)
        try:
            t0 = time.monotonic()
            wss = await asyncio.gather(*(cl.connect("/echo/%d" % i) for i in range(N)))
            took = time.monotonic() - t0
            for rnd in range(3):
                await asyncio.gather(*(_echo(ws, "msg %d of %d" % (rnd, i))
                                       for i, ws in enumerate(wss)))
            await asyncio.gather(*(_echo(ws, os.urandom(5000)) for ws in wss))
            assert all(ws.open for ws in wss)
            last = {}

            def all_counted():
                last["tun"] = _tunnels(px)
                return sum(last["tun"].values()) == N
            try:
                await _wait(all_counted, 5)
            except AssertionError:
                raise AssertionError("status tunnels %r, expected %d in all" % (last["tun"], N))
            tun = last["tun"]
            assert set(tun) == set(pids), (tun, pids)
            print("report: %d tunnels opened in %.2fs; per worker %r" % (N, took, tun))
            assert all(v > 0 for v in tun.values()), "a worker holds no tunnel: %r" % tun
            assert peer.stats()["open"] == N
            assert sum(_active(px).values()) == N, _active(px)
            # still echoing after the checks, all of them
            await asyncio.gather(*(_echo(ws, b"again %d" % i) for i, ws in enumerate(wss)))
            await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in wss)), 10)
            assert all(ws.close_code == 1000 for ws in wss), [ws.close_code for ws in wss]
        finally:
            await cl.close_all()
    _run(main())
    wait_until(lambda: sum(_tunnels(px).values()) == 0, 5,
               msg="tunnels still counted after all closed: %r" % _tunnels(px))
    wait_until(lambda: peer.stats()["open"] == 0, 3)
    assert sum(_active(px).values()) == 0, _active(px)
    st = peer.stats()
    assert st["total"] == N and st["messages"] == 5 * N, (st["total"], st["messages"])


# ----------------------------------------------------------------------------------------------
# 3. reload

@harness.timeout(40)
def test_websocket_tunnel_survives_reload_until_shutdown_timeout(t):
    """A tunnel open at `proxyctl reload` (shutdown_timeout 3s) keeps working on the draining
    worker, which `proxyctl status` shows with 1 tunnel; it is closed at about shutdown_timeout.
    Tunnels opened after the reload work and outlive the old worker."""
    peer = Peer(t, "ws-reload")
    px = t.proxy_to(peer.address, server={"workers": 1, "shutdown_timeout": "3s"})

    async def main():
        cl = Clients(px)
        try:
            old = await cl.connect("/old")
            await _echo(old, "before reload")
            gen0 = (await _in_thread(px.status_json))["generation"]
            r = await _in_thread(px.proxyctl, "reload")
            t_reload = time.monotonic()
            assert r.returncode == 0, "reload: %d %s%s" % (r.returncode, r.stdout, r.stderr)
            st = await _in_thread(px.status_json)
            assert st["generation"] == gen0 + 1, st
            olds = [w for w in st["workers"] if w["generation"] == gen0]
            assert len(olds) == 1 and olds[0]["state"] == "draining", st["workers"]
            assert olds[0]["tunnels"] == 1, st["workers"]
            gens, text = await _in_thread(_generation_lines, px)
            assert gen0 in gens and gens[gen0][0] == "draining" and gens[gen0][3] == 1, text
            assert gens.get(gen0 + 1, (None,))[0] == "active", text
            assert gens[gen0 + 1][3] == 0, text

            await asyncio.sleep(max(0.0, t_reload + 1.0 - time.monotonic()))
            for i in range(3):
                await _echo(old, "after reload %d" % i)
                await _echo(old, os.urandom(100000))
            new = await cl.connect("/new")
            await _echo(new, "new after reload")
            gens, text = await _in_thread(_generation_lines, px)
            assert gens[gen0 + 1][3] == 1 and gens[gen0][3] == 1, text

            try:
                await asyncio.wait_for(old.wait_closed(), 8)
            except asyncio.TimeoutError:
                raise AssertionError("the old tunnel is still open %.1fs after the reload "
                                     "(shutdown_timeout 3s)" % (time.monotonic() - t_reload))
            took = time.monotonic() - t_reload
            print("report: tunnel on the draining worker closed %.2fs after the reload "
                  "(shutdown_timeout 3s), close code %r" % (took, old.close_code))
            assert 2.0 <= took <= 6.0, "closed %.2fs after the reload, expected ~3s" % took
            # CONTRACT.md: tunnels open at shutdown_timeout get a close frame 1001 (going away)
            assert old.close_code == 1001, old.close_code

            # the tunnel on the new generation is unaffected
            await asyncio.sleep(0.3)
            for i in range(3):
                await _echo(new, "new still works %d" % i)
            await _wait(lambda: peer.closed("/old"), 3, "the server never saw /old closed")
            # the server side got its own close frame 1001 from the proxy
            assert peer.closed("/old")[0]["code"] == 1001, peer.closed("/old")
            assert not peer.closed("/new")
            await _wait(lambda: all(w["generation"] == gen0 + 1
                                    for w in px.status_json()["workers"]), 5,
                        "the old worker is still listed")
            gens, text = await _in_thread(_generation_lines, px)
            assert set(gens) == {gen0 + 1} and gens[gen0 + 1][3] == 1, text
            await asyncio.wait_for(new.close(), 5)
            assert new.close_code == 1000
        finally:
            await cl.close_all()
    _run(main())


@harness.timeout(60)
def test_websocket_tunnel_survives_binary_upgrade_until_shutdown_timeout(t):
    """`proxyctl upgrade` (the same binary re-executed): the new master serves new tunnels at once,
    the one opened before keeps echoing on the old master's draining worker, and is closed at
    about shutdown_timeout, when the old master exits."""
    peer = Peer(t, "ws-upgrade")
    px = t.proxy_to(peer.address, server={"workers": 1, "shutdown_timeout": "3s"})
    old_master = px.status_json()["master_pid"]

    async def main():
        cl = Clients(px)
        try:
            old = await cl.connect("/old")
            await _echo(old, "before upgrade")
            r = await _in_thread(px.proxyctl, "upgrade", timeout=60)
            t_upgrade = time.monotonic()
            assert r.returncode == 0, "upgrade: %d %s%s" % (r.returncode, r.stdout, r.stderr)
            st = await _in_thread(px.status_json)
            px.seen_pids.add(st["master_pid"])  # cleanup stops the new master by pid too
            px.seen_pids.update(w["pid"] for w in st["workers"])
            assert st["master_pid"] != old_master, st
            new = await cl.connect("/new")
            await _echo(new, "new after upgrade")
            await asyncio.sleep(max(0.0, t_upgrade + 1.0 - time.monotonic()))
            for i in range(3):
                await _echo(old, "old after upgrade %d" % i)
            assert harness.pid_alive(old_master), "the old master left before its tunnel ended"
            try:
                await asyncio.wait_for(old.wait_closed(), 8)
            except asyncio.TimeoutError:
                raise AssertionError("the old tunnel is still open %.1fs after the upgrade "
                                     "(shutdown_timeout 3s)" % (time.monotonic() - t_upgrade))
            took = time.monotonic() - t_upgrade
            print("report: tunnel on the old master's worker closed %.2fs after the upgrade "
                  "(shutdown_timeout 3s)" % took)
            assert 2.0 <= took <= 6.0, "closed %.2fs after the upgrade, expected ~3s" % took
            assert old.close_code == 1001, old.close_code  # going away
            await _wait(lambda: not harness.pid_alive(old_master), 5,
                        "the old master did not exit after its last tunnel")
            for i in range(2):
                await _echo(new, "new still works %d" % i)
        finally:
            await cl.close_all()
            await _in_thread(px.proxyctl, "stop", timeout=15)
    _run(main())


# ----------------------------------------------------------------------------------------------
# 4. tunnel_idle

def test_websocket_tunnel_idle(t):
    """tunnel_idle = 1s: a silent tunnel is closed (both sides) within ~1-3 s; one carrying a
    message every 300 ms for 2.5 s stays open."""
    peer = Peer(t, "ws-idle")
    px = t.proxy_to(peer.address, server={"workers": 1, "timeouts": {"tunnel_idle": "1s"}})

    async def main():
        cl = Clients(px)
        try:
            idle = await cl.connect("/idle")
            t0 = time.monotonic()
            busy = await cl.connect("/busy")

            async def idle_closed():
                await idle.wait_closed()
                return time.monotonic() - t0
            watch = asyncio.ensure_future(asyncio.wait_for(idle_closed(), 6))
            t_busy = time.monotonic()
            while time.monotonic() - t_busy < 2.5:
                await _echo(busy, "keepalive")
                await asyncio.sleep(0.3)
            assert busy.open, "the busy tunnel was closed (code %r)" % busy.close_code
            await _echo(busy, "still open after 2.5s")
            try:
                idle_after = await watch
            except asyncio.TimeoutError:
                raise AssertionError("the idle tunnel is still open after 6s (tunnel_idle 1s)")
            print("report: idle tunnel closed %.2fs after it opened (tunnel_idle 1s)"
                  % idle_after)
            assert 0.8 <= idle_after <= 3.0, "idle tunnel closed after %.2fs" % idle_after
            await _wait(lambda: peer.closed("/idle"), 2,
                        "the server side of the idle tunnel was not closed")
            assert not peer.closed("/busy")
            # once silent, the busy one goes too
            t1 = time.monotonic()
            await asyncio.wait_for(busy.wait_closed(), 5)
            print("report: busy tunnel closed %.2fs after its last message"
                  % (time.monotonic() - t1))
        finally:
            await cl.close_all()
    _run(main())
    assert sum(_tunnels(px).values()) == 0, _tunnels(px)


# ----------------------------------------------------------------------------------------------
# 5. least_conn sees tunnels

def test_websocket_least_conn_counts_tunnels(t):
    """balance = least_conn over 2 servers, 2 workers: 6 tunnels opened one after the other (all
    kept open) split 3 / 3, as the servers count them and as status --json "active" shows."""
    peers = [Peer(t, "lc1"), Peer(t, "lc2")]
    px = t.proxy_to(*[p.address for p in peers], server={"workers": 2},
                    upstream={"balance": "least_conn"})

    async def main():
        cl = Clients(px)
        try:
            wss = []
            for i in range(6):
                ws = await cl.connect("/hello/%d" % i)
                await _hello(ws)
                await _echo(ws, "tunnel %d" % i)
                wss.append(ws)
            opens = [p.stats()["open"] for p in peers]
            active = await _in_thread(_active, px)
            print("report: least_conn, 6 tunnels: servers hold %r, status active %r"
                  % (opens, active))
            assert opens == [3, 3], opens
            assert active == {p.address: 3 for p in peers}, active
            for ws in wss:
                await _echo(ws, "all open")
            await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in wss)), 10)
            await _wait(lambda: _active(px) == {p.address: 0 for p in peers}, 5,
                        "status active not back to 0: %r" % _active(px))
        finally:
            await cl.close_all()
    _run(main())


# ----------------------------------------------------------------------------------------------
# 6. websocket_balance

def test_websocket_balance_ip_hash(t):
    """Route websocket_balance = "ip_hash" on a round_robin upstream of 2 servers: 6 tunnels
    from 127.0.0.1 all reach one server, while 6 plain GETs on the same route alternate."""
    peers = [Peer(t, "wa"), Peer(t, "wb")]
    px = t.proxy_to(*[p.address for p in peers], server={"workers": 1},
                    upstream={"balance": "round_robin"},
                    routes=[{"path": "/", "upstream": "b", "websocket_balance": "ip_hash"}])

    async def main():
        cl = Clients(px)
        try:
            names = []
            plain = []
            for i in range(6):
                ws = await cl.connect("/hello/%d" % i)
                names.append((await _hello(ws))["name"])
                r = await _in_thread(px.get, "/plain/%d" % i)
                assert r.status == 200, r
                plain.append(r.header("X-Backend"))
            print("report: websocket_balance=ip_hash: tunnels %r; plain GETs %r"
                  % (names, plain))
            assert len(set(names)) == 1, "tunnels spread over servers: %r" % names
            assert sorted(plain) == ["wa"] * 3 + ["wb"] * 3, plain
            assert all(a != b for a, b in zip(plain, plain[1:])), "not alternating: %r" % plain
            opens = {p.name: p.stats()["open"] for p in peers}
            assert opens[names[0]] == 6 and sum(opens.values()) == 6, opens
        finally:
            await cl.close_all()
    _run(main())


# ----------------------------------------------------------------------------------------------
# 7. other upgrades, unexpected 101

class _Fake101:
    """A raw upstream: answers every request with "101 Switching Protocols" whose Upgrade is
    the request's ?up= value, then, by query parameters:
        (default)     echoes raw bytes until the peer closes
        greet=1       sends "greeting" in the same write as the 101, then echoes
        flood=N       sends N pattern bytes (harness.pattern_bytes) as fast as they are taken
        noread=1      reads nothing until .release(id) is called, then reads and hashes all
    id=NAME names the connection in .conns[NAME]: {"sent", "received", "sha256"}."""

    def __init__(self, t):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        t._sockets.append(self.sock)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.requests = []
        self.conns = {}
        self.lock = threading.Lock()
        self._stopping = threading.Event()
        self._release = {}
        t._backends.append(self)        # stop() at cleanup
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self):
        self._stopping.set()
        try:
            self.sock.close()
        except OSError:
            pass

    def release(self, cid):
        self._release[cid].set()

    def _accept(self):
        while not self._stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(0.2)
        try:
            rd = harness.Reader(c, should_stop=self._stopping.is_set, idle_limit=10)
            head = rd.read_head()
            if not head:
                return
            first, headers = harness.parse_head(head)
            self.requests.append((first, headers))
            q = dict(p.partition("=")[::2] for p in first.split(" ")[1].partition("?")[2]
                     .split("&") if p)
            st = {"sent": 0, "received": 0, "sha256": None}
            cid = q.get("id", str(len(self.requests)))
            with self.lock:
                self.conns[cid] = st
                self._release[cid] = threading.Event()
            c.settimeout(30)
            resp = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\n"
                    "Connection: Upgrade\r\n\r\n" % q["up"]).encode()
            if q.get("greet") == "1":
                resp += b"greeting"
            c.sendall(resp)
            if "flood" in q:
                for chunk in harness.pattern_chunks(int(q["flood"])):
                    mv = memoryview(chunk)
                    while mv:
                        k = c.send(mv[:65536])
                        st["sent"] += k
                        mv = mv[k:]
                self._wait_close(c)
                return
            if q.get("noread") == "1":
                while not self._release[cid].wait(0.2):
                    if self._stopping.is_set():
                        return
                h = hashlib.sha256(bytes(rd.buf))
                st["received"] = len(rd.buf)
                while True:
                    data = c.recv(262144)
                    if not data:
                        break
                    h.update(data)
                    st["received"] += len(data)
                    st["sha256"] = h.hexdigest()
                return
            if rd.buf:
                c.sendall(bytes(rd.buf))
            while True:
                data = c.recv(65536)
                if not data:
                    return
                c.sendall(data)
        except (OSError, ValueError, harness.Closed):
            pass
        finally:
            c.close()

    def _wait_close(self, c):
        c.settimeout(0.2)
        while not self._stopping.is_set():
            try:
                if not c.recv(65536):
                    return
            except socket.timeout:
                continue

def test_websocket_other_upgrades_stripped_and_unexpected_101(t):
    """Upgrade: h2c (Connection: Upgrade, HTTP2-Settings) reaches a harness backend without
    Upgrade / HTTP2-Settings and gets a normal 200 on a connection that stays HTTP; so does a
    POST with Upgrade: websocket. A real handshake reaches it with Upgrade/Connection kept (it
    answers 200: plain response). A 101 answering a request that is not a WebSocket handshake,
    or a handshake answered with another Upgrade, is a 502; a proper one is tunnelled raw (bytes
    sent with the 101 included)."""
    be = t.backend("plain")
    fake = _Fake101(t)
    px = t.proxy_to(be, routes=[{"path": "/fake", "upstream": "f"},
                                {"path": "/", "upstream": "b"}],
                    upstreams={"f": {"servers": [{"address": fake.address}]}})
    h2c = [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
           ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")]
    with px.conn() as c:
        r = c.request("GET", "/echo/h2c", headers=h2c)
        assert r.status == 200 and r.header("X-Backend") == "plain", r
        h = [tuple(x) for x in r.json()["headers"]]
        assert not hall(h, "Upgrade") and not hall(h, "HTTP2-Settings"), h
        assert not any("upgrade" in v.lower() for v in hall(h, "Connection")), h
        assert not r.has("Upgrade"), r.headers
        r2 = c.request("GET", "/echo/after")     # still HTTP on the same connection
        assert r2.status == 200 and r2.json()["path"] == "/echo/after", r2
        r3 = c.request("POST", "/echo/post", body=b"x" * 10,
                       headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")])
        assert r3.status == 200, r3
        h = [tuple(x) for x in r3.json()["headers"]]
        assert not hall(h, "Upgrade"), "POST is no handshake, Upgrade must go: %r" % h
    # HTTP/1.0 is no handshake either
    r = px.request("GET", "/echo/10", version="HTTP/1.0",
                   headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")])
    assert r.status == 200 and not hall([tuple(x) for x in r.json()["headers"]], "Upgrade"), r
    # a real handshake answered 200: a plain response, headers kept on the way up
    r = px.send_raw(_raw_handshake("/echo/ws"))
    assert r.status == 200, r
    h = [tuple(x) for x in r.json()["headers"]]
    assert [v.lower() for v in hall(h, "Upgrade")] == ["websocket"], h
    assert any("upgrade" in v.lower() for v in hall(h, "Connection")), h

    # unexpected 101s
    assert_error(px.send_raw(build_request("GET", "/fake?up=h2c", h2c)), 502)
    assert_error(px.get("/fake?up=websocket"), 502)       # no upgrade asked at all
    assert_error(px.send_raw(_raw_handshake("/fake?up=foo")), 502)
    # a proper one: 101 relayed with the bytes that came in the same packet, then raw bytes
    # both ways
    with px.conn() as c:
        c.send(_raw_handshake("/fake?up=websocket&greet=1"))
        r = c.read_response()
        assert r.status == 101 and (r.header("Upgrade") or "").lower() == "websocket", r
        assert "upgrade" in (r.header("Connection") or "").lower(), r
        assert not r.has("Content-Length") and not r.has("Transfer-Encoding"), r
        assert _read_n(c, 8) == b"greeting"
        raw = b"raw bytes \x00\xff" * 1000
        c.send(raw)
        assert _read_n(c, len(raw)) == raw
    print("report: fake upstream saw %d requests: %r" % (
        len(fake.requests), [f for f, _ in fake.requests]))
    up = dict((f, hs) for f, hs in fake.requests)
    h = up.get("GET /fake?up=h2c HTTP/1.1")
    assert h is not None and not hall(h, "Upgrade") and not hall(h, "HTTP2-Settings"), h


# ----------------------------------------------------------------------------------------------
# 8. SSE

def _timed_get(px, path, headers):
    """GET; returns (response, body, {event: seconds from the request to its arrival}, total)."""
    events = (b"data: one\n\n", b"data: two\n\n")
    buf = bytearray()
    times = {}
    with px.conn(timeout=10) as c:
        t0 = time.monotonic()
        c.send(build_request("GET", path, headers))

        def sink(b):
            buf.extend(b)
            now = time.monotonic()
            for ev in events:
                if ev not in times and ev in buf:
                    times[ev] = now - t0
        r = c.read_response(sink=sink)
        total = time.monotonic() - t0
    return r, bytes(buf), [times.get(ev) for ev in events], total


def test_websocket_sse_streamed_and_sse_balance(t):
    """An SSE response (chunked, and close-delimited) is streamed: the first event reaches the
    client < 1 s after the request while the second comes ~1.5 s later, although
    upstream_response is 1s (it ends at the response head). Route sse_balance = "ip_hash":
    event-stream requests all reach one of 2 servers, plain ones alternate."""
    sse = Peer(t, "sse", mode="sse")
    s1, s2 = t.backend("s1"), t.backend("s2")
    px = t.proxy_to(sse.address, server={"workers": 1, "timeouts": {
                        "upstream_response": "1s", "upstream_idle": "5s"}},
                    routes=[{"path": "/events", "upstream": "b"},
                            {"path": "/", "upstream": "rr", "sse_balance": "ip_hash"}],
                    upstreams={"rr": {"balance": "round_robin",
                                      "servers": [{"address": s1.address},
                                                  {"address": s2.address}]}})
    accept = {"Accept": "text/event-stream"}
    for path in ("/events", "/events?close=1"):
        r, body, (first, second), total = _timed_get(px, path, accept)
        assert r.status == 200, r
        assert (r.header("Content-Type") or "").startswith("text/event-stream"), r.headers
        assert body == b"data: one\n\ndata: two\n\n", body
        print("report: SSE %s: first event after %.3fs, second after %.3fs, end after %.3fs"
              % (path, first, second, total))
        assert first < 1.0, "first event only after %.2fs: not streamed" % first
        assert 1.2 <= second - first <= 3.0, (first, second)

    sse_who = [px.get("/stream/0.2", headers=accept).header("X-Backend") for _ in range(6)]
    plain_who = [px.get("/echo").header("X-Backend") for _ in range(6)]
    print("report: sse_balance=ip_hash: event-stream %r; plain %r" % (sse_who, plain_who))
    assert len(set(sse_who)) == 1 and sse_who[0] in ("s1", "s2"), sse_who
    assert sorted(plain_who) == ["s1"] * 3 + ["s2"] * 3, plain_who
    r = px.get("/stream/0.3", headers=accept)
    assert r.status == 200 and r.body == b"".join(b"tick %d\n" % i for i in range(3)), r


# ----------------------------------------------------------------------------------------------
# 9. who closes first

def test_websocket_close_propagates(t):
    """Upstream closes first (close frame after 0.5 s): the client sees the close, code 1000.
    Client closes first: the server sees it within 2 s, with a close handshake (1000) or, when
    the client's TCP connection just goes away, as an abnormal close (1006)."""
    peer = Peer(t, "ws-close")
    px = t.proxy_to(peer.address, server={"workers": 2})

    async def main():
        cl = Clients(px)
        try:
            ws = await cl.connect("/close/0.5")
            t0 = time.monotonic()
            await _echo(ws, "hi")
            try:
                await asyncio.wait_for(ws.wait_closed(), 3)
            except asyncio.TimeoutError:
                raise AssertionError("the server closed after 0.5s, the client still open at 3s")
            took = time.monotonic() - t0
            print("report: server-initiated close seen by the client after %.2fs (code %r)"
                  % (took, ws.close_code))
            assert ws.close_code == 1000 and ws.close_reason == "server closes", (
                ws.close_code, ws.close_reason)
            assert took < 2.0, took

            ws = await cl.connect("/client-closes")
            await _echo(ws, "hi")
            t0 = time.monotonic()
            await asyncio.wait_for(ws.close(code=1000, reason="bye"), 5)
            await _wait(lambda: peer.closed("/client-closes"), 2,
                        "the server did not see the client's close within 2s")
            print("report: client close seen by the server after %.2fs"
                  % (time.monotonic() - t0))
            assert peer.closed("/client-closes")[0]["code"] == 1000
        finally:
            await cl.close_all()
    _run(main())

    # the client's socket just goes away after the 101
    key = base64.b64encode(os.urandom(16)).decode()
    c = px.conn()
    c.send(_raw_handshake("/abrupt", key))
    r = c.read_response()
    assert r.status == 101 and r.header("Sec-WebSocket-Accept") == _accept_for(key), r
    wait_until(lambda: peer.stats()["open"] == 1, 2)
    t0 = time.monotonic()
    c.close()
    wait_until(lambda: peer.closed("/abrupt"), 2,
               msg="the server did not see the client's connection go within 2s")
    print("report: abrupt client close seen by the server after %.2fs, code %r"
          % (time.monotonic() - t0, peer.closed("/abrupt")[0]["code"]))
    wait_until(lambda: sum(_tunnels(px).values()) == 0, 3,
               msg="tunnels still counted: %r" % _tunnels(px))


# ----------------------------------------------------------------------------------------------
# 10. metrics and access log

def _metric(px, name, **labels):
    """Sum of the samples of `name` whose labels include `labels` (a direct /metrics scrape)."""
    with Conn(px.metrics_port, timeout=5) as c:
        r = c.request("GET", "/metrics")
    assert r.status == 200, r
    total = 0.0
    for line in r.body.decode().splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def _log_records(px):
    if not os.path.exists(px.access_log):
        return []
    with open(px.access_log, errors="replace") as f:
        return [json.loads(l) for l in f if l.strip()]


def test_websocket_logged_and_counted_when_it_ends(t):
    """A tunnel is one request, status 101, in the access log and proxyd_requests_total: not
    while it is open, once when it ends (with the tunnel's bytes and duration). While open it
    counts in proxyd_upstream_server_active_connections."""
    peer = Peer(t, "ws-log")
    px = t.proxy_to(peer.address, server={"workers": 2}, metrics={}, log={"format": "json"})
    server = peer.address

    async def main():
        cl = Clients(px)
        try:
            ws = await cl.connect("/logged", extra_headers={"X-Request-Id": "ws-tunnel-1"})
            t_open = time.monotonic()
            for _ in range(3):
                await _echo(ws, os.urandom(10000))
            await asyncio.sleep(0.5)
            assert _metric(px, "proxyd_requests_total", status="101") == 0
            assert _metric(px, "proxyd_upstream_server_active_connections", server=server) == 1
            assert not [r for r in _log_records(px) if r.get("request_id") == "ws-tunnel-1"]
            await asyncio.wait_for(ws.close(), 5)
            return time.monotonic() - t_open
        finally:
            await cl.close_all()
    open_for = _run(main())
    wait_until(lambda: _metric(px, "proxyd_requests_total", status="101") == 1, 5,
               msg="proxyd_requests_total{status=101} = %r after the tunnel ended\n%s" % (
                   _metric(px, "proxyd_requests_total", status="101"), _log_tail(px)))
    recs = wait_until(lambda: [r for r in _log_records(px)
                               if r.get("request_id") == "ws-tunnel-1"], 3,
                      msg="no access log line for the tunnel: %r" % _log_records(px))
    time.sleep(0.3)
    assert _metric(px, "proxyd_requests_total", status="101") == 1
    assert _metric(px, "proxyd_upstream_server_active_connections", server=server) == 0
    recs = [r for r in _log_records(px) if r.get("request_id") == "ws-tunnel-1"]
    assert len(recs) == 1, recs
    rec = recs[0]
    print("report: tunnel access log record %r (open %.2fs)" % (rec, open_for))
    assert int(rec["status"]) == 101 and rec["method"] == "GET" and rec["path"] == "/logged", rec
    assert int(rec["bytes_in"]) >= 30000 and int(rec["bytes_out"]) >= 30000, rec
    assert float(rec["duration_ms"]) >= 0.5 * 1000, rec
    assert str(peer.port) in str(rec["upstream"]), rec


# ----------------------------------------------------------------------------------------------
# 11. backpressure

FLOOD = 64 << 20


def _worker_rss_kib(px):
    return sum(harness.rss_kib(p) for p in px.worker_pids())


def _backpressure(px, fake, connect, label):
    """The two floods of test_websocket_backpressure through connections from connect()
    (plain or TLS); returns the report lines' numbers."""
    base = _worker_rss_kib(px)
    expected = harness.pattern_sha256(FLOOD)
    down, up = "down-" + label, "up-" + label

    # upstream -> client; the client does not read
    c = connect()
    try:
        c.send(_raw_handshake("/x?up=websocket&flood=%d&id=%s" % (FLOOD, down)))
        r = c.read_response()
        assert r.status == 101, r
        wait_until(lambda: fake.conns.get(down, {}).get("sent", 0) > 0, 3)

        def stalled():
            a = fake.conns[down]["sent"]
            time.sleep(0.3)
            return fake.conns[down]["sent"] == a and a
        down_sent = wait_until(stalled, 8, 0, "the upstream's flood never stalled: sent %d of %d"
                               % (fake.conns[down]["sent"], FLOOD))
        down_rss = _worker_rss_kib(px) - base
        h = hashlib.sha256()
        t0 = time.monotonic()
        c.rd.read_exact(FLOOD, h.update)
        took = time.monotonic() - t0
    finally:
        c.close()
    print("report: %s upstream->client: upstream stalled after %.1f MiB of %d MiB, worker RSS "
          "+%d KiB; the rest read in %.2fs" % (label, down_sent / 1048576, FLOOD >> 20, down_rss,
                                               took))
    assert h.hexdigest() == expected, "upstream->client bytes differ"
    assert down_sent < FLOOD // 2, "no backpressure: upstream sent %d bytes" % down_sent

    # client -> upstream; the upstream does not read
    data = harness.pattern_bytes(FLOOD)
    mv = memoryview(data)
    c = connect()
    try:
        c.send(_raw_handshake("/x?up=websocket&noread=1&id=%s" % up))
        r = c.read_response()
        assert r.status == 101, r
        c.sock.setblocking(False)
        off = 0
        last = time.monotonic()
        while off < FLOOD and time.monotonic() - last < 0.6:
            try:
                k = c.sock.send(mv[off:off + 16384])
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                time.sleep(0.01)
                continue
            off += k
            last = time.monotonic()
        up_sent = off
        up_rss = _worker_rss_kib(px) - base
        fake.release(up)
        c.sock.settimeout(10)
        c.sock.sendall(mv[off:])
        wait_until(lambda: fake.conns[up]["received"] >= FLOOD, 10,
                   msg="upstream received %d of %d" % (fake.conns[up]["received"], FLOOD))
    finally:
        c.close()
    print("report: %s client->upstream: client stalled after %.1f MiB of %d MiB, worker RSS "
          "+%d KiB" % (label, up_sent / 1048576, FLOOD >> 20, up_rss))
    assert fake.conns[up]["received"] == FLOOD and fake.conns[up]["sha256"] == expected
    assert up_sent < FLOOD // 2, "no backpressure: client could send %d bytes" % up_sent
    if not harness.sanitized():
        assert max(down_rss, up_rss) < 24 * 1024, (
            "worker RSS grew by %d / %d KiB while a side did not read" % (down_rss, up_rss))
    wait_until(lambda: sum(_tunnels(px).values()) == 0, 3, msg="tunnels %r" % _tunnels(px))


@harness.timeout(40)
def test_websocket_backpressure(t):
    """64 MiB pushed into a tunnel whose receiver does not read: the sender is stopped after a
    bounded amount (socket buffers + the tunnel's watermark, far below the 64 MiB) and the
    worker's memory stays flat; once the receiver reads, every byte arrives intact. Both
    directions (upstream -> client, client -> upstream)."""
    fake = _Fake101(t)
    px = t.proxy_to(fake.address, server={"workers": 1})
    _backpressure(px, fake, lambda: px.conn(timeout=10), "plain")


# ----------------------------------------------------------------------------------------------
# 12. other timeouts

def test_websocket_other_timeouts_do_not_apply(t):
    """header, body, keepalive, upstream_response and upstream_idle all at 1s: a tunnel silent
    for 2.5 s still works; only tunnel_idle (10s here) applies to it."""
    peer = Peer(t, "ws-to")
    px = t.proxy_to(peer.address, server={"workers": 1, "timeouts": {
        "header": "1s", "body": "1s", "keepalive": "1s", "upstream_response": "1s",
        "upstream_idle": "1s", "tunnel_idle": "10s"}})

    async def main():
        cl = Clients(px)
        try:
            ws = await cl.connect("/quiet")
            await _echo(ws, "first")
            await asyncio.sleep(2.5)
            assert ws.open, "the tunnel was closed (code %r) by a timeout other than " \
                "tunnel_idle" % ws.close_code
            await _echo(ws, "after 2.5s of silence")
            await _echo(ws, os.urandom(300000))
            assert not peer.closed("/quiet")
            await asyncio.wait_for(ws.close(), 5)
            assert ws.close_code == 1000
        finally:
            await cl.close_all()
    _run(main())


# ----------------------------------------------------------------------------------------------
# 13. max_connections

def test_websocket_max_connections_counts_tunnels(t):
    """A server with max_connections = 1 holding a tunnel is full (2 workers): another handshake
    waits upstream_connect (1s) and gets 503, so does a plain request; a handshake waiting when
    the tunnel closes gets the server."""
    peer = Peer(t, "ws-max")
    px = t.proxy_to(upstream={"servers": [{"address": peer.address, "max_connections": 1}]},
                    server={"workers": 2, "timeouts": {"upstream_connect": "1s"}})

    async def main():
        cl = Clients(px)
        try:
            ws1 = await cl.connect("/first")
            await _echo(ws1, "one")
            t0 = time.monotonic()
            try:
                await cl.connect("/second")
                raise AssertionError("a second tunnel got through max_connections = 1")
            except websockets.InvalidStatusCode as e:
                assert e.status_code == 503, e
            took = time.monotonic() - t0
            r = await _in_thread(px.get, "/plain")
            assert_error(r, 503)
            print("report: handshake to a full server: 503 after %.2fs (upstream_connect 1s)"
                  % took)
            assert 0.8 <= took <= 2.5, took
            await _echo(ws1, "still one")

            # a handshake waiting for the server gets it once the tunnel ends
            waiting = asyncio.ensure_future(cl.connect("/third"))
            await asyncio.sleep(0.3)
            t1 = time.monotonic()
            await asyncio.wait_for(ws1.close(), 5)
            ws3 = await asyncio.wait_for(waiting, 5)
            print("report: waiting handshake got the server %.2fs after the tunnel closed"
                  % (time.monotonic() - t1))
            await _echo(ws3, "three")
            assert peer.stats()["open"] == 1
        finally:
            await cl.close_all()
    _run(main())


# ----------------------------------------------------------------------------------------------
# 14. over TLS

@harness.timeout(45)
def test_websocket_over_tls(t):
    """wss:// through the [tls] listener: the handshake (X-Forwarded-Proto https), echo of
    1 B .. 1 MiB and an 8 MiB burst; then both floods of the backpressure test over TLS."""
    from test_tls import client_ctx, make_ca, make_cert, tls_section
    ca = make_ca(t)
    cert = make_cert(t, ca, "leaf", ["localhost"])
    peer = Peer(t, "wss")
    fake = _Fake101(t)
    px = t.proxy_to(peer.address, server={"workers": 1}, tls=tls_section([cert]),
                    routes=[{"path": "/x", "upstream": "f"}, {"path": "/", "upstream": "b"}],
                    upstreams={"f": {"servers": [{"address": fake.address}]}})
    port = px.tls_ports[0]
    ctx = client_ctx(ca)

    async def main():
        cl = Clients(px)
        try:
            url = "wss://localhost:%d/hello-tls" % port
            ws = await asyncio.wait_for(websockets.connect(
                url, ssl=ctx, open_timeout=5, close_timeout=2, max_size=None,
                ping_interval=None, compression=None), 10)
            cl.open.append(ws)
            h = [tuple(x) for x in (await _hello(ws))["headers"]]
            assert hall(h, "X-Forwarded-Proto") == ["https"], h
            assert [v.lower() for v in hall(h, "Upgrade")] == ["websocket"], h
            for n in (1, 125, 126, 65536, 300000, 1 << 20):
                await _echo(ws, os.urandom(n), 10)
            msgs = [os.urandom(1 << 20) for _ in range(8)]

            async def send_all():
                for m in msgs:
                    await ws.send(m)
            sender = asyncio.ensure_future(send_all())
            for i, m in enumerate(msgs):
                got = await asyncio.wait_for(ws.recv(), 15)
                assert got == m, "burst message %d differs" % i
            await asyncio.wait_for(sender, 5)
            await asyncio.wait_for(ws.close(), 5)
            assert ws.close_code == 1000
        finally:
            await cl.close_all()
    _run(main())
    _backpressure(px, fake, lambda: Conn(port, timeout=10, tls=ctx, server_hostname="localhost"),
                  "tls")


# ----------------------------------------------------------------------------------------------
# 15. a worker killed

def test_websocket_worker_killed_gauges_reset(t):
    """SIGKILL of a worker holding 3 tunnels: clients and server see the connections end; once
    the master replaced the worker, status shows 0 tunnels and 0 active on the server, and new
    tunnels count from there."""
    peer = Peer(t, "ws-kill")
    px = t.proxy_to(peer.address, server={"workers": 1})

    async def main():
        cl = Clients(px)
        try:
            wss = [await cl.connect("/k%d" % i) for i in range(3)]
            for ws in wss:
                await _echo(ws, "x")
            tun = await _in_thread(_tunnels, px)
            assert list(tun.values()) == [3], tun
            assert await _in_thread(_active, px) == {peer.address: 3}
            victim = list(tun)[0]
            os.kill(victim, signal.SIGKILL)
            await asyncio.wait_for(asyncio.gather(*(ws.wait_closed() for ws in wss)), 5)
            await _wait(lambda: peer.stats()["open"] == 0, 3, "server still holds tunnels")
            last = {}

            def replaced():
                st = last["st"] = px.status_json()
                ws_ = st["workers"]
                return (len(ws_) == 1 and ws_[0]["pid"] != victim
                        and ws_[0]["state"] == "active")
            try:
                await _wait(replaced, 10)
            except AssertionError:
                raise AssertionError("worker not replaced: %r" % last.get("st"))
            tun = await _in_thread(_tunnels, px)
            act = await _in_thread(_active, px)
            print("report: after the kill: tunnels %r, active %r" % (tun, act))
            assert sum(tun.values()) == 0 and act == {peer.address: 0}, (tun, act)
            ws = await cl.connect("/after")
            await _echo(ws, "after")
            assert list((await _in_thread(_tunnels, px)).values()) == [1]
            assert await _in_thread(_active, px) == {peer.address: 1}
            await asyncio.wait_for(ws.close(), 5)
        finally:
            await cl.close_all()
    _run(main())


# ----------------------------------------------------------------------------------------------
# 16. graceful stop

def test_websocket_tunnel_during_graceful_stop(t):
    """`proxyctl stop` (shutdown_timeout 2s) with a tunnel open: the tunnel keeps echoing while
    the master waits, new connections are refused, and at about shutdown_timeout the tunnel is
    closed and the master exits."""
    peer = Peer(t, "ws-stop")
    px = t.proxy_to(peer.address, server={"workers": 1, "shutdown_timeout": "2s"})

    async def main():
        cl = Clients(px)
        try:
            ws = await cl.connect("/stopping")
            await _echo(ws, "before stop")
            t0 = time.monotonic()
            stopper = t.spawn([harness.PROXYCTL, "-s", px.control_socket, "stop"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            await asyncio.sleep(0.7)
            for i in range(3):
                await _echo(ws, "during stop %d" % i)
            refused = not harness.port_accepts(px.port, 0.5)
            try:
                await asyncio.wait_for(ws.wait_closed(), 6)
            except asyncio.TimeoutError:
                raise AssertionError("tunnel still open %.1fs after stop (shutdown_timeout 2s)"
                                     % (time.monotonic() - t0))
            closed_after = time.monotonic() - t0
            code = await _in_thread(px.wait_exit, 5)
            exited_after = time.monotonic() - t0
            out, err = await _in_thread(stopper.communicate, timeout=10)
            print("report: graceful stop: tunnel closed after %.2fs, master exited after %.2fs "
                  "(shutdown_timeout 2s)" % (closed_after, exited_after))
            assert refused, "a new connection was accepted during the graceful stop"
            assert 1.5 <= closed_after <= 4.5, closed_after
            assert ws.close_code == 1001, ws.close_code  # going away
            assert code is not None, "master still running"
            assert stopper.returncode == 0, (stopper.returncode, out, err)
            await _wait(lambda: peer.closed("/stopping"), 2, "server never saw the close")
        finally:
            await cl.close_all()
    _run(main())
