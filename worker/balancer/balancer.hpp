// Choosing a server for a request. Every algorithm sees the same snapshot of the upstream's
// servers (built per request from the shared state all workers update) and returns a position
// in it. Algorithms are pure apart from their own rotation state, so they are unit-tested
// without sockets or shared memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

#include "common/config/types.hpp"

namespace proxyd::worker {

struct ServerView {
    int weight = 1;      // configured weight (>= 1), after slow start: see below
    bool usable = true;  // healthy, circuit not open, under max_connections
    bool backup = false;
    std::int64_t active = 0;    // in-flight requests across all workers
    std::uint32_t ewma_us = 0;  // smoothed response time; 0 = not measured yet
    double performance = 1.0;   // adaptive: 1 = idle/unknown, towards 0 = loaded (reports)
    std::uint64_t id_hash = 0;  // hash_bytes(server id): ip_hash and consistent_hash need it
};

// Which servers pick() may return. Backups are a separate tier rather than "excluded" ones, so
// that hash algorithms keep their mapping over the primaries alone and rotations are undisturbed.
enum class Tier { All, Primary, Backup };

struct PickContext {
    std::uint64_t key_hash = 0;  // ip_hash / consistent_hash key (client ip, path, header...)
    std::uint64_t random = 0;    // a fresh random number (power-of-two choices)
    Tier tier = Tier::All;       // set by pick_server()
};

class Balancer {
  public:
    virtual ~Balancer() = default;
    // A position in `servers` among those with usable && !excluded[i] in context.tier, or
    // nullopt when none. `excluded` marks servers already tried for this request (same size as
    // servers; missing entries count as not excluded). Allocation-free once rebuild() has run.
    virtual std::optional<std::size_t> pick(std::span<const ServerView> servers,
                                            std::span<const bool> excluded,
                                            const PickContext& context) = 0;
    // The server list changed (membership, order, configured weights): rebuild derived state
    // (rings, rotation state). Pass configured weights, not slow-start ones, so that a ramping
    // server does not remap consistent-hash keys.
    virtual void rebuild(std::span<const ServerView> servers) { (void)servers; }
};

// `worker_offset` de-synchronises rotations between workers.
std::unique_ptr<Balancer> make_balancer(config::Balance algorithm, std::size_t worker_offset);

// Backup servers are considered only when no primary is usable: this runs `balancer` over the
// primaries first, then over the backups.
std::optional<std::size_t> pick_server(Balancer& balancer, std::span<const ServerView> servers,
                                       std::span<const bool> excluded, const PickContext& context);

// Slow start: a server that became healthy `since_ms` ago ramps its weight linearly from 1 to
// `weight` over `slow_start_ms` (no ramp when slow_start_ms == 0).
int slow_start_weight(int weight, std::int64_t since_ms, std::int64_t slow_start_ms);

std::uint64_t hash_bytes(std::string_view bytes);  // stable across processes and restarts

}  // namespace proxyd::worker
