// Error log (spdlog default logger) and access log (asynchronous, so a slow disk never blocks a
// worker's event loop: when its queue is full the oldest lines are dropped, and counted).
#pragma once

#include <spdlog/spdlog.h>

#include <string>
#include <string_view>

#include "common/config/types.hpp"

namespace proxyd::log {

// Sets spdlog's default logger from [log]; `role` ("master", "worker 3") is put in every line.
// Safe to call again (reload, reopen). Returns false with `error` when the file can't be opened.
bool setup_error_log(const config::LogSection& section, const std::string& role,
                     std::string& error);

// Creates the access logger (worker side, after fork: it starts a thread). Off when access_log "".
bool setup_access_log(const config::LogSection& section, std::string& error);
// nullptr when the access log is off.
spdlog::logger* access_logger();
void shutdown();

// Appends `text` to `out` escaped for a JSON string body (without quotes).
void append_json_escaped(std::string& out, std::string_view text);

}  // namespace proxyd::log
