#include "worker/client_connection.hpp"

#include <arpa/inet.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "common/log.hpp"
#include "common/net/listener.hpp"
#include "worker/real_ip.hpp"
#include "worker/request_id.hpp"
#include "worker/router.hpp"
#include "worker/trace_context.hpp"
#include "worker/worker.hpp"

namespace proxyd::worker {
namespace {

constexpr std::size_t kHeadReadSize = 16 * 1024;
constexpr std::size_t kBodyReadSize = 64 * 1024;
// Backpressure: stop reading one side while the other side has this much waiting to be sent.
constexpr std::size_t kHighWatermark = 256 * 1024;
constexpr std::size_t kLowWatermark = 64 * 1024;
constexpr std::size_t kMaxResponseHead = 64 * 1024;
constexpr std::size_t kMaxLingerBytes = 1024 * 1024;
constexpr std::chrono::milliseconds kLingerTime{2000};
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

void append_chunk_header(evbuffer* out, std::size_t n) {
    char buf[24];
    int len = std::snprintf(buf, sizeof buf, "%zx\r\n", n);
    evbuffer_add(out, buf, static_cast<std::size_t>(len));
}

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

// What the client gets for a failure: the status (0 = none, close the connection) and whether
// the connection must close after it.
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

// Chunk framing is parsed from the front of the buffer; usually the first chain holds it all.
http::ChunkedDecoder::Result parse_framing_front(evbuffer* in, http::ChunkedDecoder& decoder) {
    evbuffer_iovec first;
    if (evbuffer_peek(in, -1, nullptr, &first, 1) < 1) return {};
    auto result = decoder.parse_framing(static_cast<const char*>(first.iov_base), first.iov_len);
    std::size_t len = evbuffer_get_length(in);
    if (result.consumed == 0 && !result.error && first.iov_len < len) {
        // The framing straddles chains: make a small front contiguous and retry.
        std::size_t window = std::min<std::size_t>(len, http::ChunkedDecoder::kMaxLineLength + 64);
        auto* p =
            reinterpret_cast<const char*>(evbuffer_pullup(in, static_cast<ev_ssize_t>(window)));
        result = decoder.parse_framing(p, window);
    }
    return result;
}

}  // namespace

ClientConnection::ClientConnection(Worker& worker, UniqueFd fd, const sockaddr_storage& peer,
                                   tls::SslPtr ssl)
    : worker_(worker), awaiting_proxy_header_(worker.config().server.proxy_protocol) {
    stream_.open(worker.base(), std::move(fd), on_read_event, on_write_event, on_timer_event, this);
    if (ssl) {
        tls_ = true;
        if (awaiting_proxy_header_) {
            tls_after_proxy_header_ = std::move(ssl);
        } else {
            stream_.start_tls(std::move(ssl), false);
        }
    }
    set_peer(peer);
}

// The client's address for logs, forwarding headers and keys: the TCP peer, or the source of a
// PROXY protocol header. Other families (a LOCAL header's AF_UNSPEC) leave it unchanged.
void ClientConnection::set_peer(const sockaddr_storage& peer) {
    if (peer.ss_family == AF_INET) {
        auto* v4 = reinterpret_cast<const sockaddr_in*>(&peer);
        ::inet_ntop(AF_INET, &v4->sin_addr, peer_ip_, sizeof peer_ip_);
        peer_port_ = ntohs(v4->sin_port);
    } else if (peer.ss_family == AF_INET6) {
        auto* v6 = reinterpret_cast<const sockaddr_in6*>(&peer);
        ::inet_ntop(AF_INET6, &v6->sin6_addr, peer_ip_, sizeof peer_ip_);
        peer_port_ = ntohs(v6->sin6_port);
    }
}

ClientConnection::~ClientConnection() = default;

void ClientConnection::start() {
    stream_.enable_read(true);
    stream_.arm_timer(worker_.config().server.timeouts.header);
}

void ClientConnection::begin_drain(bool close_idle) {
    close_after_response_ = true;
    if (close_idle && phase_ == Phase::WaitingHead && evbuffer_get_length(stream_.in()) == 0) {
        close();
    }
}

void ClientConnection::close() {
    if (phase_ == Phase::Closed) return;
    if (phase_ == Phase::Tunneling) {
        // However it ends (either side, idle, the drain deadline), a tunnel is logged once.
        worker_.stats().tunnels_active.fetch_sub(1, std::memory_order_relaxed);
        record_exchange();
    }
    phase_ = Phase::Closed;
    queue_timer_.reset();
    proxy_retry_timer_.reset();
    if (exchange_) {
        if (exchange_->rate_ticket != 0) worker_.access().cancel_redis(exchange_->rate_ticket);
        release_server();
        worker_.recycle_exchange(std::move(exchange_));
    }
    stream_.close();
    worker_.retire(this);
}

// ---- events -------------------------------------------------------------------------------

void ClientConnection::on_read_event(evutil_socket_t, short, void* arg) {
    static_cast<ClientConnection*>(arg)->on_readable();
}

void ClientConnection::on_write_event(evutil_socket_t, short, void* arg) {
    static_cast<ClientConnection*>(arg)->on_writable();
}

void ClientConnection::on_timer_event(evutil_socket_t, short, void* arg) {
    static_cast<ClientConnection*>(arg)->on_timer();
}

void ClientConnection::on_readable() {
    if (tls_after_proxy_header_) return read_proxy_header_before_tls();
    if (phase_ == Phase::Tunneling) return on_tunnel_client_readable();
    if (phase_ == Phase::Lingering) {
        auto result = stream_.read(kHeadReadSize);
        std::size_t buffered = evbuffer_get_length(stream_.in());
        evbuffer_drain(stream_.in(), buffered);
        if (result == Stream::ReadResult::Eof || result == Stream::ReadResult::Error ||
            buffered > kMaxLingerBytes) {
            close();
        }
        return;
    }
    bool body = exchange_ && !exchange_->request_done;
    switch (stream_.read(body ? kBodyReadSize : kHeadReadSize)) {
        case Stream::ReadResult::Data:
        case Stream::ReadResult::WouldBlock:
            break;
        case Stream::ReadResult::Eof:
            client_eof_ = true;
            stream_.enable_read(false);
            if (!exchange_) {
                close();
                return;
            }
            if (!exchange_->request_done) {
                fail(Failure::ClientGone);
                return;
            }
            exchange_->keep_alive = false;
            return;
        case Stream::ReadResult::Error:
            if (exchange_) {
                fail(Failure::ClientGone);
            } else {
                close();
            }
            return;
    }
    process_input();
}

void ClientConnection::process_input() {
    if (phase_ == Phase::WaitingHead) {
        read_request_head();
        return;
    }
    if (phase_ != Phase::Exchanging) return;
    auto& ex = *exchange_;
    std::size_t buffered = evbuffer_get_length(stream_.in());
    if (!ex.request_done && ex.upstream && ex.upstream->connected) {
        forward_request_body();
    } else if (buffered > kHighWatermark ||
               (ex.request_done && buffered > worker_.config().server.limits.max_header_size)) {
        // Body waiting for a connect, or pipelined requests piling up: read no further for now.
        stream_.enable_read(false);
    }
}

void ClientConnection::on_writable() {
    if (phase_ == Phase::Tunneling) return pump_tunnel();
    if (!stream_.flush()) {
        if (exchange_) {
            fail(Failure::ClientGone);
        } else {
            close();
        }
        return;
    }
    std::size_t pending = stream_.pending_output();
    if (phase_ == Phase::Lingering) {
        if (pending == 0) start_lingering_close();
        return;
    }
    if (paused_for_client_ && pending < kLowWatermark && exchange_ && exchange_->upstream) {
        paused_for_client_ = false;
        stream_.cancel_timer();
        exchange_->upstream->stream.enable_read(true);
        forward_response_body();
    }
}

void ClientConnection::on_timer() {
    switch (phase_) {
        case Phase::WaitingHead:
            on_head_timer();
            return;
        case Phase::Exchanging:
            if (!exchange_->request_done) {
                fail(Failure::BodyTimeout);
            } else {
                fail(Failure::ClientGone, "client stopped reading");
            }
            return;
        case Phase::Tunneling:
        case Phase::Lingering:
        case Phase::Closed:
            close();
            return;
    }
}

// ---- request phases ---------------------------------------------------------------------------

void ClientConnection::read_request_head() {
    evbuffer* in = stream_.in();
    if (evbuffer_get_length(in) == 0) {
        if (client_eof_) close();
        return;
    }
    const auto& server = worker_.config().server;
    if (!head_timer_armed_) {
        head_started_ = std::chrono::steady_clock::now();
        head_timer_armed_ = true;
        stream_.arm_timer(server.limits.min_request_rate > 0
                              ? std::min(server.timeouts.header, server.timeouts.min_rate_grace)
                              : server.timeouts.header);
    }
    if (!read_proxy_header()) return;
    std::size_t len = evbuffer_get_length(in);
    if (len == 0) return;
    std::size_t window =
        std::min(len, std::max(server.limits.max_header_size, server.limits.max_uri_size) + 1024);
    auto* data =
        reinterpret_cast<const char*>(evbuffer_pullup(in, static_cast<ev_ssize_t>(window)));
    http::Request& request = worker_.scratch_request();
    http::RequestLimits limits{server.limits.max_header_size, server.limits.max_uri_size};
    switch (http::parse_request(data, window, limits, request)) {
        case http::ParseStatus::Incomplete:
            if (request.error_status != 0) {
                fail(Failure::BadRequest, request.error_reason, request.error_status);
            } else if (client_eof_) {
                close();
            }
            return;
        case http::ParseStatus::Error:
            fail(Failure::BadRequest, request.error_reason, request.error_status);
            return;
        case http::ParseStatus::Done:
            begin_request(request);
            return;
    }
}

void ClientConnection::begin_request(const http::Request& request) {
    head_timer_armed_ = false;
    phase_ = Phase::Exchanging;
    exchange_ = worker_.acquire_exchange();
    auto& ex = *exchange_;
    const auto& config = worker_.config();
    ex.started = std::chrono::steady_clock::now();
    ex.method.assign(request.method);
    ex.target.assign(request.target);
    ex.version_minor = request.version_minor;
    ex.is_head = request.method == "HEAD";
    ex.keep_alive = request.keep_alive && !close_after_response_ && !worker_.draining();
    ex.request_body = request.body;
    ex.request_remaining = request.content_length;
    ex.request_done = request.body == http::BodyKind::None;
    ex.bytes_in = request.head_length;
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
        evbuffer_drain(stream_.in(), request.head_length);
        fail(Failure::NoRoute);
        return;
    }
    ex.upstream_index = ex.route->upstream_index;
    if (config.upstreams[ex.upstream_index].servers.empty()) {
        evbuffer_drain(stream_.in(), request.head_length);
        fail(Failure::NoServer);
        return;
    }
    if (!check_access(request)) return;
    prepare_balancing(request);
    prepare_upstream_head(request);
    ex.expect_continue = request.expect_continue;
    evbuffer_drain(stream_.in(), request.head_length);  // `request` is invalid from here on
    stream_.cancel_timer();
    apply_rate_limit();
}

