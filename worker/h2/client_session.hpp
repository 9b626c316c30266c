// The client side of one HTTP/2 connection to an upstream (h2c, or h2 over TLS), independent of
// the transport: its owner (an upstream connection of the pool) feeds the bytes it read into
// receive(), takes the bytes to write from flush(), and runs many requests at once on it, one
// stream each, with their events coming through a Handler. Framing, HPACK, stream states, flow
// control and the protocol's checks are nghttp2's; this class adds the proxy's limits, moves
// bodies as evbuffer chains, and ties response flow control to the owner's progress. It mirrors
// ServerSession (server_session.hpp), which is the other end of the same wire.
//
// Life of a request, as the Handler sees it (all from inside receive() or flush()):
//   submit_request -> [on_response_informational*] -> on_response_head -> on_response_data*
//     -> [on_response_trailers] -> on_response_end
//   ... and in any state: on_stream_closed, always the last event of a stream and exactly once.
// A response that is its head alone (a gRPC "trailers-only" error: grpc-status in the head) comes
// as on_response_head with end_stream set, then on_response_end at once: the owner must keep it
// one HEADERS frame with END_STREAM when it answers an HTTP/2 client, or gRPC clients miss it.
// The response may end before the request did (an early answer); a server then usually resets
// the stream with NO_ERROR (RFC 9113 8.1), otherwise the owner ends or resets the request.
//
// Flow control end to end: a response body byte is not acknowledged to the server
// (WINDOW_UPDATE) until the owner calls consume() for it, i.e. until it was forwarded to the
// client; a server can never have more than Limits::initial_window_size unforwarded bytes on a
// stream. The request body is sent as the server's windows allow; what waits counts in
// pending_request_bytes() (backpressure towards the client).
//
// Retrying: a stream that closes with REFUSED_STREAM was not processed by the server (it refused
// it, or a GOAWAY named a lower last stream id, or the request never left because a GOAWAY came
// first) and may be sent again on another connection. on_goaway tells the owner to stop choosing
// this connection; the streams at or below its last stream id finish normally.
//
// Limits:
// - response header list over Limits::max_header_list_size (decoded size, so HPACK cannot
//   amplify past it; head and trailers count apart): the stream is reset with ENHANCE_YOUR_CALM
//   and nothing of that block is delivered. We also advertise the limit in our SETTINGS.
// - Limits::max_concurrent_streams caps the streams we open, below the server's own
//   SETTINGS_MAX_CONCURRENT_STREAMS (100 assumed until its SETTINGS arrive, nghttp2's default).
// - a server that breaks the protocol, or sends bytes that are not HTTP/2 (an HTTP/1 server on an
//   h2c port): receive() returns false; a GOAWAY saying so goes out with the next flush().
//
// The owner's loop: bytes read -> receive(); then flush() into the socket's output and write it.
// When either returns false, write what flush() produced and close; when finished() says nothing
// is left to do (after a GOAWAY, either side's, and the last stream), close once the output is
// written.
//
// The Handler may call any method of the session from its callbacks except receive(), flush()
// and the destructor (nghttp2 is not re-entrant). Destroying the session produces no events, and
// after receive() or flush() returned false no on_stream_closed comes for the streams still
// open: the owner fails them with the connection.
#pragma once

#include <event2/buffer.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "worker/h2/header_block.hpp"
#include "worker/h2/nghttp2_ptr.hpp"
#include "worker/h2/outgoing_body.hpp"
#include "worker/h2/types.hpp"

namespace proxyd::worker::h2 {

class ClientSession {
  public:
    class Handler {
      public:
        virtual ~Handler() = default;
        // An interim (1xx) response head; informational only, the final head follows.
        virtual void on_response_informational(std::int32_t /*stream*/, int /*status*/,
                                               std::vector<Header>&& /*headers*/) {}
        // The final response head: status and regular fields (lower case, as received). If
        // end_stream, there is no body and on_response_end follows at once.
        virtual void on_response_head(std::int32_t stream, int status,
                                      std::vector<Header>&& headers, bool end_stream) = 0;
        // A piece of the response body. Call consume() once it has been forwarded (now or
        // later); until then it holds the server's window.
        virtual void on_response_data(std::int32_t stream, const std::uint8_t* data,
                                      std::size_t len) = 0;
        // Trailer fields after the body (gRPC: grpc-status, grpc-message); on_response_end
        // follows at once.
        virtual void on_response_trailers(std::int32_t stream, std::vector<Header>&& trailers) = 0;
        // The server finished the response.
        virtual void on_response_end(std::int32_t stream) = 0;
        // The stream is gone: both sides finished it (NO_ERROR), or it was reset by either side
        // (the code received, or the one we reset it with even if the server's END_STREAM
        // crossed it; REFUSED_STREAM: not processed, safe to retry elsewhere).
        // The last event of a stream; its id is unknown to the session from now on.
        virtual void on_stream_closed(std::int32_t stream, std::uint32_t error_code) = 0;
        // The request body of `stream` ran dry while the server's window is open: everything
        // appended has been written to the output. A good moment to read the client again.
        virtual void on_request_writable(std::int32_t /*stream*/) {}
        // The server sent GOAWAY: no new streams on this connection (can_submit() is false from
        // now on). Streams above `last_stream_id` were not processed; each of them closes with
        // REFUSED_STREAM right after this.
        virtual void on_goaway(std::int32_t last_stream_id, std::uint32_t error_code) = 0;
    };

