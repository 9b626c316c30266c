#include <arpa/inet.h>
#include <doctest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "common/config/load.hpp"
#include "tests/unit/common/config_text.hpp"

using namespace proxyd::config;
using namespace std::chrono_literals;

namespace {

LoadResult load(std::string_view text) {
    return proxyd::testing::load_text(text);
}
Config valid(std::string_view text) {
    return proxyd::testing::valid_config(text);
}
using proxyd::testing::check_errors;
using proxyd::testing::errors_of;

constexpr std::string_view kMinimal = R"(
[server]
listen = ["127.0.0.1:8080"]
)";

std::uint16_t port_of(const SocketAddress& a) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&a.storage)->sin_port);
}

}  // namespace

TEST_CASE("ConfigError::format") {
    CHECK(ConfigError{"a.toml", 3, 14, "bad"}.format() == "a.toml:3:14: bad");
    CHECK(ConfigError{"a.toml", 0, 0, "cannot read: x"}.format() == "a.toml: cannot read: x");
}

TEST_CASE("defaults fill everything not written") {
    const Config c = valid(kMinimal);
    CHECK(c.file == "test.toml");
    REQUIRE(c.server.listen.size() == 1);
    CHECK(c.server.listen[0].text == "127.0.0.1:8080");
    CHECK(port_of(c.server.listen[0]) == 8080);
    CHECK(c.server.listen[0].loc.line == 2);
    CHECK(c.server.listen[0].loc.column == 11);
    CHECK(c.server.workers == 1);
    CHECK_FALSE(c.server.workers_auto);
    CHECK(c.server.control_socket == "/run/proxyd/proxyd.sock");
    CHECK(c.server.pid_file.empty());
    CHECK(c.server.max_connections == 10000);
    CHECK(c.server.shutdown_timeout == 30s);
    CHECK(c.server.real_ip_header.empty());
    CHECK(c.server.trusted_proxies.empty());
    CHECK(c.server.timeouts.header == 10s);
    CHECK(c.server.timeouts.body == 30s);
    CHECK(c.server.timeouts.keepalive == 60s);
    CHECK(c.server.timeouts.upstream_connect == 2s);
    CHECK(c.server.timeouts.upstream_response == 30s);
    CHECK(c.server.timeouts.upstream_idle == 60s);
    CHECK(c.server.timeouts.tunnel_idle == 1h);
    CHECK(c.server.limits.max_header_size == 16 * 1024);
    CHECK(c.server.limits.max_body_size == 10 * 1024 * 1024);
    CHECK(c.server.limits.max_uri_size == 8 * 1024);
    CHECK(c.server.response_headers.empty());
    CHECK(c.upstreams.empty());
    CHECK(c.routes.empty());
    CHECK(c.log.level == LogLevel::Info);
    CHECK(c.log.format == LogFormat::Json);
    CHECK(c.log.error_log == "-");
    CHECK(c.log.access_log.empty());
}

TEST_CASE("a full config is read into every field") {
    const Config c = valid(R"(
[server]
listen = ["0.0.0.0:8080", "[::1]:8081"]
workers = 4
control_socket = "/tmp/p.sock"
pid_file = "/tmp/p.pid"
max_connections = 500
shutdown_timeout = "5s"
real_ip_header = "X-Forwarded-For"
trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8", "::1"]

[server.timeouts]
header = "1s"
body = "2s"
keepalive = "3s"
upstream_connect = "250ms"
upstream_response = "4s"
upstream_idle = "2m"
tunnel_idle = "2h"

[server.limits]
max_header_size = "32KiB"
max_body_size = 1048576
max_uri_size = "1KiB"

[server.response_headers]
X-Frame-Options = "DENY"
X-Content-Type-Options = "nosniff"

[upstreams.web]
servers = []

[upstreams.api]
balance = "round_robin"
keepalive = 8
servers = [
  { address = "127.0.0.1:3001", weight = 100, id = "api-1" },
  { address = "[::1]:3002" },
]

[[routes]]
path = "/api/"
host = "API.Example.com"
methods = ["get", "Post"]
upstream = "api"
strip_prefix = true

[[routes]]
path_exact = "/health"
upstream = "web"

[[routes]]
host = "*.example.com"
upstream = "web"

[log]
level = "debug"
format = "text"
error_log = "/var/log/proxyd/error.log"
access_log = "-"
)");
    const ServerSection& s = c.server;
    REQUIRE(s.listen.size() == 2);
    CHECK(s.listen[0].text == "0.0.0.0:8080");
    CHECK(s.listen[0].storage.ss_family == AF_INET);
    CHECK(s.listen[1].text == "[::1]:8081");
    CHECK(s.listen[1].storage.ss_family == AF_INET6);
    CHECK(s.listen[1].loc.line == 2);
    CHECK(s.listen[1].loc.column == 27);
    CHECK(s.workers == 4);
    CHECK_FALSE(s.workers_auto);
    CHECK(s.control_socket == "/tmp/p.sock");
    CHECK(s.pid_file == "/tmp/p.pid");
    CHECK(s.max_connections == 500);
    CHECK(s.shutdown_timeout == 5s);
    CHECK(s.real_ip_header == "X-Forwarded-For");
    REQUIRE(s.trusted_proxies.size() == 3);
    CHECK(s.trusted_proxies[0].text == "127.0.0.1/32");
    CHECK(s.trusted_proxies[1].prefix_len == 8);
    CHECK(s.trusted_proxies[2].family == AF_INET6);
    CHECK(s.trusted_proxies[2].prefix_len == 128);
    CHECK(s.timeouts.header == 1s);
    CHECK(s.timeouts.body == 2s);
    CHECK(s.timeouts.keepalive == 3s);
    CHECK(s.timeouts.upstream_connect == 250ms);
    CHECK(s.timeouts.upstream_response == 4s);
    CHECK(s.timeouts.upstream_idle == 2min);
    CHECK(s.timeouts.tunnel_idle == 2h);
    CHECK(s.limits.max_header_size == 32 * 1024);
    CHECK(s.limits.max_body_size == 1048576);
    CHECK(s.limits.max_uri_size == 1024);
    REQUIRE(s.response_headers.size() == 2);
    // Sorted by name (toml++ keeps table keys ordered), not in file order.
    CHECK(s.response_headers[0].first == "X-Content-Type-Options");
    CHECK(s.response_headers[0].second == "nosniff");
    CHECK(s.response_headers[1].first == "X-Frame-Options");
    CHECK(s.response_headers[1].second == "DENY");

    REQUIRE(c.upstreams.size() == 2);
    const Upstream& api = c.upstreams[0];  // sorted by name: api before web
    CHECK(api.name == "api");
    CHECK(api.balance == Balance::RoundRobin);
    CHECK(api.keepalive == 8);
    CHECK(api.loc.line == 32);
    REQUIRE(api.servers.size() == 2);
    CHECK(api.servers[0].id == "api-1");
    CHECK(api.servers[0].address.text == "127.0.0.1:3001");
    CHECK(port_of(api.servers[0].address) == 3001);
    CHECK(api.servers[0].weight == 100);
    CHECK(api.servers[1].id == "[::1]:3002");
    CHECK(api.servers[1].address.storage.ss_family == AF_INET6);
    CHECK(api.servers[1].weight == 1);
    CHECK(c.upstreams[1].name == "web");
    CHECK(c.upstreams[1].keepalive == 32);
    CHECK(c.upstreams[1].servers.empty());

    REQUIRE(c.routes.size() == 3);
    const Route& r0 = c.routes[0];
    CHECK(r0.path == "/api");
    CHECK_FALSE(r0.exact);
    CHECK(r0.host == "api.example.com");
    REQUIRE(r0.methods.size() == 2);
    CHECK(r0.methods[0] == "GET");
    CHECK(r0.methods[1] == "POST");
    CHECK(r0.upstream == "api");
    CHECK(r0.upstream_index == 0);
    CHECK(r0.strip_prefix);
    CHECK(r0.loc.line == 40);
    CHECK(r0.loc.column == 1);
    CHECK(c.routes[1].path == "/health");
    CHECK(c.routes[1].exact);
    CHECK(c.routes[1].host.empty());
    CHECK(c.routes[1].methods.empty());
    CHECK(c.routes[1].upstream_index == 1);
    CHECK_FALSE(c.routes[1].strip_prefix);
    CHECK(c.routes[2].path.empty());
    CHECK(c.routes[2].host == "*.example.com");
    CHECK(c.routes[2].upstream_index == 1);

    CHECK(c.log.level == LogLevel::Debug);
    CHECK(c.log.format == LogFormat::Text);
    CHECK(c.log.error_log == "/var/log/proxyd/error.log");
    CHECK(c.log.access_log == "-");
}

