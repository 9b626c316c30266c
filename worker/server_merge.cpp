#include "worker/server_merge.hpp"

namespace proxyd::worker {

namespace {

bool same_endpoint(const config::UpstreamServer& a, const config::UpstreamServer& b) {
    return a.id == b.id && a.address.text == b.address.text && a.tls == b.tls && a.sni == b.sni &&
           a.verify == b.verify && a.ca_pem == b.ca_pem;
}

}  // namespace

void merge_servers(std::vector<config::UpstreamServer>& current,
                   std::vector<config::UpstreamServer> incoming) {
    std::vector<bool> kept(current.size(), false);
    std::vector<config::UpstreamServer> added;
    for (auto& next : incoming) {
        bool found = false;
        for (std::size_t i = 0; i < current.size() && !found; ++i) {
            if (kept[i] || !same_endpoint(current[i], next)) continue;
            auto& server = current[i];
            server.weight = next.weight;
            server.max_connections = next.max_connections;
            server.backup = next.backup;
            server.drain = next.drain;
            server.state_index = next.state_index;
            server.retired = false;
            kept[i] = found = true;
        }
        if (!found) added.push_back(std::move(next));
    }
    for (std::size_t i = 0; i < kept.size(); ++i) {
        if (!kept[i]) current[i].retired = true;
    }
    for (auto& server : added) current.push_back(std::move(server));
}

}  // namespace proxyd::worker
