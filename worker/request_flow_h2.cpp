// The upstream phases of a request flow on a stream of an HTTP/2 upstream (protocol h2c/h2), in
// the order they run: the request as HTTP/2 fields, a stream on a shared connection (the pool
// opens another when the server's concurrency is used up), the request body with the stream's
// flow control as backpressure, the response head handed to the client side as an
// http::Response, its body piece by piece as it arrives (acknowledged to the server only once
// the client took it), its trailers. Balancing, passive health, metrics and the log are the same
// as for HTTP/1.1 (request_flow_upstream.cpp, request_flow.cpp).
//
// gRPC (route protocol = "grpc"): the request body keeps flowing while the response streams
// (full duplex); grpc-timeout bounds the whole upstream wait; the proxy's own errors are
// trailers-only responses with a grpc-status (worker/grpc.hpp), and a deadline or an upstream
// failure after the response started ends it with trailers saying so.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>

#include "common/http/status.hpp"
#include "worker/grpc.hpp"
#include "worker/request_flow.hpp"
#include "worker/worker.hpp"

namespace proxyd::worker {
namespace {

// A stream refused as not processed (GOAWAY, REFUSED_STREAM) is sent again this many times on
// the same server before it counts against it: that is the server shedding load or restarting
// gracefully, not failing.
constexpr int kMaxRefusals = 2;

using std::chrono::microseconds;
using std::chrono::steady_clock;

}  // namespace

// ---- the request ------------------------------------------------------------------------------

// While the client's head is still in place: the fields, :authority and :path, the deadline.
void RequestFlow::prepare_h2_request(const http::Request& request,
                                     const UpstreamRequestInfo& info) {
    auto& ex = *exchange_;
    build_upstream_h2_fields(request, info, ex.h2_fields, ex.h2_authority);
    ex.h2_path.assign(info.path.empty() ? std::string_view("/") : info.path);
    if (!info.query.empty()) {
        ex.h2_path += '?';
        ex.h2_path += info.query;
    }
    if (!ex.route->grpc) return;
    const std::string_view timeout = http::find_header(request, "grpc-timeout");
    if (timeout.empty()) return;
    if (const auto value = grpc::parse_timeout(timeout)) {
        ex.has_deadline = true;
        ex.deadline = ex.started + *value;
    }
}

// A stream on a connection to the chosen server. False with `error` when the connect fails at
// once; later failures come as on_h2_closed.
bool RequestFlow::open_h2_stream(std::string& error) {
    auto& ex = *exchange_;
    H2Upstream* connection = worker_.h2_pool().acquire(ex.upstream_index, ex.server_index, error);
    if (connection == nullptr) return false;
    if (ex.has_deadline) {
        // The server gets what is left of the client's deadline, not the whole of it again.
        const auto left =
            std::chrono::duration_cast<microseconds>(ex.deadline - steady_clock::now());
        for (h2::Header& field : ex.h2_fields) {
            if (field.name == "grpc-timeout") field.value = grpc::format_timeout(left);
        }
    }
    const auto& upstream = worker_.config().upstreams[ex.upstream_index];
    const std::string_view scheme =
        upstream.protocol == config::UpstreamProtocol::H2 ? "https" : "http";
    const std::int32_t id = connection->submit(*this, ex.method, scheme, ex.h2_authority,
                                               ex.h2_path, ex.h2_fields, ex.request_done);
    if (id < 0) {
        error = "cannot open an HTTP/2 stream";
        return false;
    }
    ex.h2 = connection;
    ex.h2_stream = id;
    ex.h2_request_ended = ex.request_done;
    arm_h2_timer(worker_.config().server.timeouts.upstream_response);
    forward_h2_request_body();  // last: it may end the request
    return true;
}

// Moves what the client side has of the body onto the stream; the stream's unsent bytes are the
// backpressure (the client is paused while they pass the high watermark).
void RequestFlow::forward_h2_request_body() {
    auto& ex = *exchange_;
    if (ex.request_done || ex.h2 == nullptr) return;
    for (;;) {
        const RequestBodyInput body = client_->request_body();
        if (body.state == RequestBodyInput::State::Invalid) {
            fail(Failure::BadRequest, "invalid chunked body");
            return;
        }
        if (body.state == RequestBodyInput::State::TooLarge) {
            fail(Failure::BodyTooLarge);
            return;
        }
        if (body.ready > 0) {
            ex.h2->append(ex.h2_stream, body.buffer, body.ready);
            ex.request_body_bytes += body.ready;
            ex.request_body_sent = true;
            client_->consume_request_body(body.ready);
        }
        if (body.state == RequestBodyInput::State::Complete) {
            ex.request_done = ex.h2_request_ended = true;
            ex.h2->end_request(ex.h2_stream);
            return;
        }
        if (body.ready == 0) break;
    }
    if (ex.h2->pending(ex.h2_stream) > kHighWatermark) {
        paused_for_upstream_ = true;
        client_->pause_request_body(true);
    } else if (!paused_for_upstream_) {
        client_->pause_request_body(false);
    }
}

void RequestFlow::on_h2_writable() {
    if (!exchange_ || !paused_for_upstream_) return;
    paused_for_upstream_ = false;
    client_->pause_request_body(false);
    forward_h2_request_body();
}

// ---- timers -----------------------------------------------------------------------------------

// `phase` (upstream_response before the head, upstream_idle between body pieces), cut short by
// the gRPC deadline.
void RequestFlow::arm_h2_timer(std::chrono::milliseconds phase) {
    auto& ex = *exchange_;
    if (!h2_timer_) h2_timer_.reset(evtimer_new(worker_.base(), on_h2_timer, this));
    auto timeout = std::chrono::duration_cast<microseconds>(phase);
    if (ex.has_deadline) {
        const auto left =
            std::chrono::duration_cast<microseconds>(ex.deadline - steady_clock::now());
        timeout = std::clamp(left, microseconds(0), timeout);
    }
    timeval tv{static_cast<time_t>(timeout.count() / 1'000'000),
               static_cast<suseconds_t>(timeout.count() % 1'000'000)};
    event_add(h2_timer_.get(), &tv);
}

void RequestFlow::on_h2_timer(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<RequestFlow*>(arg);
    if (self->exchange_ && self->exchange_->h2) self->h2_timeout();
}

void RequestFlow::h2_timeout() {
    auto& ex = *exchange_;
    const bool deadline = ex.has_deadline && steady_clock::now() >= ex.deadline;
    if (!ex.response_started) {
        fail(Failure::UpstreamTimeout, deadline ? "grpc-timeout passed" : "no response in time");
        return;
    }
    if (ex.route->grpc) {
        end_grpc_stream(deadline ? grpc::kDeadlineExceeded : grpc::kUnavailable,
                        deadline ? "Deadline Exceeded" : "upstream idle timeout");
        return;
    }
    fail(Failure::UpstreamAborted, "upstream idle timeout");
}

// ---- the response -----------------------------------------------------------------------------

void RequestFlow::on_h2_head(int status, std::vector<h2::Header>&& headers, bool end_stream) {
    auto& ex = *exchange_;
    ex.h2_response = std::move(headers);
    http::Response& response = worker_.scratch_response();
    response.status = status;
    response.reason = {};
    response.version_minor = 1;
    response.header_count = 0;
    response.content_length = 0;
    response.keep_alive = true;
    response.head_length = 0;
    bool has_length = false;
    for (const h2::Header& field : ex.h2_response) {
        if (response.header_count == http::kMaxHeaders) {
            fail(Failure::UpstreamFailed, "response head with too many fields");
            return;
        }
        response.headers[response.header_count++] = {field.name, field.value};
        if (field.name == "content-length") {
            // nghttp2 has checked it is a number and that the body will match it.
            const char* end = field.value.data() + field.value.size();
            has_length =
                std::from_chars(field.value.data(), end, response.content_length).ptr == end;
        }
    }
    if (end_stream || ex.is_head || status == 204 || status == 304) {
        response.body = http::BodyKind::None;
        // A head that is the whole response (a gRPC trailers-only answer) says "no body" to an
        // HTTP/1.1 client too, which would otherwise read until the connection closes.
        if (end_stream && !has_length && !ex.is_head && status != 204 && status != 304 &&
            response.header_count < http::kMaxHeaders) {
            response.headers[response.header_count++] = {"content-length", "0"};
        }
    } else {
        response.body = has_length ? http::BodyKind::ContentLength : http::BodyKind::Chunked;
    }
    if (ex.cache_stale && (status == 500 || (status >= 502 && status <= 504))) {
        // stale_if_error, as for an HTTP/1.1 upstream (request_flow_upstream.cpp).
        report_attempt(status == 500);
        release_h2_stream(true);
        release_server();
        serve_stale_on_error(status);
        return;
    }
    begin_cache_fill(response);
    ClientResponseInfo info;
    begin_response(response, info, ex.route->grpc);
    client_->send_response_head(encode_head(response), info);
    ex.response_started = true;
    // The head is no proof the response will ever end: from now on only the gap between pieces
    // is bounded (a server-streaming call, like SSE), and the gRPC deadline.
    if (!end_stream) arm_h2_timer(worker_.config().server.timeouts.upstream_idle);
}

// Each piece goes to the client as it arrives; the server may send more once the client took it.
void RequestFlow::on_h2_data(evbuffer* data) {
    auto& ex = *exchange_;
    const std::size_t n = evbuffer_get_length(data);
    deliver_body(data, n);
    if (!flush_client()) return;
    if (client_->response_pending() > kHighWatermark) {
        ex.h2_unconsumed += n;
        if (!paused_for_client_) {
            paused_for_client_ = true;
            client_->response_stalled(true);
        }
    } else {
        ex.h2->consume(ex.h2_stream, n);
    }
    arm_h2_timer(worker_.config().server.timeouts.upstream_idle);
}

void RequestFlow::on_h2_trailers(std::vector<h2::Header>&& trailers) {
    auto& ex = *exchange_;
    ex.h2_has_trailers = true;
    ex.h2_trailers.clear();
    for (h2::Header& field : trailers) {
        ex.h2_trailers.emplace_back(std::move(field.name), std::move(field.value));
    }
}

void RequestFlow::on_h2_end() {
    auto& ex = *exchange_;
    if (h2_timer_) event_del(h2_timer_.get());
    if (ex.h2_has_trailers) {
        end_body_with_trailers(ex.h2_trailers);
    } else {
        end_body();
    }
    if (!flush_client()) return;
    finish();
}

// The stream ended before its response did.
void RequestFlow::on_h2_closed(const H2StreamError& error) {
    auto& ex = *exchange_;
    ex.h2 = nullptr;  // the connection has forgotten the stream
    ex.h2_stream = -1;
    if (h2_timer_) event_del(h2_timer_.get());
    if (!ex.response_started) {
        retry_h2_or_fail(error);
        return;
    }
    if (ex.route->grpc) {
        report_attempt(false);
        end_grpc_stream(
            error.kind == H2StreamError::Kind::Reset ? grpc::kInternal : grpc::kUnavailable,
            error.reason);
        return;
    }
    fail(Failure::UpstreamAborted, error.reason);
}

// Sent again when the server cannot have acted on it: refused streams on the same server (a
// GOAWAY, a full server), failed connects and idempotent requests on the next one; never once
// request body bytes left the client's buffer.
void RequestFlow::retry_h2_or_fail(const H2StreamError& error) {
    auto& ex = *exchange_;
    ex.last_error.assign(error.reason);  // the reason lives in the connection's callback only
    const bool may_resend = !ex.request_body_sent;
    if (error.kind == H2StreamError::Kind::Refused && may_resend && ex.h2_refusals < kMaxRefusals) {
        ++ex.h2_refusals;
        std::string reopen_error;
        if (open_h2_stream(reopen_error)) return;
        ex.last_error = reopen_error;
    }
    const auto& upstream = worker_.config().upstreams[ex.upstream_index];
    spdlog::warn("upstream {} server {}: {}", upstream.name, upstream.servers[ex.server_index].id,
                 ex.last_error);
    report_attempt(false);
    release_server();
    const bool unprocessed =
        error.kind == H2StreamError::Kind::Connect || error.kind == H2StreamError::Kind::Refused;
    if (may_resend && (unprocessed || ex.idempotent) && ex.retries_left-- > 0) {
        connect_upstream();
        return;
    }
    const std::string detail = ex.last_error;
    fail(Failure::UpstreamFailed, detail);
}

void RequestFlow::release_h2_stream(bool cancel) {
    auto& ex = *exchange_;
    H2Upstream* connection = ex.h2;
    const std::int32_t id = ex.h2_stream;
    ex.h2 = nullptr;
    ex.h2_stream = -1;
    if (h2_timer_) event_del(h2_timer_.get());
    connection->release(id, cancel);
}

// ---- gRPC endings -----------------------------------------------------------------------------

// A proxy-made error as gRPC has it: "trailers-only", a 200 head with grpc-status and
// grpc-message and nothing after it (the HTTP/2 client side sends it as one HEADERS frame with
// END_STREAM). `status` is the HTTP status it stands for, kept for the log and metrics.
void RequestFlow::send_grpc_error(int status, std::string_view message, bool keep_alive) {
    auto& ex = *exchange_;
    ex.grpc_status = std::to_string(grpc::code_for_http_status(status));
    ex.grpc_message.clear();
    grpc::append_percent_encoded(ex.grpc_message, http::error_text(status));
    if (!message.empty()) {
        ex.grpc_message += ": ";
        grpc::append_percent_encoded(ex.grpc_message, message);
    }
    http::Response& response = worker_.scratch_response();
    response.status = 200;
    response.reason = {};
    response.version_minor = 1;
    response.body = http::BodyKind::None;
    response.content_length = 0;
    response.keep_alive = true;
    response.head_length = 0;
    response.headers[0] = {"content-type", "application/grpc"};
    response.headers[1] = {"grpc-status", ex.grpc_status};
    response.headers[2] = {"grpc-message", ex.grpc_message};
    // Says "no body" to an HTTP/1.1 client too (a bodiless 200 would otherwise last until the
    // connection closes); HTTP/2 allows it on a HEADERS frame that ends the stream.
    response.headers[3] = {"content-length", "0"};
    response.header_count = 4;
    ClientResponseInfo info;
    info.keep_alive = keep_alive;
    info.request_id = ex.request_id;
    info.extra_lines = ex.access_headers;
    client_->send_response_head(response, info);
    ex.response_started = true;
    client_->end_response();
    if (!flush_client()) return;
    finish();
}

// A response already under way ends with a status of the proxy's (the deadline passed, the
// upstream failed): trailers after what was forwarded, so the client sees why.
void RequestFlow::end_grpc_stream(int code, std::string_view message) {
    auto& ex = *exchange_;
    ex.h2_trailers.clear();
    ex.h2_trailers.emplace_back("grpc-status", std::to_string(code));
    std::string encoded;
    grpc::append_percent_encoded(encoded, message);
    ex.h2_trailers.emplace_back("grpc-message", std::move(encoded));
    if (ex.h2) release_h2_stream(true);
    client_->end_response_with_trailers(ex.h2_trailers);
    if (!flush_client()) return;
    finish();
}

}  // namespace proxyd::worker
