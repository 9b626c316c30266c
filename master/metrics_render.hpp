// The Prometheus text exposition (format 0.0.4) of everything proxyd counts: the labelled series
// of every worker slot summed (exact across workers, never backward), the plain per-slot
// counters, the shared upstream state, and the master's own counters and gauges.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/config/types.hpp"
#include "common/shm/metric_series.hpp"
#include "common/shm/upstream_state.hpp"
#include "common/shm/worker_stats.hpp"
#include "common/tls/server_context.hpp"

namespace proxyd::master {

struct MetricsInput {
    const shm::MetricsLayout* series = nullptr;
    const shm::StatsLayout* stats = nullptr;
    const shm::UpstreamStateLayout* upstream_state = nullptr;
    const config::Config* config = nullptr;  // the current generation's servers
    int workers = 0;                         // current generation, running
    std::uint64_t worker_restarts = 0;
    std::uint64_t reloads_ok = 0;
    std::uint64_t reloads_failed = 0;
    int generation = 0;
    std::vector<tls::CertificateSummary> certificates;
};

void render_metrics(const MetricsInput& input, std::string& out);

// One family's "# HELP" and "# TYPE" lines, and one sample line ("name{labels} value"): for
// families rendered elsewhere (the cache's, master/cache.cpp).
void append_metric_header(std::string& out, const char* name, const char* type, const char* help);
void append_metric_sample(std::string& out, std::string_view name, std::string_view labels,
                          std::string_view value);

}  // namespace proxyd::master
