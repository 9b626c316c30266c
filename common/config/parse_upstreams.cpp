// [upstreams.NAME] tables and their server lists.
#include <algorithm>
#include <cctype>

#include "common/config/reader.hpp"
#include "common/config/text.hpp"
#include "common/config/units.hpp"

namespace proxyd::config::detail {

namespace {

constexpr std::string_view kUpstreamKeys[] = {"balance", "keepalive", "servers"};
constexpr std::string_view kUpstreamLater[] = {
    "hash_key", "resolve_interval", "protocol", "slow_start", "sticky", "health_check", "retry"};
constexpr std::string_view kServerKeys[] = {"address", "weight", "id"};
constexpr std::string_view kServerLater[] = {"max_connections", "backup", "tls", "sni",
                                             "verify",          "ca_file"};
constexpr std::string_view kBalances[] = {
    "round_robin", "weighted_round_robin", "least_conn", "weighted_least_conn",
    "ip_hash",     "consistent_hash",      "least_time", "adaptive"};
constexpr int kMaxWeight = 1'000'000;

// Names end up in metric labels, admin API URLs and log lines: keep them plain.
bool valid_upstream_name(std::string_view name) {
    return !name.empty() && std::all_of(name.begin(), name.end(), [](char ch) {
        const auto c = static_cast<unsigned char>(ch);
        return std::isalnum(c) || c == '_' || c == '-' || c == '.';
    });
}

// "api.internal:80" (or without a port): a DNS name rather than a malformed numeric address.
bool looks_like_hostname(std::string_view address) {
    const std::string_view host = address.substr(0, address.rfind(':'));
    const bool plain = !host.empty() && std::all_of(host.begin(), host.end(), [](char ch) {
        const auto c = static_cast<unsigned char>(ch);
        return std::isalnum(c) || c == '-' || c == '.';
    });
    return plain && std::any_of(host.begin(), host.end(),
                                [](char c) { return std::isalpha(static_cast<unsigned char>(c)); });
}

void parse_balance(Reader& r, const toml::node& node, Upstream& out) {
    const auto name = r.choice(node, "balance", kBalances);
    if (!name) return;
    if (*name != "round_robin") {
        r.error(node, "balance " + quote(*name) + " is not supported yet");
        return;
    }
    out.balance = Balance::RoundRobin;
}

bool parse_address(Reader& r, const toml::node& node, SocketAddress& out) {
    const auto text = r.string(node, "address");
    if (!text) return false;
    out.loc = loc_of(node);
    std::string message;
    if (parse_socket_address(*text, out, message)) return true;
    if (looks_like_hostname(*text)) {
        r.error(node,
                "server address must be a numeric \"IP:port\" for now (DNS names are not "
                "supported yet)");
    } else {
        r.error(node, "\"address\": " + message);
    }
    return false;
}

void parse_server_entry(Reader& r, const toml::node& node, const std::string& where,
                        Upstream& out) {
    const toml::table* t = node.as_table();
    if (t == nullptr) {
        r.wrong_type(node, "a table like { address = \"127.0.0.1:3001\" }", "servers");
        return;
    }
    r.check_keys(*t, where, kServerKeys, kServerLater);
    UpstreamServer server;
    r.read(*t, "weight", server.weight, 1, kMaxWeight);
    bool ok = r.require(*t, "address", where);
    ok = ok && parse_address(r, *t->get("address"), server.address);
    server.id_loc = server.address.loc;
    server.id = server.address.text;
    if (const toml::node* id = t->get("id")) {
        auto text = r.nonempty_string(*id, "id");
        ok = ok && text.has_value();
        if (text) server.id = std::move(*text);
        server.id_loc = loc_of(*id);
    }
    if (ok) out.servers.push_back(std::move(server));
}

void parse_servers(Reader& r, const toml::table& upstream, Upstream& out) {
    const std::string where = "in a server of [upstreams." + out.name + "]";
    if (!r.require(upstream, "servers", "in [upstreams." + out.name + "]")) return;
    const toml::array* servers = r.array(*upstream.get("servers"), "servers");
    if (servers == nullptr) return;
    for (const toml::node& entry : *servers) parse_server_entry(r, entry, where, out);
}

void parse_upstream(Reader& r, const toml::node& node, Upstream& out) {
    const toml::table* t = r.table(node, out.name);
    if (t == nullptr) return;
    r.check_keys(*t, "in [upstreams." + out.name + "]", kUpstreamKeys, kUpstreamLater);
    if (const toml::node* balance = t->get("balance")) parse_balance(r, *balance, out);
    r.read(*t, "keepalive", out.keepalive, 0);
    parse_servers(r, *t, out);
}

}  // namespace

void parse_upstreams(Reader& r, const toml::node& node, std::vector<Upstream>& out) {
    const toml::table* upstreams = r.table(node, "upstreams");
    if (upstreams == nullptr) return;
    for (auto&& [key, value] : *upstreams) {
        const std::string_view name = key.str();
        if (!valid_upstream_name(name)) {
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
