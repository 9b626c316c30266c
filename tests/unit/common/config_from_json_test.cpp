// json_to_toml(): a config as to_json() shows it (GET /api/v1/config), written back as TOML for
// the loader (PUT /api/v1/config). The round trip load -> to_json -> json_to_toml -> load ->
// to_json must give the same JSON for every shipped config and for configs using every key.
#include <doctest.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "common/config/from_json.hpp"
#include "common/config/load.hpp"
#include "common/config/to_json.hpp"
#include "tests/unit/test_files.hpp"

using namespace proxyd::config;
using nlohmann::json;

namespace {

using proxyd::testing::repo_file;
using proxyd::testing::slurp;
using proxyd::testing::tls_data;

// A temporary directory holding a config and the files it names, removed at the end.
struct ConfigDir : proxyd::testing::TempDir {
    explicit ConfigDir(const std::string& parent = "/tmp")
        : proxyd::testing::TempDir("proxyd-config-json", parent) {}
};

std::string errors_of(const LoadResult& result) {
    std::string out;
    for (const ConfigError& e : result.errors) out += e.format() + "\n";
    return out;
}

// A config that must load; a leading newline (after R"( ) is dropped.
Config valid(std::string_view text, const std::string& source_name = "test.toml") {
    if (!text.empty() && text.front() == '\n') text.remove_prefix(1);
    LoadResult result = load_string(text, source_name);
    INFO(errors_of(result));
    REQUIRE(result.config.has_value());
    return std::move(*result.config);
}

// json_to_toml() of `config`, which must succeed.
std::string toml_of(const json& config) {
    std::string error;
    const auto text = json_to_toml(config, error);
    INFO(error);
    REQUIRE(text.has_value());
    CHECK(error.empty());
    return *text;
}

// What the loader says about the TOML made from `config` (one message per line, no places: they
// point into the generated text).
std::string load_messages(const json& config) {
    const LoadResult result = load_string(toml_of(config), "put.toml");
    CHECK_FALSE(result.config.has_value());
    std::string out;
    for (const ConfigError& e : result.errors) out += e.message + "\n";
    return out;
}

// load -> to_json -> json_to_toml -> load -> to_json gives the first JSON again. The second load
// uses the first's file name, as PUT /api/v1/config does. Returns the TOML text.
std::string check_round_trip(const Config& config) {
    const json first = to_json(config);
    const std::string text = toml_of(first);
    INFO("TOML:\n" << text);
    const LoadResult again = load_string(text, config.file);
    INFO(errors_of(again));
    REQUIRE(again.config.has_value());
    CHECK(to_json(*again.config).dump(2) == first.dump(2));
    return text;
}

// The examples name files their scripts/try-* make in /tmp/proxyd-NAME/ (secrets, tokens,
// certificates): the same files are made in `dir` from test data, and the config points there.
std::string with_demo_files(const std::string& text, ConfigDir& dir) {
    static const std::regex kRef(R"(/tmp/proxyd-[a-z]+/([\w.]+))");
    std::map<std::string, std::string> stand_ins;  // certificate stem -> test data stem
    for (std::sregex_iterator it(text.begin(), text.end(), kRef), end; it != end; ++it) {
        const std::filesystem::path name = (*it)[1].str();
        const std::string ext = name.extension().string();
        if (ext == ".secret" || ext == ".token") {
            dir.write(name.string(), "a-secret-or-token-of-32-chars-ok\n");
        } else if (ext == ".crt" || ext == ".key") {
            const std::string stem = name.stem().string();
            if (!stand_ins.contains(stem))
                stand_ins[stem] = stand_ins.empty() ? "a.test" : "b.test";
            REQUIRE_MESSAGE(stand_ins.size() <= 2, "only two test certificates: " << stem);
            dir.write(name.string(), slurp(tls_data(stand_ins[stem] + ext)));
        }  // anything else (a socket, a pid or state file) is only a path
    }
    return std::regex_replace(text, std::regex("/tmp/proxyd-[a-z]+/"), dir.path + "/");
}

std::vector<std::string> shipped_configs() {
    std::vector<std::string> files;
    for (const auto& entry : std::filesystem::directory_iterator(repo_file("conf/examples"))) {
        if (entry.path().extension() == ".toml") files.push_back(entry.path().string());
    }
    std::sort(files.begin(), files.end());
    files.insert(files.begin(), repo_file("conf/proxyd.toml"));
    return files;
}

constexpr std::string_view kMinimal = R"(
[server]
listen = ["127.0.0.1:8080"]
)";

