#include "master/metrics_render.hpp"

#include <array>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <string_view>

#include "common/version.hpp"
#include "worker/metrics_recorder.hpp"

namespace proxyd::master {

namespace {

struct FamilyInfo {
    const char* name;
    const char* type;
    const char* help;
};

// Indexed by shm::Family.
constexpr FamilyInfo kFamilies[shm::kFamilyCount] = {
    {"", "", ""},
    {"proxyd_requests_total", "counter", "Requests answered, by route, upstream and status."},
    {"proxyd_request_duration_seconds", "histogram",
     "Time from the request head to the end of the response, by route."},
    {"proxyd_upstream_requests_total", "counter",
     "Upstream responses received, by upstream, server and status."},
    {"proxyd_upstream_response_duration_seconds", "histogram",
     "Time from the start of an upstream attempt to its response head."},
    {"proxyd_rate_limited_total", "counter", "Requests refused with 429, by rate limit."},
    {"proxyd_auth_failures_total", "counter",
     "Requests refused with 401/403, by route and reason."},
};

using Values = std::array<std::uint64_t, shm::kSeriesValues>;

}  // namespace

void append_metric_header(std::string& out, const char* name, const char* type, const char* help) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type;
    out += '\n';
}

void append_metric_sample(std::string& out, std::string_view name, std::string_view labels,
                          std::string_view value) {
    out += name;
    if (!labels.empty()) {
        out += '{';
        out += labels;
        out += '}';
    }
    out += ' ';
    out += value;
    out += '\n';
}

