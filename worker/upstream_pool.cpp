#include "worker/upstream_pool.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace proxyd::worker {
namespace {

void on_read(evutil_socket_t, short, void* arg) {
    auto* c = static_cast<UpstreamConnection*>(arg);
    if (c->user) {
        c->user->on_upstream_readable();
    } else if (!c->stream.is_tls() || !c->stream.still_usable_when_idle()) {
        // (A TLS server may send a session ticket after the response: that is not a close.)
        c->pool->on_idle_event(c);
    }
}

void on_write(evutil_socket_t, short, void* arg) {
    auto* c = static_cast<UpstreamConnection*>(arg);
    if (c->user) c->user->on_upstream_writable();
}

void on_timer(evutil_socket_t, short, void* arg) {
    auto* c = static_cast<UpstreamConnection*>(arg);
    if (c->user) {
        c->user->on_upstream_timeout();
    } else {
        c->pool->on_idle_event(c);
    }
}

}  // namespace

UpstreamPool::UpstreamPool(event_base* base, const config::Config& config, tls::ClientTls* tls)
    : base_(base), config_(config), tls_(tls) {
    idle_.resize(config.upstreams.size());
    sessions_.resize(config.upstreams.size());
    for (std::size_t u = 0; u < config.upstreams.size(); ++u) {
        idle_[u].resize(config.upstreams[u].servers.size());
        sessions_[u].resize(config.upstreams[u].servers.size());
    }
}

UpstreamPool::~UpstreamPool() = default;

std::vector<UpstreamPtr>& UpstreamPool::idle_list(std::size_t upstream, std::size_t server) {
    return idle_[upstream][server];
}

UpstreamPtr UpstreamPool::take_idle(std::size_t upstream, std::size_t server, UpstreamUser* user,
                                    bool probe) {
    auto& list = idle_list(upstream, server);
    // A close seen by the loop already took the connection out of the list (on_read); `probe`
    // also catches one that arrived since the last epoll_wait.
    while (probe && !list.empty() && !list.back()->stream.still_usable_when_idle()) {
        list.pop_back();
    }
    if (list.empty()) return nullptr;
    UpstreamPtr connection = std::move(list.back());
    list.pop_back();
    connection->stream.cancel_timer();
    connection->user = user;
    connection->reused = true;
    return connection;
}

UpstreamPtr UpstreamPool::connect(std::size_t upstream, std::size_t server, UpstreamUser* user,
                                  std::string& error) {
    const auto& target = config_.upstreams[upstream].servers[server];
    const auto& address = target.address;
    UniqueFd fd(::socket(address.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) {
        error = std::string("socket: ") + std::strerror(errno);
        return nullptr;
    }
    set_tcp_nodelay(fd.get());
    int rc =
        ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address.storage), address.length);
    if (rc != 0 && errno != EINPROGRESS) {
        error = std::string("connect: ") + std::strerror(errno);
        return nullptr;
    }
    auto connection = std::make_unique<UpstreamConnection>();
    connection->upstream_index = upstream;
    connection->server_index = server;
    connection->user = user;
    connection->pool = this;
    connection->connected = rc == 0;
    int raw = fd.get();
    connection->stream.open(base_, std::move(fd), on_read, on_write, on_timer, connection.get());
    if (target.tls) {
        tls::SslPtr ssl;
        const bool h2 = config_.upstreams[upstream].protocol == config::UpstreamProtocol::H2;
        if (tls_) ssl = tls_->connect(target, raw, &sessions_[upstream][server], error, h2);
        if (!ssl) {
            if (!tls_) error = "TLS is not set up for server " + target.id;
            return nullptr;
        }
        // "Connected" is reported once the handshake is done.
        connection->connected = false;
        connection->stream.start_tls(std::move(ssl), true);
    }
    return connection;
}

bool UpstreamPool::finish_connect(UpstreamConnection& connection, std::string& error) {
    int so_error = 0;
    socklen_t len = sizeof so_error;
    if (::getsockopt(connection.stream.fd(), SOL_SOCKET, SO_ERROR, &so_error, &len) != 0) {
        so_error = errno;
    }
    if (so_error != 0) {
        error = std::string("connect: ") + std::strerror(so_error);
        return false;
    }
    if (connection.stream.tls_failed()) {
        error = "TLS handshake: " + connection.stream.tls_error();
        return false;
    }
    connection.connected = true;
    return true;
}

void UpstreamPool::release(UpstreamPtr connection) {
    auto& list = idle_list(connection->upstream_index, connection->server_index);
    const auto& upstream = config_.upstreams[connection->upstream_index];
    const auto& server = upstream.servers[connection->server_index];
    auto limit = static_cast<std::size_t>(upstream.keepalive);
    if (limit == 0 || server.retired || server.drain ||
        evbuffer_get_length(connection->stream.in()) != 0 ||
        connection->stream.pending_output() != 0) {
        return;  // closed by the unique_ptr
    }
    connection->user = nullptr;
    connection->stream.enable_read(true);  // to see the upstream close it
    // Beyond `keepalive`, a connection is kept only for a short grace. Under load the responses
    // of one loop turn are released before the next turn's requests take connections, so
    // closing the surplus at once would make most of those requests connect again (measured
    // with 1,000 clients and keepalive 64: 0.8 new upstream connections per request). Only
    // connections released while the list is below the limit get the long timeout, so at
    // most `keepalive` of them outlive the grace.
    connection->stream.arm_timer(list.size() < limit ? config_.server.timeouts.keepalive
                                                     : surplus_grace());
    list.push_back(std::move(connection));
}

std::chrono::milliseconds UpstreamPool::surplus_grace() const {
    return std::min(config_.server.timeouts.keepalive, kSurplusGrace);
}

void UpstreamPool::on_idle_event(UpstreamConnection* connection) {
    // Data, EOF or the idle timeout on a pooled connection: in every case it is no longer usable.
    auto& list = idle_list(connection->upstream_index, connection->server_index);
    auto it = std::find_if(list.begin(), list.end(),
                           [&](const UpstreamPtr& p) { return p.get() == connection; });
    if (it != list.end()) list.erase(it);
}

bool UpstreamPool::servers_changed(std::size_t upstream, std::string& error) {
    const auto& servers = config_.upstreams[upstream].servers;
    idle_[upstream].resize(servers.size());
    sessions_[upstream].resize(servers.size());
    for (std::size_t i = 0; i < servers.size(); ++i) {
        if (servers[i].retired || servers[i].drain) idle_[upstream][i].clear();
    }
    return tls_ == nullptr || tls_->add_contexts(config_, error);
}

void UpstreamPool::close_all_idle() {
    for (auto& servers : idle_) {
        for (auto& list : servers) list.clear();
    }
}

}  // namespace proxyd::worker