// The request may go on: ask for its body if the client waits for that, and go upstream.
void ClientConnection::continue_request() {
    auto& ex = *exchange_;
    const auto& config = worker_.config();
    if (!ex.request_done) {
        if (ex.expect_continue && ex.version_minor >= 1) {
            evbuffer_add(stream_.out(), kContinue.data(), kContinue.size());
            if (!flush_client()) return;
        }
        stream_.arm_timer(config.server.timeouts.body);
    } else {
        stream_.cancel_timer();
    }
    connect_upstream();
}

// Inputs of the balance phase, taken while the request head is still in place.
void ClientConnection::prepare_balancing(const http::Request& request) {
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

bool ClientConnection::check_request_limits(const http::Request& request) {
    if (request.body == http::BodyKind::ContentLength &&
        request.content_length > worker_.config().server.limits.max_body_size) {
        evbuffer_drain(stream_.in(), request.head_length);
        fail(Failure::BodyTooLarge);
        return false;
    }
    return true;
}

// The client's address as upstreams and rate limits see it: the TCP peer (or the PROXY header's
// source), or behind trusted proxies the right-most untrusted real_ip_header address.
std::string_view ClientConnection::client_address(const http::Request& request) {
    const auto& server = worker_.config().server;
    if (server.real_ip_header.empty()) return peer_ip_;
    auto& values = worker_.scratch_views();
    values.clear();
    for (std::size_t i = 0; i < request.header_count; ++i) {
        if (http::iequals(request.headers[i].name, server.real_ip_header)) {
            values.push_back(request.headers[i].value);
        }
    }
    return select_real_ip(peer_ip_, values, server.trusted_proxies);
}

void ClientConnection::prepare_upstream_head(const http::Request& request) {
    auto& ex = *exchange_;
    UpstreamRequestInfo info;
    info.path = upstream_path(*ex.route, request.path);
    info.query = request.query;
    info.client_ip = peer_ip_;
    info.real_ip = ex.real_ip;
    info.request_id = ex.request_id;
    info.traceparent = ex.traceparent;
    info.proto = tls_ ? "https" : "http";
    if (!worker_.access().claim_headers().empty()) {
        info.removed_headers = &worker_.access().claim_headers();
    }
    info.extra_lines = ex.claim_headers;
    if (wants_websocket(request)) {
        ex.websocket = true;
        info.upgrade = "websocket";
    }
    info.default_host = worker_.config().upstreams[ex.upstream_index].servers.front().address.text;
    if (request.body == http::BodyKind::ContentLength) {
        info.framing = Framing::ContentLength;
        info.content_length = request.content_length;
    } else if (request.body == http::BodyKind::Chunked) {
        info.framing = Framing::Chunked;
    }
    build_upstream_request_head(request, info, ex.upstream_head);
}

void ClientConnection::connect_upstream() {
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
bool ClientConnection::open_upstream(std::string& error) {
    auto& ex = *exchange_;
    ex.upstream = worker_.pool().take_idle(ex.upstream_index, ex.server_index, this);
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
void ClientConnection::wait_for_capacity() {
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
                auto* self = static_cast<ClientConnection*>(arg);
                if (self->exchange_ && !self->exchange_->upstream) self->connect_upstream();
            },
            this));
    }
    timeval tv{0, 20'000};
    event_add(queue_timer_.get(), &tv);
}