TEST_CASE("syntax error is reported with toml++'s place and words") {
    check_errors(
        R"(
[server]
listen = ["127.0.0.1:8080"
workers = 2
)",
        "test.toml:3:1: Error while parsing array: expected comma or closing ']', saw 'w'\n");
    check_errors(R"(
[server]
listen = ["127.0.0.1:8080"]
[server]
)",
                 "test.toml:3:1: Error while parsing table header: cannot redefine existing "
                 "table 'server'\n");
}

TEST_CASE("unknown key: did-you-mean when one is close, none otherwise") {
    check_errors(R"(
[server]
lisen = ["127.0.0.1:8080"]
listen = ["127.0.0.1:8081"]
wrokers = 2
colour = "blue"
)",
                 "test.toml:2:1: unknown key \"lisen\" in [server]; did you mean \"listen\"?\n"
                 "test.toml:4:1: unknown key \"wrokers\" in [server]; did you mean \"workers\"?\n"
                 "test.toml:5:1: unknown key \"colour\" in [server]\n");
    check_errors(
        R"(
[sever]
listen = ["127.0.0.1:8080"]
)",
        "test.toml: missing required table [server] (with \"listen\")\n"
        "test.toml:1:2: unknown key \"sever\" at the top level; did you mean \"server\"?\n");
}

TEST_CASE("unknown key in nested tables, server entries and routes") {
    check_errors(R"(
[server]
listen = ["127.0.0.1:8080"]
[server.timeouts]
upstream_conect = "1s"
[server.limits]
max_headers = 10
[upstreams.api]
servers = [{ adress = "127.0.0.1:1" }]
[[routes]]
upstrem = "api"
[log]
levle = "info"
)",
                 "test.toml:4:1: unknown key \"upstream_conect\" in [server.timeouts]; did you "
                 "mean \"upstream_connect\"?\n"
                 "test.toml:6:1: unknown key \"max_headers\" in [server.limits]\n"
                 "test.toml:8:12: missing required key \"address\" in a server of [upstreams.api]\n"
                 "test.toml:8:14: unknown key \"adress\" in a server of [upstreams.api]; did you "
                 "mean \"address\"?\n"
                 "test.toml:9:1: missing required key \"upstream\" in [[routes]]\n"
                 "test.toml:10:1: unknown key \"upstrem\" in [[routes]]; did you mean "
                 "\"upstream\"?\n"
                 "test.toml:12:1: unknown key \"levle\" in [log]; did you mean \"level\"?\n");
}

TEST_CASE("balance: every algorithm is read; an unknown one lists the valid values") {
    struct Case {
        const char* name;
        Balance balance;
    };
    for (const Case& tc :
         {Case{"round_robin", Balance::RoundRobin},
          Case{"weighted_round_robin", Balance::WeightedRoundRobin},
          Case{"least_conn", Balance::LeastConn},
          Case{"weighted_least_conn", Balance::WeightedLeastConn}, Case{"ip_hash", Balance::IpHash},
          Case{"consistent_hash", Balance::ConsistentHash}, Case{"least_time", Balance::LeastTime},
          Case{"adaptive", Balance::Adaptive}}) {
        CAPTURE(tc.name);
        const Config c = valid(std::string(kMinimal) + "[upstreams.a]\nbalance = \"" + tc.name +
                               "\"\nservers = []\n");
        REQUIRE(c.upstreams.size() == 1);
        CHECK(c.upstreams[0].balance == tc.balance);
    }
    check_errors(std::string(kMinimal) + "[upstreams.a]\nbalance = \"random\"\nservers = []\n",
                 "test.toml:4:11: unknown balance \"random\"; expected one of: round_robin, "
                 "weighted_round_robin, least_conn, weighted_least_conn, ip_hash, "
                 "consistent_hash, least_time, adaptive\n");
    check_errors(std::string(kMinimal) + "[upstreams.a]\nbalance = 1\nservers = []\n",
                 "test.toml:4:11: expected a string for \"balance\", got integer\n");
}

