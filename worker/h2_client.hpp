// The HTTP/2 side of a client connection: ALPN "h2" on a TLS listener, or the HTTP/2 connection
// preface on a plain listener with server.h2c. The ClientConnection keeps the socket, the PROXY
// header, TLS and its place in the worker's list; once it sees HTTP/2 it hands its input to an
// H2Client, which runs the connection's h2::ServerSession and turns every stream into a request:
// an H2Stream, the ClientSide of a RequestFlow, through the same phases and upstream pool as an
// HTTP/1.1 request.
//
// Three rules keep nghttp2 and the flows apart (nghttp2 is not re-entrant, flows may end in any
// call they make):
// - The session is driven only from the connection's own events (read, write, timer, the
//   deferred flush): flows never call receive() or flush(). What a flow queues (a response
//   head, body, a reset) is written by a flush that runs on the next loop turn.
// - A stream object outlives both of its ends: the session closing the stream and the flow
//   ending; it is recycled only when both have happened, so neither a flow on the stack nor a
//   session callback ever sees it freed.
// - A stream the client resets, or a connection that closes, fails its flow as ClientGone (the
//   access log line says 499), never while that flow is itself on the stack.
//
// Flow control end to end: a request body byte is acknowledged to the client only when the flow
// moved it upstream (consume_request_body); response bytes wait in the session until the client's
// window takes them, and the flow stops reading its upstream while more than kHighWatermark of
// them wait (response_pending).
#pragma once

#include <event2/buffer.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/http/parser.hpp"
#include "common/util/event_ptr.hpp"
#include "worker/client_side.hpp"
#include "worker/forward_headers.hpp"
#include "worker/h2/server_session.hpp"
#include "worker/request_flow.hpp"
#include "worker/stream.hpp"

namespace proxyd::worker {

class Worker;
class H2Client;
class ClientConnection;

// One request stream: its head as the client sent it, its body on its way, and its flow.
class H2Stream final : public ClientSide {
  public:
    explicit H2Stream(H2Client& client);
    // Ready for another stream id: the head, the body and the flags of the last one are gone.
    void reset(std::int32_t id);

    // From the session (through H2Client).
    void begin(h2::RequestHead&& head);
    void reject(int status, h2::RequestHead&& partial);
    void add_body(const std::uint8_t* data, std::size_t len);
    void end_body();
    void closed_by_session(std::uint32_t error_code);
    void response_writable();
    // The connection is going away with this stream still open.
    void drop();
    void on_timer();

    bool finished() const { return session_closed_ && !flow_.active(); }
    std::int32_t id() const { return id_; }

    // ClientSide.
    std::string_view peer_ip() const override;
    std::uint16_t peer_port() const override;
    bool is_tls() const override;
    WireBytes wire_bytes() const override { return wire_; }
    void release_request_head() override;
    bool accept_request_body() override;
    RequestBodyInput request_body() override;
    void consume_request_body(std::size_t n) override;
    void pause_request_body(bool paused) override { body_paused_ = paused; }
    void abandon_request_body() override;
    void send_response_head(const http::Response& response,
                            const ClientResponseInfo& info) override;
    void send_response_data(evbuffer* from, std::size_t n) override;
    void end_response() override;
    void end_response_with_trailers(const HeaderList& trailers) override;
    void send_error(int status, std::string_view detail, const ClientResponseInfo& info) override;
    void send_bodiless(int status, const ClientResponseInfo& info) override;
    bool flush_response() override;
    std::size_t response_pending() const override;
    void response_stalled(bool stalled) override;
    void flow_finished() override;
    void abort() override;
    void start_tunnel(UpstreamPtr upstream) override;

  private:
    // The request head as http::Request views (into head_), which the flow starts from; a
    // status other than 0 when it breaks a limit the HTTP/1.1 parser would have enforced.
    int build_request();
    void forward_body();
    void submit(int status, bool end_stream);
    void arm_timer(std::chrono::milliseconds timeout);
    void cancel_timer();

