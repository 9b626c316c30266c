#include <doctest.h>

#include <string>
#include <string_view>

#include "common/http/parser.hpp"

using namespace proxyd::http;
using namespace std::string_literals;

namespace {

// The views in a Request point into the input: keep the last input alive for the checks.
ParseStatus parse(std::string raw, Request& r, const RequestLimits& limits = {}) {
    static std::string kept;
    kept = std::move(raw);
    return parse_request(kept.data(), kept.size(), limits, r);
}

// 0 = Done, -1 = Incomplete, else the error status.
int outcome(std::string raw, const RequestLimits& limits = {}) {
    Request r;
    switch (parse(std::move(raw), r, limits)) {
        case ParseStatus::Done:
            return 0;
        case ParseStatus::Incomplete:
            return -1;
        case ParseStatus::Error:
            return r.error_status;
    }
    return -2;
}

std::string reason_of(std::string raw, const RequestLimits& limits = {}) {
    Request r;
    parse(std::move(raw), r, limits);
    return r.error_reason;
}

// A valid request with `headers` (each "Name: value\r\n") after the Host line.
std::string with_headers(std::string_view headers, std::string_view version = "HTTP/1.1") {
    return "POST /up HTTP/1.1\r\nHost: example.com\r\n"s.replace(9, 8, version) +
           std::string(headers) + "\r\n";
}

std::string_view header_value(const Request& r, std::string_view name) {
    for (std::size_t i = 0; i < r.header_count; ++i)
        if (iequals(r.headers[i].name, name)) return r.headers[i].value;
    return "<missing>";
}

constexpr RequestLimits kSmall{256, 64};

}  // namespace

