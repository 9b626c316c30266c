#include "worker/access_policy.hpp"

#include <algorithm>
#include <charconv>

#include "common/config/text.hpp"
#include "worker/forward_headers.hpp"

namespace proxyd::worker {

namespace {

void append_number_header(std::string& out, std::string_view name, std::int64_t value) {
    char buf[24];
    const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
    append_header(out, name, std::string_view(buf, static_cast<std::size_t>(end - buf)));
}

}  // namespace

AccessPolicy::AccessPolicy(const config::Config& config, shm::RateLimitTable* table,
                           event_base* base)
    : config_(config), table_(table) {
    std::vector<std::string> claims;
    bool any_redis = false;
    for (const auto& limit : config.rate_limits) {
        params_.push_back(shm::rate_params(limit.requests_per_minute, limit.burst));
        std::size_t slot = 0;
        if (limit.key == config::RateLimit::KeyKind::JwtClaim) {
            auto it = std::find(claims.begin(), claims.end(), limit.key_name);
            slot = static_cast<std::size_t>(it - claims.begin());
            if (it == claims.end()) claims.push_back(limit.key_name);
        }
        claim_slots_.push_back(slot);
        any_redis = any_redis || limit.store == config::RateLimit::Store::Redis;
    }
    if (config.jwt.enabled) jwt_ = std::make_unique<JwtVerifier>(config.jwt, std::move(claims));
    for (const auto& [claim, header] : config.jwt.forward_claims) {
        claim_headers_.push_back(config::detail::lower(header));
    }
    if (table_ != nullptr) seed_ = shm::hash_seed(*table_);
    if (any_redis) redis_ = std::make_unique<RedisLimiter>(base);
}

shm::RateDecision AccessPolicy::decide_local(std::size_t limit_index, std::string_view key) {
    const auto& params = params_[limit_index];
    if (table_ == nullptr) return shm::make_decision(params, true, 0);
    const std::uint64_t hash =
        shm::rate_key_hash(config_.rate_limits[limit_index].name, key, seed_);
    return shm::decide(*table_, hash, params, shm::monotonic_us());
}

std::uint64_t AccessPolicy::decide_redis(std::size_t limit_index, std::string_view key,
                                         RateLimitWaiter& waiter) {
    return redis_->decide(config_.rate_limits[limit_index], key, waiter);
}

void AccessPolicy::cancel_redis(std::uint64_t ticket) {
    if (redis_) redis_->cancel(ticket);
}

shm::RateDecision AccessPolicy::redis_failure(std::size_t limit_index) const {
    const auto& limit = config_.rate_limits[limit_index];
    auto decision = shm::make_decision(params_[limit_index], limit.redis_error_allow, 0);
    if (!decision.allowed) decision.retry_after_seconds = 1;
    return decision;
}

void append_rate_limit_headers(const shm::RateDecision& decision, std::string& out) {
    append_number_header(out, "RateLimit-Limit", decision.limit);
    append_number_header(out, "RateLimit-Remaining", decision.remaining);
    append_number_header(out, "RateLimit-Reset", decision.reset_seconds);
    if (!decision.allowed) append_number_header(out, "Retry-After", decision.retry_after_seconds);
}

}  // namespace proxyd::worker
