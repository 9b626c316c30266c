// Listening sockets. The master binds one SO_REUSEPORT socket per listen address per worker slot
// and keeps them for their whole life; workers only accept on them.
#pragma once

#include <string>

#include "common/config/types.hpp"
#include "common/util/unique_fd.hpp"

namespace proxyd::net {

inline constexpr int kListenBacklog = 4096;

// Non-blocking, close-on-exec, SO_REUSEADDR + SO_REUSEPORT, bound and listening.
UniqueFd bind_reuseport(const config::SocketAddress& address, std::string& error);

// "ip:port" of a peer, for logs and X-Forwarded-For ("[v6]:port" for IPv6).
std::string format_address(const sockaddr* address, bool with_port);

// A Unix stream socket bound at `path`, replacing whatever is there atomically (bound under a
// temporary name, then renamed), so a running peer never sees the path missing.
UniqueFd bind_unix_listener(const std::string& path, std::string& error);

}  // namespace proxyd::net
