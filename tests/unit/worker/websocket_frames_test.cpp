#include "worker/websocket_frames.hpp"

#include <doctest.h>

#include <cstdint>
#include <vector>

#include "common/util/event_ptr.hpp"

using proxyd::worker::WebSocketFrameTracker;

namespace {

// A frame with `payload` bytes, masked or not, as a client or a server would send it.
std::vector<std::uint8_t> frame(std::uint64_t payload, bool masked, std::uint8_t opcode = 2) {
    std::vector<std::uint8_t> out{static_cast<std::uint8_t>(0x80 | opcode)};
    const std::uint8_t mask_bit = masked ? 0x80 : 0;
    if (payload < 126) {
        out.push_back(static_cast<std::uint8_t>(mask_bit | payload));
    } else if (payload <= 0xffff) {
        out.push_back(mask_bit | 126);
        out.push_back(static_cast<std::uint8_t>(payload >> 8));
        out.push_back(static_cast<std::uint8_t>(payload));
    } else {
        out.push_back(mask_bit | 127);
        for (int shift = 56; shift >= 0; shift -= 8) {
            out.push_back(static_cast<std::uint8_t>(payload >> shift));
        }
    }
    if (masked) out.insert(out.end(), {1, 2, 3, 4});
    out.insert(out.end(), static_cast<std::size_t>(payload), 0x42);
    return out;
}

}  // namespace

TEST_CASE("websocket frames: boundaries found across every split and length form") {
    for (bool masked : {false, true}) {
        std::vector<std::uint8_t> stream;
        for (std::uint64_t len : {0u, 5u, 125u, 126u, 300u, 65535u, 65536u, 70000u}) {
            const auto f = frame(len, masked);
            stream.insert(stream.end(), f.begin(), f.end());
        }
        // Byte by byte: at a boundary exactly at the frame ends.
        WebSocketFrameTracker tracker;
        std::size_t boundaries = 0;
        for (std::uint8_t byte : stream) {
            tracker.feed(&byte, 1);
            boundaries += tracker.at_boundary();
        }
        CHECK(tracker.at_boundary());
        // Every frame ends in a boundary; a 0-length frame's is right after its header.
        CHECK(boundaries == 8);
        // In uneven pieces.
        WebSocketFrameTracker pieces;
        for (std::size_t at = 0; at < stream.size();) {
            const std::size_t n = std::min<std::size_t>(997, stream.size() - at);
            pieces.feed(stream.data() + at, n);
            at += n;
        }
        CHECK(pieces.at_boundary());
        pieces.feed(stream.data(), 3);  // half a header
        CHECK_FALSE(pieces.at_boundary());
    }
}

TEST_CASE("websocket frames: an evbuffer of several chains is followed without draining it") {
    proxyd::EvbufferPtr buffer(evbuffer_new());
    const auto a = frame(70000, true);
    const auto b = frame(10, true);
    evbuffer_add(buffer.get(), a.data(), a.size() - 10);
    WebSocketFrameTracker tracker;
    tracker.feed(buffer.get());
    CHECK_FALSE(tracker.at_boundary());
    CHECK(evbuffer_get_length(buffer.get()) == a.size() - 10);
    proxyd::EvbufferPtr rest(evbuffer_new());
    evbuffer_add(rest.get(), a.data() + a.size() - 10, 10);
    evbuffer_add(rest.get(), b.data(), b.size());
    tracker.feed(rest.get());
    CHECK(tracker.at_boundary());
}

TEST_CASE("websocket frames: the going-away close frames") {
    std::uint8_t to_client[4];
    REQUIRE(proxyd::worker::going_away_frame_to_client(to_client) == 4);
    CHECK(to_client[0] == 0x88);
    CHECK(to_client[1] == 2);
    CHECK(((to_client[2] << 8) | to_client[3]) == 1001);
    std::uint8_t to_server[8];
    REQUIRE(proxyd::worker::going_away_frame_to_server(to_server, 0xa1b2c3d4) == 8);
    CHECK(to_server[0] == 0x88);
    CHECK(to_server[1] == 0x82);
    const int code = ((to_server[6] ^ to_server[2]) << 8) | (to_server[7] ^ to_server[3]);
    CHECK(code == 1001);
}
