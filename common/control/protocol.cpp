#include "common/control/protocol.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace proxyd::control {

std::string encode_frame(const nlohmann::json& message) {
    std::string body = message.dump();
    auto n = static_cast<std::uint32_t>(body.size());
    std::string frame;
    frame.reserve(4 + body.size());
    frame.push_back(static_cast<char>(n >> 24));
    frame.push_back(static_cast<char>(n >> 16));
    frame.push_back(static_cast<char>(n >> 8));
    frame.push_back(static_cast<char>(n));
    frame += body;
    return frame;
}

DecodeStatus decode_frame(std::string_view input, nlohmann::json& message, std::size_t& consumed,
                          std::string& error) {
    if (input.size() < 4) return DecodeStatus::Incomplete;
    auto byte = [&](int i) {
        return static_cast<std::uint32_t>(static_cast<unsigned char>(input[i]));
    };
    std::uint32_t n = byte(0) << 24 | byte(1) << 16 | byte(2) << 8 | byte(3);
    if (n > kMaxFrameSize) {
        error = "control frame too large";
        return DecodeStatus::Error;
    }
    if (input.size() < 4 + static_cast<std::size_t>(n)) return DecodeStatus::Incomplete;
    message = nlohmann::json::parse(input.substr(4, n), nullptr, /*allow_exceptions=*/false);
    if (message.is_discarded() || !message.is_object()) {
        error = "control frame is not a JSON object";
        return DecodeStatus::Error;
    }
    consumed = 4 + n;
    return DecodeStatus::Done;
}

nlohmann::json make_request(std::string_view command) {
    return {{"v", kProtocolVersion}, {"cmd", command}};
}

nlohmann::json make_reply(bool ok, std::string_view message) {
    return {{"v", kProtocolVersion}, {"ok", ok}, {"message", message}};
}

bool write_frame(int fd, const nlohmann::json& message, std::string& error) {
    std::string frame = encode_frame(message);
    std::size_t sent = 0;
    while (sent < frame.size()) {
        ssize_t n = ::send(fd, frame.data() + sent, frame.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            error = std::string("write: ") + std::strerror(errno);
            return false;
        }
        sent += static_cast<std::size_t>(n);
    }
    return true;
}

bool read_frame(int fd, nlohmann::json& message, int timeout_ms, std::string& error) {
    using Clock = std::chrono::steady_clock;
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    std::string input;
    char chunk[4096];
    for (;;) {
        std::size_t consumed = 0;
        switch (decode_frame(input, message, consumed, error)) {
            case DecodeStatus::Done:
                return true;
            case DecodeStatus::Error:
                return false;
            case DecodeStatus::Incomplete:
                break;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) {
            error = "timed out waiting for the master's reply";
            return false;
        }
        pollfd pfd{fd, POLLIN, 0};
        int ready = ::poll(&pfd, 1, static_cast<int>(left.count()));
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) continue;
        ssize_t n = ::read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            error = n == 0 ? "the master closed the connection" : std::strerror(errno);
            return false;
        }
        input.append(chunk, static_cast<std::size_t>(n));
    }
}

}  // namespace proxyd::control
