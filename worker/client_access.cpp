// The phases between reading a head and balancing it that decide whether the request may go on at
// all: the PROXY protocol header, slow-client rules, CORS preflights, JWT authentication and rate
// limits. Each either lets the request continue or ends it through fail() with its status.
#include <arpa/inet.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <cerrno>
#include <ctime>

#include "common/net/proxy_protocol.hpp"
#include "worker/access_policy.hpp"
#include "worker/client_connection.hpp"
#include "worker/cors.hpp"
#include "worker/worker.hpp"

namespace proxyd::worker {

namespace {

std::chrono::milliseconds elapsed_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 start);
}

}  // namespace

// ---- before the head: PROXY protocol ----------------------------------------------------------

// True once the header is consumed (or none is expected); false to wait for more bytes, or when
// the connection was closed for sending something else.
bool ClientConnection::read_proxy_header() {
    if (!awaiting_proxy_header_) return true;
    evbuffer* in = stream_.in();
    const std::size_t len = evbuffer_get_length(in);
    const std::size_t window = std::min(len, net::kProxyV2MaxPayload + 16);
    const auto* data =
        reinterpret_cast<const char*>(evbuffer_pullup(in, static_cast<ev_ssize_t>(window)));
    net::ProxyHeader header;
    switch (net::parse_proxy_header(data, window, header)) {
        case net::ProxyHeaderStatus::Incomplete:
            if (client_eof_) close();
            return false;
        case net::ProxyHeaderStatus::Error:
            // Nothing we could answer would reach a client: the balancer in front speaks PROXY.
            spdlog::debug("connection from {}: no valid PROXY protocol header ({})", peer_ip_,
                          header.error);
            close();
            return false;
        case net::ProxyHeaderStatus::Done:
            break;
    }
    if (!header.local) set_peer(header.source);
    evbuffer_drain(in, header.length);
    awaiting_proxy_header_ = false;
    return true;
}

