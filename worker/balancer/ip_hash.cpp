#include "worker/balancer/ip_hash.hpp"

#include <cmath>

#include "worker/balancer/candidates.hpp"

namespace proxyd::worker {

std::optional<std::size_t> rendezvous_pick(std::span<const ServerView> servers,
                                           std::span<const bool> excluded, Tier tier,
                                           std::uint64_t key_hash) {
    const std::uint64_t key = detail::mix64(key_hash);
    std::optional<std::size_t> best;
    double best_score = 0;
    for (std::size_t i = 0; i < servers.size(); ++i) {
        if (!detail::is_candidate(servers, excluded, i, tier)) continue;
        // u uniform in (0, 1); weight / -ln(u) makes each server win in proportion to its
        // weight (the weighted form of rendezvous hashing).
        const std::uint64_t h = detail::mix64(key ^ servers[i].id_hash);
        const double u = (static_cast<double>(h >> 11) + 0.5) * 0x1.0p-53;
        const double score = static_cast<double>(detail::weight_of(servers[i])) / -std::log(u);
        if (!best || score > best_score) {
            best = i;
            best_score = score;
        }
    }
    return best;
}

std::optional<std::size_t> IpHash::pick(std::span<const ServerView> servers,
                                        std::span<const bool> excluded,
                                        const PickContext& context) {
    return rendezvous_pick(servers, excluded, context.tier, context.key_hash);
}

}  // namespace proxyd::worker