TEST_CASE("wrong types") {
    check_errors(R"(
[server]
listen = "127.0.0.1:8080"
control_socket = 5
max_connections = "many"
[server.timeouts]
header = true
[server.limits]
max_body_size = 1.5
[upstreams.api]
servers = [ "127.0.0.1:1" ]
keepalive = -1
[[routes]]
upstream = "api"
strip_prefix = "yes"
methods = ["GET", 1]
[log]
access_log = false
)",
                 "test.toml:2:10: expected an array of strings for \"listen\", got string\n"
                 "test.toml:3:18: expected a string for \"control_socket\", got integer\n"
                 "test.toml:4:19: expected an integer for \"max_connections\", got string\n"
                 "test.toml:6:10: expected a duration string (e.g. \"5s\") for \"header\", got "
                 "boolean\n"
                 "test.toml:8:17: expected an integer or a size string (e.g. \"16KiB\") for "
                 "\"max_body_size\", got float\n"
                 "test.toml:10:13: expected a table like { address = \"127.0.0.1:3001\" } for "
                 "\"servers\", got string\n"
                 "test.toml:11:13: \"keepalive\" must be at least 0, got -1\n"
                 "test.toml:14:16: expected a boolean for \"strip_prefix\", got string\n"
                 "test.toml:15:19: expected a string for \"methods\", got integer\n"
                 "test.toml:17:14: expected a string for \"access_log\", got boolean\n");
}

TEST_CASE("[routes] written as a single table") {
    check_errors(std::string(kMinimal) + "[routes]\nupstream = \"x\"\n",
                 "test.toml:3:1: expected an array of tables for \"routes\", got table (write "
                 "[[routes]], not [routes])\n");
}

TEST_CASE("durations: bad unit, bare number, zero, negative") {
    check_errors(R"(
[server]
listen = ["127.0.0.1:8080"]
shutdown_timeout = 30
[server.timeouts]
header = "10x"
body = "0s"
keepalive = "-5s"
upstream_idle = "5"
)",
                 "test.toml:3:20: \"shutdown_timeout\": duration needs a unit, e.g. \"30s\"\n"
                 "test.toml:5:10: \"header\": unknown duration unit \"x\" in \"10x\"; use ms, s, "
                 "m or h\n"
                 "test.toml:6:8: \"body\" must be greater than 0\n"
                 "test.toml:7:13: \"keepalive\": duration must not be negative\n"
                 "test.toml:8:17: \"upstream_idle\": duration needs a unit, e.g. \"5s\"\n");
    // Zero is a meaningful drain limit: close at once.
    const Config c = valid(std::string(kMinimal) + "shutdown_timeout = \"0s\"\n");
    CHECK(c.server.shutdown_timeout == 0ms);
}

TEST_CASE("sizes: bad unit, unit-less string, zero, negative") {
    check_errors(
        R"(
[server]
listen = ["127.0.0.1:8080"]
[server.limits]
max_header_size = "16KB"
max_body_size = 0
max_uri_size = "8192"
)",
        "test.toml:4:19: \"max_header_size\": unknown size unit \"KB\" in \"16KB\"; use B, "
        "KiB, MiB, GiB or TiB\n"
        "test.toml:5:17: \"max_body_size\" must be greater than 0\n"
        "test.toml:6:16: \"max_uri_size\": size \"8192\" needs a unit (B, KiB, MiB, GiB "
        "or TiB), or write it as a plain integer of bytes\n");
    check_errors(std::string(kMinimal) + "[server.limits]\nmax_body_size = -1\n",
                 "test.toml:4:17: \"max_body_size\": size must not be negative\n");
}

TEST_CASE("workers: integer, \"auto\", and invalid values") {
    const Config c = valid(std::string(kMinimal) + "workers = \"auto\"\n");
    CHECK(c.server.workers_auto);
    CHECK(c.server.workers == static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)));
    CHECK(c.server.workers >= 1);

    CHECK(valid(std::string(kMinimal) + "workers = 3\n").server.workers == 3);
    check_errors(std::string(kMinimal) + "workers = 0\n",
                 "test.toml:3:11: \"workers\" must be between 1 and 128, got 0\n");
    check_errors(std::string(kMinimal) + "workers = -2\n",
                 "test.toml:3:11: \"workers\" must be between 1 and 128, got -2\n");
    check_errors(std::string(kMinimal) + "workers = 129\n",
                 "test.toml:3:11: \"workers\" must be between 1 and 128, got 129\n");
    check_errors(std::string(kMinimal) + "workers = \"all\"\n",
                 "test.toml:3:11: \"workers\" must be an integer >= 1 or \"auto\", got \"all\"\n");
    check_errors(std::string(kMinimal) + "workers = true\n",
                 "test.toml:3:11: expected an integer or \"auto\" for \"workers\", got boolean\n");
}

TEST_CASE("listen: required, non-empty, valid, no duplicates") {
    check_errors("[server]\nworkers = 2\n",
                 "test.toml:1:1: missing required key \"listen\" in [server]\n");
    check_errors(
        "[server]\nlisten = []\n",
        "test.toml:2:10: \"listen\" needs at least one address, e.g. [\"0.0.0.0:8080\"]\n");
    check_errors("workers = 2\n",
                 "test.toml: missing required table [server] (with \"listen\")\n"
                 "test.toml:1:1: unknown key \"workers\" at the top level\n");
    check_errors(R"(
[server]
listen = ["0.0.0.0:80", "localhost:81", "127.0.0.1:80", "*:80", "[::]:80", "[::]:80"]
)",
                 "test.toml:2:25: \"listen\": \"localhost\" is not a numeric IP address\n"
                 "test.toml:2:57: duplicate listen address \"*:80\"\n"
                 "test.toml:2:76: duplicate listen address \"[::]:80\"\n");
}

TEST_CASE("trusted_proxies and real_ip_header are checked") {
    check_errors(std::string(kMinimal) +
                     "real_ip_header = \"X Real\"\ntrusted_proxies = [\"10.0.0.1/8\", \"nope\"]\n",
                 "test.toml:3:18: \"real_ip_header\" must be a valid header name, got \"X Real\"\n"
                 "test.toml:4:20: \"trusted_proxies\": host bits set in \"10.0.0.1/8\"; did you "
                 "mean \"10.0.0.0/8\"?\n"
                 "test.toml:4:34: \"trusted_proxies\": \"nope\" is not a numeric IP address (in "
                 "\"nope\")\n");
}

TEST_CASE("response headers: names, managed headers, values, a misplaced [server] key") {
    check_errors(std::string(kMinimal) + "[server.response_headers]\nX-Request-Id = \"fixed\"\n",
                 "test.toml:4:1: header \"X-Request-Id\" is managed by the proxy and cannot be "
                 "set in [server.response_headers]\n");
    check_errors(std::string(kMinimal) + R"([server.response_headers]
"Bad Name" = "x"
Content-Length = "5"
X-Evil = "a\r\nSet-Cookie: x"
h2c = false
)",
                 "test.toml:4:1: invalid header name \"Bad Name\" in [server.response_headers]\n"
                 "test.toml:5:1: header \"Content-Length\" is managed by the proxy and cannot be "
                 "set in [server.response_headers]\n"
                 "test.toml:6:10: value of header \"X-Evil\" contains a control character\n"
                 "test.toml:7:1: \"h2c\" is a [server] option but is written inside "
                 "[server.response_headers]; move it above that table header\n");
}

