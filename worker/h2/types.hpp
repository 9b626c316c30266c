// Plain types of the HTTP/2 server session: its limits and a request head as the client sent it.
// The logic lives in server_session.hpp; these travel through the worker's request phases.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace proxyd::worker::h2 {

// What one HTTP/2 client connection may cost us. The first four are advertised in our SETTINGS
// (the connection window as a WINDOW_UPDATE on stream 0); the rest bound what nghttp2 and the
// session accept before they give up on the connection.
struct Limits {
    // SETTINGS_MAX_CONCURRENT_STREAMS: streams the client may have open at once.
    std::uint32_t max_concurrent_streams = 128;
    // SETTINGS_MAX_HEADER_LIST_SIZE, counted as RFC 9113 6.5.2 does (name + value + 32 per field,
    // pseudo-headers included) on the decoded list, so HPACK cannot amplify past it.
    std::uint32_t max_header_list_size = 64 * 1024;
    // SETTINGS_INITIAL_WINDOW_SIZE: request body bytes a stream may have in flight before the
    // owner has consumed (forwarded) them.
    std::uint32_t initial_window_size = 256 * 1024;
    // Receive window of the whole connection, shared by all streams' request bodies.
    std::uint32_t connection_window = 1024 * 1024;
    // Inbound RST_STREAM budget against "rapid reset" (CVE-2023-44487): a token bucket of
    // `reset_burst` tokens refilled at `reset_rate` per second; nghttp2's own defaults.
    std::uint32_t reset_burst = 1000;
    std::uint32_t reset_rate = 33;
    // Entries per SETTINGS frame, CONTINUATION frames per header block, and SETTINGS/PING
    // acknowledgements queued but not yet sent (a client that does not read): nghttp2's defaults,
    // named here so they are visible and configurable.
    std::size_t max_settings_entries = 32;
    std::size_t max_continuations = 8;
    std::size_t max_outbound_ack = 1000;
};

// One field of a header block. Names are lower case (HTTP/2 requires it of requests, nghttp2
// rejects others; the session lower-cases response names itself).
struct Header {
    std::string name;
    std::string value;
};

// A request as its HEADERS frame(s) carried it, checked by nghttp2's HTTP messaging rules: the
// pseudo-headers are present as RFC 9113 8.3.1 requires (for CONNECT only `authority`), no
// connection-specific field, `te` at most "trailers", a valid content-length.
struct RequestHead {
    std::string method;
    std::string scheme;
    std::string authority;  // :authority, or the Host field when the client sent none
    std::string path;
    std::vector<Header> headers;  // regular fields in arrival order (host and cookie included)
    bool end_stream = false;      // the HEADERS frame ended the stream: there is no body
    std::optional<std::uint64_t> content_length;
};

}  // namespace proxyd::worker::h2
