// Per-worker counters in shared memory created by the master (memfd, so it can be handed to a new
// binary on upgrade) and inherited by every worker.
//
// Invariants: each slot has a single writer, the worker process the master assigned it to;
// readers (the master) sum slots. A slot is reused by the next worker the master forks, which
// keeps adding to the cumulative counters, so sums never go backward. `connections_active` is a
// gauge that the master zeroes when it reaps a slot's worker.
#pragma once

#include <atomic>
#include <cstdint>

#include "common/util/unique_fd.hpp"

namespace proxyd::shm {

inline constexpr std::uint32_t kStatsMagic = 0x70727864;  // "prxd"
inline constexpr std::uint32_t kStatsLayoutVersion = 1;
inline constexpr std::size_t kMaxWorkerSlots = 256;

struct alignas(64) WorkerSlotStats {
    std::atomic<std::int64_t> connections_active{0};
    std::atomic<std::uint64_t> connections_total{0};
    std::atomic<std::uint64_t> requests_total{0};
};

struct StatsLayout {
    std::uint32_t magic;
    std::uint32_t layout_version;
    WorkerSlotStats slots[kMaxWorkerSlots];
};

// Owns the mapping (and the memfd behind it).
class SharedStats {
  public:
    // Creates and zeroes a new region; nullptr-like (valid() false) on failure.
    static SharedStats create();
    // Maps an existing region received from an older master; checks magic and layout version.
    static SharedStats attach(UniqueFd fd);

    SharedStats() = default;
    SharedStats(SharedStats&& other) noexcept;
    SharedStats& operator=(SharedStats&& other) noexcept;
    ~SharedStats();

    bool valid() const { return layout_ != nullptr; }
    int fd() const { return fd_.get(); }
    WorkerSlotStats& slot(std::size_t index) { return layout_->slots[index]; }
    const WorkerSlotStats& slot(std::size_t index) const { return layout_->slots[index]; }

  private:
    UniqueFd fd_;
    StatsLayout* layout_ = nullptr;
};

}  // namespace proxyd::shm
