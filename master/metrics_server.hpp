// The master's HTTP endpoint for [metrics]: the Prometheus text on `path`, /healthz (the master
// answers) and /readyz (workers of the current generation accept and the config is loaded).
#pragma once

#include <functional>
#include <string>

#include "common/config/types.hpp"
#include "master/http_endpoint.hpp"

namespace proxyd::master {

class MetricsServer {
  public:
    using Render = std::function<void(std::string& out)>;
    using Ready = std::function<bool()>;

    MetricsServer(event_base* base, Render render, Ready ready);
    // Serves `section`; a disabled section closes the listener. False with `error` when the
    // address cannot be bound.
    bool configure(const config::MetricsSection& section, std::string& error);

  private:
    void handle(evhttp_request* request);

    Render render_;
    Ready ready_;
    HttpEndpoint endpoint_;
    std::string path_;
    std::string body_;  // reused between scrapes
};

}  // namespace proxyd::master
