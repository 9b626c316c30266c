// Least connections: the server with the fewest in-flight requests across all workers (the
// counts live in shared memory). Equal counts take turns, otherwise an idle upstream would send
// everything to its first server.
#pragma once

#include "worker/balancer/balancer.hpp"

namespace proxyd::worker {

class LeastConn final : public Balancer {
  public:
    explicit LeastConn(std::size_t worker_offset = 0) : next_(worker_offset) {}
    std::optional<std::size_t> pick(std::span<const ServerView> servers,
                                    std::span<const bool> excluded,
                                    const PickContext& context) override;

  private:
    std::size_t next_;  // where the scan starts: the first of equals wins
};

}  // namespace proxyd::worker
