#include "master/route_stats.hpp"

#include "master/stats_window.hpp"

namespace proxyd::master {

namespace {

constexpr auto kWindow = std::chrono::seconds(60);
constexpr auto kSpacing = std::chrono::seconds(1);

double round2(double v) {
    return static_cast<double>(static_cast<long long>(v * 100)) / 100;
}

// Counters only grow, but a route that a reload renamed or removed may be missing from one
// side; what is missing counts as zero.
RouteTotals difference(const RouteTotals& now, const RouteTotals* before) {
    if (before == nullptr) return now;
    RouteTotals out;
    auto minus = [](std::uint64_t a, std::uint64_t b) { return a > b ? a - b : 0; };
    out.requests = minus(now.requests, before->requests);
    out.errors = minus(now.errors, before->errors);
    for (std::size_t b = 0; b < shm::kBucketCount; ++b) {
        out.buckets[b] = minus(now.buckets[b], before->buckets[b]);
    }
    return out;
}

}  // namespace

std::string label_value(std::string_view labels, std::string_view key) {
    std::size_t at = 0;
    while (at < labels.size()) {
        std::size_t eq = labels.find("=\"", at);
        if (eq == std::string_view::npos) return "";
        const bool wanted = labels.substr(at, eq - at) == key;
        std::string value;
        std::size_t i = eq + 2;
        for (; i < labels.size() && labels[i] != '"'; ++i) {
            char c = labels[i];
            if (c == '\\' && i + 1 < labels.size()) {
                c = labels[++i] == 'n' ? '\n' : labels[i];
            }
            value += c;
        }
        if (wanted) return value;
        at = i + 1;  // past the closing quote
        if (at < labels.size() && labels[at] == ',') ++at;
    }
    return "";
}

RouteTotalsMap sum_route_totals(const shm::MetricsLayout& metrics) {
    RouteTotalsMap routes;
    for (const auto& table : metrics.slots) {
        std::uint32_t used = table.used.load(std::memory_order_acquire);
        for (std::uint32_t i = 0; i < used && i < shm::kSeriesPerSlot; ++i) {
            const shm::Series& s = table.series[i];
            auto family = static_cast<shm::Family>(s.family.load(std::memory_order_relaxed));
            if (family != shm::Family::Requests && family != shm::Family::RequestDuration) {
                continue;
            }
            std::string_view labels(s.labels,
                                    std::min<std::size_t>(s.label_length, shm::kLabelBytes));
            RouteTotals& route = routes[label_value(labels, "route")];
            if (family == shm::Family::Requests) {
                std::uint64_t n = s.values[0].load(std::memory_order_relaxed);
                route.requests += n;
                if (label_value(labels, "status").starts_with('5')) route.errors += n;
            } else {
                for (std::size_t b = 0; b < shm::kBucketCount; ++b) {
                    route.buckets[b] += s.values[b].load(std::memory_order_relaxed);
                }
            }
        }
    }
    return routes;
}

nlohmann::json RouteStatsWindow::observe(Clock::time_point now, RouteTotalsMap totals) {
    while (!snapshots_.empty() && now - snapshots_.front().at > kWindow) snapshots_.pop_front();
    const Snapshot* base = snapshots_.empty() ? nullptr : &snapshots_.front();
    const double seconds = base ? std::chrono::duration<double>(now - base->at).count() : 0.0;
    nlohmann::json routes = nlohmann::json::object();
    for (const auto& [name, route] : totals) {
        const RouteTotals* before = nullptr;
        if (base) {
            auto it = base->totals.find(name);
            if (it != base->totals.end()) before = &it->second;
        }
        RouteTotals window = base ? difference(route, before) : route;
        routes[name] = {
            {"requests", route.requests},
            {"errors", route.errors},
            {"requests_per_second",
             seconds > 0 ? round2(static_cast<double>(window.requests) / seconds) : 0.0},
            {"error_rate", window.requests ? static_cast<double>(window.errors) /
                                                 static_cast<double>(window.requests)
                                           : 0.0},
            {"latency_ms",
             {{"p50", round2(quantile_ms(window.buckets, 0.5))},
              {"p99", round2(quantile_ms(window.buckets, 0.99))}}}};
    }
    if (snapshots_.empty() || now - snapshots_.back().at >= kSpacing) {
        snapshots_.push_back({now, std::move(totals)});
    }
    return {{"window_seconds", round2(seconds)}, {"routes", routes}};
}

}  // namespace proxyd::master
