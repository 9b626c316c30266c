// The servers of one upstream as the master sends them to its workers after a runtime change
// (admin API): complete (the CA bundle's text included, since a worker reads no files once it
// runs) and with the shared-state index the master assigned.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/config/types.hpp"

namespace proxyd::config {

struct ServerList {
    std::size_t upstream = 0;  // index in Config::upstreams (the same in master and workers)
    std::vector<UpstreamServer> servers;
};

std::string encode_server_list(const ServerList& list);
std::optional<ServerList> decode_server_list(std::string_view text, std::string& error);

}  // namespace proxyd::config
