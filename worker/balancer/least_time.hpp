// Least time: the power of two random choices between usable servers, comparing the expected
// wait ewma_us × (active + 1). Two random candidates rather than the global best, because every
// worker sees the same slightly stale numbers and would otherwise stampede the same server.
#pragma once

#include "worker/balancer/balancer.hpp"

namespace proxyd::worker {

class LeastTime final : public Balancer {
  public:
    explicit LeastTime(std::size_t worker_offset = 0);
    std::optional<std::size_t> pick(std::span<const ServerView> servers,
                                    std::span<const bool> excluded,
                                    const PickContext& context) override;

  private:
    // Mixed into context.random so that choices still vary if a caller passes a constant.
    std::uint64_t sequence_;
};

}  // namespace proxyd::worker