TEST_CASE("control_socket must fit a Unix socket address") {
    check_errors(std::string(kMinimal) + "control_socket = \"/" + std::string(91, 'a') + "\"\n",
                 "test.toml:3:18: \"control_socket\" path is too long for a Unix socket (at most "
                 "91 bytes)\n");
    CHECK(proxyd::config::load_string(
              std::string(kMinimal) + "control_socket = \"/" + std::string(90, 'a') + "\"\n",
              "test.toml")
              .config.has_value());
    check_errors(std::string(kMinimal) + "control_socket = \"\"\n",
                 "test.toml:3:18: \"control_socket\" must not be empty\n");
}

TEST_CASE("upstream servers: numeric address, weight range, id default and duplicates") {
    check_errors(std::string(kMinimal) + R"([upstreams.api]
servers = [
  { address = "256.0.0.1:80" },
  { address = "127.0.0.1" },
  { address = "127.0.0.1:1", weight = 0 },
  { address = "127.0.0.1:2", weight = 1000001 },
  { address = "127.0.0.1:3", id = "a" },
  { address = "127.0.0.1:4", id = "a" },
  { address = "127.0.0.1:3" },
  { address = "127.0.0.1:3" },
]
)",
                 "test.toml:5:15: \"address\": \"256.0.0.1\" is not a numeric IP address\n"
                 "test.toml:6:15: \"address\": address \"127.0.0.1\" needs a port, e.g. "
                 "\"127.0.0.1:8080\"\n"
                 "test.toml:7:39: \"weight\" must be between 1 and 1000000, got 0\n"
                 "test.toml:8:39: \"weight\" must be between 1 and 1000000, got 1000001\n"
                 "test.toml:10:35: duplicate server id \"a\" in [upstreams.api] (first at line 9, "
                 "column 35); give each server a distinct \"id\"\n"
                 "test.toml:12:15: duplicate server id \"127.0.0.1:3\" in [upstreams.api] (first "
                 "at line 11, column 15); give each server a distinct \"id\"\n");
}

TEST_CASE("upstreams: required servers, names, sorting and an empty list") {
    check_errors(std::string(kMinimal) + "[upstreams.api]\nkeepalive = 1\n[upstreams.\"a b\"]\n",
                 "test.toml:3:1: missing required key \"servers\" in [upstreams.api]\n"
                 "test.toml:5:12: invalid upstream name \"a b\"; use letters, digits, \"_\", \"-\" "
                 "and \".\"\n");
    const Config c = valid(std::string(kMinimal) + R"([upstreams.zeta]
servers = [{ address = "127.0.0.1:1" }]
[upstreams.alpha]
servers = []
[upstreams.mid]
servers = [{ address = "127.0.0.1:2" }, { address = "127.0.0.1:3", weight = 1000000 }]
[[routes]]
upstream = "zeta"
[[routes]]
upstream = "mid"
[[routes]]
upstream = "alpha"
)");
    REQUIRE(c.upstreams.size() == 3);
    CHECK(c.upstreams[0].name == "alpha");
    CHECK(c.upstreams[0].servers.empty());
    CHECK(c.upstreams[1].name == "mid");
    CHECK(c.upstreams[1].servers[1].weight == 1000000);
    CHECK(c.upstreams[2].name == "zeta");
    REQUIRE(c.routes.size() == 3);
    CHECK(c.routes[0].upstream_index == 2);
    CHECK(c.routes[1].upstream_index == 1);
    CHECK(c.routes[2].upstream_index == 0);
}

TEST_CASE("route naming an undefined upstream") {
    check_errors(std::string(kMinimal) + R"([upstreams.api]
servers = []
[[routes]]
path = "/x"
upstream = "apii"
[[routes]]
upstream = "billing"
)",
                 "test.toml:7:12: route upstream \"apii\" is not defined; did you mean \"api\"?\n"
                 "test.toml:9:12: route upstream \"billing\" is not defined\n");
}

TEST_CASE("path normalisation") {
    struct Case {
        const char* written;
        const char* stored;
    };
    for (const Case& tc :
         {Case{"/api", "/api"}, Case{"/api/", "/api"}, Case{"/api/*", "/api"}, Case{"/", ""},
          Case{"/*", ""}, Case{"/a/b/", "/a/b"}, Case{"/api//", "/api"}}) {
        CAPTURE(tc.written);
        const Config c = valid(std::string(kMinimal) + "[upstreams.u]\nservers = []\n" +
                               "[[routes]]\nupstream = \"u\"\npath = \"" + tc.written + "\"\n");
        REQUIRE(c.routes.size() == 1);
        CHECK(c.routes[0].path == tc.stored);
        CHECK_FALSE(c.routes[0].exact);
    }
    const Config c = valid(std::string(kMinimal) + R"([upstreams.u]
servers = []
[[routes]]
path_exact = "/x/"
upstream = "u"
[[routes]]
upstream = "u"
)");
    CHECK(c.routes[0].path == "/x/");  // exact paths are matched as written
    CHECK(c.routes[0].exact);
    CHECK(c.routes[1].path.empty());  // no path: every request
    CHECK_FALSE(c.routes[1].exact);
}

TEST_CASE("route paths, hosts and methods that cannot match are refused") {
    check_errors(std::string(kMinimal) + R"([upstreams.u]
servers = []
[[routes]]
path = "api"
upstream = "u"
[[routes]]
path = "/a*"
upstream = "u"
[[routes]]
path = "/a?b=1"
upstream = "u"
[[routes]]
path = "/a"
path_exact = "/a"
upstream = "u"
[[routes]]
host = "example.com:8080"
upstream = "u"
[[routes]]
host = "a.*.com"
upstream = "u"
[[routes]]
host = "*"
upstream = "u"
[[routes]]
methods = []
upstream = "u"
[[routes]]
methods = ["GE T"]
upstream = "u"
)",
                 "test.toml:6:8: \"path\" must start with \"/\", got \"api\"\n"
                 "test.toml:9:8: \"*\" is only allowed as a final \"/*\" in \"path\", got \"/a*\"\n"
                 "test.toml:12:8: \"path\" must not contain a query or fragment, got \"/a?b=1\"\n"
                 "test.toml:16:14: a route has \"path\" or \"path_exact\", not both\n"
                 "test.toml:19:8: route host \"example.com:8080\" must not include a port (the "
                 "port of Host is ignored)\n"
                 "test.toml:22:8: route host \"a.*.com\" may use \"*\" only as a first label, as "
                 "in \"*.example.com\"\n"
                 "test.toml:25:8: route host \"*\" may use \"*\" only as a first label, as in "
                 "\"*.example.com\"\n"
                 "test.toml:28:11: \"methods\" must not be empty; leave it out to match every "
                 "method\n"
                 "test.toml:31:12: invalid method \"GE T\"\n");
}

