// Internal to config/: reading small secret files (JWT keys, Redis passwords, TLS private keys)
// while the config is loaded. Their content never appears in a message; errors name the file
// only. Certificates and CA bundles are read the same way, with a larger size limit.
#pragma once

#include <cstddef>
#include <string>

namespace proxyd::config::detail {

// A relative `path` is taken from the directory of `config_file`, so a config and the files it
// names can move together.
std::string resolve_config_path(const std::string& config_file, const std::string& path);

// Bigger than any real key; stops a mistyped path (a log file, /dev/zero) from being slurped.
inline constexpr std::size_t kMaxSecretFile = 64 * 1024;
// Certificate chains and CA bundles (a system bundle is a few hundred KiB).
inline constexpr std::size_t kMaxPemBundleFile = 4 * 1024 * 1024;

// Reads at most `max_size` bytes into `out`, trailing CR/LF trimmed. Only a non-empty regular
// file is accepted. False with `error` set (strerror wording, or why the file was refused).
bool read_secret_file(const std::string& path, std::string& out, std::string& error,
                      std::size_t max_size = kMaxSecretFile);

}  // namespace proxyd::config::detail
