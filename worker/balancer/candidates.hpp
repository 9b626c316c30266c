// Helpers shared by the balancing algorithms: which servers a pick may return, weights as the
// algorithms use them, and a bit mixer for hashing. Internal to worker/balancer/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "worker/balancer/balancer.hpp"

namespace proxyd::worker::detail {

inline bool in_tier(const ServerView& server, Tier tier) {
    switch (tier) {
        case Tier::Primary:
            return !server.backup;
        case Tier::Backup:
            return server.backup;
        case Tier::All:
            break;
    }
    return true;
}

// A short `excluded` (or an empty one) counts as "nothing excluded" rather than reading past it.
inline bool is_candidate(std::span<const ServerView> servers, std::span<const bool> excluded,
                         std::size_t i, Tier tier) {
    const ServerView& server = servers[i];
    return server.usable && in_tier(server, tier) && !(i < excluded.size() && excluded[i]);
}

// The config guarantees weight >= 1; clamping keeps a stray 0 from starving or dividing by zero.
inline std::int64_t weight_of(const ServerView& server) {
    return server.weight < 1 ? 1 : server.weight;
}

inline std::int64_t active_of(const ServerView& server) {
    return server.active < 0 ? 0 : server.active;
}

// splitmix64's finaliser: spreads every input bit over the whole word, so that structured
// inputs (small ids, sequential counters, FNV output) land uniformly on rings and in modulos.
inline std::uint64_t mix64(std::uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

// The best candidate by `better(a, b)` ("a strictly better than b"), scanning from `start` so
// that equally good servers take turns as `start` rotates.
template <class Better>
std::optional<std::size_t> best_in_rotation(std::span<const ServerView> servers,
                                            std::span<const bool> excluded, Tier tier,
                                            std::size_t start, Better better) {
    const std::size_t n = servers.size();
    std::optional<std::size_t> best;
    for (std::size_t k = 0; k < n; ++k) {
        const std::size_t i = (start + k) % n;
        if (!is_candidate(servers, excluded, i, tier)) continue;
        if (!best || better(servers[i], servers[*best])) best = i;
    }
    return best;
}

}  // namespace proxyd::worker::detail
