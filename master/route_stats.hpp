// Per-route numbers for the dashboard (GET /api/v1/stats/routes): requests, server errors and
// latency percentiles, summed over every worker slot from the metrics shared memory like
// /metrics does. "Now" is a window: each call keeps a snapshot (at most one a second, the last
// minute of them), and rates and percentiles are the difference between the newest and the
// oldest. Snapshots are only taken while someone asks, so an unwatched dashboard costs nothing.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/shm/metric_series.hpp"

namespace proxyd::master {

struct RouteTotals {
    std::uint64_t requests = 0;
    std::uint64_t errors = 0;  // answered 5xx (by the upstream or by the proxy)
    std::array<std::uint64_t, shm::kBucketCount> buckets{};  // request durations
};

// Route label ("" = requests that matched no route) -> totals.
using RouteTotalsMap = std::map<std::string, RouteTotals>;

RouteTotalsMap sum_route_totals(const shm::MetricsLayout& metrics);
// The unescaped value of `key` in a series' label text (key="v",key2="w"); "" when absent.
std::string label_value(std::string_view labels, std::string_view key);

class RouteStatsWindow {
  public:
    using Clock = std::chrono::steady_clock;
    // Records `totals` as of `now` and answers {"window_seconds", "routes": {NAME: {"requests",
    // "errors", "requests_per_second", "error_rate", "latency_ms": {"p50", "p99"}}}}, where the
    // rates and percentiles cover the window (all time while there is no older snapshot).
    nlohmann::json observe(Clock::time_point now, RouteTotalsMap totals);

  private:
    struct Snapshot {
        Clock::time_point at;
        RouteTotalsMap totals;
    };
    std::deque<Snapshot> snapshots_;  // oldest first, one a second at most, the last minute
};

}  // namespace proxyd::master
