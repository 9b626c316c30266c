// The budget of RST_STREAM frames a client may send: a token bucket against "rapid reset"
// (CVE-2023-44487), where opening and at once cancelling streams makes the server start work that
// the concurrent-stream limit never sees, because each stream is already closed.
//
// nghttp2 has the same bucket (nghttp2_option_set_stream_reset_rate_limit, set to the same
// numbers as a backstop), but when it runs dry it only queues a GOAWAY and keeps reading, and
// its owner cannot tell. The session keeps its own so that it can end the connection with
// ENHANCE_YOUR_CALM and tell the owner at once (receive() returns false). Ours is charged in the
// frame callback, which nghttp2 runs before charging its own, so ours always trips first.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace proxyd::worker::h2 {

class ResetBudget {
  public:
    using Clock = std::chrono::steady_clock;

    ResetBudget(std::uint32_t burst, std::uint32_t rate_per_second)
        : burst_(burst), rate_(rate_per_second), tokens_(burst), last_(Clock::now()) {}

    // Charges one received RST_STREAM; false when the budget is exhausted.
    bool take(Clock::time_point now) {
        std::chrono::duration<double> elapsed = now - last_;
        last_ = now;
        tokens_ = std::min(burst_, tokens_ + elapsed.count() * rate_);
        if (tokens_ < 1.0) return false;
        tokens_ -= 1.0;
        return true;
    }

  private:
    double burst_;
    double rate_;
    double tokens_;
    Clock::time_point last_;
};

}  // namespace proxyd::worker::h2
