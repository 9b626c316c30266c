#include <doctest.h>

#include <string>
#include <string_view>

#include "common/http/parser.hpp"

using namespace proxyd::http;
using namespace std::string_literals;

namespace {

constexpr std::size_t kMaxHead = 16 * 1024;

// The views in a Response point into the input: keep the last input alive for the checks.
ParseStatus parse(std::string raw, Response& r, bool head = false,
                  std::size_t max_head = kMaxHead) {
    static std::string kept;
    kept = std::move(raw);
    return parse_response(kept.data(), kept.size(), max_head, head, r);
}

// "HTTP/1.1 <status> X\r\n" + headers + "\r\n".
std::string response(std::string_view headers, int status = 200,
                     std::string_view version = "HTTP/1.1") {
    return std::string(version) + " " + std::to_string(status) + " X\r\n" + std::string(headers) +
           "\r\n";
}

struct Framing {
    ParseStatus status;
    BodyKind body;
    std::uint64_t content_length;
    bool keep_alive;
};

Framing framing(std::string raw, bool head = false) {
    Response r;
    const ParseStatus st = parse(std::move(raw), r, head);
    return {st, r.body, r.content_length, r.keep_alive};
}

std::string error_of(std::string raw, std::size_t max_head = kMaxHead) {
    Response r;
    if (parse(std::move(raw), r, false, max_head) != ParseStatus::Error) return "<no error>";
    return r.error_reason;
}

}  // namespace

