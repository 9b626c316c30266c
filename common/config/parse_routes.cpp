// [[routes]]: what a request must look like (path, host, method) and where it goes.
#include <arpa/inet.h>

#include <algorithm>
#include <cctype>

#include "common/config/reader.hpp"
#include "common/config/text.hpp"

namespace proxyd::config::detail {

namespace {

constexpr std::string_view kRouteKeys[] = {
    "name",        "path",          "path_exact",   "host",
    "methods",     "upstream",      "strip_prefix", "websocket_balance",
    "sse_balance", "auth_required", "roles",        "rate_limit",
    "cors",        "protocol",      "cache",        "compress"};
// A route's protocol: plain HTTP (the default, as if the key were left out) or gRPC.
constexpr std::string_view kRouteProtocols[] = {"http", "grpc"};
constexpr std::string_view kCorsKeys[] = {"allowed_origins", "allowed_methods",   "allowed_headers",
                                          "expose_headers",  "allow_credentials", "max_age"};
constexpr std::string_view kWhere = "in [[routes]]";

// Why `path` cannot be matched against request targets, or "" when it can.
std::string path_problem(std::string_view path) {
    if (path.empty() || path[0] != '/') return "must start with \"/\"";
    if (path.find_first_of("?#") != std::string_view::npos) {
        return "must not contain a query or fragment";
    }
    const bool control = std::any_of(path.begin(), path.end(), [](char ch) {
        const auto c = static_cast<unsigned char>(ch);
        return c <= 0x20 || c == 0x7f;
    });
    return control ? "must not contain spaces or control characters" : "";
}

// "/api", "/api/" and "/api/*" all mean the segment prefix "/api"; "/" and "/*" mean everything.
std::string normalise_prefix(std::string_view path) {
    std::string out(path);
    if (out.ends_with("/*")) out.pop_back();
    while (!out.empty() && out.back() == '/') out.pop_back();
    return out;
}

void parse_prefix(Reader& r, const toml::node& node, Route& out) {
    const auto path = r.string(node, "path");
    if (!path) return;
    if (const std::string problem = path_problem(*path); !problem.empty()) {
        r.error(node, "\"path\" " + problem + ", got " + quote(*path));
        return;
    }
    std::string prefix = normalise_prefix(*path);
    if (prefix.find('*') != std::string::npos) {
        r.error(node, "\"*\" is only allowed as a final \"/*\" in \"path\", got " + quote(*path));
        return;
    }
    out.path = std::move(prefix);
}

void parse_exact(Reader& r, const toml::node& node, Route& out) {
    const auto path = r.string(node, "path_exact");
    if (!path) return;
    if (const std::string problem = path_problem(*path); !problem.empty()) {
        r.error(node, "\"path_exact\" " + problem + ", got " + quote(*path));
        return;
    }
    out.path = *path;
    out.exact = true;
}

void parse_paths(Reader& r, const toml::table& route, Route& out) {
    const toml::node* prefix = route.get("path");
    const toml::node* exact = route.get("path_exact");
    if (prefix != nullptr && exact != nullptr) {
        r.error(*exact, "a route has \"path\" or \"path_exact\", not both");
        return;
    }
    if (prefix != nullptr) parse_prefix(r, *prefix, out);
    if (exact != nullptr) parse_exact(r, *exact, out);
}

bool valid_host_name(std::string_view name) {
    return !name.empty() && std::all_of(name.begin(), name.end(), [](char ch) {
        const auto c = static_cast<unsigned char>(ch);
        return std::isalnum(c) || c == '-' || c == '.' || c == '_';
    });
}

// Why `host` (already lower-case) cannot match a Host header, or "" when it can.
std::string host_problem(const std::string& host) {
    if (host.front() == '[' && host.back() == ']') {
        in6_addr addr{};
        const std::string literal = host.substr(1, host.size() - 2);
        return inet_pton(AF_INET6, literal.c_str(), &addr) == 1 ? ""
                                                                : "is not a valid IPv6 literal";
    }
    if (host.find(':') != std::string::npos) {
        return "must not include a port (the port of Host is ignored)";
    }
    if (host.find('*') != std::string::npos) {
        const bool wildcard = host.starts_with("*.") && valid_host_name(host.substr(2));
        return wildcard ? "" : "may use \"*\" only as a first label, as in \"*.example.com\"";
    }
    return valid_host_name(host) ? "" : "contains a character not allowed in a host name";
}

void parse_host(Reader& r, const toml::node& node, Route& out) {
    const auto text = r.nonempty_string(node, "host");
    if (!text) return;
    std::string host = lower(*text);
    if (const std::string problem = host_problem(host); !problem.empty()) {
        r.error(node, "route host " + quote(*text) + " " + problem);
        return;
    }
    out.host = std::move(host);
}

void parse_methods(Reader& r, const toml::node& node, Route& out) {
    const auto items = r.strings(node, "methods");
    if (!items) return;
    if (node.as_array()->empty()) {
        r.error(node, "\"methods\" must not be empty; leave it out to match every method");
        return;
    }
    for (const StringItem& item : *items) {
        if (is_token(item.value)) {
            out.methods.push_back(upper(item.value));
        } else {
            r.error(*item.node, "invalid method " + quote(item.value));
        }
    }
}

void parse_upstream_ref(Reader& r, const toml::table& route, Route& out) {
    if (!r.require(route, "upstream", kWhere)) return;
    const toml::node& node = *route.get("upstream");
    out.upstream_loc = loc_of(node);
    if (auto name = r.nonempty_string(node, "upstream")) out.upstream = std::move(*name);
}

// "*", "https://example.com", "http://localhost:8080" or "https://*.example.com": what a
// browser's Origin header can equal (scheme://host[:port], lower-case, no path).
std::string origin_problem(const std::string& origin) {
    if (origin == "*") return "";
    const auto scheme_end = origin.find("://");
    if (scheme_end == std::string::npos || scheme_end == 0) {
        return "must be \"*\" or scheme://host[:port], e.g. \"https://example.com\"";
    }
    std::string host = origin.substr(scheme_end + 3);
    if (host.find('/') != std::string::npos) return "must not have a path";
    if (const auto colon = host.rfind(':'); colon != std::string::npos && host.back() != ']') {
        const std::string port = host.substr(colon + 1);
        if (port.empty() || !std::all_of(port.begin(), port.end(), ::isdigit)) {
            return "has an invalid port";
        }
        host.resize(colon);
    }
    if (host.starts_with("*.")) host.erase(0, 2);
    return valid_host_name(host) || (host.front() == '[' && host.back() == ']')
               ? ""
               : "has an invalid host (\"*\" only as a first label: \"https://*.example.com\")";
}

void parse_token_list(Reader& r, const toml::table& t, std::string_view key, bool upper_case,
                      std::vector<std::string>& out) {
    const toml::node* node = t.get(key);
    if (node == nullptr) return;
    const auto items = r.strings(*node, key);
    if (!items) return;
    out.clear();
    for (const StringItem& item : *items) {
        if (is_token(item.value)) {
            out.push_back(upper_case ? upper(item.value) : item.value);
        } else {
            std::string message = quote(key);
            message.append(": ").append(quote(item.value)).append(" is not a valid name");
            r.error(*item.node, std::move(message));
        }
    }
}

void parse_cors(Reader& r, const toml::node& node, Cors& out) {
    const toml::table* t = r.table(node, "cors");
    if (t == nullptr) return;
    out.enabled = true;
    r.check_keys(*t, "in a route's \"cors\"", kCorsKeys);
    if (r.require(*t, "allowed_origins", "in a route's \"cors\"")) {
        const toml::node& origins = *t->get("allowed_origins");
        if (const auto items = r.strings(origins, "allowed_origins")) {
            if (items->empty()) r.error(origins, "\"allowed_origins\" must not be empty");
            for (const StringItem& item : *items) {
                std::string origin = lower(item.value);
                if (const std::string problem = origin_problem(origin); !problem.empty()) {
                    r.error(*item.node, "CORS origin " + quote(item.value) + " " + problem);
                } else {
                    out.allowed_origins.push_back(std::move(origin));
                }
            }
        }
    }
    parse_token_list(r, *t, "allowed_methods", true, out.allowed_methods);
    parse_token_list(r, *t, "allowed_headers", false, out.allowed_headers);
    parse_token_list(r, *t, "expose_headers", false, out.expose_headers);
    r.read(*t, "allow_credentials", out.allow_credentials);
    r.read_duration(*t, "max_age", out.max_age, true);
}

void parse_access(Reader& r, const toml::table& route, Route& out) {
    r.read(route, "auth_required", out.auth_required);
    if (const toml::node* n = route.get("roles")) {
        if (const auto items = r.strings(*n, "roles")) {
            if (items->empty()) r.error(*n, "\"roles\" must not be empty; leave it out instead");
            for (const StringItem& item : *items) out.roles.push_back(item.value);
            if (!route.get("auth_required")) out.auth_required = true;
        }
    }
    if (const toml::node* n = route.get("rate_limit")) {
        out.rate_limit_loc = loc_of(*n);
        if (auto name = r.nonempty_string(*n, "rate_limit")) out.rate_limit = std::move(*name);
    }
    if (const toml::node* n = route.get("cors")) parse_cors(r, *n, out.cors);
}

void parse_route(Reader& r, const toml::node& node, Route& out) {
    const toml::table* route = node.as_table();
    if (route == nullptr) {
        r.wrong_type(node, "a table", "routes");
        return;
    }
    out.loc = loc_of(node);
    r.check_keys(*route, kWhere, kRouteKeys);
    parse_paths(r, *route, out);
    if (const toml::node* host = route->get("host")) parse_host(r, *host, out);
    if (const toml::node* methods = route->get("methods")) parse_methods(r, *methods, out);
    parse_upstream_ref(r, *route, out);
    r.read(*route, "strip_prefix", out.strip_prefix);
    if (const toml::node* n = route->get("websocket_balance")) {
        if (const auto balance = parse_balance(r, *n, "websocket_balance")) {
            out.has_websocket_balance = true;
            out.websocket_balance = *balance;
        }
    }
    if (const toml::node* n = route->get("sse_balance")) {
        if (const auto balance = parse_balance(r, *n, "sse_balance")) {
            out.has_sse_balance = true;
            out.sse_balance = *balance;
        }
    }
    parse_access(r, *route, out);
    if (const toml::node* n = route->get("protocol")) {
        out.protocol_loc = loc_of(*n);
        if (const auto protocol = r.choice(*n, "protocol", kRouteProtocols)) {
            out.grpc = *protocol == "grpc";
        }
    }
    if (const toml::node* n = route->get("cache")) {
        out.has_cache = parse_route_cache(r, *n, out.cache);
    }
    r.read(*route, "compress", out.compress);
    if (const toml::node* n = route->get("name")) {
        if (auto name = r.nonempty_string(*n, "name")) out.label = std::move(*name);
    }
    if (out.label.empty()) {
        out.label = out.host + (out.exact ? "=" + out.path : out.path + "/");
    }
}

}  // namespace

void parse_routes(Reader& r, const toml::node& node, std::vector<Route>& out) {
    const toml::array* routes = node.as_array();
    if (routes == nullptr) {
        const bool single = node.is_table();
        r.wrong_type(node, "an array of tables", "routes");
        if (single) r.errors().back().message += " (write [[routes]], not [routes])";
        return;
    }
    for (const toml::node& element : *routes) {
        Route route;
        parse_route(r, element, route);
        out.push_back(std::move(route));
    }
}

}  // namespace proxyd::config::detail
