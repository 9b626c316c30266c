// The "balance" phase: which server of an upstream serves a request, judged from the state that
// every worker shares (health, circuit breaker, active requests, response times), and the
// accounting that keeps that state true (active counts, passive failures, latency EWMA).
//
// Passive health is a circuit breaker per server: closed; after kFailuresToOpen consecutive
// failures (connect error, reset, or a 5xx answer) open for a backoff that doubles from 1 s up to
// 30 s; then half-open, when exactly one trial request (across all workers) may go; its success
// closes the circuit, its failure opens it again for longer.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "common/config/types.hpp"
#include "common/shm/upstream_state.hpp"
#include "worker/balancer/balancer.hpp"

namespace proxyd::worker {

inline constexpr std::uint32_t kFailuresToOpen = 3;

// Servers already tried for one request (a retry goes elsewhere).
class TriedServers {
  public:
    void reset(std::size_t count);
    void mark(std::size_t server);
    bool has(std::size_t server) const { return server < size_ && data_[server]; }
    // May be shorter than the server list (it grew during the request): missing = not tried.
    std::span<const bool> view() const { return {data_.get(), size_}; }

  private:
    std::unique_ptr<bool[]> data_;
    std::size_t capacity_ = 0;
    std::size_t size_ = 0;
};

class UpstreamSelector {
  public:
    // `worker_slot` is the worker's stats slot: its share of the active counts is kept there.
    UpstreamSelector(const config::Config& config, shm::UpstreamStateLayout* state,
                     std::size_t worker_offset, std::size_t worker_slot = 0);
    ~UpstreamSelector();

    enum class Outcome { Picked, AllFull, NoneUsable };
    struct Pick {
        Outcome outcome = Outcome::NoneUsable;
        std::size_t server = 0;
        bool trial = false;  // a half-open circuit's one trial request
    };

    // `sticky_hash` (0 = none) pins to the server whose id hashes to it, when it is usable.
    Pick pick(std::size_t upstream, config::Balance algorithm, std::uint64_t key_hash,
              std::uint64_t sticky_hash, const TriedServers& tried);

    // Accounting for one attempt on a server: begin() counts it active (for least_conn and
    // max_connections, across all workers) until release(); report() judges it once — success
    // is a response head that is not 5xx, with `latency` from the attempt's start.
    void begin(std::size_t upstream, std::size_t server);
    void report(std::size_t upstream, std::size_t server, bool success, bool trial,
                std::chrono::microseconds latency);
    // `unjudged_trial`: a half-open trial that ended without a report lets another one go.
    void release(std::size_t upstream, std::size_t server, bool unjudged_trial);

    std::uint64_t server_hash(std::size_t upstream, std::size_t server) const {
        return upstreams_[upstream].id_hashes[server];
    }
    std::size_t server_count(std::size_t upstream) const {
        return upstreams_[upstream].views.size();
    }
    // The upstream's server list changed (runtime change): rebuild what derives from it.
    void servers_changed(std::size_t upstream);

  private:
    struct PerUpstream {
        const config::Upstream* config = nullptr;
        std::vector<ServerView> views;  // rebuilt per pick, no allocation
        std::vector<std::uint64_t> id_hashes;
        std::array<std::unique_ptr<Balancer>, 8> balancers;  // by config::Balance, lazily
    };

    shm::ServerState& state(std::size_t upstream, std::size_t server);
    void refresh_views(PerUpstream& upstream, std::int64_t now_ms);
    Balancer& balancer(PerUpstream& upstream, config::Balance algorithm);
    bool claim(std::size_t upstream, std::size_t server, bool& trial, std::int64_t now_ms);

    shm::UpstreamStateLayout* state_;
    std::size_t worker_offset_;
    std::size_t worker_slot_;
    std::vector<PerUpstream> upstreams_;
    std::uint64_t random_state_;
};

}  // namespace proxyd::worker
