#include "worker/router.hpp"

#include <doctest.h>

using namespace proxyd;
using worker::host_matches;
using worker::match_route;
using worker::path_matches_prefix;

namespace {

config::Route route(std::string path, std::string upstream, std::string host = "",
                    std::vector<std::string> methods = {}, bool exact = false) {
    config::Route r;
    r.path = std::move(path);
    r.upstream = std::move(upstream);
    r.host = std::move(host);
    r.methods = std::move(methods);
    r.exact = exact;
    return r;
}

}  // namespace

TEST_CASE("path prefix matches whole segments only") {
    CHECK(path_matches_prefix("/api", "/api"));
    CHECK(path_matches_prefix("/api/", "/api"));
    CHECK(path_matches_prefix("/api/x/y", "/api"));
    CHECK_FALSE(path_matches_prefix("/apix", "/api"));
    CHECK_FALSE(path_matches_prefix("/ap", "/api"));
    CHECK(path_matches_prefix("/anything", ""));
    CHECK(path_matches_prefix("/", ""));
}

TEST_CASE("host patterns: exact, wildcard, port and case ignored") {
    CHECK(host_matches("api.example.com", "api.example.com"));
    CHECK(host_matches("API.Example.com:8080", "api.example.com"));
    CHECK(host_matches("api.example.com.", "api.example.com"));
    CHECK_FALSE(host_matches("www.example.com", "api.example.com"));
    CHECK(host_matches("a.example.com", "*.example.com"));
    CHECK(host_matches("a.b.example.com:443", "*.example.com"));
    CHECK_FALSE(host_matches("example.com", "*.example.com"));
    CHECK_FALSE(host_matches("badexample.com", "*.example.com"));
    CHECK(host_matches("[::1]:8080", "[::1]"));
}

TEST_CASE("first matching route wins, in file order") {
    std::vector<config::Route> routes = {
        route("/api", "api", "", {"GET", "POST"}),
        route("/api", "api-other"),
        route("/exact", "exact", "", {}, true),
        route("", "site", "*.example.com"),
        route("", "fallback"),
    };
    auto* r = match_route(routes, "x", "GET", "/api/users");
    REQUIRE(r);
    CHECK(r->upstream == "api");
    r = match_route(routes, "x", "DELETE", "/api/users");
    REQUIRE(r);
    CHECK(r->upstream == "api-other");
    r = match_route(routes, "x", "GET", "/exact");
    REQUIRE(r);
    CHECK(r->upstream == "exact");
    r = match_route(routes, "x", "GET", "/exact/more");
    REQUIRE(r);
    CHECK(r->upstream == "fallback");
    r = match_route(routes, "www.example.com", "GET", "/exact/more");
    REQUIRE(r);
    CHECK(r->upstream == "site");
}

TEST_CASE("no route matches -> nullptr") {
    std::vector<config::Route> routes = {route("/api", "api", "api.example.com")};
    CHECK(match_route(routes, "other.example.com", "GET", "/api") == nullptr);
    CHECK(match_route(routes, "api.example.com", "GET", "/apix") == nullptr);
    CHECK(match_route({}, "h", "GET", "/") == nullptr);
}

TEST_CASE("strip_prefix leaves a leading slash") {
    auto r = route("/api", "api");
    r.strip_prefix = true;
    CHECK(worker::upstream_path(r, "/api/x/y") == "/x/y");
    CHECK(worker::upstream_path(r, "/api") == "/");
    CHECK(worker::upstream_path(r, "/api/") == "/");
    r.strip_prefix = false;
    CHECK(worker::upstream_path(r, "/api/x") == "/api/x");
}