// Every key of every section. Files named relative to the config are made by full_config_dir().
constexpr std::string_view kFull = R"(
[server]
listen = ["127.0.0.1:8080", "[::1]:8081"]
workers = 3
control_socket = "/tmp/p.sock"
pid_file = "/tmp/p.pid"
state_file = "state.json"
user = "root"
group = "root"
max_connections = 500
shutdown_timeout = "0s"
real_ip_header = "X-Forwarded-For"
trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8", "::1"]
hosts_file = "/etc/hosts"
proxy_protocol = true

[server.timeouts]
header = "1s"
body = "2s"
keepalive = "3s"
upstream_connect = "250ms"
upstream_response = "4s"
upstream_idle = "2m"
tunnel_idle = "2h"
min_rate_grace = "1500ms"

[server.limits]
max_header_size = "32KiB"
max_body_size = 1048576
max_uri_size = "1KiB"
min_request_rate = 0

[server.response_headers]
X-Frame-Options = "DENY"
X-Quoted = "say \"hi\" \\ 'there' \u2014 \u00fcn\u00efcode\ttab"

[upstreams.api]
balance = "weighted_least_conn"
keepalive = 0
resolve_interval = "10s"
slow_start = "30s"
servers = [
  { address = "127.0.0.1:3001", id = "api-1", weight = 100, max_connections = 50 },
  { address = "[::1]:3002", backup = true },
  { address = "api.internal:8443", id = "api-tls", tls = true, sni = "api.example.com", verify = false, ca_file = "ca.crt" },
  { address = "127.0.0.1:3003", tls = true, drain = true },
]
sticky = { cookie = "srv" }

[upstreams.api.health_check]
path = "/healthz?full=1"
interval = "2s"
timeout = "500ms"
healthy_threshold = 3
unhealthy_threshold = 5
expected_status = [200, 204]
method = "head"

[upstreams.api.retry]
attempts = 0

[upstreams.hashed]
balance = "consistent_hash"
hash_key = "header:X-User"
servers = [{ address = "127.0.0.1:4001" }, { address = "127.0.0.1:4002", weight = 2 }]

[upstreams."web.v2"]
servers = [{ address = "127.0.0.1:5001" }]

[[routes]]
name = "api"
path = "/api/*"
host = "API.Example.com"
methods = ["get", "POST"]
upstream = "api"
strip_prefix = true
websocket_balance = "least_conn"
sse_balance = "ip_hash"
auth_required = true
roles = ["admin", "ops"]
rate_limit = "per_user"
cors = { allowed_origins = ["https://App.example.com", "https://*.example.com"], allowed_methods = ["GET", "put"], allowed_headers = ["Authorization"], expose_headers = ["X-Total"], allow_credentials = true, max_age = "10m" }

[[routes]]
path_exact = "/status"
host = "*.example.com"
upstream = "hashed"
roles = ["viewer"]
auth_required = false
cors = { allowed_origins = ["*"] }

[[routes]]
path = "/"
upstream = "web.v2"
rate_limit = "by_key"

[tls]
listen = ["127.0.0.1:8443"]
certificates = [
  { cert = "a.test.crt", key = "a.test.key" },
  { cert = "b.test.crt", key = "b.test.key" },
]
alpn = ["h2", "http/1.1"]
session_tickets = false
session_ticket_rotation = "30m"
hsts = "max-age=31536000; includeSubDomains"
min_version = "1.3"
ciphers = "ECDHE+AESGCM:!aNULL"
watch = true

