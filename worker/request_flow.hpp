// One request's way through the proxy, from its parsed head to the end of its response: the
// phases, in the order the member functions run (request_flow*.cpp read top to bottom the same
// way):
//
//   start (request id, limits, route) -> check_access (CORS, JWT, rate-limit key)
//     -> prepare_balancing -> prepare_upstream_head -> prepare_cache -> prepare_encoding
//     -> apply_rate_limit -> continue_request -> answer_from_cache (hit, stale, or wait for
//     another request's fill) -> go_upstream -> connect_upstream (pool or new connect; next
//     server on failure) -> send_request_head -> forward_request_body -> read_response_head
//     -> send_response_head (begin_cache_fill, encode_head) -> forward_response_body
//     (deliver_body: copy for the store, compress) -> end_body (store) -> finish (metrics,
//     access log, upstream back to the pool)
//
// Any phase may end the request through fail(), the one place that maps a failure to a status.
// A 101 to a WebSocket handshake hands the upstream connection to the client side (a tunnel);
// the flow stays until end_tunnel() to account for it.
//
// The flow owns its Exchange (recycled through the worker's free list), is the user of its
// upstream connection and the waiter of its Redis rate-limit decision, and does the passive
// health accounting, the metrics and the access log. It knows nothing of the client's protocol:
// it talks to the client through ClientSide (worker/client_side.hpp). A flow lives in the
// protocol's per-request object, recycled through the worker's free lists: HTTP/1.1's
// Http1Request (one at a time per ClientConnection); HTTP/2 will have one per stream.
//
// Files: request_flow.cpp (start, endings, failures, log), request_flow_access.cpp (CORS, JWT,
// rate limits), request_flow_cache.cpp (the shared response cache), request_flow_encoding.cpp
// (gzip/br on the way out), request_flow_upstream.cpp (balance, connect, retries, both bodies),
// request_flow_h2.cpp (the same upstream phases on a stream of an HTTP/2 upstream, and gRPC).
#pragma once

#include <cstddef>
#include <memory>
#include <string_view>

#include "common/http/parser.hpp"
#include "common/shm/rate_limit_table.hpp"
#include "common/util/event_ptr.hpp"
#include "worker/client_side.hpp"
#include "worker/exchange.hpp"
#include "worker/h2/upstream_connection.hpp"
#include "worker/rate_limit/redis_limiter.hpp"
#include "worker/upstream_pool.hpp"

namespace proxyd::worker {

class Worker;

class RequestFlow final : public UpstreamUser, public RateLimitWaiter, public H2StreamUser {
  public:
    explicit RequestFlow(Worker& worker);
    ~RequestFlow();
    RequestFlow(const RequestFlow&) = delete;
    RequestFlow& operator=(const RequestFlow&) = delete;

    // The client this flow answers, before start() or fail(): flows are recycled, each time for
    // another client.
    void attach(ClientSide& client) { client_ = &client; }

    // A request is under way: from start() (or a fail() without one) until it finished, was
    // aborted, its tunnel ended or it was abandoned.
    bool active() const { return exchange_ != nullptr; }

    // ---- from the client side
    // A complete, valid request head; its views stay valid until the flow calls
    // ClientSide::release_request_head or has answered. Runs as far as it can at once.
    void start(const http::Request& request);
    // More request body arrived. True when it was forwarded; false when no upstream connection
    // is ready for it (it waits in the client side's buffer).
    bool take_request_body();
    // The client has taken most of the queued response: read the upstream again if the flow
    // stopped for it.
    void on_response_drained();
    // Ends the request (the client side calls it for timeouts, a client gone, a head it could
    // not parse). Without a request under way it starts a bare one, so the answer has a request
    // id and an access-log line.
    void fail(Failure failure, std::string_view detail = {}, int parser_status = 0);
    // The tunnel started by ClientSide::start_tunnel has ended: the access log line (status
    // 101, the tunnel's bytes), then the server is released.
    void end_tunnel();
    // The client is gone and the flow with it: drop everything, without a log line (the flow
    // logged whatever it had to before calling abort()).
    void abandon();

