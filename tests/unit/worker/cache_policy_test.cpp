#include "worker/cache_policy.hpp"

#include <doctest.h>

#include <deque>
#include <string>

#include "common/http/cache_key.hpp"

using namespace proxyd;
using worker::CacheBypass;

namespace {

constexpr std::int64_t kNow = 784111777;  // Sun, 06 Nov 1994 08:49:37 GMT
constexpr std::int64_t kTtl = 300000;     // the route's ttl in the storability cases

// The parsed views point into the text: every text stays alive until the tests end.
const std::string& keep(std::string text) {
    static std::deque<std::string> kept;
    kept.push_back(std::move(text));
    return kept.back();
}

// A GET for /p on example.com with `headers` ("Name: value\r\n" each).
http::Request request(std::string_view headers, std::string_view method = "GET") {
    const std::string& text = keep(std::string(method) + " /p HTTP/1.1\r\nHost: example.com\r\n" +
                                   std::string(headers) + "\r\n");
    http::Request r;
    REQUIRE(http::parse_request(text.data(), text.size(), {}, r) == http::ParseStatus::Done);
    return r;
}

// "HTTP/1.1 <status> X\r\n" + headers + "\r\n".
http::Response response(std::string_view headers, int status = 200,
                        std::string_view status_line_rest = " X") {
    const std::string& text =
        keep("HTTP/1.1 " + std::to_string(status) + std::string(status_line_rest) + "\r\n" +
             std::string(headers) + "\r\n");
    http::Response r;
    REQUIRE(http::parse_response(text.data(), text.size(), 65536, false, r) ==
            http::ParseStatus::Done);
    return r;
}

worker::Storability evaluate(std::string_view headers, int status = 200,
                             std::int64_t ttl_ms = kTtl) {
    return worker::evaluate_response(response(headers, status), ttl_ms, kNow);
}

std::string key(std::string_view method, std::string_view host, std::string_view path,
                std::string_view query = "") {
    std::string out;
    http::append_cache_key(out, method, host, path, query);
    return out;
}

std::string date(std::int64_t unix_s) {
    std::string out;
    worker::append_http_date(out, unix_s);
    return out;
}

// The parsed date, or -1 for a text parse_http_date rejects.
std::int64_t parsed(std::string_view text) {
    std::int64_t unix_s = 0;
    return worker::parse_http_date(text, unix_s) ? unix_s : -1;
}

bool not_modified(std::string_view request_headers, std::string_view etag,
                  std::string_view last_modified = "") {
    return worker::is_not_modified(request(request_headers), etag, last_modified);
}

}  // namespace

// ---- cache key ---------------------------------------------------------------------------------

TEST_CASE("cache key: method, lower-cased host without port, path and query") {
    CHECK(key("GET", "example.com", "/a/b", "x=1") == "GET example.com/a/b?x=1");
    CHECK(key("GET", "example.com", "/a/b") == "GET example.com/a/b");
    CHECK(key("HEAD", "example.com", "/a") == "HEAD example.com/a");
    CHECK(key("GET", "Example.COM:8080", "/A") == "GET example.com/A");  // the path keeps its case
    CHECK(key("GET", "[::1]:8080", "/") == "GET [::1]/");
    CHECK(key("GET", "[2001:DB8::1]", "/") == "GET [2001:db8::1]/");
    CHECK(key("GET", "", "/a") == "GET /a");  // HTTP/1.0 without Host
    std::string out = "kept:";
    http::append_cache_key(out, "GET", "h", "/", "");
    CHECK(out == "kept:GET h/");  // appends
}

TEST_CASE("cache key: vary suffix lists the request's values per stored name") {
    const auto r = request(
        "Accept-Encoding: gzip\r\nX-Lang: en\r\naccept-encoding: br\r\nAccept: text/html\r\n");
    std::string out = key("GET", "example.com", "/p");
    http::append_vary_suffix(out, "accept-encoding,x-absent,accept", r);
    CHECK(out == "GET example.com/p\naccept-encoding:gzip, br\nx-absent:\naccept:text/html");

    std::string plain = "k";
    http::append_vary_suffix(plain, "", r);
    CHECK(plain == "k");
}

