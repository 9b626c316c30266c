#include "worker/websocket_frames.hpp"

#include <algorithm>

namespace proxyd::worker {
namespace {

constexpr std::uint8_t kCloseFinal = 0x88;  // FIN + opcode 8 (close)
constexpr std::uint16_t kGoingAway = 1001;

// The header's full length once its first two bytes are known.
std::size_t header_length(const std::uint8_t* header) {
    const std::uint8_t len7 = header[1] & 0x7f;
    const std::size_t extended = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    const std::size_t mask = (header[1] & 0x80) ? 4 : 0;
    return 2 + extended + mask;
}

std::uint64_t payload_length(const std::uint8_t* header) {
    const std::uint8_t len7 = header[1] & 0x7f;
    if (len7 < 126) return len7;
    const std::size_t bytes = len7 == 126 ? 2 : 8;
    std::uint64_t n = 0;
    for (std::size_t i = 0; i < bytes; ++i) n = (n << 8) | header[2 + i];
    return n;
}

}  // namespace

void WebSocketFrameTracker::feed(const std::uint8_t* data, std::size_t len) {
    while (len > 0) {
        if (payload_left_ > 0) {
            const auto skip = static_cast<std::size_t>(std::min<std::uint64_t>(payload_left_, len));
            payload_left_ -= skip;
            data += skip;
            len -= skip;
            continue;
        }
        const std::size_t need = header_have_ < 2 ? 2 : header_length(header_);
        const std::size_t take = std::min(need - header_have_, len);
        std::copy(data, data + take, header_ + header_have_);
        header_have_ += take;
        data += take;
        len -= take;
        if (header_have_ < 2 || header_have_ < header_length(header_)) continue;
        payload_left_ = payload_length(header_);
        header_have_ = 0;
    }
}

void WebSocketFrameTracker::feed(evbuffer* buffer) {
    evbuffer_ptr position;
    evbuffer_ptr_set(buffer, &position, 0, EVBUFFER_PTR_SET);
    evbuffer_iovec chunks[8];
    std::size_t seen = 0;
    const std::size_t total = evbuffer_get_length(buffer);
    while (seen < total) {
        evbuffer_ptr_set(buffer, &position, seen, EVBUFFER_PTR_SET);
        const int n = evbuffer_peek(buffer, -1, &position, chunks, 8);
        if (n <= 0) break;
        for (int i = 0; i < n && i < 8; ++i) {
            feed(static_cast<const std::uint8_t*>(chunks[i].iov_base), chunks[i].iov_len);
            seen += chunks[i].iov_len;
        }
    }
}

std::size_t going_away_frame_to_client(std::uint8_t (&frame)[4]) {
    frame[0] = kCloseFinal;
    frame[1] = 2;
    frame[2] = kGoingAway >> 8;
    frame[3] = kGoingAway & 0xff;
    return sizeof frame;
}

std::size_t going_away_frame_to_server(std::uint8_t (&frame)[8], std::uint32_t mask) {
    const std::uint8_t key[4] = {
        static_cast<std::uint8_t>(mask >> 24), static_cast<std::uint8_t>(mask >> 16),
        static_cast<std::uint8_t>(mask >> 8), static_cast<std::uint8_t>(mask)};
    frame[0] = kCloseFinal;
    frame[1] = 0x80 | 2;
    std::copy(key, key + 4, frame + 2);
    frame[6] = static_cast<std::uint8_t>((kGoingAway >> 8) ^ key[0]);
    frame[7] = static_cast<std::uint8_t>((kGoingAway & 0xff) ^ key[1]);
    return sizeof frame;
}

}  // namespace proxyd::worker
