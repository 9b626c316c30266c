// Per-worker counters in shared memory created by the master and inherited by every worker.
//
// Invariants: each slot has a single writer, the worker process the master assigned it to;
// readers (the master) sum slots. A slot is reused by the next worker the master forks, which
// keeps adding to the cumulative counters, so sums never go backward. `connections_active` is a
// gauge that the master zeroes when it reaps a slot's worker.
#pragma once

#include <atomic>
#include <cstdint>

#include "common/shm/region.hpp"

namespace proxyd::shm {

inline constexpr std::size_t kMaxWorkerSlots = 256;

struct alignas(64) WorkerSlotStats {
    std::atomic<std::int64_t> connections_active{0};
    std::atomic<std::uint64_t> connections_total{0};
    std::atomic<std::uint64_t> requests_total{0};
    // Added in 0.2 inside the struct's padding (still 64 bytes): a 0.1 region reads them as 0,
    // so the layout version stays 1 and upgrades from 0.1 keep working.
    std::atomic<std::uint64_t> auth_failures{0};
    std::atomic<std::uint64_t> rate_limited{0};
    std::atomic<std::uint64_t> rate_limit_errors{0};  // Redis store failures
    // Added in 0.3, also in the padding: WebSocket tunnels open (a gauge, zeroed at reaping).
    std::atomic<std::int64_t> tunnels_active{0};
};
static_assert(sizeof(WorkerSlotStats) == 64);

struct StatsLayout {
    static constexpr std::uint32_t kMagic = 0x70727864;  // "prxd"
    static constexpr std::uint32_t kVersion = 1;
    LayoutHeader header;
    WorkerSlotStats slots[kMaxWorkerSlots];
};

using SharedStats = Region<StatsLayout>;

}  // namespace proxyd::shm