TEST_CASE("cache key: purge matcher compares the target's prefix and the host") {
    const std::string k = key("GET", "Example.com:8080", "/api/users", "id=1");
    // Plain string prefixes of the target, no path-segment boundary.
    CHECK(http::cache_key_matches(k, "/api", ""));
    CHECK(http::cache_key_matches(k, "/api/", ""));
    CHECK(http::cache_key_matches(k, "/ap", ""));
    CHECK(http::cache_key_matches(k, "/api/users", ""));
    CHECK(http::cache_key_matches(k, "/api/users?id", ""));
    CHECK(http::cache_key_matches(k, "/", ""));
    CHECK(http::cache_key_matches(k, "", ""));
    CHECK_FALSE(http::cache_key_matches(k, "/api/users/", ""));
    CHECK_FALSE(http::cache_key_matches(k, "/api/users?id=12", ""));
    CHECK_FALSE(http::cache_key_matches(k, "/users", ""));
    CHECK_FALSE(http::cache_key_matches(k, "api", ""));
    CHECK_FALSE(http::cache_key_matches(k, "example.com/api", ""));

    // Host: case-insensitive, port ignored, other hosts never match.
    CHECK(http::cache_key_matches(k, "/api", "example.com"));
    CHECK(http::cache_key_matches(k, "/api", "EXAMPLE.com:9"));
    CHECK_FALSE(http::cache_key_matches(k, "/api", "other.com"));
    CHECK_FALSE(http::cache_key_matches(k, "/api", "example.co"));
    CHECK_FALSE(http::cache_key_matches(k, "/other", "example.com"));
    CHECK(http::cache_key_matches(key("GET", "[::1]:80", "/x"), "/x", "[::1]"));

    // Every method; keys without a host.
    CHECK(http::cache_key_matches(key("HEAD", "example.com", "/api"), "/api", "example.com"));
    CHECK(http::cache_key_matches(key("GET", "", "/api"), "/api", ""));
    CHECK_FALSE(http::cache_key_matches(key("GET", "", "/api"), "/api", "example.com"));
    CHECK_FALSE(http::cache_key_matches("garbage", "", ""));
}

TEST_CASE("cache key: a variant key matches like its base key") {
    std::string variant = key("GET", "example.com", "/a");
    http::append_vary_suffix(variant, "accept-encoding", request("Accept-Encoding: /a/b\r\n"));
    CHECK(http::cache_key_matches(variant, "/a", "example.com"));
    CHECK_FALSE(http::cache_key_matches(variant, "/a\n", ""));
    CHECK_FALSE(http::cache_key_matches(variant, "/a/b", ""));
    std::string other_host = key("GET", "example.com", "/a");
    http::append_vary_suffix(other_host, "x", request("X: other.com/a\r\n"));
    CHECK_FALSE(http::cache_key_matches(other_host, "/a", "other.com"));
}

// ---- bypass ------------------------------------------------------------------------------------

TEST_CASE("cache policy: only GET and HEAD without Authorization use the cache") {
    CHECK(worker::cache_bypass(request(""), false) == CacheBypass::None);
    CHECK(worker::cache_bypass(request("", "HEAD"), false) == CacheBypass::None);
    CHECK(worker::cache_bypass(request("", "POST"), true) == CacheBypass::Method);
    CHECK(worker::cache_bypass(request("", "PUT"), false) == CacheBypass::Method);
    CHECK(worker::cache_bypass(request("", "DELETE"), false) == CacheBypass::Method);
    CHECK(worker::cache_bypass(request("", "OPTIONS"), false) == CacheBypass::Method);
    CHECK(worker::cache_bypass(request("", "get"), false) == CacheBypass::Method);  // case matters

    const auto with_auth = request("authorization: Bearer x\r\n");
    CHECK(worker::cache_bypass(with_auth, false) == CacheBypass::Authorization);
    CHECK(worker::cache_bypass(with_auth, true) == CacheBypass::None);
    CHECK(worker::cache_bypass(request("Authorization:\r\n"), false) == CacheBypass::Authorization);
    CHECK(worker::cache_bypass(request("Authorization: x\r\n", "POST"), false) ==
          CacheBypass::Method);
    // The request's own Cache-Control does not matter.
    CHECK(worker::cache_bypass(request("Cache-Control: no-store, no-cache\r\n"), false) ==
          CacheBypass::None);
}

