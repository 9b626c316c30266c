// The server side of one HTTP/2 connection, independent of the transport: its owner (a client
// connection, plain or TLS) feeds the bytes it read into receive(), takes the bytes to write from
// flush(), and gets one event stream per request through a Handler. Framing, HPACK, stream states,
// flow control and the protocol's checks are nghttp2's; this class adds the proxy's limits, moves
// bodies as evbuffer chains, and ties request flow control to the owner's progress.
//
// Life of a stream, as the Handler sees it (all from inside receive() or flush()):
//   on_request (head complete) -> on_request_data* -> [on_request_trailers] -> on_request_end
//   ... and in any state: on_stream_closed, always the last event and exactly once.
// or, when the head broke a limit: on_request_rejected -> (owner answers) -> on_stream_closed.
// The owner answers with submit_response, then appends body pieces and ends it (optionally with
// trailers), or resets the stream.
//
// Flow control end to end: a request body byte is not acknowledged to the client (WINDOW_UPDATE)
// until the owner calls consume() for it, i.e. until it was forwarded; a client can never have
// more than Limits::initial_window_size unforwarded bytes on a stream. Bytes the owner never
// consumed are given back to the connection window when their stream closes.
//
// Limits and how they are answered:
// - header list over Limits::max_header_list_size (decoded size, so HPACK cannot amplify past it):
//   on_request_rejected(stream, 431, head so far) and the owner answers with its 431 (the proxy's
//   errors have one format, a request id and an access-log line, which the owner makes); the
//   request body, if any, is discarded. Oversize trailers reset the stream (ENHANCE_YOUR_CALM).
// - more streams than Limits::max_concurrent_streams: nghttp2 refuses them (RST_STREAM
//   REFUSED_STREAM, safe to retry) while our SETTINGS are unacknowledged, which is when a client
//   can race ahead of them; a client that exceeds the limit it acknowledged gets a connection
//   error (GOAWAY PROTOCOL_ERROR), nghttp2's rule.
// - inbound RST_STREAM beyond the reset budget (rapid reset): GOAWAY ENHANCE_YOUR_CALM and
//   receive() returns false.
// - a malformed request (nghttp2's checks; also a Host that names another authority than
//   :authority, RFC 9113 8.3.1): RST_STREAM PROTOCOL_ERROR; the owner hears nothing of it.
//
// When the response is complete before the request is (an early error, a 431), the stream is
// reset with NO_ERROR right after it, which tells the client to stop sending the body
// (RFC 9113 8.1).
//
// The owner's loop: bytes read -> receive(); then flush() into the socket's output and write it.
// When either returns false, write what flush() produced and close; when finished() says nothing
// is left to do (after a GOAWAY, either side's), close once the output is written.
//
// The Handler may call any method of the session from its callbacks except receive(), flush()
// and the destructor (nghttp2 is not re-entrant). Destroying the session produces no events, and
// after receive() or flush() returned false no on_stream_closed comes for the streams still
// open: the owner drops them with the connection.
#pragma once

#include <event2/buffer.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "worker/h2/header_block.hpp"
#include "worker/h2/nghttp2_ptr.hpp"
#include "worker/h2/outgoing_body.hpp"
#include "worker/h2/reset_budget.hpp"
#include "worker/h2/types.hpp"

namespace proxyd::worker::h2 {

class ServerSession {
  public:
    class Handler {
      public:
        virtual ~Handler() = default;
        // A complete, valid request head. If head.end_stream, on_request_end follows at once.
        virtual void on_request(std::int32_t stream, RequestHead&& head) = 0;
        // A piece of the request body. Call consume() once it has been forwarded (now or later);
        // until then it holds the client's window.
        virtual void on_request_data(std::int32_t stream, const std::uint8_t* data,
                                     std::size_t len) = 0;
        // Trailer fields after the body (rare in requests; gRPC clients do not send them).
        virtual void on_request_trailers(std::int32_t /*stream*/,
                                         std::vector<Header>&& /*trailers*/) {}
        // The client finished the request: every request gets this once, unless the stream
        // closes first.
        virtual void on_request_end(std::int32_t stream) = 0;
        // The request broke a limit before it was complete (today: 431, its head is too large).
        // `partial` holds what arrived before the limit (pseudo-headers come first, so usually
        // method and path). Answer with submit_response(status, ..., end_stream) or reset_stream.
        virtual void on_request_rejected(std::int32_t stream, int status,
                                         RequestHead&& partial) = 0;
        // The stream is gone: the response was sent in full (error_code NO_ERROR), or it was
        // reset by either side (the code sent or received). The last event of a stream; its id
        // is unknown to the session from now on.
        virtual void on_stream_closed(std::int32_t stream, std::uint32_t error_code) = 0;
        // The response body of `stream` ran dry while the client's window is open: everything
        // appended has been written to the output. A good moment to read the upstream again.
        virtual void on_response_writable(std::int32_t /*stream*/) {}
    };