TEST_CASE("[log] values") {
    check_errors(
        std::string(kMinimal) + "[log]\nlevel = \"warning\"\nformat = \"xml\"\nerror_log = \"\"\n",
        "test.toml:4:9: unknown level \"warning\"; expected one of: trace, debug, info, "
        "warn, error\n"
        "test.toml:5:10: unknown format \"xml\"; expected one of: json, text\n"
        "test.toml:6:13: \"error_log\" must not be empty\n");
    const Config c = valid(std::string(kMinimal) + "[log]\nlevel = \"warn\"\naccess_log = \"\"\n");
    CHECK(c.log.level == LogLevel::Warn);
    CHECK(c.log.format == LogFormat::Json);
    CHECK(c.log.access_log.empty());
}

TEST_CASE("all errors of a file are reported together, in file order") {
    const LoadResult result = load(R"(
[server]
listen = ["127.0.0.1:8080", "127.0.0.1:8080"]
workers = 0
shutdown_timeout = "5"

[upstreams.api]
servers = [{ address = "127.0.0.1:1", wieght = 2 }]

[[routes]]
path = "/api"
upstream = "ap"
compress = "no"

[log]
format = "yaml"
)");
    CHECK_FALSE(result.config.has_value());
    REQUIRE(result.errors.size() == 7);
    CHECK(result.errors[0].line == 2);
    CHECK(result.errors[0].column == 29);
    CHECK(result.errors[0].message == "duplicate listen address \"127.0.0.1:8080\"");
    CHECK(errors_of(result) ==
          "test.toml:2:29: duplicate listen address \"127.0.0.1:8080\"\n"
          "test.toml:3:11: \"workers\" must be between 1 and 128, got 0\n"
          "test.toml:4:20: \"shutdown_timeout\": duration needs a unit, e.g. \"5s\"\n"
          "test.toml:7:39: unknown key \"wieght\" in a server of [upstreams.api]; did you mean "
          "\"weight\"?\n"
          "test.toml:11:12: route upstream \"ap\" is not defined; did you mean \"api\"?\n"
          "test.toml:12:12: expected a boolean for \"compress\", got string\n"
          "test.toml:15:10: unknown format \"yaml\"; expected one of: json, text\n");
}

TEST_CASE("an upstream with errors in its body does not also make its routes undefined") {
    check_errors(std::string(kMinimal) + "[upstreams]\napi = 5\n[[routes]]\nupstream = \"api\"\n",
                 "test.toml:4:7: expected a table for \"api\", got integer\n");
}

TEST_CASE("load_file") {
    SUBCASE("unreadable file: one error without a place") {
        const LoadResult r = load_file("/nonexistent/proxyd.toml");
        CHECK_FALSE(r.config.has_value());
        REQUIRE(r.errors.size() == 1);
        CHECK(r.errors[0].line == 0);
        CHECK(r.errors[0].format() ==
              "/nonexistent/proxyd.toml: cannot read: No such file or directory");
    }
    SUBCASE("a directory") {
        const LoadResult r = load_file("/");
        REQUIRE(r.errors.size() == 1);
        CHECK(r.errors[0].format() == "/: cannot read: Is a directory");
    }
    SUBCASE("a real file: its path is FILE in messages and Config::file") {
        char path[] = "/tmp/proxyd_config_test_XXXXXX";
        const int fd = mkstemp(path);
        REQUIRE(fd >= 0);
        close(fd);
        {
            std::ofstream out(path);
            out << "[server]\nlisten = [\"127.0.0.1:9\"]\nworkers = 2\n";
        }
        const LoadResult ok = load_file(path);
        REQUIRE(ok.config.has_value());
        CHECK(ok.config->file == path);
        CHECK(ok.config->server.workers == 2);
        {
            std::ofstream out(path);
            out << "[server]\nlisten = [\"127.0.0.1:9\"]\nworkers = 0\n";
        }
        const LoadResult bad = load_file(path);
        CHECK(errors_of(bad) ==
              std::string(path) + ":3:11: \"workers\" must be between 1 and 128, got 0\n");
        std::remove(path);
    }
}

TEST_CASE("upstream defaults: balancing, DNS, health check, retry, server limits") {
    const Config c =
        valid(std::string(kMinimal) + "[upstreams.a]\nservers = [{ address = \"127.0.0.1:1\" }]\n");
    CHECK(c.server.hosts_file.empty());
    REQUIRE(c.upstreams.size() == 1);
    const Upstream& u = c.upstreams[0];
    CHECK(u.balance == Balance::RoundRobin);
    CHECK(u.hash_key.kind == HashKey::Kind::Ip);
    CHECK(u.hash_key.name.empty());
    CHECK(u.resolve_interval == 30s);
    CHECK(u.slow_start == 0ms);
    CHECK(u.sticky_cookie.empty());
    CHECK_FALSE(u.health_check.enabled);
    CHECK(u.health_check.path == "/health");
    CHECK(u.health_check.interval == 5s);
    CHECK(u.health_check.timeout == 1s);
    CHECK(u.health_check.healthy_threshold == 2);
    CHECK(u.health_check.unhealthy_threshold == 3);
    CHECK(u.health_check.expected_status == std::vector<int>{200});
    CHECK(u.health_check.method == "GET");
    CHECK(u.retry.attempts == 2);
    REQUIRE(u.servers.size() == 1);
    CHECK(u.servers[0].max_connections == 0);
    CHECK_FALSE(u.servers[0].backup);
    CHECK(u.servers[0].hostname.empty());
    CHECK(u.servers[0].port == 0);
}

