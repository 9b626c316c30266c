#include <doctest.h>

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "common/http/parser.hpp"

using namespace proxyd::http;
using namespace std::string_literals;

namespace {

struct Decoded {
    bool error = false;
    bool done = false;
    std::string data;
    std::size_t leftover = 0;  // input bytes after the end of the body (the next request)
};

// Drives the decoder the way the proxy does (see parser.hpp), piece by piece.
Decoded decode(ChunkedDecoder& dec, const std::vector<std::string_view>& pieces) {
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
            // Without an error, the decoder stops early only at data or at the end of the body.
            if (!out.error && !out.done) CHECK((in.empty() || dec.in_data()));
        }
        out.leftover += in.size();
    }
    return out;
}

Decoded decode(std::string_view body) {
    ChunkedDecoder dec;
    return decode(dec, {body});
}

bool rejected(std::string_view body) {
    return decode(body).error;
}

// Many features in one body: sizes in both cases, extensions, trailers, then pipelined bytes.
const std::string kRich =
    "5;name=value;flag\r\nhello\r\n"
    "1A ; q=\"a \\\"quoted\\\" ;x\"\r\nabcdefghijklmnopqrstuvwxyz\r\n"
    "00001\r\n!\r\n"
    "0;last\r\nX-Checksum: abc\r\nX-Other:\t v \r\n\r\n";
const std::string kRichData = "helloabcdefghijklmnopqrstuvwxyz!";

}  // namespace

