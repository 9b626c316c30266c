// The dashboard's login pieces: the session store (master/dashboard_session.hpp), the form,
// cookie and Origin parsing (master/dashboard_request.hpp), the per-route window
// (master/route_stats.hpp) and the page's escaping.
#include <doctest.h>

#include <set>

#include "master/dashboard_page.hpp"
#include "master/dashboard_request.hpp"
#include "master/dashboard_session.hpp"
#include "master/route_stats.hpp"

using namespace proxyd::master;
using namespace std::chrono_literals;

namespace {

SessionStore::Clock::time_point t0() {
    return SessionStore::Clock::time_point(std::chrono::hours(1000));
}

bool is_hex(const std::string& text) {
    return text.find_first_not_of("0123456789abcdef") == std::string::npos;
}

}  // namespace

TEST_CASE("dashboard sessions: create gives random 32-byte ids and a separate CSRF token") {
    SessionStore store;
    auto a = store.create(t0());
    auto b = store.create(t0());
    REQUIRE(a);
    REQUIRE(b);
    CHECK(a->id.size() == 64);
    CHECK(a->csrf.size() == 64);
    CHECK(is_hex(a->id));
    CHECK(is_hex(a->csrf));
    CHECK(a->id != a->csrf);
    CHECK(a->id != b->id);
    CHECK(store.size() == 2);
}

TEST_CASE("dashboard sessions: lookup finds only the exact id") {
    SessionStore store;
    auto s = store.create(t0());
    REQUIRE(s);
    const DashboardSession* found = store.find(s->id, t0() + 1s);
    REQUIRE(found != nullptr);
    CHECK(found->csrf == s->csrf);
    CHECK(store.find("", t0()) == nullptr);
    CHECK(store.find(s->id.substr(0, 63), t0()) == nullptr);
    CHECK(store.find(s->id + "0", t0()) == nullptr);
    CHECK(store.find(s->csrf, t0()) == nullptr);  // the CSRF token is not a session id
}

TEST_CASE("dashboard sessions: idle and absolute expiry") {
    SessionStore store({.max_sessions = 8, .idle = 10min, .absolute = 30min});
    auto s = store.create(t0());
    REQUIRE(s);
    // Used every 9 minutes: the idle timer restarts each time...
    CHECK(store.find(s->id, t0() + 9min) != nullptr);
    CHECK(store.find(s->id, t0() + 18min) != nullptr);
    CHECK(store.find(s->id, t0() + 27min) != nullptr);
    // ...but the absolute limit ends it however often it is used.
    CHECK(store.find(s->id, t0() + 30min) == nullptr);
    CHECK(store.size() == 0);  // an expired session is removed when met

    auto idle = store.create(t0());
    REQUIRE(idle);
    CHECK(store.find(idle->id, t0() + 10min) == nullptr);
}

TEST_CASE("dashboard sessions: bounded, the oldest dropped first") {
    SessionStore store({.max_sessions = 3, .idle = 1h, .absolute = 2h});
    std::vector<std::string> ids;
    for (int i = 0; i < 5; ++i) ids.push_back(store.create(t0() + std::chrono::seconds(i))->id);
    CHECK(store.size() == 3);
    CHECK(store.find(ids[0], t0() + 10s) == nullptr);
    CHECK(store.find(ids[1], t0() + 10s) == nullptr);
    for (int i = 2; i < 5; ++i) CHECK(store.find(ids[i], t0() + 10s) != nullptr);
}

TEST_CASE("dashboard sessions: logout removes one session, clear removes all") {
    SessionStore store;
    auto a = store.create(t0());
    auto b = store.create(t0());
    CHECK(store.remove(a->id));
    CHECK_FALSE(store.remove(a->id));
    CHECK(store.find(a->id, t0()) == nullptr);
    CHECK(store.find(b->id, t0()) != nullptr);
    store.clear();
    CHECK(store.find(b->id, t0()) == nullptr);
}

TEST_CASE("constant_time_equal and random_hex") {
    CHECK(constant_time_equal("secret-token", "secret-token"));
    CHECK_FALSE(constant_time_equal("secret-token", "secret-tokex"));
    CHECK_FALSE(constant_time_equal("secret-token", "secret-token "));
    CHECK_FALSE(constant_time_equal("", "x"));
    std::set<std::string> seen;
    for (int i = 0; i < 100; ++i) seen.insert(random_hex(16));
    CHECK(seen.size() == 100);
    CHECK(random_hex(4).size() == 8);
}

TEST_CASE("parse_form decodes application/x-www-form-urlencoded") {
    auto form = parse_form("token=a%2Bb+c%3D%26d&csrf=x&empty=&flag&token=second");
    CHECK(form["token"] == "a+b c=&d");  // the first of repeated names wins
    CHECK(form["csrf"] == "x");
    CHECK(form["empty"] == "");
    CHECK(form.count("flag") == 1);
    CHECK(parse_form("").empty());
    CHECK(parse_form("&&").empty());
    // A broken escape stays as written.
    CHECK(parse_form("token=%zz%4")["token"] == "%zz%4");
    CHECK(parse_form("t%6Fken=1")["token"] == "1");
}