[auth.jwt]
algorithms = ["HS256", "RS256"]
keys = [ { kid = "old", secret_file = "jwt.secret" }, { public_key_file = "rsa.pub.pem" } ]
issuer = "https://auth.test"
audience = "proxyd"
leeway = "30s"
roles_claim = "groups"
forward_claims = { sub = "X-User-Id", "https://example.com/tenant" = "X-Tenant" }
cache_entries = 0

[rate_limits.per_ip]
key = "ip"
requests_per_minute = 60
burst = 5

[rate_limits.per_user]
key = "jwt:sub"
requests_per_minute = 600
burst = 20
store = "redis"
redis = "127.0.0.1:6379"
on_redis_error = "deny"
redis_timeout = "100ms"

[rate_limits.by_key]
key = "header:X-Api-Key"
requests_per_minute = 1

[metrics]
listen = "127.0.0.1:9100"
path = "/prom"

[admin]
listen = "127.0.0.1:9200"
token_file = "admin.token"

[log]
level = "debug"
format = "text"
error_log = "/tmp/err.log"
access_log = "-"
)";

// A directory with the files kFull names.
void make_full_config_files(ConfigDir& dir) {
    for (const char* name : {"a.test.crt", "a.test.key", "b.test.crt", "b.test.key", "ca.crt"}) {
        dir.copy_tls(name);
    }
    dir.write("rsa.pub.pem", slurp(repo_file("tests/data/jwt/rsa.pub.pem")));
    dir.write("jwt.secret", "an-hmac-secret-of-32-characters!\n");
    dir.write("admin.token", "an-admin-token-of-32-characters!\n");
}

}  // namespace

TEST_CASE("json_to_toml: every shipped config round-trips") {
    const std::vector<std::string> files = shipped_configs();
    CHECK(files.size() >= 3);  // conf/proxyd.toml and the examples
    for (const std::string& file : files) {
        CAPTURE(file);
        ConfigDir dir;
        const std::string text = with_demo_files(slurp(file), dir);
        const std::string name = std::filesystem::path(file).filename().string();
        check_round_trip(valid(text, dir.path + "/" + name));
    }
}

TEST_CASE("json_to_toml: a config using every key round-trips") {
    ConfigDir dir;
    make_full_config_files(dir);
    const Config config = valid(kFull, dir.path + "/proxyd.toml");
    const std::string text = check_round_trip(config);
    // Arrays of objects come out as arrays of tables, which the loader reads as written.
    CHECK(text.find("[[routes]]") != std::string::npos);
    CHECK(text.find("[[upstreams.api.servers]]") != std::string::npos);
    CHECK(text.find("[upstreams.\"web.v2\"]") != std::string::npos);
    // What to_json() shows of it, where the round trip needed care.
    const json j = to_json(config);
    CHECK(j["upstreams"]["hashed"]["hash_key"] == "header:x-user");
    CHECK_FALSE(j["upstreams"]["api"].contains("hash_key"));  // refused with least_conn
    CHECK(j["routes"][1]["auth_required"] == false);          // roles alone would mean true
    CHECK_FALSE(j["routes"][2].contains("auth_required"));
    CHECK(j["upstreams"]["api"]["servers"][3]["drain"] == true);
    CHECK(j["server"]["state_file"] == dir.path + "/state.json");
    CHECK(j["tls"]["certificates"][0]["key"] == dir.path + "/a.test.key");
}

TEST_CASE("json_to_toml: defaults round-trip, and upstreams without hash_key") {
    check_round_trip(valid(kMinimal));
    const Config config = valid(std::string(kMinimal) + R"(
[upstreams.app]
servers = [{ address = "127.0.0.1:3000" }]
[upstreams.by_ip]
balance = "consistent_hash"
servers = [{ address = "127.0.0.1:3001" }]
[[routes]]
path = "/"
upstream = "app"
)");
    check_round_trip(config);
    const json j = to_json(config);
    CHECK_FALSE(j["upstreams"]["app"].contains("hash_key"));
    CHECK(j["upstreams"]["by_ip"]["hash_key"] == "ip");
}

