#include "common/config/validate.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "common/config/text.hpp"

namespace proxyd::config::detail {

namespace {

void add(std::vector<ConfigError>& errors, const Config& config, SourceLoc where,
         std::string message) {
    errors.push_back(ConfigError{config.file, where.line, where.column, std::move(message)});
}

// Same family, address and port: binding both would fail (or, with SO_REUSEPORT, silently split
// the traffic between two sockets of one worker).
bool same_endpoint(const SocketAddress& a, const SocketAddress& b) {
    return a.length == b.length && std::memcmp(&a.storage, &b.storage, a.length) == 0;
}

void check_duplicates(const Config& config, const std::vector<SocketAddress>& listen,
                      std::vector<ConfigError>& errors) {
    for (std::size_t i = 0; i < listen.size(); ++i) {
        const bool seen =
            std::any_of(listen.begin(), listen.begin() + static_cast<long>(i),
                        [&](const SocketAddress& a) { return same_endpoint(a, listen[i]); });
        if (seen)
            add(errors, config, listen[i].loc, "duplicate listen address " + quote(listen[i].text));
    }
}

std::uint16_t port_of(const SocketAddress& a) {
    if (a.storage.ss_family == AF_INET6) {
        return ntohs(reinterpret_cast<const sockaddr_in6*>(&a.storage)->sin6_port);
    }
    return ntohs(reinterpret_cast<const sockaddr_in*>(&a.storage)->sin_port);
}

bool is_wildcard(const SocketAddress& a) {
    if (a.storage.ss_family == AF_INET6) {
        return IN6_IS_ADDR_UNSPECIFIED(
            &reinterpret_cast<const sockaddr_in6*>(&a.storage)->sin6_addr);
    }
    return reinterpret_cast<const sockaddr_in*>(&a.storage)->sin_addr.s_addr == htonl(INADDR_ANY);
}

// Would take connections meant for the other: the same endpoint, or the same port where one of
// them is the family's wildcard address (with SO_REUSEPORT both bind, and the more specific one
// silently gets its address's connections). IPv6 sockets are V6ONLY: families never overlap.
bool overlapping(const SocketAddress& a, const SocketAddress& b) {
    if (same_endpoint(a, b)) return true;
    return a.storage.ss_family == b.storage.ss_family && port_of(a) == port_of(b) &&
           (is_wildcard(a) || is_wildcard(b));
}

void check_listen(const Config& config, std::vector<ConfigError>& errors) {
    check_duplicates(config, config.server.listen, errors);
    check_duplicates(config, config.tls.listen, errors);
    // A port speaks plain HTTP or TLS, not both.
    for (const SocketAddress& tls : config.tls.listen) {
        const auto plain =
            std::find_if(config.server.listen.begin(), config.server.listen.end(),
                         [&](const SocketAddress& a) { return overlapping(a, tls); });
        if (plain == config.server.listen.end()) continue;
        add(errors, config, tls.loc,
            "[tls] listen address " + quote(tls.text) + " clashes with [server] listen address " +
                quote(plain->text) + " (line " + std::to_string(plain->loc.line) + ", column " +
                std::to_string(plain->loc.column) +
                "); one port cannot serve both plain HTTP and TLS");
    }
}

void check_server_ids(const Config& config, const Upstream& upstream,
                      std::vector<ConfigError>& errors) {
    const auto& servers = upstream.servers;
    for (std::size_t i = 0; i < servers.size(); ++i) {
        const auto first =
            std::find_if(servers.begin(), servers.begin() + static_cast<long>(i),
                         [&](const UpstreamServer& s) { return s.id == servers[i].id; });
        if (first == servers.begin() + static_cast<long>(i)) continue;
        add(errors, config, servers[i].id_loc,
            "duplicate server id " + quote(servers[i].id) + " in [upstreams." + upstream.name +
                "] (first at line " + std::to_string(first->id_loc.line) + ", column " +
                std::to_string(first->id_loc.column) + "); give each server a distinct \"id\"");
    }
}

void resolve_route(const Config& config, Route& route, std::vector<ConfigError>& errors) {
    if (route.upstream.empty()) return;  // missing or invalid: already reported
    const auto& ups = config.upstreams;
    const auto it =
        std::lower_bound(ups.begin(), ups.end(), route.upstream,
                         [](const Upstream& u, const std::string& name) { return u.name < name; });
    if (it != ups.end() && it->name == route.upstream) {
        route.upstream_index = static_cast<std::size_t>(it - ups.begin());
        return;
    }
    std::vector<std::string_view> names;
    for (const Upstream& u : ups) names.push_back(u.name);
    add(errors, config, route.upstream_loc,
        "route upstream " + quote(route.upstream) + " is not defined" +
            did_you_mean(route.upstream, names));
}

void resolve_rate_limit(const Config& config, Route& route, std::vector<ConfigError>& errors) {
    if (route.rate_limit.empty()) return;
    const auto& limits = config.rate_limits;
    const auto it =
        std::lower_bound(limits.begin(), limits.end(), route.rate_limit,
                         [](const RateLimit& l, const std::string& name) { return l.name < name; });
    if (it != limits.end() && it->name == route.rate_limit) {
        route.rate_limit_index = static_cast<std::size_t>(it - limits.begin());
        return;
    }
    std::vector<std::string_view> names;
    for (const RateLimit& l : limits) names.push_back(l.name);
    add(errors, config, route.rate_limit_loc,
        "route rate_limit " + quote(route.rate_limit) + " is not defined" +
            did_you_mean(route.rate_limit, names) + " (add a [rate_limits." + route.rate_limit +
            "] table)");
}

// gRPC needs HTTP/2 all the way: its trailers and its streams have no HTTP/1.1 form.
void check_grpc_upstream(const Config& config, const Route& route,
                         std::vector<ConfigError>& errors) {
    if (!route.grpc || route.upstream.empty()) return;
    const auto& ups = config.upstreams;
    if (route.upstream_index >= ups.size() || ups[route.upstream_index].name != route.upstream) {
        return;  // not defined: already reported
    }
    const Upstream& upstream = ups[route.upstream_index];
    if (upstream.protocol != UpstreamProtocol::Http1) return;
    add(errors, config, route.protocol_loc,
        "route protocol \"grpc\" needs an HTTP/2 upstream, but [upstreams." + upstream.name +
            "] speaks HTTP/1.1; set protocol = \"h2c\" (or \"h2\" over TLS) there");
}

// A token can only be asked for, and a claim only read, when [auth.jwt] says how to verify it.
void check_needs_jwt(const Config& config, std::vector<ConfigError>& errors) {
    if (config.jwt.enabled) return;
    for (const Route& route : config.routes) {
        if (route.auth_required) {
            add(errors, config, route.loc,
                "route has auth_required (or roles) but there is no [auth.jwt] table");
        }
    }
    for (const RateLimit& limit : config.rate_limits) {
        if (limit.key == RateLimit::KeyKind::JwtClaim) {
            add(errors, config, limit.loc,
                "[rate_limits." + limit.name +
                    "] is keyed by a JWT claim but there is no "
                    "[auth.jwt] table");
        }
    }
}

}  // namespace

void validate(Config& config, std::vector<ConfigError>& errors) {
    check_listen(config, errors);
    for (const Upstream& upstream : config.upstreams) check_server_ids(config, upstream, errors);
    for (Route& route : config.routes) {
        resolve_route(config, route, errors);
        resolve_rate_limit(config, route, errors);
        check_grpc_upstream(config, route, errors);
    }
    check_needs_jwt(config, errors);
}

}  // namespace proxyd::config::detail
