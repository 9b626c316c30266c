// The access sections of the config: [auth.jwt], [rate_limits.NAME], routes' auth_required,
// roles, rate_limit and cors, and the server's proxy_protocol and slow-client keys.
#include <doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "common/config/load.hpp"

using namespace proxyd::config;
using namespace std::chrono_literals;

namespace {

// A temporary directory holding the config and the files it names, removed at the end.
struct ConfigDir {
    ConfigDir() {
        char pattern[] = "/tmp/proxyd-config-XXXXXX";
        path = ::mkdtemp(pattern);
    }
    ~ConfigDir() { std::system(("rm -rf '" + path + "'").c_str()); }
    std::string write(const std::string& name, const std::string& content) {
        std::ofstream(path + "/" + name) << content;
        return path + "/" + name;
    }
    LoadResult load(std::string text) {
        if (!text.empty() && text.front() == '\n') text.erase(0, 1);
        return load_string(text, path + "/test.toml");
    }
    std::string errors(std::string text) {
        std::string out;
        for (const ConfigError& e : load(std::move(text)).errors) {
            out +=
                e.format().substr(path.size() + 1 + std::string_view("test.toml:").size()) + "\n";
        }
        return out;
    }
    std::string path;
};

std::string repo_file(const std::string& relative) {
    return std::string(PROXYD_SOURCE_DIR) + "/" + relative;
}

constexpr std::string_view kBase = R"(
[server]
listen = ["127.0.0.1:8080"]
[upstreams.app]
servers = [{ address = "127.0.0.1:1" }]
)";

}  // namespace

TEST_CASE("auth.jwt: keys are read relative to the config, trailing newline trimmed") {
    ConfigDir dir;
    dir.write("jwt.secret", "s3cret\n");
    const auto result = dir.load(std::string(kBase) + R"(
[auth.jwt]
algorithms = ["hs256", "RS256"]
keys = [ { kid = "old", secret_file = "jwt.secret" },
         { kid = "new", public_key_file = ")" +
                                 repo_file("tests/data/jwt/rsa.pub.pem") + R"(" } ]
issuer = "https://auth.test"
audience = "proxyd"
leeway = "30s"
roles_claim = "groups"
forward_claims = { sub = "X-User-Id", groups = "X-User-Roles" }
cache_entries = 5
[[routes]]
path = "/"
upstream = "app"
roles = ["admin"]
)");
    INFO(result.errors.size());
    REQUIRE(result.config.has_value());
    const auto& jwt = result.config->jwt;
    CHECK(jwt.enabled);
    CHECK(jwt.algorithms == std::vector<std::string>{"HS256", "RS256"});
    REQUIRE(jwt.keys.size() == 2);
    CHECK(jwt.keys[0].kind == JwtKey::Kind::Secret);
    CHECK(jwt.keys[0].kid == "old");
    CHECK(jwt.keys[0].material == "s3cret");
    CHECK(jwt.keys[1].kind == JwtKey::Kind::PublicKey);
    CHECK(jwt.keys[1].material.starts_with("-----BEGIN PUBLIC KEY-----"));
    CHECK(jwt.issuer == "https://auth.test");
    CHECK(jwt.audience == "proxyd");
    CHECK(jwt.leeway == 30s);
    CHECK(jwt.roles_claim == "groups");
    REQUIRE(jwt.forward_claims.size() == 2);
    CHECK(jwt.cache_entries == 5);
    // roles without auth_required implies it
    CHECK(result.config->routes[0].auth_required);
    CHECK(result.config->routes[0].roles == std::vector<std::string>{"admin"});
}

TEST_CASE("auth.jwt: none is refused, unknown algorithms get a suggestion, keys must fit") {
    ConfigDir dir;
    dir.write("jwt.secret", "topsecret-value");
    dir.write("empty", "\n");
    const std::string errors = dir.errors(std::string(kBase) + R"(
[auth.jwt]
algorithms = ["none", "RS265", "HS256"]
keys = [ { secret_file = "jwt.secret" }, { public_key_file = "jwt.secret" },
         { secret_file = "missing" }, { secret_file = "empty" }, { kid = "x" } ]
)");
    INFO(errors);
    CHECK(errors.find("7:15: algorithm \"none\" is never accepted") != std::string::npos);
    CHECK(errors.find("7:23: unknown JWT algorithm \"RS265\"; did you mean \"RS256\"?") !=
          std::string::npos);
    CHECK(errors.find("is not a PEM public key") != std::string::npos);
    CHECK(errors.find("cannot read \"secret_file\"") != std::string::npos);
    CHECK(errors.find("No such file or directory") != std::string::npos);
    CHECK(errors.find("the file is empty") != std::string::npos);
    CHECK(errors.find("a JWT key needs \"secret_file\"") != std::string::npos);
    // A secret never shows in a message.
    CHECK(errors.find("topsecret") == std::string::npos);
}

