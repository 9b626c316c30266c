// Passing file descriptors between processes over a Unix socket (SCM_RIGHTS): used to hand
// listening sockets and shared memory to a new binary, and connections between workers.
#pragma once

#include <string>
#include <vector>

#include "common/util/unique_fd.hpp"

namespace proxyd::net {

inline constexpr std::size_t kMaxFdsPerMessage = 250;  // below the kernel's SCM_MAX_FD (253)

// Sends `payload` (non-empty) with `fds` attached in one message. Blocking socket expected.
bool send_with_fds(int socket_fd, const std::string& payload, const std::vector<int>& fds);
// Receives one message of up to `max_payload` bytes; received fds are owned by `fds`.
bool receive_with_fds(int socket_fd, std::string& payload, std::vector<UniqueFd>& fds,
                      std::size_t max_payload = 65536);

}  // namespace proxyd::net
