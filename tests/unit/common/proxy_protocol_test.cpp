#include "common/net/proxy_protocol.hpp"

#include <arpa/inet.h>
#include <doctest.h>
#include <netinet/in.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

using namespace proxyd;
using net::ProxyHeader;
using net::ProxyHeaderStatus;

namespace {

ProxyHeaderStatus parse(const std::string& data, ProxyHeader& out) {
    return net::parse_proxy_header(data.data(), data.size(), out);
}

ProxyHeaderStatus parse(const std::string& data) {
    ProxyHeader out;
    return parse(data, out);
}

std::string text_of(const sockaddr_storage& ss) {
    char buf[INET6_ADDRSTRLEN] = "";
    if (ss.ss_family == AF_INET) {
        auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
        ::inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf);
    } else if (ss.ss_family == AF_INET6) {
        auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
        ::inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof buf);
    }
    return buf;
}

int port_of(const sockaddr_storage& ss) {
    if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port);
    return -1;
}

const std::string kSignature("\r\n\r\n\0\r\nQUIT\n", 12);

void put16(std::string& s, unsigned value) {
    s.push_back(static_cast<char>((value >> 8) & 0xff));
    s.push_back(static_cast<char>(value & 0xff));
}

void put_address(std::string& s, int family, const char* text) {
    unsigned char bytes[16];
    REQUIRE(::inet_pton(family, text, bytes) == 1);
    s.append(reinterpret_cast<const char*>(bytes), family == AF_INET ? 4 : 16);
}

// A v2 header: signature, version/command byte, family byte, then `body` (addresses + TLVs).
std::string v2(unsigned char ver_cmd, unsigned char family, const std::string& body) {
    std::string s = kSignature;
    s.push_back(static_cast<char>(ver_cmd));
    s.push_back(static_cast<char>(family));
    put16(s, static_cast<unsigned>(body.size()));
    s.append(body);
    return s;
}

std::string v2_inet_body() {
    std::string body;
    put_address(body, AF_INET, "192.0.2.10");
    put_address(body, AF_INET, "198.51.100.1");
    put16(body, 51000);
    put16(body, 443);
    return body;
}

std::string v2_inet6_body() {
    std::string body;
    put_address(body, AF_INET6, "2001:db8::7");
    put_address(body, AF_INET6, "2001:db8::1:2");
    put16(body, 1);
    put16(body, 65535);
    return body;
}

std::string tlv(unsigned char type, const std::string& value) {
    std::string s(1, static_cast<char>(type));
    put16(s, static_cast<unsigned>(value.size()));
    s.append(value);
    return s;
}

// Feeding the header one byte more at a time: Incomplete for every proper prefix, then the same
// result as the whole.
void check_incremental(const std::string& header, ProxyHeaderStatus final_status) {
    for (std::size_t n = 0; n < header.size(); ++n) {
        ProxyHeader out;
        auto st = net::parse_proxy_header(header.data(), n, out);
        REQUIRE_MESSAGE(st == ProxyHeaderStatus::Incomplete, "prefix of " << n << " bytes");
    }
    ProxyHeader out;
    CHECK(net::parse_proxy_header(header.data(), header.size(), out) == final_status);
}

}  // namespace

TEST_CASE("proxy protocol v1: TCP4 and TCP6, the request after it is not consumed") {
    const std::string line = "PROXY TCP4 192.0.2.10 198.51.100.1 51000 443\r\n";
    std::string data = line;
    data.append("GET / HTTP/1.1\r\n");
    ProxyHeader out;
    REQUIRE(parse(data, out) == ProxyHeaderStatus::Done);
    CHECK(out.length == line.size());
    CHECK_FALSE(out.local);
    CHECK(out.source.ss_family == AF_INET);
    CHECK(text_of(out.source) == "192.0.2.10");
    CHECK(port_of(out.source) == 51000);
    CHECK(text_of(out.destination) == "198.51.100.1");
    CHECK(port_of(out.destination) == 443);

    const std::string line6 = "PROXY TCP6 2001:db8::7 ::1 0 65535\r\n";
    REQUIRE(parse(line6, out) == ProxyHeaderStatus::Done);
    CHECK(out.length == line6.size());
    CHECK(out.source.ss_family == AF_INET6);
    CHECK(text_of(out.source) == "2001:db8::7");
    CHECK(port_of(out.source) == 0);
    CHECK(text_of(out.destination) == "::1");
    CHECK(port_of(out.destination) == 65535);

    // v4-mapped is an IPv6 address
    CHECK(parse("PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n") == ProxyHeaderStatus::Done);
}

