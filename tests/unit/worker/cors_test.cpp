#include "worker/cors.hpp"

#include <doctest.h>

#include <string>

using namespace proxyd;
using worker::CorsRequest;

namespace {

config::Cors make_cors(std::vector<std::string> origins) {
    config::Cors cors;
    cors.enabled = true;
    cors.allowed_origins = std::move(origins);
    return cors;
}

// Whether `lines` ("Name: value\r\n"...) holds `line` / a line named `name`.
bool has_line(const std::string& lines, std::string_view line) {
    std::string_view rest = lines;
    while (!rest.empty()) {
        auto end = rest.find("\r\n");
        if (end == std::string_view::npos) return false;
        if (rest.substr(0, end) == line) return true;
        rest.remove_prefix(end + 2);
    }
    return false;
}

bool has_name(const std::string& lines, std::string_view name) {
    std::string_view rest = lines;
    while (!rest.empty()) {
        auto end = rest.find("\r\n");
        std::string_view line = rest.substr(0, end);
        if (line.size() > name.size() && line.substr(0, name.size()) == name &&
            line[name.size()] == ':')
            return true;
        if (end == std::string_view::npos) return false;
        rest.remove_prefix(end + 2);
    }
    return false;
}

CorsRequest preflight(std::string_view origin, std::string_view method = "POST",
                      std::string_view headers = "") {
    return CorsRequest{"OPTIONS", origin, method, headers};
}

}  // namespace

TEST_CASE("cors: is_preflight needs OPTIONS, Origin and Access-Control-Request-Method") {
    CHECK(worker::is_preflight({"OPTIONS", "https://a.com", "GET", ""}));
    CHECK(worker::is_preflight({"OPTIONS", "https://a.com", "PUT", "x-token"}));
    CHECK_FALSE(worker::is_preflight({"OPTIONS", "", "GET", ""}));
    CHECK_FALSE(worker::is_preflight({"OPTIONS", "https://a.com", "", ""}));
    CHECK_FALSE(worker::is_preflight({"GET", "https://a.com", "GET", ""}));
    CHECK_FALSE(worker::is_preflight({"options", "https://a.com", "GET", ""}));  // case-sensitive
}

TEST_CASE("cors: exact origins match case-insensitively on scheme and host, same port") {
    auto cors = make_cors({"https://app.example.com", "http://localhost:3000"});
    CHECK(worker::origin_allowed(cors, "https://app.example.com"));
    CHECK(worker::origin_allowed(cors, "HTTPS://App.Example.COM"));
    CHECK(worker::origin_allowed(cors, "https://app.example.com:443"));  // default port
    CHECK(worker::origin_allowed(cors, "http://localhost:3000"));
    CHECK_FALSE(worker::origin_allowed(cors, "http://localhost"));
    CHECK_FALSE(worker::origin_allowed(cors, "http://localhost:3001"));
    CHECK_FALSE(worker::origin_allowed(cors, "http://app.example.com"));
    CHECK_FALSE(worker::origin_allowed(cors, "https://app.example.com:8443"));
    CHECK_FALSE(worker::origin_allowed(cors, "https://app.example.com.evil.com"));
    CHECK_FALSE(worker::origin_allowed(cors, "https://evilapp.example.com"));
    CHECK_FALSE(worker::origin_allowed(cors, "https://example.com"));
    CHECK_FALSE(worker::origin_allowed(cors, ""));
    CHECK_FALSE(worker::origin_allowed(cors, "null"));
}

