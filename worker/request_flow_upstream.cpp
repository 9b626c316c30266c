// The upstream half of a request flow, in the order it runs: balance (pick a server from shared
// state), connect (a pooled connection or a new one; the next server when a connect fails), send
// the head and stream the request body, read the response head (1xx skipped), hand it to the
// client side, stream the response body, and give the connection back to the pool. Retries and
// passive health accounting live here too: one report per attempt, one release per server pick.
//
// Bodies move as evbuffer chains in both directions, with backpressure: the side that produces
// is paused while the side that consumes holds more than kHighWatermark.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>

#include "worker/chunk_framing.hpp"
#include "worker/request_flow.hpp"
#include "worker/worker.hpp"

namespace proxyd::worker {
namespace {

constexpr std::size_t kBodyReadSize = 64 * 1024;
constexpr std::size_t kMaxResponseHead = 64 * 1024;

}  // namespace

// ---- balance and connect ----------------------------------------------------------------------

void RequestFlow::connect_upstream() {
    auto& ex = *exchange_;
    const auto& upstream = worker_.config().upstreams[ex.upstream_index];
    auto& selector = worker_.selector();
    for (;;) {
        auto pick =
            selector.pick(ex.upstream_index, ex.algorithm, ex.key_hash, ex.sticky_hash, ex.tried);
        if (pick.outcome == UpstreamSelector::Outcome::AllFull) {
            wait_for_capacity();
            return;
        }
        if (pick.outcome == UpstreamSelector::Outcome::NoneUsable) {
            if (ex.last_error.empty()) {
                fail(Failure::NoServer);
            } else {
                fail(Failure::UpstreamFailed, ex.last_error);
            }
            return;
        }
        ex.server_index = pick.server;
        ex.trial = pick.trial;
        ex.tried.mark(pick.server);
        selector.begin(ex.upstream_index, ex.server_index);
        ex.server_active = true;
        ex.attempt_started = std::chrono::steady_clock::now();
        std::string error;
        if (open_upstream(error)) return;
        spdlog::warn("upstream {} server {}: {}", upstream.name,
                     upstream.servers[ex.server_index].id, error);
        ex.last_error = error;
        report_attempt(false);
        release_server();
        if (ex.retries_left-- <= 0) {
            fail(Failure::UpstreamFailed, error);
            return;
        }
    }
}

// A connection to the chosen server: a pooled one (the most recently used), else a new connect.
// False with `error` when the connect fails at once.
bool RequestFlow::open_upstream(std::string& error) {
    auto& ex = *exchange_;
    if (!ex.h2_path.empty()) return open_h2_stream(error);  // an HTTP/2 upstream
    // A body-less request that meets a connection the upstream has just closed goes again on a
    // fresh one (retry_or_fail), so only a request with a body pays for probing the connection.
    const bool probe = ex.request_body != http::BodyKind::None;
    ex.upstream = worker_.pool().take_idle(ex.upstream_index, ex.server_index, this, probe);
    if (ex.upstream) {
        send_request_head();
        return true;
    }
    ex.upstream = worker_.pool().connect(ex.upstream_index, ex.server_index, this, error);
    if (!ex.upstream) return false;
    if (ex.upstream->connected) {
        send_request_head();
    } else {
        ex.upstream->stream.wait_writable();
        ex.upstream->stream.arm_timer(worker_.config().server.timeouts.upstream_connect);
    }
    return true;
}

// Every server is at its max_connections: wait for one to free up, up to upstream_connect.
void RequestFlow::wait_for_capacity() {
    auto& ex = *exchange_;
    auto now = std::chrono::steady_clock::now();
    if (ex.queued_since == std::chrono::steady_clock::time_point{}) ex.queued_since = now;
    if (now - ex.queued_since >= worker_.config().server.timeouts.upstream_connect) {
        fail(Failure::NoServer, "every server is at max_connections");
        return;
    }
    if (!queue_timer_) {
        queue_timer_.reset(evtimer_new(
            worker_.base(),
            [](evutil_socket_t, short, void* arg) {
                auto* self = static_cast<RequestFlow*>(arg);
                if (self->exchange_ && !self->exchange_->upstream && !self->exchange_->h2) {
                    self->connect_upstream();
                }
            },
            this));
    }
    timeval tv{0, 20'000};
    event_add(queue_timer_.get(), &tv);
}

// Passive health: the attempt's outcome, once.
void RequestFlow::report_attempt(bool success) {
    auto& ex = *exchange_;
    if (!ex.server_active || ex.reported) return;
    auto latency = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - ex.attempt_started);
    worker_.selector().report(ex.upstream_index, ex.server_index, success, ex.trial, latency);
    ex.reported = true;
}

// The server no longer counts this request as active.
void RequestFlow::release_server() {
    auto& ex = *exchange_;
    if (!ex.server_active) return;
    worker_.selector().release(ex.upstream_index, ex.server_index, ex.trial && !ex.reported);
    ex.server_active = false;
    ex.reported = false;
    ex.trial = false;
}

// ---- the request ------------------------------------------------------------------------------

void RequestFlow::send_request_head() {
    auto& ex = *exchange_;
    auto& upstream = ex.upstream->stream;
    evbuffer_add(upstream.out(), ex.upstream_head.data(), ex.upstream_head.size());
    upstream.enable_read(true);
    upstream.arm_timer(worker_.config().server.timeouts.upstream_response);
    forward_request_body();
}

bool RequestFlow::take_request_body() {
    if (exchange_ && exchange_->h2 && !exchange_->request_done) {
        forward_h2_request_body();
        return true;
    }
    if (!exchange_ || exchange_->request_done || !exchange_->upstream ||
        !exchange_->upstream->connected) {
        return false;
    }
    forward_request_body();
    return true;
}

void RequestFlow::forward_request_body() {
    auto& ex = *exchange_;
    Stream& upstream = ex.upstream->stream;
    if (!ex.request_done) {
        const std::uint64_t before = ex.request_body_bytes;
        if (!move_request_body(upstream.out())) return;
        if (ex.request_body_bytes != before) ex.request_body_sent = true;
    }
    if (!upstream.flush()) {
        retry_or_fail(Failure::UpstreamFailed, "upstream write failed");
        return;
    }
    if (!ex.request_done && upstream.pending_output() > kHighWatermark) {
        paused_for_upstream_ = true;
        client_->pause_request_body(true);
    } else if (!ex.request_done && !paused_for_upstream_) {
        client_->pause_request_body(false);
    }
}

// Moves what the client side has of the body into `out`, re-chunked when the upstream gets it
// chunked. False when the body turned out broken or too large (the request has failed).
bool RequestFlow::move_request_body(evbuffer* out) {
    auto& ex = *exchange_;
    const bool chunked = ex.request_body == http::BodyKind::Chunked;
    for (;;) {
        const RequestBodyInput body = client_->request_body();
        if (body.state == RequestBodyInput::State::Invalid) {
            fail(Failure::BadRequest, "invalid chunked body");
            return false;
        }
        if (body.state == RequestBodyInput::State::TooLarge) {
            fail(Failure::BodyTooLarge);
            return false;
        }
        if (body.ready > 0) {
            if (chunked) append_chunk_header(out, body.ready);
            evbuffer_remove_buffer(body.buffer, out, body.ready);
            if (chunked) evbuffer_add(out, "\r\n", 2);
            ex.request_body_bytes += body.ready;
            client_->consume_request_body(body.ready);
        }
        if (body.state == RequestBodyInput::State::Complete) {
            if (chunked) evbuffer_add(out, "0\r\n\r\n", 5);
            ex.request_done = true;
            return true;
        }
        if (body.ready == 0) return true;  // wait for more
    }
}

// ---- upstream events --------------------------------------------------------------------------

void RequestFlow::on_upstream_writable() {
    auto& ex = *exchange_;
    auto& upstream = *ex.upstream;
    if (!upstream.connected) {
        std::string error;
        if (!UpstreamPool::finish_connect(upstream, error)) {
            retry_or_fail(Failure::UpstreamFailed, error);
            return;
        }
        send_request_head();
        return;
    }
    if (!upstream.stream.flush()) {
        retry_or_fail(Failure::UpstreamFailed, "upstream write failed");
        return;
    }
    if (paused_for_upstream_ && upstream.stream.pending_output() < kLowWatermark) {
        paused_for_upstream_ = false;
        client_->pause_request_body(false);
        forward_request_body();
    }
}

void RequestFlow::on_upstream_timeout() {
    auto& ex = *exchange_;
    if (!ex.upstream->connected) {
        retry_or_fail(Failure::UpstreamFailed, "connect timed out");
    } else if (!ex.response_head_done) {
        fail(Failure::UpstreamTimeout);
    } else {
        fail(Failure::UpstreamAborted, "upstream idle timeout");
    }
}

void RequestFlow::on_upstream_readable() {
    auto& ex = *exchange_;
    auto& upstream = *ex.upstream;
    auto result = upstream.stream.read(kBodyReadSize);
    if (result == Stream::ReadResult::WouldBlock) return;
    if (result == Stream::ReadResult::Data) {
        if (!ex.response_head_done) {
            read_response_head();
        } else {
            forward_response_body();
        }
        return;
    }
    // The upstream closed or reset.
    if (!ex.response_head_done) {
        retry_or_fail(Failure::UpstreamFailed, "upstream closed before responding");
    } else if (ex.response_body == http::BodyKind::UntilClose &&
               result == Stream::ReadResult::Eof) {
        ex.upstream_reusable = false;
        end_body();
        if (flush_client()) finish();
    } else {
        fail(Failure::UpstreamAborted, "upstream closed mid-response");
    }
}

void RequestFlow::retry_or_fail(Failure failure, std::string_view detail) {
    auto& ex = *exchange_;
    bool was_connect = ex.upstream && !ex.upstream->connected;
    bool was_reused = ex.upstream && ex.upstream->reused;
    bool nothing_received = !ex.upstream || evbuffer_get_length(ex.upstream->stream.in()) == 0;
    bool may_resend = !ex.response_head_done && nothing_received && !ex.request_body_sent;
    if (may_resend && was_reused && !was_connect) {
        // A pooled connection the upstream had just closed: not the server's fault, and nothing
        // of the request can have been processed. Again on a fresh connection, same server.
        ex.upstream.reset();
        std::string error;
        if (open_upstream(error)) return;
        detail = error;
        was_connect = true;
    }
    const auto& upstream = worker_.config().upstreams[ex.upstream_index];
    spdlog::warn("upstream {} server {}: {}", upstream.name, upstream.servers[ex.server_index].id,
                 detail);
    ex.last_error.assign(detail);
    report_attempt(false);
    release_server();
    ex.upstream.reset();
    // Another server may get the request only if this one cannot have acted on it: nothing was
    // sent (failed connect), or the method is idempotent; never a body already streamed.
    bool retryable = may_resend && (was_connect || ex.idempotent);
    if (retryable && ex.retries_left-- > 0) {
        connect_upstream();
        return;
    }
    fail(failure, detail);
}

// ---- the response -----------------------------------------------------------------------------

void RequestFlow::read_response_head() {
    auto& ex = *exchange_;
    evbuffer* in = ex.upstream->stream.in();
    http::Response& response = worker_.scratch_response();
    for (;;) {
        std::size_t len = evbuffer_get_length(in);
        std::size_t window = std::min(len, kMaxResponseHead + 4);
        auto* data =
            reinterpret_cast<const char*>(evbuffer_pullup(in, static_cast<ev_ssize_t>(window)));
        switch (http::parse_response(data, window, kMaxResponseHead, ex.is_head, response)) {
            case http::ParseStatus::Incomplete:
                if (len > kMaxResponseHead)
                    fail(Failure::UpstreamFailed, "response head too large");
                return;
            case http::ParseStatus::Error:
                fail(Failure::UpstreamFailed, response.error_reason);
                return;
            case http::ParseStatus::Done:
                break;
        }
        if (response.status >= 200) break;
        if (response.status == 101) {
            if (ex.websocket &&
                http::list_contains_token(http::find_header(response, "upgrade"), "websocket")) {
                break;
            }
            fail(Failure::UpstreamFailed, "unexpected 101 Switching Protocols");
            return;
        }
        // Interim 1xx answers (the proxy answered Expect itself) are dropped.
        evbuffer_drain(in, response.head_length);
    }
    send_response_head(response);
}

void RequestFlow::send_response_head(const http::Response& response) {
    auto& ex = *exchange_;
    if (ex.cache_stale &&
        (response.status == 500 || (response.status >= 502 && response.status <= 504))) {
        // stale_if_error: the upstream's error is not forwarded, the stale copy is.
        report_attempt(response.status == 500);
        ex.upstream.reset();
        release_server();
        serve_stale_on_error(response.status);
        return;
    }
    auto& upstream = ex.upstream->stream;
    begin_cache_fill(response);
    ClientResponseInfo info;
    begin_response(response, info, false);
    const bool switching = response.status == 101;
    if (switching) info.upgrade = "websocket";
    client_->send_response_head(switching ? response : encode_head(response), info);
    ex.response_started = true;
    evbuffer_drain(upstream.in(), response.head_length);  // `response` is invalid from here on
    if (switching) {
        // The tunnel is the client side's; the flow keeps the server counted until it ends.
        client_->start_tunnel(std::move(ex.upstream));
        return;
    }
    // forward_response_body arms upstream_idle if the body is not all here yet.
    forward_response_body();
}

// What every response head does before it goes to the client, whatever the upstream's protocol:
// metrics and passive health, the exchange's state, and the flow's part of the client head.
// `full_duplex`: the request body goes on being forwarded while the response streams (an HTTP/2
// upstream on a gRPC route); otherwise an early response ends the request body here.
void RequestFlow::begin_response(const http::Response& response, ClientResponseInfo& info,
                                 bool full_duplex) {
    auto& ex = *exchange_;
    worker_.metrics().upstream_response(ex.upstream_index, ex.server_index, response.status,
                                        std::chrono::duration_cast<std::chrono::microseconds>(
                                            std::chrono::steady_clock::now() - ex.attempt_started));
    // Passive health (docs/configuration.md): 502-504 say the server or what is behind it is
    // failing; any other status, a 500 included, is the application's answer to this request.
    report_attempt(response.status < 502 || response.status > 504);
    ex.response_head_done = true;
    ex.status = response.status;
    ex.response_body = response.body;
    ex.response_remaining = response.content_length;
    ex.upstream_reusable = response.keep_alive && ex.request_done;
    if (!ex.request_done && !full_duplex) {
        // The upstream answered before the body ended: send no more of it. The upstream
        // connection is not reused either (the body it expected never ended).
        info.keep_alive = false;
        ex.request_done = true;
        client_->abandon_request_body();
    }
    info.request_id = ex.request_id;
    const auto& upstream_config = worker_.config().upstreams[ex.upstream_index];
    std::uint64_t server_hash = worker_.selector().server_hash(ex.upstream_index, ex.server_index);
    if (!upstream_config.sticky_cookie.empty() && ex.sticky_hash != server_hash) {
        char value[17];
        std::snprintf(value, sizeof value, "%016llx", static_cast<unsigned long long>(server_hash));
        ex.set_cookie = upstream_config.sticky_cookie + "=" + value + "; Path=/; HttpOnly";
        info.set_cookie = ex.set_cookie;
    }
    info.extra_lines = ex.access_headers;
    info.replace_cors = ex.replace_cors;
}

void RequestFlow::forward_response_body() {
    auto& ex = *exchange_;
    evbuffer* in = ex.upstream->stream.in();
    bool complete = false;
    switch (ex.response_body) {
        case http::BodyKind::None:
            complete = true;
            break;
        case http::BodyKind::ContentLength: {
            auto n = static_cast<std::size_t>(
                std::min<std::uint64_t>(ex.response_remaining, evbuffer_get_length(in)));
            deliver_body(in, n);
            ex.response_remaining -= n;
            complete = ex.response_remaining == 0;
            break;
        }
        case http::BodyKind::Chunked:
            if (!forward_chunked_response_body(in)) return;
            complete = ex.response_chunks.done();
            break;
        case http::BodyKind::UntilClose:
            deliver_body(in, evbuffer_get_length(in));
            break;
    }
    if (complete) {
        if (evbuffer_get_length(in) > 0) ex.upstream_reusable = false;  // junk after the body
        end_body();
    }
    if (!flush_client()) return;
    if (complete) {
        finish();
        return;
    }
    ex.upstream->stream.arm_timer(worker_.config().server.timeouts.upstream_idle);
    if (client_->response_pending() > kHighWatermark && !paused_for_client_) {
        paused_for_client_ = true;
        ex.upstream->stream.enable_read(false);
        client_->response_stalled(true);
    }
}

// The upstream's chunk framing is parsed off; the data goes to the client side as is.
bool RequestFlow::forward_chunked_response_body(evbuffer* in) {
    auto& ex = *exchange_;
    auto& decoder = ex.response_chunks;
    while (evbuffer_get_length(in) > 0 && !decoder.done()) {
        if (decoder.in_data()) {
            auto n = static_cast<std::size_t>(
                std::min<std::uint64_t>(decoder.data_remaining(), evbuffer_get_length(in)));
            deliver_body(in, n);
            decoder.consume_data(n);
            continue;
        }
        auto result = parse_framing_front(in, decoder);
        if (result.error) {
            fail(Failure::UpstreamAborted, "invalid chunked response");
            return false;
        }
        evbuffer_drain(in, result.consumed);
        if (result.consumed == 0) break;
    }
    return true;
}

void RequestFlow::on_response_drained() {
    if (paused_for_client_ && exchange_ && exchange_->h2) {
        // The bytes the client has now taken may be sent again by the upstream.
        paused_for_client_ = false;
        client_->response_stalled(false);
        exchange_->h2->consume(exchange_->h2_stream, exchange_->h2_unconsumed);
        exchange_->h2_unconsumed = 0;
        return;
    }
    if (!paused_for_client_ || !exchange_ || !exchange_->upstream) return;
    paused_for_client_ = false;
    client_->response_stalled(false);
    exchange_->upstream->stream.enable_read(true);
    forward_response_body();
}

// After the response: the upstream connection goes back to the pool if it can serve another
// request (the whole request went out, the response ended cleanly and said keep-alive).
void RequestFlow::release_upstream() {
    auto& ex = *exchange_;
    release_server();
    // An HTTP/2 stream ends by itself once both sides ended it; a request still sending is cut.
    if (ex.h2) release_h2_stream(!ex.h2_request_ended);
    if (!ex.upstream) return;
    if (ex.upstream_reusable && ex.request_done) {
        worker_.pool().release(std::move(ex.upstream));
    }
    ex.upstream.reset();
}

}  // namespace proxyd::worker
