#include "worker/router.hpp"

#include "common/http/parser.hpp"

namespace proxyd::worker {

bool path_matches_prefix(std::string_view path, std::string_view prefix) {
    if (prefix.empty()) return true;
    if (path.size() < prefix.size() || path.compare(0, prefix.size(), prefix) != 0) return false;
    return path.size() == prefix.size() || path[prefix.size()] == '/';
}

static std::string_view strip_port(std::string_view host) {
    if (!host.empty() && host.front() == '[') {  // IPv6 literal
        auto close = host.find(']');
        return close == std::string_view::npos ? host : host.substr(0, close + 1);
    }
    auto colon = host.rfind(':');
    return colon == std::string_view::npos ? host : host.substr(0, colon);
}

bool host_matches(std::string_view host, std::string_view pattern) {
    host = strip_port(host);
    if (!host.empty() && host.back() == '.') host.remove_suffix(1);  // absolute DNS name
    if (pattern.size() > 2 && pattern[0] == '*' && pattern[1] == '.') {
        std::string_view suffix = pattern.substr(1);  // ".example.com"
        return host.size() > suffix.size() &&
               http::iequals(host.substr(host.size() - suffix.size()), suffix);
    }
    return http::iequals(host, pattern);
}

static bool method_allowed(const config::Route& route, std::string_view method) {
    if (route.methods.empty()) return true;
    for (const auto& allowed : route.methods) {
        if (allowed == method) return true;
    }
    return false;
}

const config::Route* match_route(const std::vector<config::Route>& routes, std::string_view host,
                                 std::string_view method, std::string_view path) {
    for (const auto& route : routes) {
        if (!route.host.empty() && !host_matches(host, route.host)) continue;
        if (!method_allowed(route, method)) continue;
        bool path_ok = route.exact ? path == route.path : path_matches_prefix(path, route.path);
        if (path_ok) return &route;
    }
    return nullptr;
}

std::string_view upstream_path(const config::Route& route, std::string_view path) {
    if (!route.strip_prefix || route.exact || route.path.empty()) return path;
    std::string_view rest = path.substr(route.path.size());
    return rest.empty() ? std::string_view("/") : rest;
}

}  // namespace proxyd::worker
