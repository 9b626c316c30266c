#include "worker/h2/upstream_pool.hpp"

#include <algorithm>

namespace proxyd::worker {

H2UpstreamPool::H2UpstreamPool(event_base* base, const config::Config& config,
                               UpstreamPool& connector)
    : base_(base), config_(config), connector_(connector) {
    reaper_.reset(event_new(base, -1, 0, on_reap, this));
}

H2UpstreamPool::~H2UpstreamPool() = default;

std::vector<std::unique_ptr<H2Upstream>>& H2UpstreamPool::list(std::size_t upstream,
                                                               std::size_t server) {
    // Sized on use: servers added at runtime only ever append.
    if (open_.size() <= upstream) open_.resize(upstream + 1);
    if (open_[upstream].size() <= server) open_[upstream].resize(server + 1);
    return open_[upstream][server];
}

H2Upstream* H2UpstreamPool::acquire(std::size_t upstream, std::size_t server, std::string& error) {
    auto& connections = list(upstream, server);
    for (const auto& connection : connections) {
        if (connection->can_submit()) return connection.get();
    }
    std::unique_ptr<H2Upstream> connection =
        H2Upstream::open(*this, connector_, upstream, server, error);
    if (!connection) return nullptr;
    connections.push_back(std::move(connection));
    return connections.back().get();
}

void H2UpstreamPool::retire(H2Upstream* connection) {
    auto& connections = list(connection->upstream_index(), connection->server_index());
    auto it = std::find_if(connections.begin(), connections.end(),
                           [&](const auto& c) { return c.get() == connection; });
    if (it == connections.end()) return;
    retired_.push_back(std::move(*it));
    connections.erase(it);
    event_active(reaper_.get(), EV_TIMEOUT, 1);
}

void H2UpstreamPool::on_reap(evutil_socket_t, short, void* arg) {
    static_cast<H2UpstreamPool*>(arg)->retired_.clear();
}

void H2UpstreamPool::close_all_idle() {
    // Collected first: closing one unlinks it from the list being walked.
    std::vector<H2Upstream*> all;
    for (auto& servers : open_) {
        for (auto& connections : servers) {
            for (auto& connection : connections) all.push_back(connection.get());
        }
    }
    for (H2Upstream* connection : all) connection->close_if_idle();
}

}  // namespace proxyd::worker
