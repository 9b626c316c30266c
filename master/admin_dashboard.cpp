// The dashboard's side of the admin listener: the page at /, its script and style, and the
// login and logout that turn the admin token into a session cookie (master/dashboard_session.hpp).
// The page's data calls go to /api/v1/... like any other client's (admin_server.cpp).
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <spdlog/spdlog.h>

#include "master/admin_server.hpp"
#include "master/dashboard_page.hpp"
#include "master/dashboard_request.hpp"

namespace proxyd::master {

namespace {

constexpr std::string_view kHtml = "text/html; charset=utf-8";

// The page loads nothing from elsewhere and may not be framed: a strict policy costs nothing
// and takes away most of what an injected string could do.
constexpr const char* kPolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

void add_header(evhttp_request* request, const char* name, const std::string& value) {
    evhttp_add_header(evhttp_request_get_output_headers(request), name, value.c_str());
}

const char* input_header(evhttp_request* request, const char* name) {
    return evhttp_find_header(evhttp_request_get_input_headers(request), name);
}

void send_html(evhttp_request* request, int status, const std::string& html) {
    add_header(request, "Content-Security-Policy", kPolicy);
    add_header(request, "X-Frame-Options", "DENY");
    add_header(request, "X-Content-Type-Options", "nosniff");
    // Not "no-referrer": with it, browsers send "Origin: null" on the page's own posts, which
    // the Origin check must refuse.
    add_header(request, "Referrer-Policy", "same-origin");
    add_header(request, "Cache-Control", "no-store");
    send_reply(request, status, kHtml, html);
}

void send_error(evhttp_request* request, int status, const std::string& message) {
    send_reply(request, status, "application/json",
               nlohmann::json{{"error", message}}.dump() + "\n");
}

void redirect_home(evhttp_request* request, const std::string& cookie) {
    add_header(request, "Set-Cookie", cookie);
    add_header(request, "Location", "/");
    add_header(request, "Cache-Control", "no-store");
    send_reply(request, 303, "text/plain; charset=utf-8", "see /\n");
}

void method_not_allowed(evhttp_request* request, const char* allowed) {
    add_header(request, "Allow", allowed);
    send_reply(request, 405, "text/plain; charset=utf-8",
               std::string("method not allowed; use ") + allowed + "\n");
}

std::string body_text(evhttp_request* request) {
    evbuffer* input = evhttp_request_get_input_buffer(request);
    std::string text(evbuffer_get_length(input), '\0');
    evbuffer_copyout(input, text.data(), text.size());
    return text;
}

bool is_form(evhttp_request* request) {
    const char* type = input_header(request, "Content-Type");
    return type != nullptr &&
           std::string_view(type).starts_with("application/x-www-form-urlencoded");
}

// A browser says where a form came from; another site's page may not log in or out here.
bool cross_site(evhttp_request* request) {
    const char* origin = input_header(request, "Origin");
    const char* host = input_header(request, "Host");
    return origin != nullptr && !same_origin(origin, host ? host : "");
}

}  // namespace

bool AdminServer::serve_dashboard(evhttp_request* request) {
    const std::string_view path = request_path(request);
    const evhttp_cmd_type method = evhttp_request_get_command(request);
    const bool read = method == EVHTTP_REQ_GET || method == EVHTTP_REQ_HEAD;
    if (path == "/") {
        read ? serve_page(request) : method_not_allowed(request, "GET, HEAD");
    } else if (path == "/login") {
        method == EVHTTP_REQ_POST ? login(request) : method_not_allowed(request, "POST");
    } else if (path == "/logout") {
        method == EVHTTP_REQ_POST ? logout(request) : method_not_allowed(request, "POST");
    } else if (path == "/dashboard.js" || path == "/dashboard.css") {
        // Static and secret-free, so served to anyone: the login form needs the style too.
        if (!read) {
            method_not_allowed(request, "GET, HEAD");
            return true;
        }
        add_header(request, "X-Content-Type-Options", "nosniff");
        add_header(request, "Cache-Control", "no-cache");
        if (path == "/dashboard.js") {
            send_reply(request, 200, "text/javascript; charset=utf-8", dashboard_script());
        } else {
            send_reply(request, 200, "text/css; charset=utf-8", dashboard_style());
        }
    } else if (path == "/favicon.ico") {
        // Browsers ask for it on every page: a plain 404, not the API's 401.
        send_reply(request, 404, "text/plain; charset=utf-8", "no icon\n");
    } else {
        return false;
    }
    return true;
}

const DashboardSession* AdminServer::session_of(evhttp_request* request) {
    const char* cookies = input_header(request, "Cookie");
    if (cookies == nullptr || token_.empty()) return nullptr;
    auto id = cookie_value(cookies, kSessionCookie);
    if (!id) return nullptr;
    return sessions_.find(*id, SessionStore::Clock::now());
}

// Without a session the answer is the login form, as 401: the page and its data need the token.
void AdminServer::serve_page(evhttp_request* request) {
    const DashboardSession* session = session_of(request);
    if (session == nullptr || !page_) {
        add_header(request, "WWW-Authenticate", "Bearer realm=\"proxyd admin\"");
        return send_html(request, 401, render_login_page(""));
    }
    send_html(request, 200, page_(session->csrf));
}

void AdminServer::login(evhttp_request* request) {
    if (cross_site(request)) {
        return send_html(request, 403,
                         render_login_page("Refused: the form came from another site."));
    }
    if (!is_form(request)) {
        return send_html(request, 415,
                         render_login_page("Send the form as application/x-www-form-urlencoded."));
    }
    auto form = parse_form(body_text(request));
    auto token = form.find("token");
    if (token_.empty() || token == form.end() || !constant_time_equal(token->second, token_)) {
        spdlog::warn("admin: dashboard login refused (wrong token)");
        add_header(request, "WWW-Authenticate", "Bearer realm=\"proxyd admin\"");
        return send_html(request, 401, render_login_page("Wrong token."));
    }
    auto session = sessions_.create(SessionStore::Clock::now());
    if (!session) {
        return send_html(request, 500, render_login_page("No random bytes for a session."));
    }
    spdlog::info("admin: dashboard login ({} session(s))", sessions_.size());
    redirect_home(request, session_cookie(session->id));
}

// Ending a session changes state, so it needs the CSRF token like any other change (a form
// field, for the page's plain logout button, or the header).
void AdminServer::logout(evhttp_request* request) {
    if (cross_site(request)) {
        return send_error(request, 403, "cross-origin request refused");
    }
    const DashboardSession* session = session_of(request);
    if (session != nullptr) {
        const char* header = input_header(request, "X-CSRF-Token");
        std::string csrf = header ? header : "";
        if (csrf.empty() && is_form(request)) csrf = parse_form(body_text(request))["csrf"];
        if (!constant_time_equal(csrf, session->csrf)) {
            return send_error(request, 403, "missing or wrong CSRF token for this session");
        }
        sessions_.remove(session->id);
    }
    redirect_home(request, expired_session_cookie());
}

}  // namespace proxyd::master
