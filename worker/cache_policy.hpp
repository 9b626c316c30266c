// The response cache's rules, as pure functions over parsed heads (common/http/parser.hpp): which
// requests skip the cache, which responses may be stored and for how long, when a stored response
// answers a conditional request with 304, and which header lines are stored and sent again.
//
// The rules are those of a shared cache (RFC 9111) kept simple, as nginx does: the request's own
// Cache-Control is ignored, a response is stored whole or not at all (no revalidation of stored
// responses with the upstream), and anything that could leak one client's response to another
// (private, Set-Cookie, Authorization without the route's consent) is not stored.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/http/parser.hpp"

namespace proxyd::worker {

// ---- requests ---------------------------------------------------------------------------------

enum class CacheBypass {
    None,           // look the request up (and store its response)
    Method,         // not GET or HEAD
    Authorization,  // has Authorization and the route does not allow caching those
};

CacheBypass cache_bypass(const http::Request& request, bool allow_authorization);

// ---- responses --------------------------------------------------------------------------------

struct Storability {
    bool store = false;
    std::int64_t fresh_ms = 0;  // freshness lifetime; > 0 when store is true
    const char* reason = "";    // why not stored ("status", "no-store", ...); "" when stored
    std::string vary;           // the Vary names: lower-case, ",", in order, no duplicates
};

// Whether `response` may be stored, and for how long (RFC 9111 3 and 4.2.1):
// - status one of 200 203 204 300 301 308 404 405 410 414 501;
// - Cache-Control has none of no-store, private, no-cache (with or without a field list), and no
//   Set-Cookie, no "Vary: *";
// - lifetime: s-maxage, else max-age, else Expires minus Date (Date absent or invalid: now;
//   Expires invalid: already expired), else `route_ttl_ms`. Duplicated directives: the first one
//   counts; an invalid delta-seconds value means 0. A lifetime of 0 is not stored.
// Body size and completion are the caller's part.
Storability evaluate_response(const http::Response& response, std::int64_t route_ttl_ms,
                              std::int64_t now_unix_s);

// ---- HTTP dates (RFC 9110 5.6.7) --------------------------------------------------------------

// Reads IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), RFC 850 ("Sunday, 06-Nov-94 08:49:37
// GMT"; years 70-99 are 19xx, 00-69 are 20xx) and asctime ("Sun Nov  6 08:49:37 1994"). False
// for anything else, including an impossible date (31 Apr) or time.
bool parse_http_date(std::string_view text, std::int64_t& unix_s);

// Appends `unix_s` as IMF-fixdate.
void append_http_date(std::string& out, std::int64_t unix_s);

// ---- conditional requests (RFC 9110 13.1.2, 13.1.3, 13.2.2) -----------------------------------

// Whether the stored response (its ETag and Last-Modified values, "" when absent) answers
// `request` with 304 Not Modified. If-None-Match, when present, decides alone: true when one of
// its entity-tags equals `etag` by weak comparison (W/ ignored), or it is "*" (the stored
// response is a current representation). Otherwise If-Modified-Since: true when both it and
// `last_modified` are valid dates and Last-Modified <= If-Modified-Since.
bool is_not_modified(const http::Request& request, std::string_view etag,
                     std::string_view last_modified);

// ---- what is stored and sent again ------------------------------------------------------------

// Appends the head to store: "HTTP/1.1 <status> <reason>\r\n", the response's header lines
// except the hop-by-hop ones (Connection, the headers it names, Keep-Alive, Proxy-Connection, TE,
// Trailer, Upgrade, Transfer-Encoding) and Content-Length, X-Request-Id, Age, Set-Cookie and
// X-Cache (the proxy sets those per response), then the empty line. Read back with
// http::parse_response; the body's length comes from the stored body.
void build_stored_head(const http::Response& response, std::string& out);

// Appends the "Name: value\r\n" lines that a 304 made from `stored` carries (RFC 9110 15.4.5):
// ETag, Last-Modified, Cache-Control, Expires, Vary, Content-Location and Date, as stored.
void append_not_modified_lines(const http::Response& stored, std::string& out);

}  // namespace proxyd::worker