TEST_CASE("cookie_value finds one cookie in a Cookie header") {
    CHECK(cookie_value("proxyd_session=abc", "proxyd_session") == "abc");
    CHECK(cookie_value("a=1; proxyd_session=abc; b=2", "proxyd_session") == "abc");
    CHECK(cookie_value("a=1;proxyd_session=\"abc\"", "proxyd_session") == "abc");
    CHECK_FALSE(cookie_value("xproxyd_session=abc", "proxyd_session"));
    CHECK_FALSE(cookie_value("proxyd_session_old=abc", "proxyd_session"));
    CHECK_FALSE(cookie_value("", "proxyd_session"));
    CHECK(cookie_value("proxyd_session=", "proxyd_session") == "");
}

TEST_CASE("same_origin compares Origin with the Host the browser used") {
    CHECK(same_origin("http://127.0.0.1:9901", "127.0.0.1:9901"));
    CHECK(same_origin("https://admin.example:9901", "ADMIN.example:9901"));
    CHECK_FALSE(same_origin("http://evil.example", "127.0.0.1:9901"));
    CHECK_FALSE(same_origin("http://127.0.0.1:9902", "127.0.0.1:9901"));
    CHECK_FALSE(same_origin("http://127.0.0.1:9901.evil.example", "127.0.0.1:9901"));
    CHECK_FALSE(same_origin("null", "127.0.0.1:9901"));
    CHECK_FALSE(same_origin("http://", ""));
}

TEST_CASE("the session cookie carries its protections") {
    const std::string cookie = session_cookie("abc");
    CHECK(cookie.starts_with("proxyd_session=abc;"));
    for (const char* flag : {"HttpOnly", "SameSite=Strict", "Path=/", "Secure"}) {
        CHECK(cookie.find(flag) != std::string::npos);
    }
    CHECK(expired_session_cookie().find("Max-Age=0") != std::string::npos);
}

TEST_CASE("html_escape and the page's hooks") {
    CHECK(html_escape("<a href=\"x\">'&'</a>") ==
          "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    nlohmann::json view = {
        {"status",
         {{"version", "1.0"},
          {"generation", 3},
          {"upstreams",
           {{"b<x>",
             {{"balance", "round_robin"},
              {"servers",
               {{{"id", "s\"1"}, {"healthy", false}, {"weight", 5}, {"drain", true}}}}}}}}}},
        {"stats", {{"uptime_seconds", 90061}}},
        {"routes", {{"routes", {{"api", {{"requests", 7}}}}}}}};
    std::string page = render_dashboard_page(view, "tok123");
    CHECK(page.find("<meta name=\"csrf-token\" content=\"tok123\">") != std::string::npos);
    CHECK(page.find("data-upstream=\"b&lt;x&gt;\" data-server=\"s&quot;1\"") != std::string::npos);
    CHECK(page.find("<td class=\"health down\">down</td>") != std::string::npos);
    CHECK(page.find("id=\"upstreams\"") != std::string::npos);
    CHECK(page.find("id=\"reload\"") != std::string::npos);
    CHECK(page.find("id=\"message\"") != std::string::npos);
    CHECK(page.find("class=\"set-weight\"") != std::string::npos);
    CHECK(page.find("tr data-route=\"api\"") != std::string::npos);
    CHECK(page.find("1d 01h 01m 01s") != std::string::npos);
    CHECK(page.find("<b<x>") == std::string::npos);
    std::string login = render_login_page("Wrong <token>");
    CHECK(login.find("id=\"login\"") != std::string::npos);
    CHECK(login.find("name=\"token\"") != std::string::npos);
    CHECK(login.find("Wrong &lt;token&gt;") != std::string::npos);
}

TEST_CASE("route stats: labels, and rates over the window") {
    CHECK(label_value("route=\"api\",upstream=\"b\",status=\"503\"", "status") == "503");
    CHECK(label_value("route=\"a\\\"b\\\\c\",status=\"200\"", "route") == "a\"b\\c");
    CHECK(label_value("route=\"a\\\"b\\\\c\",status=\"200\"", "status") == "200");
    CHECK(label_value("route=\"\",status=\"404\"", "route") == "");
    CHECK(label_value("route=\"x\"", "missing") == "");

    RouteStatsWindow window;
    auto start = SessionStore::Clock::time_point(std::chrono::hours(5));
    RouteTotalsMap totals;
    totals["api"].requests = 100;
    totals["api"].errors = 10;
    totals["api"].buckets[0] = 100;
    auto first = window.observe(start, totals);
    CHECK(first["routes"]["api"]["requests"] == 100);
    CHECK(first["routes"]["api"]["requests_per_second"] == 0.0);  // no earlier snapshot yet
    totals["api"].requests = 300;
    totals["api"].errors = 10;
    totals["api"].buckets[0] = 300;
    auto second = window.observe(start + 10s, totals);
    CHECK(second["window_seconds"] == 10.0);
    CHECK(second["routes"]["api"]["requests_per_second"] == 20.0);
    CHECK(second["routes"]["api"]["error_rate"] == 0.0);  // no new errors in the window
    CHECK(second["routes"]["api"]["errors"] == 10);
    // Snapshots older than a minute no longer count.
    auto later = window.observe(start + 100s, totals);
    CHECK(later["window_seconds"] == 0.0);
}