void ClientConnection::report_attempt(bool success) {
    auto& ex = *exchange_;
    if (!ex.server_active || ex.reported) return;
    auto latency = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - ex.attempt_started);
    worker_.selector().report(ex.upstream_index, ex.server_index, success, ex.trial, latency);
    ex.reported = true;
}

void ClientConnection::release_server() {
    auto& ex = *exchange_;
    if (!ex.server_active) return;
    worker_.selector().release(ex.upstream_index, ex.server_index, ex.trial && !ex.reported);
    ex.server_active = false;
    ex.reported = false;
    ex.trial = false;
}

void ClientConnection::send_request_head() {
    auto& ex = *exchange_;
    auto& upstream = ex.upstream->stream;
    evbuffer_add(upstream.out(), ex.upstream_head.data(), ex.upstream_head.size());
    upstream.enable_read(true);
    upstream.arm_timer(worker_.config().server.timeouts.upstream_response);
    forward_request_body();
}

void ClientConnection::forward_request_body() {
    auto& ex = *exchange_;
    evbuffer* in = stream_.in();
    Stream& upstream = ex.upstream->stream;
    if (!ex.request_done) {
        std::uint64_t before = ex.request_body_bytes;
        if (ex.request_body == http::BodyKind::ContentLength) {
            auto n = std::min<std::uint64_t>(ex.request_remaining, evbuffer_get_length(in));
            if (n > 0) {
                evbuffer_remove_buffer(in, upstream.out(), static_cast<std::size_t>(n));
                ex.request_remaining -= n;
                ex.request_body_bytes += n;
                ex.bytes_in += n;
            }
            ex.request_done = ex.request_remaining == 0;
        } else if (!forward_chunked_request_body(in, upstream.out())) {
            return;
        }
        if (ex.request_body_bytes != before) ex.request_body_sent = true;
        if (ex.request_done) {
            stream_.cancel_timer();
        } else if (ex.request_body_bytes != before) {
            stream_.arm_timer(worker_.config().server.timeouts.body);
        }
    }
    if (!upstream.flush()) {
        retry_or_fail(Failure::UpstreamFailed, "upstream write failed");
        return;
    }
    if (!ex.request_done && upstream.pending_output() > kHighWatermark) {
        paused_for_upstream_ = true;
        stream_.enable_read(false);
    } else if (!ex.request_done && !paused_for_upstream_ && !client_eof_) {
        stream_.enable_read(true);
    }
}

