#include "worker/balancer/adaptive.hpp"

#include <cmath>

#include "worker/balancer/candidates.hpp"

namespace proxyd::worker {

double Adaptive::score(const ServerView& server) {
    double performance = server.performance;
    // Reports are outside input: a missing (NaN) one means unknown, i.e. 1; out of range clamps.
    if (std::isnan(performance) || performance > 1) performance = 1;
    if (performance < 0) performance = 0;
    return static_cast<double>(detail::weight_of(server)) * performance /
           static_cast<double>(detail::active_of(server) + 1);
}

std::optional<std::size_t> Adaptive::pick(std::span<const ServerView> servers,
                                          std::span<const bool> excluded,
                                          const PickContext& context) {
    if (servers.empty()) return std::nullopt;
    const std::size_t start = next_++ % servers.size();
    return detail::best_in_rotation(
        servers, excluded, context.tier, start,
        [](const ServerView& a, const ServerView& b) { return score(a) > score(b); });
}

}  // namespace proxyd::worker