TEST_CASE("json_to_toml: files of a config named by a relative path are shown absolute") {
    // A relative config path resolves relative file names to relative paths; loading those
    // again would resolve them a second time ("conf/conf/a.test.crt"). Made in the current
    // directory so that the relative path has no "..", which would hide that.
    ConfigDir dir(std::filesystem::current_path().string());
    dir.copy_tls("a.test.crt");
    dir.copy_tls("a.test.key");
    dir.write("admin.token", "an-admin-token-of-32-characters!\n");
    const std::string relative =
        std::filesystem::path(dir.path).lexically_relative(std::filesystem::current_path());
    REQUIRE_FALSE((relative.starts_with("/") || relative.starts_with("..")));
    const Config config = valid(std::string(kMinimal) + R"(
[tls]
listen = ["127.0.0.1:8443"]
certificates = [{ cert = "a.test.crt", key = "a.test.key" }]
[admin]
listen = "127.0.0.1:9200"
token_file = "admin.token"
)",
                                relative + "/proxyd.toml");
    CHECK(config.tls.certificates[0].cert_file == relative + "/a.test.crt");
    const json j = to_json(config);
    CHECK(j["tls"]["certificates"][0]["cert"] == dir.path + "/a.test.crt");
    CHECK(j["admin"]["token_file"] == dir.path + "/admin.token");
    check_round_trip(config);
}

TEST_CASE("json_to_toml: a Redis password is shown as its file, never its text") {
    ConfigDir dir;
    const std::string password = dir.write("redis.pass", "redis-password\n");
    const Config config = valid(std::string(kMinimal) + R"(
[rate_limits.shared]
requests_per_minute = 60
store = "redis"
redis = "127.0.0.1:6379"
redis_password_file = "redis.pass"
)",
                                dir.path + "/proxyd.toml");
    const json j = to_json(config);
    CHECK(j["rate_limits"]["shared"]["redis_password_file"] == password);
    CHECK(j.dump().find("redis-password") == std::string::npos);
    // As shown, it loads back to the same config, password read from the file again.
    const LoadResult again = load_string(toml_of(j), config.file);
    INFO(errors_of(again));
    REQUIRE(again.config.has_value());
    CHECK(again.config->rate_limits[0].redis_password == "redis-password");
    CHECK(to_json(*again.config) == to_json(config));
}

TEST_CASE("json_to_toml: null has no TOML form; the error names the key") {
    const json base = to_json(valid(kMinimal));
    std::string error;
    json j = base;
    j["server"]["workers"] = nullptr;
    CHECK_FALSE(json_to_toml(j, error).has_value());
    CHECK(error == "config.server.workers: null is not a TOML value");

    j = base;
    j["server"]["listen"].push_back(nullptr);
    CHECK_FALSE(json_to_toml(j, error).has_value());
    CHECK(error == "config.server.listen[1]: null is not a TOML value");

    j = base;
    j["routes"] = json::array({{{"path", "/"}, {"upstream", nullptr}}});
    CHECK_FALSE(json_to_toml(j, error).has_value());
    CHECK(error == "config.routes[0].upstream: null is not a TOML value");

    j = base;
    j["server"]["response_headers"]["X Odd.Name"] = nullptr;
    CHECK_FALSE(json_to_toml(j, error).has_value());
    CHECK(error == "config.server.response_headers.\"X Odd.Name\": null is not a TOML value");
}

