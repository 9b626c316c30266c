// A route's `cache = {...}` and `compress`, [cache] and [compression]: what loads, the defaults,
// what is refused with its FILE:LINE:COLUMN, and the way through GET/PUT /api/v1/config.
#include <doctest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "common/config/from_json.hpp"
#include "common/config/load.hpp"
#include "common/config/to_json.hpp"
#include "tests/unit/common/config_text.hpp"

using namespace proxyd::config;
using nlohmann::json;
using proxyd::testing::check_errors;
using proxyd::testing::errors_of;

namespace {

using std::chrono::milliseconds;

Config valid(std::string_view text) {
    return proxyd::testing::valid_config(text);
}

// Lines 1-6 of every config below (inside its first route); its own lines start at 7.
constexpr std::string_view kHead = R"(
[server]
listen = ["127.0.0.1:8080"]
[upstreams.app]
servers = [{ address = "127.0.0.1:3000" }]
[[routes]]
upstream = "app"
)";

std::string with_head(std::string_view rest) {
    std::string text(kHead);
    text += rest.starts_with('\n') ? rest.substr(1) : rest;
    return text;
}

// load -> to_json -> json_to_toml -> load -> to_json gives the first JSON again, as
// PUT /api/v1/config with what GET showed must.
json check_round_trip(const Config& config) {
    const json first = to_json(config);
    std::string error;
    const auto text = json_to_toml(first, error);
    INFO(error);
    REQUIRE(text.has_value());
    INFO("TOML:\n" << *text);
    const LoadResult again = load_string(*text, config.file);
    INFO(errors_of(again));
    REQUIRE(again.config.has_value());
    CHECK(to_json(*again.config).dump(2) == first.dump(2));
    return first;
}

constexpr std::string_view kEveryKey = R"(
path = "/api"
cache = { ttl = "5m", stale_while_revalidate = "30s", stale_if_error = "1h", authorization = true }
compress = false

[[routes]]
path = "/"
upstream = "app"
cache = { ttl = "250ms" }

[cache]
max_size = "2MiB"
max_object_size = 65536

[compression]
types = ["Text/HTML", "text/*", "application/vnd.api+json"]
min_size = "2KiB"
algorithms = ["gzip", "br"]
)";

}  // namespace

