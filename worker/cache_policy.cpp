#include "worker/cache_policy.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <initializer_list>

#include "common/http/status.hpp"
#include "common/http/tokens_internal.hpp"
#include "worker/forward_headers.hpp"

namespace proxyd::worker {
namespace {

using http::iequals;

template <typename Message>
const http::Header* find_field(const Message& message, std::string_view name) {
    for (std::size_t i = 0; i < message.header_count; ++i) {
        if (iequals(message.headers[i].name, name)) return &message.headers[i];
    }
    return nullptr;
}

bool is_one_of(std::string_view name, std::initializer_list<std::string_view> names) {
    for (std::string_view n : names) {
        if (iequals(name, n)) return true;
    }
    return false;
}

// ---- Cache-Control ----------------------------------------------------------------------------

// What a response's Cache-Control fields (all of them: they form one list) say about storing it.
struct CacheControl {
    bool no_store = false;
    bool is_private = false;
    bool no_cache = false;
    bool has_s_maxage = false;
    std::int64_t s_maxage = 0;
    bool has_max_age = false;
    std::int64_t max_age = 0;
};

// Calls fn(name, value) for each `name [ "=" ( token / quoted-string ) ]` of a Cache-Control
// value. A quoted value may hold commas (private="Set-Cookie, X-A"), so the value is not split
// on every comma; the quotes are removed (escapes are kept as they are: no directive we read
// needs them).
template <typename Fn>
void for_each_directive(std::string_view list, Fn&& fn) {
    std::size_t pos = 0;
    const auto skip_ows = [&] {
        while (pos < list.size() && http::detail::is_ows(list[pos])) ++pos;
    };
    while (pos < list.size()) {
        skip_ows();
        if (pos < list.size() && list[pos] == ',') {
            ++pos;
            continue;
        }
        const std::size_t name_start = pos;
        while (pos < list.size() && list[pos] != '=' && list[pos] != ',') ++pos;
        const std::string_view name =
            http::detail::trim_ows(list.substr(name_start, pos - name_start));
        std::string_view value;
        if (pos < list.size() && list[pos] == '=') {
            ++pos;
            skip_ows();
            const std::size_t value_start = pos;
            const bool quoted = pos < list.size() && list[pos] == '"';
            if (quoted) {
                ++pos;
                while (pos < list.size() && list[pos] != '"') pos += list[pos] == '\\' ? 2 : 1;
                pos = std::min(pos, list.size());
                value = list.substr(value_start + 1, pos - value_start - 1);
            }
            while (pos < list.size() && list[pos] != ',') ++pos;
            if (!quoted)
                value = http::detail::trim_ows(list.substr(value_start, pos - value_start));
        }
        if (!name.empty()) fn(name, value);
    }
}

// delta-seconds (RFC 9111 1.2.2): digits only, capped at 2^31. Anything else is 0: invalid
// freshness information makes a response stale (RFC 9111 4.2.1).
std::int64_t delta_seconds(std::string_view value) {
    constexpr std::int64_t kCap = std::int64_t{1} << 31;
    if (value.empty()) return 0;
    std::int64_t seconds = 0;
    for (char c : value) {
        if (!http::detail::is_digit(c)) return 0;
        seconds = std::min(kCap, seconds * 10 + (c - '0'));
    }
    return seconds;
}

CacheControl read_cache_control(const http::Response& response) {
    CacheControl cc;
    for (std::size_t i = 0; i < response.header_count; ++i) {
        if (!iequals(response.headers[i].name, "cache-control")) continue;
        for_each_directive(response.headers[i].value, [&](std::string_view name,
                                                          std::string_view value) {
            if (iequals(name, "no-store")) {
                cc.no_store = true;
            } else if (iequals(name, "private")) {
                cc.is_private = true;  // private="field" too: we cannot store part of a response
            } else if (iequals(name, "no-cache")) {
                cc.no_cache = true;  // no-cache="field" too: we never revalidate stored responses
            } else if (iequals(name, "s-maxage") && !cc.has_s_maxage) {
                cc.has_s_maxage = true;
                cc.s_maxage = delta_seconds(value);
            } else if (iequals(name, "max-age") && !cc.has_max_age) {
                cc.has_max_age = true;
                cc.max_age = delta_seconds(value);
            }
        });
    }
    return cc;
}

// ---- storability ------------------------------------------------------------------------------

// RFC 9110 15.1 "heuristically cacheable" statuses, minus 206 (we store whole responses only).
bool is_storable_status(int status) {
    static constexpr int kStatuses[] = {200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501};
    for (int s : kStatuses) {
        if (s == status) return true;
    }
    return false;
}

// Expires minus Date (RFC 9111 4.2.1): the lifetime the origin meant, whatever our clock says.
std::int64_t expires_lifetime_s(const http::Response& response, std::string_view expires,
                                std::int64_t now_unix_s) {
    std::int64_t expires_s = 0;
    if (!parse_http_date(expires, expires_s)) return 0;  // "0", "-1", garbage: already expired
    std::int64_t date_s = now_unix_s;
    if (const http::Header* date = find_field(response, "date")) {
        if (!parse_http_date(date->value, date_s)) date_s = now_unix_s;
    }
    return std::max<std::int64_t>(0, expires_s - date_s);
}

std::int64_t freshness_lifetime_ms(const http::Response& response, const CacheControl& cc,
                                   std::int64_t route_ttl_ms, std::int64_t now_unix_s) {
    if (cc.has_s_maxage) return cc.s_maxage * 1000;
    if (cc.has_max_age) return cc.max_age * 1000;
    if (const http::Header* expires = find_field(response, "expires")) {
        return expires_lifetime_s(response, expires->value, now_unix_s) * 1000;
    }
    return route_ttl_ms;
}

// Collects the Vary names, lower-case, in order, without duplicates. False for "*", and for an
// element that is not a header name: the response cannot be matched to requests by it.
bool read_vary(const http::Response& response, std::string& names) {
    bool star = false;
    std::string name;
    for (std::size_t i = 0; i < response.header_count; ++i) {
        if (!iequals(response.headers[i].name, "vary")) continue;
        http::detail::for_each_list_element(response.headers[i].value, [&](std::string_view v) {
            if (v == "*" || !std::all_of(v.begin(), v.end(), http::detail::is_tchar)) {
                star = true;
                return;
            }
            name.clear();
            for (char c : v) name += (c >= 'A' && c <= 'Z') ? static_cast<char>(c | 0x20) : c;
            if (http::list_contains_token(names, name)) return;
            if (!names.empty()) names += ',';
            names += name;
        });
    }
    return !star;
}

Storability not_stored(const char* reason) {
    Storability result;
    result.reason = reason;
    return result;
}

}  // namespace

CacheBypass cache_bypass(const http::Request& request, bool allow_authorization) {
    if (request.method != "GET" && request.method != "HEAD") return CacheBypass::Method;
    if (!allow_authorization && find_field(request, "authorization")) {
        return CacheBypass::Authorization;
    }
    return CacheBypass::None;
}

Storability evaluate_response(const http::Response& response, std::int64_t route_ttl_ms,
                              std::int64_t now_unix_s) {
    if (!is_storable_status(response.status)) return not_stored("status");
    const CacheControl cc = read_cache_control(response);
    if (cc.no_store) return not_stored("no-store");
    if (cc.is_private) return not_stored("private");
    if (cc.no_cache) return not_stored("no-cache");
    if (find_field(response, "set-cookie")) return not_stored("set-cookie");
    Storability result;
    if (!read_vary(response, result.vary)) return not_stored("vary");
    result.fresh_ms = freshness_lifetime_ms(response, cc, route_ttl_ms, now_unix_s);
    if (result.fresh_ms <= 0) {
        result.fresh_ms = 0;
        result.vary.clear();
        result.reason = "no freshness lifetime";
        return result;
    }
    result.store = true;
    return result;
}

// ---- HTTP dates -------------------------------------------------------------------------------

namespace {

constexpr std::array<std::string_view, 7> kDayNames = {"Sun", "Mon", "Tue", "Wed",
                                                       "Thu", "Fri", "Sat"};
constexpr std::array<std::string_view, 7> kLongDayNames = {
    "Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"};
constexpr std::array<std::string_view, 12> kMonthNames = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
std::int64_t days_from_civil(std::int64_t y, int m, int d) {
    y -= m <= 2;
    const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
    const std::int64_t yoe = y - era * 400;
    const std::int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const std::int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

struct CivilDate {
    std::int64_t year;
    int month;  // 1..12
    int day;    // 1..31
};

CivilDate civil_from_days(std::int64_t z) {
    z += 719468;
    const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const std::int64_t doe = z - era * 146097;
    const std::int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const std::int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const std::int64_t mp = (5 * doy + 2) / 153;
    const int day = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
    const int month = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
    return {yoe + era * 400 + (month <= 2), month, day};
}

int days_in_month(std::int64_t year, int month) {
    static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return month == 2 && leap ? 29 : kDays[month - 1];
}

// A cursor over a date's text; every read either matches exactly or fails.
class DateReader {
  public:
    explicit DateReader(std::string_view text) : text_(text) {}

    bool literal(std::string_view expected) {
        if (!text_.substr(pos_).starts_with(expected)) return false;
        pos_ += expected.size();
        return true;
    }
    // One of `names` (case-sensitive, RFC 9110 5.6.7); `index` is its position.
    template <std::size_t N>
    bool name(const std::array<std::string_view, N>& names, int& index) {
        for (std::size_t i = 0; i < N; ++i) {
            if (literal(names[i])) {
                index = static_cast<int>(i);
                return true;
            }
        }
        return false;
    }
    bool digits(std::size_t count, int& value) {
        if (text_.size() - pos_ < count) return false;
        value = 0;
        for (std::size_t i = 0; i < count; ++i) {
            const char c = text_[pos_ + i];
            if (!http::detail::is_digit(c)) return false;
            value = value * 10 + (c - '0');
        }
        pos_ += count;
        return true;
    }
    // 2DIGIT or SP DIGIT (asctime's day of month).
    bool padded_day(int& value) {
        if (literal(" ")) return digits(1, value);
        return digits(2, value);
    }
    bool at_end() const { return pos_ == text_.size(); }

  private:
    std::string_view text_;
    std::size_t pos_ = 0;
};

struct DateFields {
    std::int64_t year = 0;
    int month = 0;  // 0..11
    int day = 0;
    int hour = 0;
    int minute = 0;
    int second = 0;
};

bool read_time_of_day(DateReader& r, DateFields& f) {
    return r.digits(2, f.hour) && r.literal(":") && r.digits(2, f.minute) && r.literal(":") &&
           r.digits(2, f.second);
}

// "Sun, 06 Nov 1994 08:49:37 GMT"
bool read_imf_fixdate(DateReader& r, DateFields& f) {
    int ignored = 0;
    int year = 0;
    if (!(r.name(kDayNames, ignored) && r.literal(", ") && r.digits(2, f.day) && r.literal(" ") &&
          r.name(kMonthNames, f.month) && r.literal(" ") && r.digits(4, year) && r.literal(" ") &&
          read_time_of_day(r, f) && r.literal(" GMT"))) {
        return false;
    }
    f.year = year;
    return true;
}

// "Sunday, 06-Nov-94 08:49:37 GMT"
bool read_rfc850_date(DateReader& r, DateFields& f) {
    int ignored = 0;
    int year = 0;
    if (!(r.name(kLongDayNames, ignored) && r.literal(", ") && r.digits(2, f.day) &&
          r.literal("-") && r.name(kMonthNames, f.month) && r.literal("-") && r.digits(2, year) &&
          r.literal(" ") && read_time_of_day(r, f) && r.literal(" GMT"))) {
        return false;
    }
    // A fixed pivot instead of RFC 9110's "50 years from now": the result must not depend on
    // the clock, and nothing sends these dates for years before 1970 or after 2069.
    f.year = year < 70 ? 2000 + year : 1900 + year;
    return true;
}

// "Sun Nov  6 08:49:37 1994"
bool read_asctime_date(DateReader& r, DateFields& f) {
    int ignored = 0;
    int year = 0;
    if (!(r.name(kDayNames, ignored) && r.literal(" ") && r.name(kMonthNames, f.month) &&
          r.literal(" ") && r.padded_day(f.day) && r.literal(" ") && read_time_of_day(r, f) &&
          r.literal(" ") && r.digits(4, year))) {
        return false;
    }
    f.year = year;
    return true;
}

bool read_date(std::string_view text, DateFields& f) {
    // The fourth byte tells the formats apart: "Sun," / "Sun " / "Sunday,".
    if (text.size() < 4) return false;
    DateReader r(text);
    bool read = false;
    if (text[3] == ',') {
        read = read_imf_fixdate(r, f);
    } else if (text[3] == ' ') {
        read = read_asctime_date(r, f);
    } else {
        read = read_rfc850_date(r, f);
    }
    return read && r.at_end();
}

void append_padded(std::string& out, std::int64_t value, int width) {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
    for (auto n = end - buf; n < width; ++n) out += '0';
    out.append(buf, end);
}

}  // namespace

bool parse_http_date(std::string_view text, std::int64_t& unix_s) {
    DateFields f;
    if (!read_date(text, f)) return false;
    // Second 60 is a leap second (RFC 9110 5.6.7 allows it); it reads as the next second.
    if (f.day < 1 || f.day > days_in_month(f.year, f.month + 1) || f.hour > 23 || f.minute > 59 ||
        f.second > 60) {
        return false;
    }
    unix_s = days_from_civil(f.year, f.month + 1, f.day) * 86400 + f.hour * 3600 + f.minute * 60 +
             f.second;
    return true;
}

void append_http_date(std::string& out, std::int64_t unix_s) {
    std::int64_t days = unix_s / 86400;
    std::int64_t seconds = unix_s % 86400;
    if (seconds < 0) {  // floor, not truncation, for dates before 1970
        seconds += 86400;
        --days;
    }
    const CivilDate date = civil_from_days(days);
    const std::int64_t weekday = ((days % 7) + 7 + 4) % 7;  // 1970-01-01 was a Thursday
    out += kDayNames[static_cast<std::size_t>(weekday)];
    out += ", ";
    append_padded(out, date.day, 2);
    out += ' ';
    out += kMonthNames[static_cast<std::size_t>(date.month - 1)];
    out += ' ';
    append_padded(out, date.year, 4);
    out += ' ';
    append_padded(out, seconds / 3600, 2);
    out += ':';
    append_padded(out, seconds / 60 % 60, 2);
    out += ':';
    append_padded(out, seconds % 60, 2);
    out += " GMT";
}

// ---- conditional requests ---------------------------------------------------------------------

namespace {

std::string_view opaque_tag(std::string_view etag) {
    return etag.starts_with("W/") ? etag.substr(2) : etag;
}

// Whether an If-None-Match value ("*" or a list of entity-tags) names `etag` (RFC 9110 8.8.3.2
// weak comparison). A quoted tag may hold commas, so the list is read tag by tag; an unquoted
// element (not valid, but sent) is compared as it is.
bool if_none_match_names(std::string_view list, std::string_view etag) {
    const std::string_view stored = opaque_tag(etag);
    std::size_t pos = 0;
    while (pos < list.size()) {
        const char c = list[pos];
        if (c == ',' || http::detail::is_ows(c)) {
            ++pos;
            continue;
        }
        if (list.substr(pos).starts_with("W/")) pos += 2;
        std::size_t end = pos;
        if (end < list.size() && list[end] == '"') {
            const std::size_t close = list.find('"', end + 1);
            end = close == std::string_view::npos ? list.size() : close + 1;
        } else {
            end = std::min(list.size(), list.find(',', end));
        }
        const std::string_view tag = http::detail::trim_ows(list.substr(pos, end - pos));
        if (tag == "*" || tag == stored) return true;
        pos = end;
    }
    return false;
}

}  // namespace

bool is_not_modified(const http::Request& request, std::string_view etag,
                     std::string_view last_modified) {
    bool has_if_none_match = false;
    for (std::size_t i = 0; i < request.header_count; ++i) {
        if (!iequals(request.headers[i].name, "if-none-match")) continue;
        has_if_none_match = true;
        if (if_none_match_names(request.headers[i].value, etag)) return true;
    }
    if (has_if_none_match) return false;  // RFC 9110 13.2.2: If-Modified-Since is not evaluated
    const http::Header* since = find_field(request, "if-modified-since");
    if (!since || last_modified.empty()) return false;
    std::int64_t since_s = 0;
    std::int64_t modified_s = 0;
    return parse_http_date(since->value, since_s) && parse_http_date(last_modified, modified_s) &&
           modified_s <= since_s;
}

// ---- stored head ------------------------------------------------------------------------------

namespace {

// Besides the hop-by-hop names (worker/forward_headers.hpp), the headers the proxy writes for each
// response it sends: a stored copy would be stale or belong to another client.
bool is_left_out_of_store(std::string_view name) {
    return is_hop_by_hop(name) || is_one_of(name, {"x-request-id", "age", "set-cookie", "x-cache"});
}

}  // namespace

void build_stored_head(const http::Response& response, std::string& out) {
    out += "HTTP/1.1 ";
    append_padded(out, response.status, 3);
    out += ' ';
    out += response.reason.empty() ? http::reason_phrase(response.status) : response.reason;
    out += "\r\n";
    const ConnectionOptions connection_options(response.headers, response.header_count);
    for (std::size_t i = 0; i < response.header_count; ++i) {
        const http::Header& h = response.headers[i];
        if (is_left_out_of_store(h.name) || connection_options.names(h.name)) continue;
        append_header(out, h.name, h.value);
    }
    out += "\r\n";
}

void append_not_modified_lines(const http::Response& stored, std::string& out) {
    for (std::size_t i = 0; i < stored.header_count; ++i) {
        const http::Header& h = stored.headers[i];
        if (is_one_of(h.name, {"etag", "last-modified", "cache-control", "expires", "vary",
                               "content-location", "date"})) {
            append_header(out, h.name, h.value);
        }
    }
}

}  // namespace proxyd::worker
