// Runtime backend changes (common/config/overlay.hpp): the overlay applied over a config file's
// text and loaded as if written there, its state file, load_effective(); and the server lists
// the master sends its workers after such a change (common/config/server_list.hpp).
#include <doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/config/load.hpp"
#include "common/config/overlay.hpp"
#include "common/config/server_list.hpp"
#include "common/config/units.hpp"
#include "tests/unit/test_files.hpp"

using namespace proxyd::config;
using nlohmann::json;

namespace {

using proxyd::testing::slurp;
using proxyd::testing::tls_data;

// A temporary directory for config and state files, removed at the end.
struct TempDir : proxyd::testing::TempDir {
    TempDir() : proxyd::testing::TempDir("proxyd-overlay") {}
};

// Upstream "api": server "a" (weight 4, an id) and one named by its address; upstream "web".
constexpr std::string_view kConfig = R"([server]
listen = ["127.0.0.1:8080"]

[upstreams.api]
servers = [
  { id = "a", address = "127.0.0.1:3001", weight = 4, max_connections = 10 },
  { address = "127.0.0.1:3002" },
]

[upstreams.web]
servers = [{ address = "127.0.0.1:4001" }]

[[routes]]
path = "/"
upstream = "api"
)";

std::string errors_of(const LoadResult& result) {
    std::string out;
    for (const ConfigError& e : result.errors) out += e.format() + "\n";
    return out;
}

std::string lines(const std::vector<std::string>& list) {
    std::string out;
    for (const auto& line : list) out += line + "\n";
    return out;
}

// kConfig with `overlay`; every change must apply.
Config loaded(const BackendOverlay& overlay) {
    std::vector<std::string> skipped;
    LoadResult result = load_with_overlay(kConfig, "test.toml", overlay, skipped);
    INFO(errors_of(result));
    REQUIRE(result.errors.empty());
    REQUIRE(result.config.has_value());
    CHECK(lines(skipped) == "");
    return std::move(*result.config);
}

const Upstream& upstream_of(const Config& config, const std::string& name) {
    for (const auto& upstream : config.upstreams) {
        if (upstream.name == name) return upstream;
    }
    FAIL("no upstream " << name);
    return config.upstreams.front();
}

// The ids of the upstream's servers, in order, comma-separated.
std::string ids(const Config& config, const std::string& name = "api") {
    std::string out;
    for (const auto& server : upstream_of(config, name).servers) {
        out += (out.empty() ? "" : ",") + server.id;
    }
    return out;
}

const UpstreamServer& server_of(const Config& config, const std::string& id,
                                const std::string& name = "api") {
    for (const auto& server : upstream_of(config, name).servers) {
        if (server.id == id) return server;
    }
    FAIL("no server " << id << " in " << name);
    return upstream_of(config, name).servers.front();
}

}  // namespace

// ---- BackendOverlay applied over the file ----

TEST_CASE("overlay: without changes the file loads as written") {
    const BackendOverlay overlay;
    CHECK(overlay.empty());
    const Config config = loaded(overlay);
    CHECK(ids(config) == "a,127.0.0.1:3002");
    CHECK(server_of(config, "a").weight == 4);
}

TEST_CASE("overlay: an added server is appended to its upstream with its keys") {
    BackendOverlay overlay;
    overlay.add("api", json{{"id", "c"},
                            {"address", "127.0.0.1:3003"},
                            {"weight", 7},
                            {"max_connections", 20},
                            {"backup", true},
                            {"drain", true}});
    REQUIRE(overlay.changes().size() == 1);
    const auto& change = overlay.changes()[0];
    CHECK(change.upstream == "api");
    CHECK(change.id == "c");
    CHECK(change.whole);
    CHECK_FALSE(change.removed);

    const Config config = loaded(overlay);
    CHECK(ids(config) == "a,127.0.0.1:3002,c");
    CHECK(ids(config, "web") == "127.0.0.1:4001");
    const UpstreamServer& c = server_of(config, "c");
    CHECK(c.address.text == "127.0.0.1:3003");
    CHECK(c.weight == 7);
    CHECK(c.max_connections == 20);
    CHECK(c.backup);
    CHECK(c.drain);
    CHECK_FALSE(c.tls);
    // The file's servers are untouched.
    CHECK(server_of(config, "a").weight == 4);
    CHECK(server_of(config, "a").max_connections == 10);
}

TEST_CASE("overlay: an added server without an id is named by its address") {
    SUBCASE("no id at all") {
        BackendOverlay overlay;
        overlay.add("api", json{{"address", "127.0.0.1:3003"}});
        REQUIRE(overlay.changes().size() == 1);
        CHECK(overlay.changes()[0].id == "127.0.0.1:3003");
        const Config config = loaded(overlay);
        CHECK(ids(config) == "a,127.0.0.1:3002,127.0.0.1:3003");
        CHECK(server_of(config, "127.0.0.1:3003").weight == 1);
    }
    SUBCASE("the id set to the address, as the admin API does") {
        BackendOverlay overlay;
        overlay.add("api", json{{"id", "127.0.0.1:3003"}, {"address", "127.0.0.1:3003"}});
        CHECK(overlay.changes()[0].id == "127.0.0.1:3003");
        CHECK(ids(loaded(overlay)) == "a,127.0.0.1:3002,127.0.0.1:3003");
    }
}