// On a TLS listener the PROXY header precedes the ClientHello, and OpenSSL must see the socket
// from the first byte after it: so the header is peeked, and exactly its length consumed.
void ClientConnection::read_proxy_header_before_tls() {
    char data[net::kProxyV2MaxPayload + 16];
    ssize_t n = ::recv(stream_.fd(), data, sizeof data, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) return close();
    net::ProxyHeader header;
    switch (net::parse_proxy_header(data, static_cast<std::size_t>(n), header)) {
        case net::ProxyHeaderStatus::Incomplete:
            if (static_cast<std::size_t>(n) == sizeof data) return close();
            // The rest is still on its way; the socket stays readable meanwhile, so look again
            // shortly instead of spinning on it (the head timer bounds the wait).
            stream_.enable_read(false);
            if (!proxy_retry_timer_) {
                proxy_retry_timer_.reset(evtimer_new(
                    worker_.base(),
                    [](evutil_socket_t, short, void* arg) {
                        auto* self = static_cast<ClientConnection*>(arg);
                        self->stream_.enable_read(true);
                    },
                    this));
            }
            {
                timeval retry{0, 10'000};
                event_add(proxy_retry_timer_.get(), &retry);
            }
            return;
        case net::ProxyHeaderStatus::Error:
            spdlog::debug("connection from {}: no valid PROXY protocol header ({})", peer_ip_,
                          header.error);
            return close();
        case net::ProxyHeaderStatus::Done:
            break;
    }
    if (::recv(stream_.fd(), data, header.length, 0) != static_cast<ssize_t>(header.length)) {
        return close();
    }
    if (!header.local) set_peer(header.source);
    awaiting_proxy_header_ = false;
    proxy_retry_timer_.reset();
    stream_.start_tls(std::move(tls_after_proxy_header_), false);
}

// ---- slow clients -----------------------------------------------------------------------------

// The head timer: the whole head must arrive within timeouts.header, and after min_rate_grace at
// no less than limits.min_request_rate bytes per second counted from the grace's end — so a
// slowloris client trickling a byte a second is cut after about the grace, not the full timeout,
// while a normal head (one packet) never meets the rule.
void ClientConnection::on_head_timer() {
    if ((evbuffer_get_length(stream_.in()) == 0 && !head_timer_armed_) || awaiting_proxy_header_) {
        // Idle keep-alive or never-used connection, or a balancer that never finished its PROXY
        // header: nothing to answer, nobody to answer to.
        close();
        return;
    }
    const auto& server = worker_.config().server;
    const auto elapsed = elapsed_since(head_started_);
    if (!head_timer_armed_ || elapsed >= server.timeouts.header) {
        fail(Failure::HeadTimeout);
        return;
    }
    const std::size_t rate = server.limits.min_request_rate;
    const std::size_t received = evbuffer_get_length(stream_.in());
    const auto allowed =
        server.timeouts.min_rate_grace +
        std::chrono::milliseconds(received * 1000 / std::max<std::size_t>(rate, 1));
    if (rate > 0 && elapsed >= allowed) {
        fail(Failure::HeadTimeout, "request head arriving too slowly");
        return;
    }
    auto next = std::min<std::chrono::milliseconds>(server.timeouts.header,
                                                    rate > 0 ? allowed : server.timeouts.header);
    next = std::max(next - elapsed, std::chrono::milliseconds(50));
    stream_.arm_timer(next);
}

// ---- access: CORS, JWT, rate limits -----------------------------------------------------------

// Runs while the head is still in the input buffer. False when the request was answered here.
bool ClientConnection::check_access(const http::Request& request) {
    auto& ex = *exchange_;
    const auto& route = *ex.route;
    if (route.cors.enabled) {
        if (answer_preflight(request)) return false;
        const std::string_view origin = http::find_header(request, "origin");
        // A response without CORS headers still depends on the origin: shared caches must not
        // hand it to an allowed origin.
        if (!origin.empty() && !append_actual_headers(route.cors, origin, ex.access_headers) &&
            varies_by_origin(route.cors)) {
            ex.access_headers.append("Vary: Origin\r\n");
        }
        ex.replace_cors = true;
    }
    if (!authenticate(request)) return false;
    if (route.rate_limit.empty()) return true;
    const auto& limit = worker_.config().rate_limits[route.rate_limit_index];
    switch (limit.key) {
        case config::RateLimit::KeyKind::Ip:
            ex.rate_key.assign(ex.real_ip);
            break;
        case config::RateLimit::KeyKind::Header:
            ex.rate_key.assign(http::find_header(request, limit.key_name));
            break;
        case config::RateLimit::KeyKind::JwtClaim:
            break;  // set by authenticate()
    }
    return true;
}

// True when the request was a preflight and has been answered (204, or 403 for a refused origin).
bool ClientConnection::answer_preflight(const http::Request& request) {
    auto& ex = *exchange_;
    CorsRequest cors{request.method, http::find_header(request, "origin"),
                     http::find_header(request, "access-control-request-method"),
                     http::find_header(request, "access-control-request-headers")};
    if (!is_preflight(cors)) return false;
    const bool allowed = append_preflight_headers(ex.route->cors, cors, ex.access_headers);
    evbuffer_drain(stream_.in(), request.head_length);
    if (!allowed) {
        fail(Failure::Forbidden, "CORS preflight refused for this origin");
    } else {
        send_bodiless(204);
    }
    return true;
}

// Verifies the token when the route needs one (or a rate limit is keyed by one of its claims).
// False when the request was answered (401/403).
bool ClientConnection::authenticate(const http::Request& request) {
    auto& ex = *exchange_;
    const auto& route = *ex.route;
    auto& policy = worker_.access();
    JwtVerifier* jwt = policy.jwt();
    const config::RateLimit* claim_limit = nullptr;
    if (!route.rate_limit.empty()) {
        const auto& limit = worker_.config().rate_limits[route.rate_limit_index];
        if (limit.key == config::RateLimit::KeyKind::JwtClaim) claim_limit = &limit;
    }
    if (jwt == nullptr || (!route.auth_required && claim_limit == nullptr)) return true;

    const std::string_view token = bearer_token(http::find_header(request, "authorization"));
    AuthFailure failure = AuthFailure::Missing;
    const VerifiedToken* verified =
        token.empty() ? nullptr : jwt->verify(token, std::time(nullptr), failure);
    if (verified == nullptr && route.auth_required) {
        worker_.stats().auth_failures.fetch_add(1, std::memory_order_relaxed);
        worker_.metrics().auth_failure(route, auth_failure_reason(failure));
        ex.access_headers.append("WWW-Authenticate: Bearer");
        if (failure != AuthFailure::Missing) {
            ex.access_headers.append(" error=\"invalid_token\", error_description=\"");
            ex.access_headers.append(auth_failure_reason(failure));
            ex.access_headers.append("\"");
        }
        ex.access_headers.append("\r\n");
        evbuffer_drain(stream_.in(), request.head_length);
        fail(Failure::Unauthorized,
             failure == AuthFailure::Missing ? "missing token" : auth_failure_reason(failure));
        return false;
    }
    if (verified == nullptr) return true;  // optional token for a claim-keyed limit: anonymous
    if (route.auth_required && !has_any_role(*verified, route.roles)) {
        worker_.stats().auth_failures.fetch_add(1, std::memory_order_relaxed);
        worker_.metrics().auth_failure(route, "role");
        ex.access_headers.append("WWW-Authenticate: Bearer error=\"insufficient_scope\"\r\n");
        evbuffer_drain(stream_.in(), request.head_length);
        fail(Failure::Forbidden, "the token lacks a required role");
        return false;
    }
    if (route.auth_required) {
        const auto& forward = worker_.config().jwt.forward_claims;
        for (std::size_t i = 0; i < forward.size() && i < verified->forwarded_values.size(); ++i) {
            // The verifier has already turned control bytes into spaces: a value cannot break
            // the head.
            const std::string& value = verified->forwarded_values[i];
            if (!value.empty()) append_header(ex.claim_headers, forward[i].second, value);
        }
    }
    if (claim_limit != nullptr) {
        const std::size_t slot = policy.claim_slot(route.rate_limit_index);
        if (slot < verified->extra_claims.size()) ex.rate_key.assign(verified->extra_claims[slot]);
    }
    return true;
}

// After the head was consumed: decide now (local table) or ask Redis and wait.
void ClientConnection::apply_rate_limit() {
    auto& ex = *exchange_;
    if (ex.route->rate_limit.empty()) {
        continue_request();
        return;
    }
    const std::size_t index = ex.route->rate_limit_index;
    auto& policy = worker_.access();
    if (worker_.config().rate_limits[index].store == config::RateLimit::Store::Local) {
        apply_rate_decision(policy.decide_local(index, ex.rate_key));
        return;
    }
    ex.rate_ticket = policy.decide_redis(index, ex.rate_key, *this);
}

void ClientConnection::on_rate_decision(const shm::RateDecision& decision, bool redis_error) {
    if (!exchange_ || exchange_->rate_ticket == 0) return;
    auto& ex = *exchange_;
    ex.rate_ticket = 0;
    if (!redis_error) {
        apply_rate_decision(decision);
        return;
    }
    const std::size_t index = ex.route->rate_limit_index;
    const auto& limit = worker_.config().rate_limits[index];
    worker_.stats().rate_limit_errors.fetch_add(1, std::memory_order_relaxed);
    worker_.warn_redis_failure(limit);
    const auto fallback = worker_.access().redis_failure(index);
    if (!fallback.allowed) {
        fail(Failure::LimitUnavailable, "rate-limit store unavailable");
        return;
    }
    continue_request();  // fail-open: no RateLimit-* numbers to report
}

void ClientConnection::apply_rate_decision(const shm::RateDecision& decision) {
    auto& ex = *exchange_;
    append_rate_limit_headers(decision, ex.access_headers);
    if (!decision.allowed) {
        worker_.stats().rate_limited.fetch_add(1, std::memory_order_relaxed);
        worker_.metrics().rate_limited(ex.route->rate_limit_index);
        fail(Failure::RateLimited);
        return;
    }
    continue_request();
}

}  // namespace proxyd::worker