TEST_CASE("auth.jwt: a route needing a token without [auth.jwt] is an error") {
    ConfigDir dir;
    CHECK(dir.errors(std::string(kBase) + R"(
[[routes]]
path = "/"
upstream = "app"
auth_required = true
)") == "6:1: route has auth_required (or roles) but there is no [auth.jwt] table\n");
}

TEST_CASE("rate_limits: parsed, sorted by name, and resolved from routes") {
    ConfigDir dir;
    dir.write("redis.pass", "hunter2\n");
    const auto result = dir.load(std::string(kBase) + R"(
[rate_limits.per_ip]
key = "ip"
requests_per_minute = 600
burst = 50
[rate_limits.by_key]
key = "header:X-Api-Key"
requests_per_minute = 60
store = "redis"
redis = "127.0.0.1:6379"
redis_password_file = "redis.pass"
on_redis_error = "deny"
redis_timeout = "100ms"
[[routes]]
path = "/"
upstream = "app"
rate_limit = "per_ip"
)");
    REQUIRE(result.config.has_value());
    const auto& limits = result.config->rate_limits;
    REQUIRE(limits.size() == 2);
    CHECK(limits[0].name == "by_key");
    CHECK(limits[0].key == RateLimit::KeyKind::Header);
    CHECK(limits[0].key_name == "x-api-key");
    CHECK(limits[0].store == RateLimit::Store::Redis);
    CHECK(limits[0].redis.text == "127.0.0.1:6379");
    CHECK(limits[0].redis_password == "hunter2");
    CHECK_FALSE(limits[0].redis_error_allow);
    CHECK(limits[0].redis_timeout == 100ms);
    CHECK(limits[0].burst == 1);
    CHECK(limits[1].name == "per_ip");
    CHECK(limits[1].requests_per_minute == 600);
    CHECK(limits[1].burst == 50);
    CHECK(limits[1].store == RateLimit::Store::Local);
    CHECK(result.config->routes[0].rate_limit_index == 1);
}

TEST_CASE("rate_limits: every mistake is reported at its place") {
    ConfigDir dir;
    CHECK(dir.errors(std::string(kBase) + R"(
[rate_limits.a]
key = "cookie:x"
requests_per_minute = 0
store = "memcached"
[rate_limits.b]
requests_per_minute = 10
store = "redis"
[rate_limits.c]
key = "jwt:sub"
requests_per_minute = 10
redis = "127.0.0.1:1"
[[routes]]
path = "/"
upstream = "app"
rate_limit = "aa"
)") == "7:7: rate limit \"key\" must be one of \"ip\", \"header:NAME\", \"jwt:CLAIM\", got "
       "\"cookie:x\"\n"
       "8:23: \"requests_per_minute\" must be between 1 and 1000000, got 0\n"
       "9:9: unknown store \"memcached\"; expected one of: local, redis\n"
       "10:1: missing required key \"redis\" in a [rate_limits] table with store = \"redis\"\n"
       "13:1: [rate_limits.c] is keyed by a JWT claim but there is no [auth.jwt] table\n"
       "16:9: \"redis\" is only used with store = \"redis\"\n"
       "20:14: route rate_limit \"aa\" is not defined; did you mean \"a\"? (add a "
       "[rate_limits.aa] table)\n");
}

TEST_CASE("routes: cors is read with defaults; bad origins are errors") {
    ConfigDir dir;
    const auto result = dir.load(std::string(kBase) + R"(
[[routes]]
path = "/"
upstream = "app"
cors = { allowed_origins = ["https://App.example.com", "https://*.example.org"], max_age = "10m", allow_credentials = true, allowed_headers = ["Content-Type"], expose_headers = ["X-Request-Id"] }
)");
    REQUIRE(result.config.has_value());
    const auto& cors = result.config->routes[0].cors;
    CHECK(cors.enabled);
    CHECK(cors.allowed_origins ==
          std::vector<std::string>{"https://app.example.com", "https://*.example.org"});
    CHECK(cors.allowed_methods == std::vector<std::string>{"GET", "HEAD", "POST"});
    CHECK(cors.allowed_headers == std::vector<std::string>{"Content-Type"});
    CHECK(cors.expose_headers == std::vector<std::string>{"X-Request-Id"});
    CHECK(cors.allow_credentials);
    CHECK(cors.max_age == 600s);

    const std::string errors = dir.errors(std::string(kBase) + R"(
[[routes]]
path = "/"
upstream = "app"
cors = { allowed_origins = ["example.com", "https://a.com/x", "https://a*.com"], allowed_methods = ["GE T"] }
)");
    CHECK(errors.find("CORS origin \"example.com\" must be \"*\" or scheme://host") !=
          std::string::npos);
    CHECK(errors.find("\"https://a.com/x\" must not have a path") != std::string::npos);
    CHECK(errors.find("\"https://a*.com\" has an invalid host") != std::string::npos);
    CHECK(errors.find("\"allowed_methods\": \"GE T\" is not a valid name") != std::string::npos);
}

TEST_CASE("server: proxy_protocol and the slow-client rule") {
    ConfigDir dir;
    const auto result = dir.load(R"(
[server]
listen = ["127.0.0.1:8080"]
proxy_protocol = true
[server.timeouts]
min_rate_grace = "3s"
[server.limits]
min_request_rate = "1KiB"
)");
    REQUIRE(result.config.has_value());
    CHECK(result.config->server.proxy_protocol);
    CHECK(result.config->server.timeouts.min_rate_grace == 3s);
    CHECK(result.config->server.limits.min_request_rate == 1024);
    const auto off = dir.load(
        "[server]\nlisten = [\"127.0.0.1:1\"]\n[server.limits]\n"
        "min_request_rate = 0\n");
    REQUIRE(off.config.has_value());
    CHECK(off.config->server.limits.min_request_rate == 0);
}
