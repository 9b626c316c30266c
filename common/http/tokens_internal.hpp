// Helpers shared by the HTTP/1.x parsers; not part of the public API.
//
// Character classes come from one 256-entry table so every scanning loop is a single load and
// test per byte, with no locale or <cctype> involvement (which would accept bytes RFC 9110 does
// not).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "common/http/parser.hpp"

namespace proxyd::http::detail {

enum CharClass : std::uint8_t {
    kTchar = 1 << 0,       // RFC 9110 token character
    kFieldChar = 1 << 1,   // field-value / reason-phrase byte: VCHAR, obs-text, SP, HTAB
    kTargetChar = 1 << 2,  // visible ASCII: what we let through in a request-target
    kHostChar = 1 << 3,    // uri-host and port: reg-name, IP-literal brackets, ':'
    kHexDigit = 1 << 4,
    kDigit = 1 << 5,
};

consteval bool one_of(int c, std::string_view set) {
    for (char s : set)
        if (static_cast<unsigned char>(s) == c) return true;
    return false;
}

consteval std::array<std::uint8_t, 256> make_char_classes() {
    std::array<std::uint8_t, 256> table{};
    for (int c = 0; c < 256; ++c) {
        const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        const bool digit = c >= '0' && c <= '9';
        const bool vchar = c >= 0x21 && c <= 0x7e;
        std::uint8_t cls = 0;
        if (alpha || digit || one_of(c, "!#$%&'*+-.^_`|~")) cls |= kTchar;
        if (vchar || c >= 0x80 || c == ' ' || c == '\t') cls |= kFieldChar;
        if (vchar) cls |= kTargetChar;
        // '@' is left out on purpose: userinfo in an authority is deprecated and is a classic way
        // to make two parsers disagree about the host.
        if (alpha || digit || one_of(c, "-._~!$&'()*+,;=%:[]")) cls |= kHostChar;
        if (digit || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) cls |= kHexDigit;
        if (digit) cls |= kDigit;
        table[c] = cls;
    }
    return table;
}

inline constexpr std::array<std::uint8_t, 256> kCharClasses = make_char_classes();

inline bool has_class(char c, std::uint8_t cls) {
    return (kCharClasses[static_cast<unsigned char>(c)] & cls) != 0;
}
inline bool is_tchar(char c) {
    return has_class(c, kTchar);
}
inline bool is_field_char(char c) {
    return has_class(c, kFieldChar);
}
inline bool is_target_char(char c) {
    return has_class(c, kTargetChar);
}
inline bool is_digit(char c) {
    return has_class(c, kDigit);
}
inline bool is_hex_digit(char c) {
    return has_class(c, kHexDigit);
}
inline bool is_ows(char c) {
    return c == ' ' || c == '\t';
}

// Word-at-a-time skipping for the long runs in a head (field values, targets). Each returns the
// first position whose 8-byte block might hold a byte of interest; the caller's byte-wise loop
// takes over from there. The tests have false positives (harmless) but never false negatives.
namespace swar {
inline constexpr std::uint64_t kOnes = 0x0101010101010101ULL;
inline constexpr std::uint64_t kHigh = 0x8080808080808080ULL;
inline std::uint64_t load(const char* p) {
    std::uint64_t w;
    std::memcpy(&w, p, sizeof w);
    return w;
}
// Nonzero iff some byte is < n (n <= 128).
inline std::uint64_t has_less(std::uint64_t w, std::uint8_t n) {
    return (w - kOnes * n) & ~w & kHigh;
}
inline std::uint64_t has_byte(std::uint64_t w, std::uint8_t b) {
    return has_less(w ^ (kOnes * b), 1);
}
}  // namespace swar

// Skips blocks of VCHAR / SP / obs-text (HTAB, CR and every error stop the skip).
inline std::size_t skip_field_chars(const char* data, std::size_t pos, std::size_t end) {
    while (end - pos >= 8) {
        const std::uint64_t w = swar::load(data + pos);
        if (swar::has_less(w, 0x20) | swar::has_byte(w, 0x7f)) break;
        pos += 8;
    }
    return pos;
}

// Skips blocks of visible ASCII (SP, CTLs, DEL and bytes >= 0x80 stop the skip).
inline std::size_t skip_target_chars(const char* data, std::size_t pos, std::size_t end) {
    while (end - pos >= 8) {
        const std::uint64_t w = swar::load(data + pos);
        if (swar::has_less(w, 0x21) | swar::has_byte(w, 0x7f) | (w & swar::kHigh)) break;
        pos += 8;
    }
    return pos;
}

// Only meaningful for bytes that passed is_hex_digit.
inline unsigned hex_value(char c) {
    if (c <= '9') return static_cast<unsigned>(c - '0');
    return static_cast<unsigned>((c | 0x20) - 'a' + 10);
}

std::string_view trim_ows(std::string_view v);

// Calls fn(element) for every non-empty, OWS-trimmed element of a comma-separated list.
template <typename Fn>
void for_each_list_element(std::string_view list, Fn&& fn) {
    while (!list.empty()) {
        const std::size_t comma = list.find(',');
        const std::string_view element = trim_ows(list.substr(0, comma));
        if (!element.empty()) fn(element);
        if (comma == std::string_view::npos) break;
        list.remove_prefix(comma + 1);
    }
}

// The outcome of parsing one part of a head. On Done, `pos` is just past that part.
struct Step {
    ParseStatus status = ParseStatus::Done;
    std::size_t pos = 0;
    int error_status = 0;
    const char* reason = "";

    bool ok() const { return status == ParseStatus::Done; }
};

inline Step advance(std::size_t pos) {
    return {ParseStatus::Done, pos, 0, ""};
}
inline Step need_more() {
    return {ParseStatus::Incomplete, 0, 0, ""};
}
inline Step fail(int status, const char* reason) {
    return {ParseStatus::Error, 0, status, reason};
}

// Expects CRLF at data[pos]: a lone CR or LF is the line-ending ambiguity smugglers rely on.
Step expect_crlf(const char* data, std::size_t pos, std::size_t end);

// Matches "HTTP/" DIGIT "." DIGIT (case-sensitive, RFC 9112 §2.3).
Step match_http_version(const char* data, std::size_t pos, std::size_t end, int& major, int& minor);

// Parses field lines from data[pos] through the empty line that ends the head; `pos` of the
// result is the head length. Errors: 400 for malformed lines, 431 for more than kMaxHeaders.
Step parse_fields(const char* data, std::size_t pos, std::size_t end, Header* headers,
                  std::size_t& count);

// Folds one Content-Length field value into (seen, value). Returns nullptr if fine, else why not.
const char* merge_content_length(std::string_view field, bool& seen, std::uint64_t& value);

// uri-host [":" port] as far as the characters go; empty is allowed (RFC 9112 §3.2).
bool is_valid_host(std::string_view host);

}  // namespace proxyd::http::detail
