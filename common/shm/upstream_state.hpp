// Per-server state shared by every worker and the master: one view of the backends.
//
// Invariants:
// - An index is assigned by the master to an (upstream name, server id) pair and kept for the
//   master's life (and across upgrades), so a reload keeps the counts and health of servers that
//   stay. Indices are never reused for another server.
// - Writers: `healthy` and `healthy_since_ms` only by the master's health checker; the load and
//   passive-health fields by any worker, with atomic read-modify-write; reports by the master.
//   No locks: readers may see fields from slightly different moments, which every consumer
//   (balancing decisions) tolerates.
// - Entries are 64-byte aligned so that two servers never share a cache line.
#pragma once

#include <atomic>
#include <cstdint>

#include "common/shm/region.hpp"
#include "common/shm/worker_stats.hpp"

namespace proxyd::shm {

inline constexpr std::size_t kMaxServers = 4096;

enum class Circuit : std::uint8_t { Closed = 0, Open = 1, HalfOpen = 2 };

struct alignas(64) ServerState {
    // Active health (master): 0 (healthy) until a health check says otherwise. Every field is
    // valid at zero, so a fresh (zero-filled) region needs no initialisation.
    std::atomic<std::uint8_t> unhealthy{0};
    // Passive health (workers): a circuit breaker.
    std::atomic<std::uint8_t> circuit{0};
    std::atomic<std::uint8_t> trial_in_flight{0};  // half-open: one request is testing it
    std::atomic<std::uint32_t> consecutive_failures{0};
    std::atomic<std::uint32_t> times_opened{0};  // backoff exponent, reset on success
    std::atomic<std::int64_t> open_until_ms{0};
    std::atomic<std::int64_t> healthy_since_ms{0};  // slow start reference; 0 = always
    // Load, across all workers.
    std::atomic<std::int64_t> active{0};
    std::atomic<std::uint64_t> requests{0};
    std::atomic<std::uint64_t> failures{0};
    std::atomic<std::uint32_t> ewma_us{0};
    // Reported performance for balance = "adaptive", 1000 = idle; read only while reported_ms
    // is recent.
    std::atomic<std::uint32_t> performance_milli{0};
    std::atomic<std::int64_t> reported_ms{0};
};

struct UpstreamStateLayout {
    static constexpr std::uint32_t kMagic = 0x70727875;  // "prxu"
    static constexpr std::uint32_t kVersion = 1;
    LayoutHeader header;
    ServerState servers[kMaxServers];
    // Each worker's share of `active`, by its stats slot: when a worker dies with requests in
    // flight, the master takes exactly its share back out, so the global counts stay true.
    // (Sparse: only pages of slots and servers in use are ever touched.)
    std::atomic<std::int32_t> active_by_worker[kMaxWorkerSlots][kMaxServers];
};

using UpstreamState = Region<UpstreamStateLayout>;

// Milliseconds on a clock shared by all processes of the machine (CLOCK_MONOTONIC).
std::int64_t monotonic_ms();

}  // namespace proxyd::shm
