#include "common/config/overlay.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>

#include "common/config/reader.hpp"
#include "common/util/atomic_file.hpp"

namespace proxyd::config {

namespace {

using nlohmann::json;

constexpr int kStateVersion = 1;

// A server's values are scalars; anything else is refused before it gets here.
bool assign(toml::table& table, const std::string& key, const json& value) {
    if (value.is_boolean()) {
        table.insert_or_assign(key, value.get<bool>());
    } else if (value.is_number_unsigned() &&
               value.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)) {
        // Beyond TOML's integers: as a float, the loader then says what it expected.
        table.insert_or_assign(key, value.get<double>());
    } else if (value.is_number_integer()) {
        table.insert_or_assign(key, value.get<std::int64_t>());
    } else if (value.is_number_float()) {
        table.insert_or_assign(key, value.get<double>());
    } else if (value.is_string()) {
        table.insert_or_assign(key, value.get<std::string>());
    } else {
        return false;
    }
    return true;
}

// As the parser names a server: its id, else its address text.
std::string id_of(const toml::table& server) {
    for (const char* key : {"id", "address"}) {
        if (const auto* text = server.get_as<std::string>(key)) return text->get();
    }
    return {};
}

toml::table* find_server(toml::array& servers, const std::string& id, std::size_t& index) {
    for (index = 0; index < servers.size(); ++index) {
        auto* table = servers[index].as_table();
        if (table != nullptr && id_of(*table) == id) return table;
    }
    return nullptr;
}

std::string describe(const BackendOverlay::Change& change) {
    const char* what = change.removed ? "removal" : change.whole ? "addition" : "change";
    return std::string("runtime ") + what + " of server \"" + change.id + "\" in upstream \"" +
           change.upstream + "\"";
}

}  // namespace

BackendOverlay::Change* BackendOverlay::find(const std::string& upstream, const std::string& id) {
    for (auto& change : changes_) {
        if (change.upstream == upstream && change.id == id) return &change;
    }
    return nullptr;
}

void BackendOverlay::add(const std::string& upstream, const json& server) {
    const std::string id = server.value("id", server.value("address", std::string()));
    Change* change = find(upstream, id);
    if (change == nullptr) change = &changes_.emplace_back(Change{upstream, id});
    change->removed = false;
    change->whole = true;
    change->keys = server;
}

void BackendOverlay::update(const std::string& upstream, const std::string& id, const json& keys) {
    Change* change = find(upstream, id);
    if (change == nullptr || change->removed) {
        if (change == nullptr) change = &changes_.emplace_back(Change{upstream, id});
        change->removed = false;
        change->whole = false;
        change->keys = json::object();
    }
    for (const auto& [key, value] : keys.items()) change->keys[key] = value;
}

void BackendOverlay::remove(const std::string& upstream, const std::string& id) {
    Change* change = find(upstream, id);
    if (change == nullptr) change = &changes_.emplace_back(Change{upstream, id});
    change->removed = true;
    change->whole = false;
    change->keys = json::object();
}

json BackendOverlay::to_json() const {
    json list = json::array();
    for (const auto& change : changes_) {
        json entry = {{"upstream", change.upstream}, {"id", change.id}};
        if (change.removed) {
            entry["removed"] = true;
        } else {
            entry[change.whole ? "server" : "set"] = change.keys;
        }
        list.push_back(std::move(entry));
    }
    return {{"proxyd_state", kStateVersion}, {"backends", list}};
}

std::optional<BackendOverlay> BackendOverlay::from_json(const json& saved, std::string& error) {
    if (!saved.is_object() || !saved.contains("proxyd_state") ||
        !saved["proxyd_state"].is_number_integer() || saved["proxyd_state"] != kStateVersion ||
        !saved.contains("backends") || !saved["backends"].is_array()) {
        error = "not a proxyd state file (version " + std::to_string(kStateVersion) + ")";
        return std::nullopt;
    }
    BackendOverlay out;
    for (const auto& entry : saved["backends"]) {
        if (!entry.is_object() || !entry.contains("upstream") || !entry["upstream"].is_string() ||
            !entry.contains("id") || !entry["id"].is_string()) {
            error = "a backend change without \"upstream\" and \"id\": " + entry.dump();
            return std::nullopt;
        }
        Change change{entry["upstream"], entry["id"]};
        if (entry.contains("removed") && !entry["removed"].is_boolean()) {
            error = "\"removed\" must be true or false: " + entry.dump();
            return std::nullopt;
        }
        if (entry.contains("removed") && entry["removed"].get<bool>()) {
            change.removed = true;
        } else if (entry.contains("server") && entry["server"].is_object()) {
            change.whole = true;
            change.keys = entry["server"];
        } else if (entry.contains("set") && entry["set"].is_object()) {
            change.keys = entry["set"];
        } else {
            error = "a backend change that neither removes, adds nor sets: " + entry.dump();
            return std::nullopt;
        }
        out.changes_.push_back(std::move(change));
    }
    return out;
}