    // Queues our SETTINGS (the server's connection preface) and the connection window: the first
    // flush() writes them. Throws std::bad_alloc when nghttp2 cannot allocate.
    ServerSession(Handler& handler, const Limits& limits);
    ~ServerSession();
    ServerSession(const ServerSession&) = delete;
    ServerSession& operator=(const ServerSession&) = delete;

    // Processes bytes read from the client. False: the connection is beyond saving (not HTTP/2,
    // a flood, the reset budget spent); stop reading, flush() once more (a GOAWAY may be queued),
    // write what it produced and close. Protocol errors that nghttp2 answers with a GOAWAY of its
    // own (exceeding the acknowledged stream limit, bad frames) show in the flush() that sends it.
    [[nodiscard]] bool receive(const std::uint8_t* data, std::size_t len);
    // Serialises pending frames into `out`, response bodies moved from their chains without a
    // copy. Takes no more body once `out` holds `watermark` bytes (it may pass it by one frame;
    // want_write() stays true and the rest counts in pending_response_bytes). False: the session
    // ended with an error (after the GOAWAY that says so, now in `out`): write `out`, then close.
    [[nodiscard]] bool flush(evbuffer* out, std::size_t watermark = SIZE_MAX);

    bool want_read() const;
    bool want_write() const;
    // Nothing left to read or write (after a GOAWAY and its last stream, or an error): once `out`
    // is written, close the connection.
    bool finished() const { return !want_read() && !want_write(); }

    // The response head of `stream`: `status` and regular fields (names go out lower-cased,
    // connection-specific fields are dropped: see header_block.hpp). end_stream: no body follows.
    // False when the stream is unknown or already answered.
    bool submit_response(std::int32_t stream, int status, const std::vector<Header>& headers,
                         bool end_stream);
    // Moves all of `data` to the end of the stream's response body (dropped when the stream is
    // gone or its response ended). May come before submit_response.
    void append_response_data(std::int32_t stream, evbuffer* data);
    // No more body: the response ends when what was appended is sent, with `trailers` (e.g.
    // grpc-status) as a final HEADERS frame if there are any.
    void end_response(std::int32_t stream, const std::vector<Header>& trailers = {});
    // Ends the stream at once with RST_STREAM `error_code`; on_stream_closed follows once sent.
    void reset_stream(std::int32_t stream, std::uint32_t error_code);
    // `n` bytes of the stream's request body were forwarded: the client may send that much more.
    void consume(std::int32_t stream, std::size_t n);
    // Response body bytes appended but not yet written to the output: backpressure towards the
    // upstream (0 for an unknown stream).
    std::size_t pending_response_bytes(std::int32_t stream) const;
    // Draining: GOAWAY naming the last stream we took; those finish, no new ones are accepted
    // (a client retries them elsewhere). finished() tells when the last one is done.
    void shutdown_gracefully();
    // The first half of a graceful shutdown (RFC 9113 6.8): a GOAWAY naming the highest possible
    // stream, which tells the client to open no more streams here while the requests it already
    // sent on their way are still taken. shutdown_gracefully() follows a moment later.
    void announce_shutdown();
    // Streams the client has open (requests being received or answered).
    std::size_t open_streams() const { return live_.size(); }

  private:
    struct Stream;
    struct Callbacks;
    friend struct Callbacks;

    void submit_settings();
    Stream* find(std::int32_t id) const;
    OutgoingBody* body_of(std::int32_t id) const;  // its outgoing body, null when unknown
    // Request side, in the order nghttp2 calls it.
    int open_stream(std::int32_t id);
    int add_header(Stream& stream, const nghttp2_frame& frame, const std::uint8_t* name,
                   std::size_t name_len, const std::uint8_t* value, std::size_t value_len);
    int on_frame_received(const nghttp2_frame& frame);
    void finish_head(Stream& stream, bool end_stream);
    int on_body_chunk(std::int32_t id, const std::uint8_t* data, std::size_t len);
    void finish_trailers(Stream& stream);
    void end_request(Stream& stream);
    void charge_reset();
    // Response side.
    int on_frame_sent(const nghttp2_frame& frame);
    void on_frame_not_sent(const nghttp2_frame& frame);
    void close_stream(std::int32_t id, std::uint32_t error_code);

    Handler& handler_;
    Limits limits_;
    ResetBudget reset_budget_;
    HeaderBlock block_;  // scratch for the blocks we submit, reused
    // Open streams' state (nghttp2's stream user data points here) and closed ones' for reuse.
    std::vector<std::unique_ptr<Stream>> live_;
    std::vector<std::unique_ptr<Stream>> spare_;
    BodySender sender_;      // the bodies' way out; on_response_writable for those that ran dry
    bool fatal_ = false;     // nghttp2 failed: the session must not be used any more
    bool enraged_ = false;   // we ended the connection (reset budget spent): GOAWAY queued
    bool failed_ = false;    // a GOAWAY with an error code went out: the connection is over
    bool draining_ = false;  // shutdown_gracefully() was called
    bool announced_shutdown_ = false;
    SessionPtr session_;     // last: it goes first, while the state its callbacks see exists
};

}  // namespace proxyd::worker::h2