// ---- storability -------------------------------------------------------------------------------

TEST_CASE("cache policy: storable statuses") {
    for (int status : {200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501}) {
        CAPTURE(status);
        const auto s = evaluate("", status);
        CHECK(s.store);
        CHECK(s.fresh_ms == kTtl);
        CHECK(std::string_view(s.reason).empty());
    }
    for (int status : {201, 202, 206, 302, 303, 304, 307, 400, 401, 403, 429, 500, 502, 503, 504}) {
        CAPTURE(status);
        const auto s = evaluate("Cache-Control: max-age=60\r\n", status);
        CHECK_FALSE(s.store);
        CHECK(std::string_view(s.reason) == "status");
    }
}

TEST_CASE("cache policy: Cache-Control directives that forbid storing") {
    struct Case {
        const char* headers;
        const char* reason;
    };
    const Case cases[] = {
        {"Cache-Control: no-store\r\n", "no-store"},
        {"Cache-Control: NO-STORE\r\n", "no-store"},
        {"Cache-Control: public, max-age=60, no-store\r\n", "no-store"},
        {"Cache-Control: max-age=60\r\nCache-Control: no-store\r\n", "no-store"},
        {"Cache-Control: private\r\n", "private"},
        {"Cache-Control: Private\r\n", "private"},
        {"Cache-Control: private=\"Set-Cookie\"\r\n", "private"},
        {"Cache-Control: private=\"X-A, X-B\", max-age=60\r\n", "private"},
        {"Cache-Control: no-cache\r\n", "no-cache"},
        {"Cache-Control: no-cache=\"Set-Cookie\"\r\n", "no-cache"},
        {"Cache-Control: s-maxage=60, no-cache\r\n", "no-cache"},
        {"Cache-Control: private, no-store\r\n", "no-store"},  // the most restrictive wins
        {"Set-Cookie: a=b\r\nCache-Control: max-age=60\r\n", "set-cookie"},
        {"Vary: *\r\n", "vary"},
        {"Vary: Accept-Encoding, *\r\n", "vary"},
        {"Vary: Accept\r\nVary: *\r\n", "vary"},
        // Not header names: the response cannot be matched to requests by them.
        {"Vary: xpires: 0\r\n", "vary"},
        {"Vary: Accept, a b\r\n", "vary"},
        {"Vary: Acc\"ept\r\n", "vary"},
    };
    for (const Case& c : cases) {
        CAPTURE(c.headers);
        const auto s = evaluate(c.headers);
        CHECK_FALSE(s.store);
        CHECK(std::string_view(s.reason) == c.reason);
        CHECK(s.fresh_ms == 0);
    }
}

TEST_CASE("cache policy: directives that do not affect storing") {
    for (const char* headers : {
             "Cache-Control: public\r\n",
             "Cache-Control: must-revalidate, proxy-revalidate, no-transform, immutable\r\n",
             "Cache-Control: ext=\"no-store, private\"\r\n",  // a quoted value is not split
             "Cache-Control:\r\n",
             "Cache-Control: ,, ,\r\n",
             "Pragma: no-cache\r\n",
         }) {
        CAPTURE(headers);
        const auto s = evaluate(headers);
        CHECK(s.store);
        CHECK(s.fresh_ms == kTtl);
    }
}

TEST_CASE("cache policy: freshness lifetime precedence") {
    const std::string expires_in_90 = "Expires: " + date(kNow + 90) + "\r\n";
    CHECK(evaluate("Cache-Control: s-maxage=30, max-age=60\r\n" + expires_in_90).fresh_ms == 30000);
    CHECK(evaluate("Cache-Control: max-age=60, s-maxage=30\r\n").fresh_ms == 30000);
    CHECK(evaluate("Cache-Control: max-age=60\r\n" + expires_in_90).fresh_ms == 60000);
    CHECK(evaluate(expires_in_90).fresh_ms == 90000);
    CHECK(evaluate("").fresh_ms == kTtl);
    CHECK(evaluate("Cache-Control: public\r\n", 200, 1500).fresh_ms == 1500);
    // A longer upstream lifetime than the route's ttl is taken as it is.
    CHECK(evaluate("Cache-Control: max-age=86400\r\n").fresh_ms == 86400000);
}