bool ClientConnection::forward_chunked_request_body(evbuffer* in, evbuffer* out) {
    auto& ex = *exchange_;
    auto& decoder = ex.request_chunks;
    const auto max_body = worker_.config().server.limits.max_body_size;
    while (evbuffer_get_length(in) > 0) {
        if (decoder.in_data()) {
            auto n = static_cast<std::size_t>(
                std::min<std::uint64_t>(decoder.data_remaining(), evbuffer_get_length(in)));
            if (ex.request_body_bytes + n > max_body) {
                fail(Failure::BodyTooLarge);
                return false;
            }
            append_chunk_header(out, n);
            evbuffer_remove_buffer(in, out, n);
            evbuffer_add(out, "\r\n", 2);
            decoder.consume_data(n);
            ex.request_body_bytes += n;
            ex.bytes_in += n;
            continue;
        }
        auto result = parse_framing_front(in, decoder);
        if (result.error) {
            fail(Failure::BadRequest, "invalid chunked body");
            return false;
        }
        evbuffer_drain(in, result.consumed);
        ex.bytes_in += result.consumed;
        if (decoder.done()) {
            evbuffer_add(out, "0\r\n\r\n", 5);
            ex.request_done = true;
            return true;
        }
        if (decoder.in_data() && decoder.data_remaining() + ex.request_body_bytes > max_body) {
            fail(Failure::BodyTooLarge);
            return false;
        }
        if (result.consumed == 0) break;  // need more input
    }
    return true;
}

