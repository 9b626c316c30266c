// The budget of RST_STREAM frames a client may send: a token bucket against "rapid reset"
// (CVE-2023-44487), where opening and at once cancelling streams makes the server start work that
// the concurrent-stream limit never sees, because each stream is already closed.
//
// nghttp2 has a similar bucket (nghttp2_option_set_stream_reset_rate_limit, Debian's backport of
// the CVE fix), but when it runs dry it queues a GOAWAY with INTERNAL_ERROR and keeps reading,
// and its owner cannot tell; it also counts more than inbound RST_STREAM frames, so with equal
// numbers it trips first. The session keeps its own, and sets nghttp2's to twice its numbers as
// a backstop, so that a flood ends with ENHANCE_YOUR_CALM and the owner hears of it at once
// (receive() returns false).
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
