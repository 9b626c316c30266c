// Building the heads that leave the proxy: the request head sent upstream and the response head
// sent to the client. Pure functions over a parsed head, appending into a reused string, so they
// are testable without sockets and allocate nothing once the string has grown.
//
// Both directions drop hop-by-hop headers (Connection and every header it names, Keep-Alive,
// Proxy-Connection, TE, Trailer, Upgrade) and re-frame the body themselves (Content-Length and
// Transfer-Encoding from the peer are never copied).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/http/parser.hpp"
#include "worker/h2/types.hpp"

namespace proxyd::worker {

// How a body leaves the proxy.
enum class Framing {
    None,           // no body
    ContentLength,  // "Content-Length: n"
    Chunked,        // "Transfer-Encoding: chunked", re-encoded by the proxy
    UntilClose,     // no length header; the connection closes after the body
};

struct UpstreamRequestInfo {
    std::string_view path;       // after strip_prefix
    std::string_view query;      // without '?'
    std::string_view client_ip;  // TCP peer, appended to X-Forwarded-For
    std::string_view real_ip;    // X-Real-IP
    std::string_view request_id;
    std::string_view traceparent;  // replaces the client's (worker/trace_context.hpp)
    std::string_view proto = "http";
    std::string_view default_host;  // used when the client sent no Host (HTTP/1.0)
    Framing framing = Framing::None;
    std::uint64_t content_length = 0;
    // Lower-case names of headers the proxy sets from the token (forward_claims): a client's own
    // copies never reach the upstream.
    const std::vector<std::string>* removed_headers = nullptr;
    std::string_view extra_lines;  // complete "Name: value\r\n" lines added by the proxy
    // "websocket" for an upgrade request: Upgrade and Connection: Upgrade are sent on, the one
    // exception to dropping hop-by-hop headers.
    std::string_view upgrade;
};

// Hop-by-hop names that are never forwarded as they are (the framing headers included: the proxy
// frames bodies itself).
bool is_hop_by_hop(std::string_view name);

// Headers named by any Connection header are hop-by-hop too. Most messages have no Connection
// header (HTTP/1.1 keeps alive by default): one scan finds that, instead of one per header.
class ConnectionOptions {
  public:
    ConnectionOptions(const http::Header* headers, std::size_t count);
    bool names(std::string_view name) const;

  private:
    const http::Header* headers_;
    std::size_t count_;
    std::size_t first_;  // the first Connection header; count_ when there is none
};

// A WebSocket opening handshake (RFC 6455 4.1): GET, HTTP/1.1, Upgrade naming websocket and
// Connection naming upgrade. Other upgrades are not supported: their headers are dropped.
bool wants_websocket(const http::Request& request);

// Appends one "Name: value\r\n" line.
void append_header(std::string& out, std::string_view name, std::string_view value);

void build_upstream_request_head(const http::Request& request, const UpstreamRequestInfo& info,
                                 std::string& out);

// The same request for an HTTP/2 upstream (protocol h2c/h2): the regular fields, by the same
// rules (hop-by-hop fields dropped, X-Forwarded-*, X-Real-IP, X-Request-Id and traceparent set,
// claim lines added), except that "te: trailers" is kept (the one TE that HTTP/2 allows; gRPC
// needs it), Host goes to `authority` (HTTP/2's :authority) and the body is framed by HTTP/2
// (content-length is kept only as a hint when the client gave one). info.path, info.query and
// info.upgrade are not used: the caller sends :path itself, and HTTP/2 has no upgrades.
void build_upstream_h2_fields(const http::Request& request, const UpstreamRequestInfo& info,
                              std::vector<h2::Header>& out, std::string& authority);

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// A request flow fills what it knows (request id, the access phase's lines, the sticky cookie, an
// upgrade; keep_alive false when the request's input was not read to its end) and the client
// connection completes the rest before building (its version, framing, its own keep-alive
// reasons, server.response_headers): worker/client_side.hpp.
struct ClientResponseInfo {
    int client_version_minor = 1;
    bool keep_alive = true;  // the proxy keeps the client connection after this response
    Framing framing = Framing::None;
    std::uint64_t content_length = 0;
    std::string_view request_id;
    const HeaderList* extra_headers = nullptr;  // server.response_headers; replace upstream's
    std::string_view set_cookie;                // sticky session cookie to set, if any
    // Complete "Name: value\r\n" lines from the access phase (CORS, RateLimit-*,
    // WWW-Authenticate).
    std::string_view extra_lines;
    bool replace_cors = false;  // the proxy answers CORS: the upstream's Access-Control-* go
    std::string_view upgrade;   // a 101: the protocol switched to (Connection: Upgrade sent)
};

// Whether `name` is one of `extra` (case-insensitive); false for null.
bool has_extra_header(const HeaderList* extra, std::string_view name);

void build_client_response_head(const http::Response& response, const ClientResponseInfo& info,
                                std::string& out);

// A complete proxy-generated error response: JSON body {"error": ..., "request_id": ...}.
void build_error_response(int status, std::string_view detail, const ClientResponseInfo& info,
                          std::string& out);

// A proxy-generated response without a body (204 for a CORS preflight).
void build_bodiless_response(int status, const ClientResponseInfo& info, std::string& out);

// ---- the same responses toward an HTTP/2 client: field lists for a HEADERS frame, without the
// framing and connection fields HTTP/2 has no use for (a known Content-Length is kept: it lets
// the client size its buffers; h2::HeaderBlock drops whatever connection-specific field is left).
using FieldList = std::vector<h2::Header>;

void build_client_response_fields(const http::Response& response, const ClientResponseInfo& info,
                                  FieldList& out);
// An error's JSON body alone, and the fields that go with it.
void build_error_body(int status, std::string_view detail, std::string_view request_id,
                      std::string& out);
void build_error_fields(const ClientResponseInfo& info, std::size_t body_size, FieldList& out);
void build_bodiless_fields(int status, const ClientResponseInfo& info, FieldList& out);

// Whether the client connection can stay open for the next request, given the client's wish and
// how the body will be framed for it (HTTP/1.0 cannot take chunked).
Framing choose_client_framing(const http::Response& response, int client_version_minor,
                              bool& keep_alive);

}  // namespace proxyd::worker
