// The dashboard's HTML, rendered by the master, and its static style and script (compiled in:
// nothing is fetched from elsewhere, nothing needs building). The HTML holds every number as of
// the request, so the page is useful without JavaScript; the script then refreshes the same
// elements every 2 s from the JSON API and adds the charts and the actions.
//
// Stable hooks (browser tests and operators' scripts rely on them): table#upstreams with rows
// tr[data-upstream][data-server], cells .health ("healthy" / "down"), .drain-state, .weight-value;
// buttons .drain, .undrain, .set-weight with input.weight; button#reload; div#message;
// form#login with input[name=token]; form#logout; table#routes rows tr[data-route];
// table#workers; table#certificates; svg#chart-rps and svg#chart-p99;
// <meta name="csrf-token">.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace proxyd::master {

// The login form (form#login posting `token` to /login), with `message` above it when not "".
std::string render_login_page(std::string_view message);
// `view`: {"status": the `proxyctl status --json` object, "stats": GET /api/v1/stats/server,
// "routes": GET /api/v1/stats/routes}; `csrf` goes into the meta tag and the logout form.
std::string render_dashboard_page(const nlohmann::json& view, std::string_view csrf);
std::string_view dashboard_style();
std::string_view dashboard_script();  // dashboard_script.cpp

// Text made safe for HTML element content and quoted attribute values.
std::string html_escape(std::string_view text);

}  // namespace proxyd::master