TEST_CASE("overlay: an added server over TLS gets its TLS keys checked and read") {
    BackendOverlay overlay;
    overlay.add("api", json{{"id", "secure"},
                            {"address", "127.0.0.1:3443"},
                            {"tls", true},
                            {"sni", "api.internal"},
                            {"verify", false},
                            {"ca_file", tls_data("ca.crt")}});
    const Config config = loaded(overlay);
    const UpstreamServer& s = server_of(config, "secure");
    CHECK(s.tls);
    CHECK(s.sni == "api.internal");
    CHECK_FALSE(s.verify);
    CHECK(s.ca_file == tls_data("ca.crt"));
    // The bundle's text, trailing newline trimmed (as every file the config names is read).
    std::string pem = slurp(tls_data("ca.crt"));
    while (pem.ends_with('\n')) pem.pop_back();
    CHECK(s.ca_pem == pem);
}

TEST_CASE("overlay: updates set keys of a file server and leave its other keys") {
    BackendOverlay overlay;
    overlay.update("api", "a", json{{"weight", 9}});
    overlay.update("api", "a", json{{"drain", true}});
    // Both updates are one change.
    REQUIRE(overlay.changes().size() == 1);
    CHECK_FALSE(overlay.changes()[0].whole);
    CHECK(overlay.changes()[0].keys == json{{"weight", 9}, {"drain", true}});

    const Config config = loaded(overlay);
    CHECK(ids(config) == "a,127.0.0.1:3002");  // in place
    const UpstreamServer& a = server_of(config, "a");
    CHECK(a.weight == 9);
    CHECK(a.drain);
    CHECK(a.max_connections == 10);
    CHECK(a.address.text == "127.0.0.1:3001");
}

TEST_CASE("overlay: a file server without an id is updated by its address") {
    BackendOverlay overlay;
    overlay.update("api", "127.0.0.1:3002", json{{"backup", true}, {"max_connections", 3}});
    const Config config = loaded(overlay);
    const UpstreamServer& s = server_of(config, "127.0.0.1:3002");
    CHECK(s.backup);
    CHECK(s.max_connections == 3);
}

TEST_CASE("overlay: a later update overrides an earlier one's key") {
    BackendOverlay overlay;
    overlay.update("api", "a", json{{"drain", true}, {"weight", 2}});
    overlay.update("api", "a", json{{"drain", false}});
    const Config config = loaded(overlay);
    CHECK_FALSE(server_of(config, "a").drain);
    CHECK(server_of(config, "a").weight == 2);
}

TEST_CASE("overlay: an update of an added server is folded into its addition") {
    BackendOverlay overlay;
    overlay.add("api", json{{"id", "c"}, {"address", "127.0.0.1:3003"}, {"weight", 2}});
    overlay.update("api", "c", json{{"weight", 5}, {"drain", true}});
    REQUIRE(overlay.changes().size() == 1);
    CHECK(overlay.changes()[0].whole);
    CHECK(overlay.changes()[0].keys ==
          json{{"id", "c"}, {"address", "127.0.0.1:3003"}, {"weight", 5}, {"drain", true}});

    const Config config = loaded(overlay);
    CHECK(ids(config) == "a,127.0.0.1:3002,c");
    CHECK(server_of(config, "c").weight == 5);
    CHECK(server_of(config, "c").drain);
}

TEST_CASE("overlay: a removed file server is taken out") {
    SUBCASE("with an id") {
        BackendOverlay overlay;
        overlay.remove("api", "a");
        REQUIRE(overlay.changes().size() == 1);
        CHECK(overlay.changes()[0].removed);
        CHECK(ids(loaded(overlay)) == "127.0.0.1:3002");
    }
    SUBCASE("named by its address") {
        BackendOverlay overlay;
        overlay.remove("api", "127.0.0.1:3002");
        CHECK(ids(loaded(overlay)) == "a");
    }
    SUBCASE("after an update of it") {
        BackendOverlay overlay;
        overlay.update("api", "a", json{{"weight", 2}});
        overlay.remove("api", "a");
        REQUIRE(overlay.changes().size() == 1);
        CHECK(overlay.changes()[0].removed);
        CHECK(overlay.changes()[0].keys == json::object());
        CHECK(ids(loaded(overlay)) == "127.0.0.1:3002");
    }
}

TEST_CASE("overlay: a removed added server is gone") {
    BackendOverlay overlay;
    overlay.add("api", json{{"id", "c"}, {"address", "127.0.0.1:3003"}});
    overlay.remove("api", "c");
    REQUIRE(overlay.changes().size() == 1);
    CHECK(overlay.changes()[0].removed);
    CHECK_FALSE(overlay.changes()[0].whole);
    CHECK(ids(loaded(overlay)) == "a,127.0.0.1:3002");
}

