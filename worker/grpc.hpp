// gRPC over the proxy (routes with protocol = "grpc"): what the proxy must understand of it.
// Pure functions, testable without sockets:
// - grpc-timeout (the client's deadline, gRPC's PROTOCOL-HTTP2.md): "1 to 8 digits + unit";
// - the status a proxy-made error becomes: gRPC clients read grpc-status, not the HTTP status,
//   so an error is a "trailers-only" response (HTTP 200, content-type application/grpc,
//   grpc-status, grpc-message in the head, END_STREAM);
// - grpc-message's percent-encoding.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace proxyd::worker::grpc {

// Status codes (grpc/include/grpcpp/support/status_code_enum.h) the proxy produces.
enum Code : int {
    kOk = 0,
    kDeadlineExceeded = 4,
    kPermissionDenied = 7,
    kResourceExhausted = 8,
    kUnimplemented = 12,
    kInternal = 13,
    kUnavailable = 14,
    kUnauthenticated = 16,
};

// The value of a grpc-timeout field: "TimeoutValue TimeoutUnit", 1 to 8 ASCII digits then one
// of H M S m u n. Nullopt when malformed (the field is then ignored, as gRPC servers do).
std::optional<std::chrono::microseconds> parse_timeout(std::string_view text);

// "NNNm" / "NNNu" / "NNNS": the shortest unit that keeps `remaining` within 8 digits, rounded
// up (a deadline forwarded must never be earlier than the client's); at least "1u".
std::string format_timeout(std::chrono::microseconds remaining);

// The gRPC status for an HTTP status the proxy would have answered with. It follows gRPC's
// http-grpc-status-mapping.md (401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 UNIMPLEMENTED,
// 502/503 UNAVAILABLE, others INTERNAL), with what the proxy knows better than the table:
// a 504 is its own upstream timeout (DEADLINE_EXCEEDED), a 429 its own rate limit and a 413 an
// oversized request (RESOURCE_EXHAUSTED, what gRPC itself uses for both).
Code code_for_http_status(int status);

// Appends `message` percent-encoded as grpc-message wants it: bytes outside 0x20..0x7E, and '%'
// itself, as %XX.
void append_percent_encoded(std::string& out, std::string_view message);

}  // namespace proxyd::worker::grpc
