// [server] and its sub-tables.
#include <grp.h>
#include <pwd.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>

#include "common/config/reader.hpp"
#include "common/config/secret_file.hpp"
#include "common/config/text.hpp"
#include "common/config/units.hpp"

namespace proxyd::config::detail {

namespace {

constexpr std::string_view kServerKeys[] = {
    "listen",           "workers",        "control_socket",  "pid_file", "max_connections",
    "shutdown_timeout", "real_ip_header", "trusted_proxies", "timeouts", "limits",
    "response_headers", "hosts_file",     "proxy_protocol",  "user",     "group",
    "state_file",       "h2c"};
constexpr std::string_view kTimeoutKeys[] = {
    "header",        "body",        "keepalive",     "upstream_connect", "upstream_response",
    "upstream_idle", "tunnel_idle", "min_rate_grace"};
constexpr std::string_view kLimitKeys[] = {"max_header_size", "max_body_size", "max_uri_size",
                                           "min_request_rate", "max_concurrent_streams"};

// The proxy writes these itself (framing, connection handling); a fixed value would corrupt
// responses.
constexpr std::string_view kManagedHeaders[] = {
    "connection", "content-length", "transfer-encoding", "keep-alive",  "upgrade",
    "te",         "trailer",        "proxy-connection",  "x-request-id"};

// The master binds a socket per worker slot and keeps room for a draining generation.
constexpr int kMaxWorkers = 128;
// Room for the ".tmp.PID" suffix of the name the socket is bound under before its rename.
constexpr std::size_t kControlSocketSuffix = 16;

bool in(std::span<const std::string_view> set, std::string_view name) {
    return std::find(set.begin(), set.end(), name) != set.end();
}

int online_cpus() {
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : static_cast<int>(std::min<long>(n, kMaxWorkers));
}

void parse_workers(Reader& r, const toml::table& server, ServerSection& out) {
    const toml::node* node = server.get("workers");
    if (node == nullptr) return;
    if (const auto* s = node->as_string()) {
        if (s->get() == "auto") {
            out.workers = online_cpus();
            out.workers_auto = true;
        } else {
            r.error(*node,
                    "\"workers\" must be an integer >= 1 or \"auto\", got " + quote(s->get()));
        }
        return;
    }
    if (!node->is_integer()) {
        r.wrong_type(*node, "an integer or \"auto\"", "workers");
        return;
    }
    if (auto v = r.integer(*node, "workers", 1, kMaxWorkers)) out.workers = static_cast<int>(*v);
}

void parse_control_socket(Reader& r, const toml::table& server, ServerSection& out) {
    const toml::node* node = server.get("control_socket");
    if (node == nullptr) return;
    auto path = r.nonempty_string(*node, "control_socket");
    if (!path) return;
    if (path->size() + kControlSocketSuffix >= sizeof(sockaddr_un{}.sun_path)) {
        r.error(*node,
                "\"control_socket\" path is too long for a Unix socket (at most " +
                    std::to_string(sizeof(sockaddr_un{}.sun_path) - 1 - kControlSocketSuffix) +
                    " bytes)");
        return;
    }
    out.control_socket = std::move(*path);
}

void parse_real_ip(Reader& r, const toml::table& server, ServerSection& out) {
    if (const toml::node* node = server.get("real_ip_header")) {
        auto name = r.string(*node, "real_ip_header");
        if (name && !name->empty() && !is_token(*name)) {
            r.error(*node, "\"real_ip_header\" must be a valid header name, got " + quote(*name));
        } else if (name) {
            out.real_ip_header = std::move(*name);
        }
    }
    const toml::node* node = server.get("trusted_proxies");
    if (node == nullptr) return;
    const auto items = r.strings(*node, "trusted_proxies");
    if (!items) return;
    for (const StringItem& item : *items) {
        Cidr cidr;
        std::string message;
        if (parse_cidr(item.value, cidr, message)) {
            out.trusted_proxies.push_back(std::move(cidr));
        } else {
            r.error(*item.node, "\"trusted_proxies\": " + message);
        }
    }
}

void parse_timeouts(Reader& r, const toml::node& node, Timeouts& out) {
    const toml::table* t = r.table(node, "timeouts");
    if (t == nullptr) return;
    r.check_keys(*t, "in [server.timeouts]", kTimeoutKeys);
    r.read_duration(*t, "header", out.header, false);
    r.read_duration(*t, "body", out.body, false);
    r.read_duration(*t, "keepalive", out.keepalive, false);
    r.read_duration(*t, "upstream_connect", out.upstream_connect, false);
    r.read_duration(*t, "upstream_response", out.upstream_response, false);
    r.read_duration(*t, "upstream_idle", out.upstream_idle, false);
    r.read_duration(*t, "tunnel_idle", out.tunnel_idle, false);
    r.read_duration(*t, "min_rate_grace", out.min_rate_grace, false);
}

void parse_limits(Reader& r, const toml::node& node, Limits& out) {
    const toml::table* t = r.table(node, "limits");
    if (t == nullptr) return;
    r.check_keys(*t, "in [server.limits]", kLimitKeys);
    r.read_size(*t, "max_header_size", out.max_header_size);
    r.read_size(*t, "max_body_size", out.max_body_size);
    r.read_size(*t, "max_uri_size", out.max_uri_size);
    // Bytes per second; 0 turns the slow-client rule off.
    if (const toml::node* n = t->get("min_request_rate")) {
        if (const auto rate = r.size(*n, "min_request_rate")) out.min_request_rate = *rate;
    }
    r.read(*t, "max_concurrent_streams", out.max_concurrent_streams, 1, 10'000);
}

bool valid_header_value(std::string_view value) {
    return std::none_of(value.begin(), value.end(), [](char ch) {
        const auto c = static_cast<unsigned char>(ch);
        return (c < 0x20 && c != '\t') || c == 0x7f;
    });
}

void parse_response_header(Reader& r, const toml::key& key, const toml::node& value,
                           ServerSection& out) {
    const std::string_view name = key.str();
    if (!value.is_string() && (in(kServerKeys, name))) {
        // TOML puts every key after a table header into that table: an easy slip here.
        r.error(loc_of(key), quote(name) +
                                 " is a [server] option but is written inside "
                                 "[server.response_headers]; move it above that table header");
        return;
    }
    if (!is_token(name)) {
        r.error(loc_of(key),
                "invalid header name " + quote(name) + " in [server.response_headers]");
        return;
    }
    if (in(kManagedHeaders, lower(name))) {
        r.error(loc_of(key), "header " + quote(name) +
                                 " is managed by the proxy and cannot be set in "
                                 "[server.response_headers]");
        return;
    }
    auto text = r.string(value, name);
    if (!text) return;
    if (!valid_header_value(*text)) {
        r.error(value, "value of header " + quote(name) + " contains a control character");
        return;
    }
    out.response_headers.emplace_back(std::string(name), std::move(*text));
}

void parse_response_headers(Reader& r, const toml::node& node, ServerSection& out) {
    const toml::table* t = r.table(node, "response_headers");
    if (t == nullptr) return;
    for (auto&& [key, value] : *t) parse_response_header(r, key, value, out);
}

}  // namespace

void parse_listen(Reader& r, const toml::table& table, std::string_view where,
                  std::vector<SocketAddress>& out) {
    if (!r.require(table, "listen", where)) return;
    const toml::node& node = *table.get("listen");
    const auto items = r.strings(node, "listen");
    if (!items) return;
    if (node.as_array()->empty()) {
        r.error(node, "\"listen\" needs at least one address, e.g. [\"0.0.0.0:8080\"]");
        return;
    }
    for (const StringItem& item : *items) {
        SocketAddress address;
        address.loc = loc_of(*item.node);
        std::string message;
        if (parse_socket_address(item.value, address, message)) {
            out.push_back(std::move(address));
        } else {
            r.error(*item.node, "\"listen\": " + message);
        }
    }
}

// The account workers run as, looked up now so a typo fails `proxyd -t` rather than the start.
void parse_user(Reader& r, const toml::table& server, ServerSection& out) {
    const toml::node* user = server.get("user");
    const toml::node* group = server.get("group");
    if (user == nullptr) {
        if (group != nullptr) r.error(*group, "\"group\" needs \"user\"");
        return;
    }
    auto name = r.nonempty_string(*user, "user");
    if (!name) return;
    const passwd* account = ::getpwnam(name->c_str());
    if (account == nullptr) {
        r.error(*user, "unknown user " + quote(*name));
        return;
    }
    out.user = *name;
    out.uid = account->pw_uid;
    out.gid = account->pw_gid;
    if (group == nullptr) return;
    auto group_name = r.nonempty_string(*group, "group");
    if (!group_name) return;
    const ::group* entry = ::getgrnam(group_name->c_str());
    if (entry == nullptr) {
        r.error(*group, "unknown group " + quote(*group_name));
        return;
    }
    out.group = *group_name;
    out.gid = entry->gr_gid;
}

void parse_server(Reader& r, const toml::node& node, ServerSection& out) {
    const toml::table* server = r.table(node, "server");
    if (server == nullptr) return;
    r.check_keys(*server, "in [server]", kServerKeys);
    parse_listen(r, *server, "in [server]", out.listen);
    parse_workers(r, *server, out);
    parse_control_socket(r, *server, out);
    r.read(*server, "pid_file", out.pid_file);
    if (const toml::node* n = server->get("state_file")) {
        if (auto path = r.nonempty_string(*n, "state_file")) {
            out.state_file = detail::resolve_config_path(r.file(), *path);
        }
    }
    parse_user(r, *server, out);
    if (const toml::node* n = server->get("hosts_file")) {
        if (auto path = r.nonempty_string(*n, "hosts_file")) out.hosts_file = std::move(*path);
    }
    r.read(*server, "max_connections", out.max_connections, 1);
    r.read_duration(*server, "shutdown_timeout", out.shutdown_timeout, true);
    parse_real_ip(r, *server, out);
    r.read(*server, "proxy_protocol", out.proxy_protocol);
    r.read(*server, "h2c", out.h2c);
    if (const toml::node* n = server->get("timeouts")) parse_timeouts(r, *n, out.timeouts);
    if (const toml::node* n = server->get("limits")) parse_limits(r, *n, out.limits);
    if (const toml::node* n = server->get("response_headers")) {
        parse_response_headers(r, *n, out);
    }
}

}  // namespace proxyd::config::detail
