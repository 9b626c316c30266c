// Small text helpers shared by the config parser's messages and checks (internal to config/).
#pragma once

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace proxyd::config::detail {

// Double-quoted for a message. Control bytes are escaped so that a hostile or broken config
// cannot put line breaks or terminal escapes into what the operator reads.
inline std::string quote(std::string_view text) {
    std::string out = "\"";
    for (unsigned char c : text) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20 || c == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    out += '"';
    return out;
}

// RFC 9110 tchar: what header names and methods may contain.
inline bool is_tchar(unsigned char c) {
    if (std::isalnum(c)) return true;
    constexpr std::string_view extra = "!#$%&'*+-.^_`|~";
    return extra.find(static_cast<char>(c)) != std::string_view::npos;
}

inline bool is_token(std::string_view text) {
    return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
        return is_tchar(static_cast<unsigned char>(c));
    });
}

// Names that end up in metric labels, admin API URLs and log lines (upstreams, rate limits):
// letters, digits, "_", "-" and ".".
inline bool is_plain_name(std::string_view name) {
    return !name.empty() && std::all_of(name.begin(), name.end(), [](char ch) {
        const auto c = static_cast<unsigned char>(ch);
        return std::isalnum(c) || c == '_' || c == '-' || c == '.';
    });
}

inline std::string lower(std::string_view text) {
    std::string out(text);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

inline std::string upper(std::string_view text) {
    std::string out(text);
    for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return out;
}

// Edit distance counting a swap of neighbours as one edit ("wieght"), case-insensitive
// ("Listen" is one edit from nothing: it is the same key written differently).
inline std::size_t edit_distance(std::string_view a_in, std::string_view b_in) {
    const std::string a = lower(a_in);
    const std::string b = lower(b_in);
    const std::size_t n = a.size(), m = b.size();
    std::vector<std::vector<std::size_t>> d(n + 1, std::vector<std::size_t>(m + 1));
    for (std::size_t i = 0; i <= n; ++i) d[i][0] = i;
    for (std::size_t j = 0; j <= m; ++j) d[0][j] = j;
    for (std::size_t i = 1; i <= n; ++i) {
        for (std::size_t j = 1; j <= m; ++j) {
            const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
                d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
            }
        }
    }
    return d[n][m];
}

// The candidate closest to `word`, or "" when none is close enough to be a plausible typo. Short
// names get a tighter limit, else every two-letter word would "match" every other.
template <class Range>
std::string closest_match(std::string_view word, const Range& candidates) {
    std::string best;
    std::size_t best_distance = 3;
    for (const auto& candidate : candidates) {
        const std::string_view c = candidate;
        const std::size_t limit = c.size() <= 3 ? 1 : 2;
        const std::size_t dist = edit_distance(word, c);
        if (dist <= limit && dist < best_distance) {
            best_distance = dist;
            best = std::string(c);
        }
    }
    return best;
}

// "; did you mean \"x\"?" or "" — ready to append to a message.
template <class Range>
std::string did_you_mean(std::string_view word, const Range& candidates) {
    const std::string match = closest_match(word, candidates);
    return match.empty() ? std::string() : "; did you mean " + quote(match) + "?";
}

}  // namespace proxyd::config::detail
