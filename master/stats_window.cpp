#include "master/stats_window.hpp"

#include <algorithm>

namespace proxyd::master {

RequestTotals sum_request_totals(const shm::MetricsLayout& metrics) {
    RequestTotals totals;
    for (const auto& table : metrics.slots) {
        std::uint32_t used = table.used.load(std::memory_order_acquire);
        for (std::uint32_t i = 0; i < used && i < shm::kSeriesPerSlot; ++i) {
            const shm::Series& s = table.series[i];
            auto family = static_cast<shm::Family>(s.family.load(std::memory_order_relaxed));
            if (family == shm::Family::Requests) {
                totals.requests += s.values[0].load(std::memory_order_relaxed);
            } else if (family == shm::Family::RequestDuration) {
                for (std::size_t b = 0; b < shm::kBucketCount; ++b) {
                    totals.buckets[b] += s.values[b].load(std::memory_order_relaxed);
                }
            }
        }
    }
    return totals;
}

double quantile_ms(const std::array<std::uint64_t, shm::kBucketCount>& buckets, double q) {
    std::uint64_t count = 0;
    for (auto n : buckets) count += n;
    if (count == 0) return 0;
    const double rank = q * static_cast<double>(count);
    std::uint64_t below = 0;
    for (std::size_t b = 0; b < shm::kBucketCount; ++b) {
        if (static_cast<double>(below + buckets[b]) >= rank && buckets[b] > 0) {
            double lower = b == 0 ? 0 : shm::kBucketBounds[b - 1];
            // The +Inf bucket has no upper bound: report its lower one, as Prometheus does.
            if (b + 1 == shm::kBucketCount) return lower * 1000;
            double upper = shm::kBucketBounds[b];
            double within = (rank - static_cast<double>(below)) / static_cast<double>(buckets[b]);
            return (lower + (upper - lower) * within) * 1000;
        }
        below += buckets[b];
    }
    return shm::kBucketBounds[shm::kBucketCount - 2] * 1000;
}

StatsWindow::StatsWindow(event_base* base, std::function<RequestTotals()> sample)
    : sample_(std::move(sample)) {
    samples_.push_back({std::chrono::steady_clock::now(), sample_()});
    timer_.reset(event_new(base, -1, EV_PERSIST, on_tick, this));
    timeval second{1, 0};
    event_add(timer_.get(), &second);
}

void StatsWindow::on_tick(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<StatsWindow*>(arg);
    self->samples_.push_back({std::chrono::steady_clock::now(), self->sample_()});
    while (self->samples_.size() > 61) self->samples_.pop_front();
}

double StatsWindow::rate_over(std::chrono::seconds span) const {
    const Sample& last = samples_.back();
    const Sample* first = &samples_.front();
    for (const auto& s : samples_) {
        if (last.at - s.at <= span) {
            first = &s;
            break;
        }
    }
    double seconds = std::chrono::duration<double>(last.at - first->at).count();
    if (seconds <= 0) return 0;
    return static_cast<double>(last.totals.requests - first->totals.requests) / seconds;
}

nlohmann::json StatsWindow::json() const {
    const Sample& first = samples_.front();
    const Sample& last = samples_.back();
    std::array<std::uint64_t, shm::kBucketCount> window{};
    for (std::size_t b = 0; b < shm::kBucketCount; ++b) {
        window[b] = last.totals.buckets[b] - first.totals.buckets[b];
    }
    auto round2 = [](double v) {
        return static_cast<double>(static_cast<long long>(v * 100)) / 100;
    };
    return {{"requests_per_second",
             {{"1s", round2(rate_over(std::chrono::seconds(1)))},
              {"10s", round2(rate_over(std::chrono::seconds(10)))},
              {"60s", round2(rate_over(std::chrono::seconds(60)))}}},
            {"latency_ms",
             {{"p50", round2(quantile_ms(window, 0.5))},
              {"p90", round2(quantile_ms(window, 0.9))},
              {"p99", round2(quantile_ms(window, 0.99))}}},
            {"window_seconds",
             std::chrono::duration_cast<std::chrono::seconds>(last.at - first.at).count()}};
}

}  // namespace proxyd::master
