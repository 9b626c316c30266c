#include "common/config/to_json.hpp"

#include <filesystem>
#include <system_error>

#include "common/config/load.hpp"
#include "common/config/units.hpp"

namespace proxyd::config {

namespace {

using nlohmann::json;

// A file the loader found by resolving it against the config file's directory, made absolute:
// when that directory was given as a relative path ("-c conf/proxyd.toml"), the resolved path is
// relative too, and loading the JSON again (PUT /api/v1/config) would resolve it a second time.
std::string file_path(const std::string& path) {
    if (path.empty() || path.front() == '/') return path;
    std::error_code ec;
    const auto absolute = std::filesystem::absolute(path, ec);
    return ec ? path : absolute.lexically_normal().string();
}

json addresses(const std::vector<SocketAddress>& list) {
    json out = json::array();
    for (const auto& a : list) out.push_back(a.text);
    return out;
}

json server_json(const ServerSection& s) {
    json trusted = json::array();
    for (const auto& cidr : s.trusted_proxies) trusted.push_back(cidr.text);
    json headers = json::object();
    for (const auto& [name, value] : s.response_headers) headers[name] = value;
    const auto& t = s.timeouts;
    const auto& l = s.limits;
    json out = {{"listen", addresses(s.listen)},
                {"workers", s.workers_auto ? json("auto") : json(s.workers)},
                {"control_socket", s.control_socket},
                {"pid_file", s.pid_file},
                {"max_connections", s.max_connections},
                {"shutdown_timeout", format_duration(s.shutdown_timeout)},
                {"real_ip_header", s.real_ip_header},
                {"trusted_proxies", trusted},
                {"proxy_protocol", s.proxy_protocol},
                {"h2c", s.h2c},
                {"timeouts",
                 {{"header", format_duration(t.header)},
                  {"body", format_duration(t.body)},
                  {"keepalive", format_duration(t.keepalive)},
                  {"upstream_connect", format_duration(t.upstream_connect)},
                  {"upstream_response", format_duration(t.upstream_response)},
                  {"upstream_idle", format_duration(t.upstream_idle)},
                  {"tunnel_idle", format_duration(t.tunnel_idle)},
                  {"min_rate_grace", format_duration(t.min_rate_grace)}}},
                {"limits",
                 {{"max_header_size", l.max_header_size},
                  {"max_body_size", l.max_body_size},
                  {"max_uri_size", l.max_uri_size},
                  {"min_request_rate", l.min_request_rate},
                  {"max_concurrent_streams", l.max_concurrent_streams}}},
                {"response_headers", headers}};
    if (!s.user.empty()) out["user"] = s.user;
    if (!s.group.empty()) out["group"] = s.group;
    if (!s.hosts_file.empty()) out["hosts_file"] = s.hosts_file;
    if (!s.state_file.empty()) out["state_file"] = file_path(s.state_file);
    return out;
}

std::string hash_key_text(const HashKey& key) {
    switch (key.kind) {
        case HashKey::Kind::Ip:
            return "ip";
        case HashKey::Kind::Path:
            return "path";
        case HashKey::Kind::Header:
            return "header:" + key.name;
        case HashKey::Kind::Cookie:
            return "cookie:" + key.name;
    }
    return "ip";
}

json upstream_json(const Upstream& u) {
    json servers = json::array();
    for (const auto& s : u.servers) {
        json entry = {{"id", s.id},
                      {"address", s.hostname.empty() ? s.address.text
                                                     : s.hostname + ":" + std::to_string(s.port)},
                      {"weight", s.weight},
                      {"max_connections", s.max_connections},
                      {"backup", s.backup}};
        if (s.drain) entry["drain"] = true;
        if (s.tls) {
            entry["tls"] = true;
            entry["verify"] = s.verify;
            if (!s.sni.empty()) entry["sni"] = s.sni;
            if (!s.ca_file.empty()) entry["ca_file"] = file_path(s.ca_file);
        }
        servers.push_back(std::move(entry));
    }
    json out = {{"protocol", protocol_name(u.protocol)},
                {"balance", balance_name(u.balance)},
                {"keepalive", u.keepalive},
                {"servers", servers},
                {"resolve_interval", format_duration(u.resolve_interval)},
                {"slow_start", format_duration(u.slow_start)},
                {"retry", {{"attempts", u.retry.attempts}}}};
    // The loader refuses hash_key with any other algorithm.
    if (u.balance == Balance::ConsistentHash) out["hash_key"] = hash_key_text(u.hash_key);
    if (!u.sticky_cookie.empty()) out["sticky"] = {{"cookie", u.sticky_cookie}};
    if (u.health_check.enabled) {
        const auto& h = u.health_check;
        out["health_check"] = {{"path", h.path},
                               {"interval", format_duration(h.interval)},
                               {"timeout", format_duration(h.timeout)},
                               {"healthy_threshold", h.healthy_threshold},
                               {"unhealthy_threshold", h.unhealthy_threshold},
                               {"expected_status", h.expected_status},
                               {"method", h.method}};
    }
    return out;
}

json route_json(const Route& r) {
    json out = {{"name", r.label}, {"upstream", r.upstream}, {"strip_prefix", r.strip_prefix}};
    if (r.exact) {
        out["path_exact"] = r.path;
    } else {
        out["path"] = r.path + "/";
    }
    if (!r.host.empty()) out["host"] = r.host;
    if (!r.methods.empty()) out["methods"] = r.methods;
    if (r.has_websocket_balance) out["websocket_balance"] = balance_name(r.websocket_balance);
    if (r.has_sse_balance) out["sse_balance"] = balance_name(r.sse_balance);
    // Read back, roles without auth_required mean auth_required = true: say false when it is.
    if (r.auth_required || !r.roles.empty()) out["auth_required"] = r.auth_required;
    if (!r.roles.empty()) out["roles"] = r.roles;
    if (!r.rate_limit.empty()) out["rate_limit"] = r.rate_limit;
    if (r.grpc) out["protocol"] = "grpc";
    if (r.has_cache) {
        const auto& c = r.cache;
        out["cache"] = {{"ttl", format_duration(c.ttl)},
                        {"stale_while_revalidate", format_duration(c.stale_while_revalidate)},
                        {"stale_if_error", format_duration(c.stale_if_error)},
                        {"authorization", c.authorization}};
    }
    if (!r.compress) out["compress"] = false;
    if (r.cors.enabled) {
        const auto& c = r.cors;
        out["cors"] = {
            {"allowed_origins", c.allowed_origins},     {"allowed_methods", c.allowed_methods},
            {"allowed_headers", c.allowed_headers},     {"expose_headers", c.expose_headers},
            {"allow_credentials", c.allow_credentials}, {"max_age", format_duration(c.max_age)}};
    }
    return out;
}

json tls_json(const TlsSection& t) {
    json certificates = json::array();
    for (const auto& c : t.certificates) {
        certificates.push_back({{"cert", file_path(c.cert_file)}, {"key", file_path(c.key_file)}});
    }
    json out = {{"listen", addresses(t.listen)},
                {"alpn", t.alpn},
                {"session_tickets", t.session_tickets},
                {"session_ticket_rotation", format_duration(t.session_ticket_rotation)},
                {"certificates", certificates},
                {"min_version", t.min_version >= 13 ? "1.3" : "1.2"},
                {"watch", t.watch}};
    if (!t.hsts.empty()) out["hsts"] = t.hsts;
    if (!t.ciphers.empty()) out["ciphers"] = t.ciphers;
    return out;
}

json jwt_json(const JwtAuth& j) {
    json keys = json::array();
    for (const auto& k : j.keys) {
        json entry = {{k.kind == JwtKey::Kind::Secret ? "secret_file" : "public_key_file",
                       file_path(k.file)}};
        if (!k.kid.empty()) entry["kid"] = k.kid;
        keys.push_back(std::move(entry));
    }
    json claims = json::object();
    for (const auto& [claim, header] : j.forward_claims) claims[claim] = header;
    json out = {{"algorithms", j.algorithms},
                {"keys", keys},
                {"leeway", format_duration(j.leeway)},
                {"roles_claim", j.roles_claim},
                {"forward_claims", claims},
                {"cache_entries", j.cache_entries}};
    if (!j.issuer.empty()) out["issuer"] = j.issuer;
    if (!j.audience.empty()) out["audience"] = j.audience;
    return out;
}

json rate_limit_json(const RateLimit& r) {
    static constexpr const char* kKeys[] = {"ip", "header:", "jwt:"};
    json out = {{"key", kKeys[static_cast<int>(r.key)] + r.key_name},
                {"requests_per_minute", r.requests_per_minute},
                {"burst", r.burst},
                {"store", r.store == RateLimit::Store::Redis ? "redis" : "local"}};
    if (r.store == RateLimit::Store::Redis) {
        out["redis"] = r.redis.text;
        out["on_redis_error"] = r.redis_error_allow ? "allow" : "deny";
        out["redis_timeout"] = format_duration(r.redis_timeout);
        // The file, never the password: so the config can be PUT back as it was shown.
        if (!r.redis_password_file.empty())
            out["redis_password_file"] = file_path(r.redis_password_file);
    }
    return out;
}

json compression_json(const CompressionSettings& c) {
    json algorithms = json::array();
    for (const auto a : c.algorithms) {
        algorithms.push_back(a == CompressionAlgorithm::Brotli ? "br" : "gzip");
    }
    return {{"types", c.types}, {"min_size", c.min_size}, {"algorithms", algorithms}};
}

}  // namespace

json to_json(const Config& config) {
    json upstreams = json::object();
    for (const auto& u : config.upstreams) upstreams[u.name] = upstream_json(u);
    json routes = json::array();
    for (const auto& r : config.routes) routes.push_back(route_json(r));
    json out = {{"server", server_json(config.server)},
                {"upstreams", upstreams},
                {"routes", routes},
                {"log",
                 {{"level", std::vector<std::string>{"trace", "debug", "info", "warn",
                                                     "error"}[static_cast<int>(config.log.level)]},
                  {"format", config.log.format == LogFormat::Json ? "json" : "text"},
                  {"error_log", config.log.error_log},
                  {"access_log", config.log.access_log}}}};
    if (config.tls.enabled) out["tls"] = tls_json(config.tls);
    if (config.jwt.enabled) out["auth"] = {{"jwt", jwt_json(config.jwt)}};
    if (!config.rate_limits.empty()) {
        json limits = json::object();
        for (const auto& r : config.rate_limits) limits[r.name] = rate_limit_json(r);
        out["rate_limits"] = limits;
    }
    // Shown even without [cache] in the file: these are the sizes a cached route gets.
    out["cache"] = {{"max_size", config.cache.max_size},
                    {"max_object_size", config.cache.max_object_size}};
    if (config.compression.enabled) out["compression"] = compression_json(config.compression);
    if (config.metrics.enabled) {
        out["metrics"] = {{"listen", config.metrics.listen.text}, {"path", config.metrics.path}};
    }
    if (config.admin.enabled) {
        out["admin"] = {{"listen", config.admin.listen.text},
                        {"token_file", file_path(config.admin.token_file)}};
    }
    return out;
}

}  // namespace proxyd::config
