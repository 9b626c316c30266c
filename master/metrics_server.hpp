// The master's HTTP endpoint for [metrics]: the Prometheus text on `path`, /healthz (the master
// answers) and /readyz (workers of the current generation accept and the config is loaded).
// libevent's evhttp serves it, on a SO_REUSEPORT socket so that a new binary can bind the same
// address while the old one still answers during an upgrade.
#pragma once

#include <event2/event.h>
#include <event2/http.h>

#include <functional>
#include <memory>
#include <string>

#include "common/config/types.hpp"

namespace proxyd::master {

class MetricsServer {
  public:
    using Render = std::function<void(std::string& out)>;
    using Ready = std::function<bool()>;

    MetricsServer(event_base* base, Render render, Ready ready);
    ~MetricsServer();
    // Serves `section` (rebinding only when the address changed); a disabled section closes the
    // listener. False with `error` when the address cannot be bound.
    bool configure(const config::MetricsSection& section, std::string& error);

  private:
    struct HttpFree {
        void operator()(evhttp* http) const { evhttp_free(http); }
    };
    static void on_request(evhttp_request* request, void* arg);
    void handle(evhttp_request* request);

    event_base* base_;
    Render render_;
    Ready ready_;
    std::unique_ptr<evhttp, HttpFree> http_;
    std::string bound_;  // address text now served ("" = none)
    std::string path_;
    std::string body_;  // reused between scrapes
};

}  // namespace proxyd::master
