// [upstreams.NAME] tables, their server lists and their sub-tables (health_check, retry).
#include <arpa/inet.h>

#include <algorithm>
#include <cctype>

#include "common/config/load.hpp"
#include "common/config/reader.hpp"
#include "common/config/secret_file.hpp"
#include "common/config/text.hpp"
#include "common/config/units.hpp"
#include "common/tls/certificate.hpp"

namespace proxyd::config::detail {

namespace {

constexpr std::string_view kUpstreamKeys[] = {
    "balance",    "hash_key", "keepalive",    "servers", "resolve_interval",
    "slow_start", "sticky",   "health_check", "retry",   "protocol"};
// In the order of enum class UpstreamProtocol.
constexpr std::string_view kProtocols[] = {"http1", "h2c", "h2"};
constexpr std::string_view kServerKeys[] = {"address", "weight", "id",  "max_connections",
                                            "backup",  "drain",  "tls", "sni",
                                            "verify",  "ca_file"};
// Keys of a server entry that only mean something when it is reached over TLS.
constexpr std::string_view kServerTlsKeys[] = {"sni", "verify", "ca_file"};
constexpr std::string_view kStickyKeys[] = {"cookie"};
constexpr std::string_view kHealthKeys[] = {
    "path",  "interval", "timeout", "healthy_threshold", "unhealthy_threshold", "expected_status",
    "method"};
constexpr std::string_view kRetryKeys[] = {"attempts"};
// In the order of enum class Balance.
constexpr std::string_view kBalances[] = {
    "round_robin", "weighted_round_robin", "least_conn", "weighted_least_conn",
    "ip_hash",     "consistent_hash",      "least_time", "adaptive"};
constexpr std::string_view kHashKeyForms[] = {"ip", "path", "header:NAME", "cookie:NAME"};
constexpr std::string_view kHashKeyNames[] = {"ip", "path"};
constexpr std::string_view kHashKeyPrefixes[] = {"header", "cookie"};
constexpr int kMaxWeight = 1'000'000;
constexpr int kMaxThreshold = 100;
constexpr int kMaxRetryAttempts = 10;
constexpr std::size_t kMaxHostName = 253;
constexpr std::size_t kMaxLabel = 63;

// ---- hash_key ----

std::optional<HashKey> parse_hash_key(Reader& r, const toml::node& node) {
    const auto text = r.string(node, "hash_key");
    if (!text) return std::nullopt;
    if (*text == "ip") return HashKey{HashKey::Kind::Ip, {}};
    if (*text == "path") return HashKey{HashKey::Kind::Path, {}};
    const auto colon = text->find(':');
    const std::string_view prefix = std::string_view(*text).substr(0, colon);
    const std::string_view name =
        colon == std::string::npos ? std::string_view() : std::string_view(*text).substr(colon + 1);
    if (colon != std::string::npos && (prefix == "header" || prefix == "cookie")) {
        const bool header = prefix == "header";
        if (!is_token(name)) {
            r.error(node, "\"hash_key\": invalid " + std::string(header ? "header" : "cookie") +
                              " name " + quote(name) + " in " + quote(*text));
            return std::nullopt;
        }
        // Header names are compared case-insensitively: keep one spelling.
        if (header) return HashKey{HashKey::Kind::Header, lower(name)};
        return HashKey{HashKey::Kind::Cookie, std::string(name)};
    }
    std::string hint;
    if (colon != std::string::npos) {
        const std::string match = closest_match(prefix, kHashKeyPrefixes);
        if (!match.empty()) hint = "; did you mean " + quote(match + ":" + std::string(name)) + "?";
    } else {
        hint = did_you_mean(*text, kHashKeyNames);
    }
    std::string forms;
    for (std::string_view f : kHashKeyForms) forms += (forms.empty() ? "" : ", ") + std::string(f);
    r.error(node, "unknown hash_key " + quote(*text) + "; expected one of: " + forms + hint);
    return std::nullopt;
}

// ---- server addresses ----

// "api.internal:80": a host part with a letter, not bracketed. The host ends at the first colon
// when what precedes it cannot begin an IPv6 address (a "." or a letter beyond a-f), so that
// "api.internal:80:90" gets a port message rather than an IPv6 one. Anything else is left to the
// numeric parser and its messages.
bool looks_like_dns_address(std::string_view text, std::string_view& host, std::string_view& port) {
    if (text.empty() || text[0] == '[') return false;
    const auto colon = text.find(':');
    if (colon == std::string_view::npos) return false;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    const bool has_letter = std::any_of(host.begin(), host.end(), [](char c) {
        return std::isalpha(static_cast<unsigned char>(c)) != 0;
    });
    const bool not_ipv6 = std::any_of(host.begin(), host.end(), [](char c) {
        return c == '.' || (std::isalpha(static_cast<unsigned char>(c)) != 0 &&
                            std::isxdigit(static_cast<unsigned char>(c)) == 0);
    });
    return has_letter && (not_ipv6 || port.find(':') == std::string_view::npos);
}

// The port of a DNS address, or nullopt with `error` worded like the numeric parser's.
std::optional<std::uint16_t> parse_port(std::string_view port, std::string_view whole,
                                        std::string& error) {
    const bool digits = !port.empty() && std::all_of(port.begin(), port.end(), [](char c) {
        return std::isdigit(static_cast<unsigned char>(c)) != 0;
    });
    if (!digits) {
        error = "invalid port " + quote(port) + " in " + quote(whole);
        return std::nullopt;
    }
    std::uint32_t value = 0;
    for (char c : port) {
        value = value * 10 + static_cast<std::uint32_t>(c - '0');
        if (value > 65535) break;
    }
    if (value < 1 || value > 65535) {
        error = "port " + std::string(port) + " out of range in " + quote(whole) + " (1 to 65535)";
        return std::nullopt;
    }
    return static_cast<std::uint16_t>(value);
}

// Why `host` is not an RFC 1123 host name, or "" when it is.
std::string host_name_problem(std::string_view host) {
    if (host.size() > kMaxHostName) return "longer than 253 characters";
    for (char ch : host) {
        const auto c = static_cast<unsigned char>(ch);
        if (c >= 0x80)
            return "non-ASCII characters are not allowed (write the name as \"xn--\" punycode)";
        if (!std::isalnum(c) && c != '-' && c != '.') {
            return quote(std::string_view(&ch, 1)) +
                   " is not allowed (use letters, digits, \"-\" and \".\")";
        }
    }
    std::string_view last;
    std::size_t start = 0;
    while (start <= host.size()) {
        const auto dot = std::min(host.find('.', start), host.size());
        const std::string_view label = host.substr(start, dot - start);
        if (label.empty()) return "empty label";
        if (label.size() > kMaxLabel) return "a label is longer than 63 characters";
        if (label.front() == '-' || label.back() == '-') return "a label starts or ends with \"-\"";
        last = label;
        start = dot + 1;
    }
    const bool numeric_tld = std::all_of(last.begin(), last.end(), [](char c) {
        return std::isdigit(static_cast<unsigned char>(c)) != 0;
    });
    return numeric_tld ? "the last label is all digits" : "";
}

// A numeric address fills `out.address`; a DNS name fills `out.hostname` and `out.port` and
// leaves `out.address` zeroed for the master to resolve.
bool parse_address(Reader& r, const toml::node& node, UpstreamServer& out) {
    const auto text = r.string(node, "address");
    if (!text) return false;
    out.address.loc = loc_of(node);
    if (text->starts_with(':') || text->starts_with("*:")) {
        // Fine for `listen` (every interface), meaningless as a place to connect to.
        r.error(node, "\"address\": a server address needs a host, got " + quote(*text));
        return false;
    }
    std::string message;
    if (parse_socket_address(*text, out.address, message)) return true;
    out.address = SocketAddress{};
    std::string_view host, port;
    if (!looks_like_dns_address(*text, host, port)) {
        r.error(node, "\"address\": " + message);
        return false;
    }
    const auto port_number = parse_port(port, *text, message);
    if (!port_number) {
        r.error(node, "\"address\": " + message);
        return false;
    }
    if (const std::string problem = host_name_problem(host); !problem.empty()) {
        r.error(node, "\"address\": invalid host name " + quote(host) + ": " + problem);
        return false;
    }
    out.hostname = std::string(host);
    out.port = *port_number;
    return true;
}

// ---- server TLS ----

bool is_ip_literal(const std::string& text) {
    unsigned char buf[sizeof(in6_addr)];
    return ::inet_pton(AF_INET, text.c_str(), buf) == 1 ||
           ::inet_pton(AF_INET6, text.c_str(), buf) == 1;
}

void parse_sni(Reader& r, const toml::node& node, UpstreamServer& out) {
    auto name = r.nonempty_string(node, "sni");
    if (!name) return;
    if (is_ip_literal(*name)) {
        // RFC 6066: a server_name is a host name; an IP address is never sent.
        r.error(node, "\"sni\" must be a host name, not an IP address, got " + quote(*name));
        return;
    }
    if (const std::string problem = host_name_problem(*name); !problem.empty()) {
        r.error(node, "\"sni\": invalid host name " + quote(*name) + ": " + problem);
        return;
    }
    out.sni = std::move(*name);
}

// The CA bundle that the server's certificate is verified against: read now (by the master,
// like every file the config names) and parsed, so a bad bundle fails the config, not a request.
void parse_ca_file(Reader& r, const toml::node& node, UpstreamServer& out) {
    const auto path = r.nonempty_string(node, "ca_file");
    if (!path) return;
    const std::string file = resolve_config_path(r.file(), *path);
    std::string pem, error;
    if (!read_secret_file(file, pem, error, kMaxPemBundleFile)) {
        r.error(node, "cannot read \"ca_file\" " + quote(file) + ": " + error);
        return;
    }
    std::vector<tls::X509Ptr> certs;
    if (!tls::load_ca_bundle(pem, certs, error)) {
        r.error(node, "\"ca_file\" " + quote(file) + " is not a PEM CA bundle: " + error);
        return;
    }
    out.ca_file = file;
    out.ca_pem = std::move(pem);
}

// tls, and the keys that only apply with tls = true: sni, verify, ca_file.
void parse_server_tls(Reader& r, const toml::table& t, UpstreamServer& out) {
    if (const toml::node* n = t.get("tls")) {
        const auto tls = r.boolean(*n, "tls");
        if (!tls) return;  // unknown: the other keys cannot be judged
        out.tls = *tls;
    }
    if (!out.tls) {
        for (std::string_view key : kServerTlsKeys) {
            if (const toml::node* n = t.get(key)) {
                r.error(*n, quote(key) + " only applies to a server with tls = true");
            }
        }
        return;
    }
    if (const toml::node* n = t.get("sni")) parse_sni(r, *n, out);
    r.read(t, "verify", out.verify);
    // With verify = false the CA is unused, but still checked: switching verification off to
    // debug must not need another edit to switch it back on.
    if (const toml::node* n = t.get("ca_file")) parse_ca_file(r, *n, out);
}

void parse_server_entry(Reader& r, const toml::node& node, const std::string& where,
                        Upstream& out) {
    const toml::table* t = node.as_table();
    if (t == nullptr) {
        r.wrong_type(node, "a table like { address = \"127.0.0.1:3001\" }", "servers");
        return;
    }
    r.check_keys(*t, where, kServerKeys);
    UpstreamServer server;
    r.read(*t, "weight", server.weight, 1, kMaxWeight);
    r.read(*t, "max_connections", server.max_connections, 0);
    r.read(*t, "backup", server.backup);
    r.read(*t, "drain", server.drain);
    parse_server_tls(r, *t, server);
    bool ok = r.require(*t, "address", where);
    const toml::node* address = t->get("address");
    ok = ok && parse_address(r, *address, server);
    if (address != nullptr) {
        server.id_loc = loc_of(*address);
        if (const auto* s = address->as_string()) server.id = s->get();
    }
    if (const toml::node* id = t->get("id")) {
        auto text = r.nonempty_string(*id, "id");
        ok = ok && text.has_value();
        if (text) server.id = std::move(*text);
        server.id_loc = loc_of(*id);
    }
    if (ok) out.servers.push_back(std::move(server));
}

// Read from the entries as written, so that an entry with an error of its own does not also
// make the rest look like backups only.
bool all_backups(const toml::array& servers) {
    return !servers.empty() && std::all_of(servers.begin(), servers.end(), [](const toml::node& n) {
        const toml::table* t = n.as_table();
        const toml::node* backup = t == nullptr ? nullptr : t->get("backup");
        return backup != nullptr && backup->as_boolean() != nullptr && backup->as_boolean()->get();
    });
}

void parse_servers(Reader& r, const toml::table& upstream, Upstream& out) {
    const std::string where = "in a server of [upstreams." + out.name + "]";
    if (!r.require(upstream, "servers", "in [upstreams." + out.name + "]")) return;
    const toml::node& node = *upstream.get("servers");
    const toml::array* servers = r.array(node, "servers");
    if (servers == nullptr) return;
    for (const toml::node& entry : *servers) parse_server_entry(r, entry, where, out);
    if (all_backups(*servers)) {
        r.error(node, "every server of [upstreams." + out.name +
                          "] is a backup; at least one server must not be a backup");
    }
}

// ---- sticky, health_check, retry ----

void parse_sticky(Reader& r, const toml::node& node, Upstream& out) {
    const toml::table* t = node.as_table();
    if (t == nullptr) {
        r.wrong_type(node, "a table like { cookie = \"srv\" }", "sticky");
        return;
    }
    const std::string where = "in \"sticky\" of [upstreams." + out.name + "]";
    r.check_keys(*t, where, kStickyKeys);
    if (!r.require(*t, "cookie", where)) return;
    const toml::node& cookie = *t->get("cookie");
    auto name = r.string(cookie, "cookie");
    if (!name) return;
    if (!is_token(*name)) {
        r.error(cookie, "\"cookie\" must be a valid cookie name, got " + quote(*name));
        return;
    }
    out.sticky_cookie = std::move(*name);
}

// The health check's request line is written from `path`: it must be a plain origin-form target.
void parse_health_path(Reader& r, const toml::node& node, HealthCheck& out) {
    auto path = r.string(node, "path");
    if (!path) return;
    std::string problem;
    if (path->empty() || path->front() != '/') {
        problem = "must start with \"/\"";
    } else if (path->find('#') != std::string::npos) {
        problem = "must not contain a fragment";
    } else if (std::any_of(path->begin(), path->end(), [](char ch) {
                   const auto c = static_cast<unsigned char>(ch);
                   return c <= 0x20 || c == 0x7f;
               })) {
        problem = "must not contain spaces or control characters";
    }
    if (!problem.empty()) {
        r.error(node, "\"path\" " + problem + ", got " + quote(*path));
        return;
    }
    out.path = std::move(*path);
}

void parse_expected_status(Reader& r, const toml::node& node, HealthCheck& out) {
    const toml::array* a = node.as_array();
    if (a == nullptr) {
        r.wrong_type(node, "an array of integers", "expected_status");
        return;
    }
    if (a->empty()) {
        r.error(node, "\"expected_status\" must not be empty; leave it out for [200]");
        return;
    }
    std::vector<int> codes;
    bool ok = true;
    for (const toml::node& element : *a) {
        if (const auto code = r.integer(element, "expected_status", 100, 599)) {
            codes.push_back(static_cast<int>(*code));
        } else {
            ok = false;
        }
    }
    if (ok) out.expected_status = std::move(codes);
}

void parse_health_method(Reader& r, const toml::node& node, HealthCheck& out) {
    auto method = r.string(node, "method");
    if (!method) return;
    if (!is_token(*method)) {
        r.error(node, "invalid method " + quote(*method));
        return;
    }
    out.method = upper(*method);
}

// A probe still waiting when the next one is due would overlap it.
void check_timeout_below_interval(Reader& r, const toml::table& t, const HealthCheck& hc) {
    if (hc.timeout < hc.interval) return;
    const toml::node* timeout = t.get("timeout");
    const toml::node* interval = t.get("interval");
    const std::string message =
        "health check \"timeout\" (" + format_duration(hc.timeout) +
        (timeout == nullptr ? ", the default" : "") + ") must be less than \"interval\" (" +
        format_duration(hc.interval) + (interval == nullptr ? ", the default" : "") + ")";
    r.error(timeout != nullptr ? *timeout : *interval, message);
}

void parse_health_check(Reader& r, const toml::node& node, Upstream& out) {
    const toml::table* t = r.table(node, "health_check");
    if (t == nullptr) return;
    HealthCheck& hc = out.health_check;
    hc.enabled = true;
    r.check_keys(*t, "in [upstreams." + out.name + ".health_check]", kHealthKeys);
    if (const toml::node* n = t->get("path")) parse_health_path(r, *n, hc);
    const std::size_t errors_before = r.errors().size();
    r.read_duration(*t, "interval", hc.interval, false);
    r.read_duration(*t, "timeout", hc.timeout, false);
    if (r.errors().size() == errors_before) check_timeout_below_interval(r, *t, hc);
    r.read(*t, "healthy_threshold", hc.healthy_threshold, 1, kMaxThreshold);
    r.read(*t, "unhealthy_threshold", hc.unhealthy_threshold, 1, kMaxThreshold);
    if (const toml::node* n = t->get("expected_status")) parse_expected_status(r, *n, hc);
    if (const toml::node* n = t->get("method")) parse_health_method(r, *n, hc);
}

void parse_retry(Reader& r, const toml::node& node, Upstream& out) {
    const toml::table* t = node.as_table();
    if (t == nullptr) {
        r.wrong_type(node, "a table like { attempts = 2 }", "retry");
        return;
    }
    r.check_keys(*t, "in [upstreams." + out.name + ".retry]", kRetryKeys);
    r.read(*t, "attempts", out.retry.attempts, 0, kMaxRetryAttempts);
}

// ---- the upstream ----

void parse_balancing(Reader& r, const toml::table& t, Upstream& out) {
    bool balance_known = true;
    if (const toml::node* n = t.get("balance")) {
        const auto balance = parse_balance(r, *n, "balance");
        if (balance) out.balance = *balance;
        balance_known = balance.has_value();
    }
    const toml::node* n = t.get("hash_key");
    if (n == nullptr) return;
    const auto key = parse_hash_key(r, *n);
    if (!key) return;
    out.hash_key = *key;
    if (balance_known && out.balance != Balance::ConsistentHash) {
        r.error(*n, "\"hash_key\" only applies to balance = \"consistent_hash\", not " +
                        quote(balance_name(out.balance)) +
                        (t.contains("balance") ? "" : " (the default)"));
    }
}

void parse_protocol(Reader& r, const toml::node& node, Upstream& out) {
    const auto name = r.choice(node, "protocol", kProtocols);
    if (!name) return;
    const auto it = std::find(std::begin(kProtocols), std::end(kProtocols), *name);
    out.protocol = static_cast<UpstreamProtocol>(it - std::begin(kProtocols));
    out.protocol_loc = loc_of(node);
}

// h2 is negotiated in the TLS handshake (ALPN) and h2c is spoken in the clear: each server must
// be reached the way the protocol says. Health checks speak HTTP/1.1, which an HTTP/2-only server
// (a gRPC server) does not answer: passive health only, for now.
void check_protocol(Reader& r, const toml::table& t, const Upstream& out) {
    if (out.protocol == UpstreamProtocol::Http1) return;
    const bool tls = out.protocol == UpstreamProtocol::H2;
    for (const UpstreamServer& server : out.servers) {
        if (server.tls == tls) continue;
        r.error(server.id_loc, "server " + quote(server.id) + " of [upstreams." + out.name + "]" +
                                   (tls ? " needs tls = true for protocol = \"h2\" (HTTP/2 over "
                                          "TLS); use protocol = \"h2c\" for plain HTTP/2"
                                        : " has tls = true but protocol = \"h2c\" is plain "
                                          "HTTP/2; use protocol = \"h2\""));
    }
    if (const toml::node* n = t.get("health_check")) {
        r.error(*n, "health_check is not supported with protocol = " +
                        quote(kProtocols[static_cast<std::size_t>(out.protocol)]) +
                        " yet (checks speak HTTP/1.1); failed requests still mark a server down");
    }
}

void parse_upstream(Reader& r, const toml::node& node, Upstream& out) {
    const toml::table* t = r.table(node, out.name);
    if (t == nullptr) return;
    r.check_keys(*t, "in [upstreams." + out.name + "]", kUpstreamKeys);
    if (const toml::node* n = t->get("protocol")) parse_protocol(r, *n, out);
    parse_balancing(r, *t, out);
    r.read(*t, "keepalive", out.keepalive, 0);
    parse_servers(r, *t, out);
    r.read_duration(*t, "resolve_interval", out.resolve_interval, false);
    r.read_duration(*t, "slow_start", out.slow_start, true);
    if (const toml::node* n = t->get("sticky")) parse_sticky(r, *n, out);
    if (const toml::node* n = t->get("health_check")) parse_health_check(r, *n, out);
    if (const toml::node* n = t->get("retry")) parse_retry(r, *n, out);
    check_protocol(r, *t, out);
}

}  // namespace

std::optional<Balance> parse_balance(Reader& r, const toml::node& node, std::string_view key) {
    const auto name = r.choice(node, key, kBalances);
    if (!name) return std::nullopt;
    const auto it = std::find(std::begin(kBalances), std::end(kBalances), *name);
    return static_cast<Balance>(it - std::begin(kBalances));
}

void parse_upstreams(Reader& r, const toml::node& node, std::vector<Upstream>& out) {
    const toml::table* upstreams = r.table(node, "upstreams");
    if (upstreams == nullptr) return;
    for (auto&& [key, value] : *upstreams) {
        const std::string_view name = key.str();
        if (!is_plain_name(name)) {
            r.error(loc_of(key), "invalid upstream name " + quote(name) +
                                     "; use letters, digits, \"_\", \"-\" and \".\"");
            continue;
        }
        // Kept even when its body has errors, so that routes naming it do not add a second,
        // misleading "not defined" error.
        Upstream upstream;
        upstream.name = std::string(name);
        upstream.loc = loc_of(value);
        parse_upstream(r, value, upstream);
        out.push_back(std::move(upstream));
    }
    std::sort(out.begin(), out.end(),
              [](const Upstream& a, const Upstream& b) { return a.name < b.name; });
}

}  // namespace proxyd::config::detail

namespace proxyd::config {

std::string_view balance_name(Balance balance) {
    return detail::kBalances[static_cast<std::size_t>(balance)];
}

std::string_view protocol_name(UpstreamProtocol protocol) {
    return detail::kProtocols[static_cast<std::size_t>(protocol)];
}

}  // namespace proxyd::config
