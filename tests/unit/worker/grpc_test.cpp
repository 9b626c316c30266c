// gRPC helpers (worker/grpc.hpp) and the request fields sent to an HTTP/2 upstream
// (build_upstream_h2_fields in worker/forward_headers.hpp).
#include "worker/grpc.hpp"

#include <doctest.h>

#include <string>

#include "worker/forward_headers.hpp"

using namespace proxyd;
using namespace std::chrono_literals;
namespace grpc = proxyd::worker::grpc;

TEST_CASE("grpc-timeout: every unit, rounding, malformed values") {
    CHECK(grpc::parse_timeout("1H") == std::chrono::microseconds(3'600'000'000));
    CHECK(grpc::parse_timeout("2M") == std::chrono::microseconds(120'000'000));
    CHECK(grpc::parse_timeout("5S") == std::chrono::microseconds(5'000'000));
    CHECK(grpc::parse_timeout("100m") == std::chrono::microseconds(100'000));
    CHECK(grpc::parse_timeout("250u") == std::chrono::microseconds(250));
    CHECK(grpc::parse_timeout("1500n") == std::chrono::microseconds(2));  // rounded up
    CHECK(grpc::parse_timeout("0m") == std::chrono::microseconds(0));
    CHECK(grpc::parse_timeout("99999999H") ==
          std::chrono::microseconds(99'999'999ULL * 3'600'000'000ULL));
    for (const char* bad :
         {"", "m", "100", "100x", "-1S", "1.5S", "123456789m", " 1S", "1 S", "1s", "1h"}) {
        CAPTURE(bad);
        CHECK_FALSE(grpc::parse_timeout(bad).has_value());
    }
}

TEST_CASE("grpc-timeout forwarded: the shortest unit within 8 digits, rounded up") {
    CHECK(grpc::format_timeout(1500us) == "1500u");
    CHECK(grpc::format_timeout(0us) == "1u");
    CHECK(grpc::format_timeout(std::chrono::microseconds(-5)) == "1u");
    CHECK(grpc::format_timeout(100'000'000us) == "100000m");
    CHECK(grpc::format_timeout(std::chrono::microseconds(100'000'001)) == "100001m");
    CHECK(grpc::format_timeout(std::chrono::hours(100'000)) == "6000000M");
    for (auto us : {1us, 999us, 12'345'678us, 987'654'321'000us}) {
        const auto back = grpc::parse_timeout(grpc::format_timeout(us));
        REQUIRE(back.has_value());
        CHECK(*back >= us);
    }
}

TEST_CASE("proxy errors become gRPC statuses (http-grpc-status-mapping, refined)") {
    CHECK(grpc::code_for_http_status(401) == grpc::kUnauthenticated);
    CHECK(grpc::code_for_http_status(403) == grpc::kPermissionDenied);
    CHECK(grpc::code_for_http_status(404) == grpc::kUnimplemented);
    CHECK(grpc::code_for_http_status(429) == grpc::kResourceExhausted);
    CHECK(grpc::code_for_http_status(413) == grpc::kResourceExhausted);
    CHECK(grpc::code_for_http_status(502) == grpc::kUnavailable);
    CHECK(grpc::code_for_http_status(503) == grpc::kUnavailable);
    CHECK(grpc::code_for_http_status(504) == grpc::kDeadlineExceeded);
    CHECK(grpc::code_for_http_status(400) == grpc::kInternal);
    CHECK(grpc::code_for_http_status(408) == grpc::kInternal);
    CHECK(grpc::code_for_http_status(500) == grpc::kInternal);
}

TEST_CASE("grpc-message is percent-encoded") {
    std::string out;
    grpc::append_percent_encoded(out, "no server: 100% down\n\xc3\xa9");
    CHECK(out == "no server: 100%25 down%0A%C3%A9");
}

TEST_CASE("HTTP/2 upstream fields: forwarding rules of HTTP/1.1, te: trailers kept") {
    const std::string text =
        "POST /svc/Method HTTP/1.1\r\nHost: api.example.com\r\nConnection: keep-alive, X-Hop\r\n"
        "X-Hop: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: h2c\r\n"
        "Proxy-Authorization: Basic abc\r\nX-Forwarded-For: 192.0.2.1\r\nX-Request-Id: spoof\r\n"
        "Content-Type: application/grpc\r\ngrpc-timeout: 5S\r\nX-User-Id: forged\r\n"
        "Content-Length: 5\r\n\r\n";
    http::Request request;
    REQUIRE(http::parse_request(text.data(), text.size(), {}, request) == http::ParseStatus::Done);
    const std::vector<std::string> removed{"x-user-id"};
    worker::UpstreamRequestInfo info;
    info.client_ip = "127.0.0.1";
    info.real_ip = "10.0.0.1";
    info.request_id = "rid-1";
    info.traceparent = "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01";
    info.proto = "https";
    info.removed_headers = &removed;
    info.extra_lines = "X-User-Id: alice\r\nX-User-Roles: admin, ops\r\n";
    info.framing = worker::Framing::ContentLength;
    info.content_length = 5;
    std::vector<worker::h2::Header> fields;
    std::string authority;
    worker::build_upstream_h2_fields(request, info, fields, authority);

    CHECK(authority == "api.example.com");
    std::string all;
    for (const auto& f : fields) all += f.name + ": " + f.value + "\n";
    CHECK(all ==
          "Content-Type: application/grpc\n"
          "grpc-timeout: 5S\n"
          "te: trailers\n"
          "x-forwarded-for: 192.0.2.1, 127.0.0.1\n"
          "x-forwarded-proto: https\n"
          "x-forwarded-host: api.example.com\n"
          "x-real-ip: 10.0.0.1\n"
          "x-request-id: rid-1\n"
          "traceparent: 00-0123456789abcdef0123456789abcdef-0123456789abcdef-01\n"
          "X-User-Id: alice\n"
          "X-User-Roles: admin, ops\n"
          "content-length: 5\n");
}

TEST_CASE(
    "HTTP/2 upstream fields: no Host (HTTP/1.0) takes the default authority; TE other "
    "than trailers is dropped") {
    const std::string text = "GET / HTTP/1.0\r\nTE: gzip\r\n\r\n";
    http::Request request;
    REQUIRE(http::parse_request(text.data(), text.size(), {}, request) == http::ParseStatus::Done);
    worker::UpstreamRequestInfo info;
    info.client_ip = "127.0.0.1";
    info.default_host = "127.0.0.1:9000";
    std::vector<worker::h2::Header> fields;
    std::string authority;
    worker::build_upstream_h2_fields(request, info, fields, authority);
    CHECK(authority == "127.0.0.1:9000");
    for (const auto& f : fields) {
        CHECK(f.name != "te");
        CHECK(f.name != "x-forwarded-host");
    }
}