    H2Client& client_;
    RequestFlow flow_;
    std::int32_t id_ = 0;
    h2::RequestHead head_;
    http::Request request_;
    std::string cookie_;  // the request's cookie fields, joined with "; " (RFC 9113 8.2.3)
    EvbufferPtr body_;    // request body bytes not yet forwarded
    EvbufferPtr piece_;   // scratch to hand response pieces to the session
    std::uint64_t body_bytes_ = 0;
    bool body_ended_ = false;      // the client ended the stream
    bool body_accepted_ = false;   // the flow is ready to forward the body
    bool body_paused_ = false;     // the upstream takes no more for now
    bool body_abandoned_ = false;  // the response came first: the rest is discarded
    bool body_too_large_ = false;
    bool response_submitted_ = false;
    bool response_ended_ = false;
    bool session_closed_ = false;
    bool stalled_ = false;
    FieldList fields_;
    WireBytes wire_;
    EventPtr timer_;
};

class H2Client final : public h2::ServerSession::Handler {
  public:
    // `stream` is the connection's socket; its input may already hold the client's first bytes.
    H2Client(Worker& worker, ClientConnection& owner, Stream& stream, std::string_view peer_ip,
             std::uint16_t peer_port, bool tls);
    ~H2Client() override;

    // Starts the session (our SETTINGS) and takes what is buffered. False: close the connection.
    [[nodiscard]] bool start();
    // The connection's events. False: the connection is over; close it.
    [[nodiscard]] bool on_readable();
    [[nodiscard]] bool on_writable();
    [[nodiscard]] bool on_idle_timer();
    // The worker drains: GOAWAY, the open streams finish, no new ones.
    void begin_drain();
    // The connection closes: every open stream's flow ends as ClientGone.
    void drop_streams();

    // For the streams.
    Worker& worker() { return worker_; }
    h2::ServerSession& session() { return *session_; }
    std::string_view peer_ip() const { return peer_ip_; }
    std::uint16_t peer_port() const { return peer_port_; }
    bool tls() const { return tls_; }
    // What the streams queued is written on the next loop turn.
    void schedule_flush();
    bool dropping() const { return dropping_; }

    // h2::ServerSession::Handler.
    void on_request(std::int32_t stream, h2::RequestHead&& head) override;
    void on_request_data(std::int32_t stream, const std::uint8_t* data, std::size_t len) override;
    void on_request_end(std::int32_t stream) override;
    void on_request_rejected(std::int32_t stream, int status, h2::RequestHead&& partial) override;
    void on_stream_closed(std::int32_t stream, std::uint32_t error_code) override;
    void on_response_writable(std::int32_t stream) override;

  private:
    static void on_flush_event(evutil_socket_t, short, void* arg);
    H2Stream* find(std::int32_t id) const;
    H2Stream& open_stream(std::int32_t id);
    void recycle_finished();
    // Feeds the session, writes what it produced; false when the connection is over.
    bool pump();
    bool write_out();
    void update_idle_timer();

    Worker& worker_;
    ClientConnection& owner_;  // closed when the session is over
    Stream& stream_;
    std::string peer_ip_;
    std::uint16_t peer_port_ = 0;
    bool tls_ = false;
    std::unique_ptr<h2::ServerSession> session_;
    std::vector<std::unique_ptr<H2Stream>> streams_;  // open or still finishing
    std::vector<std::unique_ptr<H2Stream>> spare_;
    EventPtr flush_event_;
    EventPtr drain_timer_;  // from the shutdown notice to the final GOAWAY
    bool flush_scheduled_ = false;
    int idle_flushes_ = 0;  // flushes in a row that wanted to write and wrote nothing
    bool dropping_ = false;
    bool idle_ = false;  // the idle timer runs
};

// The first bytes of an HTTP/2 connection with prior knowledge (RFC 9113 3.4).
inline constexpr std::string_view kH2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

}  // namespace proxyd::worker