TEST_CASE("cache: every key of a route's cache, [cache] and [compression] is read") {
    const Config config = valid(with_head(kEveryKey));
    REQUIRE(config.routes.size() == 2);
    const Route& api = config.routes[0];
    CHECK(api.has_cache);
    CHECK(api.cache.ttl == milliseconds(300'000));
    CHECK(api.cache.stale_while_revalidate == milliseconds(30'000));
    CHECK(api.cache.stale_if_error == milliseconds(3'600'000));
    CHECK(api.cache.authorization);
    CHECK_FALSE(api.compress);

    const Route& rest = config.routes[1];
    CHECK(rest.has_cache);
    CHECK(rest.cache.ttl == milliseconds(250));
    CHECK(rest.cache.stale_while_revalidate == milliseconds(0));
    CHECK(rest.cache.stale_if_error == milliseconds(0));
    CHECK_FALSE(rest.cache.authorization);
    CHECK(rest.compress);

    CHECK(config.cache.max_size == 2 * 1024 * 1024);
    CHECK(config.cache.max_object_size == 64 * 1024);

    CHECK(config.compression.enabled);
    CHECK(config.compression.types ==
          std::vector<std::string>{"text/html", "text/*", "application/vnd.api+json"});
    CHECK(config.compression.min_size == 2048);
    CHECK(config.compression.algorithms ==
          std::vector<CompressionAlgorithm>{CompressionAlgorithm::Gzip,
                                            CompressionAlgorithm::Brotli});
}

TEST_CASE("cache: defaults without [cache], [compression], cache or compress") {
    const Config config = valid(with_head(""));
    REQUIRE(config.routes.size() == 1);
    CHECK_FALSE(config.routes[0].has_cache);
    CHECK(config.routes[0].compress);
    CHECK(config.cache.max_size == 100 * 1024 * 1024);
    CHECK(config.cache.max_object_size == 1024 * 1024);
    CHECK_FALSE(config.compression.enabled);
    CHECK(config.compression.min_size == 1024);
    CHECK(config.compression.types ==
          std::vector<std::string>{"text/html", "text/css", "application/json",
                                   "application/javascript", "text/plain"});
    CHECK(config.compression.algorithms ==
          std::vector<CompressionAlgorithm>{CompressionAlgorithm::Brotli,
                                            CompressionAlgorithm::Gzip});
}

TEST_CASE("cache: empty [cache] and [compression] tables take the defaults and switch on") {
    const Config config = valid(with_head(R"(
cache = { ttl = "1s" }
[cache]
[compression]
)"));
    CHECK(config.routes[0].has_cache);
    CHECK(config.cache.max_size == 100 * 1024 * 1024);
    CHECK(config.cache.max_object_size == 1024 * 1024);
    CHECK(config.compression.enabled);
    CHECK(config.compression.types.size() == 5);
    CHECK(config.compression.algorithms.size() == 2);
}

TEST_CASE("cache: a route's ttl is required and greater than 0; windows may be 0") {
    check_errors(with_head(R"(
cache = { stale_if_error = "5m" }
[[routes]]
upstream = "app"
cache = { ttl = "0s", stale_while_revalidate = "0s", stale_if_error = "0s" }
[[routes]]
upstream = "app"
cache = { ttl = 300 }
[[routes]]
upstream = "app"
cache = { ttl = "5m", stale_while_revalidate = "-1s", stale_if_error = 30 }
)"),
                 "test.toml:7:9: missing required key \"ttl\" in a route's \"cache\"\n"
                 "test.toml:10:17: \"ttl\" must be greater than 0\n"
                 "test.toml:13:17: \"ttl\": duration needs a unit, e.g. \"300s\"\n"
                 "test.toml:16:48: \"stale_while_revalidate\": duration must not be negative\n"
                 "test.toml:16:72: \"stale_if_error\": duration needs a unit, e.g. \"30s\"\n");
    const Config zero_windows = valid(with_head(
        R"(cache = { ttl = "1s", stale_while_revalidate = "0s", stale_if_error = "0ms" })"));
    CHECK(zero_windows.routes[0].cache.stale_while_revalidate == milliseconds(0));
    CHECK(zero_windows.routes[0].cache.stale_if_error == milliseconds(0));
}

TEST_CASE("cache: wrong types are reported at the value") {
    check_errors(
        with_head(R"(
cache = "5m"
compress = "no"
[[routes]]
upstream = "app"
cache = { ttl = "1m", authorization = "yes" }
[compression]
types = "text/html"
min_size = "1.5KiB"
algorithms = "br"
)"),
        "test.toml:7:9: expected a table like { ttl = \"5m\" } for \"cache\", got string\n"
        "test.toml:8:12: expected a boolean for \"compress\", got string\n"
        "test.toml:11:39: expected a boolean for \"authorization\", got string\n"
        "test.toml:13:9: expected an array of strings for \"types\", got string\n"
        "test.toml:14:12: \"min_size\": invalid size \"1.5KiB\"; use a whole number with a "
        "smaller unit\n"
        "test.toml:15:14: expected an array of strings for \"algorithms\", got string\n");
    check_errors(R"(
cache = 5
compression = true
[server]
listen = ["127.0.0.1:8080"]
)",
                 "test.toml:1:9: expected a table for \"cache\", got integer\n"
                 "test.toml:2:15: expected a table for \"compression\", got boolean\n");
}

TEST_CASE("cache: unknown keys in cache = {...}, [cache] and [compression]") {
    check_errors(with_head(R"(
cache = { ttl = "5m", stale_while_revalidat = "1s", max_age = "1m" }
compresss = false
[cache]
max_sise = "1MiB"
[compression]
level = 5
algorithm = ["br"]
)"),
                 "test.toml:7:23: unknown key \"stale_while_revalidat\" in a route's \"cache\"; "
                 "did you mean \"stale_while_revalidate\"?\n"
                 "test.toml:7:53: unknown key \"max_age\" in a route's \"cache\"\n"
                 "test.toml:8:1: unknown key \"compresss\" in [[routes]]; did you mean "
                 "\"compress\"?\n"
                 "test.toml:10:1: unknown key \"max_sise\" in [cache]; did you mean \"max_size\"?\n"
                 "test.toml:12:1: unknown key \"level\" in [compression]\n"
                 "test.toml:13:1: unknown key \"algorithm\" in [compression]; did you mean "
                 "\"algorithms\"?\n");
}

TEST_CASE("cache: [cache] sizes: max_size >= 64KiB, max_object_size >= 1KiB and <= max_size") {
    SUBCASE("lower bounds") {
        check_errors(with_head(R"(
[cache]
max_size = "63KiB"
max_object_size = 1023
)"),
                     "test.toml:8:12: \"max_size\" must be at least 64KiB, got 63KiB\n"
                     "test.toml:9:19: \"max_object_size\" must be at least 1KiB, got 1023B\n");
        check_errors(with_head("[cache]\nmax_size = 0\nmax_object_size = \"-1KiB\"\n"),
                     "test.toml:8:12: \"max_size\" must be at least 64KiB, got 0B\n"
                     "test.toml:9:19: \"max_object_size\": size must not be negative\n");
    }
    SUBCASE("the smallest values are valid") {
        const Config config =
            valid(with_head("[cache]\nmax_size = \"64KiB\"\nmax_object_size = \"1KiB\"\n"));
        CHECK(config.cache.max_size == 65536);
        CHECK(config.cache.max_object_size == 1024);
        const Config equal =
            valid(with_head("[cache]\nmax_size = \"1MiB\"\nmax_object_size = 1048576\n"));
        CHECK(equal.cache.max_object_size == equal.cache.max_size);
    }
    SUBCASE("an object larger than the whole store") {
        check_errors(with_head(R"(
[cache]
max_size = "1MiB"
max_object_size = "2MiB"
)"),
                     "test.toml:9:19: \"max_object_size\" (2MiB) must not be greater than "
                     "\"max_size\" (1MiB)\n");
        // The default object size (1MiB) against a smaller store: reported at max_size.
        check_errors(with_head("[cache]\nmax_size = \"512KiB\"\n"),
                     "test.toml:8:12: \"max_object_size\" (1MiB, the default) must not be greater "
                     "than \"max_size\" (512KiB)\n");
        check_errors(with_head("[cache]\nmax_object_size = \"200MiB\"\n"),
                     "test.toml:8:19: \"max_object_size\" (200MiB) must not be greater than "
                     "\"max_size\" (100MiB, the default)\n");
    }
}

TEST_CASE("compression: types are lower-cased \"type/subtype\" or \"type/*\"") {
    check_errors(with_head(R"(
[compression]
types = ["text", "*/*", "text/html; charset=utf-8", "text/ht ml", "a/b/c", "text/*html", "text/HTML", "text/html", 5]
)"),
                 "test.toml:8:10: media type \"text\" must be \"type/subtype\", e.g. "
                 "\"text/html\" or \"text/*\"\n"
                 "test.toml:8:18: media type \"*/*\" may use \"*\" only as the subtype, as in "
                 "\"text/*\"\n"
                 "test.toml:8:25: media type \"text/html; charset=utf-8\" must not have "
                 "parameters\n"
                 "test.toml:8:53: media type \"text/ht ml\" contains a character not allowed in "
                 "a media type\n"
                 "test.toml:8:67: media type \"a/b/c\" must be \"type/subtype\", e.g. "
                 "\"text/html\" or \"text/*\"\n"
                 "test.toml:8:76: media type \"text/*html\" contains a character not allowed in "
                 "a media type\n"
                 "test.toml:8:103: duplicate media type \"text/html\"\n"
                 "test.toml:8:116: expected a string for \"types\", got integer\n");
    check_errors(with_head("[compression]\ntypes = []\n"),
                 "test.toml:8:9: \"types\" must not be empty; leave out [compression] to "
                 "compress nothing\n");
    const Config config =
        valid(with_head("[compression]\ntypes = [\"IMAGE/SVG+XML\", \"text/*\"]\n"));
    CHECK(config.compression.types == std::vector<std::string>{"image/svg+xml", "text/*"});
}

TEST_CASE("compression: algorithms are \"br\" and \"gzip\", in preference order, once each") {
    check_errors(with_head(R"(
[compression]
algorithms = ["br", "deflate", "gzp", "GZIP", "br"]
)"),
                 "test.toml:8:21: unknown compression algorithm \"deflate\"; expected one of: br, "
                 "gzip\n"
                 "test.toml:8:32: unknown compression algorithm \"gzp\"; expected one of: br, "
                 "gzip; did you mean \"gzip\"?\n"
                 "test.toml:8:39: unknown compression algorithm \"GZIP\"; expected one of: br, "
                 "gzip; did you mean \"gzip\"?\n"
                 "test.toml:8:47: duplicate compression algorithm \"br\"\n");
    check_errors(with_head("[compression]\nalgorithms = []\n"),
                 "test.toml:8:14: \"algorithms\" must not be empty; leave out [compression] to "
                 "compress nothing\n");
    const Config gzip_only = valid(with_head("[compression]\nalgorithms = [\"gzip\"]\n"));
    CHECK(gzip_only.compression.algorithms ==
          std::vector<CompressionAlgorithm>{CompressionAlgorithm::Gzip});
}

TEST_CASE("compression: min_size may be 0; a negative one is refused") {
    const Config zero = valid(with_head("[compression]\nmin_size = 0\n"));
    CHECK(zero.compression.min_size == 0);
    const Config bytes = valid(with_head("[compression]\nmin_size = 100\n"));
    CHECK(bytes.compression.min_size == 100);
    check_errors(with_head("[compression]\nmin_size = -1\n"),
                 "test.toml:8:12: \"min_size\": size must not be negative\n");
}

TEST_CASE("cache: to_json shows every key, and PUT of what GET shows loads the same config") {
    const json j = check_round_trip(valid(with_head(kEveryKey)));
    CHECK(j["routes"][0]["cache"] == json{{"ttl", "5m"},
                                          {"stale_while_revalidate", "30s"},
                                          {"stale_if_error", "1h"},
                                          {"authorization", true}});
    CHECK(j["routes"][0]["compress"] == false);
    CHECK(j["routes"][1]["cache"] == json{{"ttl", "250ms"},
                                          {"stale_while_revalidate", "0s"},
                                          {"stale_if_error", "0s"},
                                          {"authorization", false}});
    CHECK_FALSE(j["routes"][1].contains("compress"));  // the default, true
    CHECK(j["cache"] == json{{"max_size", 2 * 1024 * 1024}, {"max_object_size", 65536}});
    CHECK(j["compression"] ==
          json{{"types", json::array({"text/html", "text/*", "application/vnd.api+json"})},
               {"min_size", 2048},
               {"algorithms", json::array({"gzip", "br"})}});
}

TEST_CASE("cache: defaults round-trip; [cache] is shown, [compression] only when present") {
    const json j = check_round_trip(valid(with_head("")));
    CHECK_FALSE(j["routes"][0].contains("cache"));
    CHECK_FALSE(j["routes"][0].contains("compress"));
    CHECK(j["cache"] == json{{"max_size", 100 * 1024 * 1024}, {"max_object_size", 1024 * 1024}});
    CHECK_FALSE(j.contains("compression"));

    const json on = check_round_trip(valid(with_head("[compression]\n")));
    CHECK(on["compression"]["min_size"] == 1024);
    CHECK(on["compression"]["algorithms"] == json::array({"br", "gzip"}));
}

TEST_CASE("cache: a bad value PUT through the admin API gets the loader's message") {
    json config = to_json(valid(with_head(kEveryKey)));
    config["routes"][0]["cache"]["ttl"] = "0s";
    config["cache"]["max_object_size"] = 4 * 1024 * 1024;
    config["compression"]["algorithms"] = json::array({"zstd"});
    std::string error;
    const auto text = json_to_toml(config, error);
    REQUIRE(text.has_value());
    const LoadResult result = load_string(*text, "put.toml");
    CHECK_FALSE(result.config.has_value());
    std::string messages;
    for (const ConfigError& e : result.errors) messages += e.message + "\n";
    CHECK(messages.find("\"ttl\" must be greater than 0\n") != std::string::npos);
    CHECK(messages.find(
              "\"max_object_size\" (4MiB) must not be greater than \"max_size\" (2MiB)\n") !=
          std::string::npos);
    CHECK(messages.find("unknown compression algorithm \"zstd\"; expected one of: br, gzip\n") !=
          std::string::npos);
    CHECK(result.errors.size() == 3);
}
