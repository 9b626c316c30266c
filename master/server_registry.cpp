#include "master/server_registry.hpp"

#include "common/shm/upstream_state.hpp"

namespace proxyd::master {

bool ServerRegistry::assign(config::Config& config, std::string& error) {
    for (auto& upstream : config.upstreams) {
        for (auto& server : upstream.servers) {
            std::string key = upstream.name + "\n" + server.id;
            auto it = indices_.find(key);
            if (it == indices_.end()) {
                if (next_ >= shm::kMaxServers) {
                    error = "more than " + std::to_string(shm::kMaxServers) +
                            " distinct upstream servers since start";
                    return false;
                }
                it = indices_.emplace(key, next_++).first;
            }
            server.state_index = it->second;
        }
    }
    return true;
}

nlohmann::json ServerRegistry::to_json() const {
    return {{"next", next_}, {"indices", indices_}};
}

void ServerRegistry::from_json(const nlohmann::json& saved) {
    if (!saved.is_object()) return;
    next_ = saved.value("next", 0u);
    indices_ = saved.value("indices", std::map<std::string, std::uint32_t>{});
}

}  // namespace proxyd::master
