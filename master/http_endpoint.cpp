#include "master/http_endpoint.hpp"

#include <event2/buffer.h>

#include "common/http/status.hpp"
#include "common/net/listener.hpp"

namespace proxyd::master {

HttpEndpoint::HttpEndpoint(event_base* base, std::string name, Handler handler)
    : base_(base), name_(std::move(name)), handler_(std::move(handler)) {}

HttpEndpoint::~HttpEndpoint() = default;

bool HttpEndpoint::listen(const config::SocketAddress& address, std::string& error) {
    if (http_ && bound_ == address.text) return true;
    UniqueFd fd = net::bind_reuseport(address, error);
    if (!fd) {
        error = name_ + " listen " + address.text + ": " + error;
        return false;
    }
    std::unique_ptr<evhttp, HttpFree> http(evhttp_new(base_));
    if (!http || evhttp_accept_socket_with_handle(http.get(), fd.get()) == nullptr) {
        error = name_ + " listen " + address.text + ": cannot serve HTTP on it";
        return false;
    }
    [[maybe_unused]] int owned_by_evhttp = fd.release();  // its listener closes it
    evhttp_set_allowed_methods(http.get(), EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                               EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                               EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_timeout(http.get(), 10);
    evhttp_set_max_body_size(http.get(), 4 * 1024 * 1024);
    evhttp_set_gencb(http.get(), on_request, this);
    http_ = std::move(http);
    bound_ = address.text;
    return true;
}

void HttpEndpoint::close() {
    http_.reset();
    bound_.clear();
}

void HttpEndpoint::on_request(evhttp_request* request, void* arg) {
    static_cast<HttpEndpoint*>(arg)->handler_(request);
}

std::string_view request_path(evhttp_request* request) {
    const char* path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(request));
    return path ? path : "";
}

void send_reply(evhttp_request* request, int status, std::string_view content_type,
                std::string_view body) {
    evhttp_add_header(evhttp_request_get_output_headers(request), "Content-Type",
                      std::string(content_type).c_str());
    evbuffer* reply = evbuffer_new();
    evbuffer_add(reply, body.data(), body.size());
    evhttp_send_reply(request, status, std::string(http::reason_phrase(status)).c_str(), reply);
    evbuffer_free(reply);
}

}  // namespace proxyd::master
