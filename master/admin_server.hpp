// The admin REST API ([admin]): JSON in and out, every call authenticated by
// "Authorization: Bearer <token>" (compared in constant time) or by a dashboard session (cookie,
// plus X-CSRF-Token on every call that changes something). This class is the HTTP side:
// routing by method and path, authentication, body and query parsing, and the statuses every
// endpoint shares (401, 403, 404, 405, 415, 400 for malformed JSON). The master registers what
// each endpoint does; an endpoint may answer later (a reload) through its ticket. The dashboard's
// own paths (/, /login, /logout and the page's script and style) are in admin_dashboard.cpp.
#pragma once

#include <event2/http.h>

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/config/types.hpp"
#include "master/dashboard_session.hpp"
#include "master/http_endpoint.hpp"

namespace proxyd::master {

struct AdminCall {
    std::string path;
    std::map<std::string, std::string> query;
    nlohmann::json body;  // the parsed JSON body; null when there was none
};

// A status and its JSON body.
using AdminReply = std::pair<int, nlohmann::json>;

// Tickets of answers given later carry this bit, so the master can tell them from control
// connections when it answers.
inline constexpr std::uint64_t kAdminTicketBit = 1ULL << 63;

class AdminServer {
  public:
    // nullopt: the endpoint answers later with respond(ticket, ...).
    using Handler = std::function<std::optional<AdminReply>(const AdminCall&, std::uint64_t)>;
    // The dashboard page for a logged-in browser; `csrf` is its session's token, to embed.
    using PageRenderer = std::function<std::string(const std::string& csrf)>;

    explicit AdminServer(event_base* base);
    // Serves `section` (its token and address); a disabled section closes the listener.
    bool configure(const config::AdminSection& section, std::string& error);
    void route(evhttp_cmd_type method, std::string path, Handler handler);
    void respond(std::uint64_t ticket, int status, const nlohmann::json& body);
    void set_dashboard(PageRenderer page) { page_ = std::move(page); }

  private:
    struct Route {
        evhttp_cmd_type method;
        std::string path;
        Handler handler;
    };
    void handle(evhttp_request* request);
    bool bearer_authorized(evhttp_request* request) const;
    // nullopt when the request may go on; else why not (401 no session, 403 CSRF or Origin).
    std::optional<AdminReply> session_refusal(evhttp_request* request);
    void run(evhttp_request* request);

    // admin_dashboard.cpp: true when `request` was for one of the dashboard's paths (answered).
    bool serve_dashboard(evhttp_request* request);
    void serve_page(evhttp_request* request);
    void login(evhttp_request* request);
    void logout(evhttp_request* request);
    // The live session named by the request's cookie, or null.
    const DashboardSession* session_of(evhttp_request* request);
    static void on_connection_closed(evhttp_connection* connection, void* arg);

    HttpEndpoint endpoint_;
    std::string token_;
    SessionStore sessions_;
    PageRenderer page_;
    std::vector<Route> routes_;
    std::uint64_t next_ticket_ = kAdminTicketBit;
    std::map<std::uint64_t, evhttp_request*> pending_;
};

// {"error": message} as an AdminReply.
AdminReply admin_error(int status, std::string message);

}  // namespace proxyd::master
