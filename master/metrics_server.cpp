#include "master/metrics_server.hpp"

#include <spdlog/spdlog.h>

namespace proxyd::master {

MetricsServer::MetricsServer(event_base* base, Render render, Ready ready)
    : render_(std::move(render)),
      ready_(std::move(ready)),
      endpoint_(base, "[metrics]", [this](evhttp_request* request) { handle(request); }) {}

bool MetricsServer::configure(const config::MetricsSection& section, std::string& error) {
    path_ = section.path;
    if (!section.enabled) {
        endpoint_.close();
        return true;
    }
    bool was_open = endpoint_.open();
    if (!endpoint_.listen(section.listen, error)) return false;
    if (!was_open) {
        spdlog::info("metrics on http://{}{} (and /healthz, /readyz)", section.listen.text, path_);
    }
    return true;
}

void MetricsServer::handle(evhttp_request* request) {
    constexpr std::string_view kText = "text/plain; charset=utf-8";
    const auto method = evhttp_request_get_command(request);
    if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(request), "Allow", "GET, HEAD");
        return send_reply(request, 405, kText, "method not allowed: use GET\n");
    }
    const std::string_view target = request_path(request);
    if (target == path_) {
        render_(body_);
        return send_reply(request, 200, "text/plain; version=0.0.4; charset=utf-8", body_);
    }
    if (target == "/healthz") return send_reply(request, 200, kText, "ok\n");
    if (target == "/readyz") {
        return ready_() ? send_reply(request, 200, kText, "ready\n")
                        : send_reply(request, 503, kText, "not ready\n");
    }
    send_reply(request, 404, kText, "not found; try " + path_ + ", /healthz or /readyz\n");
}

}  // namespace proxyd::master
