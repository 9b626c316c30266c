// Current rates and latency percentiles for `proxyctl stats` (and the admin API): the master
// samples the request total and the request-duration histogram (summed over every worker slot)
// once a second and keeps the last minute, so "now" means the last 1, 10 and 60 seconds rather
// than the life of the process.
#pragma once

#include <event2/event.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <nlohmann/json.hpp>

#include "common/shm/metric_series.hpp"
#include "common/util/event_ptr.hpp"

namespace proxyd::master {

struct RequestTotals {
    std::uint64_t requests = 0;
    std::array<std::uint64_t, shm::kBucketCount> buckets{};  // request durations, per bucket
};

// Sums the Requests counters and RequestDuration buckets of every slot.
RequestTotals sum_request_totals(const shm::MetricsLayout& metrics);

// The q-quantile (0..1) in milliseconds of the observations in `buckets`, interpolated linearly
// inside its bucket as Prometheus's histogram_quantile does; 0 when there are none.
double quantile_ms(const std::array<std::uint64_t, shm::kBucketCount>& buckets, double q);

class StatsWindow {
  public:
    StatsWindow(event_base* base, std::function<RequestTotals()> sample);
    // {"requests_per_second": {"1s","10s","60s"}, "latency_ms": {"p50","p90","p99"},
    //  "window_seconds"}
    nlohmann::json json() const;

  private:
    struct Sample {
        std::chrono::steady_clock::time_point at;
        RequestTotals totals;
    };
    static void on_tick(evutil_socket_t, short, void* arg);
    double rate_over(std::chrono::seconds span) const;

    std::function<RequestTotals()> sample_;
    EventPtr timer_;
    std::deque<Sample> samples_;  // oldest first, at most 61
};

}  // namespace proxyd::master