TEST_CASE("overlay: the removal of a server that is not there is no change and no report") {
    BackendOverlay overlay;
    overlay.remove("api", "nowhere");
    std::vector<std::string> skipped;
    const LoadResult result = load_with_overlay(kConfig, "test.toml", overlay, skipped);
    REQUIRE(result.config.has_value());
    CHECK(ids(*result.config) == "a,127.0.0.1:3002");
    CHECK(skipped.empty());
}

TEST_CASE("overlay: a removed server added again comes back with the new keys") {
    SUBCASE("a file server") {
        BackendOverlay overlay;
        overlay.remove("api", "a");
        overlay.add("api", json{{"id", "a"}, {"address", "127.0.0.1:3009"}});
        REQUIRE(overlay.changes().size() == 1);
        CHECK(overlay.changes()[0].whole);
        CHECK_FALSE(overlay.changes()[0].removed);
        const Config config = loaded(overlay);
        // Applied as a whole replacement of the file's entry: it keeps its place.
        CHECK(ids(config) == "a,127.0.0.1:3002");
        const UpstreamServer& a = server_of(config, "a");
        CHECK(a.address.text == "127.0.0.1:3009");
        CHECK(a.weight == 1);  // not the file's 4
        CHECK(a.max_connections == 0);
    }
    SUBCASE("an added server") {
        BackendOverlay overlay;
        overlay.add("api", json{{"id", "c"}, {"address", "127.0.0.1:3003"}, {"weight", 3}});
        overlay.remove("api", "c");
        overlay.add("api", json{{"id", "c"}, {"address", "127.0.0.1:3004"}});
        REQUIRE(overlay.changes().size() == 1);
        const Config config = loaded(overlay);
        CHECK(ids(config) == "a,127.0.0.1:3002,c");
        CHECK(server_of(config, "c").address.text == "127.0.0.1:3004");
        CHECK(server_of(config, "c").weight == 1);
    }
}

TEST_CASE("overlay: an update after a removal starts from the file's server again") {
    // The overlay keeps one change per server: a set after a removal replaces the removal.
    BackendOverlay overlay;
    overlay.remove("api", "a");
    overlay.update("api", "a", json{{"weight", 2}});
    REQUIRE(overlay.changes().size() == 1);
    CHECK_FALSE(overlay.changes()[0].removed);
    CHECK_FALSE(overlay.changes()[0].whole);
    CHECK(overlay.changes()[0].keys == json{{"weight", 2}});
}

TEST_CASE("overlay: an addition with an id the file has replaces that server whole") {
    BackendOverlay overlay;
    overlay.add("api", json{{"id", "a"}, {"address", "127.0.0.1:3005"}, {"backup", true}});
    const Config config = loaded(overlay);
    CHECK(ids(config) == "a,127.0.0.1:3002");
    const UpstreamServer& a = server_of(config, "a");
    CHECK(a.address.text == "127.0.0.1:3005");
    CHECK(a.backup);
    CHECK(a.weight == 1);           // the file's weight = 4 is not kept
    CHECK(a.max_connections == 0);  // nor its max_connections
}

TEST_CASE("overlay: changes to different upstreams are kept apart") {
    BackendOverlay overlay;
    overlay.update("api", "127.0.0.1:4001", json{{"weight", 2}});  // not a server of api
    overlay.update("web", "127.0.0.1:4001", json{{"weight", 3}});
    overlay.add("web", json{{"id", "a"}, {"address", "127.0.0.1:4002"}});
    CHECK(overlay.changes().size() == 3);
    std::vector<std::string> skipped;
    const LoadResult result = load_with_overlay(kConfig, "test.toml", overlay, skipped);
    INFO(errors_of(result));
    REQUIRE(result.config.has_value());
    CHECK(ids(*result.config, "web") == "127.0.0.1:4001,a");
    CHECK(server_of(*result.config, "127.0.0.1:4001", "web").weight == 3);
    CHECK(server_of(*result.config, "a").address.text == "127.0.0.1:3001");
    CHECK(lines(skipped) ==
          "runtime change of server \"127.0.0.1:4001\" in upstream \"api\": the server is no "
          "longer in the config\n");
}

TEST_CASE("overlay: a change to an upstream no longer in the file is skipped, the rest applied") {
    BackendOverlay overlay;
    overlay.add("gone", json{{"id", "x"}, {"address", "127.0.0.1:5001"}});
    overlay.update("gone", "y", json{{"weight", 2}});
    overlay.remove("gone", "z");
    overlay.update("api", "a", json{{"weight", 8}});
    std::vector<std::string> skipped;
    const LoadResult result = load_with_overlay(kConfig, "test.toml", overlay, skipped);
    INFO(errors_of(result));
    REQUIRE(result.config.has_value());
    CHECK(server_of(*result.config, "a").weight == 8);
    CHECK(ids(*result.config) == "a,127.0.0.1:3002");
    CHECK(lines(skipped) ==
          "runtime addition of server \"x\" in upstream \"gone\": the upstream is no longer in "
          "the config\n"
          "runtime change of server \"y\" in upstream \"gone\": the upstream is no longer in the "
          "config\n"
          "runtime removal of server \"z\" in upstream \"gone\": the upstream is no longer in "
          "the config\n");
}