TEST_CASE("cache policy: Cache-Control values: case, quotes, duplicates, invalid") {
    CHECK(evaluate("Cache-Control: MAX-AGE=60\r\n").fresh_ms == 60000);
    CHECK(evaluate("Cache-Control: max-age=\"60\"\r\n").fresh_ms == 60000);
    CHECK(evaluate("Cache-Control: max-age = 60 \r\n").fresh_ms == 60000);
    CHECK(evaluate("Cache-Control: max-age=60, max-age=10\r\n").fresh_ms == 60000);
    CHECK(evaluate("Cache-Control: max-age=60\r\nCache-Control: max-age=10\r\n").fresh_ms == 60000);
    CHECK(evaluate("Cache-Control: s-maxage=20, s-maxage=99\r\n").fresh_ms == 20000);
    CHECK(evaluate("Cache-Control: x=\"a, max-age=5\", max-age=60\r\n").fresh_ms == 60000);
    CHECK(evaluate("Cache-Control: x=\"a\\\" max-age=5\", max-age=60\r\n").fresh_ms == 60000);
    CHECK(evaluate("Cache-Control: max-age=99999999999999999999\r\n").fresh_ms ==
          (std::int64_t{1} << 31) * 1000);  // capped at 2^31 s (RFC 9111 1.2.2)

    for (const char* headers : {
             "Cache-Control: max-age=0\r\n",
             "Cache-Control: s-maxage=0, max-age=60\r\n",
             "Cache-Control: max-age=abc\r\n",
             "Cache-Control: max-age=-1\r\n",
             "Cache-Control: max-age=1.5\r\n",
             "Cache-Control: max-age\r\n",
             "Cache-Control: max-age=\r\n",
             "Cache-Control: max-age=0\r\nExpires: Thu, 01 Jan 2099 00:00:00 GMT\r\n",
         }) {
        CAPTURE(headers);
        const auto s = evaluate(headers);
        CHECK_FALSE(s.store);
        CHECK(s.fresh_ms == 0);
        CHECK(std::string_view(s.reason) == "no freshness lifetime");
    }
    CHECK_FALSE(evaluate("", 200, 0).store);  // no lifetime at all
}

TEST_CASE("cache policy: Expires is measured from Date, not from our clock") {
    // The upstream's clock is an hour behind ours: the lifetime it meant is still 120 s.
    const std::int64_t upstream_now = kNow - 3600;
    const std::string skewed =
        "Date: " + date(upstream_now) + "\r\nExpires: " + date(upstream_now + 120) + "\r\n";
    CHECK(evaluate(skewed).fresh_ms == 120000);
    // Without Date (or with an invalid one) the lifetime counts from now.
    CHECK(evaluate("Expires: " + date(kNow + 45) + "\r\n").fresh_ms == 45000);
    CHECK(evaluate("Date: yesterday\r\nExpires: " + date(kNow + 45) + "\r\n").fresh_ms == 45000);
    // Expired, equal to Date, or invalid ("0" means already expired): not stored.
    for (const std::string& headers : {
             "Expires: " + date(kNow - 1) + "\r\n",
             "Date: " + date(kNow) + "\r\nExpires: " + date(kNow) + "\r\n",
             "Date: " + date(kNow + 3600) + "\r\nExpires: " + date(kNow + 60) + "\r\n",
             std::string("Expires: 0\r\n"),
             std::string("Expires: -1\r\n"),
             std::string("Expires:\r\n"),
         }) {
        CAPTURE(headers);
        CHECK_FALSE(evaluate(headers).store);
    }
}

