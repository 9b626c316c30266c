#include <doctest.h>

#include <map>

#include "worker/balancer/round_robin.hpp"
#include "worker/real_ip.hpp"
#include "worker/request_id.hpp"

using namespace proxyd;

namespace {
std::vector<worker::ServerView> three_servers() {
    return std::vector<worker::ServerView>(3);
}
}  // namespace

TEST_CASE("round robin rotates through every server evenly, ignoring weights") {
    worker::RoundRobin rr;
    auto servers = three_servers();
    servers[0].weight = 10;
    bool excluded[3] = {};
    std::map<std::size_t, int> counts;
    for (int i = 0; i < 300; ++i) counts[*rr.pick(servers, excluded, {})]++;
    CHECK(counts[0] == 100);
    CHECK(counts[1] == 100);
    CHECK(counts[2] == 100);
}

TEST_CASE("round robin retries walk on to the other servers once each") {
    worker::RoundRobin rr(1);
    auto servers = three_servers();
    bool excluded[3] = {};
    std::size_t first = *rr.pick(servers, excluded, {});
    CHECK(first == 1);
    excluded[1] = true;
    CHECK(rr.pick(servers, excluded, {}) == 2u);
    excluded[2] = true;
    CHECK(rr.pick(servers, excluded, {}) == 0u);
    excluded[0] = true;
    CHECK_FALSE(rr.pick(servers, excluded, {}).has_value());  // every server tried
    bool none[3] = {};
    CHECK(rr.pick(servers, none, {}) == 1u);  // the next request continues after the last pick
}

TEST_CASE("round robin skips unusable servers and keeps rotating over the rest") {
    worker::RoundRobin rr;
    auto servers = three_servers();
    servers[1].usable = false;
    bool excluded[3] = {};
    std::map<std::size_t, int> counts;
    for (int i = 0; i < 200; ++i) counts[*rr.pick(servers, excluded, {})]++;
    CHECK(counts[0] == 100);
    CHECK(counts[1] == 0);
    CHECK(counts[2] == 100);
}

TEST_CASE("workers start at different offsets") {
    worker::RoundRobin a(0), b(1);
    std::vector<worker::ServerView> servers(2);
    bool excluded[2] = {};
    CHECK(a.pick(servers, excluded, {}) != b.pick(servers, excluded, {}));
}

TEST_CASE("request ids: validation and generation") {
    CHECK(worker::is_valid_request_id("abc-DEF_1.2"));
    CHECK(worker::is_valid_request_id(std::string(128, 'a')));
    CHECK_FALSE(worker::is_valid_request_id(std::string(129, 'a')));
    CHECK_FALSE(worker::is_valid_request_id(""));
    CHECK_FALSE(worker::is_valid_request_id("has space"));
    CHECK_FALSE(worker::is_valid_request_id("semi;colon"));
    worker::RequestIdGenerator gen(42);
    std::string first(gen.next());
    std::string second(gen.next());
    CHECK(first.size() == 32);
    CHECK(first != second);
    CHECK(worker::is_valid_request_id(first));
    worker::RequestIdGenerator other(43);
    CHECK(std::string(other.next()) != first);
}

namespace {
config::Cidr cidr(int family, std::initializer_list<unsigned char> bytes, int prefix) {
    config::Cidr c;
    c.family = family;
    int i = 0;
    for (auto b : bytes) c.bytes[i++] = b;
    c.prefix_len = prefix;
    return c;
}
}  // namespace

TEST_CASE("real ip: only trusted peers may set it, right-most untrusted wins") {
    std::vector<config::Cidr> trusted = {cidr(AF_INET, {127, 0, 0, 1}, 32),
                                         cidr(AF_INET, {10, 0, 0, 0}, 8)};
    std::vector<std::string_view> header = {"203.0.113.7, 10.1.2.3"};
    CHECK(worker::select_real_ip("127.0.0.1", header, trusted) == "203.0.113.7");
    CHECK(worker::select_real_ip("192.0.2.1", header, trusted) == "192.0.2.1");
    std::vector<std::string_view> spoofed = {"1.1.1.1, 203.0.113.7"};
    CHECK(worker::select_real_ip("127.0.0.1", spoofed, trusted) == "203.0.113.7");
    std::vector<std::string_view> all_trusted = {"10.0.0.1"};
    CHECK(worker::select_real_ip("127.0.0.1", all_trusted, trusted) == "10.0.0.1");
    std::vector<std::string_view> garbage = {"not-an-ip"};
    CHECK(worker::select_real_ip("127.0.0.1", garbage, trusted) == "127.0.0.1");
    CHECK(worker::select_real_ip("127.0.0.1", {}, trusted) == "127.0.0.1");
    CHECK(worker::address_in_cidrs("10.255.0.1", trusted));
    CHECK_FALSE(worker::address_in_cidrs("11.0.0.1", trusted));
}