TEST_CASE("json_to_toml: a value of the wrong type gets the loader's usual error") {
    const json base = to_json(valid(kMinimal));
    json j = base;
    j["server"]["workers"] = true;
    CHECK(load_messages(j) == "expected an integer or \"auto\" for \"workers\", got boolean\n");
    j = base;
    j["server"]["listen"] = "127.0.0.1:8080";
    CHECK(load_messages(j) == "expected an array of strings for \"listen\", got string\n");
    j = base;
    j["server"]["max_connections"] = 1.5;
    CHECK(load_messages(j) == "expected an integer for \"max_connections\", got float\n");
    j = base;
    j["server"]["timeouts"]["header"] = 10;
    CHECK(load_messages(j).starts_with("\"header\": "));
    j = base;
    j["server"]["lisen"] = json::array({"127.0.0.1:8081"});
    CHECK(load_messages(j).starts_with("unknown key \"lisen\" in [server]"));
    j = base;
    j["routes"] = json::object({{"path", "/"}});
    CHECK(load_messages(j).starts_with("expected an array of tables for \"routes\", got table"));
}

TEST_CASE("json_to_toml: what has no TOML form is refused") {
    std::string error;
    CHECK_FALSE(json_to_toml(json::array(), error).has_value());
    CHECK(error == "config: expected a JSON object, got array");

    const json big = {{"server", {{"max_connections", std::numeric_limits<std::uint64_t>::max()}}}};
    CHECK_FALSE(json_to_toml(big, error).has_value());
    CHECK(error ==
          "config.server.max_connections: 18446744073709551615 is too large for a TOML "
          "integer");

    const json nan = {{"x", std::numeric_limits<double>::quiet_NaN()}};
    CHECK_FALSE(json_to_toml(nan, error).has_value());
    CHECK(error == "config.x: not a finite number");

    // toml++ 3.3 would write these keys bare, which is not TOML (or another key).
    for (const char* key : {"X-It's", "a\nb", "'quoted'"}) {
        CAPTURE(key);
        const json odd = {{"server", {{"response_headers", {{key, "v"}}}}}};
        CHECK_FALSE(json_to_toml(odd, error).has_value());
        CHECK(error.starts_with("config.server.response_headers."));
        CHECK(error.ends_with(": a key with a tab, line break or \"'\" cannot be written as TOML"));
    }

    json deep = 1;
    for (int i = 0; i < 100; ++i) deep = json::object({{"a", deep}});
    CHECK_FALSE(json_to_toml(deep, error).has_value());
    CHECK(error.ends_with(": nested deeper than any config"));
}

TEST_CASE("json_to_toml: strings and keys that need quoting come back unchanged") {
    const std::string tricky = "\nleading break, \"double\" 'single' ''' \"\"\" \\ tab\t\r\n\x01 é";
    const json j = {{"s", tricky},
                    {"t", {{"a b'", 1}, {"", 2}, {"é", 3}, {"x.y", 4}, {"tab\t here", 5}}},
                    {"list", json::array({1, "two", 3.5, false, json::object({{"k", "v"}})})},
                    {"tables", json::array({{{"k", 1}}, {{"k", 2}}})},
                    {"empty", json::object()},
                    {"none", json::array()}};
    const std::string text = toml_of(j);
    INFO(text);
    const toml::table back = toml::parse(text);
    CHECK(back["s"].value<std::string>() == tricky);
    CHECK(back["t"]["a b'"].value<std::int64_t>() == 1);
    CHECK(back["t"][""].value<std::int64_t>() == 2);
    CHECK(back["t"]["é"].value<std::int64_t>() == 3);
    CHECK(back["t"]["x.y"].value<std::int64_t>() == 4);
    CHECK(back["t"]["tab\t here"].value<std::int64_t>() == 5);
    CHECK(back["list"][2].value<double>() == 3.5);
    CHECK(back["list"][4]["k"].value<std::string>() == "v");
    CHECK(back["tables"].is_array_of_tables());
    CHECK(back["tables"][1]["k"].value<std::int64_t>() == 2);
    CHECK(back["empty"].is_table());
    CHECK(back["none"].is_array());
}
