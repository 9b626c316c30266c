#!/usr/bin/python3
"""A small demo backend: answers every request with JSON describing what it received.

GET and HEAD answers carry an ETag (of the body) and a Last-Modified (the start time), so a
cache in front can answer conditional requests. A few query parameters change the answer
(scripts/try-cache uses them; without them the answer is the plain JSON):
  delay=SECONDS  sleep that long (at most 30 s) before answering
  cc=VALUE       send VALUE back as Cache-Control, e.g. cc=no-store or cc=max-age=60
  pad=BYTES      add a "pad" field of about that many bytes of text (at most 1 MiB)
GET /_count answers {"request target": number of requests, ...} counted since the start
(itself not counted), so a script can see how many requests got past a cache.
"""
import collections
import email.utils
import hashlib
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PAD_TEXT = "the quick brown fox jumps over the lazy dog; "


def number(query, name, limit):
    """The query parameter NAME as a number in [0, limit]; 0 when absent or not a number."""
    try:
        return max(0.0, min(float(query.get(name, ["0"])[0]), limit))
    except ValueError:
        return 0.0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "demo-backend"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        target = urlsplit(self.path)
        if self.command == "GET" and target.path == "/_count":
            with self.server.lock:
                counts = dict(self.server.counts)
            self._send(200, {}, (json.dumps(counts, indent=2) + "\n").encode())
            return
        with self.server.lock:
            self.server.counts[self.path] += 1
        query = parse_qs(target.query)
        delay = number(query, "delay", 30.0)
        if delay > 0:
            time.sleep(delay)
        payload = {
            "backend": self.server.name,
            "method": self.command,
            "path": self.path,
            "headers": dict(self.headers.items()),
            "body_bytes": len(body),
        }
        pad = int(number(query, "pad", 1 << 20))
        if pad > 0:
            payload["pad"] = (PAD_TEXT * (pad // len(PAD_TEXT) + 1))[:pad]
        data = (json.dumps(payload, indent=2) + "\n").encode()
        extra = {}
        if "cc" in query:
            extra["Cache-Control"] = query["cc"][0]
        if self.command in ("GET", "HEAD"):
            extra["ETag"] = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
            extra["Last-Modified"] = self.server.started
        self._send(200, extra, data)

    def _send(self, status, extra, data):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _answer

    def log_message(self, *args):
        pass


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.name = f"demo-backend@{socket.gethostname()}:{port}"
    server.started = email.utils.formatdate(usegmt=True)
    server.counts = collections.Counter()
    server.lock = threading.Lock()
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