TEST_CASE("cors: malformed origins are never allowed, not even by \"*\"") {
    auto exact = make_cors({"https://app.example.com"});
    auto any = make_cors({"*"});
    for (const char* bad : {"https://app.example.com/",
                            "https://app.example.com/path",
                            "app.example.com",
                            "https://",
                            "://app.example.com",
                            "https://user@app.example.com",
                            "https://app.example.com:",
                            "https://app.example.com:123456",
                            "https://app.example.com:80a",
                            "https://app example.com",
                            "https://app.example.com\r",
                            "https://app.example.com\r\nSet-Cookie: x=1",
                            "https://app..example.com",
                            "https://.app.example.com",
                            "https://app.example.com.",
                            "1https://a.com",
                            "https://a.com?x",
                            "https://a.com#x",
                            "https://[::1",
                            "https://[zz]"}) {
        CHECK_MESSAGE(!worker::origin_allowed(exact, bad), std::string(bad));
        CHECK_MESSAGE(!worker::origin_allowed(any, bad), std::string(bad));
    }
    CHECK(worker::origin_allowed(any, "http://[::1]:8080"));
    CHECK(worker::origin_allowed(any, "http://127.0.0.1:8080"));
}

TEST_CASE("cors: wildcard pattern matches one or more labels, same scheme and port") {
    auto cors = make_cors({"https://*.example.com", "http://*.dev.test:8080"});
    CHECK(worker::origin_allowed(cors, "https://a.example.com"));
    CHECK(worker::origin_allowed(cors, "https://a.b.example.com"));
    CHECK(worker::origin_allowed(cors, "https://A-1.Example.Com"));
    CHECK(worker::origin_allowed(cors, "https://a.example.com:443"));
    CHECK_FALSE(worker::origin_allowed(cors, "https://example.com"));
    CHECK_FALSE(worker::origin_allowed(cors, "https://.example.com"));
    CHECK_FALSE(worker::origin_allowed(cors, "https://a..example.com"));
    CHECK_FALSE(worker::origin_allowed(cors, "https://evil-example.com"));
    CHECK_FALSE(worker::origin_allowed(cors, "https://evilexample.com"));
    CHECK_FALSE(worker::origin_allowed(cors, "https://a.example.com.evil.com"));
    CHECK_FALSE(worker::origin_allowed(cors, "https://a.example.co"));
    CHECK_FALSE(worker::origin_allowed(cors, "http://a.example.com"));
    CHECK_FALSE(worker::origin_allowed(cors, "https://a.example.com:8443"));
    CHECK(worker::origin_allowed(cors, "http://x.dev.test:8080"));
    CHECK_FALSE(worker::origin_allowed(cors, "http://x.dev.test"));
    CHECK_FALSE(worker::origin_allowed(cors, "http://x.dev.test:8081"));
    CHECK_FALSE(worker::origin_allowed(cors, "http://dev.test:8080"));
}

TEST_CASE("cors: \"*\" allows any origin; \"null\" only without credentials or when listed") {
    auto any = make_cors({"*"});
    CHECK(worker::origin_allowed(any, "https://whatever.test"));
    CHECK(worker::origin_allowed(any, "null"));
    any.allow_credentials = true;
    CHECK(worker::origin_allowed(any, "https://whatever.test"));
    CHECK_FALSE(worker::origin_allowed(any, "null"));
    auto listed = make_cors({"null"});
    listed.allow_credentials = true;
    CHECK(worker::origin_allowed(listed, "null"));
    CHECK_FALSE(worker::origin_allowed(listed, "https://a.test"));
}

TEST_CASE("cors: actual response echoes the origin with credentials, Vary and Expose-Headers") {
    auto cors = make_cors({"https://app.example.com"});
    cors.allow_credentials = true;
    cors.expose_headers = {"X-Request-Id", "X-Total"};
    std::string out = "Existing: 1\r\n";
    REQUIRE(worker::append_actual_headers(cors, "https://app.example.com", out));
    CHECK(out.rfind("Existing: 1\r\n", 0) == 0);
    CHECK(has_line(out, "Access-Control-Allow-Origin: https://app.example.com"));
    CHECK(has_line(out, "Access-Control-Allow-Credentials: true"));
    CHECK(has_line(out, "Vary: Origin"));
    CHECK(has_line(out, "Access-Control-Expose-Headers: X-Request-Id, X-Total"));
    CHECK_FALSE(has_name(out, "Access-Control-Allow-Methods"));
    CHECK_FALSE(has_name(out, "Access-Control-Max-Age"));
    CHECK(out.substr(out.size() - 2) == "\r\n");
    CHECK(worker::varies_by_origin(cors));
}

