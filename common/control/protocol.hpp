// The control protocol between proxyctl (or a new master during upgrade) and the master.
//
// A frame is a 4-byte big-endian length followed by that many bytes of JSON. Every request is
// {"v": kProtocolVersion, "cmd": "..." , ...}; every reply is {"v": ..., "ok": bool, "message":
// "one human line", ...data}. A master refuses requests with a newer major version, so an old
// proxyctl and a new master (or the reverse during upgrade) fail clearly instead of guessing.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace proxyd::control {

inline constexpr int kProtocolVersion = 1;
inline constexpr std::uint32_t kMaxFrameSize = 1 << 20;

std::string encode_frame(const nlohmann::json& message);

enum class DecodeStatus { Incomplete, Done, Error };

// Decodes one frame from the front of `input`. On Done, `consumed` is the frame's size.
DecodeStatus decode_frame(std::string_view input, nlohmann::json& message, std::size_t& consumed,
                          std::string& error);

nlohmann::json make_request(std::string_view command);
nlohmann::json make_reply(bool ok, std::string_view message);

// Blocking helpers for clients. `timeout_ms` bounds the whole read.
bool write_frame(int fd, const nlohmann::json& message, std::string& error);
bool read_frame(int fd, nlohmann::json& message, int timeout_ms, std::string& error);

}  // namespace proxyd::control
