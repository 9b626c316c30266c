// merge_servers(): a worker's server list after a runtime change only grows; positions held by
// requests in flight stay valid.
#include "worker/server_merge.hpp"

#include <doctest.h>

#include <string>
#include <vector>

#include "common/config/units.hpp"

using namespace proxyd;
using config::UpstreamServer;
using worker::merge_servers;

namespace {

UpstreamServer server(const std::string& id, const std::string& address,
                      std::uint32_t state_index = 0) {
    UpstreamServer s;
    s.id = id;
    std::string error;
    REQUIRE_MESSAGE(config::parse_socket_address(address, s.address, error), error);
    s.state_index = state_index;
    return s;
}

// a, b, c at state indices 0, 1, 2.
std::vector<UpstreamServer> three() {
    return {server("a", "127.0.0.1:3001", 0), server("b", "127.0.0.1:3002", 1),
            server("c", "127.0.0.1:3003", 2)};
}

// "id@address" of each entry, a retired one marked with "!", comma-separated.
std::string shape(const std::vector<UpstreamServer>& servers) {
    std::string out;
    for (const auto& s : servers) {
        if (!out.empty()) out += ",";
        out += (s.retired ? "!" : "") + s.id + "@" + s.address.text;
    }
    return out;
}

}  // namespace

TEST_CASE("merge: the same list changes nothing") {
    auto current = three();
    merge_servers(current, three());
    CHECK(shape(current) == "a@127.0.0.1:3001,b@127.0.0.1:3002,c@127.0.0.1:3003");
    CHECK(current[1].state_index == 1);
}

TEST_CASE("merge: unchanged servers keep their positions and take the new values in place") {
    auto current = three();
    current[0].hostname = "kept.internal";  // not among the values a merge updates
    auto c = server("c", "127.0.0.1:3003", 12);
    c.weight = 9;
    auto a = server("a", "127.0.0.1:3001", 10);
    a.weight = 5;
    a.max_connections = 40;
    a.backup = true;
    a.drain = true;
    a.hostname = "other.internal";
    auto b = server("b", "127.0.0.1:3002", 11);
    merge_servers(current, {c, a, b});  // in another order

    CHECK(shape(current) == "a@127.0.0.1:3001,b@127.0.0.1:3002,c@127.0.0.1:3003");
    CHECK(current[0].weight == 5);
    CHECK(current[0].max_connections == 40);
    CHECK(current[0].backup);
    CHECK(current[0].drain);
    CHECK(current[0].state_index == 10);
    CHECK(current[0].hostname == "kept.internal");
    CHECK(current[1].weight == 1);
    CHECK(current[1].state_index == 11);
    CHECK(current[2].weight == 9);
    CHECK(current[2].state_index == 12);
}

TEST_CASE("merge: drain and backup are switched off again in place") {
    auto current = three();
    current[1].drain = true;
    current[1].backup = true;
    current[1].max_connections = 3;
    merge_servers(current, three());
    CHECK_FALSE(current[1].drain);
    CHECK_FALSE(current[1].backup);
    CHECK(current[1].max_connections == 0);
}

TEST_CASE("merge: a server not in the incoming list is retired where it stands") {
    auto current = three();
    current[1].weight = 6;
    merge_servers(current, {server("a", "127.0.0.1:3001", 0), server("c", "127.0.0.1:3003", 2)});
    CHECK(shape(current) == "a@127.0.0.1:3001,!b@127.0.0.1:3002,c@127.0.0.1:3003");
    CHECK(current[1].weight == 6);  // otherwise untouched
    CHECK(current[1].state_index == 1);

    // Still retired after a further merge without it.
    merge_servers(current, {server("a", "127.0.0.1:3001", 0), server("c", "127.0.0.1:3003", 2)});
    CHECK(shape(current) == "a@127.0.0.1:3001,!b@127.0.0.1:3002,c@127.0.0.1:3003");
}

TEST_CASE("merge: an empty incoming list retires every server") {
    auto current = three();
    merge_servers(current, {});
    CHECK(shape(current) == "!a@127.0.0.1:3001,!b@127.0.0.1:3002,!c@127.0.0.1:3003");
}

TEST_CASE("merge: a new server is appended") {
    auto current = three();
    auto incoming = three();
    auto d = server("d", "127.0.0.1:3004", 3);
    d.weight = 2;
    incoming.insert(incoming.begin(), d);  // first in the incoming list, last in the merged one
    merge_servers(current, incoming);
    CHECK(shape(current) == "a@127.0.0.1:3001,b@127.0.0.1:3002,c@127.0.0.1:3003,d@127.0.0.1:3004");
    CHECK(current[3].weight == 2);
    CHECK(current[3].state_index == 3);
}

