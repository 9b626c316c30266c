#include "worker/balancer/weighted_least_conn.hpp"

#include "worker/balancer/candidates.hpp"

namespace proxyd::worker {

namespace {

// active/weight compared by cross-multiplying: exact, no division; fits easily in 64 bits
// (weight <= 1e6).
int compare_load(const ServerView& a, const ServerView& b) {
    const std::int64_t left = detail::active_of(a) * detail::weight_of(b);
    const std::int64_t right = detail::active_of(b) * detail::weight_of(a);
    return left < right ? -1 : (left > right ? 1 : 0);
}

}  // namespace

std::optional<std::size_t> WeightedLeastConn::pick(std::span<const ServerView> servers,
                                                   std::span<const bool> excluded,
                                                   const PickContext& context) {
    auto lightest = detail::best_in_rotation(
        servers, excluded, context.tier, 0,
        [](const ServerView& a, const ServerView& b) { return compare_load(a, b) < 0; });
    if (!lightest) return std::nullopt;
    // Only when rebuild() was not called for this list: the one allocation pick() may make.
    if (!ties_.sized_for(servers.size())) ties_.reset(servers, offset_);
    const ServerView& floor = servers[*lightest];
    return ties_.pick(servers, [&](std::size_t i) {
        return detail::is_candidate(servers, excluded, i, context.tier) &&
               compare_load(servers[i], floor) == 0;
    });
}

void WeightedLeastConn::rebuild(std::span<const ServerView> servers) {
    ties_.reset(servers, offset_);
}

}  // namespace proxyd::worker