// ---- upstream events --------------------------------------------------------------------------

void ClientConnection::on_upstream_writable() {
    if (phase_ == Phase::Tunneling) return pump_tunnel();
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
        if (!client_eof_) stream_.enable_read(true);
        forward_request_body();
    }
}

void ClientConnection::on_upstream_timeout() {
    auto& ex = *exchange_;
    if (phase_ == Phase::Tunneling) {
        close();  // tunnel_idle passed without a byte either way
    } else if (!ex.upstream->connected) {
        retry_or_fail(Failure::UpstreamFailed, "connect timed out");
    } else if (!ex.response_head_done) {
        fail(Failure::UpstreamTimeout);
    } else {
        fail(Failure::UpstreamAborted, "upstream idle timeout");
    }
}

void ClientConnection::on_upstream_readable() {
    if (phase_ == Phase::Tunneling) return on_tunnel_upstream_readable();
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
        if (ex.client_framing == Framing::Chunked) {
            evbuffer_add(stream_.out(), "0\r\n\r\n", 5);
            ex.bytes_out += 5;
        }
        ex.upstream_reusable = false;
        if (flush_client()) finish_exchange();
    } else {
        fail(Failure::UpstreamAborted, "upstream closed mid-response");
    }
}

void ClientConnection::retry_or_fail(Failure failure, std::string_view detail) {
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

void ClientConnection::read_response_head() {
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

void ClientConnection::send_response_head(const http::Response& response) {
    auto& ex = *exchange_;
    auto& upstream = ex.upstream->stream;
    worker_.metrics().upstream_response(ex.upstream_index, ex.server_index, response.status,
                                        std::chrono::duration_cast<std::chrono::microseconds>(
                                            std::chrono::steady_clock::now() - ex.attempt_started));
    report_attempt(response.status < 500);
    ex.response_head_done = true;
    ex.status = response.status;
    ex.response_body = response.body;
    ex.response_remaining = response.content_length;
    ex.upstream_reusable = response.keep_alive && ex.request_done;
    if (!ex.request_done) {
        // The upstream answered before the body ended: send no more of it, and close both ends
        // afterwards since the rest of the body can't be told apart from a next request.
        ex.keep_alive = false;
        ex.request_done = true;
        stream_.enable_read(false);
        stream_.cancel_timer();
    }
    bool keep_alive =
        ex.keep_alive && !worker_.draining() && !client_eof_ && !close_after_response_;
    const bool switching = response.status == 101;
    ex.client_framing =
        switching ? Framing::None : choose_client_framing(response, ex.version_minor, keep_alive);
    ex.keep_alive = keep_alive && !switching;

    ClientResponseInfo info;
    info.client_version_minor = ex.version_minor;
    info.keep_alive = keep_alive;
    info.framing = ex.client_framing;
    info.content_length = response.content_length;
    info.request_id = ex.request_id;
    info.extra_headers = &worker_.response_headers(tls_);
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
    if (switching) info.upgrade = "websocket";
    std::string& head = worker_.scratch();
    head.clear();
    build_client_response_head(response, info, head);
    evbuffer_add(stream_.out(), head.data(), head.size());
    ex.bytes_out += head.size();
    ex.response_started = true;
    evbuffer_drain(upstream.in(), response.head_length);  // `response` is invalid from here on
    if (switching) return start_tunnel();
    upstream.arm_timer(worker_.config().server.timeouts.upstream_idle);
    forward_response_body();
}

void ClientConnection::forward_response_body() {
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
            move_response_data(in, n);
            ex.response_remaining -= n;
            complete = ex.response_remaining == 0;
            break;
        }
        case http::BodyKind::Chunked:
            if (!forward_chunked_response_body(in)) return;
            complete = ex.response_chunks.done();
            break;
        case http::BodyKind::UntilClose:
            move_response_data(in, evbuffer_get_length(in));
            break;
    }
    if (complete && evbuffer_get_length(in) > 0) ex.upstream_reusable = false;  // junk after body
    if (!flush_client()) return;
    if (complete) {
        finish_exchange();
        return;
    }
    ex.upstream->stream.arm_timer(worker_.config().server.timeouts.upstream_idle);
    if (stream_.pending_output() > kHighWatermark && !paused_for_client_) {
        paused_for_client_ = true;
        ex.upstream->stream.enable_read(false);
        stream_.arm_timer(worker_.config().server.timeouts.body);
    }
}

