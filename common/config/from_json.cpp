#include "common/config/from_json.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <utility>

namespace proxyd::config {

namespace {

using nlohmann::json;

// toml++ 3.3's literal and multi-line strings lose data (a multi-line literal string drops a
// leading line break; a single-line literal one may hold a raw line break): quoted strings with
// escapes only. UTF-8 is written as it is.
constexpr auto kFormat = toml::format_flags::allow_unicode_strings;

// to_json() nests five levels deep; the limit keeps a hostile body from exhausting the stack here
// or in toml++'s recursive writer and reader.
constexpr int kMaxDepth = 32;

bool bare_key_char(char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return std::isalnum(c) != 0 || c == '-' || c == '_';
}

// toml++ 3.3 writes a key bare when the only characters that would need quotes are tabs, line
// breaks or single quotes: "a'b = 1" is not TOML, and "'a' = 1" reads back as key "a".
bool written_bare_by_mistake(std::string_view key) {
    bool needs_quotes = false;
    for (char c : key) {
        if (c == '\t' || c == '\n' || c == '\'') {
            needs_quotes = true;
        } else if (!bare_key_char(c)) {
            return false;  // quoted (and escaped) properly
        }
    }
    return needs_quotes;
}

// "config.upstreams.app", or config."my key" for a key that is not bare.
std::string key_path(const std::string& parent, const std::string& key) {
    if (!key.empty() && std::all_of(key.begin(), key.end(), bare_key_char)) {
        return parent + "." + key;
    }
    return parent + "." + json(key).dump(-1, ' ', false, json::error_handler_t::replace);
}

class Converter {
  public:
    bool table(const json& object, const std::string& path, int depth, toml::table& out);
    const std::string& error() const { return error_; }

  private:
    bool array(const json& list, const std::string& path, int depth, toml::array& out);
    // Converts one value and hands it to `add` (an insert into its table or array).
    template <typename Add>
    bool value(const json& v, const std::string& path, int depth, Add add);
    bool fail(const std::string& path, const std::string& what) {
        error_ = path + ": " + what;
        return false;
    }

    std::string error_;
};

bool Converter::table(const json& object, const std::string& path, int depth, toml::table& out) {
    for (const auto& item : object.items()) {
        // Named, not a structured binding: clang 14 cannot capture one in the lambda below.
        const std::string& key = item.key();
        const json& v = item.value();
        const std::string child = key_path(path, key);
        if (written_bare_by_mistake(key)) {
            return fail(child, "a key with a tab, line break or \"'\" cannot be written as TOML");
        }
        const auto insert = [&](auto&& x) { out.insert(key, std::forward<decltype(x)>(x)); };
        if (!value(v, child, depth + 1, insert)) return false;
    }
    return true;
}

bool Converter::array(const json& list, const std::string& path, int depth, toml::array& out) {
    for (std::size_t i = 0; i < list.size(); ++i) {
        const auto push = [&](auto&& x) { out.push_back(std::forward<decltype(x)>(x)); };
        if (!value(list[i], path + "[" + std::to_string(i) + "]", depth + 1, push)) return false;
    }
    return true;
}

template <typename Add>
bool Converter::value(const json& v, const std::string& path, int depth, Add add) {
    if (depth > kMaxDepth) return fail(path, "nested deeper than any config");
    switch (v.type()) {
        case json::value_t::object: {
            toml::table t;
            if (!table(v, path, depth, t)) return false;
            add(std::move(t));
            return true;
        }
        case json::value_t::array: {
            toml::array a;
            if (!array(v, path, depth, a)) return false;
            add(std::move(a));
            return true;
        }
        case json::value_t::string:
            add(v.get_ref<const std::string&>());
            return true;
        case json::value_t::boolean:
            add(v.get<bool>());
            return true;
        case json::value_t::number_integer:
            add(v.get<std::int64_t>());
            return true;
        case json::value_t::number_unsigned: {
            const auto u = v.get<std::uint64_t>();
            if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
                return fail(path, std::to_string(u) + " is too large for a TOML integer");
            }
            add(static_cast<std::int64_t>(u));
            return true;
        }
        case json::value_t::number_float:
            // Only set programmatically (JSON text has no NaN), and NaN would fail reads_back().
            if (!std::isfinite(v.get<double>())) return fail(path, "not a finite number");
            add(v.get<double>());
            return true;
        case json::value_t::null:
        case json::value_t::binary:
        case json::value_t::discarded:
            break;
    }
    return fail(path, std::string(v.type_name()) + " is not a TOML value");
}

// toml++ has had quoting bugs of its own (above): the text is trusted only once it reads back as
// the same tree.
bool reads_back(const std::string& text, const toml::table& root) {
    try {
        return toml::parse(text) == root;
    } catch (const toml::parse_error&) {
        return false;
    }
}

}  // namespace

std::optional<std::string> json_to_toml(const json& config, std::string& error) {
    if (!config.is_object()) {
        error = std::string("config: expected a JSON object, got ") + config.type_name();
        return std::nullopt;
    }
    toml::table root;
    Converter converter;
    if (!converter.table(config, "config", 0, root)) {
        error = converter.error();
        return std::nullopt;
    }
    std::ostringstream text;
    text << toml::toml_formatter(root, kFormat) << "\n";
    if (!reads_back(text.str(), root)) {
        error = "config: toml++ wrote text that does not read back as this config";
        return std::nullopt;
    }
    return text.str();
}

}  // namespace proxyd::config