    // Queues the client connection preface and our SETTINGS and connection window: the first
    // flush() writes them (before or with the first request). Throws std::bad_alloc when nghttp2
    // cannot allocate.
    ClientSession(Handler& handler, const Limits& limits);
    ~ClientSession();
    ClientSession(const ClientSession&) = delete;
    ClientSession& operator=(const ClientSession&) = delete;

    // Processes bytes read from the server. False: the connection is beyond saving (not HTTP/2,
    // a protocol violation); stop reading, flush() once more (a GOAWAY may be queued), write what
    // it produced and close.
    [[nodiscard]] bool receive(const std::uint8_t* data, std::size_t len);
    // Serialises pending frames into `out`, request bodies moved from their chains without a
    // copy. Takes no more body once `out` holds `watermark` bytes (it may pass it by one frame;
    // want_write() stays true). False: the session ended with an error (after the GOAWAY that
    // says so, now in `out`): write `out`, then close.
    [[nodiscard]] bool flush(evbuffer* out, std::size_t watermark = SIZE_MAX);

    bool want_read() const;
    bool want_write() const;
    // Nothing left to read or write (after a GOAWAY and its last stream, or an error): once `out`
    // is written, close the connection.
    bool finished() const { return !want_read() && !want_write(); }

    // A new stream may be opened now: no GOAWAY either way, stream ids left, and fewer streams
    // open than the server's SETTINGS_MAX_CONCURRENT_STREAMS and Limits::max_concurrent_streams.
    bool can_submit() const;
    // Opens a stream: the request head (empty pseudo-header values are left out, e.g. :authority
    // when unknown) and regular fields. Connection-specific fields are dropped (header_block.hpp)
    // except "te: trailers", the one TE that HTTP/2 allows and gRPC requires; Host becomes
    // :authority when that is empty and is dropped otherwise; names go out lower-cased.
    // end_stream: no body follows. Returns the stream id, or a negative number when the stream
    // cannot be opened (!can_submit(), or nghttp2 refused it).
    std::int32_t submit_request(std::string_view method, std::string_view scheme,
                                std::string_view authority, std::string_view path,
                                const std::vector<Header>& headers, bool end_stream);
    // Moves all of `data` to the end of the stream's request body (dropped when the stream is
    // gone or its request ended); it goes out as the server's windows allow.
    void append_request_data(std::int32_t stream, evbuffer* data);
    // No more body: the request ends when what was appended is sent (an empty DATA frame with
    // END_STREAM if nothing is left), with `trailers` as a final HEADERS frame if there are any.
    void end_request(std::int32_t stream, const std::vector<Header>& trailers = {});
    // `n` bytes of the stream's response body were forwarded: the server may send that much more.
    void consume(std::int32_t stream, std::size_t n);
    // Request body bytes appended but not yet written to the output (0 for an unknown stream).
    std::size_t pending_request_bytes(std::int32_t stream) const;
    // Ends the stream at once with RST_STREAM `error_code` (CANCEL when the client went away); no
    // more response events, on_stream_closed follows once it is sent.
    void reset_stream(std::int32_t stream, std::uint32_t error_code);
    // Retiring the connection: GOAWAY(NO_ERROR), no new streams; those open finish and then
    // finished() turns true.
    void shutdown_gracefully();
    // Streams submitted and not yet closed.
    std::size_t open_streams() const { return live_.size(); }

  private:
    struct Stream;
    struct Callbacks;
    friend struct Callbacks;

    void submit_settings();
    Stream* find(std::int32_t id) const;
    OutgoingBody* body_of(std::int32_t id) const;  // its outgoing body, null when unknown
    std::unique_ptr<Stream> take_spare();
    void build_request(std::string_view method, std::string_view scheme, std::string_view authority,
                       std::string_view path, const std::vector<Header>& headers);
    bool nghttp2_gave_up() const;
    // Request side, in the order nghttp2 calls it.
    int on_frame_sent(const nghttp2_frame& frame);
    void on_frame_not_sent(const nghttp2_frame& frame, int lib_error);
    // Response side.
    void begin_block(std::int32_t id);
    void add_header(Stream& stream, std::string_view name, std::string_view value);
    int on_frame_received(const nghttp2_frame& frame);
    void finish_block(Stream& stream, bool end_stream);
    void on_body_chunk(std::int32_t id, const std::uint8_t* data, std::size_t len);
    void end_response(Stream& stream);
    void close_stream(std::int32_t id, std::uint32_t error_code);

    Handler& handler_;
    Limits limits_;
    HeaderBlock block_;                // scratch: the regular fields of a request or trailers
    std::vector<nghttp2_nv> request_;  // scratch: the request block submitted, reused
    // Open streams' state in id order (ids only grow), and closed ones' for reuse.
    std::vector<std::unique_ptr<Stream>> live_;
    std::vector<std::unique_ptr<Stream>> spare_;
    BodySender sender_;    // the bodies' way out; on_request_writable for those that ran dry
    bool fatal_ = false;   // nghttp2 failed: the session must not be used any more
    bool failed_ = false;  // a GOAWAY with an error code went out: the connection is over
    bool goaway_received_ = false;  // the server's GOAWAY
    bool draining_ = false;         // shutdown_gracefully() was called
    SessionPtr session_;            // last: it goes first, while the state its callbacks see exists
};

}  // namespace proxyd::worker::h2
