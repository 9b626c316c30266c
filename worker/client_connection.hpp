// An HTTP/1.1 client connection: the wire side of the requests it carries, one at a time.
//
// Its life, in the order the member functions run (client_connection.cpp reads the same way):
//   [read_proxy_header] -> read_request_head (parse, pipelining, slow-client rule) -> begin_request
//   -> the request's RequestFlow runs its phases, calling back through ClientSide for the body
//      (Content-Length counted or chunked parsed off, "100 Continue") and for the response
//      (head text, chunked framing, proxy-made errors)
//   -> flow_finished: keep-alive (wait_for_next_request) or close (end_response_close, lingering)
// A WebSocket handshake answered with 101 turns the connection into a tunnel instead: the flow
// hands over its upstream connection (client_tunnel.cpp). The PROXY protocol header and the
// slow-client head timer are in client_access.cpp.
//
// What is HTTP/1.1 stays here: head parsing, keep-alive and pipelining, lingering close, Expect,
// the body framings toward and from the client, the tunnel, the connection's one timer (head,
// body, "client stopped reading", keep-alive, linger). Everything a request does between its head
// and its end (route, access, balance, upstream, retries, log) is the flow's
// (worker/request_flow.hpp).
#pragma once

#include <netinet/in.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string_view>

#include "common/http/parser.hpp"
#include "worker/client_side.hpp"
#include "worker/exchange.hpp"
#include "worker/forward_headers.hpp"
#include "worker/h2_client.hpp"
#include "worker/request_flow.hpp"
#include "worker/stream.hpp"
#include "worker/upstream_pool.hpp"
#include "worker/websocket_frames.hpp"

namespace proxyd::worker {

class Worker;

// The HTTP/1.1 side of the request in flight, and its flow: taken from the worker's free list when
// a head arrives (or a bare flow must answer one that did not parse), given back when the request
// has ended, so that an idle keep-alive connection holds none of it.
struct Http1Request {
    explicit Http1Request(Worker& worker) : flow(worker) {}
    void reset();

    RequestFlow flow;
    int version_minor = 1;
    bool keep_alive = true;  // the client's wish (version, Connection)
    bool expect_continue = false;
    std::size_t head_length = 0;  // the head, while it is still in the input buffer
    http::BodyKind body = http::BodyKind::None;
    std::uint64_t body_remaining = 0;  // Content-Length bytes still to come
    std::uint64_t body_bytes = 0;      // de-framed body bytes so far
    http::ChunkedDecoder body_chunks;
    bool body_done = true;             // the body was read in full, or abandoned
    Framing framing = Framing::None;   // of the response toward the client
    bool response_keep_alive = false;  // as the response head told the client
    WireBytes wire;
    UpstreamPtr tunnel_upstream;       // after a 101: the flow's upstream connection
    bool tunnel_upstream_eof = false;  // the upstream has closed its side of the tunnel
    // Frame boundaries each way, for the close frames of going_away().
    WebSocketFrameTracker frames_to_upstream;
    WebSocketFrameTracker frames_to_client;
};

class ClientConnection final : public ClientSide, public UpstreamUser {
  public:
    // `ssl` set: the connection came in on a TLS listener.
    ClientConnection(Worker& worker, UniqueFd fd, const sockaddr_storage& peer, tls::SslPtr ssl);
    ~ClientConnection();

    void start();
    // The worker is draining: answer the current (or next) request with Connection: close.
    // `close_idle` closes a connection that is between requests at once.
    void begin_drain(bool close_idle);
    // The drain deadline (shutdown_timeout) has come: a WebSocket tunnel tells both sides with a
    // close frame 1001 (going away) where it can put one between frames, then it is closed.
    // Other connections are left to the exit.
    void going_away();
    void close();
    bool closed() const { return !stream_.is_open(); }

