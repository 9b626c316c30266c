// The master's [metrics] endpoint: what it renders and when it calls itself ready.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "master/master.hpp"
#include "master/metrics_render.hpp"

namespace proxyd::master {

namespace {

double unix_now_seconds() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

}  // namespace

void Master::configure_metrics() {
    if (!metrics_server_) return;
    std::string error;
    if (!metrics_server_->configure(config_.metrics, error)) {
        spdlog::error("{}; metrics stay where they were", error);
    }
}

nlohmann::json Master::stats_server_json() const {
    nlohmann::json stats = totals_json();
    stats["requests_completed"] = sum_request_totals(*metrics_).requests;
    std::int64_t active = 0;
    for (const auto& slot : stats_->slots) {
        active += slot.connections_active.load(std::memory_order_relaxed);
    }
    stats["connections_active"] = std::max<std::int64_t>(active, 0);
    stats["workers"] = std::count_if(workers_.begin(), workers_.end(), [&](const WorkerProcess& w) {
        return w.generation == generation_ && !w.draining;
    });
    stats["generation"] = generation_;
    stats["uptime_seconds"] = static_cast<std::int64_t>(unix_now_seconds() - started_at_);
    stats.update(stats_window_->json());
    return stats;
}

std::string Master::stats_server_text(const nlohmann::json& stats) const {
    char text[512];
    const auto& rate = stats["requests_per_second"];
    const auto& latency = stats["latency_ms"];
    std::snprintf(text, sizeof text,
                  "%llu requests; %.1f/s (1 s), %.1f/s (10 s), %.1f/s (60 s); latency over the "
                  "last %lld s: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms; %lld open connection(s), "
                  "%d worker(s), generation %d",
                  static_cast<unsigned long long>(stats["requests_completed"].get<std::uint64_t>()),
                  rate["1s"].get<double>(), rate["10s"].get<double>(), rate["60s"].get<double>(),
                  static_cast<long long>(stats["window_seconds"].get<std::int64_t>()),
                  latency["p50"].get<double>(), latency["p90"].get<double>(),
                  latency["p99"].get<double>(),
                  static_cast<long long>(stats["connections_active"].get<std::int64_t>()),
                  stats["workers"].get<int>(), generation_);
    return text;
}

std::optional<nlohmann::json> Master::backends_json(const std::string& upstream) const {
    nlohmann::json all = upstreams_json();
    if (upstream.empty()) return all;
    if (!all.contains(upstream)) return std::nullopt;
    return nlohmann::json{{upstream, all[upstream]}};
}

bool Master::ready_for_traffic() const {
    if (!started_ || stopping_) return false;
    int ready = 0;
    for (const auto& worker : workers_) {
        if (worker.generation == generation_ && !worker.draining && worker.ready) ++ready;
    }
    return ready >= config_.server.workers;
}

void Master::render_metrics_text(std::string& out) {
    MetricsInput input;
    input.series = &*metrics_;
    input.stats = &*stats_;
    input.upstream_state = &*upstream_state_;
    input.config = &config_;
    input.workers = static_cast<int>(std::count_if(
        workers_.begin(), workers_.end(),
        [&](const WorkerProcess& w) { return w.generation == generation_ && !w.draining; }));
    input.worker_restarts = worker_restarts_;
    input.reloads_ok = reloads_ok_;
    input.reloads_failed = reloads_failed_;
    input.generation = generation_;
    if (tls_.server) input.certificates = tls_.server->certificates();
    render_metrics(input, out);
    render_cache_metrics(out);
}

}  // namespace proxyd::master