bool ClientConnection::forward_chunked_response_body(evbuffer* in) {
    auto& ex = *exchange_;
    auto& decoder = ex.response_chunks;
    while (evbuffer_get_length(in) > 0 && !decoder.done()) {
        if (decoder.in_data()) {
            auto n = static_cast<std::size_t>(
                std::min<std::uint64_t>(decoder.data_remaining(), evbuffer_get_length(in)));
            move_response_data(in, n);
            decoder.consume_data(n);
            continue;
        }
        auto result = parse_framing_front(in, decoder);
        if (result.error) {
            fail(Failure::UpstreamAborted, "invalid chunked response");
            return false;
        }
        evbuffer_drain(in, result.consumed);
        if (decoder.done() && ex.client_framing == Framing::Chunked) {
            evbuffer_add(stream_.out(), "0\r\n\r\n", 5);
            ex.bytes_out += 5;
        }
        if (result.consumed == 0) break;
    }
    return true;
}

void ClientConnection::move_response_data(evbuffer* in, std::size_t n) {
    if (n == 0) return;
    auto& ex = *exchange_;
    evbuffer* out = stream_.out();
    if (ex.client_framing == Framing::Chunked) {
        append_chunk_header(out, n);
        evbuffer_remove_buffer(in, out, n);
        evbuffer_add(out, "\r\n", 2);
    } else {
        evbuffer_remove_buffer(in, out, n);
    }
    ex.bytes_out += n;
}

void ClientConnection::finish_exchange() {
    auto& ex = *exchange_;
    if (queue_timer_) event_del(queue_timer_.get());  // it belonged to this request
    record_exchange();
    release_upstream();
    bool keep_alive = ex.keep_alive && !close_after_response_ && !worker_.draining();
    worker_.recycle_exchange(std::move(exchange_));
    paused_for_client_ = paused_for_upstream_ = false;
    if (!keep_alive) {
        end_response_close();
        return;
    }
    wait_for_next_request();
}

void ClientConnection::release_upstream() {
    auto& ex = *exchange_;
    release_server();
    if (!ex.upstream) return;
    if (ex.upstream_reusable && ex.request_done) {
        worker_.pool().release(std::move(ex.upstream));
    }
    ex.upstream.reset();
}

void ClientConnection::wait_for_next_request() {
    phase_ = Phase::WaitingHead;
    head_timer_armed_ = false;
    stream_.arm_timer(worker_.config().server.timeouts.keepalive);
    if (evbuffer_get_length(stream_.in()) > 0) {
        stream_.activate_read();  // pipelined requests: handle them on the next loop turn
    } else if (client_eof_) {
        close();
        return;
    }
    if (!client_eof_) stream_.enable_read(true);
}

// ---- endings ----------------------------------------------------------------------------------

