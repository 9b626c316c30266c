// Request-smuggling regression suite: one case per ambiguity vector, each asserting the status
// the proxy answers (400 unless stated) or, where a request is accepted, exactly how it is framed.
// The policy itself is written down at the top of common/http/parser.hpp. Every case name
// contains "smuggling" so `unit_tests -tc='*smuggl*'` runs the whole suite.
#include <doctest.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "common/http/parser.hpp"
#include "worker/forward_headers.hpp"

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
int outcome(std::string raw) {
    Request r;
    switch (parse(std::move(raw), r)) {
        case ParseStatus::Done:
            return 0;
        case ParseStatus::Incomplete:
            return -1;
        case ParseStatus::Error:
            return r.error_status;
    }
    return -2;
}

std::string reason_of(std::string raw) {
    Request r;
    parse(std::move(raw), r);
    return r.error_reason;
}

// "POST /up HTTP/1.1" + Host + `headers` (each "Name: value\r\n") + the empty line.
std::string post(std::string_view headers, std::string_view version = "HTTP/1.1") {
    return "POST /up "s + std::string(version) + "\r\nHost: example.com\r\n" +
           std::string(headers) + "\r\n";
}

// A full request with the given header block after the request line (no Host added).
std::string raw_head(std::string_view request_line, std::string_view fields) {
    return std::string(request_line) + "\r\n" + std::string(fields) + "\r\n";
}

int count_headers(const Request& r, std::string_view name) {
    int n = 0;
    for (std::size_t i = 0; i < r.header_count; ++i)
        if (iequals(r.headers[i].name, name)) ++n;
    return n;
}

// --- chunked bodies, driven as parser.hpp documents ---

struct Decoded {
    bool error = false;
    bool done = false;
    std::string data;
    std::size_t leftover = 0;  // bytes after the body (what the proxy would parse as the next head)
};

Decoded decode_pieces(const std::vector<std::string_view>& pieces) {
    ChunkedDecoder dec;
    Decoded out;
    for (std::string_view in : pieces) {
        while (!in.empty() && !out.done && !out.error) {
            if (dec.in_data()) {
                const auto n = static_cast<std::size_t>(
                    std::min<std::uint64_t>(dec.data_remaining(), in.size()));
                out.data.append(in.substr(0, n));
                in.remove_prefix(n);
                dec.consume_data(n);
                continue;
            }
            const ChunkedDecoder::Result r = dec.parse_framing(in.data(), in.size());
            REQUIRE(r.consumed <= in.size());
            in.remove_prefix(r.consumed);
            out.error = r.error;
            out.done = dec.done();
        }
        out.leftover += in.size();
    }
    return out;
}

// Decodes `body` in one piece and byte by byte; both must agree.
Decoded decode(std::string_view body) {
    const Decoded whole = decode_pieces({body});
    std::vector<std::string_view> bytes;
    for (std::size_t i = 0; i < body.size(); ++i) bytes.push_back(body.substr(i, 1));
    const Decoded split = decode_pieces(bytes);
    CHECK(whole.error == split.error);
    CHECK(whole.done == split.done);
    CHECK(whole.data == split.data);
    CHECK(whole.leftover == split.leftover);
    return whole;
}

bool chunk_rejected(std::string_view body) {
    return decode(body).error;
}

}  // namespace