TEST_CASE("every balancing, health and DNS key is read into its field") {
    const Config c = valid(R"(
[server]
listen = ["127.0.0.1:8080"]
hosts_file = "/etc/proxyd/hosts"
[upstreams.api]
balance = "consistent_hash"
hash_key = "header:X-User"
resolve_interval = "10s"
slow_start = "30s"
sticky = { cookie = "srv" }
servers = [
  { address = "127.0.0.1:3001", max_connections = 100, id = "a" },
  { address = "api.internal:8080", backup = true },
  { address = "Backend-2.example.com:80", id = "b2", backup = false, max_connections = 0 },
]
[upstreams.api.health_check]
path = "/healthz?full=1"
interval = "2s"
timeout = "500ms"
healthy_threshold = 1
unhealthy_threshold = 100
expected_status = [200, 204, 599, 100]
method = "head"
[upstreams.api.retry]
attempts = 0
[[routes]]
upstream = "api"
websocket_balance = "ip_hash"
sse_balance = "least_conn"
[[routes]]
upstream = "api"
)");
    CHECK(c.server.hosts_file == "/etc/proxyd/hosts");
    REQUIRE(c.upstreams.size() == 1);
    const Upstream& u = c.upstreams[0];
    CHECK(u.balance == Balance::ConsistentHash);
    CHECK(u.hash_key.kind == HashKey::Kind::Header);
    CHECK(u.hash_key.name == "x-user");  // header names are case-insensitive: lower-cased
    CHECK(u.resolve_interval == 10s);
    CHECK(u.slow_start == 30s);
    CHECK(u.sticky_cookie == "srv");
    REQUIRE(u.servers.size() == 3);
    CHECK(u.servers[0].id == "a");
    CHECK(u.servers[0].max_connections == 100);
    CHECK_FALSE(u.servers[0].backup);
    CHECK(u.servers[0].hostname.empty());
    CHECK(port_of(u.servers[0].address) == 3001);
    CHECK(u.servers[1].id == "api.internal:8080");
    CHECK(u.servers[1].id_loc.line == 12);
    CHECK(u.servers[1].id_loc.column == 15);
    CHECK(u.servers[1].hostname == "api.internal");
    CHECK(u.servers[1].port == 8080);
    CHECK(u.servers[1].address.length == 0);  // resolved by the master
    CHECK(u.servers[1].address.text.empty());
    CHECK(u.servers[1].address.storage.ss_family == AF_UNSPEC);
    CHECK(u.servers[1].backup);
    CHECK(u.servers[1].max_connections == 0);
    CHECK(u.servers[2].id == "b2");
    CHECK(u.servers[2].hostname == "Backend-2.example.com");
    CHECK(u.servers[2].port == 80);
    CHECK_FALSE(u.servers[2].backup);
    const HealthCheck& hc = u.health_check;
    CHECK(hc.enabled);
    CHECK(hc.path == "/healthz?full=1");
    CHECK(hc.interval == 2s);
    CHECK(hc.timeout == 500ms);
    CHECK(hc.healthy_threshold == 1);
    CHECK(hc.unhealthy_threshold == 100);
    CHECK(hc.expected_status == std::vector<int>{200, 204, 599, 100});
    CHECK(hc.method == "HEAD");
    CHECK(u.retry.attempts == 0);
    REQUIRE(c.routes.size() == 2);
    CHECK(c.routes[0].has_websocket_balance);
    CHECK(c.routes[0].websocket_balance == Balance::IpHash);
    CHECK(c.routes[0].has_sse_balance);
    CHECK(c.routes[0].sse_balance == Balance::LeastConn);
    CHECK_FALSE(c.routes[1].has_websocket_balance);
    CHECK_FALSE(c.routes[1].has_sse_balance);
}

TEST_CASE("hash_key: every form, bad names, and only with consistent_hash") {
    struct Case {
        const char* written;
        HashKey::Kind kind;
        const char* name;
    };
    for (const Case& tc : {Case{"ip", HashKey::Kind::Ip, ""}, Case{"path", HashKey::Kind::Path, ""},
                           Case{"header:X-Tenant", HashKey::Kind::Header, "x-tenant"},
                           Case{"cookie:Session_ID", HashKey::Kind::Cookie, "Session_ID"}}) {
        CAPTURE(tc.written);
        const Config c = valid(std::string(kMinimal) +
                               "[upstreams.a]\nbalance = \"consistent_hash\"\nhash_key = \"" +
                               tc.written + "\"\nservers = []\n");
        CHECK(c.upstreams[0].hash_key.kind == tc.kind);
        CHECK(c.upstreams[0].hash_key.name == tc.name);
    }
    check_errors(std::string(kMinimal) + R"([upstreams.a]
balance = "consistent_hash"
hash_key = "IP"
servers = []
[upstreams.b]
balance = "consistent_hash"
hash_key = "headers:X-A"
servers = []
[upstreams.c]
balance = "consistent_hash"
hash_key = "header:X A"
servers = []
[upstreams.d]
balance = "consistent_hash"
hash_key = "cookie:"
servers = []
[upstreams.e]
balance = "consistent_hash"
hash_key = "query"
servers = []
[upstreams.f]
hash_key = ["ip"]
servers = []
[upstreams.g]
balance = "ip_hash"
hash_key = "ip"
servers = []
[upstreams.h]
hash_key = "path"
servers = []
[upstreams.i]
balance = "hash"
hash_key = "path"
servers = []
)",
                 "test.toml:5:12: unknown hash_key \"IP\"; expected one of: ip, path, header:NAME, "
                 "cookie:NAME; did you mean \"ip\"?\n"
                 "test.toml:9:12: unknown hash_key \"headers:X-A\"; expected one of: ip, path, "
                 "header:NAME, cookie:NAME; did you mean \"header:X-A\"?\n"
                 "test.toml:13:12: \"hash_key\": invalid header name \"X A\" in \"header:X A\"\n"
                 "test.toml:17:12: \"hash_key\": invalid cookie name \"\" in \"cookie:\"\n"
                 "test.toml:21:12: unknown hash_key \"query\"; expected one of: ip, path, "
                 "header:NAME, cookie:NAME\n"
                 "test.toml:24:12: expected a string for \"hash_key\", got array\n"
                 "test.toml:28:12: \"hash_key\" only applies to balance = \"consistent_hash\", "
                 "not \"ip_hash\"\n"
                 "test.toml:31:12: \"hash_key\" only applies to balance = \"consistent_hash\", "
                 "not \"round_robin\" (the default)\n"
                 "test.toml:34:11: unknown balance \"hash\"; expected one of: round_robin, "
                 "weighted_round_robin, least_conn, weighted_least_conn, ip_hash, "
                 "consistent_hash, least_time, adaptive\n");
}