TEST_CASE("overlay: an update of a server no longer in the file is skipped, the rest applied") {
    BackendOverlay overlay;
    overlay.update("api", "old", json{{"weight", 2}});
    overlay.add("api", json{{"id", "c"}, {"address", "127.0.0.1:3003"}});
    std::vector<std::string> skipped;
    const LoadResult result = load_with_overlay(kConfig, "test.toml", overlay, skipped);
    INFO(errors_of(result));
    REQUIRE(result.config.has_value());
    CHECK(ids(*result.config) == "a,127.0.0.1:3002,c");
    CHECK(lines(skipped) ==
          "runtime change of server \"old\" in upstream \"api\": the server is no longer in the "
          "config\n");
}

TEST_CASE("overlay: a value that is not a plain one is reported and left out") {
    BackendOverlay overlay;
    overlay.update("api", "a", json{{"weight", json::array({1})}, {"drain", true}});
    std::vector<std::string> skipped;
    const LoadResult result = load_with_overlay(kConfig, "test.toml", overlay, skipped);
    INFO(errors_of(result));
    REQUIRE(result.config.has_value());
    CHECK(server_of(*result.config, "a").drain);
    CHECK(server_of(*result.config, "a").weight == 4);
    CHECK(lines(skipped) ==
          "runtime change of server \"a\" in upstream \"api\": \"weight\" is not a plain value\n");
}

TEST_CASE("overlay: invalid values in a change give the loader's errors and no config") {
    BackendOverlay overlay;
    std::string expected;
    SUBCASE("weight 0 in an update") {
        overlay.update("api", "a", json{{"weight", 0}});
        expected = "test.toml: \"weight\" must be between 1 and 1000000, got 0\n";
    }
    SUBCASE("weight 0 in an addition") {
        overlay.add("api", json{{"id", "c"}, {"address", "127.0.0.1:3003"}, {"weight", 0}});
        expected = "test.toml: \"weight\" must be between 1 and 1000000, got 0\n";
    }
    SUBCASE("a weight that is not an integer") {
        overlay.update("api", "a", json{{"weight", "heavy"}});
        expected = "test.toml: expected an integer for \"weight\", got string\n";
    }
    SUBCASE("an unknown key in an addition") {
        overlay.add("api", json{{"id", "c"}, {"address", "127.0.0.1:3003"}, {"wieght", 2}});
        expected =
            "test.toml: unknown key \"wieght\" in a server of [upstreams.api]; did you mean "
            "\"weight\"?\n";
    }
    SUBCASE("an unknown key in an update") {
        overlay.update("api", "a", json{{"colour", "red"}});
        expected = "test.toml: unknown key \"colour\" in a server of [upstreams.api]\n";
    }
    SUBCASE("an addition without an address") {
        overlay.add("api", json{{"id", "c"}, {"weight", 2}});
        expected = "test.toml: missing required key \"address\" in a server of [upstreams.api]\n";
    }
    SUBCASE("a bad address") {
        overlay.add("api", json{{"id", "c"}, {"address", "127.0.0.1:99999"}});
        expected =
            "test.toml: \"address\": port 99999 out of range in \"127.0.0.1:99999\" (1 to "
            "65535)\n";
    }
    SUBCASE("a TLS key on a server without TLS") {
        overlay.update("api", "a", json{{"sni", "api.internal"}});
        expected = "test.toml: \"sni\" only applies to a server with tls = true\n";
    }
    SUBCASE("a CA file that is not there") {
        overlay.add("api", json{{"id", "c"},
                                {"address", "127.0.0.1:3003"},
                                {"tls", true},
                                {"ca_file", "/nonexistent/ca.crt"}});
        expected =
            "test.toml: cannot read \"ca_file\" \"/nonexistent/ca.crt\": No such file or "
            "directory\n";
    }
    SUBCASE("every server of the upstream made a backup") {
        overlay.update("api", "a", json{{"backup", true}});
        overlay.update("api", "127.0.0.1:3002", json{{"backup", true}});
        expected =
            "test.toml:5:11: every server of [upstreams.api] is a backup; at least one server "
            "must not be a backup\n";
    }
    std::vector<std::string> skipped;
    const LoadResult result = load_with_overlay(kConfig, "test.toml", overlay, skipped);
    CHECK_FALSE(result.config.has_value());
    CHECK(errors_of(result) == expected);
    CHECK(skipped.empty());
}

TEST_CASE("overlay: an update giving a server the id of another one is a duplicate") {
    BackendOverlay overlay;
    overlay.update("api", "127.0.0.1:3002", json{{"id", "a"}});
    std::vector<std::string> skipped;
    const LoadResult result = load_with_overlay(kConfig, "test.toml", overlay, skipped);
    CHECK_FALSE(result.config.has_value());
    REQUIRE(result.errors.size() == 1);
    CHECK(result.errors[0].message.starts_with("duplicate server id \"a\" in [upstreams.api]"));
}

