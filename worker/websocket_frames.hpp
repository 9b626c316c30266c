// Where WebSocket frames begin in a tunnel's byte stream (RFC 6455 5.2), so that the proxy can put
// a frame of its own between two of them: the close frame with status 1001 ("going away") that
// tunnels still open at shutdown_timeout get (CONTRACT.md). Only frame headers are read; payloads
// are skipped by count and never copied or unmasked.
#pragma once

#include <event2/buffer.h>

#include <cstddef>
#include <cstdint>

namespace proxyd::worker {

class WebSocketFrameTracker {
  public:
    // Follows `data` (bytes about to be moved on, in order).
    void feed(const std::uint8_t* data, std::size_t len);
    // Follows everything in `buffer`, without draining it.
    void feed(evbuffer* buffer);
    // Between two frames: a frame of our own can be added without breaking one.
    bool at_boundary() const { return header_have_ == 0 && payload_left_ == 0; }

  private:
    std::uint8_t header_[14] = {};
    std::size_t header_have_ = 0;
    std::uint64_t payload_left_ = 0;
};

// A close frame with status 1001 (going away): toward the client unmasked, toward the server
// masked with `mask` (RFC 6455 5.3: frames from a client are masked). Returns the frame's size.
std::size_t going_away_frame_to_client(std::uint8_t (&frame)[4]);
std::size_t going_away_frame_to_server(std::uint8_t (&frame)[8], std::uint32_t mask);

}  // namespace proxyd::worker
