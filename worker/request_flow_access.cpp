// The access phases of a request flow, between routing and balancing: CORS (preflights answered
// here, headers for the actual response), JWT authentication and roles, and rate limits (the
// local shared table at once, or a Redis decision waited for). Each either lets the request go
// on or ends it through fail() with its status. Header lines they add travel in the Exchange:
// access_headers to the client, claim_headers upstream.
#include <ctime>

#include "worker/access_policy.hpp"
#include "worker/cors.hpp"
#include "worker/request_flow.hpp"
#include "worker/worker.hpp"

namespace proxyd::worker {

// ---- access: CORS, JWT, rate limits -----------------------------------------------------------

// Runs while the head is still in the input buffer. False when the request was answered here.
bool RequestFlow::check_access(const http::Request& request) {
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
bool RequestFlow::answer_preflight(const http::Request& request) {
    auto& ex = *exchange_;
    CorsRequest cors{request.method, http::find_header(request, "origin"),
                     http::find_header(request, "access-control-request-method"),
                     http::find_header(request, "access-control-request-headers")};
    if (!is_preflight(cors)) return false;
    const bool allowed = append_preflight_headers(ex.route->cors, cors, ex.access_headers);
    if (!allowed) {
        fail(Failure::Forbidden, "CORS preflight refused for this origin");
    } else {
        send_bodiless(204);
    }
    return true;
}

// Verifies the token when the route needs one (or a rate limit is keyed by one of its claims).
// False when the request was answered (401/403).
bool RequestFlow::authenticate(const http::Request& request) {
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
        fail(Failure::Unauthorized,
             failure == AuthFailure::Missing ? "missing token" : auth_failure_reason(failure));
        return false;
    }
    if (verified == nullptr) return true;  // optional token for a claim-keyed limit: anonymous
    if (route.auth_required && !has_any_role(*verified, route.roles)) {
        worker_.stats().auth_failures.fetch_add(1, std::memory_order_relaxed);
        worker_.metrics().auth_failure(route, "role");
        ex.access_headers.append("WWW-Authenticate: Bearer error=\"insufficient_scope\"\r\n");
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
void RequestFlow::apply_rate_limit() {
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

void RequestFlow::on_rate_decision(const shm::RateDecision& decision, bool redis_error) {
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

void RequestFlow::apply_rate_decision(const shm::RateDecision& decision) {
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
