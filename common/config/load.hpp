// Reading a config file: TOML syntax, then types and units, then cross-references. Every problem
// found is reported (not just the first), each with the place it stands in the file.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/config/types.hpp"

namespace proxyd::config {

struct ConfigError {
    std::string file;
    int line = 0;  // 1-based; 0 when the problem has no single place (e.g. file unreadable)
    int column = 0;
    std::string message;

    // "FILE:LINE:COLUMN: message" (or "FILE: message" without a place).
    std::string format() const;
};

struct LoadResult {
    std::optional<Config> config;  // set only when errors is empty
    std::vector<ConfigError> errors;
};

LoadResult load_file(const std::string& path);
// A config-sized text file, or nullopt with `error` (the reason as strerror words it).
std::optional<std::string> read_config_text(const std::string& path, std::string& error);
// The config's name of an algorithm ("least_conn"), for status output and messages.
std::string_view balance_name(Balance balance);
// The config's name of an upstream protocol ("h2c").
std::string_view protocol_name(UpstreamProtocol protocol);
// `source_name` is used as FILE in messages and as Config::file.
LoadResult load_string(std::string_view toml_text, const std::string& source_name);

}  // namespace proxyd::config
