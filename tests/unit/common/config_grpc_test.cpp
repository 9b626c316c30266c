// Upstream `protocol` (http1 | h2c | h2) and route `protocol = "grpc"`: what loads, what is
// refused with its FILE:LINE:COLUMN, and how GET /api/v1/config shows them.
#include <doctest.h>

#include <string>

#include "common/config/load.hpp"
#include "common/config/to_json.hpp"
#include "tests/unit/common/config_text.hpp"

using namespace proxyd::config;

namespace {

LoadResult load(std::string_view text) {
    return proxyd::testing::load_text(text);
}
Config valid(std::string_view text) {
    return proxyd::testing::valid_config(text);
}
using proxyd::testing::errors_of;

}  // namespace

TEST_CASE("upstream protocol: http1 by default, h2c and h2 read") {
    const Config config = valid(R"(
[server]
listen = ["127.0.0.1:8080"]
[upstreams.a]
servers = [{ address = "127.0.0.1:1" }]
[upstreams.b]
protocol = "h2c"
servers = [{ address = "127.0.0.1:2" }]
[upstreams.c]
protocol = "h2"
servers = [{ address = "127.0.0.1:3", tls = true, verify = false }]
[[routes]]
path = "/b"
upstream = "b"
protocol = "grpc"
[[routes]]
path = "/c"
upstream = "c"
protocol = "grpc"
[[routes]]
path = "/"
upstream = "a"
protocol = "http"
)");
    REQUIRE(config.upstreams.size() == 3);
    CHECK(config.upstreams[0].protocol == UpstreamProtocol::Http1);
    CHECK(config.upstreams[1].protocol == UpstreamProtocol::H2c);
    CHECK(config.upstreams[2].protocol == UpstreamProtocol::H2);
    REQUIRE(config.routes.size() == 3);
    CHECK(config.routes[0].grpc);
    CHECK(config.routes[1].grpc);
    CHECK_FALSE(config.routes[2].grpc);

    const auto json = to_json(config);
    CHECK(json["upstreams"]["a"]["protocol"] == "http1");
    CHECK(json["upstreams"]["b"]["protocol"] == "h2c");
    CHECK(json["upstreams"]["c"]["protocol"] == "h2");
    CHECK(json["routes"][0]["protocol"] == "grpc");
    CHECK_FALSE(json["routes"][2].contains("protocol"));
}

TEST_CASE("protocol errors: unknown values, TLS mismatches, gRPC on HTTP/1.1, health checks") {
    const LoadResult result = load(R"(
[server]
listen = ["127.0.0.1:8080"]
[upstreams.plain]
servers = [{ address = "127.0.0.1:1" }]
[upstreams.h2]
protocol = "h2"
servers = [{ address = "127.0.0.1:2" }, { address = "127.0.0.1:3", tls = true }]
[upstreams.h2c]
protocol = "h2c"
servers = [{ address = "127.0.0.1:4", tls = true, id = "t" }]
[upstreams.h2c.health_check]
path = "/"
[upstreams.odd]
protocol = "http2"
servers = [{ address = "127.0.0.1:5" }]
[[routes]]
path = "/g"
upstream = "plain"
protocol = "grpc"
[[routes]]
path = "/x"
upstream = "plain"
protocol = "grcp"
)");
    CHECK_FALSE(result.config.has_value());
    CHECK(errors_of(result) ==
          "test.toml:7:24: server \"127.0.0.1:2\" of [upstreams.h2] needs tls = true for "
          "protocol = \"h2\" (HTTP/2 over TLS); use protocol = \"h2c\" for plain HTTP/2\n"
          "test.toml:10:56: server \"t\" of [upstreams.h2c] has tls = true but protocol = "
          "\"h2c\" is plain HTTP/2; use protocol = \"h2\"\n"
          "test.toml:11:1: health_check is not supported with protocol = \"h2c\" yet (checks "
          "speak HTTP/1.1); failed requests still mark a server down\n"
          "test.toml:14:12: unknown protocol \"http2\"; expected one of: http1, h2c, h2\n"
          "test.toml:19:12: route protocol \"grpc\" needs an HTTP/2 upstream, but "
          "[upstreams.plain] speaks HTTP/1.1; set protocol = \"h2c\" (or \"h2\" over TLS) there\n"
          "test.toml:23:12: unknown protocol \"grcp\"; expected one of: http, grpc\n");
}
