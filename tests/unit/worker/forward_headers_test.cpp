#include "worker/forward_headers.hpp"

#include <doctest.h>

#include <string>

using namespace proxyd;
using worker::Framing;

namespace {

http::Request parse(const std::string& text) {
    http::Request request;
    REQUIRE(http::parse_request(text.data(), text.size(), {}, request) == http::ParseStatus::Done);
    return request;
}

http::Response parse_response(const std::string& text, bool head = false) {
    http::Response response;
    REQUIRE(http::parse_response(text.data(), text.size(), 65536, head, response) ==
            http::ParseStatus::Done);
    return response;
}

bool has_line(const std::string& head, const std::string& line) {
    return head.find("\r\n" + line + "\r\n") != std::string::npos;
}

bool has_name(const std::string& head, const std::string& name) {
    return head.find("\r\n" + name + ":") != std::string::npos;
}

}  // namespace

TEST_CASE("upstream head: forwarding headers added, hop-by-hop removed") {
    std::string text =
        "POST /api/x?q=1 HTTP/1.1\r\nHost: example.com:8080\r\nConnection: keep-alive, X-Hop\r\n"
        "X-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n"
        "Trailer: X-T\r\nUpgrade: h2c\r\nProxy-Authorization: Basic abc\r\n"
        "X-Forwarded-For: 192.0.2.1\r\nX-Request-Id: client-id\r\nX-Real-IP: 6.6.6.6\r\n"
        "Expect: 100-continue\r\nContent-Length: 5\r\nAccept: */*\r\n\r\n";
    auto request = parse(text);
    worker::UpstreamRequestInfo info;
    info.path = "/x";
    info.query = "q=1";
    info.client_ip = "127.0.0.1";
    info.real_ip = "127.0.0.1";
    info.request_id = "client-id";
    info.framing = Framing::ContentLength;
    info.content_length = 5;
    std::string head;
    worker::build_upstream_request_head(request, info, head);

    CHECK(head.rfind("POST /x?q=1 HTTP/1.1\r\n", 0) == 0);
    CHECK(has_line(head, "Host: example.com:8080"));
    CHECK(has_line(head, "X-Forwarded-For: 192.0.2.1, 127.0.0.1"));
    CHECK(has_line(head, "X-Forwarded-Proto: http"));
    CHECK(has_line(head, "X-Forwarded-Host: example.com:8080"));
    CHECK(has_line(head, "X-Real-IP: 127.0.0.1"));
    CHECK(has_line(head, "X-Request-Id: client-id"));
    CHECK(has_line(head, "Content-Length: 5"));
    CHECK(has_line(head, "Accept: */*"));
    for (const char* name : {"Connection", "X-Hop", "Keep-Alive", "Proxy-Connection", "TE",
                             "Trailer", "Upgrade", "Proxy-Authorization", "Expect"}) {
        CHECK_MESSAGE(!has_name(head, name), name);
    }
    CHECK(head.find("6.6.6.6") == std::string::npos);
    CHECK(head.size() > 4);
    CHECK(head.substr(head.size() - 4) == "\r\n\r\n");
}

TEST_CASE("upstream head: chunked body re-framed, HTTP/1.0 without Host gets one") {
    const std::string text = "GET / HTTP/1.0\r\nAccept: */*\r\n\r\n";  // views point into it
    auto request = parse(text);
    worker::UpstreamRequestInfo info;
    info.path = "/";
    info.client_ip = "127.0.0.1";
    info.real_ip = "127.0.0.1";
    info.request_id = "id";
    info.default_host = "127.0.0.1:3000";
    std::string head;
    worker::build_upstream_request_head(request, info, head);
    CHECK(head.rfind("GET / HTTP/1.1\r\n", 0) == 0);
    CHECK(has_line(head, "Host: 127.0.0.1:3000"));
    CHECK_FALSE(has_name(head, "X-Forwarded-Host"));

    const std::string chunked_text =
        "PUT /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    auto chunked = parse(chunked_text);
    info.framing = Framing::Chunked;
    head.clear();
    worker::build_upstream_request_head(chunked, info, head);
    CHECK(has_line(head, "Transfer-Encoding: chunked"));
    CHECK_FALSE(has_name(head, "Content-Length"));
}

