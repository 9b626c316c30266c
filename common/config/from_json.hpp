// The way back from to_json(): a config in the JSON shape that `GET /api/v1/config` shows, written
// as TOML text for load_string(), so that `PUT /api/v1/config` goes through exactly the checks and
// messages of a config file. Only the syntax is converted here; keys and types are left to the
// loader, so an unknown key or a value of the wrong type gets its usual error.
//
// For the caller:
// - Load the text with the running config's file as `source_name`: a relative path a client
//   writes is then taken from that file's directory, as in the file (to_json's paths are
//   absolute, so they are not affected).
// - LINE:COLUMN in the loader's errors point into the generated text, not into the JSON; the
//   messages name the key, and the text is small enough to return alongside them.
// - Secrets never appear in to_json(): JWT keys, TLS keys, the Redis password and the admin token
//   are named by their files, which are read again when the text is loaded.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace proxyd::config {

// TOML text for a config in to_json()'s shape; nullopt with `error` (e.g.
// "config.server.workers: null is not a TOML value") when a value has no TOML form.
std::optional<std::string> json_to_toml(const nlohmann::json& config, std::string& error);

}  // namespace proxyd::config
