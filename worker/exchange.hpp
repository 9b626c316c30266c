// The state of one request on its way through the proxy (an Exchange), and the classification of
// what can end it early (Failure). Types only: the phases that fill them live in the request flow.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "common/config/types.hpp"
#include "common/http/parser.hpp"
#include "common/shm/cache_store.hpp"
#include "common/util/event_ptr.hpp"
#include "worker/compression.hpp"
#include "worker/forward_headers.hpp"
#include "worker/h2/types.hpp"
#include "worker/upstream_pool.hpp"
#include "worker/upstream_selector.hpp"

namespace proxyd::config {
struct Route;
}

namespace proxyd::worker {

class H2Upstream;

// What went wrong, classified once: where it came from decides the status and whether the
// client connection survives.
enum class Failure {
    BadRequest,        // 400, or the parser's status (414, 431, 505)
    NoRoute,           // 404
    Unauthorized,      // 401: no token, or one that does not verify (WWW-Authenticate added)
    Forbidden,         // 403: the token lacks the route's roles, or a CORS origin is refused
    RateLimited,       // 429 (Retry-After added)
    LimitUnavailable,  // 503: the Redis rate-limit store failed and on_redis_error = "deny"
    HeadTimeout,       // 408
    BodyTimeout,       // 408 before the response started
    BodyTooLarge,      // 413
    NoServer,          // 503: the upstream has no server
    UpstreamFailed,    // 502: refused, reset, or an invalid response
    UpstreamTimeout,   // 504: no response head in time
    UpstreamAborted,   // the response broke off after it started: close the client
    ClientGone,        // the client closed or reset: close the upstream
};

// Per-request state, owned by the request's RequestFlow. Recycled through the worker's free list,
// so its strings keep their capacity and a steady stream of requests allocates nothing here.
// What belongs to the client's protocol (HTTP/1.1 keep-alive, body framing, bytes on the wire)
// is the client side's, not this.
struct Exchange {
    void reset();

    const config::Route* route = nullptr;
    std::size_t upstream_index = 0;
    std::size_t server_index = 0;
    UpstreamPtr upstream;

    // Balance phase.
    config::Balance algorithm = config::Balance::RoundRobin;
    std::uint64_t key_hash = 0;
    std::uint64_t sticky_hash = 0;  // from the sticky cookie; 0 = none
    bool idempotent = false;
    int retries_left = 0;
    TriedServers tried;
    bool server_active = false;  // counted in the server's shared active requests
    bool reported = false;       // the attempt's outcome fed passive health already
    bool trial = false;          // a half-open circuit's trial request
    std::chrono::steady_clock::time_point attempt_started;
    std::chrono::steady_clock::time_point queued_since;
    std::string last_error;
    std::string set_cookie;

    // Access phase.
    std::string real_ip;         // the client as the upstream sees it (trusted proxies applied)
    std::string claim_headers;   // upstream header lines from the token's forward_claims
    std::string access_headers;  // client header lines: CORS, RateLimit-*, WWW-Authenticate
    std::string rate_key;
    std::uint64_t rate_ticket = 0;  // a Redis decision in flight
    bool replace_cors = false;

    std::string method;
    std::string target;  // for the access log
    std::string request_id;
    std::string traceparent;
    std::string upstream_head;  // kept until the response starts, to resend on a fresh connection
    bool is_head = false;
    bool websocket = false;  // an opening handshake: a 101 starts a tunnel

    // The request body as it goes upstream; the client side de-frames it (worker/client_side.hpp).
    http::BodyKind request_body = http::BodyKind::None;  // chunked: re-chunked toward upstream
    std::uint64_t request_body_bytes = 0;
    bool request_done = false;       // the body is forwarded in full, or was abandoned
    bool request_body_sent = false;  // some body byte left the proxy: no resend

    bool response_head_done = false;
    bool response_started = false;  // something was handed to the client
    int status = 0;
    http::BodyKind response_body = http::BodyKind::None;
    std::uint64_t response_remaining = 0;
    http::ChunkedDecoder response_chunks;
    bool upstream_reusable = false;

    // An HTTP/2 upstream (protocol h2c/h2; request_flow_h2.cpp): the request as fields, the
    // stream it went on, the response head's fields (the Response handed to the client views
    // them) and its trailers.
    std::vector<h2::Header> h2_fields;
    std::string h2_authority;
    std::string h2_path;
    H2Upstream* h2 = nullptr;  // the connection while the stream is ours
    std::int32_t h2_stream = -1;
    bool h2_request_ended = false;  // END_STREAM of the request was queued
    int h2_refusals = 0;            // streams refused (not processed) so far: sent again
    std::size_t h2_unconsumed = 0;  // response bytes not yet acknowledged (client is slow)
    std::vector<h2::Header> h2_response;
    bool h2_has_trailers = false;
    HeaderList h2_trailers;
    // gRPC (route protocol = "grpc"): the client's grpc-timeout as a deadline, and the fields of
    // a trailers-only error.
    bool has_deadline = false;
    std::chrono::steady_clock::time_point deadline;
    std::string grpc_status;
    std::string grpc_message;

    // Cache phase (request_flow_cache.cpp). The request's header lines are kept (as a head that
    // re-parses) because Vary and the conditional headers are read after the client side has
    // released the request head.
    bool cache_on = false;              // the route caches and this request may use the cache
    const char* cache_label = nullptr;  // the X-Cache value still to add to the response head
    std::string cache_key;              // method, host, path, query
    std::string cache_variant_key;      // cache_key plus the request's values of the stored Vary
    std::string cache_request_head;
    bool cache_conditional = false;  // it has If-None-Match or If-Modified-Since
    bool cache_fill = false;         // this request holds the key's fill mark
    bool cache_storing = false;      // the response is being copied for the store
    bool cache_waited = false;       // it waited for another request's fill once already
    bool cache_stale = false;        // cache_object holds a stale copy to serve on upstream errors
    std::int64_t cache_wait_until_ms = 0;
    std::int64_t cache_stored_ms = 0;  // the object in cache_object, or the one being stored
    std::int64_t cache_fresh_ms = 0;   // freshness lifetime of the one being stored
    std::string cache_vary;            // Vary names of the one being stored
    std::size_t cache_head_size = 0;   // of cache_blob
    std::string cache_blob;            // the one being stored: its stored head, then its body
    EvbufferPtr cache_object = make_evbuffer();  // a looked-up object: stored head, then body

    // Encoding phase (request_flow_encoding.cpp).
    std::string accept_encoding;  // the client's, when [compression] applies to the route
    bool may_compress = false;
    Compressor compressor;     // active while the body is encoded on its way out
    std::string encoded_vary;  // header values of a head rewritten for an encoding
    std::string encoded_etag;

    std::chrono::steady_clock::time_point started;
};

}  // namespace proxyd::worker
