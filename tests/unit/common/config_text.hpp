// Loading a config from a string in a unit test, and reading its errors. Line 1 of the config is
// the line after the opening R"( so that the numbers in expected messages can be read off the test
// source.
#pragma once

#include <doctest.h>

#include <string>
#include <string_view>

#include "common/config/load.hpp"

namespace proxyd::testing {

inline config::LoadResult load_text(std::string_view text) {
    if (!text.empty() && text.front() == '\n') text.remove_prefix(1);
    return config::load_string(text, "test.toml");
}

// All errors, formatted, one per line: compared whole so a failure shows every message.
inline std::string errors_of(const config::LoadResult& result) {
    std::string out;
    for (const config::ConfigError& e : result.errors) out += e.format() + "\n";
    return out;
}

// Loads a config that must be valid.
inline config::Config valid_config(std::string_view text) {
    config::LoadResult result = load_text(text);
    INFO(errors_of(result));
    REQUIRE(result.errors.empty());
    REQUIRE(result.config.has_value());
    return std::move(*result.config);
}

// Loads a config that must fail with exactly `expected` (formatted lines).
inline void check_errors(std::string_view text, const std::string& expected) {
    const config::LoadResult result = load_text(text);
    CHECK_FALSE(result.config.has_value());
    CHECK(errors_of(result) == expected);
}

}  // namespace proxyd::testing
