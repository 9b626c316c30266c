// One HTTP/2 connection to an upstream server (protocol = "h2c": prior knowledge over TCP;
// "h2": TLS with ALPN h2), shared by many requests of one worker at once, one stream each. It
// ties a socket (worker/upstream_pool.hpp does the connect and the TLS handshake) to a
// ClientSession (worker/h2/client_session.hpp, the protocol) and hands each stream's events to
// the request that opened it (an H2StreamUser, the request flow).
//
// Connection states: connecting (requests may be submitted already; their frames wait in the
// session until the connect and handshake are done) -> open -> closed (an error, the server's
// GOAWAY with no stream left, or idle for server.timeouts.keepalive). A closed connection is
// unlinked from its pool at once and freed after the current callback (H2UpstreamPool::retire).
//
// Re-entrancy: users' calls into the connection (submit, append, release, ...) never fail it and
// never call a user back synchronously; a write error found on the way is acted upon from the
// event loop. Events to users come only from socket events (reads, writes, timers).
#pragma once

#include <event2/buffer.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/util/event_ptr.hpp"
#include "worker/h2/client_session.hpp"
#include "worker/upstream_pool.hpp"

namespace proxyd::worker {

class H2UpstreamPool;

// Why a stream ended before its response did.
struct H2StreamError {
    enum class Kind {
        Reset,       // the server reset it (or broke the stream's protocol)
        Refused,     // not processed by the server (REFUSED_STREAM, GOAWAY): safe to send again
        Connect,     // the connection never came up (refused, timed out, TLS, no ALPN h2)
        Connection,  // the connection broke (closed, reset, protocol error)
    };
    Kind kind = Kind::Reset;
    std::uint32_t code = 0;  // the stream's RST_STREAM code, for Reset and Refused
    std::string_view reason;
};

// The request on a stream: it gets the stream's events, in the order of
// ClientSession::Handler's (head, data*, [trailers], end), or on_h2_closed when the stream ended
// before its response did. After on_h2_end or on_h2_closed, or once the user called release(),
// no more events come for the stream.
class H2StreamUser {
  public:
    virtual void on_h2_head(int status, std::vector<h2::Header>&& headers, bool end_stream) = 0;
    // Response body bytes: move them all out of `data` now, and call consume() once they have
    // been forwarded (the server's window waits for that).
    virtual void on_h2_data(evbuffer* data) = 0;
    virtual void on_h2_trailers(std::vector<h2::Header>&& trailers) = 0;
    virtual void on_h2_end() = 0;
    virtual void on_h2_closed(const H2StreamError& error) = 0;
    // The request body waiting on the stream was all written: more may be appended.
    virtual void on_h2_writable() = 0;

  protected:
    ~H2StreamUser() = default;
};

class H2Upstream final : public UpstreamUser, public h2::ClientSession::Handler {
  public:
    // Starts connecting; null with `error` when the connect fails at once.
    static std::unique_ptr<H2Upstream> open(H2UpstreamPool& pool, UpstreamPool& connector,
                                            std::size_t upstream, std::size_t server,
                                            std::string& error);
    ~H2Upstream() override;
    H2Upstream(const H2Upstream&) = delete;
    H2Upstream& operator=(const H2Upstream&) = delete;

    std::size_t upstream_index() const { return upstream_; }
    std::size_t server_index() const { return server_; }
    // One more stream may be opened on it now.
    bool can_submit() const { return !closed_ && session_->can_submit(); }
    bool closed() const { return closed_; }

    // Opens a stream for `user` (see ClientSession::submit_request); negative when it cannot.
    std::int32_t submit(H2StreamUser& user, std::string_view method, std::string_view scheme,
                        std::string_view authority, std::string_view path,
                        const std::vector<h2::Header>& headers, bool end_stream);
    // The request body: `n` bytes moved from the front of `from`; then its end.
    void append(std::int32_t stream, evbuffer* from, std::size_t n);
    void end_request(std::int32_t stream);
    // Request body bytes appended and not yet written (backpressure towards the client).
    std::size_t pending(std::int32_t stream) const {
        return session_->pending_request_bytes(stream);
    }
    // `n` response body bytes were forwarded to the client.
    void consume(std::int32_t stream, std::size_t n);
    // The user is done with the stream: no more events. `cancel`: the exchange did not finish
    // (the stream is reset with CANCEL); otherwise it ends by itself (both sides ended it).
    void release(std::int32_t stream, bool cancel);

    // Socket events (worker/upstream_pool.hpp).
    void on_upstream_readable() override;
    void on_upstream_writable() override;
    void on_upstream_timeout() override;

    // Closes it now if no stream uses it (worker draining, server retired).
    void close_if_idle();

  private:
    H2Upstream(H2UpstreamPool& pool, std::size_t upstream, std::size_t server);

    // ClientSession::Handler: the session's events, handed to the stream's user.
    void on_response_head(std::int32_t stream, int status, std::vector<h2::Header>&& headers,
                          bool end_stream) override;
    void on_response_data(std::int32_t stream, const std::uint8_t* data, std::size_t len) override;
    void on_response_trailers(std::int32_t stream, std::vector<h2::Header>&& trailers) override;
    void on_response_end(std::int32_t stream) override;
    void on_stream_closed(std::int32_t stream, std::uint32_t error_code) override;
    void on_request_writable(std::int32_t stream) override;
    void on_goaway(std::int32_t last_stream_id, std::uint32_t error_code) override;

    H2StreamUser* user_of(std::int32_t stream) const;
    H2StreamUser* take_user(std::int32_t stream);
    bool finish_connect();
    void receive_input();
    void write_out();
    void fail_later(std::string reason);
    static void on_failure_event(evutil_socket_t, short, void* arg);
    void fail(H2StreamError::Kind kind, std::string_view reason);
    void maybe_close();
    void close();

    H2UpstreamPool& pool_;
    std::size_t upstream_;
    std::size_t server_;
    UpstreamPtr socket_;
    std::unique_ptr<h2::ClientSession> session_;
    std::vector<std::pair<std::int32_t, H2StreamUser*>> users_;  // in id order
    EvbufferPtr data_ = make_evbuffer();  // a response body piece on its way to a user
    EvbufferPtr body_ = make_evbuffer();  // a request body piece on its way to the session
    EventPtr failure_event_;              // a write error, acted upon from the loop
    std::string failure_;
    bool connected_ = false;   // connect and TLS handshake (with ALPN h2) are done
    bool in_session_ = false;  // inside session_->receive() or flush(): not re-entrant
    bool rewrite_ = false;     // something was queued while in_session_: write again
    bool closed_ = false;
};

}  // namespace proxyd::worker
