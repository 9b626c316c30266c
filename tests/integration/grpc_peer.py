"""A gRPC server for test_grpc.py (Debian's python3-grpcio, generic handlers, raw bytes: no
protoc). Plain HTTP/2 (h2c) on 127.0.0.1:PORT, or TLS with ALPN h2 given --tls CERT KEY; writes
READY (a path) once it serves.

Methods of service test.Echo (requests and responses are bytes):
  Unary         echoes the request; "status:CODE:MESSAGE" aborts with that status and message;
                "sleep:SECONDS" answers "slept" after that long (no header before); "big:N" answers N bytes of a
                pattern; every answer carries trailing metadata x-peer-trailer: NAME and initial
                metadata x-peer: NAME; "headers" answers the request metadata as JSON.
  ServerStream  "N:MS" sends N messages, MS milliseconds apart; each is JSON
                {"i": i, "sent": time.time()} so the client can tell when it was sent.
  ClientStream  answers the number of messages and bytes it received, as "COUNT:BYTES".
"""

import argparse
import json
import os
import sys
import time
from concurrent import futures

import grpc


def pattern(n):
    block = bytes(range(256))
    return (block * (n // 256 + 1))[:n]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", default="g1")
    ap.add_argument("--ready", required=True)
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = ap.parse_args()
    name = args.name

    def unary(request, context):
        if request.startswith(b"sleep:"):  # before any header: the proxy sees no response yet
            time.sleep(float(request[6:].decode()))
            return b"slept"
        context.send_initial_metadata((("x-peer", name),))
        context.set_trailing_metadata((("x-peer-trailer", name),))
        if request.startswith(b"status:"):
            _, code, message = request.decode().split(":", 2)
            context.abort(grpc.StatusCode[code], message)
        if request.startswith(b"big:"):
            return pattern(int(request[4:].decode()))
        if request == b"headers":
            return json.dumps(dict(context.invocation_metadata())).encode()
        return request

    def server_stream(request, context):
        count, gap_ms = (int(x) for x in request.decode().split(":"))
        for i in range(count):
            if i:
                time.sleep(gap_ms / 1000.0)
            yield json.dumps({"i": i, "sent": time.time()}).encode()

    def client_stream(request_iterator, context):
        count = size = 0
        for message in request_iterator:
            count += 1
            size += len(message)
        return ("%d:%d" % (count, size)).encode()

    handler = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
    })
    limit = 64 * 1024 * 1024
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                         options=[("grpc.max_receive_message_length", limit),
                                  ("grpc.max_send_message_length", limit)])
    server.add_generic_rpc_handlers((handler,))
    address = "127.0.0.1:%d" % args.port
    if args.tls:
        with open(args.tls[0], "rb") as c, open(args.tls[1], "rb") as k:
            credentials = grpc.ssl_server_credentials([(k.read(), c.read())])
        bound = server.add_secure_port(address, credentials)
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        print("cannot bind port %d" % args.port, file=sys.stderr)
        return 1
    server.start()
    with open(args.ready, "w") as f:
        f.write(str(os.getpid()))
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
