#include "worker/upstream_selector.hpp"

#include <sys/random.h>

#include <algorithm>

namespace proxyd::worker {
namespace {

constexpr std::int64_t kFirstOpenMs = 1000;
constexpr std::int64_t kMaxOpenMs = 30'000;
// A performance report older than this no longer describes the server.
constexpr std::int64_t kReportLifetimeMs = 60'000;
constexpr double kEwmaWeight = 0.2;

std::int64_t open_duration_ms(std::uint32_t times_opened) {
    return std::min<std::int64_t>(kFirstOpenMs << std::min<std::uint32_t>(times_opened, 10),
                                  kMaxOpenMs);
}

}  // namespace

void TriedServers::mark(std::size_t server) {
    if (server >= size_) {
        // The server list grew during the request (a runtime change): keep what was marked.
        std::size_t count = server + 1;
        if (count > capacity_) {
            auto bigger = std::make_unique<bool[]>(count);
            std::copy(data_.get(), data_.get() + size_, bigger.get());
            data_ = std::move(bigger);
            capacity_ = count;
        }
        std::fill(data_.get() + size_, data_.get() + count, false);
        size_ = count;
    }
    data_[server] = true;
}

void TriedServers::reset(std::size_t count) {
    if (count > capacity_) {
        data_ = std::make_unique<bool[]>(count);
        capacity_ = count;
    }
    std::fill(data_.get(), data_.get() + count, false);
    size_ = count;
}

UpstreamSelector::UpstreamSelector(const config::Config& config, shm::UpstreamStateLayout* state,
                                   std::size_t worker_offset, std::size_t worker_slot)
    : state_(state), worker_offset_(worker_offset), worker_slot_(worker_slot) {
    if (::getrandom(&random_state_, sizeof random_state_, 0) != sizeof random_state_) {
        random_state_ = 0x9e3779b97f4a7c15ULL ^ worker_offset;
    }
    upstreams_.resize(config.upstreams.size());
    for (std::size_t u = 0; u < config.upstreams.size(); ++u) {
        upstreams_[u].config = &config.upstreams[u];
        servers_changed(u);
    }
}

void UpstreamSelector::servers_changed(std::size_t upstream) {
    auto& per = upstreams_[upstream];
    per.views.assign(per.config->servers.size(), ServerView{});
    per.id_hashes.clear();
    for (const auto& server : per.config->servers) per.id_hashes.push_back(hash_bytes(server.id));
    for (auto& balancer : per.balancers) balancer.reset();  // rebuilt lazily from the new list
}

UpstreamSelector::~UpstreamSelector() = default;

shm::ServerState& UpstreamSelector::state(std::size_t upstream, std::size_t server) {
    return state_->servers[upstreams_[upstream].config->servers[server].state_index];
}

void UpstreamSelector::refresh_views(PerUpstream& upstream, std::int64_t now_ms) {
    const auto& servers = upstream.config->servers;
    for (std::size_t i = 0; i < servers.size(); ++i) {
        const auto& server = servers[i];
        auto& st = state_->servers[server.state_index];
        auto& view = upstream.views[i];
        bool healthy = st.unhealthy.load(std::memory_order_acquire) == 0;
        auto circuit = static_cast<shm::Circuit>(st.circuit.load(std::memory_order_relaxed));
        bool circuit_allows = circuit == shm::Circuit::Closed ||
                              now_ms >= st.open_until_ms.load(std::memory_order_relaxed);
        view.active = st.active.load(std::memory_order_relaxed);
        bool full = server.max_connections > 0 && view.active >= server.max_connections;
        view.usable = healthy && circuit_allows && !full && !server.drain && !server.retired;
        std::int64_t since = st.healthy_since_ms.load(std::memory_order_relaxed);
        view.weight = since > 0 ? slow_start_weight(server.weight, now_ms - since,
                                                    upstream.config->slow_start.count())
                                : server.weight;
        view.backup = server.backup;
        view.ewma_us = st.ewma_us.load(std::memory_order_relaxed);
        std::int64_t reported = st.reported_ms.load(std::memory_order_relaxed);
        view.performance = reported > 0 && now_ms - reported < kReportLifetimeMs
                               ? st.performance_milli.load(std::memory_order_relaxed) / 1000.0
                               : 1.0;
        view.id_hash = upstream.id_hashes[i];
    }
}

Balancer& UpstreamSelector::balancer(PerUpstream& upstream, config::Balance algorithm) {
    auto& slot = upstream.balancers[static_cast<std::size_t>(algorithm)];
    if (!slot) {
        slot = make_balancer(algorithm, worker_offset_);
        // Rings and weight tables are built from the configured weights, so a server ramping up
        // through slow start does not move consistent-hash keys around.
        std::vector<ServerView> configured = upstream.views;
        for (std::size_t i = 0; i < configured.size(); ++i) {
            configured[i].weight = upstream.config->servers[i].weight;
            configured[i].id_hash = upstream.id_hashes[i];
            configured[i].backup = upstream.config->servers[i].backup;
        }
        slot->rebuild(configured);
    }
    return *slot;
}

// A server whose circuit is open but past its backoff admits one trial request, across all
// workers: whoever flips trial_in_flight first sends it.
bool UpstreamSelector::claim(std::size_t upstream, std::size_t server, bool& trial,
                             std::int64_t now_ms) {
    auto& st = state(upstream, server);
    trial = false;
    if (st.circuit.load(std::memory_order_relaxed) ==
        static_cast<std::uint8_t>(shm::Circuit::Closed)) {
        return true;
    }
    if (now_ms < st.open_until_ms.load(std::memory_order_relaxed)) return false;
    std::uint8_t expected = 0;
    if (!st.trial_in_flight.compare_exchange_strong(expected, 1)) return false;
    st.circuit.store(static_cast<std::uint8_t>(shm::Circuit::HalfOpen), std::memory_order_relaxed);
    trial = true;
    return true;
}

UpstreamSelector::Pick UpstreamSelector::pick(std::size_t upstream, config::Balance algorithm,
                                              std::uint64_t key_hash, std::uint64_t sticky_hash,
                                              const TriedServers& tried) {
    auto& per = upstreams_[upstream];
    std::int64_t now = shm::monotonic_ms();
    refresh_views(per, now);
    auto excluded = tried.view();
    bool trial = false;
    if (sticky_hash != 0) {
        for (std::size_t i = 0; i < per.views.size(); ++i) {
            if (per.id_hashes[i] == sticky_hash && per.views[i].usable && !tried.has(i) &&
                claim(upstream, i, trial, now)) {
                return {Outcome::Picked, i, trial};
            }
        }
    }
    random_state_ = random_state_ * 6364136223846793005ULL + 1442695040888963407ULL;
    PickContext context;
    context.key_hash = key_hash;
    context.random = random_state_;
    Balancer& chosen = balancer(per, algorithm);
    for (std::size_t guard = 0; guard <= per.views.size(); ++guard) {
        auto choice = pick_server(chosen, per.views, excluded, context);
        if (!choice) break;
        if (claim(upstream, *choice, trial, now)) return {Outcome::Picked, *choice, trial};
        per.views[*choice].usable = false;  // another worker took its trial: not this time
    }
    // Nothing usable: is it only because healthy servers are at max_connections?
    const auto& servers = per.config->servers;
    for (std::size_t i = 0; i < servers.size(); ++i) {
        if (servers[i].max_connections > 0 && !tried.has(i) && !servers[i].drain &&
            !servers[i].retired && per.views[i].active >= servers[i].max_connections) {
            return {Outcome::AllFull, 0, false};
        }
    }
    return {Outcome::NoneUsable, 0, false};
}

void UpstreamSelector::begin(std::size_t upstream, std::size_t server) {
    auto& st = state(upstream, server);
    std::uint32_t index = upstreams_[upstream].config->servers[server].state_index;
    state_->active_by_worker[worker_slot_][index].fetch_add(1, std::memory_order_relaxed);
    st.active.fetch_add(1, std::memory_order_relaxed);
    st.requests.fetch_add(1, std::memory_order_relaxed);
}

void UpstreamSelector::release(std::size_t upstream, std::size_t server, bool unjudged_trial) {
    auto& st = state(upstream, server);
    std::uint32_t index = upstreams_[upstream].config->servers[server].state_index;
    state_->active_by_worker[worker_slot_][index].fetch_sub(1, std::memory_order_relaxed);
    st.active.fetch_sub(1, std::memory_order_relaxed);
    if (unjudged_trial) st.trial_in_flight.store(0, std::memory_order_relaxed);
}

void UpstreamSelector::report(std::size_t upstream, std::size_t server, bool success, bool trial,
                              std::chrono::microseconds latency) {
    auto& st = state(upstream, server);
    std::int64_t now = shm::monotonic_ms();
    if (success) {
        st.consecutive_failures.store(0, std::memory_order_relaxed);
        if (trial || st.circuit.load(std::memory_order_relaxed) != 0) {
            st.circuit.store(static_cast<std::uint8_t>(shm::Circuit::Closed),
                             std::memory_order_relaxed);
            st.times_opened.store(0, std::memory_order_relaxed);
            st.trial_in_flight.store(0, std::memory_order_relaxed);
        }
        // Races between workers lose a sample now and then; the average does not care.
        auto sample = static_cast<double>(std::max<std::int64_t>(latency.count(), 1));
        auto old = st.ewma_us.load(std::memory_order_relaxed);
        double next = old == 0 ? sample : old * (1 - kEwmaWeight) + sample * kEwmaWeight;
        st.ewma_us.store(static_cast<std::uint32_t>(std::min(next, 4e9)),
                         std::memory_order_relaxed);
        return;
    }
    st.failures.fetch_add(1, std::memory_order_relaxed);
    std::uint32_t failures = st.consecutive_failures.fetch_add(1, std::memory_order_relaxed) + 1;
    bool closed = st.circuit.load(std::memory_order_relaxed) ==
                  static_cast<std::uint8_t>(shm::Circuit::Closed);
    if (trial || (closed && failures >= kFailuresToOpen)) {
        std::uint32_t times = st.times_opened.fetch_add(1, std::memory_order_relaxed);
        st.open_until_ms.store(now + open_duration_ms(times), std::memory_order_relaxed);
        st.circuit.store(static_cast<std::uint8_t>(shm::Circuit::Open), std::memory_order_relaxed);
        st.trial_in_flight.store(0, std::memory_order_relaxed);
    }
}

}  // namespace proxyd::worker