    // ClientSide: what the request flow asks of the connection.
    std::string_view peer_ip() const override { return peer_ip_; }
    std::uint16_t peer_port() const override { return peer_port_; }
    bool is_tls() const override { return tls_; }
    WireBytes wire_bytes() const override { return request_ ? request_->wire : WireBytes{}; }
    void release_request_head() override;
    bool accept_request_body() override;
    RequestBodyInput request_body() override;
    void consume_request_body(std::size_t n) override;
    void pause_request_body(bool paused) override;
    void abandon_request_body() override;
    void send_response_head(const http::Response& response,
                            const ClientResponseInfo& info) override;
    void send_response_data(evbuffer* from, std::size_t n) override;
    void end_response() override;
    void end_response_with_trailers(const HeaderList&) override { end_response(); }
    void send_error(int status, std::string_view detail, const ClientResponseInfo& info) override;
    void send_bodiless(int status, const ClientResponseInfo& info) override;
    bool flush_response() override;
    std::size_t response_pending() const override { return stream_.pending_output(); }
    void response_stalled(bool stalled) override;
    void flow_finished() override;
    void abort() override { close(); }
    void start_tunnel(UpstreamPtr upstream) override;

    // UpstreamUser, while tunneling (before that the flow is the upstream's user).
    void on_upstream_readable() override;
    void on_upstream_writable() override;
    void on_upstream_timeout() override;

    // The worker's intrusive list.
    ClientConnection* prev = nullptr;
    ClientConnection* next = nullptr;

  private:
    // Http2: the connection speaks HTTP/2 (ALPN h2, or the preface with server.h2c) and its
    // H2Client has everything but the socket.
    enum class Phase { WaitingHead, Exchanging, Tunneling, Lingering, Http2, Closed };

    static void on_read_event(evutil_socket_t, short, void* arg);
    static void on_write_event(evutil_socket_t, short, void* arg);
    static void on_timer_event(evutil_socket_t, short, void* arg);
    void on_readable();
    void on_writable();
    void on_timer();
    void set_peer(const sockaddr_storage& peer);
    void on_head_timer();
    void process_input();

    // The connection's phases, in order.
    bool read_proxy_header();
    void read_proxy_header_before_tls();
    void read_request_head();
    // Before the first request: is this HTTP/2? Decided (true) or not yet known (false, with
    // `wait` set when more bytes are needed to tell).
    bool speaks_h2(bool& wait);
    void start_h2();
    void begin_request(const http::Request& request);
    void reject(Failure failure, std::string_view detail = {}, int parser_status = 0);
    Http1Request& new_request();
    void end_request();
    RequestBodyInput chunked_request_body();
    bool keep_alive_after(bool flow_allows) const;
    void drop_request_head();
    void end_response_close();
    void start_lingering_close();
    void arm_head_timer();
    void wait_for_next_request();

    // client_tunnel.cpp: after a 101, bytes both ways until a side closes or idles out.
    void pump_tunnel();
    void on_tunnel_client_readable();

    Worker& worker_;
    Stream stream_;
    char peer_ip_[46] = {};
    std::uint16_t peer_port_ = 0;
    Phase phase_ = Phase::WaitingHead;
    bool head_timer_armed_ = false;
    bool awaiting_proxy_header_ = false;  // server.proxy_protocol: the connection's first bytes
    std::chrono::steady_clock::time_point head_started_;
    bool client_eof_ = false;
    bool head_timer_deferred_ = false;  // a keep-alive head's timer, set only if it is partial
    bool unread_body_ = false;          // the last request ended before its body was read whole
    bool tls_ = false;
    // A TLS listener with server.proxy_protocol: TLS starts after the PROXY header.
    tls::SslPtr tls_after_proxy_header_;
    EventPtr proxy_retry_timer_;
    bool close_after_response_ = false;
    std::unique_ptr<Http1Request> request_;  // the request in flight, if any
    bool first_request_ = true;              // HTTP/2 is chosen before it, or never
    std::unique_ptr<H2Client> h2_;
};

}  // namespace proxyd::worker