void ClientConnection::fail(Failure failure, std::string_view detail, int parser_status) {
    if (!exchange_) {
        exchange_ = worker_.acquire_exchange();
        exchange_->started = std::chrono::steady_clock::now();
        exchange_->request_id.assign(worker_.request_ids().next());
        exchange_->bytes_in = evbuffer_get_length(stream_.in());
        phase_ = Phase::Exchanging;
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
    if (status == 0 || ex.response_started) {
        if (!ex.response_started) ex.status = failure == Failure::ClientGone ? 499 : 502;
        record_exchange();
        close();
        return;
    }
    ex.status = status;
    // Client errors say why; upstream errors keep internal details in the error log only.
    send_error(status, status < 500 ? detail : std::string_view{}, ex.keep_alive && !must_close);
}

void ClientConnection::send_error(int status, std::string_view detail, bool keep_alive) {
    auto& ex = *exchange_;
    ClientResponseInfo info;
    info.client_version_minor = ex.version_minor;
    info.keep_alive = keep_alive && !worker_.draining() && !close_after_response_;
    info.framing = Framing::ContentLength;
    info.request_id = ex.request_id;
    info.extra_headers = &worker_.response_headers(tls_);
    info.extra_lines = ex.access_headers;
    std::string& out = worker_.scratch();
    out.clear();
    build_error_response(status, detail, info, out);
    evbuffer_add(stream_.out(), out.data(), out.size());
    ex.bytes_out += out.size();
    ex.response_started = true;
    ex.keep_alive = info.keep_alive;
    if (!flush_client()) return;
    finish_exchange();
}

// A response the proxy answers itself without a body (a CORS preflight's 204).
void ClientConnection::send_bodiless(int status) {
    auto& ex = *exchange_;
    ex.status = status;
    ClientResponseInfo info;
    info.client_version_minor = ex.version_minor;
    info.keep_alive =
        ex.keep_alive && ex.request_done && !worker_.draining() && !close_after_response_;
    info.request_id = ex.request_id;
    info.extra_headers = &worker_.response_headers(tls_);
    info.extra_lines = ex.access_headers;
    std::string& out = worker_.scratch();
    out.clear();
    build_bodiless_response(status, info, out);
    evbuffer_add(stream_.out(), out.data(), out.size());
    ex.bytes_out += out.size();
    ex.response_started = true;
    ex.keep_alive = info.keep_alive;
    if (!flush_client()) return;
    finish_exchange();
}

void ClientConnection::end_response_close() {
    phase_ = Phase::Lingering;
    stream_.enable_read(false);
    if (!flush_client()) return;
    if (stream_.pending_output() == 0) start_lingering_close();
    // else on_writable() continues once the output is out.
}

void ClientConnection::start_lingering_close() {
    // Closing with unread input would send a RST that can destroy the response in flight; so
    // shut down our side and read until the client closes, for a bounded time.
    if (evbuffer_get_length(stream_.in()) == 0 && client_eof_) {
        close();
        return;
    }
    stream_.shutdown_write();
    evbuffer_drain(stream_.in(), evbuffer_get_length(stream_.in()));
    if (client_eof_) {
        close();
        return;
    }
    stream_.enable_read(true);
    stream_.arm_timer(kLingerTime);
}

bool ClientConnection::flush_client() {
    if (stream_.flush()) return true;
    if (exchange_) {
        auto& ex = *exchange_;
        ex.upstream.reset();
        if (!ex.status) ex.status = 499;
        record_exchange();
    }
    close();
    return false;
}

// Once per request, when its outcome is known: the metrics, then the access log line.
void ClientConnection::record_exchange() {
    auto& ex = *exchange_;
    const auto& routes = worker_.config().routes;
    const std::size_t route_index =
        ex.route ? static_cast<std::size_t>(ex.route - routes.data()) : 0;
    worker_.metrics().request(ex.route, route_index, ex.status,
                              std::chrono::duration_cast<std::chrono::microseconds>(
                                  std::chrono::steady_clock::now() - ex.started));
    write_access_log();
}

void ClientConnection::write_access_log() {
    spdlog::logger* logger = log::access_logger();
    if (!logger || !exchange_) return;
    auto& ex = *exchange_;
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
        line += peer_ip_;
        line += ':';
        line += std::to_string(peer_port_);
        line += R"(","method":")";
        log::append_json_escaped(line, ex.method);
        line += R"(","path":")";
        log::append_json_escaped(line, ex.target);
        line += R"(","status":)";
        line += std::to_string(ex.status);
        line += R"(,"bytes_in":)";
        line += std::to_string(ex.bytes_in);
        line += R"(,"bytes_out":)";
        line += std::to_string(ex.bytes_out);
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
                      static_cast<unsigned long long>(ex.bytes_in),
                      static_cast<unsigned long long>(ex.bytes_out), duration_ms);
        line += time_text;
        line += ' ';
        line += peer_ip_;
        line += ':';
        line += std::to_string(peer_port_);
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
