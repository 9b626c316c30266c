// A worker process: one event loop that accepts on its slot's listening sockets and proxies every
// connection it accepted. Forked by the master after the config was validated, so it inherits the
// config; it talks to the master over `channel` (commands in, "ready" out) and exits when the
// master goes away.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/config/types.hpp"
#include "common/http/parser.hpp"
#include "common/shm/cache_store.hpp"
#include "common/shm/upstream_state.hpp"
#include "common/shm/worker_stats.hpp"
#include "common/tls/client_context.hpp"
#include "common/tls/server_context.hpp"
#include "common/util/event_ptr.hpp"
#include "common/util/unique_fd.hpp"
#include "worker/access_policy.hpp"
#include "worker/compression.hpp"
#include "worker/forward_headers.hpp"
#include "worker/free_list.hpp"
#include "worker/h2/upstream_pool.hpp"
#include "worker/metrics_recorder.hpp"
#include "worker/request_id.hpp"
#include "worker/upstream_pool.hpp"
#include "worker/upstream_selector.hpp"

namespace proxyd::worker {

class ClientConnection;
struct Exchange;
struct Http1Request;

struct WorkerOptions {
    // The worker's own copy (inherited at fork): runtime server changes are applied to it.
    config::Config* config = nullptr;
    std::vector<int> listen_fds;  // this slot's sockets, one per listen address
    int channel_fd = -1;          // socketpair end to the master
    shm::WorkerSlotStats* stats = nullptr;
    shm::UpstreamStateLayout* upstream_state = nullptr;
    shm::RateLimitTable* rate_limits = nullptr;
    shm::SeriesTable* metrics = nullptr;  // this worker's stats slot's labelled series
    shm::CacheStore* cache = nullptr;     // null when no route caches
    // Built by the master before the fork; null when there is no [tls] / no TLS upstream server.
    const tls::ServerTls* server_tls = nullptr;
    tls::ClientTls* client_tls = nullptr;  // gains contexts for TLS servers added at runtime
    std::size_t stats_slot = 0;
    int slot = 0;
    int generation = 1;
    pid_t master_pid = 0;
};

// Entry point after fork; returns the process exit status.
int run_worker(const WorkerOptions& options);

class Worker {
  public:
    Worker(const WorkerOptions& options, event_base* base);
    ~Worker();

    enum class DrainMode {
        // A newer generation serves: finish in-flight requests with Connection: close, and close
        // an idle keep-alive connection at its next request or keep-alive timeout, so a client
        // never sends a request into a connection we are closing.
        Handover,
        // Nobody serves after us (stop, master gone): idle connections close at once.
        Stop,
    };

    bool start(std::string& error);
    void begin_drain(DrainMode mode);
    void stop_now();

    // Shared with connections.
    event_base* base() const { return base_; }
    const config::Config& config() const { return config_; }
    UpstreamPool& pool() { return pool_; }
    H2UpstreamPool& h2_pool() { return h2_pool_; }
    shm::WorkerSlotStats& stats() { return *stats_; }
    RequestIdGenerator& request_ids() { return request_ids_; }
    UpstreamSelector& selector() { return selector_; }
    AccessPolicy& access() { return access_; }
    MetricsRecorder& metrics() { return metrics_; }
    // Logs a Redis rate-limit failure, at most once a second per worker.
    void warn_redis_failure(const config::RateLimit& limit);
    // Reused per request so that heads are parsed and built without allocating.
    http::Request& scratch_request() { return *scratch_request_; }
    http::Response& scratch_response() { return *scratch_response_; }
    // The cache phase's own: a stored head re-parsed, the request's headers kept for Vary and
    // conditionals, and a response head rewritten for a content coding (never live at once with
    // another use of the same object).
    http::Request& cache_request() { return *cache_request_; }
    http::Response& encoded_response() { return *encoded_response_; }
    evbuffer* encoded_body() { return encoded_body_.get(); }
    shm::CacheStore* cache() { return options_.cache; }
    // Setting up zlib's state costs ~300 KiB of allocation: a few encoders are kept between
    // responses. take_spare_encoder fills `into` (if it has no state) from them; keep_encoder
    // takes `from`'s state back when fewer than kSpareEncoders are kept.
    void take_spare_encoder(Compressor& into);
    void keep_encoder(Compressor& from);
    std::vector<std::string_view>& scratch_views() { return scratch_views_; }
    std::string& scratch() { return scratch_; }
    bool draining() const { return draining_; }
    // server.response_headers, plus Strict-Transport-Security on TLS connections when set.
    const HeaderList& response_headers(bool tls) const {
        return tls ? tls_response_headers_ : config_.server.response_headers;
    }

    // Per-request objects, recycled (worker/free_list.hpp).
    std::unique_ptr<Exchange> acquire_exchange();
    void recycle_exchange(std::unique_ptr<Exchange> exchange);
    // Taken and given back by ClientConnection itself, where the type is complete (inlined on
    // the per-request path).
    FreeList<Http1Request>& http1_requests() { return free_http1_requests_; }

    // Called by a connection once it has closed its socket; freed after the current callback.
    void retire(ClientConnection* connection);

  private:
    static void on_accept(evutil_socket_t fd, short, void* arg);
    static void on_channel(evutil_socket_t fd, short, void* arg);
    void handle_command(std::string_view command, std::vector<UniqueFd>& fds);
    void replace_servers(int fd);
    void add_listener(int slot, UniqueFd fd);
    void release_slot(int slot);
    static void on_signal(evutil_socket_t signal, short, void* arg);
    static void on_reap(evutil_socket_t, short, void* arg);
    static void on_drain_deadline(evutil_socket_t, short, void* arg);
    void accept_from(int listen_fd);
    bool is_tls_listener(int listen_fd) const;
    void set_accepting(bool on);
    void maybe_exit();

    const WorkerOptions options_;
    config::Config& config_;
    event_base* base_;
    shm::WorkerSlotStats* stats_;
    UpstreamPool pool_;
    H2UpstreamPool h2_pool_;  // after pool_, which makes its sockets
    RequestIdGenerator request_ids_;
    UpstreamSelector selector_;
    AccessPolicy access_;
    MetricsRecorder metrics_;
    std::chrono::steady_clock::time_point last_redis_warning_{};
    std::uint64_t redis_failures_unlogged_ = 0;
    std::unique_ptr<http::Request> scratch_request_;
    std::unique_ptr<http::Response> scratch_response_;
    std::unique_ptr<http::Request> cache_request_;
    std::unique_ptr<http::Response> encoded_response_;
    EvbufferPtr encoded_body_;
    static constexpr std::size_t kSpareEncoders = 4;
    std::vector<Compressor> spare_encoders_;
    std::vector<std::string_view> scratch_views_;
    std::string scratch_;
    HeaderList tls_response_headers_;
    struct Listening {
        int slot;  // -1 for this worker's own sockets
        UniqueFd fd;
        EventPtr event;
        bool tls = false;  // its address is one of [tls] listen
    };
    std::vector<Listening> listening_;
    std::vector<EventPtr> signal_events_;
    EventPtr channel_event_;
    EventPtr reaper_;
    EventPtr drain_deadline_;
    ClientConnection* connections_ = nullptr;  // intrusive list of open connections
    std::vector<ClientConnection*> retired_;
    FreeList<Exchange> free_exchanges_;
    FreeList<Http1Request> free_http1_requests_;
    std::size_t open_connections_ = 0;
    bool accepting_ = false;
    bool draining_ = false;
};

}  // namespace proxyd::worker
