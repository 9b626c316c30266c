#include "worker/balancer/least_conn.hpp"

#include "worker/balancer/candidates.hpp"

namespace proxyd::worker {

std::optional<std::size_t> LeastConn::pick(std::span<const ServerView> servers,
                                           std::span<const bool> excluded,
                                           const PickContext& context) {
    if (servers.empty()) return std::nullopt;
    const std::size_t start = next_++ % servers.size();
    return detail::best_in_rotation(servers, excluded, context.tier, start,
                                    [](const ServerView& a, const ServerView& b) {
                                        return detail::active_of(a) < detail::active_of(b);
                                    });
}

}  // namespace proxyd::worker