// ---- the state file's format ----

TEST_CASE("overlay: to_json writes each change as a removal, a whole server or a set") {
    BackendOverlay overlay;
    overlay.update("api", "a", json{{"weight", 2}});
    overlay.add("web", json{{"id", "w"}, {"address", "127.0.0.1:4002"}});
    overlay.remove("api", "127.0.0.1:3002");
    CHECK(overlay.to_json() == json::parse(R"({
      "proxyd_state": 1,
      "backends": [
        {"upstream": "api", "id": "a", "set": {"weight": 2}},
        {"upstream": "web", "id": "w", "server": {"id": "w", "address": "127.0.0.1:4002"}},
        {"upstream": "api", "id": "127.0.0.1:3002", "removed": true}
      ]
    })"));
    CHECK(BackendOverlay().to_json() == json::parse(R"({"proxyd_state": 1, "backends": []})"));
}

TEST_CASE("overlay: from_json reads back what to_json wrote") {
    BackendOverlay overlay;
    overlay.update("api", "a", json{{"weight", 2}, {"drain", true}});
    overlay.add("web", json{{"id", "w"}, {"address", "127.0.0.1:4002"}, {"tls", true}});
    overlay.remove("api", "127.0.0.1:3002");
    std::string error;
    const auto back = BackendOverlay::from_json(overlay.to_json(), error);
    INFO(error);
    REQUIRE(back.has_value());
    CHECK(error.empty());
    REQUIRE(back->changes().size() == 3);
    for (std::size_t i = 0; i < 3; ++i) {
        const auto& want = overlay.changes()[i];
        const auto& got = back->changes()[i];
        CHECK(got.upstream == want.upstream);
        CHECK(got.id == want.id);
        CHECK(got.removed == want.removed);
        CHECK(got.whole == want.whole);
        CHECK(got.keys == want.keys);
    }
    CHECK(back->to_json() == overlay.to_json());

    // And the overlay read back loads the same config.
    const Config a = loaded(overlay);
    const Config b = loaded(*back);
    CHECK(ids(a) == ids(b));
    CHECK(ids(a, "web") == ids(b, "web"));
    CHECK(server_of(b, "a").weight == 2);
}

TEST_CASE("overlay: from_json refuses what is not a state file of this version") {
    const std::string not_state = "not a proxyd state file (version 1)";
    std::string text;
    std::string expected = not_state;
    SUBCASE("not an object") {
        text = R"([1, 2])";
    }
    SUBCASE("no version") {
        text = R"({"backends": []})";
    }
    SUBCASE("another version") {
        text = R"({"proxyd_state": 2, "backends": []})";
    }
    SUBCASE("version 0") {
        text = R"({"proxyd_state": 0, "backends": []})";
    }
    SUBCASE("no backends") {
        text = R"({"proxyd_state": 1})";
    }
    SUBCASE("backends not a list") {
        text = R"({"proxyd_state": 1, "backends": {}})";
    }
    SUBCASE("an entry that is not an object") {
        text = R"({"proxyd_state": 1, "backends": ["a"]})";
        expected = "a backend change without \"upstream\" and \"id\": \"a\"";
    }
    SUBCASE("an entry without an upstream") {
        text = R"({"proxyd_state": 1, "backends": [{"id": "a", "removed": true}]})";
        expected =
            "a backend change without \"upstream\" and \"id\": {\"id\":\"a\",\"removed\":true}";
    }
    SUBCASE("an entry without an id") {
        text = R"({"proxyd_state": 1, "backends": [{"upstream": "api", "set": {}}]})";
        expected =
            "a backend change without \"upstream\" and \"id\": {\"set\":{},\"upstream\":\"api\"}";
    }
    SUBCASE("an id that is not a string") {
        text = R"({"proxyd_state": 1, "backends": [{"upstream": "api", "id": 7, "set": {}}]})";
        expected =
            "a backend change without \"upstream\" and \"id\": "
            "{\"id\":7,\"set\":{},\"upstream\":\"api\"}";
    }
    SUBCASE("an entry that neither removes, adds nor sets") {
        text = R"({"proxyd_state": 1, "backends": [
                    {"upstream": "api", "id": "a", "set": {"weight": 2}},
                    {"upstream": "api", "id": "b"}]})";
        expected =
            "a backend change that neither removes, adds nor sets: "
            "{\"id\":\"b\",\"upstream\":\"api\"}";
    }
    SUBCASE("a set that is not an object") {
        text = R"({"proxyd_state": 1, "backends": [{"upstream": "api", "id": "a", "set": 2}]})";
        expected =
            "a backend change that neither removes, adds nor sets: "
            "{\"id\":\"a\",\"set\":2,\"upstream\":\"api\"}";
    }
    SUBCASE("a server that is not an object") {
        text = R"({"proxyd_state": 1, "backends": [{"upstream": "api", "id": "a", "server": []}]})";
        expected =
            "a backend change that neither removes, adds nor sets: "
            "{\"id\":\"a\",\"server\":[],\"upstream\":\"api\"}";
    }
    SUBCASE("removed: false with nothing else") {
        text =
            R"({"proxyd_state": 1, "backends": [{"upstream": "api", "id": "a", "removed": false}]})";
        expected =
            "a backend change that neither removes, adds nor sets: "
            "{\"id\":\"a\",\"removed\":false,\"upstream\":\"api\"}";
    }
    std::string error;
    CHECK_FALSE(BackendOverlay::from_json(json::parse(text), error).has_value());
    CHECK(error == expected);
}

