// What each admin API endpoint does (master/admin_server.cpp is the HTTP side; backend changes
// are in runtime_backends.cpp).
#include <spdlog/spdlog.h>

#include "common/config/from_json.hpp"
#include "common/config/load.hpp"
#include "common/config/to_json.hpp"
#include "common/util/atomic_file.hpp"
#include "master/dashboard_page.hpp"
#include "master/master.hpp"

namespace proxyd::master {

namespace {

std::string query_value(const AdminCall& call, const std::string& key) {
    auto it = call.query.find(key);
    return it == call.query.end() ? "" : it->second;
}

}  // namespace

void Master::setup_admin_routes() {
    admin_server_ = std::make_unique<AdminServer>(base_.get());
    auto& a = *admin_server_;
    a.route(EVHTTP_REQ_GET, "/api/v1/backends", [this](const AdminCall& call, std::uint64_t) {
        const std::string upstream = query_value(call, "upstream");
        auto backends = backends_json(upstream);
        if (!backends) {
            return std::optional(admin_error(404, "unknown upstream \"" + upstream + "\""));
        }
        return std::optional(AdminReply{200, nlohmann::json{{"upstreams", *backends}}});
    });
    a.route(EVHTTP_REQ_GET, "/api/v1/stats/server", [this](const AdminCall&, std::uint64_t) {
        return std::optional(AdminReply{200, stats_server_json()});
    });
    a.route(EVHTTP_REQ_GET, "/api/v1/status", [this](const AdminCall&, std::uint64_t) {
        return std::optional(AdminReply{200, status_json()});  // as `proxyctl status --json`
    });
    a.route(EVHTTP_REQ_GET, "/api/v1/stats/routes", [this](const AdminCall&, std::uint64_t) {
        return std::optional(AdminReply{200, routes_json()});
    });
    a.route(EVHTTP_REQ_GET, "/api/v1/stats/backend", [this](const AdminCall& call, std::uint64_t) {
        const std::string upstream = query_value(call, "upstream");
        const std::string backend = query_value(call, "backend_id");
        if (upstream.empty() || backend.empty()) {
            return std::optional(admin_error(400, "upstream and backend_id are required"));
        }
        return std::optional(stats_backend(upstream, backend));
    });
    a.route(EVHTTP_REQ_POST, "/api/v1/config/reload-tls",
            [this](const AdminCall&, std::uint64_t ticket) -> std::optional<AdminReply> {
                reload_certificates(ticket);
                return std::nullopt;  // answered through answer()
            });
    // What `proxyctl reload` does, answered when the new generation serves (or was refused).
    a.route(EVHTTP_REQ_POST, "/api/v1/config/reload",
            [this](const AdminCall&, std::uint64_t ticket) -> std::optional<AdminReply> {
                if (put_config_ticket_ != 0) {
                    return admin_error(409, "a PUT /api/v1/config is being applied; try again");
                }
                request_reload(ticket);
                return std::nullopt;  // answered through answer()
            });
    a.route(EVHTTP_REQ_POST, "/api/v1/report", [this](const AdminCall& call, std::uint64_t) {
        const auto& body = call.body;
        if (!body.is_object() || !body.contains("upstream") || !body.contains("backend_id") ||
            !body["upstream"].is_string() || !body["backend_id"].is_string() ||
            !body.contains("performance") || !body["performance"].is_object()) {
            return std::optional(admin_error(
                400,
                "expected {\"upstream\", \"backend_id\", \"performance\": {\"cpu_usage\", "
                "\"memory_usage\", \"load_avg_1\"}}"));
        }
        nlohmann::json flat = {{"upstream", body["upstream"]}, {"backend_id", body["backend_id"]}};
        for (const char* key : {"cpu_usage", "memory_usage", "load_avg_1"}) {
            const auto& value = body["performance"].value(key, nlohmann::json());
            if (!value.is_number()) {
                return std::optional(
                    admin_error(400, std::string("performance.") + key + " must be a number"));
            }
            flat[key] = value;
        }
        std::string error;
        if (!record_report(flat, error)) {
            return std::optional(admin_error(error.starts_with("unknown") ? 404 : 400, error));
        }
        return std::optional(AdminReply{200, nlohmann::json{{"ok", true}}});
    });
    a.route(EVHTTP_REQ_GET, "/api/v1/config", [this](const AdminCall&, std::uint64_t) {
        // As written (DNS names unexpanded), secrets left out.
        return std::optional(
            AdminReply{200, nlohmann::json{{"config", config::to_json(source_config_)},
                                           {"file", options_.config_path},
                                           {"generation", generation_}}});
    });
    a.route(EVHTTP_REQ_PUT, "/api/v1/config", [this](const AdminCall& call, std::uint64_t ticket) {
        return put_config(call.body, ticket);
    });
    a.route(EVHTTP_REQ_POST, "/api/v1/backends/add", [this](const AdminCall& call, std::uint64_t) {
        return std::optional(add_backend(call.body));
    });
    a.route(EVHTTP_REQ_PUT, "/api/v1/backends/update",
            [this](const AdminCall& call, std::uint64_t) {
                return std::optional(update_backend(call.body));
            });
    a.route(EVHTTP_REQ_DELETE, "/api/v1/cache", [this](const AdminCall& call, std::uint64_t) {
        std::string prefix = query_value(call, "prefix");
        if (prefix.empty()) prefix = query_value(call, "key_prefix");
        return std::optional(purge_cache(prefix, query_value(call, "host")));
    });
    a.route(EVHTTP_REQ_DELETE, "/api/v1/backends/remove",
            [this](const AdminCall& call, std::uint64_t) {
                return std::optional(
                    remove_backend(query_value(call, "upstream"), query_value(call, "backend_id")));
            });
    a.route(EVHTTP_REQ_POST, "/api/v1/backends/disconnect",
            [this](const AdminCall& call, std::uint64_t) {
                return std::optional(disconnect_backend(query_value(call, "upstream"),
                                                        query_value(call, "backend_id")));
            });
    a.set_dashboard([this](const std::string& csrf) {
        nlohmann::json view = {
            {"status", status_json()}, {"stats", stats_server_json()}, {"routes", routes_json()}};
        return render_dashboard_page(view, csrf);
    });
}

nlohmann::json Master::routes_json() {
    return route_stats_.observe(std::chrono::steady_clock::now(), sum_route_totals(*metrics_));
}

// Validated like `proxyd -t`, written over the config file, applied as a reload. The body is the
// whole config, so runtime backend changes are dropped (they are in it, as GET showed them). If
// the reload is refused, the file and the changes are put back (see answer()).
std::optional<AdminReply> Master::put_config(const nlohmann::json& body, std::uint64_t ticket) {
    if (!body.is_object() || !body.contains("config") || !body["config"].is_object()) {
        return admin_error(400,
                           "expected {\"config\": {...}}, in the shape GET /api/v1/config returns");
    }
    if (stopping_ || transition_ || upgrade_ || put_config_ticket_ != 0) {
        return admin_error(409, "a reload, scaling, upgrade or stop is in progress; try again");
    }
    std::string error;
    auto text = config::json_to_toml(body["config"], error);
    if (!text) return admin_error(400, error);
    auto loaded = config::load_string(*text, options_.config_path);
    if (!loaded.config) {
        // Places are in the TOML the body became (sent along), not in the config file.
        nlohmann::json errors = nlohmann::json::array();
        for (auto e : loaded.errors) {
            e.file = "body";
            errors.push_back(e.format());
        }
        return AdminReply{
            400, {{"error", "configuration invalid"}, {"errors", errors}, {"toml", *text}}};
    }
    auto previous = config::read_config_text(options_.config_path, error);
    if (!previous) previous = source_text_;
    const std::string header = "# Written by proxyd through PUT /api/v1/config.\n";
    if (!write_file_atomically(options_.config_path, header + *text, error)) {
        return admin_error(500, "the config file was not replaced: " + error);
    }
    put_config_ticket_ = ticket;
    put_config_previous_text_ = std::move(*previous);
    put_config_previous_overlay_ = overlay_;
    overlay_.clear();
    std::string state_file = loaded.config->server.state_file;
    if (!state_file.empty() && !config::write_state_file(state_file, overlay_, error)) {
        spdlog::error("PUT /api/v1/config: state_file: {}", error);
    }
    spdlog::info("admin: PUT /api/v1/config wrote {}; reloading", options_.config_path);
    request_reload(ticket);
    return std::nullopt;
}

void Master::restore_config_file_if_refused(std::uint64_t requester, bool ok) {
    if (put_config_ticket_ == 0 || requester != put_config_ticket_) return;
    put_config_ticket_ = 0;
    if (ok) return;
    std::string error;
    if (!write_file_atomically(options_.config_path, put_config_previous_text_, error)) {
        spdlog::error("cannot put back the previous config file: {}", error);
    }
    overlay_ = std::move(put_config_previous_overlay_);
    if (!save_overlay(overlay_, error)) spdlog::error("{}", error);
}

void Master::configure_admin() {
    if (!admin_server_) return;
    std::string error;
    if (!admin_server_->configure(config_.admin, error)) {
        spdlog::error("{}; the admin API stays where it was", error);
    }
}

// One server's numbers: the shared state, and its latency percentiles over all time from the
// upstream-response histogram summed over every worker slot.
AdminReply Master::stats_backend(const std::string& upstream, const std::string& backend) const {
    auto all = upstreams_json();
    if (!all.contains(upstream)) return admin_error(404, "unknown upstream \"" + upstream + "\"");
    for (const auto& server : all[upstream]["servers"]) {
        if (server["id"] != backend) continue;
        std::array<std::uint64_t, shm::kBucketCount> buckets{};
        std::string labels = "upstream=\"" + upstream + "\",server=\"" + backend + "\"";
        for (const auto& table : metrics_->slots) {
            std::uint32_t used = table.used.load(std::memory_order_acquire);
            for (std::uint32_t i = 0; i < used && i < shm::kSeriesPerSlot; ++i) {
                const auto& s = table.series[i];
                if (static_cast<shm::Family>(s.family.load(std::memory_order_relaxed)) !=
                        shm::Family::UpstreamDuration ||
                    std::string_view(s.labels, s.label_length) != labels) {
                    continue;
                }
                for (std::size_t b = 0; b < shm::kBucketCount; ++b) {
                    buckets[b] += s.values[b].load(std::memory_order_relaxed);
                }
            }
        }
        nlohmann::json out = server;
        out["upstream"] = upstream;
        out["latency_ms"] = {{"p50", quantile_ms(buckets, 0.5)},
                             {"p90", quantile_ms(buckets, 0.9)},
                             {"p99", quantile_ms(buckets, 0.99)}};
        return {200, out};
    }
    return admin_error(404, "unknown backend \"" + backend + "\" in upstream \"" + upstream + "\"");
}

}  // namespace proxyd::master
