// The client's address as the upstream should see it. Behind trusted proxies (server.
// trusted_proxies) the address comes from server.real_ip_header, read right to left and skipping
// trusted hops, so a client cannot forge it by sending the header itself.
#pragma once

#include <string_view>
#include <vector>

#include "common/config/types.hpp"

namespace proxyd::worker {

bool address_in_cidrs(std::string_view ip, const std::vector<config::Cidr>& cidrs);

// `peer_ip` is the TCP peer. `header_values` are the values of every real_ip_header line, in
// order. Returns a view into peer_ip or header_values.
std::string_view select_real_ip(std::string_view peer_ip,
                                const std::vector<std::string_view>& header_values,
                                const std::vector<config::Cidr>& trusted);

}  // namespace proxyd::worker
