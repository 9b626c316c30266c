// One non-blocking socket with its input and output buffers and its events: the I/O layer under
// both client and upstream connections.
//
// Writes go out at once (`flush`) and only what the kernel did not take waits for a write event,
// so a response usually costs one writev and no epoll_ctl. Reads land in evbuffer chains reserved
// in place (no FIONREAD ioctl, no intermediate copy).
#pragma once

#include <event2/event.h>

#include <chrono>
#include <cstddef>

#include "common/util/event_ptr.hpp"
#include "common/util/unique_fd.hpp"

namespace proxyd::worker {

class Stream {
  public:
    enum class ReadResult { Data, WouldBlock, Eof, Error };

    Stream() = default;
    // Callbacks get `arg`; `on_timer` fires when the timer set by arm_timer expires.
    void open(event_base* base, UniqueFd fd, event_callback_fn on_read, event_callback_fn on_write,
              event_callback_fn on_timer, void* arg);
    void close();
    bool is_open() const { return fd_.valid(); }
    int fd() const { return fd_.get(); }

    evbuffer* in() const { return in_.get(); }
    evbuffer* out() const { return out_.get(); }
    std::size_t pending_output() const { return evbuffer_get_length(out_.get()); }

    // One read of up to `max_bytes` appended to in().
    ReadResult read(std::size_t max_bytes, std::size_t* bytes_read = nullptr);
    // Writes as much of out() as the socket takes now; arms the write event for the rest.
    // False on a write error (peer gone).
    bool flush();

    void enable_read(bool on);
    bool read_enabled() const { return read_enabled_; }
    // Waits for writability without data (non-blocking connect).
    void wait_writable();
    // Runs the read callback on the next loop turn, for input that is already buffered.
    void activate_read();

    void arm_timer(std::chrono::milliseconds timeout);
    void cancel_timer();

  private:
    UniqueFd fd_;
    EvbufferPtr in_;
    EvbufferPtr out_;
    EventPtr read_event_;
    EventPtr write_event_;
    EventPtr timer_;
    bool read_enabled_ = false;
    bool write_armed_ = false;
};

}  // namespace proxyd::worker
