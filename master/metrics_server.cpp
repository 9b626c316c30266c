#include "master/metrics_server.hpp"

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <spdlog/spdlog.h>

#include "common/net/listener.hpp"

namespace proxyd::master {

MetricsServer::MetricsServer(event_base* base, Render render, Ready ready)
    : base_(base), render_(std::move(render)), ready_(std::move(ready)) {}

MetricsServer::~MetricsServer() = default;

bool MetricsServer::configure(const config::MetricsSection& section, std::string& error) {
    path_ = section.path;
    if (!section.enabled) {
        http_.reset();
        bound_.clear();
        return true;
    }
    if (http_ && bound_ == section.listen.text) return true;
    UniqueFd fd = net::bind_reuseport(section.listen, error);
    if (!fd) {
        error = "[metrics] listen " + section.listen.text + ": " + error;
        return false;
    }
    std::unique_ptr<evhttp, HttpFree> http(evhttp_new(base_));
    if (!http || evhttp_accept_socket_with_handle(http.get(), fd.get()) == nullptr) {
        error = "[metrics] listen " + section.listen.text + ": cannot serve HTTP on it";
        return false;
    }
    [[maybe_unused]] int owned_by_evhttp = fd.release();  // its listener closes it
    evhttp_set_allowed_methods(http.get(), EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_timeout(http.get(), 10);
    evhttp_set_gencb(http.get(), on_request, this);
    http_ = std::move(http);
    bound_ = section.listen.text;
    spdlog::info("metrics on http://{}{} (and /healthz, /readyz)", bound_, path_);
    return true;
}

void MetricsServer::on_request(evhttp_request* request, void* arg) {
    static_cast<MetricsServer*>(arg)->handle(request);
}

void MetricsServer::handle(evhttp_request* request) {
    const char* path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(request));
    std::string_view target = path ? path : "";
    evkeyvalq* headers = evhttp_request_get_output_headers(request);
    evbuffer* reply = evbuffer_new();
    int status = 200;
    const char* reason = "OK";
    if (target == path_) {
        render_(body_);
        evhttp_add_header(headers, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
        evbuffer_add(reply, body_.data(), body_.size());
    } else if (target == "/healthz") {
        evhttp_add_header(headers, "Content-Type", "text/plain");
        evbuffer_add_printf(reply, "ok\n");
    } else if (target == "/readyz") {
        evhttp_add_header(headers, "Content-Type", "text/plain");
        if (ready_()) {
            evbuffer_add_printf(reply, "ready\n");
        } else {
            status = 503;
            reason = "Service Unavailable";
            evbuffer_add_printf(reply, "not ready\n");
        }
    } else {
        status = 404;
        reason = "Not Found";
        evhttp_add_header(headers, "Content-Type", "text/plain");
        evbuffer_add_printf(reply, "not found; try %s, /healthz or /readyz\n", path_.c_str());
    }
    evhttp_send_reply(request, status, reason, reply);
    evbuffer_free(reply);
}

}  // namespace proxyd::master
