// Weighted least connections: the lowest active / weight. Servers that tie (an idle upstream,
// or one request each) are chosen by smooth weighted round robin, as nginx does, so that weights
// still hold when requests are short and the counts are mostly zero.
#pragma once

#include "worker/balancer/balancer.hpp"
#include "worker/balancer/weighted_round_robin.hpp"

namespace proxyd::worker {

class WeightedLeastConn final : public Balancer {
  public:
    explicit WeightedLeastConn(std::size_t worker_offset = 0) : offset_(worker_offset) {}
    std::optional<std::size_t> pick(std::span<const ServerView> servers,
                                    std::span<const bool> excluded,
                                    const PickContext& context) override;
    void rebuild(std::span<const ServerView> servers) override;

  private:
    std::size_t offset_;
    SmoothWeights ties_;
};

}  // namespace proxyd::worker
