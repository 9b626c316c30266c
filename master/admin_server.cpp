#include "master/admin_server.hpp"

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "master/dashboard_request.hpp"

namespace proxyd::master {

namespace {

constexpr std::string_view kJson = "application/json";

std::string method_name(evhttp_cmd_type method) {
    switch (method) {
        case EVHTTP_REQ_GET:
            return "GET";
        case EVHTTP_REQ_POST:
            return "POST";
        case EVHTTP_REQ_PUT:
            return "PUT";
        case EVHTTP_REQ_DELETE:
            return "DELETE";
        case EVHTTP_REQ_HEAD:
            return "HEAD";
        default:
            return "OTHER";
    }
}

void send_json(evhttp_request* request, int status, const nlohmann::json& body) {
    send_reply(request, status, kJson, body.dump() + "\n");
}

std::map<std::string, std::string> parse_query(evhttp_request* request) {
    std::map<std::string, std::string> out;
    const char* query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(request));
    if (query == nullptr) return out;
    evkeyvalq pairs;
    if (evhttp_parse_query_str(query, &pairs) != 0) return out;
    for (evkeyval* kv = pairs.tqh_first; kv != nullptr; kv = kv->next.tqe_next) {
        out.emplace(kv->key, kv->value);
    }
    evhttp_clear_headers(&pairs);
    return out;
}

}  // namespace

AdminReply admin_error(int status, std::string message) {
    return {status, nlohmann::json{{"error", std::move(message)}}};
}

AdminServer::AdminServer(event_base* base)
    : endpoint_(base, "[admin]", [this](evhttp_request* request) { handle(request); }) {}

bool AdminServer::configure(const config::AdminSection& section, std::string& error) {
    if (!section.enabled) {
        endpoint_.close();
        token_.clear();
        sessions_.clear();
        return true;
    }
    bool was_open = endpoint_.open();
    if (!endpoint_.listen(section.listen, error)) return false;
    // A reload re-reads the file: rotation without a restart, and a new token logs out every
    // browser that logged in with the old one.
    if (token_ != section.token) sessions_.clear();
    token_ = section.token;
    if (!was_open) spdlog::info("admin API on http://{}/api/v1/", section.listen.text);
    return true;
}

void AdminServer::route(evhttp_cmd_type method, std::string path, Handler handler) {
    routes_.push_back(Route{method, std::move(path), std::move(handler)});
}

// Compared in constant time: the time taken says nothing about the token, not even its length.
bool AdminServer::bearer_authorized(evhttp_request* request) const {
    const char* header =
        evhttp_find_header(evhttp_request_get_input_headers(request), "Authorization");
    if (header == nullptr || token_.empty()) return false;
    std::string_view value = header;
    constexpr std::string_view kScheme = "Bearer ";
    if (value.size() <= kScheme.size() ||
        !std::equal(kScheme.begin(), kScheme.end(), value.begin(),
                    [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
        return false;
    }
    value.remove_prefix(kScheme.size());
    return constant_time_equal(value, token_);
}

// A browser's call: its session cookie, and for anything but a read the CSRF token that only
// the page itself knows (a cross-site form can send the cookie, were SameSite to fail, but not
// this header). The Origin check is a second fence for browsers that send it.
std::optional<AdminReply> AdminServer::session_refusal(evhttp_request* request) {
    const DashboardSession* session = session_of(request);
    if (session == nullptr) {
        evhttp_add_header(evhttp_request_get_output_headers(request), "WWW-Authenticate",
                          "Bearer realm=\"proxyd admin\"");
        return admin_error(401, "missing or wrong admin token");
    }
    const evkeyvalq* headers = evhttp_request_get_input_headers(request);
    const char* origin = evhttp_find_header(headers, "Origin");
    const char* host = evhttp_find_header(headers, "Host");
    if (origin != nullptr && !same_origin(origin, host ? host : "")) {
        return admin_error(403, "cross-origin request refused (Origin " + std::string(origin) +
                                    " is not this admin listener)");
    }
    const evhttp_cmd_type method = evhttp_request_get_command(request);
    if (method == EVHTTP_REQ_GET || method == EVHTTP_REQ_HEAD) return std::nullopt;
    const char* csrf = evhttp_find_header(headers, "X-CSRF-Token");
    if (csrf == nullptr || !constant_time_equal(csrf, session->csrf)) {
        return admin_error(403, "missing or wrong X-CSRF-Token for this session");
    }
    return std::nullopt;
}

void AdminServer::handle(evhttp_request* request) {
    if (serve_dashboard(request)) return;
    if (!bearer_authorized(request)) {
        if (auto refusal = session_refusal(request)) {
            return send_json(request, refusal->first, refusal->second);
        }
    }
    run(request);
}

// Routes an authenticated call to its endpoint.
void AdminServer::run(evhttp_request* request) {
    const std::string path(request_path(request));
    const evhttp_cmd_type method = evhttp_request_get_command(request);
    const Route* found = nullptr;
    std::string allowed;
    for (const auto& route : routes_) {
        if (route.path != path) continue;
        allowed += (allowed.empty() ? "" : ", ") + method_name(route.method);
        if (route.method == method) found = &route;
    }
    if (allowed.empty()) return send_json(request, 404, {{"error", "no such endpoint: " + path}});
    if (found == nullptr) {
        evhttp_add_header(evhttp_request_get_output_headers(request), "Allow", allowed.c_str());
        return send_json(request, 405, {{"error", "method not allowed; use " + allowed}});
    }
    AdminCall call;
    call.path = path;
    call.query = parse_query(request);
    evbuffer* input = evhttp_request_get_input_buffer(request);
    if (std::size_t length = evbuffer_get_length(input)) {
        const char* type =
            evhttp_find_header(evhttp_request_get_input_headers(request), "Content-Type");
        std::string_view content_type = type ? type : "";
        if (!content_type.starts_with("application/json")) {
            return send_json(request, 415, {{"error", "the body must be application/json"}});
        }
        std::string text(length, '\0');
        evbuffer_copyout(input, text.data(), length);
        call.body = nlohmann::json::parse(text, nullptr, false);
        if (call.body.is_discarded()) {
            return send_json(request, 400, {{"error", "the body is not valid JSON"}});
        }
    }
    // Registered before the handler runs: it may answer through respond() at once.
    const std::uint64_t ticket = next_ticket_++;
    pending_.emplace(ticket, request);
    auto reply = found->handler(call, ticket);
    auto it = pending_.find(ticket);
    if (it == pending_.end()) return;  // answered already
    if (reply) {
        pending_.erase(it);
        return send_json(request, reply->first, reply->second);
    }
    evhttp_connection_set_closecb(evhttp_request_get_connection(request), on_connection_closed,
                                  this);
}

void AdminServer::respond(std::uint64_t ticket, int status, const nlohmann::json& body) {
    auto it = pending_.find(ticket);
    if (it == pending_.end()) return;  // the client went away
    evhttp_request* request = it->second;
    pending_.erase(it);
    if (evhttp_connection* connection = evhttp_request_get_connection(request)) {
        evhttp_connection_set_closecb(connection, nullptr, nullptr);
    }
    send_json(request, status, body);
}

void AdminServer::on_connection_closed(evhttp_connection* connection, void* arg) {
    auto* self = static_cast<AdminServer*>(arg);
    std::erase_if(self->pending_, [&](const auto& entry) {
        return evhttp_request_get_connection(entry.second) == connection;
    });
}

}  // namespace proxyd::master
