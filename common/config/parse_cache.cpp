// The response phase's settings: a route's `cache = {...}`, the shared cache store ([cache]) and
// [compression].
#include <algorithm>

#include "common/config/reader.hpp"
#include "common/config/text.hpp"

namespace proxyd::config::detail {

namespace {

constexpr std::string_view kRouteCacheKeys[] = {"ttl", "stale_while_revalidate", "stale_if_error",
                                                "authorization"};
constexpr std::string_view kRouteCacheWhere = "in a route's \"cache\"";
constexpr std::string_view kCacheKeys[] = {"max_size", "max_object_size"};
constexpr std::string_view kCompressionKeys[] = {"types", "min_size", "algorithms"};
constexpr std::string_view kAlgorithmNames[] = {"br", "gzip"};

// Below these the store would hold too few entries (its own bookkeeping takes room too), and an
// object limit smaller than a typical response head would make nothing storable.
constexpr std::size_t kMinCacheSize = 64 * 1024;
constexpr std::size_t kMinObjectSize = 1024;

// "64KiB", "1MiB", "1000B": the largest binary unit that divides the value, as sizes are written.
std::string size_text(std::size_t bytes) {
    static constexpr std::string_view kUnits[] = {"TiB", "GiB", "MiB", "KiB"};
    std::size_t unit = std::size_t{1} << 40;
    for (std::string_view name : kUnits) {
        if (bytes != 0 && bytes % unit == 0)
            return std::to_string(bytes / unit) + std::string(name);
        unit >>= 10;
    }
    return std::to_string(bytes) + "B";
}

// A size key of `t` that must be at least `min`; `out` is left unchanged on error.
void read_size_at_least(Reader& r, const toml::table& t, std::string_view key, std::size_t min,
                        std::size_t& out) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return;
    const auto v = r.size(*n, key);
    if (!v) return;
    if (*v < min) {
        r.error(*n, quote(key) + " must be at least " + size_text(min) + ", got " +
                        size_text(static_cast<std::size_t>(*v)));
        return;
    }
    out = static_cast<std::size_t>(*v);
}

// An object the store could never hold would make every response of that size a silent miss.
void check_object_fits(Reader& r, const toml::table& t, const CacheSettings& cache) {
    if (cache.max_object_size <= cache.max_size) return;
    const toml::node* object = t.get("max_object_size");
    const toml::node* total = t.get("max_size");
    const std::string message =
        "\"max_object_size\" (" + size_text(cache.max_object_size) +
        (object == nullptr ? ", the default" : "") + ") must not be greater than \"max_size\" (" +
        size_text(cache.max_size) + (total == nullptr ? ", the default" : "") + ")";
    r.error(object != nullptr ? *object : *total, message);
}

// Why `type` (lower-case) cannot be compared with a response's media type, or "" when it can:
// "type/subtype" of tokens, or "type/*".
std::string media_type_problem(std::string_view type) {
    if (type.find(';') != std::string_view::npos) return "must not have parameters";
    const auto slash = type.find('/');
    if (slash == std::string_view::npos || type.find('/', slash + 1) != std::string_view::npos) {
        return "must be \"type/subtype\", e.g. \"text/html\" or \"text/*\"";
    }
    const std::string_view main = type.substr(0, slash);
    const std::string_view sub = type.substr(slash + 1);
    if (main == "*") return "may use \"*\" only as the subtype, as in \"text/*\"";
    const auto plain_token = [](std::string_view s) {
        return is_token(s) && s.find('*') == std::string_view::npos;
    };
    if (!plain_token(main) || (sub != "*" && !plain_token(sub))) {
        return "contains a character not allowed in a media type";
    }
    return "";
}

void parse_types(Reader& r, const toml::node& node, CompressionSettings& out) {
    const auto items = r.strings(node, "types");
    if (!items) return;
    if (node.as_array()->empty()) {
        r.error(node, "\"types\" must not be empty; leave out [compression] to compress nothing");
        return;
    }
    out.types.clear();
    for (const StringItem& item : *items) {
        std::string type = lower(item.value);
        if (const std::string problem = media_type_problem(type); !problem.empty()) {
            r.error(*item.node, "media type " + quote(item.value) + " " + problem);
        } else if (std::find(out.types.begin(), out.types.end(), type) != out.types.end()) {
            r.error(*item.node, "duplicate media type " + quote(item.value));
        } else {
            out.types.push_back(std::move(type));
        }
    }
}

void parse_algorithms(Reader& r, const toml::node& node, CompressionSettings& out) {
    const auto items = r.strings(node, "algorithms");
    if (!items) return;
    if (node.as_array()->empty()) {
        r.error(node,
                "\"algorithms\" must not be empty; leave out [compression] to compress nothing");
        return;
    }
    out.algorithms.clear();
    for (const StringItem& item : *items) {
        const bool known = std::find(std::begin(kAlgorithmNames), std::end(kAlgorithmNames),
                                     item.value) != std::end(kAlgorithmNames);
        if (!known) {
            r.error(*item.node, "unknown compression algorithm " + quote(item.value) +
                                    "; expected one of: br, gzip" +
                                    did_you_mean(item.value, kAlgorithmNames));
            continue;
        }
        const auto algorithm =
            item.value == "br" ? CompressionAlgorithm::Brotli : CompressionAlgorithm::Gzip;
        if (std::find(out.algorithms.begin(), out.algorithms.end(), algorithm) !=
            out.algorithms.end()) {
            r.error(*item.node, "duplicate compression algorithm " + quote(item.value));
            continue;
        }
        out.algorithms.push_back(algorithm);
    }
}

}  // namespace

bool parse_route_cache(Reader& r, const toml::node& node, RouteCache& out) {
    const toml::table* t = node.as_table();
    if (t == nullptr) {
        r.wrong_type(node, "a table like { ttl = \"5m\" }", "cache");
        return false;
    }
    r.check_keys(*t, kRouteCacheWhere, kRouteCacheKeys);
    if (r.require(*t, "ttl", kRouteCacheWhere)) r.read_duration(*t, "ttl", out.ttl, false);
    r.read_duration(*t, "stale_while_revalidate", out.stale_while_revalidate, true);
    r.read_duration(*t, "stale_if_error", out.stale_if_error, true);
    r.read(*t, "authorization", out.authorization);
    return true;
}

void parse_cache(Reader& r, const toml::node& node, CacheSettings& out) {
    const toml::table* t = r.table(node, "cache");
    if (t == nullptr) return;
    r.check_keys(*t, "in [cache]", kCacheKeys);
    const std::size_t errors_before = r.errors().size();
    read_size_at_least(r, *t, "max_size", kMinCacheSize, out.max_size);
    read_size_at_least(r, *t, "max_object_size", kMinObjectSize, out.max_object_size);
    if (r.errors().size() == errors_before) check_object_fits(r, *t, out);
}

void parse_compression(Reader& r, const toml::node& node, CompressionSettings& out) {
    const toml::table* t = r.table(node, "compression");
    if (t == nullptr) return;
    out.enabled = true;
    r.check_keys(*t, "in [compression]", kCompressionKeys);
    if (const toml::node* n = t->get("types")) parse_types(r, *n, out);
    // 0 is allowed: compress whatever qualifies, however small.
    if (const toml::node* n = t->get("min_size")) {
        if (const auto v = r.size(*n, "min_size")) out.min_size = static_cast<std::size_t>(*v);
    }
    if (const toml::node* n = t->get("algorithms")) parse_algorithms(r, *n, out);
}

}  // namespace proxyd::config::detail