TEST_SUITE("request_parser") {
    TEST_CASE("simple GET fills every field") {
        const std::string raw =
            "GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\nUser-Agent:  curl/8 \t\r\n"
            "Accept: */*\r\n\r\n";
        Request r;
        REQUIRE(parse_request(raw.data(), raw.size(), {}, r) == ParseStatus::Done);
        CHECK(r.method == "GET");
        CHECK(r.target == "/a/b?x=1&y=2");
        CHECK(r.path == "/a/b");
        CHECK(r.query == "x=1&y=2");
        CHECK(r.host == "example.com");
        CHECK(r.version_minor == 1);
        REQUIRE(r.header_count == 3);
        CHECK(r.headers[0].name == "Host");
        CHECK(r.headers[1].name == "User-Agent");
        CHECK(r.headers[1].value == "curl/8");
        CHECK(r.headers[2].value == "*/*");
        CHECK(r.body == BodyKind::None);
        CHECK(r.content_length == 0);
        CHECK(r.keep_alive);
        CHECK_FALSE(r.expect_continue);
        CHECK_FALSE(r.has_upgrade);
        CHECK(r.head_length == raw.size());
        CHECK(r.error_status == 0);
        // Zero-copy: the views point into the input.
        CHECK(r.method.data() == raw.data());
        CHECK(r.headers[1].value.data() == raw.data() + raw.find("curl"));
    }

    TEST_CASE("every strict prefix is Incomplete, the whole head is Done") {
        const std::string raw =
            "POST /upload?id=7 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
            "Connection: keep-alive\r\nX-Empty:\r\n\r\n";
        for (std::size_t n = 0; n < raw.size(); ++n) {
            CAPTURE(n);
            Request r;
            CHECK(parse(raw.substr(0, n), r) == ParseStatus::Incomplete);
            CHECK(r.error_status == 0);
            CHECK(r.head_length == 0);
        }
        Request r;
        REQUIRE(parse(raw, r) == ParseStatus::Done);
        CHECK(r.head_length == raw.size());
        CHECK(r.body == BodyKind::Chunked);
        CHECK(header_value(r, "x-empty") == "");
    }

    TEST_CASE("pipelined bytes after the head are not consumed") {
        const std::string head = "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n";
        const std::string raw = head + "abcGET /next HTTP/1.1\r\nHost: h\r\n\r\n";
        Request r;
        REQUIRE(parse(raw, r) == ParseStatus::Done);
        CHECK(r.head_length == head.size());
        CHECK(r.body == BodyKind::ContentLength);
        CHECK(r.content_length == 3);
        // A second complete head right after the first one.
        const std::string two =
            "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n";
        REQUIRE(parse(two, r) == ParseStatus::Done);
        CHECK(r.head_length == two.size() / 2);
        CHECK(r.path == "/1");
    }

    TEST_CASE("leading empty lines are skipped and counted, but only a few") {
        const std::string raw = "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
        Request r;
        REQUIRE(parse(raw, r) == ParseStatus::Done);
        CHECK(r.method == "GET");
        CHECK(r.head_length == raw.size());
        CHECK(outcome("\r") == -1);
        CHECK(outcome("\r\n") == -1);
        CHECK(outcome("\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n") == 0);
        CHECK(outcome("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
        CHECK(outcome("\nGET / HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
        CHECK(outcome("\rGET / HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
    }

    TEST_CASE("a new parse overwrites the previous result") {
        Request r;
        REQUIRE(parse("GET / HTTP/1.1\r\n\r\n", r) == ParseStatus::Error);
        CHECK(r.error_status == 400);
        REQUIRE(parse("GET /x HTTP/1.0\r\n\r\n", r) == ParseStatus::Done);
        CHECK(r.error_status == 0);
        CHECK(std::string_view(r.error_reason).empty());
        CHECK(r.header_count == 0);
        CHECK(r.host.empty());
        CHECK(r.version_minor == 0);
    }

    // --- Content-Length ---

    TEST_CASE("content-length values") {
        Request r;
        REQUIRE(parse(with_headers("Content-Length: 42\r\n"), r) == ParseStatus::Done);
        CHECK(r.body == BodyKind::ContentLength);
        CHECK(r.content_length == 42);
        REQUIRE(parse(with_headers("Content-Length: 0\r\n"), r) == ParseStatus::Done);
        CHECK(r.body == BodyKind::None);
        REQUIRE(parse(with_headers("Content-Length: 9223372036854775807\r\n"), r) ==
                ParseStatus::Done);
        CHECK(r.content_length == 9223372036854775807ULL);
        REQUIRE(parse(with_headers("content-length: 007\r\n"), r) == ParseStatus::Done);
        CHECK(r.content_length == 7);
    }

    TEST_CASE("duplicate content-length: same value accepted, differing rejected") {
        Request r;
        REQUIRE(parse(with_headers("Content-Length: 5\r\nContent-Length: 5\r\n"), r) ==
                ParseStatus::Done);
        CHECK(r.content_length == 5);
        CHECK(outcome(with_headers("Content-Length: 5\r\nContent-Length: 6\r\n")) == 400);
        CHECK(reason_of(with_headers("Content-Length: 5\r\ncontent-length: 50\r\n")) ==
              "conflicting content-length");
    }

    TEST_CASE("content-length that is not plain digits is rejected") {
        for (const char* value :
             {"+5", "-5", "5 5", "5,5", "5, 5", "0x5", "5a", "a", "", "1e3", "5.0",
              "9223372036854775808", "18446744073709551616", "99999999999999999999999"}) {
            CAPTURE(value);
            const std::string raw = with_headers("Content-Length: "s + value + "\r\n");
            CHECK(outcome(raw) == 400);
        }
        CHECK(reason_of(with_headers("Content-Length: +5\r\n")) == "invalid content-length");
        CHECK(reason_of(with_headers("Content-Length: 9223372036854775808\r\n")) ==
              "content-length too large");
    }

    // --- Transfer-Encoding ---

    TEST_CASE("transfer-encoding chunked is accepted") {
        for (const char* value : {"chunked", "Chunked", "CHUNKED", "  chunked\t"}) {
            CAPTURE(value);
            Request r;
            REQUIRE(parse(with_headers("Transfer-Encoding: "s + value + "\r\n"), r) ==
                    ParseStatus::Done);
            CHECK(r.body == BodyKind::Chunked);
            CHECK(r.content_length == 0);
        }
    }

    TEST_CASE("transfer-encoding other than a lone chunked is rejected") {
        for (const char* value :
             {"xchunked", "chunkedx", "chunked, identity", "identity", "gzip, chunked",
              "chunked, chunked", "", "chunked;q=1", ",chunked", "chunked,"}) {
            CAPTURE(value);
            const std::string raw = with_headers("Transfer-Encoding: "s + value + "\r\n");
            CHECK(outcome(raw) == 400);
            CHECK(reason_of(raw) == "unsupported transfer-encoding");
        }
    }

    TEST_CASE("two transfer-encoding headers are rejected") {
        const std::string raw =
            with_headers("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n");
        CHECK(outcome(raw) == 400);
        CHECK(reason_of(raw) == "duplicate transfer-encoding");
    }

    TEST_CASE("content-length with transfer-encoding is rejected, in either order") {
        for (const char* headers : {"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                                    "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                                    "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n"}) {
            CAPTURE(headers);
            CHECK(outcome(with_headers(headers)) == 400);
            CHECK(reason_of(with_headers(headers)) == "content-length with transfer-encoding");
        }
    }

    TEST_CASE("transfer-encoding in an HTTP/1.0 request is rejected") {
        const std::string raw = with_headers("Transfer-Encoding: chunked\r\n", "HTTP/1.0");
        CHECK(outcome(raw) == 400);
        CHECK(reason_of(raw) == "transfer-encoding in HTTP/1.0");
    }

    // --- field syntax ---

    TEST_CASE("obs-fold is rejected") {
        CHECK(outcome(with_headers("X-A: one\r\n two\r\n")) == 400);
        CHECK(outcome(with_headers("X-A: one\r\n\ttwo\r\n")) == 400);
        CHECK(reason_of(with_headers("X-A: one\r\n two\r\n")) == "obs-fold");
        // Whitespace before the first header line is the same thing.
        CHECK(outcome("GET / HTTP/1.1\r\n Host: h\r\n\r\n") == 400);
        // Detected before the head is complete.
        CHECK(outcome("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b") == 400);
    }

    TEST_CASE("bare CR is rejected anywhere") {
        CHECK(outcome("GET / HTTP/1.1\rHost: h\r\n\r\n") == 400);
        CHECK(outcome(with_headers("X-A: a\rb\r\n")) == 400);
        CHECK(outcome(with_headers("X-A: a\r\r\n")) == 400);
        CHECK(outcome("GET / HTTP/1.1\r\nHost: h\r\n\rX") == 400);
        CHECK(outcome("GET /a\rb HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
        CHECK(reason_of(with_headers("X-A: a\rb\r\n")) == "bare CR");
    }

    TEST_CASE("bare LF is rejected anywhere") {
        CHECK(outcome("GET / HTTP/1.1\nHost: h\r\n\r\n") == 400);
        CHECK(outcome("GET / HTTP/1.1\r\nHost: h\n\r\n") == 400);
        CHECK(outcome("GET / HTTP/1.1\r\nHost: h\r\n\n") == 400);
        CHECK(outcome(with_headers("X-A: a\nb\r\n")) == 400);
        CHECK(outcome("GET / HTTP/1.1\n\n") == 400);
        CHECK(reason_of("GET / HTTP/1.1\r\nHost: h\n\r\n") == "bare LF");
    }

    TEST_CASE("NUL and control bytes in values are rejected, HTAB and obs-text allowed") {
        CHECK(outcome(with_headers("X-A: a\0b\r\n"s)) == 400);
        CHECK(reason_of(with_headers("X-A: a\0b\r\n"s)) == "NUL in header value");
        for (char c : {'\x01', '\x08', '\x0b', '\x0c', '\x1b', '\x1f', '\x7f'}) {
            CAPTURE(static_cast<int>(c));
            CHECK(outcome(with_headers("X-A: a"s + c + "b\r\n")) == 400);
        }
        Request r;
        REQUIRE(parse(with_headers("X-A: a\tb \xc3\xa9\r\n"), r) == ParseStatus::Done);
        CHECK(header_value(r, "x-a") == "a\tb \xc3\xa9");
    }

    // Long values and targets are scanned a word at a time: every byte position must be checked.
    TEST_CASE("a bad byte is caught at any position of a long value or target") {
        const std::string plain(40, 'v');
        for (std::size_t i = 0; i < plain.size(); ++i) {
            for (char bad : {'\0', '\x01', '\x1f', '\x7f', '\n'}) {
                std::string value = plain;
                value[i] = bad;
                CAPTURE(i);
                CAPTURE(static_cast<int>(bad));
                CHECK(outcome(with_headers("X-A: " + value + "\r\n")) == 400);
                CHECK(outcome("GET /" + value + " HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
            }
            for (char fine : {'\t', ' ', '\x80', '\xff', '~', '!'}) {
                std::string value = plain;
                value[i] = fine;
                Request r;
                REQUIRE(parse(with_headers("X-A: " + value + "\r\n"), r) == ParseStatus::Done);
                // Whitespace at either end is OWS, trimmed.
                const std::size_t first = value.find_first_not_of(" \t");
                const std::size_t last = value.find_last_not_of(" \t");
                CHECK(header_value(r, "X-A") == value.substr(first, last - first + 1));
            }
            for (char not_in_target : {' ', '\t', '\x80', '\xff'}) {
                std::string target = "/" + plain;
                target[i + 1] = not_in_target;
                CHECK(outcome("GET " + target + " HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
            }
        }
    }

    TEST_CASE("whitespace before the colon is rejected") {
        CHECK(outcome(with_headers("X-A : v\r\n")) == 400);
        CHECK(outcome(with_headers("X-A\t: v\r\n")) == 400);
        CHECK(outcome(with_headers("Content-Length : 5\r\n")) == 400);
        CHECK(reason_of(with_headers("X-A : v\r\n")) == "whitespace before colon");
    }

    TEST_CASE("invalid header names are rejected") {
        for (const char* line : {"X[A]: v", "X\"A: v", "X@A: v", "X,A: v", "X/A: v", "X\x01: v",
                                 "\xc3\xa9: v", "X(A): v", "X=A: v"}) {
            CAPTURE(line);
            CHECK(outcome(with_headers(line + "\r\n"s)) == 400);
        }
        CHECK(reason_of(with_headers("X@A: v\r\n")) == "invalid header name");
        CHECK(outcome(with_headers(": v\r\n")) == 400);
        CHECK(reason_of(with_headers(": v\r\n")) == "empty header name");
        CHECK(outcome(with_headers("NoColon\r\n")) == 400);
        // All tchar punctuation is fine.
        CHECK(outcome(with_headers("!#$%&'*+-.^_`|~09az: v\r\n")) == 0);
    }

    TEST_CASE("values are trimmed, inner whitespace kept") {
        Request r;
        REQUIRE(parse(with_headers("X-A:   a  b \t \r\nX-B:\t\r\nX-C:c\r\n"), r) ==
                ParseStatus::Done);
        CHECK(header_value(r, "X-A") == "a  b");
        CHECK(header_value(r, "X-B") == "");
        CHECK(header_value(r, "X-C") == "c");
    }

    // --- Host ---

    TEST_CASE("HTTP/1.1 needs exactly one Host") {
        CHECK(outcome("GET / HTTP/1.1\r\n\r\n") == 400);
        CHECK(reason_of("GET / HTTP/1.1\r\n\r\n") == "missing host");
        CHECK(outcome("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n") == 400);
        CHECK(reason_of("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n") == "duplicate host");
        CHECK(outcome("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n") == 400);
        Request r;
        REQUIRE(parse("GET / HTTP/1.0\r\n\r\n", r) == ParseStatus::Done);
        CHECK(r.host.empty());
        REQUIRE(parse("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", r) == ParseStatus::Done);
        CHECK(r.host == "[::1]:8080");
    }

    TEST_CASE("Host values with characters outside uri-host are rejected") {
        for (const char* host : {"a b", "user@evil.com", "a/b", "a?b", "a\\b", "a\"b"}) {
            CAPTURE(host);
            CHECK(outcome("GET / HTTP/1.1\r\nHost: "s + host + "\r\n\r\n") == 400);
        }
    }

    // --- request line ---

    TEST_CASE("malformed versions are 400, well-formed unsupported ones 505") {
        for (const char* v : {"HTTP/1.1x", "http/1.1", "HTTP/1", "HTTP/1.10", "HTTP/11.1",
                              "HTTPS/1.1", "HTTP/1.a", "HTTP 1.1", "HTTP/1.1 ", ""}) {
            CAPTURE(v);
            CHECK(outcome("GET / "s + v + "\r\nHost: h\r\n\r\n") == 400);
        }
        for (const char* v : {"HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3.0", "HTTP/9.9"}) {
            CAPTURE(v);
            CHECK(outcome("GET / "s + v + "\r\nHost: h\r\n\r\n") == 505);
        }
        // The version is judged once its line is complete, not before.
        CHECK(outcome("GET / HTTP/2.0") == -1);
        CHECK(outcome("GET / HTTP/2.0\r\n") == 505);
        // Garbage is seen early.
        CHECK(outcome("GET / HTTQ") == 400);
    }

    TEST_CASE("request line separators are exactly one SP") {
        CHECK(outcome("GET  / HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
        CHECK(outcome("GET /  HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
        CHECK(outcome("GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
        CHECK(outcome("GET /\tHTTP/1.1\r\nHost: h\r\n\r\n") == 400);
        CHECK(outcome(" GET / HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
        CHECK(outcome("GET /\r\n\r\n") == 400);  // HTTP/0.9 style
    }

    TEST_CASE("method must be a token") {
        CHECK(outcome("GE(T / HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
        CHECK(outcome("GET\x01 / HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
        CHECK(reason_of("G@T / HTTP/1.1\r\nHost: h\r\n\r\n") == "invalid method");
        Request r;
        REQUIRE(parse("PURGE-X / HTTP/1.1\r\nHost: h\r\n\r\n", r) == ParseStatus::Done);
        CHECK(r.method == "PURGE-X");
    }

    TEST_CASE("target bytes outside visible ASCII are rejected") {
        for (char c : {'\0', '\x01', '\x7f', '\x80', '\xff'}) {
            CAPTURE(static_cast<int>(static_cast<unsigned char>(c)));
            CHECK(outcome("GET /a"s + c + "b HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
        }
        Request r;
        REQUIRE(parse("GET /a%20b/!$&'()*+,;=:@-._~?q=[x]#f HTTP/1.1\r\nHost: h\r\n\r\n", r) ==
                ParseStatus::Done);
        CHECK(r.path == "/a%20b/!$&'()*+,;=:@-._~");
        CHECK(r.query == "q=[x]#f");
    }

    // --- target forms ---

    TEST_CASE("origin-form splits path and query at the first '?'") {
        Request r;
        REQUIRE(parse("GET /p?a=1?b=2 HTTP/1.1\r\nHost: h\r\n\r\n", r) == ParseStatus::Done);
        CHECK(r.path == "/p");
        CHECK(r.query == "a=1?b=2");
        REQUIRE(parse("GET /p? HTTP/1.1\r\nHost: h\r\n\r\n", r) == ParseStatus::Done);
        CHECK(r.path == "/p");
        CHECK(r.query == "");
        REQUIRE(parse("GET / HTTP/1.1\r\nHost: h\r\n\r\n", r) == ParseStatus::Done);
        CHECK(r.path == "/");
    }

    TEST_CASE("absolute-form: the authority is the host, path defaults to /") {
        Request r;
        REQUIRE(parse("GET http://Example.com:8080/a/b?x=1 HTTP/1.1\r\nHost: other\r\n\r\n", r) ==
                ParseStatus::Done);
        CHECK(r.target == "http://Example.com:8080/a/b?x=1");
        CHECK(r.host == "Example.com:8080");
        CHECK(r.path == "/a/b");
        CHECK(r.query == "x=1");

        REQUIRE(parse("GET HTTPS://h HTTP/1.1\r\nHost: h\r\n\r\n", r) == ParseStatus::Done);
        CHECK(r.host == "h");
        CHECK(r.path == "/");
        CHECK(r.query == "");

        REQUIRE(parse("GET hTtP://h?q=1 HTTP/1.1\r\nHost: h\r\n\r\n", r) == ParseStatus::Done);
        CHECK(r.host == "h");
        CHECK(r.path == "/");
        CHECK(r.query == "q=1");

        REQUIRE(parse("GET http://h/x HTTP/1.0\r\n\r\n", r) == ParseStatus::Done);
        CHECK(r.host == "h");
        CHECK(r.path == "/x");
    }

    TEST_CASE("absolute-form still needs a Host header in HTTP/1.1, and a valid authority") {
        CHECK(outcome("GET http://h/ HTTP/1.1\r\n\r\n") == 400);
        CHECK(outcome("GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
        CHECK(outcome("GET http://user@h/ HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
        CHECK(outcome("GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
        CHECK(outcome("GET http:/h/ HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
    }

    TEST_CASE("asterisk-form only with OPTIONS") {
        Request r;
        REQUIRE(parse("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", r) == ParseStatus::Done);
        CHECK(r.target == "*");
        CHECK(r.path == "*");
        CHECK(outcome("GET * HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
        CHECK(outcome("OPTIONS *x HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
    }

    TEST_CASE("CONNECT and authority-form are rejected") {
        CHECK(outcome("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n") == 400);
        CHECK(reason_of("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n") ==
              "CONNECT not supported");
        CHECK(outcome("CONNECT / HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
        CHECK(outcome("GET example.com:80 HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
        CHECK(outcome("GET relative/path HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
        // Decided as soon as the request line is complete.
        CHECK(outcome("CONNECT example.com:443 HTTP/1.1\r\n") == 400);
    }

    // --- limits ---

    TEST_CASE("414 for a complete request line with a too long target") {
        const std::string ok_target = "/" + std::string(kSmall.max_uri_size - 1, 'a');
        CHECK(outcome("GET " + ok_target + " HTTP/1.1\r\nHost: h\r\n\r\n", kSmall) == 0);
        const std::string long_target = ok_target + "a";
        CHECK(outcome("GET " + long_target + " HTTP/1.1\r\nHost: h\r\n\r\n", kSmall) == 414);
        CHECK(reason_of("GET " + long_target + " HTTP/1.1\r\n", kSmall) ==
              "request target too long");
    }

    TEST_CASE("414 while the target is still arriving") {
        const std::string at_limit = "GET /" + std::string(kSmall.max_uri_size - 1, 'a');
        CHECK(outcome(at_limit, kSmall) == -1);
        CHECK(outcome(at_limit + "a", kSmall) == 414);
        // Past both limits with the request line still open: the target is what's too long.
        CHECK(outcome("GET /" + std::string(1000, 'a'), kSmall) == 414);
    }

    TEST_CASE("431 for a complete head over max_header_size") {
        const std::string prefix = "GET / HTTP/1.1\r\nHost: h\r\nX: ";
        const std::size_t fill = kSmall.max_header_size - prefix.size() - 4;
        const std::string exact = prefix + std::string(fill, 'v') + "\r\n\r\n";
        REQUIRE(exact.size() == kSmall.max_header_size);
        Request r;
        REQUIRE(parse(exact, r, kSmall) == ParseStatus::Done);
        CHECK(r.head_length == kSmall.max_header_size);
        const std::string over = prefix + std::string(fill + 1, 'v') + "\r\n\r\n";
        CHECK(outcome(over, kSmall) == 431);
        CHECK(reason_of(over, kSmall) == "request header too large");
    }

    TEST_CASE("431 while the head is still arriving") {
        const std::string prefix = "GET / HTTP/1.1\r\nHost: h\r\nX: ";
        const std::string at_limit =
            prefix + std::string(kSmall.max_header_size - prefix.size(), 'v');
        CHECK(outcome(at_limit, kSmall) == -1);
        CHECK(outcome(at_limit + "v", kSmall) == 431);
        // A huge method never gets a SP: the head is too large.
        CHECK(outcome(std::string(kSmall.max_header_size + 1, 'G'), kSmall) == 431);
        // Target within its own limit but the buffered request line exceeds the head limit.
        const RequestLimits wide_uri{256, 1024};
        CHECK(outcome("GET /" + std::string(300, 'a'), wide_uri) == 431);
        CHECK(outcome("GET /" + std::string(300, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n", wide_uri) ==
              431);
    }

    TEST_CASE("more than kMaxHeaders headers is 431") {
        const RequestLimits big{64 * 1024, 8 * 1024};
        std::string headers;
        for (std::size_t i = 1; i < kMaxHeaders; ++i)
            headers += "X-" + std::to_string(i) + ": v\r\n";
        Request r;
        REQUIRE(parse(with_headers(headers), r, big) == ParseStatus::Done);
        CHECK(r.header_count == kMaxHeaders);
        CHECK(r.headers[kMaxHeaders - 1].name == "X-99");
        const std::string too_many = with_headers(headers + "X-100: v\r\n");
        CHECK(outcome(too_many, big) == 431);
        CHECK(reason_of(too_many, big) == "too many headers");
        // Seen as soon as the 101st line starts.
        CHECK(outcome(with_headers(headers).substr(0, with_headers(headers).size() - 2) + "X",
                      big) == 431);
    }

    // --- connection semantics ---

    TEST_CASE("keep-alive defaults and Connection tokens") {
        struct Case {
            const char* version;
            const char* connection;  // nullptr: no Connection header
            bool keep_alive;
        };
        const Case cases[] = {
            {"HTTP/1.1", nullptr, true},           {"HTTP/1.1", "close", false},
            {"HTTP/1.1", "Upgrade, CLOSE", false}, {"HTTP/1.1", "keep-alive", true},
            {"HTTP/1.0", nullptr, false},          {"HTTP/1.0", "keep-alive", true},
            {"HTTP/1.0", "Keep-Alive, foo", true}, {"HTTP/1.0", "keep-alive, close", false},
            {"HTTP/1.0", "keep-alivex", false},
        };
        for (const Case& c : cases) {
            CAPTURE(c.version);
            CAPTURE(c.connection ? c.connection : "(none)");
            const std::string headers =
                c.connection ? "Connection: "s + c.connection + "\r\n" : ""s;
            Request r;
            REQUIRE(parse(with_headers(headers, c.version), r) == ParseStatus::Done);
            CHECK(r.keep_alive == c.keep_alive);
        }
        // Connection split over two fields still counts.
        Request r;
        REQUIRE(parse(with_headers("Connection: foo\r\nConnection: close\r\n"), r) ==
                ParseStatus::Done);
        CHECK_FALSE(r.keep_alive);
    }

    TEST_CASE("Expect: 100-continue") {
        Request r;
        REQUIRE(parse(with_headers("Expect: 100-Continue\r\nContent-Length: 3\r\n"), r) ==
                ParseStatus::Done);
        CHECK(r.expect_continue);
        REQUIRE(parse(with_headers("Expect: 100-continue\r\n", "HTTP/1.0"), r) ==
                ParseStatus::Done);
        CHECK_FALSE(r.expect_continue);
        REQUIRE(parse(with_headers("Expect: 200-ok\r\n"), r) == ParseStatus::Done);
        CHECK_FALSE(r.expect_continue);
    }

    TEST_CASE("Upgrade header is noticed") {
        Request r;
        REQUIRE(parse(with_headers("Connection: Upgrade\r\nUpgrade: websocket\r\n"), r) ==
                ParseStatus::Done);
        CHECK(r.has_upgrade);
        REQUIRE(parse(with_headers(""), r) == ParseStatus::Done);
        CHECK_FALSE(r.has_upgrade);
    }

    TEST_CASE("HTTP/1.0 request fields") {
        Request r;
        REQUIRE(parse("GET /x HTTP/1.0\r\nHost: h\r\nContent-Length: 2\r\n\r\n", r) ==
                ParseStatus::Done);
        CHECK(r.version_minor == 0);
        CHECK(r.host == "h");
        CHECK(r.body == BodyKind::ContentLength);
        CHECK(r.content_length == 2);
        CHECK_FALSE(r.keep_alive);
    }
}

TEST_SUITE("tokens") {
    TEST_CASE("iequals") {
        CHECK(iequals("Content-Length", "content-length"));
        CHECK(iequals("", ""));
        CHECK_FALSE(iequals("abc", "abcd"));
        CHECK_FALSE(iequals("a-b", "a_b"));
        // Only ASCII letters fold: '@' (0x40) and '`' (0x60) differ by the case bit.
        CHECK_FALSE(iequals("@", "`"));
        CHECK_FALSE(iequals("[", "{"));
    }

    TEST_CASE("iequals: eight bytes at a time agrees with byte by byte, every byte pair") {
        // Each pair of bytes, at every position of strings of 1..19 bytes (the word loop, the
        // overlapping tail and the byte loop), against the one-byte rule.
        auto lower = [](unsigned char c) { return c >= 'A' && c <= 'Z' ? c | 0x20 : c; };
        int mismatches = 0;
        for (std::size_t size = 1; size < 20; ++size) {
            for (std::size_t at = 0; at < size; at += (size > 9 ? 4 : 1)) {
                std::string a(size, 'k');
                std::string b(size, 'K');
                for (int x = 0; x < 256; ++x) {
                    for (int y = 0; y < 256; ++y) {
                        a[at] = static_cast<char>(x);
                        b[at] = static_cast<char>(y);
                        bool expected = lower(static_cast<unsigned char>(x)) ==
                                        lower(static_cast<unsigned char>(y));
                        if (iequals(a, b) != expected) ++mismatches;
                    }
                }
            }
        }
        CHECK(mismatches == 0);
        CHECK(iequals("X-Forwarded-Proto", "x-forwarded-proto"));
        CHECK_FALSE(iequals("X-Forwarded-Proto", "x-forwarded-protO-"));
        CHECK_FALSE(iequals("x-forwarded-proto", "x-forwarded-prota"));
        CHECK_FALSE(iequals("\xc3\x89tat-xyzw", "\xe3\xa9tat-xyzw"));  // only ASCII folds
    }

    TEST_CASE("list_contains_token") {
        CHECK(list_contains_token("keep-alive, Upgrade", "upgrade"));
        CHECK(list_contains_token("close", "close"));
        CHECK(list_contains_token(" ,, \tclose\t ,", "close"));
        CHECK(list_contains_token("a,b,c", "b"));
        CHECK_FALSE(list_contains_token("closed", "close"));
        CHECK_FALSE(list_contains_token("x-close, enclose", "close"));
        CHECK_FALSE(list_contains_token("", "close"));
        CHECK_FALSE(list_contains_token(", ,", "close"));
    }
}
