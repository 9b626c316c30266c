// One non-blocking socket with its input and output buffers and its events: the I/O layer under
// both client and upstream connections, in plain text or TLS.
//
// Writes go out at once (`flush`) and only what the kernel did not take waits for a write event,
// so a response usually costs one writev and no epoll_ctl. Reads land in evbuffer chains reserved
// in place (no FIONREAD ioctl, no intermediate copy).
//
// TLS (start_tls) is invisible to the owner: the handshake runs inside the stream, and the owner's
// callbacks fire only once it is done — the read callback on the server side, the write callback
// ("connected") on the client side — or once it failed, after which read() and flush() report
// errors and tls_error() says why. OpenSSL's cross wants (a read that must write first, a write
// that must read) are handled here by arming the other event. Data OpenSSL has decrypted but
// not yet returned is not visible to epoll, so the stream re-activates its read callback for it.
#pragma once

#include <event2/event.h>

#include <chrono>
#include <cstddef>
#include <string>

#include "common/tls/openssl_ptr.hpp"
#include "common/util/event_ptr.hpp"
#include "common/util/unique_fd.hpp"

namespace proxyd::worker {

// Small writes go out at once instead of waiting for the previous segment's ACK (Nagle).
void set_tcp_nodelay(int fd);

class Stream {
  public:
    enum class ReadResult { Data, WouldBlock, Eof, Error };

    Stream() = default;
    // Callbacks get `arg`; `on_timer` fires when the timer set by arm_timer expires.
    void open(event_base* base, UniqueFd fd, event_callback_fn on_read, event_callback_fn on_write,
              event_callback_fn on_timer, void* arg);
    // From now on the socket speaks TLS through `ssl` (already in accept or connect state).
    void start_tls(tls::SslPtr ssl, bool client_side);
    void close();
    bool is_open() const { return fd_.valid(); }
    int fd() const { return fd_.get(); }
    bool is_tls() const { return ssl_ != nullptr; }
    SSL* ssl() const { return ssl_.get(); }
    bool tls_failed() const { return tls_failed_; }
    const std::string& tls_error() const { return tls_error_; }

    evbuffer* in() const { return in_.get(); }
    evbuffer* out() const { return out_.get(); }
    std::size_t pending_output() const { return evbuffer_get_length(out_.get()); }

    // One read of up to `max_bytes` appended to in().
    ReadResult read(std::size_t max_bytes, std::size_t* bytes_read = nullptr);
    // Writes as much of out() as the socket takes now; arms the write event for the rest.
    // False on a write error (peer gone).
    bool flush();
    // Our side is done (TLS: close_notify first); reading goes on.
    void shutdown_write();
    // TCP_NODELAY is set only before this stream's second write: the first write never waits
    // for Nagle (nothing is unacknowledged yet), so a connection that sends one response and
    // closes saves the setsockopt.
    void defer_nodelay() { nodelay_deferred_ = true; }
    // Nothing from the peer waits in the kernel (no data, or only its EOF): closing now sends
    // no RST.
    bool receive_queue_empty() const;

    void enable_read(bool on);
    bool read_enabled() const { return read_enabled_; }
    // Waits for writability without data (non-blocking connect).
    void wait_writable();
    // Runs the read callback on the next loop turn, for input that is already buffered.
    void activate_read();
    // An idle keep-alive connection: false if the peer closed it or sent something it should
    // not have (for TLS, protocol records such as session tickets do not count).
    bool still_usable_when_idle();

    void arm_timer(std::chrono::milliseconds timeout);
    void cancel_timer();

  private:
    static void on_tls_read(evutil_socket_t fd, short what, void* arg);
    static void on_tls_write(evutil_socket_t fd, short what, void* arg);
    ReadResult read_plain(std::size_t max_bytes, std::size_t* bytes_read);
    ReadResult read_tls(std::size_t max_bytes, std::size_t* bytes_read);
    bool flush_tls();
    void drive_handshake();
    void fail_tls(int ssl_error);
    void update_events();
    void set_write_armed(bool on);
    void set_nodelay_before_second_write();
    bool ensure_write_event();

    UniqueFd fd_;
    event_base* base_ = nullptr;
    EvbufferPtr in_;
    EvbufferPtr out_;
    EventPtr read_event_;
    EventPtr write_event_;
    EventPtr timer_;
    bool read_enabled_ = false;  // the owner wants input
    bool write_armed_ = false;   // output waits for the socket (or for a connect)
    bool read_registered_ = false;
    bool write_registered_ = false;
    bool nodelay_deferred_ = false;
    bool written_ = false;  // plain streams: a write has gone out

    // TLS only.
    tls::SslPtr ssl_;
    event_callback_fn owner_read_ = nullptr;
    event_callback_fn owner_write_ = nullptr;
    void* owner_arg_ = nullptr;
    bool client_side_ = false;
    bool handshaking_ = false;
    bool handshake_wants_read_ = false;
    bool handshake_wants_write_ = false;
    bool read_wants_write_ = false;
    bool write_wants_read_ = false;
    bool tls_failed_ = false;
    bool close_notify_sent_ = false;
    std::string tls_error_;
};

}  // namespace proxyd::worker
