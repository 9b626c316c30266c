// Labelled metric series in shared memory, one table per worker stats slot: the worker of the
// slot is the only writer, the master sums equal series over every slot when scraped. Like the
// plain counters (worker_stats.hpp) a slot keeps its series when its worker dies and the next
// worker of the slot adds to them, so sums never go backward — not across worker crashes, not
// across reloads (series are keyed by names, not by config indices), not across upgrades (the
// region is handed over).
//
// A table is append-only: a writer fills a series' family and label text, then publishes it by
// a release store of `used`; a published series never changes its key. Values are relaxed
// atomics, each a monotonic counter. The label text is the Prometheus form without braces
// (`route="/api/",upstream="app",status="200"`), escaped once when the series is made.
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

#include "common/shm/region.hpp"
#include "common/shm/worker_stats.hpp"

namespace proxyd::shm {

enum class Family : std::uint32_t {
    None = 0,
    Requests,          // proxyd_requests_total{route,upstream,status}
    RequestDuration,   // proxyd_request_duration_seconds{route} (histogram)
    UpstreamRequests,  // proxyd_upstream_requests_total{upstream,server,status}
    UpstreamDuration,  // proxyd_upstream_response_duration_seconds{upstream,server} (histogram)
    RateLimited,       // proxyd_rate_limited_total{rate_limit}
    AuthFailures,      // proxyd_auth_failures_total{route,reason}
};
inline constexpr std::uint32_t kFamilyCount = 7;

// Histogram upper bounds in seconds (+Inf implied after the last).
inline constexpr double kBucketBounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                           0.25,  0.5,    1,     2.5,  5,     10};
inline constexpr std::size_t kBucketCount = std::size(kBucketBounds) + 1;
// Values of a histogram series: per-bucket counts (not cumulative), then the sum in
// microseconds, then the count. A counter uses values[0].
inline constexpr std::size_t kSumIndex = kBucketCount;
inline constexpr std::size_t kCountIndex = kBucketCount + 1;
inline constexpr std::size_t kSeriesValues = kBucketCount + 2;

inline constexpr std::size_t kLabelBytes = 112;

struct Series {
    std::atomic<std::uint32_t> family{0};
    std::uint32_t label_length = 0;
    char labels[kLabelBytes];
    std::atomic<std::uint64_t> values[kSeriesValues];
};

// 100 routes x a handful of statuses plus 1,000 servers x (statuses + a histogram) fit.
inline constexpr std::size_t kSeriesPerSlot = 4096;

struct SeriesTable {
    std::atomic<std::uint32_t> used{0};
    std::atomic<std::uint64_t> dropped{0};  // observations of series that did not fit
    Series series[kSeriesPerSlot];
};

struct MetricsLayout {
    static constexpr std::uint32_t kMagic = 0x70726d73;  // "prms"
    static constexpr std::uint32_t kVersion = 1;
    LayoutHeader header;
    SeriesTable slots[kMaxWorkerSlots];
};

using MetricsRegion = Region<MetricsLayout>;

// The bucket an observation of `micros` falls in.
std::size_t bucket_of(std::uint64_t micros);

}  // namespace proxyd::shm