namespace {

std::string number(std::uint64_t value) {
    return std::to_string(value);
}

std::string number(double value) {
    char text[64];
    std::snprintf(text, sizeof text, "%.9g", value);
    return text;
}

std::string bound_text(std::size_t bucket) {
    if (bucket + 1 == shm::kBucketCount) return "+Inf";
    return number(shm::kBucketBounds[bucket]);
}

void histogram(std::string& out, std::string_view name, const std::string& labels,
               const Values& values) {
    std::string bucket_name = std::string(name) + "_bucket";
    std::uint64_t cumulative = 0;
    for (std::size_t b = 0; b < shm::kBucketCount; ++b) {
        cumulative += values[b];
        std::string with_le = labels;
        if (!with_le.empty()) with_le += ',';
        with_le += "le=\"" + bound_text(b) + "\"";
        append_metric_sample(out, bucket_name, with_le, number(cumulative));
    }
    append_metric_sample(out, std::string(name) + "_sum", labels,
                         number(static_cast<double>(values[shm::kSumIndex]) / 1e6));
    // The count is the +Inf bucket by definition: the two are read at different instants, and
    // a scraper must never see them disagree.
    append_metric_sample(out, std::string(name) + "_count", labels, number(cumulative));
}

// Every labelled series of every slot, summed by (family, labels).
std::map<std::uint32_t, std::map<std::string, Values>> sum_series(const shm::MetricsLayout& m) {
    std::map<std::uint32_t, std::map<std::string, Values>> families;
    for (const auto& table : m.slots) {
        std::uint32_t used = table.used.load(std::memory_order_acquire);
        for (std::uint32_t i = 0; i < used && i < shm::kSeriesPerSlot; ++i) {
            const shm::Series& s = table.series[i];
            std::uint32_t family = s.family.load(std::memory_order_relaxed);
            if (family == 0 || family >= shm::kFamilyCount) continue;
            auto [it, fresh] = families[family].try_emplace(
                std::string(s.labels, std::min<std::size_t>(s.label_length, shm::kLabelBytes)));
            if (fresh) it->second.fill(0);
            for (std::size_t v = 0; v < shm::kSeriesValues; ++v) {
                it->second[v] += s.values[v].load(std::memory_order_relaxed);
            }
        }
    }
    return families;
}

void render_series(const MetricsInput& input, std::string& out) {
    auto families = sum_series(*input.series);
    for (std::uint32_t f = 1; f < shm::kFamilyCount; ++f) {
        const FamilyInfo& info = kFamilies[f];
        append_metric_header(out, info.name, info.type, info.help);
        for (const auto& [labels, values] : families[f]) {
            if (std::string_view(info.type) == "histogram") {
                histogram(out, info.name, labels, values);
            } else {
                append_metric_sample(out, info.name, labels, number(values[0]));
            }
        }
    }
}

void render_connections(const MetricsInput& input, std::string& out) {
    std::int64_t active = 0;
    std::uint64_t total = 0;
    for (const auto& slot : input.stats->slots) {
        active += slot.connections_active.load(std::memory_order_relaxed);
        total += slot.connections_total.load(std::memory_order_relaxed);
    }
    append_metric_header(out, "proxyd_connections_active", "gauge", "Open client connections.");
    append_metric_sample(out, "proxyd_connections_active", "",
                         number(static_cast<std::uint64_t>(active > 0 ? active : 0)));
    append_metric_header(out, "proxyd_connections_total", "counter",
                         "Client connections accepted.");
    append_metric_sample(out, "proxyd_connections_total", "", number(total));
}

void render_upstreams(const MetricsInput& input, std::string& out) {
    append_metric_header(out, "proxyd_upstream_server_healthy", "gauge",
                         "1 when the server passes its health checks, else 0.");
    std::string labels;
    auto server_labels = [&](const config::Upstream& upstream, const config::UpstreamServer& s) {
        labels.clear();
        labels += "upstream=\"";
        worker::append_label_value(labels, upstream.name);
        labels += "\",server=\"";
        worker::append_label_value(labels, s.id);
        labels += '"';
    };
    for (const auto& upstream : input.config->upstreams) {
        for (const auto& server : upstream.servers) {
            const auto& st = input.upstream_state->servers[server.state_index];
            server_labels(upstream, server);
            append_metric_sample(out, "proxyd_upstream_server_healthy", labels,
                                 st.unhealthy.load(std::memory_order_relaxed) == 0 ? "1" : "0");
        }
    }
    append_metric_header(out, "proxyd_upstream_server_active_connections", "gauge",
                         "Requests in flight to the server, over all workers.");
    for (const auto& upstream : input.config->upstreams) {
        for (const auto& server : upstream.servers) {
            const auto& st = input.upstream_state->servers[server.state_index];
            server_labels(upstream, server);
            auto active = st.active.load(std::memory_order_relaxed);
            append_metric_sample(out, "proxyd_upstream_server_active_connections", labels,
                                 number(static_cast<std::uint64_t>(active > 0 ? active : 0)));
        }
    }
}

void render_master(const MetricsInput& input, std::string& out) {
    append_metric_header(out, "proxyd_workers", "gauge", "Workers of the current generation.");
    append_metric_sample(out, "proxyd_workers", "",
                         number(static_cast<std::uint64_t>(input.workers)));
    append_metric_header(out, "proxyd_worker_restarts_total", "counter",
                         "Workers replaced after an unexpected exit.");
    append_metric_sample(out, "proxyd_worker_restarts_total", "", number(input.worker_restarts));
    append_metric_header(out, "proxyd_reloads_total", "counter", "Reloads, by result.");
    append_metric_sample(out, "proxyd_reloads_total", "result=\"success\"",
                         number(input.reloads_ok));
    append_metric_sample(out, "proxyd_reloads_total", "result=\"failure\"",
                         number(input.reloads_failed));
    append_metric_header(out, "proxyd_config_generation", "gauge",
                         "Generation of the running workers.");
    append_metric_sample(out, "proxyd_config_generation", "",
                         number(static_cast<std::uint64_t>(input.generation)));
    append_metric_header(out, "proxyd_build_info", "gauge", "Always 1; the version is a label.");
    append_metric_sample(out, "proxyd_build_info", std::string("version=\"") + kVersion + "\"",
                         "1");
    append_metric_header(out, "proxyd_tls_certificate_expiry_timestamp_seconds", "gauge",
                         "When each configured certificate expires (unix time).");
    std::string labels;
    for (const auto& certificate : input.certificates) {
        labels = "cert=\"";
        worker::append_label_value(labels, certificate.cert_file);
        labels += '"';
        append_metric_sample(out, "proxyd_tls_certificate_expiry_timestamp_seconds", labels,
                             number(static_cast<std::uint64_t>(certificate.not_after)));
    }
}

}  // namespace

void render_metrics(const MetricsInput& input, std::string& out) {
    out.clear();
    render_series(input, out);
    render_connections(input, out);
    render_upstreams(input, out);
    render_master(input, out);
}

}  // namespace proxyd::master
