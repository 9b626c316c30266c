// Active health checks, run by the master: one probe per server per interval for the whole
// proxy, whatever the worker count, and never starved by busy workers. Results go to the shared
// upstream state, where every worker sees them at once.
#pragma once

#include <event2/event.h>

#include <memory>
#include <string>
#include <vector>

#include "common/config/types.hpp"
#include "common/shm/upstream_state.hpp"
#include "common/tls/client_context.hpp"

namespace proxyd::master {

class HealthChecker {
  public:
    HealthChecker(event_base* base, shm::UpstreamState& state);
    ~HealthChecker();
    // Replaces every probe with those `config` asks for (servers keep their health state).
    // Servers with tls = true are probed over TLS through `tls`.
    void configure(const config::Config& config, const tls::ClientTls* tls);

    struct Probe;

  private:
    event_base* base_;
    shm::UpstreamState* state_;
    std::vector<std::unique_ptr<Probe>> probes_;
};

}  // namespace proxyd::master
