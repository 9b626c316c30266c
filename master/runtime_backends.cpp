// Backend changes through the admin API (add, update, remove, disconnect). Each one becomes a
// change in the backend overlay (common/config/overlay.hpp), is validated by loading the config
// file's text with it, exactly as a server written in the file would be, and is then applied in
// place: the upstream's servers replaced in the master's config, sent to every worker (which
// swaps them without a new generation), written to server.state_file, and picked up by the health
// checks. Requests in flight keep their server.
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/config/server_list.hpp"
#include "common/net/fd_passing.hpp"
#include "master/master.hpp"

namespace proxyd::master {

namespace {

using nlohmann::json;

constexpr std::chrono::milliseconds kResolveTimeout{3000};

std::optional<std::size_t> upstream_index(const config::Config& config, const std::string& name) {
    for (std::size_t i = 0; i < config.upstreams.size(); ++i) {
        if (config.upstreams[i].name == name) return i;
    }
    return std::nullopt;
}

const config::UpstreamServer* find_server(const config::Upstream& upstream, const std::string& id) {
    for (const auto& server : upstream.servers) {
        if (server.id == id) return &server;
    }
    return nullptr;
}

std::string quoted(const std::string& text) {
    return "\"" + text + "\"";
}

// The body's "upstream" and "backend" members, or a 400 saying what is wrong.
std::optional<AdminReply> check_shape(const json& body) {
    if (!body.is_object()) {
        return admin_error(400, "expected {\"upstream\": NAME, \"backend\": {...}}");
    }
    if (!body.contains("upstream") || !body["upstream"].is_string()) {
        return admin_error(400, "\"upstream\" (a string) is required");
    }
    if (!body.contains("backend") || !body["backend"].is_object()) {
        return admin_error(400, "\"backend\" (an object of server keys) is required");
    }
    for (const auto& [key, value] : body["backend"].items()) {
        if (!value.is_primitive() || value.is_null()) {
            return admin_error(
                400, "backend key " + quoted(key) + " must be a string, a number or a boolean");
        }
    }
    return std::nullopt;
}

// What the loader said about a change: messages about values the change brought have no place
// in the file, and are given without the file's name.
AdminReply invalid_change(const std::vector<config::ConfigError>& errors) {
    json list = json::array();
    for (const auto& error : errors) {
        list.push_back(error.line == 0 ? error.message : error.format());
    }
    std::string first = list.empty() ? std::string("invalid") : list[0].get<std::string>();
    return {400, json{{"error", "invalid backend: " + first}, {"errors", list}}};
}

}  // namespace

AdminReply Master::add_backend(const json& body) {
    if (auto bad = check_shape(body)) return *bad;
    const std::string name = body["upstream"];
    json server = body["backend"];
    if (!server.contains("address") || !server["address"].is_string()) {
        return admin_error(400,
                           "backend \"address\" (a string like \"127.0.0.1:3001\") is "
                           "required");
    }
    if (server.contains("id") && (!server["id"].is_string() || server["id"] == "")) {
        return admin_error(400, "backend \"id\" must be a non-empty string");
    }
    if (!server.contains("id")) server["id"] = server["address"];
    auto u = upstream_index(source_config_, name);
    if (!u) return admin_error(404, "unknown upstream " + quoted(name));
    const std::string id = server["id"];
    if (find_server(source_config_.upstreams[*u], id)) {
        return admin_error(400, "backend " + quoted(id) + " already exists in upstream " +
                                    quoted(name) + "; change it with PUT /api/v1/backends/update");
    }
    config::BackendOverlay next = overlay_;
    next.add(name, server);
    if (auto failed = apply_backend_change(std::move(next), *u)) return *failed;
    spdlog::info("admin: backend {} ({}) added to upstream {}", id,
                 server["address"].get<std::string>(), name);
    return {200, json{{"upstream", name}, {"backend", server_json(name, id)}}};
}

AdminReply Master::update_backend(const json& body) {
    if (auto bad = check_shape(body)) return *bad;
    const std::string name = body["upstream"];
    json keys = body["backend"];
    if (!keys.contains("id") || !keys["id"].is_string()) {
        return admin_error(400, "backend \"id\" (a string) is required");
    }
    const std::string id = keys["id"];
    auto u = upstream_index(source_config_, name);
    if (!u) return admin_error(404, "unknown upstream " + quoted(name));
    const auto* current = find_server(source_config_.upstreams[*u], id);
    if (current == nullptr) {
        return admin_error(404, "unknown backend " + quoted(id) + " in upstream " + quoted(name));
    }
    if (keys.contains("address")) {
        if (keys["address"] != current->address.text) {
            return admin_error(400, "the address of backend " + quoted(id) +
                                        " cannot change; remove it and add the new one");
        }
        keys.erase("address");
    }
    keys.erase("id");
    config::BackendOverlay next = overlay_;
    next.update(name, id, keys);
    if (auto failed = apply_backend_change(std::move(next), *u)) return *failed;
    spdlog::info("admin: backend {} of upstream {} updated: {}", id, name, keys.dump());
    return {200, json{{"upstream", name}, {"backend", server_json(name, id)}}};
}

AdminReply Master::remove_backend(const std::string& name, const std::string& id) {
    if (name.empty() || id.empty()) {
        return admin_error(400, "the query parameters upstream and backend_id are required");
    }
    auto u = upstream_index(source_config_, name);
    if (!u) return admin_error(404, "unknown upstream " + quoted(name));
    const auto& upstream = source_config_.upstreams[*u];
    if (find_server(upstream, id) == nullptr) {
        return admin_error(404, "unknown backend " + quoted(id) + " in upstream " + quoted(name));
    }
    if (upstream.servers.size() == 1) {
        return admin_error(400, "backend " + quoted(id) + " is the last server of upstream " +
                                    quoted(name) + "; an upstream needs at least one server");
    }
    config::BackendOverlay next = overlay_;
    next.remove(name, id);
    if (auto failed = apply_backend_change(std::move(next), *u)) return *failed;
    spdlog::info("admin: backend {} removed from upstream {}", id, name);
    return {200, json{{"upstream", name}, {"removed", id}}};
}

// Draining is the server key `drain`: kept like any other change, undone by an update.
AdminReply Master::disconnect_backend(const std::string& name, const std::string& id) {
    if (name.empty() || id.empty()) {
        return admin_error(400, "the query parameters upstream and backend_id are required");
    }
    auto u = upstream_index(source_config_, name);
    if (!u) return admin_error(404, "unknown upstream " + quoted(name));
    if (find_server(source_config_.upstreams[*u], id) == nullptr) {
        return admin_error(404, "unknown backend " + quoted(id) + " in upstream " + quoted(name));
    }
    config::BackendOverlay next = overlay_;
    next.update(name, id, json{{"drain", true}});
    if (auto failed = apply_backend_change(std::move(next), *u)) return *failed;
    spdlog::info("admin: backend {} of upstream {} disconnected and draining", id, name);
    return {200, json{{"upstream", name}, {"disconnected", id}}};
}

std::optional<AdminReply> Master::apply_backend_change(config::BackendOverlay next, std::size_t u) {
    if (transition_ || upgrade_ || stopping_) {
        return admin_error(409, "a reload, scaling, upgrade or stop is in progress; try again");
    }
    std::vector<std::string> skipped;
    auto loaded = config::load_with_overlay(source_text_, options_.config_path, next, skipped);
    if (!loaded.config) return invalid_change(loaded.errors);
    if (loaded.config->upstreams.size() != source_config_.upstreams.size() ||
        loaded.config->upstreams[u].name != source_config_.upstreams[u].name) {
        return admin_error(500, "the config file's upstreams no longer match the running ones");
    }
    config::Config source = source_config_;
    source.upstreams[u].servers = std::move(loaded.config->upstreams[u].servers);

    // Names among the new servers are resolved now (at most kResolveTimeout).
    Resolutions resolutions = resolutions_;
    config::Config names_only;
    names_only.upstreams.push_back(source.upstreams[u]);
    for (auto& [name, records] : resolve_now(names_only, kResolveTimeout)) {
        resolutions[name] = std::move(records);
    }
    config::Config expanded = source;
    std::string error;
    if (!expand_config(expanded, resolutions, error)) return admin_error(500, error);
    if (!tls_.client || !tls_.client->add_contexts(expanded, error)) {
        return admin_error(400, "invalid backend: " + error);
    }
    if (!save_overlay(next, error)) return admin_error(500, error);

    config_.upstreams[u].servers = expanded.upstreams[u].servers;
    source_config_ = std::move(source);
    resolutions_ = std::move(resolutions);
    overlay_ = std::move(next);
    send_servers_to_workers(u);
    apply_upstream_changes();
    return std::nullopt;
}

bool Master::save_overlay(const config::BackendOverlay& overlay, std::string& error) const {
    const std::string& path = config_.server.state_file;
    if (path.empty()) return true;
    if (!config::write_state_file(path, overlay, error)) {
        error = "the change was not made: state_file: " + error;
        return false;
    }
    return true;
}

// In a memfd: a long list would not fit one channel message.
void Master::send_servers_to_workers(std::size_t u) {
    const std::string text =
        config::encode_server_list(config::ServerList{u, config_.upstreams[u].servers});
    UniqueFd fd(::memfd_create("proxyd-servers", MFD_CLOEXEC));
    std::size_t done = 0;
    while (fd && done < text.size()) {
        ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
        if (n <= 0) break;
        done += static_cast<std::size_t>(n);
    }
    if (!fd || done != text.size()) {
        spdlog::error("cannot pass the new server list to the workers; restarting them");
        config::Config source = source_config_;
        start_generation(std::move(source), resolutions_, "backends", 0);
        return;
    }
    for (auto& worker : workers_) send_command(worker, "servers", {fd.get()});
}

json Master::server_json(const std::string& upstream, const std::string& id) const {
    auto all = upstreams_json();
    if (all.contains(upstream)) {
        for (const auto& server : all[upstream]["servers"]) {
            if (server["id"] == id) return server;
        }
    }
    return json{{"id", id}};
}

}  // namespace proxyd::master
