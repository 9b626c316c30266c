// The master's [metrics] endpoint: what it renders and when it calls itself ready.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "master/master.hpp"
#include "master/metrics_render.hpp"

namespace proxyd::master {

void Master::configure_metrics() {
    if (!metrics_server_) return;
    std::string error;
    if (!metrics_server_->configure(config_.metrics, error)) {
        spdlog::error("{}; metrics stay where they were", error);
    }
}

bool Master::ready_for_traffic() const {
    if (!started_ || stopping_) return false;
    int ready = 0;
    for (const auto& worker : workers_) {
        if (worker.generation == generation_ && !worker.draining && worker.ready) ++ready;
    }
    return ready >= config_.server.workers;
}

void Master::render_metrics_text(std::string& out) {
    MetricsInput input;
    input.series = &*metrics_;
    input.stats = &*stats_;
    input.upstream_state = &*upstream_state_;
    input.config = &config_;
    input.workers = static_cast<int>(
        std::count_if(workers_.begin(), workers_.end(), [&](const WorkerProcess& w) {
            return w.generation == generation_ && !w.draining;
        }));
    input.worker_restarts = worker_restarts_;
    input.reloads_ok = reloads_ok_;
    input.reloads_failed = reloads_failed_;
    input.generation = generation_;
    if (tls_.server) input.certificates = tls_.server->certificates();
    render_metrics(input, out);
}

}  // namespace proxyd::master