// ---- the state file ----

TEST_CASE("state file: written then read back gives the same overlay") {
    TempDir dir;
    const std::string path = dir.file("state.json");
    BackendOverlay overlay;
    overlay.add("api", json{{"id", "c"}, {"address", "127.0.0.1:3003"}, {"weight", 3}});
    overlay.update("api", "a", json{{"drain", true}});
    overlay.remove("web", "127.0.0.1:4001");
    std::string error;
    REQUIRE(write_state_file(path, overlay, error));
    CHECK(error.empty());

    const std::string text = slurp(path);
    CHECK(json::parse(text) == overlay.to_json());
    CHECK(text.ends_with("\n"));
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);

    BackendOverlay back;
    REQUIRE(read_state_file(path, back, error));
    CHECK(back.to_json() == overlay.to_json());

    // Written again: replaced whole, no temporary file left beside it.
    overlay.clear();
    REQUIRE(write_state_file(path, overlay, error));
    REQUIRE(read_state_file(path, back, error));
    CHECK(back.empty());
    CHECK(std::system(("test \"$(ls -A '" + dir.path + "')\" = state.json").c_str()) == 0);
}

TEST_CASE("state file: a missing file is an empty overlay") {
    TempDir dir;
    BackendOverlay out;
    out.remove("api", "a");  // whatever was there is dropped
    std::string error;
    CHECK(read_state_file(dir.file("missing.json"), out, error));
    CHECK(error.empty());
    CHECK(out.empty());
}

TEST_CASE("state file: an unreadable or corrupt file is an error and leaves the overlay") {
    TempDir dir;
    std::string path;
    std::string expected;
    SUBCASE("not JSON") {
        path = dir.write("state.json", "{\"proxyd_state\": 1, \"backends\": [");
        expected = "not valid JSON";
    }
    SUBCASE("empty") {
        path = dir.write("state.json", "");
        expected = "not valid JSON";
    }
    SUBCASE("JSON of another kind") {
        path = dir.write("state.json", R"({"version": 1})");
        expected = "not a proxyd state file (version 1)";
    }
    SUBCASE("a bad entry") {
        path = dir.write("state.json", R"({"proxyd_state": 1, "backends": [{"id": "a"}]})");
        expected = "a backend change without \"upstream\" and \"id\": {\"id\":\"a\"}";
    }
    SUBCASE("a directory") {
        path = dir.path;
        expected = "Is a directory";
    }
    BackendOverlay out;
    out.remove("api", "a");
    std::string error;
    CHECK_FALSE(read_state_file(path, out, error));
    CHECK(error == expected);
    REQUIRE(out.changes().size() == 1);
    CHECK(out.changes()[0].removed);
}

TEST_CASE("state file: writing into a directory that does not exist fails with the reason") {
    TempDir dir;
    std::string error;
    CHECK_FALSE(write_state_file(dir.file("no/state.json"), BackendOverlay(), error));
    CHECK(error.starts_with("cannot create " + dir.file("no/state.json") + ".tmp."));
    CHECK(error.ends_with(": No such file or directory"));
}

// ---- load_effective ----

namespace {

// kConfig with server.state_file (relative: beside the config) written in `dir`.
std::string write_config_with_state(TempDir& dir) {
    std::string text(kConfig);
    text.insert(text.find("\n\n"), "\nstate_file = \"state.json\"");
    return dir.write("proxyd.toml", text);
}

}  // namespace

TEST_CASE("load_effective: the state file's changes are applied") {
    TempDir dir;
    const std::string config_path = write_config_with_state(dir);
    BackendOverlay saved;
    saved.add("api", json{{"id", "c"}, {"address", "127.0.0.1:3003"}});
    saved.update("api", "a", json{{"weight", 6}});
    saved.update("gone", "x", json{{"weight", 6}});
    std::string error;
    REQUIRE(write_state_file(dir.file("state.json"), saved, error));

    const EffectiveConfig effective = load_effective(config_path, nullptr);
    INFO(errors_of(effective.result));
    REQUIRE(effective.result.config.has_value());
    const Config& config = *effective.result.config;
    CHECK(config.file == config_path);
    CHECK(config.server.state_file == dir.file("state.json"));
    CHECK(ids(config) == "a,127.0.0.1:3002,c");
    CHECK(server_of(config, "a").weight == 6);
    CHECK(effective.text == slurp(config_path));
    CHECK(effective.overlay.to_json() == saved.to_json());
    CHECK(lines(effective.skipped) ==
          "runtime change of server \"x\" in upstream \"gone\": the upstream is no longer in the "
          "config\n");
}

