// Upstream connections of one worker: new non-blocking connects, and per-server pools of idle
// keep-alive connections (most recently used first, so warm connections stay warm and the cold
// ones time out). An idle connection is watched: if the upstream closes it or sends anything, it
// leaves the pool at once, so a request is never sent on a connection known to be dead.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/config/types.hpp"
#include "common/tls/client_context.hpp"
#include "worker/stream.hpp"

namespace proxyd::worker {

// Whoever currently uses an upstream connection gets its events.
class UpstreamUser {
  public:
    virtual void on_upstream_readable() = 0;
    virtual void on_upstream_writable() = 0;
    virtual void on_upstream_timeout() = 0;

  protected:
    ~UpstreamUser() = default;
};

class UpstreamPool;

struct UpstreamConnection {
    Stream stream;
    std::size_t upstream_index = 0;
    std::size_t server_index = 0;
    bool connected = false;
    bool reused = false;           // came from the pool: may have been closed by the peer meanwhile
    UpstreamUser* user = nullptr;  // nullptr while idle in the pool
    UpstreamPool* pool = nullptr;
};

using UpstreamPtr = std::unique_ptr<UpstreamConnection>;

class UpstreamPool {
  public:
    UpstreamPool(event_base* base, const config::Config& config, tls::ClientTls* tls);
    ~UpstreamPool();

    // An idle pooled connection to that server, or nullptr. With `probe`, each candidate is
    // first checked for a close the loop has not reported yet (one recv per request): needed
    // only when the request could not be sent again on a fresh connection should the upstream
    // turn out to have closed this one (RequestFlow::retry_or_fail resends body-less requests).
    UpstreamPtr take_idle(std::size_t upstream, std::size_t server, UpstreamUser* user, bool probe);
    // Starts a non-blocking connect; nullptr with `error` when it fails at once (e.g. refused).
    // The user gets on_upstream_writable when the connect finishes (check with finish_connect).
    UpstreamPtr connect(std::size_t upstream, std::size_t server, UpstreamUser* user,
                        std::string& error);
    // After the connect's writability: true when connected, else `error` says why.
    static bool finish_connect(UpstreamConnection& connection, std::string& error);
    // Keeps the connection for reuse: up to `keepalive` per server for timeouts.keepalive, more
    // than that only for kSurplusGrace (the next burst of requests takes them).
    void release(UpstreamPtr connection);

    static constexpr std::chrono::milliseconds kSurplusGrace{2000};
    void close_all_idle();
    // The upstream's server list changed (runtime change): make room for new servers, close the
    // idle connections of retired and draining ones. False when a new TLS server's context
    // cannot be set up (its connects then fail with the reason).
    bool servers_changed(std::size_t upstream, std::string& error);

    // For the idle watchers.
    void on_idle_event(UpstreamConnection* connection);

  private:
    std::chrono::milliseconds surplus_grace() const;
    std::vector<UpstreamPtr>& idle_list(std::size_t upstream, std::size_t server);

    event_base* base_;
    const config::Config& config_;
    tls::ClientTls* tls_;
    // sessions_[upstream][server]: the last TLS session, resumed by the next connection.
    std::vector<std::vector<tls::SessionSlot>> sessions_;
    // idle_[upstream][server], the most recently used at the back.
    std::vector<std::vector<std::vector<UpstreamPtr>>> idle_;
};

}  // namespace proxyd::worker
