// Workers give up root: they only need the sockets and shared memory the master handed them.
// Private keys, JWT keys and the config were read by the master before the fork.
#pragma once

#include <string>

#include "common/config/types.hpp"

namespace proxyd::worker {

// Switches to server.user / server.group when running as root; nothing to do otherwise (the
// master warns once that the setting has no effect). False with `error` when the switch fails:
// a worker must not go on as root when told not to.
bool drop_privileges(const config::ServerSection& server, std::string& error);

}  // namespace proxyd::worker
