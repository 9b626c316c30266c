// Gives every (upstream, server id) its slot in the shared upstream state, and keeps it: a server
// that stays across a reload, a DNS refresh or an upgrade keeps its counts and health.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "common/config/types.hpp"

namespace proxyd::master {

class ServerRegistry {
  public:
    // Sets state_index on every server of `config`; false when the table is full.
    bool assign(config::Config& config, std::string& error);
    // Handed to a new master on upgrade, so it keeps the same indices.
    nlohmann::json to_json() const;
    void from_json(const nlohmann::json& saved);
    // Indices in use are [0, size()).
    std::uint32_t size() const { return next_; }

  private:
    std::map<std::string, std::uint32_t> indices_;  // "upstream\nid" -> index
    std::uint32_t next_ = 0;
};

}  // namespace proxyd::master
