// Route matching: first route in file order whose host, method and path all match.
#pragma once

#include <string_view>
#include <vector>

#include "common/config/types.hpp"

namespace proxyd::worker {

// True if `path` is `prefix` or starts with `prefix` followed by '/'. An empty prefix matches all.
bool path_matches_prefix(std::string_view path, std::string_view prefix);
// `pattern` is lower-case: exact name or "*.example.com" (one or more labels before the suffix).
// The port in `host` is ignored; the comparison is case-insensitive.
bool host_matches(std::string_view host, std::string_view pattern);

// nullptr when nothing matches (404).
const config::Route* match_route(const std::vector<config::Route>& routes, std::string_view host,
                                 std::string_view method, std::string_view path);

// The path sent upstream: with strip_prefix the route's prefix is removed (always leaving a
// leading '/'); `query` (without '?') is appended back by the caller.
std::string_view upstream_path(const config::Route& route, std::string_view path);

}  // namespace proxyd::worker
