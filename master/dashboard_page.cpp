#include "master/dashboard_page.hpp"

#include <cstdio>

namespace proxyd::master {

namespace {

constexpr std::string_view kStyle = R"css(
:root { font-family: system-ui, sans-serif; font-size: 14px; color: #1d2330; background: #f5f6f8; }
body { margin: 0 auto; max-width: 1200px; padding: 0 16px 32px; }
header { display: flex; align-items: center; gap: 16px; padding: 12px 0; }
header h1 { font-size: 20px; margin: 0; }
header .spacer { flex: 1; }
h2 { font-size: 16px; margin: 24px 0 8px; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid #e2e5ea; white-space: nowrap; }
/* Many servers' columns: the table scrolls inside the page rather than past its edge. */
table#upstreams { display: block; overflow-x: auto; }
th { background: #eceff3; font-weight: 600; }
tr.upstream-name th { background: #dfe4ec; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.healthy { color: #13722f; font-weight: 600; }
.down { color: #b3261e; font-weight: 600; }
.draining { color: #8a5a00; }
input.weight { width: 3.5em; }
button { cursor: pointer; }
#message { min-height: 1.5em; padding: 4px 8px; margin: 8px 0; }
#message.ok { background: #e3f4e8; }
#message.error { background: #fbe4e2; color: #8c1d18; }
.charts { display: flex; gap: 16px; flex-wrap: wrap; margin-top: 12px; }
figure { margin: 0; background: #fff; padding: 8px; border: 1px solid #e2e5ea; }
figcaption { font-size: 12px; color: #566; }
svg { width: 360px; height: 90px; display: block; }
svg polyline { fill: none; stroke: #2f6fdb; stroke-width: 1.5; }
svg text { font-size: 9px; fill: #566; }
form.login { max-width: 360px; margin: 80px auto; background: #fff; padding: 24px;
  border: 1px solid #e2e5ea; display: flex; flex-direction: column; gap: 12px; }
form.login input { padding: 6px; }
p.note { color: #566; font-size: 12px; }
)css";

// The member `key` of `object`, or a null (which iterates as empty) when there is none: no
// copies, and no temporaries for a range-for to outlive.
const nlohmann::json& member(const nlohmann::json& object, const char* key) {
    static const nlohmann::json kNone;
    if (!object.is_object()) return kNone;
    auto it = object.find(key);
    return it == object.end() ? kNone : *it;
}

std::string text_of(const nlohmann::json& value) {
    if (value.is_string()) return value.get<std::string>();
    if (value.is_null()) return "";
    return value.dump();
}

std::string fixed(double value, int digits) {
    char text[64];
    std::snprintf(text, sizeof text, "%.*f", digits, value);
    return text;
}

std::string duration_text(std::int64_t seconds) {
    char text[64];
    std::snprintf(text, sizeof text, "%lldd %02lldh %02lldm %02llds",
                  static_cast<long long>(seconds / 86400),
                  static_cast<long long>(seconds / 3600 % 24),
                  static_cast<long long>(seconds / 60 % 60), static_cast<long long>(seconds % 60));
    return text;
}

double number(const nlohmann::json& object, const char* key) {
    if (!object.is_object() || !object.contains(key) || !object[key].is_number()) return 0;
    return object[key].get<double>();
}

// <td> with escaped text; `cls` becomes its class when not empty.
void cell(std::string& out, std::string_view text, std::string_view cls = "") {
    out += cls.empty() ? "<td>" : "<td class=\"" + std::string(cls) + "\">";
    out += html_escape(text);
    out += "</td>";
}

void head(std::string& out, std::string_view title, std::string_view extra = "") {
    out +=
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">";
    out += extra;
    out += "<title>";
    out += html_escape(title);
    out += "</title><link rel=\"stylesheet\" href=\"/dashboard.css\"></head>\n<body>\n";
}

void overview(std::string& out, const nlohmann::json& status, const nlohmann::json& stats) {
    const auto& totals = member(status, "totals");
    const auto& rate = member(stats, "requests_per_second");
    const auto& latency = member(stats, "latency_ms");
    out += "<h2>Server</h2><table id=\"server\"><tbody>\n";
    auto row = [&](std::string_view label, std::string_view id, const std::string& value) {
        out += "<tr><th>";
        out += label;
        out += "</th><td id=\"";
        out += id;
        out += "\">";
        out += html_escape(value);
        out += "</td></tr>\n";
    };
    row("Version", "version", text_of(member(status, "version")));
    row("Uptime", "uptime",
        duration_text(static_cast<std::int64_t>(number(stats, "uptime_seconds"))));
    row("Generation", "generation", text_of(member(status, "generation")));
    row("Workers", "worker-count", text_of(member(stats, "workers")));
    row("Open connections", "connections", text_of(member(stats, "connections_active")));
    row("Requests", "requests", text_of(member(stats, "requests_completed")));
    row("Requests/s (10 s)", "rps", fixed(number(rate, "10s"), 1));
    row("Latency p50 / p99 (last minute)", "latency",
        fixed(number(latency, "p50"), 2) + " / " + fixed(number(latency, "p99"), 2) + " ms");
    row("Rate-limit rejections (429)", "rate-limited", text_of(member(totals, "rate_limited")));
    row("Auth failures (401/403)", "auth-failures", text_of(member(totals, "auth_failures")));
    out += "</tbody></table>\n";
    out +=
        "<div class=\"charts\">"
        "<figure><figcaption>Requests/s, last 5 minutes</figcaption>"
        "<svg id=\"chart-rps\" viewBox=\"0 0 360 90\" role=\"img\"></svg></figure>"
        "<figure><figcaption>Latency p99 (ms), last 5 minutes</figcaption>"
        "<svg id=\"chart-p99\" viewBox=\"0 0 360 90\" role=\"img\"></svg></figure></div>\n";
}

void workers(std::string& out, const nlohmann::json& status) {
    out +=
        "<h2>Workers</h2><table id=\"workers\"><thead><tr><th>slot</th><th>pid</th>"
        "<th>generation</th><th>state</th><th>connections</th><th>tunnels</th></tr></thead>"
        "<tbody>\n";
    for (const auto& w : member(status, "workers")) {
        out += "<tr>";
        cell(out, text_of(member(w, "slot")));
        cell(out, text_of(member(w, "pid")));
        cell(out, text_of(member(w, "generation")));
        cell(out, text_of(member(w, "state")), "state");
        cell(out, text_of(member(w, "connections")), "num");
        cell(out, text_of(member(w, "tunnels")), "num");
        out += "</tr>\n";
    }
    out += "</tbody></table>\n";
}

void server_row(std::string& out, const std::string& upstream, const nlohmann::json& s) {
    const std::string id = text_of(member(s, "id"));
    const bool healthy = s.value("healthy", false);
    const bool drain = s.value("drain", false);
    out += "<tr data-upstream=\"" + html_escape(upstream) + "\" data-server=\"" + html_escape(id) +
           "\">";
    cell(out, id, "id");
    cell(out, text_of(member(s, "address")), "address");
    cell(out, healthy ? "healthy" : "down", healthy ? "health healthy" : "health down");
    cell(out, text_of(member(s, "circuit")), "circuit");
    cell(out, drain ? "draining" : "no", drain ? "drain-state draining" : "drain-state");
    cell(out, text_of(member(s, "weight")), "weight-value num");
    cell(out, text_of(member(s, "active")), "active num");
    cell(out, text_of(member(s, "requests")), "requests num");
    cell(out, "-", "rps num");
    cell(out, text_of(member(s, "failures")), "failures num");
    cell(out, fixed(number(s, "response_ms_ewma"), 2), "latency num");
    out +=
        "<td class=\"actions\"><button type=\"button\" class=\"drain\">Drain</button> "
        "<button type=\"button\" class=\"undrain\">Undrain</button> "
        "<input class=\"weight\" type=\"number\" min=\"1\" value=\"" +
        html_escape(text_of(member(s, "weight"))) +
        "\" aria-label=\"weight\"> <button type=\"button\" class=\"set-weight\">Set "
        "weight</button></td></tr>\n";
}

void upstreams(std::string& out, const nlohmann::json& status) {
    out +=
        "<h2>Upstreams</h2><table id=\"upstreams\"><thead><tr><th>server</th><th>address</th>"
        "<th>health</th><th>circuit</th><th>drain</th><th>weight</th><th>active</th>"
        "<th>requests</th><th>req/s</th><th>failures</th><th>latency (ms, EWMA)</th>"
        "<th>actions</th></tr></thead>\n";
    for (const auto& [name, upstream] : member(status, "upstreams").items()) {
        out += "<tbody class=\"upstream\" data-name=\"" + html_escape(name) +
               "\"><tr class=\"upstream-name\">"
               "<th colspan=\"12\">" +
               html_escape(name) + " <small>(" + html_escape(text_of(member(upstream, "balance"))) +
               ")</small></th></tr>\n";
        for (const auto& server : member(upstream, "servers")) {
            server_row(out, name, server);
        }
        out += "</tbody>\n";
    }
    out += "</table>\n";
}

void routes(std::string& out, const nlohmann::json& stats) {
    out +=
        "<h2>Routes</h2><table id=\"routes\"><thead><tr><th>route</th><th>requests</th>"
        "<th>req/s</th><th>5xx rate</th><th>p50 (ms)</th><th>p99 (ms)</th></tr></thead>"
        "<tbody>\n";
    for (const auto& [name, r] : member(stats, "routes").items()) {
        const auto& latency = member(r, "latency_ms");
        out += "<tr data-route=\"" + html_escape(name) + "\">";
        cell(out, name.empty() ? "(no route)" : name, "name");
        cell(out, text_of(member(r, "requests")), "requests num");
        cell(out, fixed(number(r, "requests_per_second"), 1), "rps num");
        cell(out, fixed(number(r, "error_rate") * 100, 2) + " %", "errors num");
        cell(out, fixed(number(latency, "p50"), 2), "p50 num");
        cell(out, fixed(number(latency, "p99"), 2), "p99 num");
        out += "</tr>\n";
    }
    out += "</tbody></table>\n";
}

void certificates(std::string& out, const nlohmann::json& status) {
    const auto& tls = member(status, "tls");
    out +=
        "<h2>Certificates</h2><table id=\"certificates\"><thead><tr><th>file</th>"
        "<th>names</th><th>expires</th><th>renewal</th></tr></thead><tbody>\n";
    for (const auto& c : member(tls, "certificates")) {
        std::string names;
        for (const auto& n : member(c, "names")) {
            names += (names.empty() ? "" : ", ") + text_of(n);
        }
        out += "<tr>";
        cell(out, text_of(member(c, "cert")));
        cell(out, names);
        cell(out, text_of(member(c, "expires")), "expires");
        cell(out, c.contains("error") ? "refused: " + text_of(c["error"]) : "ok");
        out += "</tr>\n";
    }
    if (member(tls, "certificates").empty()) {
        out += "<tr><td colspan=\"4\">none (no [tls] section)</td></tr>\n";
    }
    out += "</tbody></table>\n";
}

}  // namespace

std::string html_escape(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (char c : text) {
        switch (c) {
            case '&':
                out += "&amp;";
                break;
            case '<':
                out += "&lt;";
                break;
            case '>':
                out += "&gt;";
                break;
            case '"':
                out += "&quot;";
                break;
            case '\'':
                out += "&#39;";
                break;
            default:
                out += c;
        }
    }
    return out;
}

std::string render_login_page(std::string_view message) {
    std::string out;
    head(out, "proxyd: log in");
    out +=
        "<form id=\"login\" class=\"login\" method=\"post\" action=\"/login\">"
        "<h1>proxyd</h1>";
    if (!message.empty()) {
        out +=
            "<div id=\"message\" class=\"error\" role=\"alert\">" + html_escape(message) + "</div>";
    }
    out +=
        "<label for=\"token\">Admin token</label>"
        "<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" "
        "required autofocus><button type=\"submit\">Log in</button>"
        "<p class=\"note\">The token is the contents of <code>[admin] token_file</code>.</p>"
        "</form>\n</body></html>\n";
    return out;
}

std::string render_dashboard_page(const nlohmann::json& view, std::string_view csrf) {
    const auto& status = member(view, "status");
    const auto& stats = member(view, "stats");
    const std::string token = html_escape(csrf);
    std::string out;
    out.reserve(16 * 1024);
    head(out, "proxyd dashboard",
         "<meta name=\"csrf-token\" content=\"" + token +
             "\"><script src=\"/dashboard.js\" defer></script>");
    out +=
        "<header><h1>proxyd</h1><span class=\"spacer\"></span>"
        "<span id=\"updated\">as of page load</span>"
        "<button type=\"button\" id=\"reload\">Reload config</button>"
        "<form id=\"logout\" method=\"post\" action=\"/logout\">"
        "<input type=\"hidden\" name=\"csrf\" value=\"" +
        token + "\"><button type=\"submit\">Log out</button></form></header>\n";
    out +=
        "<div id=\"message\" role=\"status\"></div>\n"
        "<noscript><p class=\"note\">Without JavaScript this page shows the numbers as of "
        "its loading and offers no actions: reload it to refresh.</p></noscript>\n";
    overview(out, status, stats);
    upstreams(out, status);
    routes(out, member(view, "routes"));
    workers(out, status);
    certificates(out, status);
    out += "</body></html>\n";
    return out;
}

std::string_view dashboard_style() {
    return kStyle;
}

}  // namespace proxyd::master