void BackendOverlay::apply(toml::table& root, std::vector<std::string>& skipped) const {
    for (const auto& change : changes_) {
        toml::array* servers = nullptr;
        if (auto* upstreams = root.get_as<toml::table>("upstreams")) {
            if (auto* upstream = upstreams->get_as<toml::table>(change.upstream)) {
                servers = upstream->get_as<toml::array>("servers");
            }
        }
        if (servers == nullptr) {
            skipped.push_back(describe(change) + ": the upstream is no longer in the config");
            continue;
        }
        std::size_t index = 0;
        toml::table* server = find_server(*servers, change.id, index);
        if (change.removed) {
            if (server != nullptr) servers->erase(servers->begin() + static_cast<long>(index));
            continue;
        }
        if (server == nullptr && !change.whole) {
            skipped.push_back(describe(change) + ": the server is no longer in the config");
            continue;
        }
        toml::table replacement;
        toml::table& target = change.whole ? replacement : *server;
        for (const auto& [key, value] : change.keys.items()) {
            if (!assign(target, key, value)) {
                skipped.push_back(describe(change) + ": \"" + key + "\" is not a plain value");
            }
        }
        if (!change.whole) continue;
        if (server != nullptr) {
            *server = std::move(replacement);
        } else {
            servers->push_back(std::move(replacement));
        }
    }
}

LoadResult load_with_overlay(std::string_view text, const std::string& source_name,
                             const BackendOverlay& overlay, std::vector<std::string>& skipped) {
    if (overlay.empty()) return load_string(text, source_name);
    return detail::load_edited(text, source_name,
                               [&](toml::table& root) { overlay.apply(root, skipped); });
}

EffectiveConfig load_effective(const std::string& path, const BackendOverlay* overlay) {
    EffectiveConfig out;
    std::string error;
    auto text = read_config_text(path, error);
    if (!text) {
        out.result.errors.push_back(ConfigError{path, 0, 0, "cannot read: " + error});
        return out;
    }
    out.text = std::move(*text);
    out.result = load_string(out.text, path);
    if (!out.result.config) return out;
    // Where the changes come from, for messages.
    std::string source = path;
    if (overlay != nullptr) {
        out.overlay = *overlay;
    } else if (!out.result.config->server.state_file.empty()) {
        source = out.result.config->server.state_file;
        if (!read_state_file(source, out.overlay, error)) {
            out.result.config.reset();
            out.result.errors.push_back(
                ConfigError{source, 0, 0, "state_file: " + error + " (fix or remove it)"});
            return out;
        }
    }
    if (out.overlay.empty()) return out;
    out.result = load_with_overlay(out.text, path, out.overlay, out.skipped);
    if (!out.result.config) {
        // Values a change brought have no line in the file: say where they came from.
        out.result.errors.push_back(ConfigError{
            source, 0, 0,
            "the runtime backend changes kept here do not apply to the config file (see the "
            "errors above; fix or remove them)"});
    }
    return out;
}

bool read_state_file(const std::string& path, BackendOverlay& out, std::string& error) {
    if (::access(path.c_str(), F_OK) != 0 && errno == ENOENT) {
        out.clear();
        return true;
    }
    auto text = read_config_text(path, error);
    if (!text) return false;
    json saved = json::parse(*text, nullptr, false);
    if (saved.is_discarded()) {
        error = "not valid JSON";
        return false;
    }
    auto overlay = BackendOverlay::from_json(saved, error);
    if (!overlay) return false;
    out = std::move(*overlay);
    return true;
}

bool write_state_file(const std::string& path, const BackendOverlay& overlay, std::string& error) {
    return write_file_atomically(path, overlay.to_json().dump(2) + "\n", error, 0600);
}

}  // namespace proxyd::config