TEST_CASE("proxy protocol v1: the longest line (107 bytes) is accepted") {
    const std::string line =
        "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    REQUIRE(line.size() == 104);
    ProxyHeader out;
    REQUIRE(parse(line, out) == ProxyHeaderStatus::Done);
    CHECK(out.length == 104);
    // UNKNOWN may carry anything up to the 107-byte limit
    std::string unknown = "PROXY UNKNOWN ";
    unknown.append(107 - unknown.size() - 2, 'x');
    unknown.append("\r\n");
    REQUIRE(unknown.size() == 107);
    REQUIRE(parse(unknown, out) == ProxyHeaderStatus::Done);
    CHECK(out.length == 107);
    std::string too_long = "PROXY UNKNOWN ";
    too_long.append(107 - too_long.size() - 1, 'x');
    too_long.append("\r\n");
    CHECK(parse(too_long, out) == ProxyHeaderStatus::Error);
    CHECK(std::strlen(out.error) > 0);
}

TEST_CASE("proxy protocol v1: UNKNOWN keeps the TCP peer") {
    ProxyHeader out;
    REQUIRE(parse("PROXY UNKNOWN\r\nGET", out) == ProxyHeaderStatus::Done);
    CHECK(out.local);
    CHECK(out.length == 15);
    CHECK(out.source.ss_family == AF_UNSPEC);
    REQUIRE(parse("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", out) == ProxyHeaderStatus::Done);
    CHECK(out.local);
}

TEST_CASE("proxy protocol v1: malformed lines are errors") {
    for (const char* bad : {
             "PROXY TCP4 192.0.2.10 198.51.100.1 51000 443\n",     // bare LF
             "PROXY TCP4 192.0.2.10 198.51.100.1 51000 443\rX",    // CR without LF
             "PROXY TCP4 192.0.2.10 198.51.100.1 51000 443 \r\n",  // trailing space
             "PROXY TCP4  192.0.2.10 198.51.100.1 51000 443\r\n",  // double space
             "PROXY TCP4 192.0.2.10  198.51.100.1 51000 443\r\n",
             "PROXY  TCP4 192.0.2.10 198.51.100.1 51000 443\r\n",
             "PROXY TCP4 192.0.2.10\t198.51.100.1 51000 443\r\n",   // tab
             "PROXY TCP4 192.0.2.10 198.51.100.1 51000\r\n",        // missing port
             "PROXY TCP4 192.0.2.10 198.51.100.1 51000 443 1\r\n",  // extra field
             "PROXY TCP4\r\n",
             "PROXY TCP4 \r\n",
             "PROXY \r\n",
             "PROXY\r\n",
             "PROXY tcp4 192.0.2.10 198.51.100.1 51000 443\r\n",  // case
             "PROXY TCP5 192.0.2.10 198.51.100.1 51000 443\r\n",
             "PROXY UDP4 192.0.2.10 198.51.100.1 51000 443\r\n",
             "PROXY UNKNOWNX\r\n",
             "PROXY TCP4 2001:db8::1 198.51.100.1 51000 443\r\n",  // wrong family
             "PROXY TCP6 192.0.2.10 ::1 51000 443\r\n",
             "PROXY TCP4 192.0.2.256 198.51.100.1 51000 443\r\n",
             "PROXY TCP4 192.0.2 198.51.100.1 51000 443\r\n",
             "PROXY TCP4 192.0.2.010 198.51.100.1 51000 443\r\n",  // leading zero octet
             "PROXY TCP4 0x7f.0.0.1 198.51.100.1 51000 443\r\n",
             "PROXY TCP4 localhost 198.51.100.1 51000 443\r\n",
             "PROXY TCP6 fe80::1%eth0 ::1 51000 443\r\n",  // zone id
             "PROXY TCP6 [::1] ::1 51000 443\r\n",
             "PROXY TCP4 192.0.2.10 198.51.100.1 65536 443\r\n",  // port range
             "PROXY TCP4 192.0.2.10 198.51.100.1 99999 443\r\n",
             "PROXY TCP4 192.0.2.10 198.51.100.1 123456 443\r\n",
             "PROXY TCP4 192.0.2.10 198.51.100.1 +80 443\r\n",
             "PROXY TCP4 192.0.2.10 198.51.100.1 -1 443\r\n",
             "PROXY TCP4 192.0.2.10 198.51.100.1 080 443\r\n",  // leading zero
             "PROXY TCP4 192.0.2.10 198.51.100.1 80x 443\r\n",
             "PROXY TCP4 192.0.2.10 198.51.100.1 80 44 3\r\n",
             "PROXY TCP4 192.0.2.10 198.51.100.1 80 \r\n",
             "PROXY TCP4 192.0.2.10 198.51.100.1 80 443\x01\r\n",  // control byte
             "PROXY UNKNOWN \x7f\r\n",
             "proxy TCP4 192.0.2.10 198.51.100.1 51000 443\r\n",
             "PROXI TCP4 192.0.2.10 198.51.100.1 51000 443\r\n",
             "GET / HTTP/1.1\r\n",
             "\r\r",
             "X",
         }) {
        ProxyHeader out;
        CHECK_MESSAGE(parse(bad, out) == ProxyHeaderStatus::Error, std::string(bad));
        CHECK_MESSAGE(std::strlen(out.error) > 0, std::string(bad));
    }
    // a NUL inside the line
    CHECK(parse(std::string("PROXY UNKNOWN \0\r\n", 17)) == ProxyHeaderStatus::Error);
    // 107 bytes without a line end
    CHECK(parse("PROXY UNKNOWN " + std::string(93, 'x')) == ProxyHeaderStatus::Error);
    CHECK(parse("PROXY UNKNOWN " + std::string(92, 'x')) == ProxyHeaderStatus::Incomplete);
}

