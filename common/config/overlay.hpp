// Runtime backend changes (admin API: add, update, remove, disconnect) are kept apart from the
// config file, as an ordered list of changes per server, and applied over the file's parsed
// document before it is read. So a change goes through exactly the checks a server written in
// the file gets, survives reloads (the master re-applies it over the re-read file) and restarts
// (written to server.state_file), and the file itself is never rewritten behind the user's back.
#pragma once

#include <toml++/toml.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/config/load.hpp"

namespace proxyd::config {

class BackendOverlay {
  public:
    struct Change {
        std::string upstream;
        std::string id;
        bool removed = false;
        bool whole = false;  // `keys` is a whole server (added), not some keys of one
        nlohmann::json keys = nlohmann::json::object();
    };

    // `server` holds config-file keys of a server, its "id" included.
    void add(const std::string& upstream, const nlohmann::json& server);
    void update(const std::string& upstream, const std::string& id, const nlohmann::json& keys);
    void remove(const std::string& upstream, const std::string& id);
    void clear() { changes_.clear(); }
    bool empty() const { return changes_.empty(); }
    const std::vector<Change>& changes() const { return changes_; }

    // The state file's content.
    nlohmann::json to_json() const;
    static std::optional<BackendOverlay> from_json(const nlohmann::json& saved, std::string& error);

    // Applies every change to `root`'s [upstreams]; a change whose upstream (or, for an update,
    // server) is no longer in the document is left out and described in `skipped`.
    void apply(toml::table& root, std::vector<std::string>& skipped) const;

  private:
    Change* find(const std::string& upstream, const std::string& id);

    std::vector<Change> changes_;
};

// load_string() of `text` with `overlay` applied over it.
LoadResult load_with_overlay(std::string_view text, const std::string& source_name,
                             const BackendOverlay& overlay, std::vector<std::string>& skipped);

// The config file at `path` as the master runs it: with the runtime changes of `overlay` applied
// when given (reload), else those of the file's server.state_file (start, `proxyd -t`).
struct EffectiveConfig {
    LoadResult result;
    std::string text;  // the config file's text, to apply later changes over
    BackendOverlay overlay;
    std::vector<std::string> skipped;  // changes that no longer apply (see apply())
};
EffectiveConfig load_effective(const std::string& path, const BackendOverlay* overlay);

// server.state_file: a missing file is an empty overlay; anything unreadable is an error.
bool read_state_file(const std::string& path, BackendOverlay& out, std::string& error);
// Written to a temporary file in the same directory, synced, then renamed over `path`, so a
// crash leaves either the old or the new content.
bool write_state_file(const std::string& path, const BackendOverlay& overlay, std::string& error);

}  // namespace proxyd::config