TEST_SUITE("chunked") {
    TEST_CASE("simple body") {
        const Decoded d = decode("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
        CHECK_FALSE(d.error);
        CHECK(d.done);
        CHECK(d.data == "hello world");
        CHECK(d.leftover == 0);
    }

    TEST_CASE("empty body") {
        const Decoded d = decode("0\r\n\r\n");
        CHECK(d.done);
        CHECK(d.data.empty());
    }

    TEST_CASE("rich body in one piece, with bytes after it left alone") {
        const Decoded d = decode(kRich + "GET / HTTP/1.1\r\n");
        CHECK_FALSE(d.error);
        CHECK(d.done);
        CHECK(d.data == kRichData);
        CHECK(d.leftover == 16);
    }

    TEST_CASE("every split into two pieces gives the same result") {
        const std::string_view in = kRich;
        for (std::size_t i = 0; i <= in.size(); ++i) {
            CAPTURE(i);
            ChunkedDecoder dec;
            const Decoded d = decode(dec, {in.substr(0, i), in.substr(i)});
            CHECK_FALSE(d.error);
            CHECK(d.done);
            CHECK(d.data == kRichData);
            CHECK(d.leftover == 0);
        }
    }

    TEST_CASE("every split into three pieces gives the same result") {
        const std::string_view in = kRich;
        for (std::size_t i = 0; i <= in.size(); ++i) {
            for (std::size_t j = i; j <= in.size(); ++j) {
                ChunkedDecoder dec;
                const Decoded d = decode(dec, {in.substr(0, i), in.substr(i, j - i), in.substr(j)});
                if (d.error || !d.done || d.data != kRichData) {
                    CAPTURE(i);
                    CAPTURE(j);
                    FAIL("split changed the result");
                }
            }
        }
    }

    TEST_CASE("byte by byte") {
        std::vector<std::string_view> bytes;
        const std::string_view in = kRich;
        for (std::size_t i = 0; i < in.size(); ++i) bytes.push_back(in.substr(i, 1));
        ChunkedDecoder dec;
        const Decoded d = decode(dec, bytes);
        CHECK_FALSE(d.error);
        CHECK(d.done);
        CHECK(d.data == kRichData);
    }

    TEST_CASE("each framing call consumes only framing") {
        const std::string in = "a\r\n0123456789\r\n0\r\n\r\n";
        ChunkedDecoder dec;
        ChunkedDecoder::Result r = dec.parse_framing(in.data(), in.size());
        CHECK_FALSE(r.error);
        CHECK(r.consumed == 3);
        REQUIRE(dec.in_data());
        CHECK(dec.chunk_size() == 10);
        CHECK(dec.data_remaining() == 10);
        // Framing calls while in data consume nothing.
        CHECK(dec.parse_framing(in.data() + 3, in.size() - 3).consumed == 0);
        dec.consume_data(4);
        CHECK(dec.in_data());
        CHECK(dec.data_remaining() == 6);
        dec.consume_data(6);
        CHECK_FALSE(dec.in_data());
        r = dec.parse_framing(in.data() + 13, in.size() - 13);
        CHECK_FALSE(r.error);
        CHECK(r.consumed == in.size() - 13);
        CHECK(dec.done());
        // Done is final: nothing more is consumed.
        CHECK(dec.parse_framing("0\r\n", 3).consumed == 0);
        dec.reset();
        CHECK_FALSE(dec.done());
        r = dec.parse_framing("3\r\n", 3);
        CHECK(r.consumed == 3);
        CHECK(dec.chunk_size() == 3);
    }

    TEST_CASE("hex sizes, either case") {
        CHECK(decode("A\r\n0123456789\r\n0\r\n\r\n").data == "0123456789");
        CHECK(decode("a\r\n0123456789\r\n0\r\n\r\n").data == "0123456789");
        CHECK(decode("0010\r\n0123456789abcdef\r\n0\r\n\r\n").data == "0123456789abcdef");
        ChunkedDecoder dec;
        REQUIRE_FALSE(dec.parse_framing("fF\r\n", 4).error);
        CHECK(dec.data_remaining() == 255);
    }

    TEST_CASE("sizes up to 16 hex digits and at most 2^63-1, no overflow") {
        ChunkedDecoder dec;
        CHECK(dec.parse_framing("FFFFFFFFFFFFFFFF\r\n", 18).error);  // > 2^63-1: rejected
        dec.reset();
        CHECK_FALSE(dec.parse_framing("7FFFFFFFFFFFFFFF\r\n", 18).error);
        CHECK(dec.in_data());
        CHECK(dec.data_remaining() == 0x7FFFFFFFFFFFFFFFULL);
        dec.reset();
        CHECK_FALSE(dec.parse_framing("000000000000000A\r\n", 18).error);
        CHECK(dec.data_remaining() == 10);
        CHECK(rejected("10000000000000000\r\n"));  // 17 digits: would overflow
        CHECK(rejected("0000000000000000A\r\n"));  // 17 digits, even with leading zeros
        CHECK(rejected("FFFFFFFFFFFFFFFFF\r\n"));
        // Detected on the 17th digit, before the line ends.
        dec.reset();
        CHECK(dec.parse_framing("12345678901234567", 17).error);
    }

    TEST_CASE("garbage instead of a size") {
        for (const char* in : {"xyz\r\n", "\r\n", ";a\r\n", "-5\r\n", "+5\r\n", " 5\r\n", "0x5\r\n",
                               "5g\r\n", "\n"}) {
            CAPTURE(in);
            CHECK(rejected(in));
        }
        CHECK(rejected("5\0\r\nhello\r\n0\r\n\r\n"s));
    }

    TEST_CASE("valid chunk extensions are skipped") {
        for (const char* ext : {";a", ";a=b", ";a=\"b c;d\"", "; a = b ; c", ";a=\"q\\\"x\"", " ;a",
                                "\t;\ta\t=\t\"\"", ";a;b;c=d;e=\"\"", ";!#$%&'*+-.^_`|~=x",
                                ";a=\"\xc3\xa9\"", ";a=\"tab\there\""}) {
            CAPTURE(ext);
            const Decoded d = decode("3"s + ext + "\r\nabc\r\n0" + ext + "\r\n\r\n");
            CHECK_FALSE(d.error);
            CHECK(d.done);
            CHECK(d.data == "abc");
        }
    }

    TEST_CASE("malformed chunk extensions are rejected") {
        for (const char* ext :
             {";",         "; ",     ";=b",           ";a=",         ";a= ",     ";a=b c", ";a b",
              ";a=\"open", ";a\x01", ";a=\"\x01\"",   ";a=\"x\"y",   ";a=b\x7f", " ",      "\t",
              ";a ",       ";a=b ",  ";a=\"\\\x01\"", ";a=\xc3\xa9", ";a,b",     ";a=b,c"}) {
            CAPTURE(ext);
            CHECK(rejected("3"s + ext + "\r\nabc\r\n0\r\n\r\n"));
        }
    }

    TEST_CASE("bare LF and bare CR in extensions are rejected") {
        CHECK(rejected("3;a\nabc\r\n0\r\n\r\n"));
        CHECK(rejected("3;a=\"x\ny\"\r\nabc\r\n0\r\n\r\n"));
        CHECK(rejected("3;a=\"x\ry\"\r\nabc\r\n0\r\n\r\n"));
        CHECK(rejected("3;a=b\rc\r\nabc\r\n0\r\n\r\n"));
    }

    TEST_CASE("size line longer than kMaxLineLength is rejected") {
        const std::size_t room = ChunkedDecoder::kMaxLineLength;
        // The limit counts the whole line, CR included.
        const std::string fits = "3;" + std::string(room - 3, 'n');
        CHECK_FALSE(rejected(fits + "\r\nabc\r\n0\r\n\r\n"));
        const std::string too_long = "3;" + std::string(room - 1, 'n');
        CHECK(rejected(too_long + "\r\nabc\r\n0\r\n\r\n"));
        // Caught before the CR arrives.
        CHECK(rejected("3;" + std::string(room * 2, 'n')));
    }

    TEST_CASE("CRLF after the size must be exact") {
        CHECK(rejected("5\nhello\r\n0\r\n\r\n"));
        CHECK(rejected("5\r\rhello\r\n0\r\n\r\n"));
        CHECK(rejected("5\rhello\r\n0\r\n\r\n"));
        // CR and LF inside the data are just data.
        CHECK(decode("5\r\n\r\nhel\r\n0\r\n\r\n").data == "\r\nhel");
    }

    TEST_CASE("data must be followed by exactly CRLF") {
        CHECK(rejected("5\r\nhelloX\r\n0\r\n\r\n"));
        CHECK(rejected("5\r\nhello\n0\r\n\r\n"));
        CHECK(rejected("5\r\nhello\rX0\r\n\r\n"));
        CHECK(rejected("5\r\nhello\r\r\n0\r\n\r\n"));
        CHECK(rejected("5\r\nhello0\r\n\r\n"));            // missing CRLF entirely
        CHECK(rejected("5\r\nhello world\r\n0\r\n\r\n"));  // longer data than announced
    }

    TEST_CASE("the final CRLF must be exact") {
        CHECK(rejected("0\r\n\n"));
        CHECK(rejected("0\r\n\r\r"));
        CHECK(rejected("0\r\n\rX"));
        CHECK(rejected("0\n\r\n"));
        const Decoded partial = decode("0\r\n\r");
        CHECK_FALSE(partial.error);
        CHECK_FALSE(partial.done);
    }

    TEST_CASE("trailers are validated like headers") {
        Decoded d = decode("0\r\nX-A: 1\r\nX-B:\r\nX-C:\tv w\t\r\n\r\n");
        CHECK_FALSE(d.error);
        CHECK(d.done);
        for (const char* trailer :
             {"X-A: 1\r\n 2\r\n", "X-A: 1\r\n\t2\r\n", " X: 1\r\n", "X-A : 1\r\n", ": 1\r\n",
              "X@A: 1\r\n", "X-A: a\x01\r\n", "X-A: a\x7f\r\n", "X-A: 1\n", "X-A: 1\rX\r\n",
              "NoColon\r\n", "X-A\r\n"}) {
            CAPTURE(trailer);
            CHECK(rejected("0\r\n"s + trailer + "\r\n"));
        }
        CHECK(rejected("0\r\nX-A: a\0b\r\n\r\n"s));
    }

    TEST_CASE("trailer limits") {
        const std::size_t line_room = ChunkedDecoder::kMaxLineLength;
        const std::string fits = "X:" + std::string(line_room - 3, 'v');  // + CR = the limit
        CHECK_FALSE(rejected("0\r\n" + fits + "\r\n\r\n"));
        CHECK(rejected("0\r\n" + fits + "v\r\n\r\n"));

        // Many short lines, each fine, together too much.
        std::string many;
        const std::string line = "X-T: " + std::string(100, 'v') + "\r\n";
        while (many.size() + line.size() + 2 <= ChunkedDecoder::kMaxTrailerBytes) many += line;
        CHECK_FALSE(rejected("0\r\n" + many + "\r\n"));
        CHECK(rejected("0\r\n" + many + line + "\r\n"));
    }

    TEST_CASE("an error is sticky") {
        ChunkedDecoder dec;
        CHECK(dec.parse_framing("zz", 2).error);
        const ChunkedDecoder::Result r = dec.parse_framing("5\r\n", 3);
        CHECK(r.error);
        CHECK(r.consumed == 0);
        CHECK_FALSE(dec.in_data());
        CHECK_FALSE(dec.done());
        dec.reset();
        CHECK_FALSE(dec.parse_framing("5\r\n", 3).error);
        CHECK(dec.in_data());
    }

    TEST_CASE("a new body after reset, on the same decoder") {
        ChunkedDecoder dec;
        Decoded first = decode(dec, {"3\r\nabc\r\n0\r\n\r\n"});
        CHECK(first.done);
        dec.reset();
        Decoded second = decode(dec, {"2\r\nxy\r\n0\r\n\r\n"});
        CHECK(second.done);
        CHECK(second.data == "xy");
    }
}