TEST_CASE("proxy protocol v1: byte-by-byte feeding, garbage detected early") {
    check_incremental("PROXY TCP4 192.0.2.10 198.51.100.1 51000 443\r\n", ProxyHeaderStatus::Done);
    check_incremental("PROXY TCP6 2001:db8::7 ::1 0 65535\r\n", ProxyHeaderStatus::Done);
    check_incremental("PROXY UNKNOWN\r\n", ProxyHeaderStatus::Done);
    CHECK(parse("") == ProxyHeaderStatus::Incomplete);
    CHECK(parse("PRO") == ProxyHeaderStatus::Incomplete);
    CHECK(parse("PROXY") == ProxyHeaderStatus::Incomplete);
    CHECK(parse("PROXY TCP4 1") == ProxyHeaderStatus::Incomplete);
    CHECK(parse("PROXY TCP4 1\r") == ProxyHeaderStatus::Incomplete);
    CHECK(parse("POST") == ProxyHeaderStatus::Error);  // not "PROXY " from the second byte on
    CHECK(parse("G") == ProxyHeaderStatus::Error);
    CHECK(parse("PROXY TCP4 1\n") == ProxyHeaderStatus::Error);
}

TEST_CASE("proxy protocol v2: PROXY over IPv4 and IPv6, with TLVs skipped") {
    std::string body = v2_inet_body();
    body.append(tlv(0x01, "h2"));                  // ALPN
    body.append(tlv(0x02, "app.example.com"));     // authority
    body.append(tlv(0x04, ""));                    // NOOP, empty
    body.append(tlv(0x20, std::string(5, '\0')));  // SSL
    std::string header = v2(0x21, 0x11, body);
    std::string data = header;
    data.append("GET / HTTP/1.1\r\n");
    ProxyHeader out;
    REQUIRE(parse(data, out) == ProxyHeaderStatus::Done);
    CHECK(out.length == header.size());
    CHECK_FALSE(out.local);
    CHECK(text_of(out.source) == "192.0.2.10");
    CHECK(port_of(out.source) == 51000);
    CHECK(text_of(out.destination) == "198.51.100.1");
    CHECK(port_of(out.destination) == 443);

    std::string header6 = v2(0x21, 0x21, v2_inet6_body() + tlv(0xEA, "vpce-123"));
    REQUIRE(parse(header6, out) == ProxyHeaderStatus::Done);
    CHECK(out.length == header6.size());
    CHECK_FALSE(out.local);
    CHECK(out.source.ss_family == AF_INET6);
    CHECK(text_of(out.source) == "2001:db8::7");
    CHECK(port_of(out.source) == 1);
    CHECK(text_of(out.destination) == "2001:db8::1:2");
    CHECK(port_of(out.destination) == 65535);

    // without TLVs
    REQUIRE(parse(v2(0x21, 0x11, v2_inet_body()), out) == ProxyHeaderStatus::Done);
    CHECK(out.length == 16 + 12);
}

TEST_CASE("proxy protocol v2: LOCAL, AF_UNSPEC and AF_UNIX keep the TCP peer") {
    ProxyHeader out;
    REQUIRE(parse(v2(0x20, 0x00, ""), out) == ProxyHeaderStatus::Done);
    CHECK(out.local);
    CHECK(out.length == 16);
    CHECK(out.source.ss_family == AF_UNSPEC);
    // LOCAL ignores the family and whatever block it carries
    REQUIRE(parse(v2(0x20, 0x11, v2_inet_body()), out) == ProxyHeaderStatus::Done);
    CHECK(out.local);
    CHECK(out.length == 28);
    CHECK(out.source.ss_family == AF_UNSPEC);
    REQUIRE(parse(v2(0x20, 0x77, "xyz"), out) == ProxyHeaderStatus::Done);
    CHECK(out.local);

    REQUIRE(parse(v2(0x21, 0x00, ""), out) == ProxyHeaderStatus::Done);
    CHECK(out.local);
    std::string unix_body(216, '\0');
    std::memcpy(unix_body.data(), "/run/lb.sock", 12);
    REQUIRE(parse(v2(0x21, 0x31, unix_body), out) == ProxyHeaderStatus::Done);
    CHECK(out.local);
    CHECK(out.length == 16 + 216);
}