TEST_SUITE("smuggling") {
    // ---------------------------------------------------------------------------------------
    // Content-Length together with Transfer-Encoding

    TEST_CASE("smuggling: CL and TE together are rejected in every order and form") {
        for (const char* fields : {
                 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                 "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
                 "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
                 "content-length: 5\r\ntransfer-encoding: CHUNKED\r\n",
                 "Content-Length: 5\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                 "Content-Length: 5\r\nTransfer-Encoding: identity\r\n",
             }) {
            CAPTURE(fields);
            CHECK(outcome(post(fields)) == 400);
        }
        CHECK(reason_of(post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n")) ==
              "content-length with transfer-encoding");
        CHECK(outcome(post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "HTTP/1.0")) ==
              400);
    }

    // ---------------------------------------------------------------------------------------
    // Content-Length values

    TEST_CASE("smuggling: differing duplicate Content-Length is rejected") {
        CHECK(outcome(post("Content-Length: 5\r\nContent-Length: 6\r\n")) == 400);
        CHECK(outcome(post("Content-Length: 6\r\ncontent-length: 5\r\n")) == 400);
        CHECK(outcome(post("Content-Length: 0\r\nContent-Length: 1\r\n")) == 400);
        CHECK(outcome(post("Content-Length: 5\r\nX: y\r\nContent-Length: 50\r\n")) == 400);
        CHECK(reason_of(post("Content-Length: 5\r\nContent-Length: 6\r\n")) ==
              "conflicting content-length");
    }

    TEST_CASE("smuggling: a Content-Length list is rejected, even with equal members") {
        for (const char* value : {"5, 6", "5,6", "5, 5", "5,5", "5 ,5", ",5", "5,", "5,,5"}) {
            CAPTURE(value);
            CHECK(outcome(post("Content-Length: "s + value + "\r\n")) == 400);
        }
    }

    // Documented choice: equal duplicate lines are one length (the proxy sends its own single
    // Content-Length upstream, so the upstream never sees the duplicates).
    TEST_CASE("smuggling: identical duplicate Content-Length lines are accepted as one") {
        Request r;
        REQUIRE(parse(post("Content-Length: 5\r\nContent-Length: 5\r\n") + "hello", r) ==
                ParseStatus::Done);
        CHECK(r.body == BodyKind::ContentLength);
        CHECK(r.content_length == 5);
        // Equal as numbers is equal.
        REQUIRE(parse(post("Content-Length: 5\r\nContent-Length: 005\r\n"), r) ==
                ParseStatus::Done);
        CHECK(r.content_length == 5);

        // And the head that goes upstream holds exactly one Content-Length.
        REQUIRE(parse(post("Content-Length: 5\r\nContent-Length: 5\r\n"), r) == ParseStatus::Done);
        proxyd::worker::UpstreamRequestInfo info;
        info.path = r.path;
        info.client_ip = info.real_ip = "192.0.2.1";
        info.request_id = "id";
        info.framing = proxyd::worker::Framing::ContentLength;
        info.content_length = r.content_length;
        std::string head;
        proxyd::worker::build_upstream_request_head(r, info, head);
        std::size_t count = 0;
        for (std::size_t at = head.find("Content-Length:"); at != std::string::npos;
             at = head.find("Content-Length:", at + 1))
            ++count;
        CHECK(count == 1);
    }

    TEST_CASE("smuggling: Content-Length that is not plain digits is rejected") {
        for (const char* value :
             {"+5", "-1", "-0", "1 0", "1\t0", "abc5", "x5", "5abc", "5x", "0x10", "0X10", "1e3",
              "5.0", "5;", "\"5\"", "", "\x35\xc2\xa0", "\xef\xbc\x95" /* fullwidth 5 */}) {
            CAPTURE(value);
            CHECK(outcome(post("Content-Length: "s + value + "\r\n")) == 400);
        }
        // Control bytes around the value are caught by the field syntax already.
        CHECK(outcome(post("Content-Length: \x0b"s + "5\r\n")) == 400);
        CHECK(outcome(post("Content-Length: 5\0\r\n"s)) == 400);
        CHECK(reason_of(post("Content-Length: +5\r\n")) == "invalid content-length");
    }

    TEST_CASE("smuggling: Content-Length overflow is rejected, 2^63-1 is the largest") {
        for (const char* value :
             {"9223372036854775808", "18446744073709551615", "18446744073709551616",
              "99999999999999999999", "100000000000000000000000000000000000000005"}) {
            CAPTURE(value);
            CHECK(outcome(post("Content-Length: "s + value + "\r\n")) == 400);
            CHECK(reason_of(post("Content-Length: "s + value + "\r\n")) ==
                  "content-length too large");
        }
        Request r;
        REQUIRE(parse(post("Content-Length: 9223372036854775807\r\n"), r) == ParseStatus::Done);
        CHECK(r.content_length == 9223372036854775807ULL);
    }

    TEST_CASE("smuggling: Content-Length with OWS and leading zeros is accepted") {
        Request r;
        REQUIRE(parse(post("Content-Length: \t 7 \t\r\n"), r) == ParseStatus::Done);
        CHECK(r.content_length == 7);
        REQUIRE(parse(post("Content-Length: 00000000000000000000000000007\r\n"), r) ==
                ParseStatus::Done);
        CHECK(r.content_length == 7);
        REQUIRE(parse(post("Content-Length: 0\r\n"), r) == ParseStatus::Done);
        CHECK(r.body == BodyKind::None);
    }

    // ---------------------------------------------------------------------------------------
    // Transfer-Encoding values

    TEST_CASE("smuggling: Transfer-Encoding other than a single final chunked is rejected") {
        for (const char* value :
             {"xchunked", "chunkedx", "chunked, identity", "identity, chunked", "chunked, chunked",
              "chunked,chunked", "gzip, chunked", "chunked, gzip", "identity", "gzip", "",
              "\"chunked\"", "chunked;q=1", ",chunked", "chunked,", "chunk", "chun ked",
              "chunked\xff", "\xc4\x8dhunked"}) {
            CAPTURE(value);
            const std::string raw = post("Transfer-Encoding: "s + value + "\r\n");
            CHECK(outcome(raw) == 400);
        }
    }

    TEST_CASE("smuggling: a lone chunked in any case, with OWS, is accepted") {
        for (const char* value : {"chunked", "Chunked", "CHUNKED", " \tchunked\t "}) {
            CAPTURE(value);
            Request r;
            REQUIRE(parse(post("Transfer-Encoding: "s + value + "\r\n"), r) == ParseStatus::Done);
            CHECK(r.body == BodyKind::Chunked);
            CHECK(r.content_length == 0);
        }
    }

    TEST_CASE("smuggling: duplicated Transfer-Encoding lines are rejected") {
        for (const char* fields : {"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                                   "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                                   "Transfer-Encoding: chunked\r\ntransfer-encoding: identity\r\n",
                                   "Transfer-Encoding: \r\nTransfer-Encoding: chunked\r\n"}) {
            CAPTURE(fields);
            CHECK(outcome(post(fields)) == 400);
        }
        CHECK(reason_of(post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n")) ==
              "duplicate transfer-encoding");
    }

    TEST_CASE("smuggling: Transfer-Encoding in HTTP/1.0 is rejected") {
        CHECK(outcome(post("Transfer-Encoding: chunked\r\n", "HTTP/1.0")) == 400);
        CHECK(reason_of(post("Transfer-Encoding: chunked\r\n", "HTTP/1.0")) ==
              "transfer-encoding in HTTP/1.0");
    }

    TEST_CASE("smuggling: empty Transfer-Encoding is rejected") {
        CHECK(outcome(post("Transfer-Encoding:\r\n")) == 400);
        CHECK(outcome(post("Transfer-Encoding: \t \r\n")) == 400);
    }

    TEST_CASE("smuggling: underscore spellings of the framing fields are rejected") {
        for (const char* fields :
             {"Content_Length: 5\r\n", "content_length: 5\r\n", "Transfer_Encoding: chunked\r\n",
              "TRANSFER_ENCODING: chunked\r\n", "Content-Length: 5\r\nContent_Length: 50\r\n",
              "Transfer-Encoding: chunked\r\nTransfer_Encoding: identity\r\n"}) {
            CAPTURE(fields);
            CHECK(outcome(post(fields)) == 400);
        }
        CHECK(reason_of(post("Content_Length: 5\r\n")) == "underscore in framing header name");
        // Other names with underscores are fine.
        CHECK(outcome(post("X_Custom: 1\r\nContent_Type: x\r\nContent_Lengths: 5\r\n")) == 0);
    }

    // ---------------------------------------------------------------------------------------
    // Chunked framing

    TEST_CASE("smuggling: chunk size overflow is rejected") {
        CHECK(chunk_rejected("10000000000000000\r\n"));  // 17 digits
        CHECK(chunk_rejected("00000000000000001\r\n"));  // 17 digits, even if small
        CHECK(chunk_rejected("FFFFFFFFFFFFFFFFF\r\n"));  // 17 digits
        CHECK(chunk_rejected("FFFFFFFFFFFFFFFF\r\n"));   // 2^64 - 1
        CHECK(chunk_rejected("8000000000000000\r\n"));   // 2^63
        CHECK(chunk_rejected("80000000000000000\r\n"));
        CHECK(chunk_rejected("1000000000000000000000001\r\n"));
        // 2^63 - 1 is the largest size.
        ChunkedDecoder dec;
        REQUIRE_FALSE(dec.parse_framing("7fffffffffffffff\r\n", 18).error);
        CHECK(dec.in_data());
        CHECK(dec.data_remaining() == 0x7fffffffffffffffULL);
        // The overflow is seen on the digit that causes it, before the line ends.
        dec.reset();
        CHECK(dec.parse_framing("8000000000000000", 16).error);
    }

    TEST_CASE("smuggling: chunk size junk is rejected") {
        for (const std::string& line :
             {"0x10\r\n"s,    "0X10\r\n"s, "x\r\n"s,    "-1\r\n"s,         "-0\r\n"s,
              "+1\r\n"s,      " 1\r\n"s,   "\t1\r\n"s,  "1 \r\n"s,         "1\t\r\n"s,
              "1;\r\n"s,      "1;=x\r\n"s, "1;a=\r\n"s, "1;a b\r\n"s,      "1;a=\"x\r\n"s,
              "1;a=b c\r\n"s, "1 1\r\n"s,  "1,1\r\n"s,  "1_0\r\n"s,        "\r\n"s,
              ";\r\n"s,       "g\r\n"s,    "1\0\r\n"s,  "1;a=\"\0\"\r\n"s, "1;a\x7f\r\n"s}) {
            CAPTURE(line);
            CHECK(chunk_rejected(line + "x\r\n0\r\n\r\n"));
        }
        // What a valid size line with extensions looks like.
        CHECK(decode("1 ; a = b ; c=\"d e\"\r\nx\r\n0\r\n\r\n").data == "x");
    }

    TEST_CASE("smuggling: missing or wrong CRLF after chunk data is rejected") {
        for (const char* body :
             {"5\r\nhelloX\r\n0\r\n\r\n", "5\r\nhello0\r\n\r\n", "5\r\nhello\r0\r\n\r\n",
              "5\r\nhello\n0\r\n\r\n", "5\r\nhello \r\n0\r\n\r\n", "5\r\nhello\r\r\n0\r\n\r\n",
              "3\r\nhello\r\n0\r\n\r\n"}) {
            CAPTURE(body);
            CHECK(chunk_rejected(body));
        }
    }

    TEST_CASE("smuggling: LF-only chunk lines are rejected") {
        for (const char* body :
             {"5\nhello\r\n0\r\n\r\n", "5\r\nhello\n0\r\n\r\n", "5\r\nhello\r\n0\n\r\n",
              "5\r\nhello\r\n0\r\n\n", "5;a=b\nhello\r\n0\r\n\r\n", "0\r\nX: y\n\r\n",
              "5\rhello\r\n0\r\n\r\n", "0\r\n\rX"}) {
            CAPTURE(body);
            CHECK(chunk_rejected(body));
        }
    }

    TEST_CASE("smuggling: a request hidden after the last chunk is left for the next parse") {
        const std::string body = "5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n";
        const Decoded d = decode(body);
        CHECK(d.done);
        CHECK_FALSE(d.error);
        CHECK(d.data == "hello");
        CHECK(d.leftover == std::string_view("GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n").size());
        // Inside chunk data it is just data.
        const std::string inner = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n";
        char size[8];
        std::snprintf(size, sizeof size, "%zx", inner.size());
        const Decoded d2 = decode(size + "\r\n"s + inner + "\r\n0\r\n\r\n");
        CHECK(d2.done);
        CHECK(d2.data == inner);
        CHECK(d2.leftover == 0);
    }

    TEST_CASE("smuggling: trailer lines follow the header rules") {
        for (const std::string& body :
             {"0\r\n X: y\r\n\r\n"s, "0\r\nX : y\r\n\r\n"s, "0\r\nX: a\0b\r\n\r\n"s,
              "0\r\n: y\r\n\r\n"s, "0\r\nX y\r\n\r\n"s, "0\r\nX: y\r\n z\r\n\r\n"s,
              "0\r\nX: a\x01\r\n\r\n"s}) {
            CAPTURE(body);
            CHECK(chunk_rejected(body));
        }
        CHECK(decode("0\r\nX: y\r\nContent-Length: 5\r\n\r\n").done);  // dropped by the proxy
    }

    // ---------------------------------------------------------------------------------------
    // Line endings in the head

    TEST_CASE("smuggling: bare LF line endings in the head are rejected") {
        for (const std::string& raw :
             {"GET / HTTP/1.1\nHost: h\r\n\r\n"s, "GET / HTTP/1.1\r\nHost: h\n\r\n"s,
              "GET / HTTP/1.1\r\nHost: h\r\n\n"s, "GET / HTTP/1.1\nHost: h\n\n"s,
              "GET / HTTP/1.1\r\nHost: h\r\nX: a\nTransfer-Encoding: chunked\r\n\r\n"s,
              "\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"s, "GET / HTTP/1.1\r\n\n"s}) {
            CAPTURE(raw);
            CHECK(outcome(raw) == 400);
        }
        CHECK(reason_of("GET / HTTP/1.1\r\nHost: h\n\r\n") == "bare LF");
    }

    TEST_CASE("smuggling: bare CR in the head is rejected") {
        for (const std::string& raw :
             {"GET / HTTP/1.1\rHost: h\r\n\r\n"s, "GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n"s,
              "GET / HTTP/1.1\r\nHost: h\r\n\rX"s, "GET / HTTP/1.1\r\nHost: h\r\n\r\r\n"s,
              "GET / HTTP/1.1\r\nHost: h\r\nX: a\rTransfer-Encoding: chunked\r\n\r\n"s,
              "GET /a\rb HTTP/1.1\r\nHost: h\r\n\r\n"s, "\rGET / HTTP/1.1\r\nHost: h\r\n\r\n"s,
              "GET / HTTP/1.1\r\nX\r: y\r\nHost: h\r\n\r\n"s}) {
            CAPTURE(raw);
            CHECK(outcome(raw) == 400);
        }
        CHECK(reason_of("GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n") == "bare CR");
    }

    // ---------------------------------------------------------------------------------------
    // Field syntax

    TEST_CASE("smuggling: NUL and control bytes in header names are rejected") {
        for (int c = 0; c < 0x20; ++c) {
            if (c == '\r') continue;  // "X\r" is a line without colon, also 400 (below)
            CAPTURE(c);
            CHECK(outcome(post("X"s + static_cast<char>(c) + "A: v\r\n")) == 400);
            CHECK(outcome(post(static_cast<char>(c) + "XA: v\r\n"s)) == 400);
        }
        CHECK(outcome(post("X\x7f"
                           "A: v\r\n")) == 400);
        CHECK(outcome(post("X\rA: v\r\n")) == 400);
        CHECK(outcome(post("X\x80: v\r\n")) == 400);
    }

    TEST_CASE("smuggling: NUL and control bytes in header values are rejected, HTAB allowed") {
        for (int c = 0; c < 0x20; ++c) {
            if (c == '\t' || c == '\r') continue;
            CAPTURE(c);
            CHECK(outcome(post("X-A: a"s + static_cast<char>(c) + "b\r\n")) == 400);
            CHECK(outcome(post("Transfer-Encoding: chunked"s + static_cast<char>(c) + "\r\n")) ==
                  400);
        }
        CHECK(outcome(post("X-A: a\x7f"
                           "b\r\n")) == 400);
        CHECK(reason_of(post("X-A: a\0b\r\n"s)) == "NUL in header value");
        CHECK(reason_of(post("X-A: a\nb\r\n")) == "bare LF");
        Request r;
        REQUIRE(parse(post("X-A: a\tb \x80\xff\r\n"), r) == ParseStatus::Done);
        CHECK(r.headers[1].value == "a\tb \x80\xff");
    }

    TEST_CASE("smuggling: invalid header name characters are rejected") {
        for (const char* line : {"Foo Bar: x", "Foo@: x", ": x", "Foo(: x", "[Foo]: x", "Foo\": x",
                                 "Foo/: x", "Foo;: x", "Foo=: x", "Foo,: x", "Foo{}: x", "Foo\\: x",
                                 "Foo?: x", "Foo<>: x", "\xc3\xa9: x", "NoColon"}) {
            CAPTURE(line);
            CHECK(outcome(post(line + "\r\n"s)) == 400);
        }
        CHECK(reason_of(post(": x\r\n")) == "empty header name");
        CHECK(reason_of(post("Foo@: x\r\n")) == "invalid header name");
    }

    TEST_CASE("smuggling: whitespace before the colon is rejected") {
        for (const char* line :
             {"Host : x", "Transfer-Encoding\t: chunked", "Transfer-Encoding : chunked",
              "Content-Length : 5", "Content-Length\t: 5", "X  : y"}) {
            CAPTURE(line);
            CHECK(outcome(post(line + "\r\n"s)) == 400);
        }
        CHECK(outcome("GET / HTTP/1.1\r\nHost :x\r\n\r\n") == 400);
        CHECK(reason_of(post("Transfer-Encoding\t: chunked\r\n")) == "whitespace before colon");
    }

    TEST_CASE("smuggling: obs-fold is rejected") {
        for (const char* fields :
             {"X: a\r\n b\r\n", "X: a\r\n\tb\r\n", "Transfer-Encoding: \r\n chunked\r\n",
              "Transfer-Encoding: chunked\r\n , identity\r\n", "Content-Length: 5\r\n 6\r\n"}) {
            CAPTURE(fields);
            CHECK(outcome(post(fields)) == 400);
        }
        // A fold as the first field line (whitespace after the request line) too.
        CHECK(outcome("GET / HTTP/1.1\r\n Host: h\r\n\r\n") == 400);
        CHECK(outcome("GET / HTTP/1.1\r\n\tTransfer-Encoding: chunked\r\nHost: h\r\n\r\n") == 400);
        CHECK(reason_of(post("X: a\r\n b\r\n")) == "obs-fold");
    }

    // ---------------------------------------------------------------------------------------
    // Host and the target

    // RFC 9112 §3.2.2: the authority of an absolute-form target wins over Host. The proxy routes
    // on `host` and sends it as the one Host upstream, so both sides see the same host.
    TEST_CASE("smuggling: absolute-form target authority wins over a different Host") {
        Request r;
        REQUIRE(parse(raw_head("GET http://a.example/x?q=1 HTTP/1.1", "Host: b.example\r\n"), r) ==
                ParseStatus::Done);
        CHECK(r.host == "a.example");
        CHECK(r.path == "/x");
        CHECK(r.query == "q=1");

        proxyd::worker::UpstreamRequestInfo info;
        info.path = r.path;
        info.query = r.query;
        info.client_ip = info.real_ip = "192.0.2.1";
        info.request_id = "id";
        info.default_host = "upstream:80";
        std::string head;
        proxyd::worker::build_upstream_request_head(r, info, head);
        CHECK(head.rfind("GET /x?q=1 HTTP/1.1\r\n", 0) == 0);  // origin-form upstream
        CHECK(head.find("\r\nHost: a.example\r\n") != std::string::npos);
        CHECK(head.find("b.example") == std::string::npos);  // nowhere, not even X-Forwarded-Host
        std::size_t hosts = 0;
        for (std::size_t at = head.find("\r\nHost:"); at != std::string::npos;
             at = head.find("\r\nHost:", at + 1))
            ++hosts;
        CHECK(hosts == 1);

        // HTTP/1.0 without a Host line: the authority is the Host sent upstream.
        REQUIRE(parse(raw_head("GET http://a.example/ HTTP/1.0", ""), r) == ParseStatus::Done);
        CHECK(r.host == "a.example");
        head.clear();
        info.path = r.path;
        info.query = r.query;
        proxyd::worker::build_upstream_request_head(r, info, head);
        CHECK(head.find("\r\nHost: a.example\r\n") != std::string::npos);
    }

    TEST_CASE("smuggling: absolute-form with a bad authority or Host is rejected") {
        for (const char* line : {"GET http://user@a.example/ HTTP/1.1", "GET http:///x HTTP/1.1",
                                 "GET http://a.example#frag/ HTTP/1.1", "GET http://a\\b/ HTTP/1.1",
                                 "GET ftp://a.example/ HTTP/1.1", "GET a.example/x HTTP/1.1"}) {
            CAPTURE(line);
            CHECK(outcome(raw_head(line, "Host: a.example\r\n")) == 400);
        }
        // Still exactly one valid Host line in HTTP/1.1.
        CHECK(outcome(raw_head("GET http://a.example/ HTTP/1.1", "")) == 400);
        CHECK(outcome(raw_head("GET http://a.example/ HTTP/1.1",
                               "Host: a.example\r\nHost: a.example\r\n")) == 400);
        CHECK(outcome(raw_head("GET http://a.example/ HTTP/1.1", "Host: a b\r\n")) == 400);
    }

    TEST_CASE("smuggling: multiple Host headers are rejected") {
        for (const char* fields :
             {"Host: a\r\nHost: b\r\n", "Host: a\r\nHost: a\r\n", "Host: a\r\nhost: a\r\n",
              "Host: a\r\nX: y\r\nHOST: b\r\n", "Host: a\r\nHost:\r\n"}) {
            CAPTURE(fields);
            CHECK(outcome(raw_head("GET / HTTP/1.1", fields)) == 400);
            CHECK(outcome(raw_head("GET / HTTP/1.0", fields)) == 400);
        }
        CHECK(reason_of(raw_head("GET / HTTP/1.1", "Host: a\r\nHost: b\r\n")) == "duplicate host");
        // A list in one Host line is not a valid host either.
        CHECK(outcome(raw_head("GET / HTTP/1.1", "Host: a, b\r\n")) == 400);
    }

    TEST_CASE("smuggling: missing Host on HTTP/1.1 is rejected, HTTP/1.0 may omit it") {
        CHECK(outcome(raw_head("GET / HTTP/1.1", "")) == 400);
        CHECK(outcome(raw_head("GET / HTTP/1.1", "X-Host: a\r\n")) == 400);
        CHECK(reason_of(raw_head("GET / HTTP/1.1", "")) == "missing host");
        Request r;
        REQUIRE(parse(raw_head("GET / HTTP/1.0", ""), r) == ParseStatus::Done);
        CHECK(r.host.empty());
    }

    TEST_CASE("smuggling: Host values outside uri-host are rejected") {
        for (const char* host : {"a b", "a@b", "a/b", "a?b", "a#b", "a\\b", "a\"b", "a<b>", "a\x80",
                                 "a{b}", "a|b", "a^b", "a`b"}) {
            CAPTURE(host);
            CHECK(outcome(raw_head("GET / HTTP/1.1", "Host: "s + host + "\r\n")) == 400);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Request line

    TEST_CASE("smuggling: invalid methods are rejected") {
        for (const char* line :
             {"G(T / HTTP/1.1", "GE T / HTTP/1.1", " GET / HTTP/1.1", "GET\t/ HTTP/1.1",
              "GET  / HTTP/1.1", "G\x01T / HTTP/1.1", "G\x80T / HTTP/1.1", "/ HTTP/1.1",
              "GET@ / HTTP/1.1", "GET: / HTTP/1.1"}) {
            CAPTURE(line);
            CHECK(outcome(raw_head(line, "Host: h\r\n")) == 400);
        }
        CHECK(outcome(raw_head("CONNECT a:443 HTTP/1.1", "Host: a:443\r\n")) == 400);
    }

    TEST_CASE("smuggling: HTTP versions: well-formed unsupported 505, malformed 400") {
        for (const char* v : {"HTTP/1.2", "HTTP/2.0", "HTTP/0.9", "HTTP/3.0", "HTTP/1.9"}) {
            CAPTURE(v);
            CHECK(outcome(raw_head("GET / "s + v, "Host: h\r\n")) == 505);
        }
        for (const std::string& v :
             {"HTTP/1.1 "s, "HTTP/1.1\t"s, "HTTP/1.1x"s, "HTTP/1.10"s, "HTTP/01.1"s, "http/1.1"s,
              "HTTP/1.1 HTTP/1.1"s, "HTTP/1"s, "HTTP/1."s, "HTTP/"s, ""s, "HTTP/1.1\0"s,
              "HTTP\\1.1"s, " HTTP/1.1"s, "HTTP/1.1\x0b"s}) {
            CAPTURE(v);
            CHECK(outcome(raw_head("GET / " + v, "Host: h\r\n")) == 400);
        }
        // A second request line hidden after the version.
        CHECK(outcome("GET / HTTP/1.1 GET /admin HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
    }

    TEST_CASE("smuggling: request target bytes outside visible ASCII are rejected") {
        for (const std::string& target :
             {"/a b"s, "/a\tb"s, "/a\0b"s, "/a\x7f"s, "/a\x80"s, "/a\x0b"s, "/a\rb"s, "/a\nb"s}) {
            CAPTURE(target);
            CHECK(outcome(raw_head("GET " + target + " HTTP/1.1", "Host: h\r\n")) == 400);
        }
    }

    TEST_CASE("smuggling: more than a few empty lines before the request line are rejected") {
        CHECK(outcome("\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n") == 0);
        CHECK(outcome("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
        CHECK(outcome("\n\nGET / HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
        CHECK(outcome("\r\rGET / HTTP/1.1\r\nHost: h\r\n\r\n") == 400);
    }

    // ---------------------------------------------------------------------------------------
    // Expect

    TEST_CASE("smuggling: Expect is 100-continue only as that exact token") {
        for (const char* value :
             {"100-continue", "100-Continue", "100-CONTINUE", " 100-continue\t"}) {
            CAPTURE(value);
            Request r;
            REQUIRE(parse(post("Expect: "s + value + "\r\nContent-Length: 3\r\n"), r) ==
                    ParseStatus::Done);
            CHECK(r.expect_continue);
        }
        // Other values are accepted and ignored (the proxy drops Expect; no 417).
        for (const char* value : {"100-continuex", "100-continue, foo", "100-continue;x=1",
                                  "200-ok", "", "100", "\"100-continue\"", "continue"}) {
            CAPTURE(value);
            Request r;
            REQUIRE(parse(post("Expect: "s + value + "\r\nContent-Length: 3\r\n"), r) ==
                    ParseStatus::Done);
            CHECK_FALSE(r.expect_continue);
        }
        // HTTP/1.0 clients cannot take a 100 (RFC 9110 §10.1.1).
        Request r;
        REQUIRE(parse(post("Expect: 100-continue\r\nContent-Length: 3\r\n", "HTTP/1.0"), r) ==
                ParseStatus::Done);
        CHECK_FALSE(r.expect_continue);
    }

    // ---------------------------------------------------------------------------------------
    // A request hidden in a body is body

    TEST_CASE("smuggling: a request inside a Content-Length body is not part of the head") {
        const std::string hidden = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n";
        const std::string raw =
            post("Content-Length: " + std::to_string(hidden.size()) + "\r\n") + hidden;
        Request r;
        REQUIRE(parse(raw, r) == ParseStatus::Done);
        CHECK(r.head_length == raw.size() - hidden.size());
        CHECK(r.body == BodyKind::ContentLength);
        CHECK(r.content_length == hidden.size());
        CHECK(count_headers(r, "host") == 1);
    }
}