TEST_CASE("cache policy: Vary names are normalized") {
    CHECK(evaluate("").vary.empty());
    CHECK(evaluate("Vary: Accept-Encoding\r\n").vary == "accept-encoding");
    const auto s = evaluate(
        "Vary: Accept-Encoding, ACCEPT-Language\r\nvary: accept-encoding,X-Foo , \r\n"
        "Cache-Control: max-age=5\r\n");
    CHECK(s.store);
    CHECK(s.vary == "accept-encoding,accept-language,x-foo");
    CHECK(evaluate("Vary: \r\n").vary.empty());
    CHECK(evaluate("Vary: Accept\r\nCache-Control: no-store\r\n").vary.empty());
}

// ---- HTTP dates --------------------------------------------------------------------------------

TEST_CASE("cache policy: HTTP dates in the three formats") {
    CHECK(parsed("Sun, 06 Nov 1994 08:49:37 GMT") == kNow);
    CHECK(parsed("Sunday, 06-Nov-94 08:49:37 GMT") == kNow);
    CHECK(parsed("Sun Nov  6 08:49:37 1994") == kNow);
    CHECK(parsed("Sun Nov 06 08:49:37 1994") == kNow);
    CHECK(parsed("Thu, 01 Jan 1970 00:00:00 GMT") == 0);
    CHECK(parsed("Tue, 29 Feb 2000 12:00:00 GMT") == 951825600);
    CHECK(parsed("Wed, 31 Dec 1969 23:59:59 GMT") == -1);  // before 1970 works too
    CHECK(parsed("Sun, 06 Nov 1994 23:59:60 GMT") == parsed("Mon, 07 Nov 1994 00:00:00 GMT"));
    // RFC 850 two-digit years: 70-99 are 19xx, 00-69 are 20xx.
    CHECK(parsed("Thursday, 01-Jan-70 00:00:00 GMT") == 0);
    CHECK(parsed("Friday, 01-Jan-38 00:00:00 GMT") == parsed("Fri, 01 Jan 2038 00:00:00 GMT"));
    CHECK(parsed("Saturday, 01-Jan-69 00:00:00 GMT") == parsed("Sat, 01 Jan 2069 00:00:00 GMT"));
    // The day name is not checked against the date (RFC 9110 lets a recipient skip that).
    CHECK(parsed("Mon, 06 Nov 1994 08:49:37 GMT") == kNow);
}

TEST_CASE("cache policy: invalid HTTP dates") {
    for (const char* text : {
             "",
             "0",
             "-1",
             "Sun",
             "Sun, 06 Nov 1994 08:49:37",
             "Sun, 06 Nov 1994 08:49:37 UTC",
             "Sun, 06 Nov 1994 08:49:37 gmt",
             "Sun, 06 Nov 1994 08:49:37 GMT ",
             "Sun, 06 Nov 1994 08:49:37 GMTx",
             "Sun, 6 Nov 1994 08:49:37 GMT",
             "Sun, 06 Nov 94 08:49:37 GMT",
             "Sun, 06 nov 1994 08:49:37 GMT",
             "sun, 06 Nov 1994 08:49:37 GMT",
             "Xyz, 06 Nov 1994 08:49:37 GMT",
             "Sun,06 Nov 1994 08:49:37 GMT",
             "Sun, 06 Nov 1994 8:49:37 GMT",
             "Sun, 06 Nov 1994 24:00:00 GMT",
             "Sun, 06 Nov 1994 08:60:00 GMT",
             "Sun, 06 Nov 1994 08:49:61 GMT",
             "Sun, 00 Nov 1994 08:49:37 GMT",
             "Sun, 31 Apr 1994 08:49:37 GMT",
             "Sun, 29 Feb 1900 08:49:37 GMT",
             "Sun, 29 Feb 1995 08:49:37 GMT",
             "Sun, 06 Xyz 1994 08:49:37 GMT",
             "Sun, 06-Nov-94 08:49:37 GMT",       // RFC 850 needs the long day name
             "Sunday, 06-Nov-1994 08:49:37 GMT",  // and a two-digit year
             "Sunday, 06 Nov 1994 08:49:37 GMT",
             "Sun Nov 6 08:49:37 1994",
             "Sun Nov  6 08:49:37 94",
             "Sun Nov  6 08:49:37 1994 GMT",
             "1994-11-06T08:49:37Z",
         }) {
        CAPTURE(text);
        std::int64_t unix_s = 42;
        CHECK_FALSE(worker::parse_http_date(text, unix_s));
        CHECK(unix_s == 42);
    }
}

