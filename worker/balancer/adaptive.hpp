// Adaptive: score = weight × performance / (active + 1), the highest wins. `performance` comes
// from the servers' own reports (POST /api/v1/report: 1 = idle or unknown, towards 0 = loaded),
// health from `usable`, and (active + 1) spreads concurrent requests. Equal scores take turns.
#pragma once

#include "worker/balancer/balancer.hpp"

namespace proxyd::worker {

class Adaptive final : public Balancer {
  public:
    explicit Adaptive(std::size_t worker_offset = 0) : next_(worker_offset) {}
    std::optional<std::size_t> pick(std::span<const ServerView> servers,
                                    std::span<const bool> excluded,
                                    const PickContext& context) override;

    static double score(const ServerView& server);

  private:
    std::size_t next_;  // where the scan starts: the first of equals wins
};

}  // namespace proxyd::worker
