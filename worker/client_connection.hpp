// A client connection and the request it is carrying.
//
// The life of a request, in the order the member functions run (client_connection.cpp reads top
// to bottom the same way):
//   read_request_head -> begin_request (route, limits, balance) -> connect_upstream ->
//   send_request_head -> forward_request_body -> read_response_head -> send_response_head ->
//   forward_response_body -> finish_exchange (log, pool, keep-alive or close)
// A WebSocket handshake answered with 101 turns into a tunnel instead (client_tunnel.cpp).
// Any phase may end the request through fail(), the one place that maps a failure to a status.
#pragma once

#include <netinet/in.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "common/http/parser.hpp"
#include "common/shm/rate_limit_table.hpp"
#include "worker/forward_headers.hpp"
#include "worker/rate_limit/redis_limiter.hpp"
#include "worker/exchange.hpp"
#include "worker/stream.hpp"
#include "worker/upstream_pool.hpp"
#include "worker/upstream_selector.hpp"

namespace proxyd::config {
struct Route;
}

namespace proxyd::worker {

class Worker;

class ClientConnection final : public UpstreamUser, public RateLimitWaiter {
  public:
    // `ssl` set: the connection came in on a TLS listener.
    ClientConnection(Worker& worker, UniqueFd fd, const sockaddr_storage& peer, tls::SslPtr ssl);
    ~ClientConnection();

    void start();
    // The worker is draining: answer the current (or next) request with Connection: close.
    // `close_idle` closes a connection that is between requests at once.
    void begin_drain(bool close_idle);
    void close();
    bool closed() const { return !stream_.is_open(); }

    void on_upstream_readable() override;
    void on_upstream_writable() override;
    void on_upstream_timeout() override;
    void on_rate_decision(const shm::RateDecision& decision, bool redis_error) override;

    // The worker's intrusive list.
    ClientConnection* prev = nullptr;
    ClientConnection* next = nullptr;

  private:
    enum class Phase { WaitingHead, Exchanging, Tunneling, Lingering, Closed };

    static void on_read_event(evutil_socket_t, short, void* arg);
    static void on_write_event(evutil_socket_t, short, void* arg);
    static void on_timer_event(evutil_socket_t, short, void* arg);
    void on_readable();
    void on_writable();
    void on_timer();
    void set_peer(const sockaddr_storage& peer);
    void on_head_timer();
    void process_input();

    // The phases, in order.
    bool read_proxy_header();
    void read_proxy_header_before_tls();
    void read_request_head();
    void begin_request(const http::Request& request);
    bool check_request_limits(const http::Request& request);
    bool check_access(const http::Request& request);
    bool answer_preflight(const http::Request& request);
    bool authenticate(const http::Request& request);
    void apply_rate_limit();
    void apply_rate_decision(const shm::RateDecision& decision);
    void continue_request();
    std::string_view client_address(const http::Request& request);
    void prepare_balancing(const http::Request& request);
    void prepare_upstream_head(const http::Request& request);
    void connect_upstream();
    bool open_upstream(std::string& error);
    void wait_for_capacity();
    void report_attempt(bool success);
    void release_server();
    void send_request_head();
    void forward_request_body();
    bool forward_chunked_request_body(evbuffer* in, evbuffer* out);
    void read_response_head();
    void send_response_head(const http::Response& response);
    void forward_response_body();
    bool forward_chunked_response_body(evbuffer* in);
    void move_response_data(evbuffer* in, std::size_t n);
    void finish_exchange();

    // client_tunnel.cpp: after a 101, bytes both ways until a side closes or idles out.
    void start_tunnel();
    void pump_tunnel();
    void on_tunnel_client_readable();
    void on_tunnel_upstream_readable();

    void fail(Failure failure, std::string_view detail = {}, int parser_status = 0);
    void retry_or_fail(Failure failure, std::string_view detail);
    void send_error(int status, std::string_view detail, bool keep_alive);
    void send_bodiless(int status);
    void record_exchange();
    void write_access_log();
    void release_upstream();
    void end_response_close();
    void start_lingering_close();
    [[nodiscard]] bool flush_client();
    void wait_for_next_request();

    Worker& worker_;
    Stream stream_;
    char peer_ip_[46] = {};
    std::uint16_t peer_port_ = 0;
    Phase phase_ = Phase::WaitingHead;
    bool head_timer_armed_ = false;
    bool awaiting_proxy_header_ = false;  // server.proxy_protocol: the connection's first bytes
    std::chrono::steady_clock::time_point head_started_;
    bool paused_for_upstream_ = false;  // client reads stopped: upstream output is full
    bool paused_for_client_ = false;    // upstream reads stopped: client output is full
    bool client_eof_ = false;
    bool tls_ = false;
    // A TLS listener with server.proxy_protocol: TLS starts after the PROXY header.
    tls::SslPtr tls_after_proxy_header_;
    EventPtr proxy_retry_timer_;
    bool close_after_response_ = false;
    std::unique_ptr<Exchange> exchange_;
    EventPtr queue_timer_;  // created the first time every server is full
};

}  // namespace proxyd::worker
