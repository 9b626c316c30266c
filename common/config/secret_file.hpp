// Internal to config/: reading small secret files (JWT keys, Redis passwords) while the config is
// loaded. Their content never appears in a message; errors name the file only.
#pragma once

#include <string>

namespace proxyd::config::detail {

// A relative `path` is taken from the directory of `config_file`, so a config and the files it
// names can move together.
std::string resolve_config_path(const std::string& config_file, const std::string& path);

// Reads at most 64 KiB into `out`, trailing CR/LF trimmed. False with `error` set (strerror
// wording, or why the file was refused).
bool read_secret_file(const std::string& path, std::string& out, std::string& error);

}  // namespace proxyd::config::detail
