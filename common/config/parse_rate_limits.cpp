// [rate_limits.NAME]: token buckets that routes refer to by name.
#include <algorithm>
#include <cctype>

#include "common/config/reader.hpp"
#include "common/config/secret_file.hpp"
#include "common/config/text.hpp"
#include "common/config/units.hpp"

namespace proxyd::config::detail {

namespace {

constexpr std::string_view kLimitKeys[] = {
    "key",   "requests_per_minute", "burst",          "store",
    "redis", "redis_password_file", "on_redis_error", "redis_timeout"};
constexpr std::string_view kStores[] = {"local", "redis"};
constexpr std::string_view kOnError[] = {"allow", "deny"};
constexpr std::string_view kKeyForms[] = {"ip", "header:NAME", "jwt:CLAIM"};
// One request per hour at the slowest; a million a minute is beyond any single key's need and
// keeps the GCRA interval at least 60 µs.
constexpr std::int64_t kMaxPerMinute = 1'000'000;
constexpr std::int64_t kMaxBurst = 1'000'000;

void parse_key(Reader& r, const toml::node& node, RateLimit& out) {
    const auto text = r.string(node, "key");
    if (!text) return;
    if (*text == "ip") {
        out.key = RateLimit::KeyKind::Ip;
        return;
    }
    const auto colon = text->find(':');
    const std::string kind = text->substr(0, colon);
    const std::string name = colon == std::string::npos ? "" : text->substr(colon + 1);
    if (kind == "header" && is_token(name)) {
        out.key = RateLimit::KeyKind::Header;
        out.key_name = lower(name);
    } else if (kind == "jwt" && !name.empty()) {
        out.key = RateLimit::KeyKind::JwtClaim;
        out.key_name = name;
    } else {
        r.error(node,
                "rate limit \"key\" must be one of \"ip\", \"header:NAME\", \"jwt:CLAIM\", "
                "got " +
                    quote(*text) + did_you_mean(*text, kKeyForms));
    }
}

void parse_redis(Reader& r, const toml::table& t, RateLimit& out) {
    const toml::node* node = t.get("redis");
    if (out.store == RateLimit::Store::Redis && node == nullptr) {
        r.require(t, "redis", "in a [rate_limits] table with store = \"redis\"");
        return;
    }
    if (node == nullptr) return;
    if (out.store != RateLimit::Store::Redis) {
        r.error(*node, "\"redis\" is only used with store = \"redis\"");
        return;
    }
    const auto text = r.nonempty_string(*node, "redis");
    if (!text) return;
    std::string message;
    if (!parse_socket_address(*text, out.redis, message)) {
        r.error(*node, "\"redis\": " + message + " (a numeric \"host:port\")");
    }
    if (const toml::node* n = t.get("redis_password_file")) {
        const auto path = r.nonempty_string(*n, "redis_password_file");
        if (!path) return;
        const std::string file = resolve_config_path(r.file(), *path);
        out.redis_password_file = file;
        std::string error;
        if (!read_secret_file(file, out.redis_password, error)) {
            r.error(*n, "cannot read \"redis_password_file\" " + quote(file) + ": " + error);
        }
    }
}

void parse_limit(Reader& r, const toml::node& node, RateLimit& out) {
    const toml::table* t = r.table(node, out.name);
    if (t == nullptr) return;
    r.check_keys(*t, "in [rate_limits." + out.name + "]", kLimitKeys);
    if (const toml::node* n = t->get("key")) parse_key(r, *n, out);
    if (r.require(*t, "requests_per_minute", "in [rate_limits." + out.name + "]")) {
        r.read(*t, "requests_per_minute", out.requests_per_minute, 1,
               static_cast<int>(kMaxPerMinute));
    }
    r.read(*t, "burst", out.burst, 1, static_cast<int>(kMaxBurst));
    if (const toml::node* n = t->get("store")) {
        if (const auto store = r.choice(*n, "store", kStores)) {
            out.store = *store == "redis" ? RateLimit::Store::Redis : RateLimit::Store::Local;
        }
    }
    parse_redis(r, *t, out);
    if (const toml::node* n = t->get("on_redis_error")) {
        if (const auto choice = r.choice(*n, "on_redis_error", kOnError)) {
            out.redis_error_allow = *choice == "allow";
        }
    }
    r.read_duration(*t, "redis_timeout", out.redis_timeout, false);
}

}  // namespace

void parse_rate_limits(Reader& r, const toml::node& node, std::vector<RateLimit>& out) {
    const toml::table* limits = r.table(node, "rate_limits");
    if (limits == nullptr) return;
    for (auto&& [key, value] : *limits) {
        const std::string_view name = key.str();
        if (!is_plain_name(name)) {
            r.error(loc_of(key), "invalid rate limit name " + quote(name) +
                                     "; use letters, digits, \"_\", \"-\" and \".\"");
            continue;
        }
        RateLimit limit;
        limit.name = std::string(name);
        limit.loc = loc_of(value);
        parse_limit(r, value, limit);
        out.push_back(std::move(limit));
    }
    std::sort(out.begin(), out.end(),
              [](const RateLimit& a, const RateLimit& b) { return a.name < b.name; });
}

}  // namespace proxyd::config::detail
