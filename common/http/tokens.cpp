// Token helpers and the field-line parser shared by the request and response parsers.
#include <cstdint>
#include <cstring>
#include <limits>

#include "common/http/parser.hpp"
#include "common/http/tokens_internal.hpp"

namespace proxyd::http {

namespace {

char ascii_lower(char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c | 0x20) : c;
}

// Eight bytes at once: 'A'..'Z' get 0x20 added, every other byte (non-ASCII too) is unchanged.
std::uint64_t ascii_lower8(std::uint64_t word) {
    constexpr std::uint64_t kHigh = 0x8080808080808080ULL;
    const std::uint64_t low7 = word & ~kHigh;
    const std::uint64_t above_z = low7 + 0x2525252525252525ULL;      // high bit: byte > 'Z'
    const std::uint64_t from_a = low7 + 0x3f3f3f3f3f3f3f3fULL;       // high bit: byte >= 'A'
    const std::uint64_t upper = (from_a ^ above_z) & ~word & kHigh;  // 'A'..'Z', ASCII only
    return word | (upper >> 2);
}

std::uint64_t load8(const char* p) {
    std::uint64_t word;
    std::memcpy(&word, p, sizeof word);
    return word;
}

}  // namespace

bool iequals_same_size(const char* a, const char* b, std::size_t size) {
    std::size_t i = 0;
    for (; i + 8 <= size; i += 8) {
        if (ascii_lower8(load8(a + i)) != ascii_lower8(load8(b + i))) return false;
    }
    if (i < size && size >= 8) {  // the last 8 bytes, overlapping what was compared
        return ascii_lower8(load8(a + size - 8)) == ascii_lower8(load8(b + size - 8));
    }
    for (; i < size; ++i)
        if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
    return true;
}

std::string_view find_header(const Request& request, std::string_view name) {
    for (std::size_t i = 0; i < request.header_count; ++i) {
        if (iequals(request.headers[i].name, name)) return request.headers[i].value;
    }
    return {};
}

std::string_view find_header(const Response& response, std::string_view name) {
    for (std::size_t i = 0; i < response.header_count; ++i) {
        if (iequals(response.headers[i].name, name)) return response.headers[i].value;
    }
    return {};
}

bool list_contains_token(std::string_view list, std::string_view token) {
    bool found = false;
    detail::for_each_list_element(list, [&](std::string_view element) {
        if (iequals(element, token)) found = true;
    });
    return found;
}

namespace detail {

std::string_view trim_ows(std::string_view v) {
    while (!v.empty() && is_ows(v.front())) v.remove_prefix(1);
    while (!v.empty() && is_ows(v.back())) v.remove_suffix(1);
    return v;
}

Step expect_crlf(const char* data, std::size_t pos, std::size_t end) {
    if (pos == end) return need_more();
    if (data[pos] == '\n') return fail(400, "bare LF");
    if (data[pos] != '\r') return fail(400, "expected CRLF");
    if (pos + 1 == end) return need_more();
    if (data[pos + 1] != '\n') return fail(400, "bare CR");
    return advance(pos + 2);
}

Step match_http_version(const char* data, std::size_t pos, std::size_t end, int& major,
                        int& minor) {
    constexpr std::string_view kShape = "HTTP/#.#";  // '#' stands for one digit
    for (std::size_t i = 0; i < kShape.size(); ++i) {
        // Checking byte by byte rejects garbage before the whole version has arrived.
        if (pos + i == end) return need_more();
        const char c = data[pos + i];
        const bool good = kShape[i] == '#' ? is_digit(c) : c == kShape[i];
        if (!good) return fail(400, "invalid HTTP version");
    }
    major = data[pos + 5] - '0';
    minor = data[pos + 7] - '0';
    return advance(pos + kShape.size());
}

namespace {

const char* field_name_error(char c, bool at_line_start) {
    if (is_ows(c)) return at_line_start ? "obs-fold" : "whitespace before colon";
    if (c == '\n') return "bare LF";
    if (c == '\r') return "header line without colon";
    return "invalid header name";
}

const char* field_value_error(char c) {
    if (c == '\n') return "bare LF";
    if (c == '\0') return "NUL in header value";
    return "control character in header value";
}

Step parse_field_line(const char* data, std::size_t pos, std::size_t end, Header& out) {
    const std::size_t name_start = pos;
    while (pos < end && is_tchar(data[pos])) ++pos;
    if (pos == end) return need_more();
    if (data[pos] != ':') return fail(400, field_name_error(data[pos], pos == name_start));
    if (pos == name_start) return fail(400, "empty header name");
    out.name = {data + name_start, pos - name_start};

    ++pos;
    while (pos < end && is_ows(data[pos])) ++pos;
    const std::size_t value_start = pos;
    pos = skip_field_chars(data, pos, end);
    while (pos < end && is_field_char(data[pos])) ++pos;
    if (pos == end) return need_more();
    if (data[pos] != '\r') return fail(400, field_value_error(data[pos]));
    const Step eol = expect_crlf(data, pos, end);
    if (!eol.ok()) return eol;
    out.value = trim_ows({data + value_start, pos - value_start});
    return eol;
}

}  // namespace

Step parse_fields(const char* data, std::size_t pos, std::size_t end, Header* headers,
                  std::size_t& count) {
    count = 0;
    for (;;) {
        if (pos == end) return need_more();
        if (data[pos] == '\r') return expect_crlf(data, pos, end);
        if (count == kMaxHeaders) return fail(431, "too many headers");
        const Step line = parse_field_line(data, pos, end, headers[count]);
        if (!line.ok()) return line;
        ++count;
        pos = line.pos;
    }
}

const char* merge_content_length(std::string_view field, bool& seen, std::uint64_t& value) {
    // 1*DIGIT only: signs, inner spaces, lists and hex are all read differently by someone.
    if (field.empty()) return "invalid content-length";
    constexpr std::uint64_t kMax = std::numeric_limits<std::int64_t>::max();
    std::uint64_t parsed = 0;
    for (char c : field) {
        if (!is_digit(c)) return "invalid content-length";
        const auto digit = static_cast<std::uint64_t>(c - '0');
        if (parsed > (kMax - digit) / 10) return "content-length too large";
        parsed = parsed * 10 + digit;
    }
    if (seen && parsed != value) return "conflicting content-length";
    seen = true;
    value = parsed;
    return nullptr;
}

bool is_valid_host(std::string_view host) {
    for (char c : host)
        if (!has_class(c, kHostChar)) return false;
    return true;
}

}  // namespace detail

}  // namespace proxyd::http
