#include "worker/metrics_recorder.hpp"

#include <cstring>

namespace proxyd::worker {

namespace {

// Cache keys: family (8 bits) | first index (20 bits) | second index (20 bits) | status (16).
std::uint64_t cache_key(shm::Family family, std::uint64_t a, std::uint64_t b, int status) {
    return static_cast<std::uint64_t>(family) << 56 | (a & 0xfffff) << 36 | (b & 0xfffff) << 16 |
           static_cast<std::uint64_t>(status & 0xffff);
}

void append_label(std::string& out, std::string_view name, std::string_view value) {
    if (!out.empty()) out += ',';
    out += name;
    out += "=\"";
    append_label_value(out, value);
    out += '"';
}

}  // namespace

void append_label_value(std::string& out, std::string_view value) {
    for (char c : value) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '"') {
            out += "\\\"";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
}

MetricsRecorder::MetricsRecorder(shm::SeriesTable* table, const config::Config& config)
    : table_(table), config_(config) {
    if (table_ == nullptr) return;
    // The slot may hold series of earlier workers: keep adding to those.
    std::uint32_t used = table_->used.load(std::memory_order_acquire);
    for (std::uint32_t i = 0; i < used && i < shm::kSeriesPerSlot; ++i) {
        shm::Series& s = table_->series[i];
        std::string key(1, static_cast<char>(s.family.load(std::memory_order_relaxed)));
        key.append(s.labels, s.label_length);
        by_key_.emplace(std::move(key), &s);
    }
}

shm::Series* MetricsRecorder::series(shm::Family family, const std::string& labels) {
    std::string key(1, static_cast<char>(family));
    key += labels;
    if (auto it = by_key_.find(key); it != by_key_.end()) return it->second;
    std::uint32_t used = table_->used.load(std::memory_order_relaxed);
    if (used >= shm::kSeriesPerSlot || labels.size() > shm::kLabelBytes) return nullptr;
    shm::Series& s = table_->series[used];
    s.family.store(static_cast<std::uint32_t>(family), std::memory_order_relaxed);
    s.label_length = static_cast<std::uint32_t>(labels.size());
    std::memcpy(s.labels, labels.data(), labels.size());
    table_->used.store(used + 1, std::memory_order_release);  // published
    by_key_.emplace(std::move(key), &s);
    return &s;
}

void MetricsRecorder::add(shm::Series* series, std::uint64_t n) {
    series->values[0].fetch_add(n, std::memory_order_relaxed);
}

void MetricsRecorder::observe(shm::Series* histogram, std::chrono::microseconds duration) {
    auto micros = static_cast<std::uint64_t>(duration.count() > 0 ? duration.count() : 0);
    histogram->values[shm::bucket_of(micros)].fetch_add(1, std::memory_order_relaxed);
    histogram->values[shm::kSumIndex].fetch_add(micros, std::memory_order_relaxed);
    histogram->values[shm::kCountIndex].fetch_add(1, std::memory_order_relaxed);
}

void MetricsRecorder::request(const config::Route* route, std::size_t route_index, int status,
                              std::chrono::microseconds duration) {
    if (table_ == nullptr) return;
    const std::size_t index = route ? route_index + 1 : 0;
    auto& counter = cache_[cache_key(shm::Family::Requests, index, 0, status)];
    if (counter == nullptr) {
        labels_.clear();
        append_label(labels_, "route", route ? std::string_view(route->label) : "");
        append_label(labels_, "upstream", route ? std::string_view(route->upstream) : "");
        append_label(labels_, "status", std::to_string(status));
        counter = series(shm::Family::Requests, labels_);
    }
    auto& histogram = cache_[cache_key(shm::Family::RequestDuration, index, 0, 0)];
    if (histogram == nullptr) {
        labels_.clear();
        append_label(labels_, "route", route ? std::string_view(route->label) : "");
        histogram = series(shm::Family::RequestDuration, labels_);
    }
    if (counter == nullptr || histogram == nullptr) {
        table_->dropped.fetch_add(1, std::memory_order_relaxed);
        if (counter) add(counter);
        return;
    }
    add(counter);
    observe(histogram, duration);
}

void MetricsRecorder::upstream_response(std::size_t upstream, std::size_t server, int status,
                                        std::chrono::microseconds latency) {
    if (table_ == nullptr) return;
    const auto& up = config_.upstreams[upstream];
    auto& counter = cache_[cache_key(shm::Family::UpstreamRequests, upstream, server, status)];
    if (counter == nullptr) {
        labels_.clear();
        append_label(labels_, "upstream", up.name);
        append_label(labels_, "server", up.servers[server].id);
        append_label(labels_, "status", std::to_string(status));
        counter = series(shm::Family::UpstreamRequests, labels_);
    }
    auto& histogram = cache_[cache_key(shm::Family::UpstreamDuration, upstream, server, 0)];
    if (histogram == nullptr) {
        labels_.clear();
        append_label(labels_, "upstream", up.name);
        append_label(labels_, "server", up.servers[server].id);
        histogram = series(shm::Family::UpstreamDuration, labels_);
    }
    if (counter) add(counter);
    if (histogram) observe(histogram, latency);
    if (!counter || !histogram) table_->dropped.fetch_add(1, std::memory_order_relaxed);
}

void MetricsRecorder::rate_limited(std::size_t limit_index) {
    if (table_ == nullptr) return;
    auto& counter = cache_[cache_key(shm::Family::RateLimited, limit_index, 0, 0)];
    if (counter == nullptr) {
        labels_.clear();
        append_label(labels_, "rate_limit", config_.rate_limits[limit_index].name);
        counter = series(shm::Family::RateLimited, labels_);
    }
    if (counter) {
        add(counter);
    } else {
        table_->dropped.fetch_add(1, std::memory_order_relaxed);
    }
}

void MetricsRecorder::auth_failure(const config::Route& route, std::string_view reason) {
    if (table_ == nullptr) return;
    labels_.clear();
    append_label(labels_, "route", route.label);
    append_label(labels_, "reason", reason);
    if (shm::Series* counter = series(shm::Family::AuthFailures, labels_)) {
        add(counter);
    } else {
        table_->dropped.fetch_add(1, std::memory_order_relaxed);
    }
}

}  // namespace proxyd::worker