TEST_CASE("load_effective: without a state file the config is the file's") {
    TempDir dir;
    SUBCASE("state_file set, but not written yet") {
        const EffectiveConfig effective = load_effective(write_config_with_state(dir), nullptr);
        REQUIRE(effective.result.config.has_value());
        CHECK(ids(*effective.result.config) == "a,127.0.0.1:3002");
        CHECK(effective.overlay.empty());
    }
    SUBCASE("no state_file") {
        const std::string path = dir.write("proxyd.toml", std::string(kConfig));
        const EffectiveConfig effective = load_effective(path, nullptr);
        REQUIRE(effective.result.config.has_value());
        CHECK(effective.result.config->server.state_file.empty());
        CHECK(ids(*effective.result.config) == "a,127.0.0.1:3002");
        CHECK(effective.overlay.empty());
        CHECK(effective.skipped.empty());
        CHECK(effective.text == kConfig);
    }
}

TEST_CASE("load_effective: a corrupt state file is an error naming it") {
    TempDir dir;
    const std::string config_path = write_config_with_state(dir);
    const std::string state = dir.write("state.json", "garbage");
    const EffectiveConfig effective = load_effective(config_path, nullptr);
    CHECK_FALSE(effective.result.config.has_value());
    CHECK(errors_of(effective.result) ==
          state + ": state_file: not valid JSON (fix or remove it)\n");
    CHECK(effective.text == slurp(config_path));
}

TEST_CASE("load_effective: a state file whose changes are invalid gives the loader's errors") {
    TempDir dir;
    const std::string config_path = write_config_with_state(dir);
    BackendOverlay saved;
    saved.update("api", "a", json{{"weight", 0}});
    std::string error;
    REQUIRE(write_state_file(dir.file("state.json"), saved, error));
    const EffectiveConfig effective = load_effective(config_path, nullptr);
    CHECK_FALSE(effective.result.config.has_value());
    // The value has no line in the config file: a second error names the state file.
    CHECK(errors_of(effective.result) ==
          config_path + ": \"weight\" must be between 1 and 1000000, got 0\n" +
              dir.file("state.json") +
              ": the runtime backend changes kept here do not apply to the config file (see the "
              "errors above; fix or remove them)\n");
}

TEST_CASE("load_effective: an explicit overlay is used and the state file ignored") {
    TempDir dir;
    const std::string config_path = write_config_with_state(dir);
    BackendOverlay saved;
    saved.remove("api", "a");
    std::string error;
    REQUIRE(write_state_file(dir.file("state.json"), saved, error));

    SUBCASE("an empty one") {
        const BackendOverlay none;
        const EffectiveConfig effective = load_effective(config_path, &none);
        REQUIRE(effective.result.config.has_value());
        CHECK(ids(*effective.result.config) == "a,127.0.0.1:3002");
        CHECK(effective.overlay.empty());
    }
    SUBCASE("one with changes") {
        BackendOverlay given;
        given.update("api", "a", json{{"weight", 5}});
        const EffectiveConfig effective = load_effective(config_path, &given);
        REQUIRE(effective.result.config.has_value());
        CHECK(ids(*effective.result.config) == "a,127.0.0.1:3002");
        CHECK(server_of(*effective.result.config, "a").weight == 5);
        CHECK(effective.overlay.to_json() == given.to_json());
    }
    SUBCASE("even when the state file is corrupt") {
        dir.write("state.json", "garbage");
        const BackendOverlay none;
        const EffectiveConfig effective = load_effective(config_path, &none);
        CHECK(effective.result.config.has_value());
    }
}

TEST_CASE("load_effective: an unreadable or invalid config file is the file's errors") {
    TempDir dir;
    SUBCASE("missing") {
        const std::string path = dir.file("missing.toml");
        const EffectiveConfig effective = load_effective(path, nullptr);
        CHECK_FALSE(effective.result.config.has_value());
        CHECK(errors_of(effective.result) == path + ": cannot read: No such file or directory\n");
        CHECK(effective.text.empty());
    }
    SUBCASE("invalid: the state file is not read") {
        const std::string path =
            dir.write("proxyd.toml",
                      "[server]\nlisten = [\"127.0.0.1:8080\"]\nstate_file = \"state.json\"\n"
                      "workers = 0\n");
        dir.write("state.json", "garbage");
        const EffectiveConfig effective = load_effective(path, nullptr);
        CHECK_FALSE(effective.result.config.has_value());
        REQUIRE(effective.result.errors.size() == 1);
        CHECK(effective.result.errors[0].file == path);
        CHECK(effective.result.errors[0].line == 4);
    }
}

// ---- server lists (master -> workers) ----

namespace {

UpstreamServer make_server(const std::string& id, const std::string& address) {
    UpstreamServer s;
    s.id = id;
    std::string error;
    REQUIRE_MESSAGE(parse_socket_address(address, s.address, error), error);
    return s;
}

}  // namespace

