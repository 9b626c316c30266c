#include "worker/balancer/weighted_round_robin.hpp"

#include <algorithm>

namespace proxyd::worker {

void SmoothWeights::reset(std::span<const ServerView> servers, std::size_t skip) {
    current_.assign(servers.size(), 0);
    std::uint64_t cycle = 0;  // one full cycle is the sum of the weights
    for (const auto& server : servers)
        cycle += static_cast<std::uint64_t>(detail::weight_of(server));
    if (cycle == 0) return;
    // Bounded so that an odd offset cannot make a rebuild slow; worker slots are far smaller.
    const std::uint64_t rounds = std::min<std::uint64_t>(skip % cycle, 1024);
    for (std::uint64_t r = 0; r < rounds; ++r) pick(servers, [](std::size_t) { return true; });
}

std::optional<std::size_t> WeightedRoundRobin::pick(std::span<const ServerView> servers,
                                                    std::span<const bool> excluded,
                                                    const PickContext& context) {
    // Only when rebuild() was not called for this list: the one allocation pick() may make.
    if (!smooth_.sized_for(servers.size())) smooth_.reset(servers, offset_);
    return smooth_.pick(servers, [&](std::size_t i) {
        return detail::is_candidate(servers, excluded, i, context.tier);
    });
}

void WeightedRoundRobin::rebuild(std::span<const ServerView> servers) {
    smooth_.reset(servers, offset_);
}

}  // namespace proxyd::worker