    // ---- from the upstream connection and the Redis limiter
    void on_upstream_readable() override;
    void on_upstream_writable() override;
    void on_upstream_timeout() override;
    void on_rate_decision(const shm::RateDecision& decision, bool redis_error) override;
    // ---- from a stream of an HTTP/2 upstream (request_flow_h2.cpp)
    void on_h2_head(int status, std::vector<h2::Header>&& headers, bool end_stream) override;
    void on_h2_data(evbuffer* data) override;
    void on_h2_trailers(std::vector<h2::Header>&& trailers) override;
    void on_h2_end() override;
    void on_h2_closed(const H2StreamError& error) override;
    void on_h2_writable() override;

  private:
    // The phases, in order. request_flow.cpp:
    bool check_request_limits(const http::Request& request);
    std::string_view client_address(const http::Request& request);
    void prepare_balancing(const http::Request& request);
    void prepare_upstream_head(const http::Request& request);
    void continue_request();
    void go_upstream();
    // request_flow_access.cpp:
    bool check_access(const http::Request& request);
    bool answer_preflight(const http::Request& request);
    bool authenticate(const http::Request& request);
    void apply_rate_limit();
    void apply_rate_decision(const shm::RateDecision& decision);
    // request_flow_cache.cpp:
    void prepare_cache(const http::Request& request);
    bool answer_from_cache();
    shm::CacheFound look_up_cached(std::int64_t now_ms);
    const http::Request* kept_request_head();
    void wait_for_fill(std::int64_t now_ms);
    static void on_cache_timer(evutil_socket_t, short, void* arg);
    void serve_cached(shm::CacheResult result, std::int64_t now_ms);
    bool serve_stale_on_error(int status);
    void append_cache_lines(std::int64_t now_ms);
    void begin_cache_fill(const http::Response& response);
    void copy_for_store(evbuffer* in, std::size_t n);
    void commit_cache_store();
    void end_cache_fill();
    // request_flow_encoding.cpp:
    void prepare_encoding(const http::Request& request);
    const http::Response& encode_head(const http::Response& response);
    void append_encoding_vary(const http::Response& stored, std::string& lines);
    void deliver_body(evbuffer* in, std::size_t n);
    void end_body();
    void end_body_with_trailers(const HeaderList& trailers);
    // request_flow_upstream.cpp:
    void connect_upstream();
    bool open_upstream(std::string& error);
    void wait_for_capacity();
    void report_attempt(bool success);
    void release_server();
    void send_request_head();
    void forward_request_body();
    bool move_request_body(evbuffer* out);
    void retry_or_fail(Failure failure, std::string_view detail);
    void read_response_head();
    void send_response_head(const http::Response& response);
    void forward_response_body();
    bool forward_chunked_response_body(evbuffer* in);
    void release_upstream();
    void begin_response(const http::Response& response, ClientResponseInfo& info, bool full_duplex);
    // request_flow_h2.cpp, the upstream phases on an HTTP/2 stream:
    void prepare_h2_request(const http::Request& request, const UpstreamRequestInfo& info);
    bool open_h2_stream(std::string& error);
    void forward_h2_request_body();
    void arm_h2_timer(std::chrono::milliseconds phase);
    static void on_h2_timer(evutil_socket_t, short, void* arg);
    void h2_timeout();
    void retry_h2_or_fail(const H2StreamError& error);
    void release_h2_stream(bool cancel);
    void send_grpc_error(int status, std::string_view message, bool keep_alive);
    void end_grpc_stream(int code, std::string_view message);
    // Endings, request_flow.cpp:
    void finish();
    void send_error(int status, std::string_view detail, bool keep_alive);
    void send_bodiless(int status);
    [[nodiscard]] bool flush_client();
    void end_client_gone();
    void recycle();
    void record_exchange();
    void write_access_log();

    Worker& worker_;
    ClientSide* client_ = nullptr;
    std::unique_ptr<Exchange> exchange_;
    EventPtr queue_timer_;              // created the first time every server is full
    EventPtr h2_timer_;                 // an HTTP/2 stream's response and idle timeouts
    EventPtr cache_timer_;              // polls the store while another request fills the key
    bool paused_for_upstream_ = false;  // client body paused: upstream output is full
    bool paused_for_client_ = false;    // upstream reads stopped: client output is full
};

}  // namespace proxyd::worker
