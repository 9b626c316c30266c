#include "worker/balancer/least_time.hpp"

#include "worker/balancer/candidates.hpp"

namespace proxyd::worker {

namespace {

// Whether `a` should be chosen over `b`. An unmeasured server (ewma 0) wins so that it gets
// measured, but not once it holds more requests than the other: a server that never answers
// stays unmeasured and must not soak up traffic.
bool preferred(const ServerView& a, const ServerView& b) {
    const std::int64_t active_a = detail::active_of(a);
    const std::int64_t active_b = detail::active_of(b);
    if (a.ewma_us == 0) return active_a <= active_b;
    if (b.ewma_us == 0) return active_a < active_b;
    // In double: ewma (32 bits) times a count may exceed 64 bits in theory, and ratios are all
    // that matter here.
    const double cost_a = static_cast<double>(a.ewma_us) * static_cast<double>(active_a + 1);
    const double cost_b = static_cast<double>(b.ewma_us) * static_cast<double>(active_b + 1);
    return cost_a <= cost_b;
}

}  // namespace

LeastTime::LeastTime(std::size_t worker_offset) : sequence_(detail::mix64(worker_offset)) {}

std::optional<std::size_t> LeastTime::pick(std::span<const ServerView> servers,
                                           std::span<const bool> excluded,
                                           const PickContext& context) {
    std::size_t count = 0;
    for (std::size_t i = 0; i < servers.size(); ++i) {
        count += detail::is_candidate(servers, excluded, i, context.tier) ? 1 : 0;
    }
    if (count == 0) return std::nullopt;

    sequence_ += 0x9e3779b97f4a7c15ULL;
    const std::uint64_t r = detail::mix64(context.random ^ sequence_);
    // Two distinct ranks among the candidates, then one scan to find them.
    std::size_t rank_a = r % count;
    std::size_t rank_b = rank_a;
    if (count > 1) {
        rank_b = detail::mix64(r) % (count - 1);
        if (rank_b >= rank_a) ++rank_b;
    }
    std::size_t a = 0, b = 0, rank = 0;
    for (std::size_t i = 0; i < servers.size(); ++i) {
        if (!detail::is_candidate(servers, excluded, i, context.tier)) continue;
        if (rank == rank_a) a = i;
        if (rank == rank_b) b = i;
        ++rank;
    }
    return preferred(servers[a], servers[b]) ? a : b;
}

}  // namespace proxyd::worker