TEST_SUITE("response_parser") {
    TEST_CASE("simple response fills every field") {
        const std::string raw =
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n";
        const std::string with_body = raw + "hello";
        Response r;
        REQUIRE(parse(with_body, r) == ParseStatus::Done);
        CHECK(r.status == 200);
        CHECK(r.reason == "OK");
        CHECK(r.version_minor == 1);
        REQUIRE(r.header_count == 2);
        CHECK(r.headers[0].name == "Content-Type");
        CHECK(r.headers[0].value == "text/plain");
        CHECK(r.body == BodyKind::ContentLength);
        CHECK(r.content_length == 5);
        CHECK(r.keep_alive);
        CHECK(r.head_length == raw.size());  // the body is not part of the head
        CHECK(std::string_view(r.error_reason).empty());
    }

    TEST_CASE("every strict prefix is Incomplete") {
        const std::string raw =
            "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: gzip, chunked\r\nX: y\r\n\r\n";
        for (std::size_t n = 0; n < raw.size(); ++n) {
            CAPTURE(n);
            Response r;
            CHECK(parse(raw.substr(0, n), r) == ParseStatus::Incomplete);
        }
        Response r;
        REQUIRE(parse(raw, r) == ParseStatus::Done);
        CHECK(r.head_length == raw.size());
        CHECK(r.status == 404);
        CHECK(r.reason == "Not Found");
        CHECK(r.body == BodyKind::Chunked);
    }

    TEST_CASE("status line variants") {
        Response r;
        REQUIRE(parse("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", r) == ParseStatus::Done);
        CHECK(r.status == 200);
        CHECK(r.reason.empty());
        REQUIRE(parse("HTTP/1.1 204 \r\n\r\n", r) == ParseStatus::Done);
        CHECK(r.status == 204);
        CHECK(r.reason.empty());
        REQUIRE(parse("HTTP/1.0 999 Very \tOdd \xc3\xa9\r\n\r\n", r) == ParseStatus::Done);
        CHECK(r.status == 999);
        CHECK(r.reason == "Very \tOdd \xc3\xa9");
        CHECK(r.version_minor == 0);
        REQUIRE(parse("HTTP/1.1 100 Continue\r\n\r\n", r) == ParseStatus::Done);
        CHECK(r.status == 100);
    }

    TEST_CASE("malformed status lines are errors") {
        for (const char* line :
             {"HTTP/1.1 99 X", "HTTP/1.1 099 X", "HTTP/1.1 1000 X", "HTTP/1.1 2x0 X",
              "HTTP/1.1  200 X", "HTTP/1.1 20 X", "HTTP/1.1 200X", "HTTP/1.1 200 a\x01z",
              "HTTP/1.1 200 a\x7fz", "HTTP/2.0 200 X", "HTTP/1.2 200 X", "HTTP/0.9 200 X",
              "http/1.1 200 X", "HTTP/1.1\t200 X", "ICY 200 OK", "HTTP/1.1 200 OK\n"}) {
            CAPTURE(line);
            Response r;
            CHECK(parse(line + "\r\n\r\n"s, r) == ParseStatus::Error);
            CHECK_FALSE(std::string_view(r.error_reason).empty());
        }
        CHECK(error_of("HTTP/2.0 200 OK\r\n\r\n") == "unsupported HTTP version");
        CHECK(error_of("HTTP/1.1 20x OK\r\n\r\n") == "invalid status code");
        CHECK(error_of("HTTP/1.1 200 OK\nX: y\r\n\r\n") == "bare LF");
        CHECK(error_of("HTTP/1.1 200 OK\rX: y\r\n\r\n") == "bare CR");
    }

    TEST_CASE("no body for HEAD, 1xx, 204, 304 whatever the headers say") {
        const std::string cl = "Content-Length: 10\r\n";
        const std::string te = "Transfer-Encoding: chunked\r\n";
        CHECK(framing(response(cl), true).body == BodyKind::None);
        CHECK(framing(response(te), true).body == BodyKind::None);
        CHECK(framing(response(""), true).body == BodyKind::None);
        CHECK(framing(response(""), true).keep_alive);
        for (int status : {100, 101, 103, 199, 204, 304}) {
            CAPTURE(status);
            const Framing f = framing(response(cl, status));
            CHECK(f.status == ParseStatus::Done);
            CHECK(f.body == BodyKind::None);
            CHECK(f.content_length == 0);
            CHECK(f.keep_alive);
            CHECK(framing(response("", status)).body == BodyKind::None);
        }
        CHECK(framing(response(cl, 205)).body == BodyKind::ContentLength);
    }

    TEST_CASE("transfer-encoding framing by final coding") {
        struct Case {
            const char* headers;
            BodyKind body;
            bool keep_alive;
        };
        const Case cases[] = {
            {"Transfer-Encoding: chunked\r\n", BodyKind::Chunked, true},
            {"Transfer-Encoding: CHUNKED\r\n", BodyKind::Chunked, true},
            {"Transfer-Encoding: gzip, chunked\r\n", BodyKind::Chunked, true},
            {"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", BodyKind::Chunked, true},
            {"Transfer-Encoding: gzip,, chunked ,\r\n", BodyKind::Chunked, true},
            {"Transfer-Encoding: chunked, gzip\r\n", BodyKind::UntilClose, false},
            {"Transfer-Encoding: gzip\r\n", BodyKind::UntilClose, false},
            {"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n", BodyKind::UntilClose,
             false},
            {"Transfer-Encoding: xchunked\r\n", BodyKind::UntilClose, false},
        };
        for (const Case& c : cases) {
            CAPTURE(c.headers);
            const Framing f = framing(response(c.headers));
            REQUIRE(f.status == ParseStatus::Done);
            CHECK(f.body == c.body);
            CHECK(f.keep_alive == c.keep_alive);
        }
    }

    TEST_CASE("faulty transfer-encoding is an error") {
        CHECK(error_of(response("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n")) ==
              "content-length with transfer-encoding");
        CHECK(error_of(response("Content-Length: 5\r\nTransfer-Encoding: gzip\r\n")) ==
              "content-length with transfer-encoding");
        CHECK(error_of(response("Transfer-Encoding: chunked, chunked\r\n")) ==
              "chunked applied more than once");
        CHECK(error_of(response("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n")) ==
              "chunked applied more than once");
        CHECK(error_of(response("Transfer-Encoding:\r\n")) == "empty transfer-encoding");
        CHECK(error_of(response("Transfer-Encoding: , \r\n")) == "empty transfer-encoding");
        CHECK(error_of(response("Transfer-Encoding: chunked\r\n", 200, "HTTP/1.0")) ==
              "transfer-encoding in HTTP/1.0");
    }

    TEST_CASE("content-length framing and strictness") {
        Framing f = framing(response("Content-Length: 1234\r\n"));
        CHECK(f.body == BodyKind::ContentLength);
        CHECK(f.content_length == 1234);
        CHECK(f.keep_alive);
        f = framing(response("Content-Length: 0\r\n"));
        CHECK(f.body == BodyKind::None);
        CHECK(f.content_length == 0);
        CHECK(f.keep_alive);
        f = framing(response("Content-Length: 7\r\nContent-Length: 7\r\n"));
        CHECK(f.body == BodyKind::ContentLength);
        CHECK(f.content_length == 7);
        CHECK(error_of(response("Content-Length: 7\r\nContent-Length: 8\r\n")) ==
              "conflicting content-length");
        for (const char* value : {"+7", "-7", "7 7", "7,7", "0x7", "", "9223372036854775808"}) {
            CAPTURE(value);
            CHECK(framing(response("Content-Length: "s + value + "\r\n")).status ==
                  ParseStatus::Error);
        }
    }

    TEST_CASE("no framing headers: read until close") {
        const Framing f = framing(response(""));
        CHECK(f.body == BodyKind::UntilClose);
        CHECK_FALSE(f.keep_alive);
    }

    TEST_CASE("keep-alive from version and Connection") {
        CHECK(framing(response("Content-Length: 1\r\n")).keep_alive);
        CHECK_FALSE(framing(response("Content-Length: 1\r\nConnection: close\r\n")).keep_alive);
        CHECK_FALSE(framing(response("Content-Length: 1\r\nConnection: x, Close\r\n")).keep_alive);
        CHECK_FALSE(framing(response("Content-Length: 1\r\n", 200, "HTTP/1.0")).keep_alive);
        CHECK(framing(response("Content-Length: 1\r\nConnection: keep-alive\r\n", 200, "HTTP/1.0"))
                  .keep_alive);
        // Keep-alive is impossible when only the close ends the body.
        CHECK_FALSE(framing(response("Connection: keep-alive\r\n", 200, "HTTP/1.0")).keep_alive);
        CHECK_FALSE(framing(response("Connection: keep-alive\r\n")).keep_alive);
    }

    TEST_CASE("field syntax rules are the same as for requests") {
        CHECK(error_of(response("X: a\r\n b\r\n")) == "obs-fold");
        CHECK(error_of(response("X : a\r\n")) == "whitespace before colon");
        CHECK(error_of(response("X: a\nY: b\r\n")) == "bare LF");
        CHECK(error_of(response("X: a\rY: b\r\n")) == "bare CR");
        CHECK(error_of(response("X: a\0b\r\n"s)) == "NUL in header value");
        CHECK(error_of(response("X@: a\r\n")) == "invalid header name");
        CHECK(error_of(response(": a\r\n")) == "empty header name");
        CHECK(error_of("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\n") == "bare LF");
    }

    TEST_CASE("more than kMaxHeaders headers is an error") {
        std::string headers = "Content-Length: 0\r\n";
        for (std::size_t i = 1; i < kMaxHeaders; ++i)
            headers += "X-" + std::to_string(i) + ": v\r\n";
        Response r;
        REQUIRE(parse(response(headers), r) == ParseStatus::Done);
        CHECK(r.header_count == kMaxHeaders);
        CHECK(error_of(response(headers + "X-100: v\r\n")) == "too many headers");
    }

    TEST_CASE("head larger than max_head_size is an error, complete or not") {
        const std::size_t max = 128;
        const std::string prefix = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: ";
        const std::string exact = prefix + std::string(max - prefix.size() - 4, 'v') + "\r\n\r\n";
        REQUIRE(exact.size() == max);
        Response r;
        REQUIRE(parse(exact, r, false, max) == ParseStatus::Done);
        CHECK(r.head_length == max);
        const std::string over = prefix + std::string(max - prefix.size() - 3, 'v') + "\r\n\r\n";
        CHECK(error_of(over, max) == "response header too large");

        const std::string open = prefix + std::string(max - prefix.size(), 'v');
        CHECK(parse(open, r, false, max) == ParseStatus::Incomplete);
        CHECK(error_of(open + "v", max) == "response header too large");
    }

    TEST_CASE("bytes after the head are left alone") {
        const std::string head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        Response r;
        REQUIRE(parse(head + "5\r\nhello\r\n0\r\n\r\n", r) == ParseStatus::Done);
        CHECK(r.head_length == head.size());
        CHECK(r.body == BodyKind::Chunked);
    }
}
