// Consistent hashing on a ring (hash_key = ip | path | header | cookie). Each server owns points
// on the ring in proportion to its weight; a key goes to the first usable server clockwise from
// its own position. When a server leaves, only its keys move (to the next servers on the ring);
// everyone else's stay.
#pragma once

#include <vector>

#include "worker/balancer/balancer.hpp"

namespace proxyd::worker {

class ConsistentHash final : public Balancer {
  public:
    std::optional<std::size_t> pick(std::span<const ServerView> servers,
                                    std::span<const bool> excluded,
                                    const PickContext& context) override;
    void rebuild(std::span<const ServerView> servers) override;

    std::size_t ring_size() const { return ring_.size(); }

    // ~160 points per unit of weight keeps each server's share within a few percent of its
    // weight; the caps keep memory and rebuild time bounded for large weights or many servers.
    static constexpr double kPointsPerWeight = 160;
    static constexpr double kMaxPointsPerServer = 1600;
    static constexpr double kMaxPoints = 65536;

  private:
    struct Point {
        std::uint64_t position;
        std::uint64_t id_hash;  // checked at pick time: a point whose slot now holds another
        std::uint32_t server;   // server (list changed, rebuild not yet run) is skipped
    };
    std::vector<Point> ring_;
    std::size_t built_for_ = 0;  // servers.size() at rebuild()
};

}  // namespace proxyd::worker