TEST_CASE("server list: every field survives encode and decode") {
    ServerList list;
    list.upstream = 3;
    UpstreamServer plain = make_server("a", "127.0.0.1:3001");
    plain.weight = 7;
    plain.max_connections = 12;
    plain.backup = true;
    plain.state_index = 41;
    UpstreamServer named = make_server("api.internal:443#[::1]:443", "[::1]:443");
    named.hostname = "api.internal";
    named.port = 443;
    named.drain = true;
    named.tls = true;
    named.sni = "api.internal";
    named.verify = false;
    named.ca_file = tls_data("ca.crt");
    named.ca_pem = slurp(tls_data("ca.crt"));
    named.state_index = 4'000'000'000u;
    named.max_connections = 0;
    list.servers = {plain, named};

    std::string error;
    const auto back = decode_server_list(encode_server_list(list), error);
    INFO(error);
    REQUIRE(back.has_value());
    CHECK(back->upstream == 3);
    REQUIRE(back->servers.size() == 2);
    for (std::size_t i = 0; i < 2; ++i) {
        const UpstreamServer& want = list.servers[i];
        const UpstreamServer& got = back->servers[i];
        CAPTURE(i);
        CHECK(got.id == want.id);
        CHECK(got.address.text == want.address.text);
        CHECK(got.address.length == want.address.length);
        CHECK(got.address.storage.ss_family == want.address.storage.ss_family);
        CHECK(std::memcmp(&got.address.storage, &want.address.storage, want.address.length) == 0);
        CHECK(got.hostname == want.hostname);
        CHECK(got.port == want.port);
        CHECK(got.weight == want.weight);
        CHECK(got.max_connections == want.max_connections);
        CHECK(got.backup == want.backup);
        CHECK(got.drain == want.drain);
        CHECK(got.tls == want.tls);
        CHECK(got.sni == want.sni);
        CHECK(got.verify == want.verify);
        CHECK(got.ca_file == want.ca_file);
        CHECK(got.ca_pem == want.ca_pem);
        CHECK(got.state_index == want.state_index);
        CHECK_FALSE(got.retired);
    }
    CHECK(back->servers[1].ca_pem.find("-----BEGIN CERTIFICATE-----") != std::string::npos);
}

TEST_CASE("server list: an empty list survives encode and decode") {
    std::string error;
    const auto back = decode_server_list(encode_server_list(ServerList{0, {}}), error);
    REQUIRE(back.has_value());
    CHECK(back->upstream == 0);
    CHECK(back->servers.empty());
}

TEST_CASE("server list: decode refuses what the master does not send") {
    const std::string good =
        encode_server_list(ServerList{1, {make_server("a", "127.0.0.1:3001")}});
    json doc = json::parse(good);
    std::string text;
    std::string expected;  // the whole error, or its beginning when it ends with "..."
    SUBCASE("not JSON") {
        text = "{\"upstream\": 1, ";
        expected = "server list: not a JSON object";
    }
    SUBCASE("JSON but not an object") {
        text = "[1, 2]";
        expected = "server list: not a JSON object";
    }
    SUBCASE("no upstream") {
        doc.erase("upstream");
        text = doc.dump();
        expected = "server list: ...";
    }
    SUBCASE("no servers") {
        doc.erase("servers");
        text = doc.dump();
        expected = "server list: ...";
    }
    SUBCASE("a server without one of its fields") {
        for (const char* field :
             {"id", "address", "hostname", "port", "weight", "max_connections", "backup", "drain",
              "tls", "sni", "verify", "ca_file", "ca_pem", "state_index"}) {
            CAPTURE(field);
            json broken = doc;
            broken["servers"][0].erase(field);
            std::string error;
            CHECK_FALSE(decode_server_list(broken.dump(), error).has_value());
            CHECK(error.starts_with("server list: "));
        }
        text = "null";
        expected = "server list: not a JSON object";
    }
    SUBCASE("a field of the wrong type") {
        doc["servers"][0]["weight"] = "heavy";
        text = doc.dump();
        expected = "server list: ...";
    }
    SUBCASE("a server that is not an object") {
        doc["servers"] = json::array({"127.0.0.1:3001"});
        text = doc.dump();
        expected = "server list: ...";
    }
    SUBCASE("a bad address") {
        doc["servers"][0]["address"] = "nowhere:80";
        text = doc.dump();
        expected = "\"nowhere\" is not a numeric IP address";
    }
    SUBCASE("an empty address (an unresolved name)") {
        doc["servers"][0]["address"] = "";
        text = doc.dump();
        expected = "empty address; write e.g. \"0.0.0.0:8080\"";
    }
    std::string error;
    CHECK_FALSE(decode_server_list(text, error).has_value());
    if (expected.ends_with("...")) {
        CHECK(error.starts_with(expected.substr(0, expected.size() - 3)));
        CHECK(error.size() > expected.size() - 3);
    } else {
        CHECK(error == expected);
    }
}
