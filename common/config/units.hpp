// Values with units as the config writes them: durations ("250ms", "5s", "2m", "1h"; a bare
// number is refused with a hint to add a unit) and sizes (an integer of bytes, or a string
// "512B", "16KiB", "10MiB", "1GiB").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/config/types.hpp"

namespace proxyd::config {

// On failure returns nullopt and sets `error` to a message for the user.
std::optional<Millis> parse_duration(std::string_view text, std::string& error);
std::optional<std::uint64_t> parse_size(std::string_view text, std::string& error);
// The other way: "1h", "2m", "5s" or "250ms", the largest unit that divides the value.
std::string format_duration(Millis value);

// Parse "host:port" / "[v6]:port" with a numeric address. "*" or "" host = 0.0.0.0.
bool parse_socket_address(std::string_view text, SocketAddress& out, std::string& error);
bool parse_cidr(std::string_view text, Cidr& out, std::string& error);

}  // namespace proxyd::config
