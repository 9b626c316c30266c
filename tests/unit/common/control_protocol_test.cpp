#include <doctest.h>

#include "common/control/protocol.hpp"

using namespace proxyd::control;

TEST_CASE("control frames round-trip and decode incrementally") {
    auto request = make_request("status");
    std::string frame = encode_frame(request);
    REQUIRE(frame.size() > 4);
    nlohmann::json decoded;
    std::size_t consumed = 0;
    std::string error;
    for (std::size_t cut = 0; cut < frame.size(); ++cut) {
        CHECK(decode_frame(std::string_view(frame).substr(0, cut), decoded, consumed, error) ==
              DecodeStatus::Incomplete);
    }
    std::string two = frame + frame;
    REQUIRE(decode_frame(two, decoded, consumed, error) == DecodeStatus::Done);
    CHECK(consumed == frame.size());
    CHECK(decoded["cmd"] == "status");
    CHECK(decoded["v"] == kProtocolVersion);
}

TEST_CASE("control frames: oversized and non-JSON frames are errors") {
    nlohmann::json decoded;
    std::size_t consumed = 0;
    std::string error;
    std::string huge("\x7f\xff\xff\xff", 4);
    CHECK(decode_frame(huge, decoded, consumed, error) == DecodeStatus::Error);
    std::string junk = std::string("\0\0\0\3", 4) + "abc";
    CHECK(decode_frame(junk, decoded, consumed, error) == DecodeStatus::Error);
    std::string array = std::string("\0\0\0\2", 4) + "[]";
    CHECK(decode_frame(array, decoded, consumed, error) == DecodeStatus::Error);
}

TEST_CASE("replies carry version, ok and message") {
    auto reply = make_reply(false, "nope");
    CHECK(reply["v"] == kProtocolVersion);
    CHECK(reply["ok"] == false);
    CHECK(reply["message"] == "nope");
}
