// systemd's notify protocol (READY=1, RELOADING=1, MAINPID=...), a datagram to $NOTIFY_SOCKET.
// A no-op when proxyd does not run under systemd with Type=notify.
#pragma once

#include <string>

namespace proxyd::master {

void sd_notify(const std::string& state);

}  // namespace proxyd::master
