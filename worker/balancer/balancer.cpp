#include "worker/balancer/balancer.hpp"

#include "worker/balancer/adaptive.hpp"
#include "worker/balancer/candidates.hpp"
#include "worker/balancer/consistent_hash.hpp"
#include "worker/balancer/ip_hash.hpp"
#include "worker/balancer/least_conn.hpp"
#include "worker/balancer/least_time.hpp"
#include "worker/balancer/round_robin.hpp"
#include "worker/balancer/weighted_least_conn.hpp"
#include "worker/balancer/weighted_round_robin.hpp"

namespace proxyd::worker {

std::unique_ptr<Balancer> make_balancer(config::Balance algorithm, std::size_t worker_offset) {
    switch (algorithm) {
        case config::Balance::RoundRobin:
            return std::make_unique<RoundRobin>(worker_offset);
        case config::Balance::WeightedRoundRobin:
            return std::make_unique<WeightedRoundRobin>(worker_offset);
        case config::Balance::LeastConn:
            return std::make_unique<LeastConn>(worker_offset);
        case config::Balance::WeightedLeastConn:
            return std::make_unique<WeightedLeastConn>(worker_offset);
        case config::Balance::IpHash:
            return std::make_unique<IpHash>();
        case config::Balance::ConsistentHash:
            return std::make_unique<ConsistentHash>();
        case config::Balance::LeastTime:
            return std::make_unique<LeastTime>(worker_offset);
        case config::Balance::Adaptive:
            return std::make_unique<Adaptive>(worker_offset);
    }
    return std::make_unique<RoundRobin>(worker_offset);
}

std::optional<std::size_t> pick_server(Balancer& balancer, std::span<const ServerView> servers,
                                       std::span<const bool> excluded, const PickContext& context) {
    PickContext tiered = context;
    tiered.tier = Tier::Primary;
    if (auto primary = balancer.pick(servers, excluded, tiered)) return primary;
    // Only ask again when a backup could answer, so that stateful algorithms do not advance
    // their rotation for nothing.
    for (std::size_t i = 0; i < servers.size(); ++i) {
        if (detail::is_candidate(servers, excluded, i, Tier::Backup)) {
            tiered.tier = Tier::Backup;
            return balancer.pick(servers, excluded, tiered);
        }
    }
    return std::nullopt;
}

int slow_start_weight(int weight, std::int64_t since_ms, std::int64_t slow_start_ms) {
    if (weight < 1) return 1;
    if (slow_start_ms <= 0 || since_ms >= slow_start_ms) return weight;
    if (since_ms <= 0) return 1;
    // 64-bit: weight (<= 1e6) times a duration in ms cannot overflow for any real slow_start.
    const std::int64_t extra = (std::int64_t{weight} - 1) * since_ms / slow_start_ms;
    return static_cast<int>(1 + extra);
}

// FNV-1a, then a final mix: FNV alone is stable and simple but its high bits barely depend on
// the last bytes, which matters for ring positions. Changing this function remaps every
// consistent-hash and ip_hash key, so it is pinned by a unit test.
std::uint64_t hash_bytes(std::string_view bytes) {
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (unsigned char c : bytes) {
        h ^= c;
        h *= 0x100000001b3ULL;
    }
    return detail::mix64(h);
}

}  // namespace proxyd::worker
