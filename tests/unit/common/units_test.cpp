#include "common/config/units.hpp"

#include <arpa/inet.h>
#include <doctest.h>

#include <cstring>
#include <string>

using namespace proxyd::config;
using namespace std::chrono_literals;

namespace {

// The error text of a duration that must fail (and that it did fail).
std::string duration_error(std::string_view text) {
    std::string error;
    const auto d = parse_duration(text, error);
    CHECK_FALSE(d.has_value());
    return error;
}

std::string size_error(std::string_view text) {
    std::string error;
    const auto s = parse_size(text, error);
    CHECK_FALSE(s.has_value());
    return error;
}

std::string address_error(std::string_view text) {
    SocketAddress out;
    std::string error;
    CHECK_FALSE(parse_socket_address(text, out, error));
    return error;
}

std::string cidr_error(std::string_view text) {
    Cidr out;
    std::string error;
    CHECK_FALSE(parse_cidr(text, out, error));
    return error;
}

const sockaddr_in& as_v4(const SocketAddress& a) {
    return *reinterpret_cast<const sockaddr_in*>(&a.storage);
}

const sockaddr_in6& as_v6(const SocketAddress& a) {
    return *reinterpret_cast<const sockaddr_in6*>(&a.storage);
}

std::string v4_text(const SocketAddress& a) {
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &as_v4(a).sin_addr, buf, sizeof buf);
    return buf;
}

std::string v6_text(const SocketAddress& a) {
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, &as_v6(a).sin6_addr, buf, sizeof buf);
    return buf;
}

}  // namespace

