#include "worker/balancer/round_robin.hpp"

#include "worker/balancer/candidates.hpp"

namespace proxyd::worker {

std::optional<std::size_t> RoundRobin::pick(std::span<const ServerView> servers,
                                            std::span<const bool> excluded,
                                            const PickContext& context) {
    const std::size_t n = servers.size();
    for (std::size_t k = 0; k < n; ++k) {
        const std::size_t i = (next_ + k) % n;
        if (detail::is_candidate(servers, excluded, i, context.tier)) {
            next_ = i + 1;  // stays below n + 1: no wrap-around to worry about
            return i;
        }
    }
    return std::nullopt;
}

}  // namespace proxyd::worker
