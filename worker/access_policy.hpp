// The access phase's per-worker machinery: the JWT verifier (with its token cache), the shared
// rate-limit table and the Redis store. Built once per worker from the generation's config, so a
// reload (new workers) re-reads keys and limits.
#pragma once

#include <event2/event.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/config/types.hpp"
#include "common/shm/rate_limit_table.hpp"
#include "worker/auth/jwt_verifier.hpp"
#include "worker/rate_limit/redis_limiter.hpp"

namespace proxyd::worker {

class AccessPolicy {
  public:
    AccessPolicy(const config::Config& config, shm::RateLimitTable* table, event_base* base);

    // nullptr when the config has no [auth.jwt].
    JwtVerifier* jwt() { return jwt_.get(); }

    // Index into VerifiedToken::extra_claims of the claim that keys rate limit `limit_index`.
    std::size_t claim_slot(std::size_t limit_index) const { return claim_slots_[limit_index]; }

    // Lower-case names of the headers that forward_claims sets: client-sent copies are dropped.
    const std::vector<std::string>& claim_headers() const { return claim_headers_; }

    // store = "local": decided at once in the host-wide table.
    shm::RateDecision decide_local(std::size_t limit_index, std::string_view key);
    // store = "redis": the waiter hears later; the ticket cancels.
    std::uint64_t decide_redis(std::size_t limit_index, std::string_view key,
                               RateLimitWaiter& waiter);
    void cancel_redis(std::uint64_t ticket);
    // The decision to apply when Redis failed: allowed or not per on_redis_error.
    shm::RateDecision redis_failure(std::size_t limit_index) const;

  private:
    const config::Config& config_;
    shm::RateLimitTable* table_;
    std::uint64_t seed_ = 0;
    std::vector<shm::RateParams> params_;  // aligned with config.rate_limits
    std::vector<std::size_t> claim_slots_;
    std::vector<std::string> claim_headers_;
    std::unique_ptr<JwtVerifier> jwt_;
    std::unique_ptr<RedisLimiter> redis_;  // only when some limit uses Redis
};

// "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset" (and "Retry-After" on a denial)
// header lines, appended to `out`.
void append_rate_limit_headers(const shm::RateDecision& decision, std::string& out);

}  // namespace proxyd::worker