TEST_CASE("client head: hop-by-hop removed, request id and configured headers added") {
    const std::string text =
        "HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
        "Transfer-Encoding: chunked\r\nX-Content-Type-Options: from-upstream\r\nX-Keep: "
        "yes\r\n\r\n";
    auto response = parse_response(text);
    worker::HeaderList extra = {{"X-Content-Type-Options", "nosniff"}};
    worker::ClientResponseInfo info;
    info.keep_alive = true;
    info.request_id = "rid";
    info.extra_headers = &extra;
    bool keep_alive = true;
    info.framing = worker::choose_client_framing(response, 1, keep_alive);
    CHECK(info.framing == Framing::Chunked);
    CHECK(keep_alive);
    std::string head;
    worker::build_client_response_head(response, info, head);
    CHECK(head.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(has_line(head, "X-Keep: yes"));
    CHECK(has_line(head, "X-Content-Type-Options: nosniff"));
    CHECK(head.find("from-upstream") == std::string::npos);
    CHECK(has_line(head, "X-Request-Id: rid"));
    CHECK(has_line(head, "Transfer-Encoding: chunked"));
    CHECK_FALSE(has_name(head, "X-Hop"));
    CHECK_FALSE(has_name(head, "Keep-Alive"));
    CHECK_FALSE(has_name(head, "Connection"));
}

TEST_CASE("client framing: HTTP/1.0 clients get close-delimited bodies") {
    auto response = parse_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    bool keep_alive = true;
    CHECK(worker::choose_client_framing(response, 0, keep_alive) == Framing::UntilClose);
    CHECK_FALSE(keep_alive);
    auto sized = parse_response("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n");
    keep_alive = true;
    CHECK(worker::choose_client_framing(sized, 0, keep_alive) == Framing::ContentLength);
    CHECK(keep_alive);
}

TEST_CASE("HEAD response keeps the representation's Content-Length") {
    const std::string text = "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n";
    auto response = parse_response(text, true);
    worker::ClientResponseInfo info;
    info.request_id = "r";
    bool keep_alive = true;
    info.framing = worker::choose_client_framing(response, 1, keep_alive);
    CHECK(info.framing == Framing::None);
    std::string head;
    worker::build_client_response_head(response, info, head);
    CHECK(has_line(head, "Content-Length: 1234"));
}

TEST_CASE("error response: JSON body with the request id, close when asked") {
    worker::ClientResponseInfo info;
    info.request_id = "abc";
    info.keep_alive = false;
    std::string out;
    worker::build_error_response(404, "", info, out);
    CHECK(out.rfind("HTTP/1.1 404 Not Found\r\n", 0) == 0);
    CHECK(has_line(out, "Content-Type: application/json"));
    CHECK(has_line(out, "Connection: close"));
    CHECK(has_line(out, "X-Request-Id: abc"));
    auto body_at = out.find("\r\n\r\n") + 4;
    std::string body = out.substr(body_at);
    CHECK(body == "{\"error\": \"no route\", \"request_id\": \"abc\"}\n");
    CHECK(has_line(out, "Content-Length: " + std::to_string(body.size())));

    out.clear();
    worker::build_error_response(400, "bad \"quote\"", info, out);
    CHECK(out.find(R"({"error": "bad request: bad \"quote\"")") != std::string::npos);
}

TEST_CASE("upstream head: underscore spellings of proxy-set headers and claim headers dropped") {
    // The parsed views point into `text`: it must outlive `request`.
    const std::string text =
        "GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 6.6.6.6\r\nx_real_ip: 6.6.6.6\r\n"
        "X-User-Id: forged\r\nX_User_Id: forged\r\nX-Other_Name: kept\r\n\r\n";
    auto request = parse(text);
    const std::vector<std::string> removed{"x-user-id"};
    worker::UpstreamRequestInfo info;
    info.path = "/";
    info.client_ip = info.real_ip = "127.0.0.1";
    info.request_id = "id";
    info.removed_headers = &removed;
    info.extra_lines = "X-User-Id: alice\r\n";
    std::string head;
    worker::build_upstream_request_head(request, info, head);
    CHECK(head.find("6.6.6.6") == std::string::npos);
    CHECK(head.find("forged") == std::string::npos);
    CHECK(has_line(head, "X-User-Id: alice"));
    CHECK(has_line(head, "X-Other_Name: kept"));
    CHECK(has_line(head, "X-Forwarded-For: 127.0.0.1"));
}

TEST_CASE("client head: access lines added, upstream CORS headers replaced") {
    const std::string text =
        "HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\nContent-Length: 0\r\n\r\n";
    auto response = parse_response(text);
    worker::ClientResponseInfo info;
    info.framing = Framing::ContentLength;
    info.request_id = "id";
    info.extra_lines = "Access-Control-Allow-Origin: https://a.example\r\nRateLimit-Limit: 5\r\n";
    info.replace_cors = true;
    std::string head;
    worker::build_client_response_head(response, info, head);
    CHECK_FALSE(has_line(head, "Access-Control-Allow-Origin: *"));
    CHECK(has_line(head, "Access-Control-Allow-Origin: https://a.example"));
    CHECK(has_line(head, "RateLimit-Limit: 5"));
    std::string bodiless;
    worker::build_bodiless_response(204, info, bodiless);
    CHECK(bodiless.rfind("HTTP/1.1 204 No Content\r\n", 0) == 0);
    CHECK_FALSE(has_name(bodiless, "Content-Length"));
    CHECK(has_line(bodiless, "RateLimit-Limit: 5"));
}

TEST_CASE("websocket handshake: recognised only as RFC 6455 describes it") {
    const std::string handshake =
        "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    CHECK(worker::wants_websocket(parse(handshake)));
    CHECK(worker::wants_websocket(parse(
        "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: upgrade\r\n\r\n")));
    // Not one: another protocol, no Connection: Upgrade, not GET, HTTP/1.0.
    CHECK_FALSE(worker::wants_websocket(
        parse("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")));
    CHECK_FALSE(
        worker::wants_websocket(parse("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n")));
    CHECK_FALSE(worker::wants_websocket(parse(
        "POST / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Content-Length: 0\r\n\r\n")));
    CHECK_FALSE(worker::wants_websocket(
        parse("GET / HTTP/1.0\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")));
}

TEST_CASE("websocket handshake: Upgrade and Connection kept both ways, other hop-by-hop dropped") {
    const std::string text =
        "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade, X-Hop\r\n"
        "X-Hop: 1\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n";
    auto request = parse(text);
    worker::UpstreamRequestInfo info;
    info.path = "/chat";
    info.client_ip = info.real_ip = "127.0.0.1";
    info.request_id = "id";
    info.upgrade = "websocket";
    std::string head;
    worker::build_upstream_request_head(request, info, head);
    CHECK(has_line(head, "Upgrade: websocket"));
    CHECK(has_line(head, "Connection: Upgrade"));
    CHECK(has_line(head, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="));
    CHECK_FALSE(has_name(head, "X-Hop"));
    CHECK(head.find("Upgrade:") == head.rfind("Upgrade:"));  // once

    const std::string switching =  // kept: the parsed response points into it
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    auto response = parse_response(switching);
    CHECK(response.status == 101);
    worker::ClientResponseInfo client;
    client.framing = Framing::None;
    client.request_id = "id";
    client.upgrade = "websocket";
    std::string out;
    worker::build_client_response_head(response, client, out);
    CHECK(out.rfind("HTTP/1.1 101 Switching Protocols\r\n", 0) == 0);
    CHECK(has_line(out, "Upgrade: websocket"));
    CHECK(has_line(out, "Connection: Upgrade"));
    CHECK(has_line(out, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    CHECK(has_line(out, "X-Request-Id: id"));
    CHECK_FALSE(has_name(out, "Content-Length"));
    CHECK_FALSE(has_name(out, "Transfer-Encoding"));
    CHECK(out.find("Connection:") == out.rfind("Connection:"));
}

namespace {

std::string field(const worker::FieldList& fields, const std::string& name) {
    std::string values;
    for (const auto& f : fields) {
        if (f.name != name) continue;
        if (!values.empty()) values += "|";
        values += f.value;
    }
    return values;
}

}  // namespace

TEST_CASE("HTTP/2 response fields: the HTTP/1.1 head's filtering, without framing fields") {
    // The response's views point into the text: it must outlive them.
    const std::string text =
        "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n"
        "X-Hop: 1\r\nTransfer-Encoding: chunked\r\nTrailer: grpc-status\r\nUpgrade: h2c\r\n"
        "X-Request-Id: upstream-id\r\nAccess-Control-Allow-Origin: *\r\nX-Frame: DENY\r\n"
        "Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n";
    auto response = parse_response(text);
    worker::HeaderList extra{{"X-Frame", "SAMEORIGIN"}};
    worker::ClientResponseInfo info;
    info.request_id = "rid";
    info.extra_headers = &extra;
    info.extra_lines = "Access-Control-Allow-Origin: https://a.test\r\nVary: Origin\r\n";
    info.replace_cors = true;
    info.set_cookie = "srv=abc; Path=/";
    worker::FieldList fields;
    worker::build_client_response_fields(response, info, fields);
    for (const char* gone : {"Connection", "Keep-Alive", "X-Hop", "Transfer-Encoding", "Trailer",
                             "Upgrade", "content-length"}) {
        CHECK_MESSAGE(field(fields, gone).empty(), gone);
    }
    CHECK(field(fields, "x-request-id") == "rid");
    CHECK(field(fields, "X-Frame") == "SAMEORIGIN");
    CHECK(field(fields, "Access-Control-Allow-Origin") == "https://a.test");
    CHECK(field(fields, "Vary") == "Origin");
    CHECK(field(fields, "Set-Cookie") == "a=1|b=2");
    CHECK(field(fields, "set-cookie") == "srv=abc; Path=/");

    SUBCASE("a known length is kept") {
        const std::string sized_text = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
        auto sized = parse_response(sized_text);
        worker::build_client_response_fields(sized, {}, fields);
        CHECK(field(fields, "Content-Length") == "3");
        const std::string head_text = "HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n";
        auto head = parse_response(head_text, true);
        worker::build_client_response_fields(head, {}, fields);
        CHECK(field(fields, "Content-Length") == "30");
    }
}

TEST_CASE("HTTP/2 error and bodiless fields") {
    worker::ClientResponseInfo info;
    info.request_id = "rid";
    info.extra_lines = "Retry-After: 3\r\n";
    std::string body;
    worker::build_error_body(429, "slow down", info.request_id, body);
    CHECK(body == "{\"error\": \"rate limited: slow down\", \"request_id\": \"rid\"}\n");
    worker::FieldList fields;
    worker::build_error_fields(info, body.size(), fields);
    CHECK(field(fields, "content-type") == "application/json");
    CHECK(field(fields, "content-length") == std::to_string(body.size()));
    CHECK(field(fields, "Retry-After") == "3");
    CHECK(field(fields, "x-request-id") == "rid");
    worker::build_bodiless_fields(204, info, fields);
    CHECK(field(fields, "content-length").empty());
    worker::build_bodiless_fields(200, info, fields);
    CHECK(field(fields, "content-length") == "0");
}
