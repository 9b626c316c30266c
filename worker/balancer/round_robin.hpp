// Plain round robin: every usable server in turn, weights ignored. Each worker starts at its own
// offset so that N workers do not all send their first request to the first server.
#pragma once

#include "worker/balancer/balancer.hpp"

namespace proxyd::worker {

class RoundRobin final : public Balancer {
  public:
    explicit RoundRobin(std::size_t worker_offset = 0) : next_(worker_offset) {}
    // The next candidate at or after the rotation point; the rotation then moves past it, so a
    // retry (the failed server excluded) walks on to the following servers once each.
    std::optional<std::size_t> pick(std::span<const ServerView> servers,
                                    std::span<const bool> excluded,
                                    const PickContext& context) override;

  private:
    std::size_t next_;
};

}  // namespace proxyd::worker
