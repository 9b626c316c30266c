// The admin REST API ([admin]): JSON in and out, every call authenticated by
// "Authorization: Bearer <token>" (compared in constant time). This class is the HTTP side:
// routing by method and path, authentication, body and query parsing, and the statuses every
// endpoint shares (401, 404, 405, 415, 400 for malformed JSON). The master registers what each
// endpoint does; an endpoint may answer later (a reload) through its ticket.
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

    explicit AdminServer(event_base* base);
    // Serves `section` (its token and address); a disabled section closes the listener.
    bool configure(const config::AdminSection& section, std::string& error);
    void route(evhttp_cmd_type method, std::string path, Handler handler);
    void respond(std::uint64_t ticket, int status, const nlohmann::json& body);

  private:
    struct Route {
        evhttp_cmd_type method;
        std::string path;
        Handler handler;
    };
    void handle(evhttp_request* request);
    bool authorized(evhttp_request* request) const;
    static void on_connection_closed(evhttp_connection* connection, void* arg);

    HttpEndpoint endpoint_;
    std::string token_;
    std::vector<Route> routes_;
    std::uint64_t next_ticket_ = kAdminTicketBit;
    std::map<std::uint64_t, evhttp_request*> pending_;
};

// {"error": message} as an AdminReply.
AdminReply admin_error(int status, std::string message);

}  // namespace proxyd::master