TEST_CASE("proxy protocol v2: malformed headers are errors") {
    const std::string inet = v2_inet_body();
    struct Case {
        const char* what;
        std::string data;
    };
    std::string bad_signature = v2(0x21, 0x11, inet);
    bad_signature[6] = 'X';
    std::string too_long = kSignature;
    too_long.append("\x21\x11");
    put16(too_long, 4097);
    std::string max_len = kSignature;
    max_len.append("\x21\x11");
    put16(max_len, 0xffff);
    std::vector<Case> cases = {
        {"bad signature", bad_signature},
        {"version 1", v2(0x11, 0x11, inet)},
        {"version 3", v2(0x31, 0x11, inet)},
        {"version 0", v2(0x01, 0x11, inet)},
        {"command 2", v2(0x22, 0x11, inet)},
        {"command 15", v2(0x2f, 0x11, inet)},
        {"length > 4096", too_long},
        {"length 65535", max_len},
        {"DGRAM over IPv4", v2(0x21, 0x12, inet)},
        {"DGRAM over IPv6", v2(0x21, 0x22, v2_inet6_body())},
        {"UNSPEC transport over IPv4", v2(0x21, 0x10, inet)},
        {"unix DGRAM", v2(0x21, 0x32, std::string(216, '\0'))},
        {"UNSPEC family with STREAM", v2(0x21, 0x01, "")},
        {"family 4", v2(0x21, 0x41, inet)},
        {"transport 3", v2(0x21, 0x13, inet)},
        {"IPv4 block too short", v2(0x21, 0x11, inet.substr(0, 11))},
        {"IPv6 block too short", v2(0x21, 0x21, v2_inet6_body().substr(0, 35))},
        {"IPv6 family with an IPv4 block", v2(0x21, 0x21, inet)},
        {"unix block too short", v2(0x21, 0x31, std::string(215, '\0'))},
        {"truncated TLV header", v2(0x21, 0x11, inet + std::string("\x01\x00", 2))},
        {"TLV longer than the header", v2(0x21, 0x11, inet + tlv(0x01, "h2").substr(0, 4))},
        {"TLV then junk", v2(0x21, 0x11, inet + tlv(0x01, "h2") + "x")},
        {"v1 sign after v2 start", std::string("\r\nPROXY")},
    };
    for (const auto& c : cases) {
        ProxyHeader out;
        CHECK_MESSAGE(parse(c.data, out) == ProxyHeaderStatus::Error, std::string(c.what));
        CHECK_MESSAGE(std::strlen(out.error) > 0, std::string(c.what));
    }
    // exactly 4096 bytes after the fixed part is fine
    std::string big = inet;
    big.append(tlv(0x04, std::string(4096 - 12 - 3, 'p')));
    ProxyHeader out;
    REQUIRE(parse(v2(0x21, 0x11, big), out) == ProxyHeaderStatus::Done);
    CHECK(out.length == 16 + 4096);
}

TEST_CASE("proxy protocol v2: byte-by-byte feeding") {
    check_incremental(v2(0x21, 0x11, v2_inet_body() + tlv(0x02, "a.example")),
                      ProxyHeaderStatus::Done);
    check_incremental(v2(0x21, 0x21, v2_inet6_body()), ProxyHeaderStatus::Done);
    check_incremental(v2(0x20, 0x00, ""), ProxyHeaderStatus::Done);
    // an error shows as soon as the offending byte arrives
    std::string wrong_version = v2(0x11, 0x11, v2_inet_body());
    CHECK(parse(wrong_version.substr(0, 13)) == ProxyHeaderStatus::Error);
    CHECK(parse(std::string("\r\n\r\n\0\r\nQUIX", 11)) == ProxyHeaderStatus::Error);
    CHECK(parse(std::string("\r\n\r\n\0\r\nQUI", 10)) == ProxyHeaderStatus::Incomplete);
    // the body must be complete: one byte short of a long TLV is still Incomplete
    std::string long_tlv = v2(0x21, 0x11, v2_inet_body() + tlv(0x04, std::string(3000, 'p')));
    CHECK(parse(long_tlv.substr(0, long_tlv.size() - 1)) == ProxyHeaderStatus::Incomplete);
}
