#include "worker/balancer/consistent_hash.hpp"

#include <algorithm>
#include <cmath>

#include "worker/balancer/candidates.hpp"
#include "worker/balancer/ip_hash.hpp"

namespace proxyd::worker {

void ConsistentHash::rebuild(std::span<const ServerView> servers) {
    ring_.clear();
    built_for_ = servers.size();
    double max_weight = 0;
    double total_weight = 0;
    for (const auto& server : servers) {
        const double weight = static_cast<double>(detail::weight_of(server));
        max_weight = std::max(max_weight, weight);
        total_weight += weight;
    }
    if (servers.empty()) return;
    const double scale = std::min({1.0, kMaxPointsPerServer / (kPointsPerWeight * max_weight),
                                   kMaxPoints / (kPointsPerWeight * total_weight)});
    auto points_of = [&](const ServerView& server) {
        const double weight = static_cast<double>(detail::weight_of(server));
        return std::max<std::uint64_t>(1, std::llround(kPointsPerWeight * weight * scale));
    };
    std::size_t total_points = 0;
    for (const auto& server : servers) total_points += points_of(server);
    ring_.reserve(total_points);
    for (std::size_t i = 0; i < servers.size(); ++i) {
        const std::uint64_t points = points_of(servers[i]);
        // A point's position depends only on the server's id and the point's number, never on
        // the list's order or size: that is what keeps other servers' keys in place.
        for (std::uint64_t p = 0; p < points; ++p) {
            const std::uint64_t position = detail::mix64(servers[i].id_hash ^ detail::mix64(p + 1));
            ring_.push_back({position, servers[i].id_hash, static_cast<std::uint32_t>(i)});
        }
    }
    // Ties on position are broken by id, not by list order, for the same reason.
    std::sort(ring_.begin(), ring_.end(), [](const Point& a, const Point& b) {
        return a.position != b.position ? a.position < b.position : a.id_hash < b.id_hash;
    });
}

std::optional<std::size_t> ConsistentHash::pick(std::span<const ServerView> servers,
                                                std::span<const bool> excluded,
                                                const PickContext& context) {
    // Without a ring for this list, rendezvous hashing still gives a stable, minimal-remap answer.
    if (ring_.empty() || built_for_ != servers.size()) {
        return rendezvous_pick(servers, excluded, context.tier, context.key_hash);
    }
    // Checked first so that "nothing usable" does not cost a walk around the whole ring.
    bool any = false;
    for (std::size_t i = 0; i < servers.size() && !any; ++i) {
        any = detail::is_candidate(servers, excluded, i, context.tier);
    }
    if (!any) return std::nullopt;

    const std::uint64_t key = detail::mix64(context.key_hash);
    const auto first = std::lower_bound(
        ring_.begin(), ring_.end(), key,
        [](const Point& point, std::uint64_t value) { return point.position < value; });
    const std::size_t start = static_cast<std::size_t>(first - ring_.begin());
    for (std::size_t k = 0; k < ring_.size(); ++k) {
        const Point& point = ring_[(start + k) % ring_.size()];
        if (servers[point.server].id_hash != point.id_hash) continue;
        if (detail::is_candidate(servers, excluded, point.server, context.tier)) {
            return point.server;
        }
    }
    // Candidates exist but own no valid point (their slots were reshuffled without a rebuild).
    return rendezvous_pick(servers, excluded, context.tier, context.key_hash);
}

}  // namespace proxyd::worker
