#!/usr/bin/python3
"""Peers for test_websocket.py, run as separate processes (t.spawn), on 127.0.0.1 only.

    ws_peer.py ws  --port P --name NAME --ready FILE     WebSocket echo server (python3-websockets)
    ws_peer.py sse --port P --name NAME --ready FILE     Server-Sent Events backend (stdlib)

FILE is created once the server listens (the test waits for it).

ws: every WebSocket connection echoes each message (text or binary) back, whatever its path, and:
    /hello...        first sends one text message, JSON {name, path, headers: [[k, v], ...] of the
                     opening handshake as received, peer}
    /close/S...      closes (close frame, code 1000) S seconds after the handshake
  Plain HTTP requests (no WebSocket handshake) are answered by process_request:
    GET /_stats      JSON {name, open, total, closed: [{path, code, time, opened}], ...}: this
                     server's own view of its connections (the test asks it directly)
    anything else    200, body JSON {name, path, headers}, header X-Backend: NAME
sse: GET /events -> 200 text/event-stream, "data: one\\n\\n", 1.5 s pause, "data: two\\n\\n", end.
    Chunked, or close-delimited with ?close=1. Other paths: 200 "NAME". X-Backend: NAME.
"""

import argparse
import asyncio
import http.server
import json
import logging
import os
import re
import socket
import socketserver
import sys
import time


def _ready(path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % os.getpid())
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# WebSocket echo server

def run_ws(args):
    import websockets

    state = {"name": args.name, "open": 0, "total": 0, "closed": [], "messages": 0}

    async def process_request(path, headers):
        upgrade = headers.get("Upgrade", "")
        if "websocket" in upgrade.lower():
            return None     # a handshake: let websockets do it
        if path == "/_stats":
            return (http.HTTPStatus.OK, [("Content-Type", "application/json"),
                                         ("X-Backend", args.name)], json.dumps(state).encode())
        body = json.dumps({"name": args.name, "path": path,
                           "headers": [[k, v] for k, v in headers.raw_items()]}).encode()
        return (http.HTTPStatus.OK, [("Content-Type", "application/json"),
                                     ("X-Backend", args.name)], body)

    async def close_later(ws, seconds):
        await asyncio.sleep(seconds)
        await ws.close(code=1000, reason="server closes")

    async def handler(ws):
        path = ws.path
        opened = time.time()
        state["open"] += 1
        state["total"] += 1
        closer = None
        try:
            if path.startswith("/hello"):
                peer = ws.remote_address
                await ws.send(json.dumps({
                    "name": args.name, "path": path, "peer": list(peer) if peer else None,
                    "headers": [[k, v] for k, v in ws.request_headers.raw_items()]}))
            m = re.match(r"/close/(\d+(?:\.\d+)?)", path)
            if m:
                closer = asyncio.ensure_future(close_later(ws, float(m.group(1))))
            async for msg in ws:
                state["messages"] += 1
                await ws.send(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            if closer is not None:
                closer.cancel()
            state["open"] -= 1
            state["closed"].append({"path": path, "code": ws.close_code, "time": time.time(),
                                    "opened": opened})

    async def main():
        async with websockets.serve(handler, "127.0.0.1", args.port, max_size=None,
                                    ping_interval=None, close_timeout=2,
                                    subprotocols=["chat.v1", "chat.v2"],
                                    process_request=process_request):
            _ready(args.ready)
            await asyncio.Future()

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(main())


# ----------------------------------------------------------------------------------------------
# SSE backend

def run_sse(args):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % a))

        def setup(self):
            super().setup()
            # as event-stream servers do: each event leaves at once (no Nagle delay)
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_GET(self):
            path, _, query = self.path.partition("?")
            if path != "/events":
                body = args.name.encode()
                self.send_response(200)
                self.send_header("X-Backend", args.name)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            close = "close=1" in query.split("&")
            self.send_response(200)
            self.send_header("X-Backend", args.name)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            else:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()

            def piece(data):
                if close:
                    self.wfile.write(data)
                else:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            piece(b"data: one\n\n")
            time.sleep(1.5)
            piece(b"data: two\n\n")
            if not close:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    srv = Server(("127.0.0.1", args.port), Handler)
    _ready(args.ready)
    srv.serve_forever()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["ws", "sse"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", default="ws")
    ap.add_argument("--ready", required=True)
    args = ap.parse_args()
    (run_ws if args.mode == "ws" else run_sse)(args)


if __name__ == "__main__":
    main()