TEST_CASE("merge: new servers are appended in their incoming order") {
    std::vector<UpstreamServer> current;
    merge_servers(current, {server("x", "127.0.0.1:1"), server("y", "127.0.0.1:2")});
    CHECK(shape(current) == "x@127.0.0.1:1,y@127.0.0.1:2");
}

TEST_CASE("merge: a retired server coming back with the same id and address is revived") {
    auto current = three();
    merge_servers(current, {server("a", "127.0.0.1:3001", 0), server("c", "127.0.0.1:3003", 2)});
    REQUIRE(current[1].retired);

    auto back = three();
    back[1].weight = 4;
    back[1].state_index = 7;
    merge_servers(current, back);
    CHECK(current.size() == 3);  // no growth
    CHECK(shape(current) == "a@127.0.0.1:3001,b@127.0.0.1:3002,c@127.0.0.1:3003");
    CHECK(current[1].weight == 4);
    CHECK(current[1].state_index == 7);
}

TEST_CASE("merge: the same id at another address retires the old entry and appends the new") {
    auto current = three();
    auto incoming = three();
    incoming[1] = server("b", "127.0.0.1:4002", 3);
    merge_servers(current, incoming);
    CHECK(shape(current) ==
          "a@127.0.0.1:3001,!b@127.0.0.1:3002,c@127.0.0.1:3003,"
          "b@127.0.0.1:4002");
    CHECK(current[3].state_index == 3);

    // Moved back: the first entry is revived, the second retired; still four entries.
    merge_servers(current, three());
    CHECK(shape(current) ==
          "a@127.0.0.1:3001,b@127.0.0.1:3002,c@127.0.0.1:3003,"
          "!b@127.0.0.1:4002");
}

TEST_CASE("merge: another id at the same address is another server") {
    auto current = three();
    auto incoming = three();
    incoming[2].id = "c2";
    merge_servers(current, incoming);
    CHECK(shape(current) ==
          "a@127.0.0.1:3001,b@127.0.0.1:3002,!c@127.0.0.1:3003,"
          "c2@127.0.0.1:3003");
}

TEST_CASE("merge: a change of TLS settings makes another endpoint") {
    auto current = three();
    current[0].tls = true;
    current[0].sni = "a.test";
    current[0].ca_pem = "PEM-1";
    auto incoming = current;
    SUBCASE("tls switched off") {
        incoming[0].tls = false;
        incoming[0].sni.clear();
        incoming[0].ca_pem.clear();
    }
    SUBCASE("tls switched on") {
        incoming[1].tls = true;
    }
    SUBCASE("another sni") {
        incoming[0].sni = "b.test";
    }
    SUBCASE("verify off") {
        incoming[0].verify = false;
    }
    SUBCASE("another CA bundle") {
        incoming[0].ca_pem = "PEM-2";
    }
    std::size_t changed = 0;
    for (std::size_t i = 0; i < incoming.size(); ++i) {
        if (incoming[i].tls != current[i].tls || incoming[i].sni != current[i].sni ||
            incoming[i].verify != current[i].verify || incoming[i].ca_pem != current[i].ca_pem) {
            changed = i;
        }
    }
    const UpstreamServer want = incoming[changed];
    merge_servers(current, incoming);
    REQUIRE(current.size() == 4);
    CHECK(current[changed].retired);
    CHECK_FALSE(current[3].retired);
    CHECK(current[3].id == want.id);
    CHECK(current[3].tls == want.tls);
    CHECK(current[3].sni == want.sni);
    CHECK(current[3].verify == want.verify);
    CHECK(current[3].ca_pem == want.ca_pem);
    for (std::size_t i = 0; i < 3; ++i) {
        if (i != changed) CHECK_FALSE(current[i].retired);
    }
}

TEST_CASE("merge: positions stay valid over a series of changes") {
    auto current = three();
    // b removed
    merge_servers(current, {server("a", "127.0.0.1:3001", 0), server("c", "127.0.0.1:3003", 2)});
    // d added
    merge_servers(current, {server("a", "127.0.0.1:3001", 0), server("c", "127.0.0.1:3003", 2),
                            server("d", "127.0.0.1:3004", 3)});
    CHECK(shape(current) ==
          "a@127.0.0.1:3001,!b@127.0.0.1:3002,c@127.0.0.1:3003,"
          "d@127.0.0.1:3004");
    // b back, a removed
    merge_servers(current, {server("b", "127.0.0.1:3002", 1), server("c", "127.0.0.1:3003", 2),
                            server("d", "127.0.0.1:3004", 3)});
    CHECK(shape(current) ==
          "!a@127.0.0.1:3001,b@127.0.0.1:3002,c@127.0.0.1:3003,"
          "d@127.0.0.1:3004");
    for (std::size_t i = 0; i < current.size(); ++i) CHECK(current[i].state_index == i);
}