TEST_CASE("cors: actual response from a disallowed or missing origin gets nothing") {
    auto cors = make_cors({"https://app.example.com"});
    std::string out = "keep";
    CHECK_FALSE(worker::append_actual_headers(cors, "https://evil.example.com", out));
    CHECK_FALSE(worker::append_actual_headers(cors, "", out));
    CHECK(out == "keep");
    cors.enabled = false;
    CHECK_FALSE(worker::append_actual_headers(cors, "https://app.example.com", out));
    CHECK(out == "keep");
    CHECK_FALSE(worker::varies_by_origin(cors));
}

TEST_CASE("cors: \"*\" without credentials answers a literal *, without Vary") {
    auto cors = make_cors({"*"});
    std::string out;
    REQUIRE(worker::append_actual_headers(cors, "https://x.test", out));
    CHECK(has_line(out, "Access-Control-Allow-Origin: *"));
    CHECK_FALSE(has_name(out, "Vary"));
    CHECK_FALSE(has_name(out, "Access-Control-Allow-Credentials"));
    CHECK_FALSE(has_name(out, "Access-Control-Expose-Headers"));
    CHECK_FALSE(worker::varies_by_origin(cors));
}

TEST_CASE("cors: never \"*\" with credentials, and a list echoes even without them") {
    auto star_creds = make_cors({"*"});
    star_creds.allow_credentials = true;
    std::string out;
    REQUIRE(worker::append_actual_headers(star_creds, "https://x.test", out));
    CHECK(has_line(out, "Access-Control-Allow-Origin: https://x.test"));
    CHECK(has_line(out, "Access-Control-Allow-Credentials: true"));
    CHECK(has_line(out, "Vary: Origin"));

    auto list = make_cors({"https://a.test", "*"});
    out.clear();
    REQUIRE(worker::append_actual_headers(list, "https://b.test", out));
    CHECK(has_line(out, "Access-Control-Allow-Origin: https://b.test"));
    CHECK(has_line(out, "Vary: Origin"));
    CHECK_FALSE(has_name(out, "Access-Control-Allow-Credentials"));
}

TEST_CASE("cors: preflight from an allowed origin lists methods, headers and max age") {
    auto cors = make_cors({"https://app.example.com", "https://*.example.org"});
    cors.allowed_methods = {"GET", "POST"};
    cors.allowed_headers = {"Content-Type", "X-Token"};
    cors.allow_credentials = true;
    cors.max_age = std::chrono::minutes(10);
    cors.expose_headers = {"X-Request-Id"};
    std::string out;
    REQUIRE(worker::append_preflight_headers(
        cors, preflight("https://app.example.com", "POST", "content-type, x-token"), out));
    CHECK(has_line(out, "Access-Control-Allow-Origin: https://app.example.com"));
    CHECK(has_line(out, "Vary: Origin"));
    CHECK(has_line(out, "Access-Control-Allow-Credentials: true"));
    CHECK(has_line(out, "Access-Control-Allow-Methods: GET, POST"));
    CHECK(has_line(out, "Access-Control-Allow-Headers: Content-Type, X-Token"));
    CHECK(has_line(out, "Access-Control-Max-Age: 600"));
    CHECK_FALSE(has_name(out, "Access-Control-Expose-Headers"));  // actual responses only

    out.clear();
    REQUIRE(
        worker::append_preflight_headers(cors, preflight("https://a.b.example.org", "GET"), out));
    CHECK(has_line(out, "Access-Control-Allow-Origin: https://a.b.example.org"));
    // the configured list goes out even when nothing was requested
    CHECK(has_line(out, "Access-Control-Allow-Headers: Content-Type, X-Token"));
}

