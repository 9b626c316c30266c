#include "common/config/reader.hpp"

#include <algorithm>

#include "common/config/text.hpp"
#include "common/config/units.hpp"

namespace proxyd::config::detail {

namespace {

SourceLoc to_loc(const toml::source_region& region) {
    return SourceLoc{static_cast<int>(region.begin.line), static_cast<int>(region.begin.column)};
}

std::string_view type_name(toml::node_type type) {
    switch (type) {
        case toml::node_type::table:
            return "table";
        case toml::node_type::array:
            return "array";
        case toml::node_type::string:
            return "string";
        case toml::node_type::integer:
            return "integer";
        case toml::node_type::floating_point:
            return "float";
        case toml::node_type::boolean:
            return "boolean";
        case toml::node_type::date:
            return "date";
        case toml::node_type::time:
            return "time";
        case toml::node_type::date_time:
            return "date-time";
        case toml::node_type::none:
            break;
    }
    return "nothing";
}

bool contains(Keys keys, std::string_view key) {
    return std::find(keys.begin(), keys.end(), key) != keys.end();
}

std::string join(Keys keys) {
    std::string out;
    for (std::string_view k : keys) {
        if (!out.empty()) out += ", ";
        out += k;
    }
    return out;
}

}  // namespace

SourceLoc loc_of(const toml::node& node) {
    return to_loc(node.source());
}
SourceLoc loc_of(const toml::key& key) {
    return to_loc(key.source());
}

void Reader::error(SourceLoc where, std::string message) {
    errors_.push_back(ConfigError{file_, where.line, where.column, std::move(message)});
}

void Reader::wrong_type(const toml::node& node, std::string_view expected, std::string_view key) {
    error(node, "expected " + std::string(expected) + " for " + quote(key) + ", got " +
                    std::string(type_name(node.type())));
}

void Reader::check_keys(const toml::table& table, std::string_view where, Keys known, Keys later) {
    std::vector<std::string_view> all(known.begin(), known.end());
    all.insert(all.end(), later.begin(), later.end());
    for (auto&& [key, value] : table) {
        const std::string_view name = key.str();
        if (contains(known, name)) continue;
        if (contains(later, name)) {
            error(loc_of(key), quote(name) + " is not supported yet");
            continue;
        }
        error(loc_of(key),
              "unknown key " + quote(name) + " " + std::string(where) + did_you_mean(name, all));
    }
}

bool Reader::require(const toml::table& table, std::string_view key, std::string_view where) {
    if (table.contains(key)) return true;
    error(loc_of(table), "missing required key " + quote(key) + " " + std::string(where));
    return false;
}

const toml::table* Reader::table(const toml::node& node, std::string_view key) {
    if (const auto* t = node.as_table()) return t;
    wrong_type(node, "a table", key);
    return nullptr;
}

const toml::array* Reader::array(const toml::node& node, std::string_view key) {
    if (const auto* a = node.as_array()) return a;
    wrong_type(node, "an array", key);
    return nullptr;
}

std::optional<std::string> Reader::string(const toml::node& node, std::string_view key) {
    if (const auto* s = node.as_string()) return s->get();
    wrong_type(node, "a string", key);
    return std::nullopt;
}

std::optional<std::string> Reader::nonempty_string(const toml::node& node, std::string_view key) {
    auto s = string(node, key);
    if (s && s->empty()) {
        error(node, quote(key) + " must not be empty");
        return std::nullopt;
    }
    return s;
}

std::optional<bool> Reader::boolean(const toml::node& node, std::string_view key) {
    if (const auto* b = node.as_boolean()) return b->get();
    wrong_type(node, "a boolean", key);
    return std::nullopt;
}

std::optional<std::int64_t> Reader::integer(const toml::node& node, std::string_view key,
                                            std::int64_t min, std::int64_t max) {
    const auto* i = node.as_integer();
    if (i == nullptr) {
        wrong_type(node, "an integer", key);
        return std::nullopt;
    }
    const std::int64_t v = i->get();
    if (v >= min && v <= max) return v;
    const std::string got = ", got " + std::to_string(v);
    if (max >= INT_MAX) {
        error(node, quote(key) + " must be at least " + std::to_string(min) + got);
    } else {
        error(node, quote(key) + " must be between " + std::to_string(min) + " and " +
                        std::to_string(max) + got);
    }
    return std::nullopt;
}

std::optional<Millis> Reader::duration(const toml::node& node, std::string_view key,
                                       bool allow_zero) {
    std::string text;
    if (const auto* i = node.as_integer()) {
        text = std::to_string(i->get());  // refused below, with a hint built from the number
    } else if (const auto* s = node.as_string()) {
        text = s->get();
    } else {
        wrong_type(node, "a duration string (e.g. \"5s\")", key);
        return std::nullopt;
    }
    std::string message;
    const auto d = parse_duration(text, message);
    if (!d) {
        error(node, quote(key) + ": " + message);
        return std::nullopt;
    }
    if (!allow_zero && d->count() == 0) {
        error(node, quote(key) + " must be greater than 0");
        return std::nullopt;
    }
    return d;
}

std::optional<std::uint64_t> Reader::size(const toml::node& node, std::string_view key) {
    if (const auto* i = node.as_integer()) {
        if (i->get() >= 0) return static_cast<std::uint64_t>(i->get());
        error(node, quote(key) + ": size must not be negative");
        return std::nullopt;
    }
    const auto* s = node.as_string();
    if (s == nullptr) {
        wrong_type(node, "an integer or a size string (e.g. \"16KiB\")", key);
        return std::nullopt;
    }
    std::string message;
    const auto v = parse_size(s->get(), message);
    if (!v) error(node, quote(key) + ": " + message);
    return v;
}

std::optional<std::vector<StringItem>> Reader::strings(const toml::node& node,
                                                       std::string_view key) {
    const auto* a = node.as_array();
    if (a == nullptr) {
        wrong_type(node, "an array of strings", key);
        return std::nullopt;
    }
    std::vector<StringItem> out;
    for (const toml::node& element : *a) {
        if (const auto* s = element.as_string()) {
            out.push_back(StringItem{s->get(), &element});
        } else {
            wrong_type(element, "a string", key);
        }
    }
    return out;
}

std::optional<std::string> Reader::choice(const toml::node& node, std::string_view key,
                                          Keys allowed) {
    auto s = string(node, key);
    if (!s || contains(allowed, *s)) return s;
    error(node,
          "unknown " + std::string(key) + " " + quote(*s) + "; expected one of: " + join(allowed));
    return std::nullopt;
}

void Reader::read(const toml::table& t, std::string_view key, std::string& out) {
    if (const auto* n = t.get(key)) {
        if (auto v = string(*n, key)) out = std::move(*v);
    }
}

void Reader::read(const toml::table& t, std::string_view key, bool& out) {
    if (const auto* n = t.get(key)) {
        if (auto v = boolean(*n, key)) out = *v;
    }
}

void Reader::read(const toml::table& t, std::string_view key, int& out, int min, int max) {
    if (const auto* n = t.get(key)) {
        if (auto v = integer(*n, key, min, max)) out = static_cast<int>(*v);
    }
}

void Reader::read_duration(const toml::table& t, std::string_view key, Millis& out,
                           bool allow_zero) {
    if (const auto* n = t.get(key)) {
        if (auto v = duration(*n, key, allow_zero)) out = *v;
    }
}

void Reader::read_size(const toml::table& t, std::string_view key, std::size_t& out) {
    const auto* n = t.get(key);
    if (n == nullptr) return;
    const auto v = size(*n, key);
    if (!v) return;
    if (*v == 0) {
        error(*n, quote(key) + " must be greater than 0");
        return;
    }
    out = static_cast<std::size_t>(*v);
}

}  // namespace proxyd::config::detail