TEST_CASE("cache policy: HTTP dates are written as IMF-fixdate") {
    CHECK(date(kNow) == "Sun, 06 Nov 1994 08:49:37 GMT");
    CHECK(date(0) == "Thu, 01 Jan 1970 00:00:00 GMT");
    CHECK(date(-1) == "Wed, 31 Dec 1969 23:59:59 GMT");
    CHECK(date(951825600) == "Tue, 29 Feb 2000 12:00:00 GMT");
    CHECK(date(4102444799) == "Thu, 31 Dec 2099 23:59:59 GMT");
    std::string out = "Date: ";
    worker::append_http_date(out, 0);
    CHECK(out == "Date: Thu, 01 Jan 1970 00:00:00 GMT");  // appends
    for (std::int64_t t = -400LL * 86400 * 366; t < 200LL * 86400 * 366; t += 86400 * 37 + 3607) {
        CAPTURE(t);
        CHECK(parsed(date(t)) == t);
    }
}

// ---- conditional requests ----------------------------------------------------------------------

TEST_CASE("cache policy: If-None-Match uses weak comparison") {
    const char* strong = "\"v1\"";
    const char* weak = "W/\"v1\"";
    CHECK(not_modified("If-None-Match: \"v1\"\r\n", strong));
    CHECK(not_modified("If-None-Match: \"v1\"\r\n", weak));
    CHECK(not_modified("If-None-Match: W/\"v1\"\r\n", strong));
    CHECK(not_modified("If-None-Match: W/\"v1\"\r\n", weak));
    CHECK_FALSE(not_modified("If-None-Match: \"v2\"\r\n", strong));
    CHECK_FALSE(not_modified("If-None-Match: \"V1\"\r\n", strong));  // opaque tags are exact
    CHECK_FALSE(not_modified("If-None-Match: v1\r\n", strong));
    // Lists, on one line or several; a quoted comma does not split a tag.
    CHECK(not_modified("If-None-Match: \"a\", W/\"v1\" ,\"b\"\r\n", strong));
    CHECK(not_modified("If-None-Match: \"a\"\r\nIf-None-Match: \"v1\"\r\n", strong));
    CHECK_FALSE(not_modified("If-None-Match: \"a\", \"b\"\r\n", strong));
    CHECK(not_modified("If-None-Match: \"x,y\"\r\n", "\"x,y\""));
    CHECK_FALSE(not_modified("If-None-Match: \"x,y\"\r\n", "\"y\""));
    CHECK_FALSE(not_modified("If-None-Match: \"x,\"y\"\r\n", "\"y\""));
    // "*" matches any stored response, with an ETag or without (RFC 9110 13.1.2: a current
    // representation exists).
    CHECK(not_modified("If-None-Match: *\r\n", strong));
    CHECK(not_modified("If-None-Match: *\r\n", weak));
    CHECK(not_modified("If-None-Match: *\r\n", ""));
    CHECK_FALSE(not_modified("If-None-Match: \"v1\"\r\n", ""));
    CHECK_FALSE(not_modified("", strong));
}

TEST_CASE("cache policy: If-Modified-Since against Last-Modified") {
    const std::string last_modified = date(kNow);
    const auto ims = [](std::int64_t t) { return "If-Modified-Since: " + date(t) + "\r\n"; };
    CHECK(not_modified(ims(kNow + 10), "", last_modified));  // not modified since a later time
    CHECK(not_modified(ims(kNow), "", last_modified));       // equal
    CHECK_FALSE(not_modified(ims(kNow - 10), "", last_modified));
    CHECK(not_modified("If-Modified-Since: Sunday, 06-Nov-94 08:49:37 GMT\r\n", "", last_modified));
    CHECK(not_modified("If-Modified-Since: Sun Nov  6 08:49:37 1994\r\n", "", last_modified));
    CHECK_FALSE(not_modified("If-Modified-Since: yesterday\r\n", "", last_modified));
    CHECK_FALSE(not_modified(ims(kNow + 10), "", "not a date"));
    CHECK_FALSE(not_modified(ims(kNow + 10), "", ""));  // nothing stored to compare with
    CHECK_FALSE(not_modified("", "", last_modified));
}