TEST_CASE("cors: preflight refused for a disallowed origin or method, appending nothing") {
    auto cors = make_cors({"https://app.example.com", "https://*.example.org"});
    cors.allowed_methods = {"GET", "POST"};
    std::string out = "keep";
    CHECK_FALSE(worker::append_preflight_headers(cors, preflight("https://evil.com"), out));
    CHECK_FALSE(worker::append_preflight_headers(cors, preflight("https://example.org"), out));
    CHECK_FALSE(worker::append_preflight_headers(cors, preflight("https://evil-example.org"), out));
    CHECK_FALSE(worker::append_preflight_headers(
        cors, preflight("https://app.example.com", "DELETE"), out));
    CHECK_FALSE(
        worker::append_preflight_headers(cors, preflight("https://app.example.com", "post"), out));
    CHECK_FALSE(worker::append_preflight_headers(cors, preflight(""), out));
    CHECK(out == "keep");
    cors.enabled = false;
    CHECK_FALSE(worker::append_preflight_headers(cors, preflight("https://app.example.com"), out));
    CHECK(out == "keep");
}

TEST_CASE("cors: preflight echoes requested headers when the list is empty, validated") {
    auto cors = make_cors({"*"});
    cors.allowed_methods = {"GET", "PUT"};
    std::string out;
    REQUIRE(worker::append_preflight_headers(
        cors, preflight("https://a.test", "PUT", "x-token,content-type ,\tx-b"), out));
    CHECK(has_line(out, "Access-Control-Allow-Origin: *"));
    CHECK(has_line(out, "Access-Control-Allow-Headers: x-token, content-type, x-b"));
    CHECK(has_line(out, "Vary: Access-Control-Request-Headers"));
    CHECK(has_line(out, "Access-Control-Allow-Methods: GET, PUT"));
    CHECK_FALSE(has_name(out, "Access-Control-Max-Age"));

    for (const char* bad :
         {"x-a,,x-b", "x-a,", ",x-a", "x a", "x-a;b", "x-a\r\nSet-Cookie: 1", "x-a, (b)", " , "}) {
        out = "keep";
        CHECK_MESSAGE(
            !worker::append_preflight_headers(cors, preflight("https://a.test", "GET", bad), out),
            bad);
        CHECK(out == "keep");
    }

    // nothing requested: no Allow-Headers, no extra Vary
    out.clear();
    REQUIRE(worker::append_preflight_headers(cors, preflight("https://a.test", "GET"), out));
    CHECK_FALSE(has_name(out, "Access-Control-Allow-Headers"));
    CHECK_FALSE(has_name(out, "Vary"));

    // echoing and origin-dependent: one Vary line with both
    cors.allow_credentials = true;
    out.clear();
    REQUIRE(worker::append_preflight_headers(cors, preflight("https://a.test", "GET", "x-a"), out));
    CHECK(has_line(out, "Vary: Origin, Access-Control-Request-Headers"));
    CHECK(has_line(out, "Access-Control-Allow-Origin: https://a.test"));
}

TEST_CASE("cors: max age in whole seconds, omitted below one second") {
    auto cors = make_cors({"*"});
    cors.max_age = std::chrono::milliseconds(1500);
    std::string out;
    REQUIRE(worker::append_preflight_headers(cors, preflight("https://a.test"), out));
    CHECK(has_line(out, "Access-Control-Max-Age: 1"));
    cors.max_age = std::chrono::milliseconds(999);
    out.clear();
    REQUIRE(worker::append_preflight_headers(cors, preflight("https://a.test"), out));
    CHECK_FALSE(has_name(out, "Access-Control-Max-Age"));
    cors.max_age = std::chrono::hours(24);
    out.clear();
    REQUIRE(worker::append_preflight_headers(cors, preflight("https://a.test"), out));
    CHECK(has_line(out, "Access-Control-Max-Age: 86400"));
}