TEST_CASE("parse_duration accepts each unit") {
    std::string error = "stale";
    CHECK(parse_duration("250ms", error) == 250ms);
    CHECK(error.empty());
    CHECK(parse_duration("5s", error) == 5000ms);
    CHECK(parse_duration("2m", error) == 120'000ms);
    CHECK(parse_duration("1h", error) == 3'600'000ms);
    CHECK(parse_duration("0s", error) == 0ms);
    CHECK(parse_duration("86400s", error) == 86'400'000ms);
}

TEST_CASE("parse_duration refuses a bare number with a hint built from it") {
    CHECK(duration_error("5") == R"(duration needs a unit, e.g. "5s")");
    CHECK(duration_error("30") == R"(duration needs a unit, e.g. "30s")");
}

TEST_CASE("parse_duration errors") {
    CHECK(duration_error("") == R"(empty duration; write e.g. "5s")");
    CHECK(duration_error("-5s") == "duration must not be negative");
    CHECK(duration_error("5x") == R"(unknown duration unit "x" in "5x"; use ms, s, m or h)");
    CHECK(duration_error("5 s") == R"(unknown duration unit " s" in "5 s"; use ms, s, m or h)");
    CHECK(duration_error("5S") == R"(unknown duration unit "S" in "5S"; use ms, s, m or h)");
    CHECK(duration_error("1.5s") ==
          R"(invalid duration "1.5s"; use a whole number with a smaller unit)");
    CHECK(duration_error("s") == R"(invalid duration "s"; write a number and a unit, e.g. "5s")");
    CHECK(duration_error("99999999999999999999ms") ==
          R"(duration "99999999999999999999ms" is too large)");
    // Fits in 64 bits as hours, not as milliseconds.
    CHECK(duration_error("3000000000000h") == R"(duration "3000000000000h" is too large)");
}

TEST_CASE("parse_size accepts bytes and binary units") {
    std::string error;
    CHECK(parse_size("512B", error) == 512u);
    CHECK(parse_size("16KiB", error) == 16u * 1024);
    CHECK(parse_size("10MiB", error) == 10u * 1024 * 1024);
    CHECK(parse_size("1GiB", error) == 1024u * 1024 * 1024);
    CHECK(parse_size("2TiB", error) == 2ULL << 40);
    CHECK(parse_size("0B", error) == 0u);
    CHECK(error.empty());
}

TEST_CASE("parse_size errors") {
    CHECK(size_error("") == R"(empty size; write e.g. "16KiB")");
    CHECK(
        size_error("1024") ==
        R"(size "1024" needs a unit (B, KiB, MiB, GiB or TiB), or write it as a plain integer of bytes)");
    CHECK(size_error("10MB") == R"(unknown size unit "MB" in "10MB"; use B, KiB, MiB, GiB or TiB)");
    CHECK(size_error("10kib") ==
          R"(unknown size unit "kib" in "10kib"; use B, KiB, MiB, GiB or TiB)");
    CHECK(size_error("-1KiB") == "size must not be negative");
    CHECK(size_error("KiB") == R"(invalid size "KiB"; write a number and a unit, e.g. "16KiB")");
    CHECK(size_error("1.5MiB") ==
          R"(invalid size "1.5MiB"; use a whole number with a smaller unit)");
    CHECK(size_error("16777216TiB") == R"(size "16777216TiB" is too large)");
    CHECK(size_error("99999999999999999999B") == R"(size "99999999999999999999B" is too large)");
}

TEST_CASE("parse_socket_address IPv4") {
    SocketAddress a;
    std::string error;
    REQUIRE(parse_socket_address("127.0.0.1:8080", a, error));
    CHECK(error.empty());
    CHECK(a.text == "127.0.0.1:8080");
    CHECK(a.length == sizeof(sockaddr_in));
    CHECK(as_v4(a).sin_family == AF_INET);
    CHECK(ntohs(as_v4(a).sin_port) == 8080);
    CHECK(v4_text(a) == "127.0.0.1");

    REQUIRE(parse_socket_address("0.0.0.0:80", a, error));
    CHECK(v4_text(a) == "0.0.0.0");
    CHECK(ntohs(as_v4(a).sin_port) == 80);

    REQUIRE(parse_socket_address("10.1.2.3:65535", a, error));
    CHECK(ntohs(as_v4(a).sin_port) == 65535);
}

TEST_CASE("parse_socket_address wildcard host means 0.0.0.0") {
    SocketAddress a;
    std::string error;
    REQUIRE(parse_socket_address("*:8080", a, error));
    CHECK(a.text == "*:8080");
    CHECK(as_v4(a).sin_family == AF_INET);
    CHECK(v4_text(a) == "0.0.0.0");
    CHECK(ntohs(as_v4(a).sin_port) == 8080);

    REQUIRE(parse_socket_address(":9000", a, error));
    CHECK(v4_text(a) == "0.0.0.0");
    CHECK(ntohs(as_v4(a).sin_port) == 9000);
}

TEST_CASE("parse_socket_address IPv6") {
    SocketAddress a;
    std::string error;
    REQUIRE(parse_socket_address("[::1]:8080", a, error));
    CHECK(a.text == "[::1]:8080");
    CHECK(a.length == sizeof(sockaddr_in6));
    CHECK(as_v6(a).sin6_family == AF_INET6);
    CHECK(ntohs(as_v6(a).sin6_port) == 8080);
    CHECK(v6_text(a) == "::1");

    REQUIRE(parse_socket_address("[::]:443", a, error));
    CHECK(v6_text(a) == "::");
    CHECK(ntohs(as_v6(a).sin6_port) == 443);

    REQUIRE(parse_socket_address("[2001:db8::5]:1", a, error));
    CHECK(v6_text(a) == "2001:db8::5");
}

TEST_CASE("parse_socket_address keeps the caller's place and leaves out alone on error") {
    SocketAddress a;
    a.loc = SourceLoc{7, 3};
    std::string error;
    REQUIRE(parse_socket_address("1.2.3.4:5", a, error));
    CHECK(a.loc.line == 7);
    CHECK(a.loc.column == 3);
    CHECK_FALSE(parse_socket_address("1.2.3.4:0", a, error));
    CHECK(a.text == "1.2.3.4:5");
}

TEST_CASE("parse_socket_address errors") {
    CHECK(address_error("") == R"(empty address; write e.g. "0.0.0.0:8080")");
    CHECK(address_error("127.0.0.1") ==
          R"(address "127.0.0.1" needs a port, e.g. "127.0.0.1:8080")");
    CHECK(address_error("127.0.0.1:0") == R"(port 0 out of range in "127.0.0.1:0" (1 to 65535))");
    CHECK(address_error("127.0.0.1:65536") ==
          R"(port 65536 out of range in "127.0.0.1:65536" (1 to 65535))");
    CHECK(address_error("127.0.0.1:http") == R"(invalid port "http" in "127.0.0.1:http")");
    CHECK(address_error("127.0.0.1:") == R"(invalid port "" in "127.0.0.1:")");
    CHECK(address_error("localhost:80") == R"("localhost" is not a numeric IP address)");
    CHECK(address_error("300.0.0.1:80") == R"("300.0.0.1" is not a numeric IP address)");
    CHECK(address_error("::1:80") ==
          R"(IPv6 address in "::1:80" must be in brackets, e.g. "[::1]:8080")");
    CHECK(address_error("[::1:80") == R"(missing "]" in "[::1:80")");
    CHECK(address_error("[::1]") == R"(address "[::1]" needs a port, e.g. "[::1]:8080")");
    CHECK(address_error("[1.2.3.4]:80") == R"("1.2.3.4" is not a numeric IPv6 address)");
}

TEST_CASE("parse_cidr") {
    Cidr c;
    std::string error;
    REQUIRE(parse_cidr("10.0.0.0/8", c, error));
    CHECK(c.text == "10.0.0.0/8");
    CHECK(c.family == AF_INET);
    CHECK(c.prefix_len == 8);
    CHECK(c.bytes[0] == 10);
    CHECK(c.bytes[1] == 0);

    REQUIRE(parse_cidr("192.168.1.7", c, error));
    CHECK(c.family == AF_INET);
    CHECK(c.prefix_len == 32);
    CHECK(c.bytes[0] == 192);
    CHECK(c.bytes[3] == 7);

    REQUIRE(parse_cidr("::1/128", c, error));
    CHECK(c.family == AF_INET6);
    CHECK(c.prefix_len == 128);
    CHECK(c.bytes[15] == 1);

    REQUIRE(parse_cidr("fd00::", c, error));
    CHECK(c.family == AF_INET6);
    CHECK(c.prefix_len == 128);
    CHECK(c.bytes[0] == 0xfd);

    REQUIRE(parse_cidr("0.0.0.0/0", c, error));
    CHECK(c.prefix_len == 0);

    REQUIRE(parse_cidr("172.16.0.0/12", c, error));
    CHECK(c.bytes[1] == 16);
    CHECK(c.prefix_len == 12);
    CHECK(error.empty());
}

TEST_CASE("parse_cidr errors") {
    CHECK(cidr_error("10.0.0.1/8") ==
          R"(host bits set in "10.0.0.1/8"; did you mean "10.0.0.0/8"?)");
    CHECK(cidr_error("172.31.0.0/12") ==
          R"(host bits set in "172.31.0.0/12"; did you mean "172.16.0.0/12"?)");
    CHECK(cidr_error("2001:db8::1/32") ==
          R"(host bits set in "2001:db8::1/32"; did you mean "2001:db8::/32"?)");
    CHECK(cidr_error("10.0.0.0/33") == R"(invalid prefix length "33" in "10.0.0.0/33" (0 to 32))");
    CHECK(cidr_error("::/129") == R"(invalid prefix length "129" in "::/129" (0 to 128))");
    CHECK(cidr_error("10.0.0.0/") == R"(invalid prefix length "" in "10.0.0.0/" (0 to 32))");
    CHECK(cidr_error("10.0.0.0/x") == R"(invalid prefix length "x" in "10.0.0.0/x" (0 to 32))");
    CHECK(cidr_error("example.com/8") ==
          R"("example.com" is not a numeric IP address (in "example.com/8"))");
    CHECK(cidr_error("") == R"("" is not a numeric IP address (in ""))");
}
