// Reload and scaling: a new generation of workers on the same listening sockets. The old
// generation keeps accepting until every new worker has said it is ready; only then is it told
// to drain. If any new worker fails, the new generation is killed and the old one never noticed.
#include <signal.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "common/config/load.hpp"
#include "common/config/overlay.hpp"
#include "common/log.hpp"
#include "common/util/timeval.hpp"
#include "master/master.hpp"
#include "master/sd_notify.hpp"

namespace proxyd::master {
namespace {

constexpr auto kTransitionTimeout = std::chrono::seconds(15);
constexpr std::chrono::milliseconds kResolveTimeout{3000};
// Draining generations beyond this are told to stop (close idle connections now) so that a burst
// of reloads cannot pile up processes.
constexpr std::size_t kMaxDrainingGenerations = 3;

}  // namespace

void Master::request_reload(std::uint64_t requester) {
    if (stopping_) return answer(requester, false, "reload refused: the master is stopping");
    if (transition_ || upgrade_) {
        return answer(requester, false,
                      "reload refused: a reload, scaling or upgrade is in progress");
    }
    // Runtime backend changes (admin API) stay applied over the re-read file.
    auto effective = config::load_effective(options_.config_path, &overlay_);
    auto& result = effective.result;
    for (const auto& note : effective.skipped) spdlog::warn("reload: {}", note);
    if (!result.config) {
        ++reloads_failed_;
        nlohmann::json errors = nlohmann::json::array();
        for (const auto& error : result.errors) {
            errors.push_back(error.format());
            spdlog::error("reload: {}", error.format());
        }
        return answer(requester, false,
                      "reload failed: configuration invalid (" +
                          std::to_string(result.errors.size()) +
                          " error(s)); still serving generation " + std::to_string(generation_),
                      {{"errors", errors}});
    }
    Resolutions resolutions = resolve_now(*result.config, kResolveTimeout);
    start_generation(std::move(*result.config), std::move(resolutions), "reload", requester,
                     &effective.text);
}

void Master::request_workers(std::uint64_t requester, int count) {
    if (count < 1 || count > 128) {
        return answer(requester, false, "workers: the count must be between 1 and 128");
    }
    if (stopping_) return answer(requester, false, "workers refused: the master is stopping");
    if (transition_ || upgrade_) {
        return answer(requester, false,
                      "workers refused: a reload, scaling or upgrade is in progress");
    }
    config::Config source = source_config_;
    source.server.workers = count;
    source.server.workers_auto = false;
    start_generation(std::move(source), resolutions_, "workers", requester);
}

void Master::start_generation(config::Config source, Resolutions resolutions, std::string what,
                              std::uint64_t requester, const std::string* text) {
    std::string error;
    config::Config next = source;
    TlsState next_tls;
    if (!expand_config(next, resolutions, error) || !listeners_.prepare(next, error)) {
        if (what == "reload") ++reloads_failed_;
        return answer(requester, false,
                      what + " failed: " + error + "; still serving generation " +
                          std::to_string(generation_));
    }
    if (!build_tls(next, next_tls, error)) {
        if (what == "reload") ++reloads_failed_;
        listeners_.rollback();
        return answer(requester, false,
                      what + " failed: " + error + "; still serving generation " +
                          std::to_string(generation_));
    }
    shm::CacheStore previous_cache;
    if (!prepare_cache(next, previous_cache, error)) {
        if (what == "reload") ++reloads_failed_;
        listeners_.rollback();
        return answer(requester, false,
                      what + " failed: " + error + "; still serving generation " +
                          std::to_string(generation_));
    }
    sd_notify("RELOADING=1");
    transition_.emplace();
    transition_->previous_cache = std::move(previous_cache);
    transition_->what = std::move(what);
    transition_->requester = requester;
    transition_->generation = generation_ + 1;
    transition_->previous = std::move(config_);
    transition_->previous_source = std::move(source_config_);
    transition_->previous_resolutions = std::move(resolutions_);
    transition_->previous_text = source_text_;
    transition_->previous_overlay = overlay_;
    if (text != nullptr) source_text_ = *text;
    transition_->previous_tls = std::move(tls_);
    tls_ = std::move(next_tls);
    config_ = std::move(next);
    source_config_ = std::move(source);
    resolutions_ = std::move(resolutions);
    ++generation_;
    if (!log::setup_error_log(config_.log, "master", error)) {
        spdlog::error("error log {}: {}", config_.log.error_log, error);
    }
    spdlog::info("{}: starting generation {} with {} worker(s)", transition_->what, generation_,
                 config_.server.workers);
    transition_->deadline.reset(evtimer_new(base_.get(), on_transition_deadline, this));
    timeval tv = to_timeval(kTransitionTimeout);
    event_add(transition_->deadline.get(), &tv);
    for (int slot = 0; slot < config_.server.workers; ++slot) {
        if (!spawn_worker(slot)) return abort_transition("cannot start a worker");
    }
}

void Master::maybe_commit_transition() {
    if (!transition_) return;
    int ready = 0;
    for (const auto& worker : workers_) {
        if (worker.generation == transition_->generation && !worker.draining) {
            if (!worker.ready) return;
            ++ready;
        }
    }
    if (ready >= config_.server.workers) commit_transition();
}

void Master::commit_transition() {
    Transition done = std::move(*transition_);
    transition_.reset();
    listeners_.commit();
    for (auto& state : slots_) {
        state.quick_crashes = 0;
        state.adopter = 0;
        if (state.respawn_timer) event_del(state.respawn_timer.get());
    }
    drain_old_generations();
    apply_upstream_changes();
    if (done.what == "reload") {
        certificate_errors_.clear();
        ++reloads_ok_;
    }
    start_tls_services();
    configure_metrics();
    configure_admin();
    sd_notify("READY=1");
    std::string message = done.what == "workers"
                              ? "workers: " + std::to_string(config_.server.workers) +
                                    " worker(s), generation " + std::to_string(generation_)
                              : (done.what == "reload" ? std::string("reloaded") : done.what) +
                                    ": generation " + std::to_string(generation_) + ", " +
                                    std::to_string(config_.server.workers) + " worker(s)";
    answer(done.requester, true, message, {{"generation", generation_}});
}

void Master::drain_old_generations() {
    for (auto& worker : workers_) {
        if (worker.generation < generation_ && !worker.draining) {
            worker.draining = true;
            send_command(worker, "drain");
        }
    }
    std::set<int> draining;
    for (const auto& worker : workers_) {
        if (worker.draining) draining.insert(worker.generation);
    }
    while (draining.size() > kMaxDrainingGenerations) {
        int oldest = *draining.begin();
        draining.erase(draining.begin());
        for (auto& worker : workers_) {
            if (worker.generation == oldest) send_command(worker, "stop");
        }
        spdlog::warn("generation {} told to stop: more than {} generations draining", oldest,
                     kMaxDrainingGenerations);
    }
}

void Master::abort_transition(const std::string& reason) {
    if (!transition_) return;
    Transition failed = std::move(*transition_);
    transition_.reset();
    if (failed.what == "reload") ++reloads_failed_;
    for (auto& worker : workers_) {
        if (worker.generation == failed.generation) {
            worker.draining = true;  // its exit is expected now
            ::kill(worker.pid, SIGKILL);
        }
    }
    listeners_.rollback();
    config_ = std::move(failed.previous);
    source_config_ = std::move(failed.previous_source);
    resolutions_ = std::move(failed.previous_resolutions);
    source_text_ = std::move(failed.previous_text);
    overlay_ = std::move(failed.previous_overlay);
    tls_ = std::move(failed.previous_tls);
    if (failed.previous_cache.valid()) cache_ = std::move(failed.previous_cache);
    generation_ = failed.generation - 1;
    std::string error;
    log::setup_error_log(config_.log, "master", error);
    answer(failed.requester, false,
           failed.what + " failed: " + reason + "; still serving generation " +
               std::to_string(generation_));
    if (!stopping_) ensure_workers();
    sd_notify("READY=1");
}

void Master::on_transition_deadline(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<Master*>(arg);
    self->abort_transition("the new workers were not ready within " +
                           std::to_string(kTransitionTimeout.count()) + " s");
}

}  // namespace proxyd::master