TEST_CASE("server addresses: DNS names become hostname and port") {
    const Config c = valid(std::string(kMinimal) + R"([upstreams.a]
servers = [
  { address = "api.internal:80" },
  { address = "localhost:8080", id = "local" },
  { address = "a-b.c-d.example:65535" },
  { address = "10.0.0.5:80" },
]
)");
    const auto& s = c.upstreams[0].servers;
    REQUIRE(s.size() == 4);
    CHECK(s[0].hostname == "api.internal");
    CHECK(s[0].port == 80);
    CHECK(s[0].id == "api.internal:80");
    CHECK(s[0].id_loc.line == 5);
    CHECK(s[0].id_loc.column == 15);
    CHECK(s[0].address.length == 0);
    CHECK(s[1].hostname == "localhost");
    CHECK(s[1].id == "local");
    CHECK(s[1].id_loc.column == 38);
    CHECK(s[2].hostname == "a-b.c-d.example");
    CHECK(s[2].port == 65535);
    CHECK(s[3].hostname.empty());  // numeric: resolved here, as before
    CHECK(s[3].address.text == "10.0.0.5:80");
    CHECK(port_of(s[3].address) == 80);

    check_errors(
        std::string(kMinimal) + R"([upstreams.a]
servers = [
  { address = "api_internal:80" },
  { address = "api..internal:80" },
  { address = "-api.internal:80" },
  { address = "api.internal:0" },
  { address = "api.internal:http" },
  { address = "api.internal" },
  { address = ")" +
            std::string(64, 'a') +
            R"(.com:80" },
  { address = "a.123:80" },
  { address = "api.internal:99999" },
  { address = "b.internal:80" },
  { address = "b.internal:80" },
  { address = "b\u00fccher.de:80" },
  { address = "api.internal:80:90" },
  { address = ":80" },
  { address = "*:80" },
  { address = "cafe:80:90" },
]
)",
        "test.toml:5:15: \"address\": invalid host name \"api_internal\": \"_\" is not "
        "allowed (use letters, digits, \"-\" and \".\")\n"
        "test.toml:6:15: \"address\": invalid host name \"api..internal\": empty label\n"
        "test.toml:7:15: \"address\": invalid host name \"-api.internal\": a label "
        "starts or ends with \"-\"\n"
        "test.toml:8:15: \"address\": port 0 out of range in \"api.internal:0\" (1 to "
        "65535)\n"
        "test.toml:9:15: \"address\": invalid port \"http\" in \"api.internal:http\"\n"
        "test.toml:10:15: \"address\": address \"api.internal\" needs a port, e.g. "
        "\"api.internal:8080\"\n"
        "test.toml:11:15: \"address\": invalid host name \"" +
            std::string(64, 'a') +
            ".com\": a label is longer than 63 characters\n"
            "test.toml:12:15: \"address\": invalid host name \"a.123\": the last label "
            "is all digits\n"
            "test.toml:13:15: \"address\": port 99999 out of range in "
            "\"api.internal:99999\" (1 to 65535)\n"
            "test.toml:15:15: duplicate server id \"b.internal:80\" in [upstreams.a] "
            "(first at line 14, column 15); give each server a distinct \"id\"\n"
            "test.toml:16:15: \"address\": invalid host name \"b\u00fccher.de\": non-ASCII "
            "characters are not allowed (write the name as \"xn--\" punycode)\n"
            "test.toml:17:15: \"address\": invalid port \"80:90\" in \"api.internal:80:90\"\n"
            "test.toml:18:15: \"address\": a server address needs a host, got \":80\"\n"
            "test.toml:19:15: \"address\": a server address needs a host, got \"*:80\"\n"
            "test.toml:20:15: \"address\": IPv6 address in \"cafe:80:90\" must be in brackets, "
            "e.g. \"[::1]:8080\"\n");
}

TEST_CASE("server max_connections and backup; not every server may be a backup") {
    check_errors(std::string(kMinimal) + R"([upstreams.a]
servers = [
  { address = "127.0.0.1:1", max_connections = -1 },
  { address = "127.0.0.1:2", backup = "yes" },
  { address = "127.0.0.1:3", max_connections = 1.5 },
]
[upstreams.b]
servers = [{ address = "127.0.0.1:1", backup = true }, { address = "b.internal:2", backup = true }]
)",
                 "test.toml:5:48: \"max_connections\" must be at least 0, got -1\n"
                 "test.toml:6:39: expected a boolean for \"backup\", got string\n"
                 "test.toml:7:48: expected an integer for \"max_connections\", got float\n"
                 "test.toml:10:11: every server of [upstreams.b] is a backup; at least one "
                 "server must not be a backup\n");
    const Config c = valid(std::string(kMinimal) + R"([upstreams.a]
servers = [{ address = "127.0.0.1:1", backup = true }, { address = "127.0.0.1:2", backup = false }]
)");
    CHECK(c.upstreams[0].servers[0].backup);
    CHECK_FALSE(c.upstreams[0].servers[1].backup);
}

TEST_CASE("resolve_interval and slow_start") {
    const Config c = valid(std::string(kMinimal) +
                           "[upstreams.a]\nservers = []\nresolve_interval = \"250ms\"\n"
                           "slow_start = \"0s\"\n");
    CHECK(c.upstreams[0].resolve_interval == 250ms);
    CHECK(c.upstreams[0].slow_start == 0ms);  // "0s" = off
    check_errors(std::string(kMinimal) + R"([upstreams.a]
servers = []
resolve_interval = "0s"
slow_start = 10
[upstreams.b]
servers = []
slow_start = "-1s"
resolve_interval = true
)",
                 "test.toml:5:20: \"resolve_interval\" must be greater than 0\n"
                 "test.toml:6:14: \"slow_start\": duration needs a unit, e.g. \"10s\"\n"
                 "test.toml:9:14: \"slow_start\": duration must not be negative\n"
                 "test.toml:10:20: expected a duration string (e.g. \"5s\") for "
                 "\"resolve_interval\", got boolean\n");
}

TEST_CASE("sticky: a table with a valid cookie name") {
    check_errors(std::string(kMinimal) + R"([upstreams.a]
servers = []
sticky = { cokie = "srv" }
[upstreams.b]
servers = []
sticky = { cookie = "a b", path = "/" }
[upstreams.c]
servers = []
sticky = "srv"
[upstreams.d]
servers = []
sticky = { cookie = "" }
[upstreams.e]
servers = []
sticky = { cookie = 1 }
)",
                 "test.toml:5:10: missing required key \"cookie\" in \"sticky\" of [upstreams.a]\n"
                 "test.toml:5:12: unknown key \"cokie\" in \"sticky\" of [upstreams.a]; did you "
                 "mean \"cookie\"?\n"
                 "test.toml:8:21: \"cookie\" must be a valid cookie name, got \"a b\"\n"
                 "test.toml:8:28: unknown key \"path\" in \"sticky\" of [upstreams.b]\n"
                 "test.toml:11:10: expected a table like { cookie = \"srv\" } for \"sticky\", got "
                 "string\n"
                 "test.toml:14:21: \"cookie\" must be a valid cookie name, got \"\"\n"
                 "test.toml:17:21: expected a string for \"cookie\", got integer\n");
}

