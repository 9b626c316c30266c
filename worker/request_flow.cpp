// The request flow's beginning and endings: taking a parsed head (request id, trace context,
// limits, route, balancing inputs, the upstream head), going on once access allowed it, and every
// way a request ends — finished, failed (the one mapping from a failure to a status), the client
// gone — with its metrics and access-log line, written once per request.
// The access phases are in request_flow_access.cpp, everything upstream in
// request_flow_upstream.cpp.
#include "worker/request_flow.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <ctime>

#include "common/log.hpp"
#include "worker/real_ip.hpp"
#include "worker/request_id.hpp"
#include "worker/router.hpp"
#include "worker/trace_context.hpp"
#include "worker/worker.hpp"

namespace proxyd::worker {
namespace {

// The value of cookie `name` in the request's Cookie headers ("a=1; b=2").
std::string_view find_cookie(const http::Request& request, std::string_view name) {
    for (std::size_t i = 0; i < request.header_count; ++i) {
        if (!http::iequals(request.headers[i].name, "cookie")) continue;
        std::string_view rest = request.headers[i].value;
        while (!rest.empty()) {
            auto end = rest.find(';');
            std::string_view pair = rest.substr(0, end);
            rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
            while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
            auto eq = pair.find('=');
            if (eq != std::string_view::npos && pair.substr(0, eq) == name) {
                return pair.substr(eq + 1);
            }
        }
    }
    return {};
}

// What the client gets for a failure: the status (0 = none, end the request silently) and whether
// the request's input is lost with it (H1: the connection must close after it).
struct FailureResponse {
    int status;
    bool close;
};

constexpr FailureResponse response_to(Failure failure) {
    switch (failure) {
        case Failure::BadRequest:
            return {400, true};
        case Failure::NoRoute:
            return {404, false};
        case Failure::Unauthorized:
            return {401, false};
        case Failure::Forbidden:
            return {403, false};
        case Failure::RateLimited:
            return {429, false};
        case Failure::LimitUnavailable:
            return {503, false};
        case Failure::HeadTimeout:
        case Failure::BodyTimeout:
            return {408, true};
        case Failure::BodyTooLarge:
            return {413, true};
        case Failure::NoServer:
            return {503, false};
        case Failure::UpstreamFailed:
            return {502, false};
        case Failure::UpstreamTimeout:
            return {504, false};
        case Failure::UpstreamAborted:
        case Failure::ClientGone:
            return {0, true};
    }
    return {0, true};
}

}  // namespace

RequestFlow::RequestFlow(Worker& worker) : worker_(worker) {}

RequestFlow::~RequestFlow() = default;

// ---- the head ---------------------------------------------------------------------------------

void RequestFlow::start(const http::Request& request) {
    exchange_ = worker_.acquire_exchange();
    auto& ex = *exchange_;
    const auto& config = worker_.config();
    ex.started = std::chrono::steady_clock::now();
    ex.method.assign(request.method);
    ex.target.assign(request.target);
    ex.is_head = request.method == "HEAD";
    ex.request_body = request.body;
    ex.request_done = request.body == http::BodyKind::None;
    int traceparents = 0;
    for (std::size_t i = 0; i < request.header_count; ++i) {
        const auto& h = request.headers[i];
        if (ex.request_id.empty() && http::iequals(h.name, "x-request-id") &&
            is_valid_request_id(h.value)) {
            ex.request_id.assign(h.value);
        } else if (http::iequals(h.name, "traceparent") && ++traceparents == 1 &&
                   is_valid_traceparent(h.value)) {
            ex.traceparent.assign(h.value);
        }
    }
    if (ex.request_id.empty()) ex.request_id.assign(worker_.request_ids().next());
    // Two traceparent headers are as invalid as a malformed one: start a new trace.
    if (traceparents != 1 || ex.traceparent.empty()) {
        make_traceparent(worker_.request_ids(), ex.traceparent);
    }
    worker_.stats().requests_total.fetch_add(1, std::memory_order_relaxed);
    ex.real_ip.assign(client_address(request));

    if (!check_request_limits(request)) return;
    ex.route = match_route(config.routes, request.host, request.method, request.path);
    if (!ex.route) {
        fail(Failure::NoRoute);
        return;
    }
    ex.upstream_index = ex.route->upstream_index;
    if (config.upstreams[ex.upstream_index].servers.empty()) {
        fail(Failure::NoServer);
        return;
    }
    if (!check_access(request)) return;
    prepare_balancing(request);
    prepare_upstream_head(request);
    prepare_cache(request);
    prepare_encoding(request);
    client_->release_request_head();  // `request` is invalid from here on
    apply_rate_limit();
}

bool RequestFlow::check_request_limits(const http::Request& request) {
    if (request.body == http::BodyKind::ContentLength &&
        request.content_length > worker_.config().server.limits.max_body_size) {
        fail(Failure::BodyTooLarge);
        return false;
    }
    return true;
}

// The client's address as upstreams and rate limits see it: the TCP peer (or the PROXY header's
// source), or behind trusted proxies the right-most untrusted real_ip_header address.
std::string_view RequestFlow::client_address(const http::Request& request) {
    const auto& server = worker_.config().server;
    if (server.real_ip_header.empty()) return client_->peer_ip();
    auto& values = worker_.scratch_views();
    values.clear();
    for (std::size_t i = 0; i < request.header_count; ++i) {
        if (http::iequals(request.headers[i].name, server.real_ip_header)) {
            values.push_back(request.headers[i].value);
        }
    }
    return select_real_ip(client_->peer_ip(), values, server.trusted_proxies);
}

// Inputs of the balance phase, taken while the request head is still in place.
void RequestFlow::prepare_balancing(const http::Request& request) {
    auto& ex = *exchange_;
    const auto& upstream = worker_.config().upstreams[ex.upstream_index];
    const auto& route = *ex.route;
    ex.algorithm = upstream.balance;
    if (route.has_websocket_balance &&
        http::iequals(http::find_header(request, "upgrade"), "websocket")) {
        ex.algorithm = route.websocket_balance;
    } else if (route.has_sse_balance &&
               http::find_header(request, "accept").find("text/event-stream") !=
                   std::string_view::npos) {
        ex.algorithm = route.sse_balance;
    }
    std::string_view key = ex.real_ip;
    switch (upstream.hash_key.kind) {
        case config::HashKey::Kind::Ip:
            break;
        case config::HashKey::Kind::Path:
            key = request.path;
            break;
        case config::HashKey::Kind::Header:
            key = http::find_header(request, upstream.hash_key.name);
            break;
        case config::HashKey::Kind::Cookie:
            key = find_cookie(request, upstream.hash_key.name);
            break;
    }
    ex.key_hash = hash_bytes(key);
    if (!upstream.sticky_cookie.empty()) {
        std::string_view pinned = find_cookie(request, upstream.sticky_cookie);
        ex.sticky_hash = 0;
        for (char c : pinned.substr(0, 16)) {
            int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
            if (digit < 0) {
                ex.sticky_hash = 0;
                break;
            }
            ex.sticky_hash = ex.sticky_hash << 4 | static_cast<std::uint64_t>(digit);
        }
    }
    static constexpr std::string_view kIdempotent[] = {"GET", "HEAD",   "OPTIONS",
                                                       "PUT", "DELETE", "TRACE"};
    ex.idempotent = std::find(std::begin(kIdempotent), std::end(kIdempotent), request.method) !=
                    std::end(kIdempotent);
    ex.retries_left = upstream.retry.attempts;
    ex.tried.reset(upstream.servers.size());
}

void RequestFlow::prepare_upstream_head(const http::Request& request) {
    auto& ex = *exchange_;
    UpstreamRequestInfo info;
    info.path = upstream_path(*ex.route, request.path);
    info.query = request.query;
    info.client_ip = client_->peer_ip();
    info.real_ip = ex.real_ip;
    info.request_id = ex.request_id;
    info.traceparent = ex.traceparent;
    info.proto = client_->is_tls() ? "https" : "http";
    if (!worker_.access().claim_headers().empty()) {
        info.removed_headers = &worker_.access().claim_headers();
    }
    info.extra_lines = ex.claim_headers;
    const auto& upstream = worker_.config().upstreams[ex.upstream_index];
    info.default_host = upstream.servers.front().address.text;
    if (request.body == http::BodyKind::ContentLength) {
        info.framing = Framing::ContentLength;
        info.content_length = request.content_length;
    } else if (request.body == http::BodyKind::Chunked) {
        info.framing = Framing::Chunked;
    }
    if (upstream.protocol != config::UpstreamProtocol::Http1) {
        prepare_h2_request(request, info);
        return;
    }
    if (wants_websocket(request)) {
        ex.websocket = true;
        info.upgrade = "websocket";
    }
    build_upstream_request_head(request, info, ex.upstream_head);
}

// The request may go on (access and rate limits passed): answered from the cache, or upstream.
void RequestFlow::continue_request() {
    if (exchange_->cache_on && answer_from_cache()) return;
    go_upstream();
}

// Ask for the request's body, and go upstream.
void RequestFlow::go_upstream() {
    if (!client_->accept_request_body()) {
        end_client_gone();
        return;
    }
    connect_upstream();
}

// ---- endings ----------------------------------------------------------------------------------

// The response is complete.
void RequestFlow::finish() {
    record_exchange();
    release_upstream();
    recycle();
    client_->flow_finished();
}

void RequestFlow::fail(Failure failure, std::string_view detail, int parser_status) {
    if (!exchange_) {
        // No valid head (a parse error, a head timeout): a bare request, to answer and log.
        exchange_ = worker_.acquire_exchange();
        exchange_->started = std::chrono::steady_clock::now();
        exchange_->request_id.assign(worker_.request_ids().next());
    }
    auto& ex = *exchange_;
    if (ex.rate_ticket != 0) {
        worker_.access().cancel_redis(ex.rate_ticket);
        ex.rate_ticket = 0;
    }
    const FailureResponse response = response_to(failure);
    const int status =
        failure == Failure::BadRequest && parser_status ? parser_status : response.status;
    // An unread body can't be skipped reliably.
    const bool must_close = response.close || !ex.request_done;
    if (status >= 500 || failure == Failure::UpstreamAborted) {
        const char* upstream_name =
            ex.route ? worker_.config().upstreams[ex.upstream_index].name.c_str() : "-";
        spdlog::warn("request {} to upstream {}: {} ({})", ex.request_id, upstream_name,
                     status ? status : 0, detail.empty() ? "aborted" : detail);
    }
    if (failure == Failure::UpstreamAborted) report_attempt(false);
    release_server();
    ex.upstream.reset();
    if (ex.h2) release_h2_stream(true);
    if ((failure == Failure::UpstreamFailed || failure == Failure::UpstreamTimeout ||
         failure == Failure::NoServer) &&
        serve_stale_on_error(0)) {
        return;
    }
    end_cache_fill();
    if (status == 0 || ex.response_started) {
        if (!ex.response_started) ex.status = failure == Failure::ClientGone ? 499 : 502;
        record_exchange();
        client_->abort();
        return;
    }
    ex.status = status;
    append_cache_lines(0);
    if (ex.route && ex.route->grpc) {
        // gRPC clients read grpc-status, not the HTTP status. The log keeps the HTTP one.
        send_grpc_error(status, status < 500 ? detail : std::string_view{}, !must_close);
        return;
    }
    // Client errors say why; upstream errors keep internal details in the error log only.
    send_error(status, status < 500 ? detail : std::string_view{}, !must_close);
}

// `keep_alive`: false when the request's input is lost with this answer.
void RequestFlow::send_error(int status, std::string_view detail, bool keep_alive) {
    auto& ex = *exchange_;
    ClientResponseInfo info;
    info.keep_alive = keep_alive;
    info.request_id = ex.request_id;
    info.extra_lines = ex.access_headers;
    client_->send_error(status, detail, info);
    ex.response_started = true;
    if (!flush_client()) return;
    finish();
}

// A response the proxy answers itself without a body (a CORS preflight's 204).
void RequestFlow::send_bodiless(int status) {
    auto& ex = *exchange_;
    ex.status = status;
    ClientResponseInfo info;
    info.keep_alive = ex.request_done;
    info.request_id = ex.request_id;
    info.extra_lines = ex.access_headers;
    client_->send_bodiless(status, info);
    ex.response_started = true;
    if (!flush_client()) return;
    finish();
}

bool RequestFlow::flush_client() {
    if (client_->flush_response()) return true;
    end_client_gone();
    return false;
}

// A write to the client failed: the request ends here, logged as 499 unless a status was set.
void RequestFlow::end_client_gone() {
    auto& ex = *exchange_;
    ex.upstream.reset();
    if (!ex.status) ex.status = 499;
    record_exchange();
    client_->abort();
}

void RequestFlow::end_tunnel() {
    if (!exchange_) return;
    record_exchange();
    abandon();
}

void RequestFlow::abandon() {
    if (!exchange_) return;
    if (exchange_->rate_ticket != 0) worker_.access().cancel_redis(exchange_->rate_ticket);
    release_server();
    recycle();
}

// The request's state goes back to the worker's free list; the flow is idle.
void RequestFlow::recycle() {
    end_cache_fill();
    if (cache_timer_) event_del(cache_timer_.get());
    if (queue_timer_) event_del(queue_timer_.get());  // it belonged to this request
    if (exchange_->h2) release_h2_stream(true);       // an exchange that did not finish
    if (h2_timer_) event_del(h2_timer_.get());
    paused_for_client_ = paused_for_upstream_ = false;
    worker_.keep_encoder(exchange_->compressor);  // what it does not keep, reset() frees
    worker_.recycle_exchange(std::move(exchange_));
}

// Once per request, when its outcome is known: the metrics, then the access log line.
void RequestFlow::record_exchange() {
    auto& ex = *exchange_;
    const auto& routes = worker_.config().routes;
    const std::size_t route_index =
        ex.route ? static_cast<std::size_t>(ex.route - routes.data()) : 0;
    worker_.metrics().request(ex.route, route_index, ex.status,
                              std::chrono::duration_cast<std::chrono::microseconds>(
                                  std::chrono::steady_clock::now() - ex.started));
    write_access_log();
}

void RequestFlow::write_access_log() {
    spdlog::logger* logger = log::access_logger();
    if (!logger || !exchange_) return;
    auto& ex = *exchange_;
    const WireBytes bytes = client_->wire_bytes();
    auto elapsed = std::chrono::steady_clock::now() - ex.started;
    double duration_ms = std::chrono::duration<double, std::milli>(elapsed).count();
    std::time_t now = std::time(nullptr);
    std::tm tm;
    ::gmtime_r(&now, &tm);
    char time_text[32];
    std::strftime(time_text, sizeof time_text, "%Y-%m-%dT%H:%M:%SZ", &tm);
    std::string_view upstream_id = "-";
    if (ex.route && ex.response_head_done) {
        upstream_id = worker_.config().upstreams[ex.upstream_index].servers[ex.server_index].id;
    }
    std::string& line = worker_.scratch();
    line.clear();
    if (worker_.config().log.format == config::LogFormat::Json) {
        line += R"({"time":")";
        line += time_text;
        line += R"(","client":")";
        line += client_->peer_ip();
        line += ':';
        line += std::to_string(client_->peer_port());
        line += R"(","method":")";
        log::append_json_escaped(line, ex.method);
        line += R"(","path":")";
        log::append_json_escaped(line, ex.target);
        line += R"(","status":)";
        line += std::to_string(ex.status);
        line += R"(,"bytes_in":)";
        line += std::to_string(bytes.in);
        line += R"(,"bytes_out":)";
        line += std::to_string(bytes.out);
        char duration[32];
        std::snprintf(duration, sizeof duration, "%.3f", duration_ms);
        line += R"(,"duration_ms":)";
        line += duration;
        line += R"(,"upstream":")";
        log::append_json_escaped(line, upstream_id);
        line += R"(","request_id":")";
        line += ex.request_id;
        line += R"(","traceparent":")";
        line += ex.traceparent;
        line += "\"}";
    } else {
        char fixed[160];
        std::snprintf(fixed, sizeof fixed, " %d %llu %llu %.3fms ", ex.status,
                      static_cast<unsigned long long>(bytes.in),
                      static_cast<unsigned long long>(bytes.out), duration_ms);
        line += time_text;
        line += ' ';
        line += client_->peer_ip();
        line += ':';
        line += std::to_string(client_->peer_port());
        line += " \"";
        line += ex.method;
        line += ' ';
        line += ex.target;
        line += '"';
        line += fixed;
        line += upstream_id;
        line += ' ';
        line += ex.request_id;
        line += ' ';
        line += ex.traceparent.empty() ? std::string_view("-") : std::string_view(ex.traceparent);
    }
    logger->info(line);
}

}  // namespace proxyd::worker
