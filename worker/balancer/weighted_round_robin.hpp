// Weighted round robin, nginx's "smooth" variant: weights {5,1,1} give a a b a c a a rather than
// a a a a a b c, so a heavy server never gets a burst. The sequence is deterministic.
#pragma once

#include <vector>

#include "worker/balancer/balancer.hpp"
#include "worker/balancer/candidates.hpp"

namespace proxyd::worker {

// The smooth weighting itself, shared with weighted_least_conn's tie-breaking. Each round, every
// eligible server's current weight grows by its weight; the largest wins and pays back the
// round's total. Ineligible servers sit the round out with their current weight frozen, so the
// others keep their relative sequence and the server resumes where it was when it returns.
class SmoothWeights {
  public:
    // Size the state for `servers` and start the cycle `skip` rounds in, so that workers do not
    // all send the same server first.
    void reset(std::span<const ServerView> servers, std::size_t skip);
    bool sized_for(std::size_t count) const { return current_.size() == count; }

    // Requires sized_for(servers.size()).
    template <class Eligible>
    std::optional<std::size_t> pick(std::span<const ServerView> servers, Eligible eligible) {
        std::int64_t total = 0;
        std::optional<std::size_t> best;
        for (std::size_t i = 0; i < servers.size(); ++i) {
            if (!eligible(i)) continue;
            const std::int64_t weight = detail::weight_of(servers[i]);
            current_[i] += weight;
            total += weight;
            if (!best || current_[i] > current_[*best]) best = i;
        }
        if (best) current_[*best] -= total;
        return best;
    }

  private:
    std::vector<std::int64_t> current_;
};

class WeightedRoundRobin final : public Balancer {
  public:
    explicit WeightedRoundRobin(std::size_t worker_offset = 0) : offset_(worker_offset) {}
    std::optional<std::size_t> pick(std::span<const ServerView> servers,
                                    std::span<const bool> excluded,
                                    const PickContext& context) override;
    void rebuild(std::span<const ServerView> servers) override;

  private:
    std::size_t offset_;
    SmoothWeights smooth_;
};

}  // namespace proxyd::worker
