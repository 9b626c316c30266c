#include "worker/exchange.hpp"

namespace proxyd::worker {
namespace {

constexpr std::size_t kKeptBlobCapacity = 64 * 1024;

}  // namespace

void Exchange::reset() {
    route = nullptr;
    upstream_index = server_index = 0;
    upstream.reset();
    algorithm = config::Balance::RoundRobin;
    key_hash = sticky_hash = 0;
    idempotent = false;
    retries_left = 0;
    server_active = reported = trial = false;
    queued_since = {};
    last_error.clear();
    set_cookie.clear();
    real_ip.clear();
    claim_headers.clear();
    access_headers.clear();
    rate_key.clear();
    rate_ticket = 0;
    replace_cors = false;
    method.clear();
    target.clear();
    request_id.clear();
    traceparent.clear();
    upstream_head.clear();
    is_head = false;
    websocket = false;
    request_body = http::BodyKind::None;
    request_body_bytes = 0;
    request_done = false;
    request_body_sent = false;
    response_head_done = response_started = false;
    status = 0;
    response_body = http::BodyKind::None;
    response_remaining = 0;
    response_chunks.reset();
    upstream_reusable = false;
    h2_fields.clear();
    h2_authority.clear();
    h2_path.clear();
    h2 = nullptr;
    h2_stream = -1;
    h2_request_ended = false;
    h2_refusals = 0;
    h2_unconsumed = 0;
    h2_response.clear();
    h2_has_trailers = false;
    h2_trailers.clear();
    has_deadline = false;
    grpc_status.clear();
    grpc_message.clear();
    cache_on = cache_conditional = false;
    cache_label = nullptr;
    cache_key.clear();
    cache_variant_key.clear();
    cache_request_head.clear();
    cache_fill = cache_storing = cache_waited = cache_stale = false;
    cache_wait_until_ms = cache_stored_ms = cache_fresh_ms = 0;
    cache_vary.clear();
    cache_head_size = 0;
    // A stored object may have been large: do not keep its capacity in every recycled exchange.
    if (cache_blob.capacity() > kKeptBlobCapacity) std::string().swap(cache_blob);
    cache_blob.clear();
    evbuffer_drain(cache_object.get(), evbuffer_get_length(cache_object.get()));
    accept_encoding.clear();
    may_compress = false;
    compressor.release();
    encoded_vary.clear();
    encoded_etag.clear();
}

}  // namespace proxyd::worker
