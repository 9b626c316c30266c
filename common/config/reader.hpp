// Internal to config/: reading typed values out of a toml++ tree while collecting every error with
// its place. Section parsers (parse_*.cpp) are written against this so that each rule is one line
// and no check can forget to report.
#pragma once

#include <toml++/toml.h>

#include <climits>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/config/load.hpp"
#include "common/config/types.hpp"

namespace proxyd::config::detail {

using Keys = std::span<const std::string_view>;

// load_string() with `edit` run on the parsed document before it is read: how runtime changes
// (config/overlay.hpp) are applied over the file.
LoadResult load_edited(std::string_view text, const std::string& source_name,
                       const std::function<void(toml::table&)>& edit);

SourceLoc loc_of(const toml::node& node);
SourceLoc loc_of(const toml::key& key);

// An element of an array of strings, with its node so later checks can point at it.
struct StringItem {
    std::string value;
    const toml::node* node = nullptr;
};

class Reader {
  public:
    explicit Reader(std::string file) : file_(std::move(file)) {}

    void error(SourceLoc where, std::string message);
    void error(const toml::node& node, std::string message) {
        error(loc_of(node), std::move(message));
    }
    std::vector<ConfigError>& errors() { return errors_; }
    const std::string& file() const { return file_; }

    // Reports keys of `table` that are neither in `known` nor in `later` (with a did-you-mean),
    // and those in `later` as not supported yet. `where` completes "unknown key "x" ...".
    void check_keys(const toml::table& table, std::string_view where, Keys known, Keys later = {});
    // Reports `key` missing from `table` (at the table's place); true when present.
    bool require(const toml::table& table, std::string_view key, std::string_view where);

    // Typed access to one value: on a wrong type or a bad value the error is reported and the
    // result is empty. `key` names the value in messages.
    const toml::table* table(const toml::node& node, std::string_view key);
    const toml::array* array(const toml::node& node, std::string_view key);
    std::optional<std::string> string(const toml::node& node, std::string_view key);
    std::optional<std::string> nonempty_string(const toml::node& node, std::string_view key);
    std::optional<bool> boolean(const toml::node& node, std::string_view key);
    std::optional<std::int64_t> integer(const toml::node& node, std::string_view key,
                                        std::int64_t min, std::int64_t max);
    std::optional<Millis> duration(const toml::node& node, std::string_view key, bool allow_zero);
    std::optional<std::uint64_t> size(const toml::node& node, std::string_view key);
    // The string elements of an array (others are reported and skipped).
    std::optional<std::vector<StringItem>> strings(const toml::node& node, std::string_view key);
    // The value of a string that must be one of `allowed`; an unknown one is reported with the
    // list.
    std::optional<std::string> choice(const toml::node& node, std::string_view key, Keys allowed);

    // Shorthands: when `key` is in `table`, read it into `out` (left unchanged on error).
    void read(const toml::table& t, std::string_view key, std::string& out);
    void read(const toml::table& t, std::string_view key, bool& out);
    void read(const toml::table& t, std::string_view key, int& out, int min, int max = INT_MAX);
    void read_duration(const toml::table& t, std::string_view key, Millis& out, bool allow_zero);
    void read_size(const toml::table& t, std::string_view key, std::size_t& out);

    // "expected EXPECTED for "KEY", got TYPE" at the node.
    void wrong_type(const toml::node& node, std::string_view expected, std::string_view key);

  private:
    std::string file_;
    std::vector<ConfigError> errors_;
};

// Section parsers: each fills its part of Config from the node found under its key.
void parse_server(Reader& r, const toml::node& node, ServerSection& out);
void parse_upstreams(Reader& r, const toml::node& node, std::vector<Upstream>& out);
void parse_routes(Reader& r, const toml::node& node, std::vector<Route>& out);
void parse_auth(Reader& r, const toml::node& node, JwtAuth& out);
void parse_tls(Reader& r, const toml::node& node, TlsSection& out);
void parse_rate_limits(Reader& r, const toml::node& node, std::vector<RateLimit>& out);
void parse_cache(Reader& r, const toml::node& node, CacheSettings& out);
void parse_compression(Reader& r, const toml::node& node, CompressionSettings& out);
// A route's `cache = {...}`; false when it is not a table (reported), so the route has no cache.
bool parse_route_cache(Reader& r, const toml::node& node, RouteCache& out);

// The required `listen` array of `table` ([server], [tls]): at least one numeric "host:port",
// each kept with its place. `where` completes "missing required key "listen" ...".
void parse_listen(Reader& r, const toml::table& table, std::string_view where,
                  std::vector<SocketAddress>& out);

// A balancing algorithm's name (upstream `balance`, route `websocket_balance`/`sse_balance`);
// an unknown one is reported with the list of valid names.
std::optional<Balance> parse_balance(Reader& r, const toml::node& node, std::string_view key);

}  // namespace proxyd::config::detail