TEST_CASE("cache policy: If-None-Match takes precedence over If-Modified-Since") {
    const std::string last_modified = date(kNow);
    const std::string newer_ims = "If-Modified-Since: " + date(kNow + 10) + "\r\n";
    const std::string older_ims = "If-Modified-Since: " + date(kNow - 10) + "\r\n";
    CHECK_FALSE(not_modified("If-None-Match: \"other\"\r\n" + newer_ims, "\"v1\"", last_modified));
    CHECK(not_modified("If-None-Match: \"v1\"\r\n" + older_ims, "\"v1\"", last_modified));
    // An If-None-Match the stored response cannot satisfy (no ETag) still rules IMS out.
    CHECK_FALSE(not_modified("If-None-Match: \"v1\"\r\n" + newer_ims, "", last_modified));
}

// ---- stored head -------------------------------------------------------------------------------

TEST_CASE("cache policy: stored head drops exactly the per-hop and per-response headers") {
    const auto r = response(
        "Content-Type: text/plain\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n"
        "Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n"
        "Trailer: X-T\r\nUpgrade: h2c\r\nContent-Length: 5\r\nX-Request-Id: abc\r\nAge: 7\r\n"
        "Set-Cookie: a=b\r\nx-cache: HIT\r\nETag: \"v1\"\r\nCache-Control: max-age=60\r\n"
        "Vary: Accept-Encoding\r\nX-Custom: kept\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n",
        200, " OK");
    std::string head;
    worker::build_stored_head(r, head);
    CHECK(head ==
          "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nETag: \"v1\"\r\n"
          "Cache-Control: max-age=60\r\nVary: Accept-Encoding\r\nX-Custom: kept\r\n"
          "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n");

    // It reads back as a response head.
    http::Response back;
    REQUIRE(http::parse_response(head.data(), head.size(), 65536, false, back) ==
            http::ParseStatus::Done);
    CHECK(back.status == 200);
    CHECK(back.header_count == 6);
    CHECK(back.head_length == head.size());
}

TEST_CASE("cache policy: stored head from a chunked HTTP/1.0-style upstream status line") {
    std::string head = "prefix|";
    worker::build_stored_head(
        response("Transfer-Encoding: chunked\r\nContent-Type: text/html\r\n", 404, " "), head);
    // Reason filled in when the upstream sent none; the head is appended.
    CHECK(head == "prefix|HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n\r\n");

    std::string bare;
    worker::build_stored_head(response("", 301, " Moved"), bare);
    CHECK(bare == "HTTP/1.1 301 Moved\r\n\r\n");
}

TEST_CASE("cache policy: 304 keeps the validator and freshness lines") {
    const auto stored = response(
        "Content-Type: text/plain\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nETag: W/\"v1\"\r\n"
        "Content-Length: 5\r\nLast-Modified: Sat, 05 Nov 1994 08:49:37 GMT\r\n"
        "Cache-Control: max-age=60\r\nExpires: Sun, 06 Nov 1994 09:49:37 GMT\r\n"
        "Vary: Accept-Encoding\r\nContent-Location: /p.txt\r\nX-Custom: no\r\n"
        "Content-Encoding: gzip\r\n");
    std::string out;
    worker::append_not_modified_lines(stored, out);
    CHECK(out ==
          "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nETag: W/\"v1\"\r\n"
          "Last-Modified: Sat, 05 Nov 1994 08:49:37 GMT\r\nCache-Control: max-age=60\r\n"
          "Expires: Sun, 06 Nov 1994 09:49:37 GMT\r\nVary: Accept-Encoding\r\n"
          "Content-Location: /p.txt\r\n");

    std::string none;
    worker::append_not_modified_lines(response("Content-Type: text/plain\r\n"), none);
    CHECK(none.empty());
}
