// A worker's HTTP/2 upstream connections (protocol = "h2c" / "h2"), per server: requests share
// them, one stream each, and a new connection is opened only when every open one is at the
// server's SETTINGS_MAX_CONCURRENT_STREAMS (or going away). Connections close on their own when
// idle for server.timeouts.keepalive, on the server's GOAWAY once their streams are done, or on
// errors; the pool unlinks them at once and frees them after the current callback.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "common/config/types.hpp"
#include "common/util/event_ptr.hpp"
#include "worker/h2/upstream_connection.hpp"
#include "worker/upstream_pool.hpp"

namespace proxyd::worker {

class H2UpstreamPool {
  public:
    // `connector` makes the sockets (connect, TLS with its session resumption).
    H2UpstreamPool(event_base* base, const config::Config& config, UpstreamPool& connector);
    ~H2UpstreamPool();
    H2UpstreamPool(const H2UpstreamPool&) = delete;
    H2UpstreamPool& operator=(const H2UpstreamPool&) = delete;

    // A connection to that server with room for one more stream (the oldest such, so that the
    // others can go idle and close), or a new one; null with `error` when a connect fails at once.
    H2Upstream* acquire(std::size_t upstream, std::size_t server, std::string& error);
    // Unlinks `connection` (which closed itself); it is freed after the current callback.
    void retire(H2Upstream* connection);
    // Closes the connections no stream uses (the worker drains).
    void close_all_idle();

    const config::Config& config() const { return config_; }
    event_base* base() const { return base_; }

  private:
    std::vector<std::unique_ptr<H2Upstream>>& list(std::size_t upstream, std::size_t server);
    static void on_reap(evutil_socket_t, short, void* arg);

    event_base* base_;
    const config::Config& config_;
    UpstreamPool& connector_;
    // open_[upstream][server]: oldest first. Grown when servers are added at runtime.
    std::vector<std::vector<std::vector<std::unique_ptr<H2Upstream>>>> open_;
    std::vector<std::unique_ptr<H2Upstream>> retired_;
    EventPtr reaper_;
};

}  // namespace proxyd::worker