TEST_CASE("health_check: present = enabled with defaults; every value is checked") {
    const Config c =
        valid(std::string(kMinimal) + "[upstreams.a]\nservers = []\n[upstreams.a.health_check]\n");
    const HealthCheck& hc = c.upstreams[0].health_check;
    CHECK(hc.enabled);
    CHECK(hc.path == "/health");
    CHECK(hc.interval == 5s);
    CHECK(hc.timeout == 1s);
    CHECK(hc.method == "GET");
    CHECK(hc.expected_status == std::vector<int>{200});

    check_errors(std::string(kMinimal) + R"([upstreams.a]
servers = []
[upstreams.a.health_check]
path = "health"
interval = "0s"
timeout = "1"
healthy_threshold = 0
unhealthy_threshold = 101
expected_status = []
method = "GE T"
intervall = "5s"
[upstreams.b]
servers = []
[upstreams.b.health_check]
path = "/a b"
interval = "2s"
timeout = "2s"
expected_status = [200, 99, "204", 600]
method = 1
[upstreams.c]
servers = []
health_check = { interval = "500ms" }
[upstreams.d]
servers = []
health_check = true
[upstreams.e]
servers = []
[upstreams.e.health_check]
expected_status = 200
timeout = "10s"
path = "/x#y"
)",
                 "test.toml:6:8: \"path\" must start with \"/\", got \"health\"\n"
                 "test.toml:7:12: \"interval\" must be greater than 0\n"
                 "test.toml:8:11: \"timeout\": duration needs a unit, e.g. \"1s\"\n"
                 "test.toml:9:21: \"healthy_threshold\" must be between 1 and 100, got 0\n"
                 "test.toml:10:23: \"unhealthy_threshold\" must be between 1 and 100, got 101\n"
                 "test.toml:11:19: \"expected_status\" must not be empty; leave it out for [200]\n"
                 "test.toml:12:10: invalid method \"GE T\"\n"
                 "test.toml:13:1: unknown key \"intervall\" in [upstreams.a.health_check]; did "
                 "you mean \"interval\"?\n"
                 "test.toml:17:8: \"path\" must not contain spaces or control characters, got "
                 "\"/a b\"\n"
                 "test.toml:19:11: health check \"timeout\" (2s) must be less than \"interval\" "
                 "(2s)\n"
                 "test.toml:20:25: \"expected_status\" must be between 100 and 599, got 99\n"
                 "test.toml:20:29: expected an integer for \"expected_status\", got string\n"
                 "test.toml:20:36: \"expected_status\" must be between 100 and 599, got 600\n"
                 "test.toml:21:10: expected a string for \"method\", got integer\n"
                 "test.toml:24:29: health check \"timeout\" (1s, the default) must be less than "
                 "\"interval\" (500ms)\n"
                 "test.toml:27:16: expected a table for \"health_check\", got boolean\n"
                 "test.toml:31:19: expected an array of integers for \"expected_status\", got "
                 "integer\n"
                 "test.toml:32:11: health check \"timeout\" (10s) must be less than \"interval\" "
                 "(5s, the default)\n"
                 "test.toml:33:8: \"path\" must not contain a fragment, got \"/x#y\"\n");
}

TEST_CASE("retry: attempts 0 to 10") {
    const Config c =
        valid(std::string(kMinimal) + "[upstreams.a]\nservers = []\nretry = { attempts = 10 }\n");
    CHECK(c.upstreams[0].retry.attempts == 10);
    check_errors(std::string(kMinimal) + R"([upstreams.a]
servers = []
[upstreams.a.retry]
attempts = 11
tries = 1
[upstreams.b]
servers = []
retry = 2
[upstreams.c]
servers = []
retry = { attempts = -1 }
)",
                 "test.toml:6:12: \"attempts\" must be between 0 and 10, got 11\n"
                 "test.toml:7:1: unknown key \"tries\" in [upstreams.a.retry]\n"
                 "test.toml:10:9: expected a table like { attempts = 2 } for \"retry\", got "
                 "integer\n"
                 "test.toml:13:22: \"attempts\" must be between 0 and 10, got -1\n");
}

TEST_CASE("new upstream keys get did-you-mean suggestions") {
    check_errors(std::string(kMinimal) +
                     "[upstreams.a]\nservers = []\nhealthcheck = {}\nslowstart = \"1s\"\n",
                 "test.toml:5:1: unknown key \"healthcheck\" in [upstreams.a]; did you mean "
                 "\"health_check\"?\n"
                 "test.toml:6:1: unknown key \"slowstart\" in [upstreams.a]; did you mean "
                 "\"slow_start\"?\n");
}

TEST_CASE("routes: websocket_balance and sse_balance") {
    check_errors(std::string(kMinimal) + R"([upstreams.u]
servers = []
[[routes]]
upstream = "u"
websocket_balance = "sticky"
sse_balance = true
[[routes]]
upstream = "u"
websocket_balanse = "ip_hash"
)",
                 "test.toml:7:21: unknown websocket_balance \"sticky\"; expected one of: "
                 "round_robin, weighted_round_robin, least_conn, weighted_least_conn, ip_hash, "
                 "consistent_hash, least_time, adaptive\n"
                 "test.toml:8:15: expected a string for \"sse_balance\", got boolean\n"
                 "test.toml:11:1: unknown key \"websocket_balanse\" in [[routes]]; did you mean "
                 "\"websocket_balance\"?\n");
    const Config c = valid(std::string(kMinimal) +
                           "[upstreams.u]\nservers = []\n[[routes]]\nupstream = \"u\"\n"
                           "sse_balance = \"adaptive\"\n");
    CHECK_FALSE(c.routes[0].has_websocket_balance);
    CHECK(c.routes[0].has_sse_balance);
    CHECK(c.routes[0].sse_balance == Balance::Adaptive);
}

TEST_CASE("[server] hosts_file") {
    CHECK(valid(std::string(kMinimal) + "hosts_file = \"/etc/proxyd/hosts\"\n").server.hosts_file ==
          "/etc/proxyd/hosts");
    check_errors(std::string(kMinimal) + "hosts_file = \"\"\n",
                 "test.toml:3:14: \"hosts_file\" must not be empty\n");
    check_errors(std::string(kMinimal) + "hosts_file = [\"/a\"]\n",
                 "test.toml:3:14: expected a string for \"hosts_file\", got array\n");
}
