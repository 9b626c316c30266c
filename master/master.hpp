// The master process: owns the listening sockets, the shared memory and the control socket;
// forks and supervises workers; replaces them by generations (reload, scaling) and hands
// everything to a new binary (upgrade). Never touches client traffic.
//
// Files: master.cpp (start, supervision, stop, control), generations.cpp (reload and scaling:
// start a generation, commit or abort it), upgrade.cpp (binary upgrade, both sides).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/config/overlay.hpp"
#include "common/config/types.hpp"
#include "common/shm/cache_store.hpp"
#include "common/shm/metric_series.hpp"
#include "common/shm/rate_limit_table.hpp"
#include "common/shm/ticket_keys.hpp"
#include "common/shm/upstream_state.hpp"
#include "common/shm/worker_stats.hpp"
#include "common/tls/client_context.hpp"
#include "common/tls/server_context.hpp"
#include "common/util/event_ptr.hpp"
#include "common/util/unique_fd.hpp"
#include "master/admin_server.hpp"
#include "master/certificate_watcher.hpp"
#include "master/control_server.hpp"
#include "master/health_checker.hpp"
#include "master/listener_table.hpp"
#include "master/metrics_server.hpp"
#include "master/resolver.hpp"
#include "master/route_stats.hpp"
#include "master/server_registry.hpp"
#include "master/stats_window.hpp"

namespace proxyd::master {

struct WorkerProcess {
    int slot = 0;
    pid_t pid = 0;
    int generation = 1;
    bool ready = false;
    bool draining = false;
    double started_at = 0;  // unix time, for status
    std::chrono::steady_clock::time_point started;
    std::size_t stats_slot = 0;
    UniqueFd channel;  // SOCK_SEQPACKET pair: commands (and adopted sockets) out, "ready" in
    EventPtr channel_event;
};

class Master;

// The TLS contexts a generation's workers are forked with (built from its config, keys read by
// the master).
struct TlsState {
    std::unique_ptr<tls::ServerTls> server;  // null without [tls]
    std::unique_ptr<tls::ClientTls> client;
};

// "exited with status 1", "killed by signal 9 (Killed)".
std::string describe_exit(int status);

// Crash-loop protection per slot: the first death is replaced at once, repeated quick deaths
// wait longer each time (capped); meanwhile a sibling polls the slot's sockets.
struct SlotState {
    Master* master = nullptr;
    int slot = 0;
    int quick_crashes = 0;
    EventPtr respawn_timer;
    pid_t adopter = 0;  // the sibling polling this slot's sockets while it has no worker
};

// A new generation of workers being started (reload, `workers N`): committed when all of them
// are ready, aborted (old generation untouched) when one fails or the deadline passes.
struct Transition {
    std::string what;             // "reload", "workers"
    std::uint64_t requester = 0;  // control connection to answer; 0 = a signal
    int generation = 0;
    config::Config previous;  // restored on abort
    config::Config previous_source;
    std::string previous_text;
    config::BackendOverlay previous_overlay;
    Resolutions previous_resolutions;
    TlsState previous_tls;
    shm::CacheStore previous_cache;  // valid when the new generation got a resized cache
    EventPtr deadline;
};

// The old side of a binary upgrade in progress.
struct UpgradeInProgress {
    pid_t child = 0;
    std::uint64_t requester = 0;
    UniqueFd channel;
    EventPtr channel_event;
    EventPtr deadline;
};

struct StartOptions {
    std::string config_path;
    std::string config_text;         // the file as loaded, for runtime changes to apply over
    config::BackendOverlay overlay;  // runtime changes from server.state_file
    std::string binary_path;         // what `upgrade` executes
    int upgrade_fd = -1;             // set when started by an older master handing over
};

class Master {
  public:
    Master(config::Config config, StartOptions options);
    ~Master();
    // Runs until stopped; returns the process exit status.
    int run();

  private:
    friend void on_respawn_timer(evutil_socket_t, short, void*);

    // master.cpp: start, workers, supervision, control, stop.
    bool open_control_socket(std::string& error);
    bool setup_signals(std::string& error);
    bool spawn_worker(int slot);
    [[noreturn]] void become_worker(int slot, int channel_fd, std::size_t stats_slot);
    std::size_t allocate_stats_slot();
    void announce_ready();
    void send_command(WorkerProcess& worker, const std::string& command,
                      const std::vector<int>& fds = {});

    static void on_signal(evutil_socket_t fd, short, void* arg);
    static void on_worker_channel(evutil_socket_t fd, short, void* arg);
    static void on_respawn_timer(evutil_socket_t, short, void* arg);
    static void on_stop_deadline(evutil_socket_t, short, void* arg);
    void on_worker_ready(WorkerProcess& worker);
    void reap_children();
    void on_worker_exit(pid_t pid, int status);
    void schedule_respawn(int slot, std::chrono::steady_clock::duration lived);
    void take_back_active_requests(std::size_t stats_slot);
    void adopt_slot(int slot);
    void release_adopted_slot(int slot);
    WorkerProcess* find_worker(pid_t pid);
    WorkerProcess* current_worker_for_slot(int slot);
    void ensure_workers();

    void handle_control(const nlohmann::json& request, ControlConnection& from);
    void answer(std::uint64_t requester, bool ok, const std::string& message,
                nlohmann::json extra = nlohmann::json::object());
    nlohmann::json status_json() const;
    nlohmann::json totals_json() const;
    nlohmann::json upstreams_json() const;
    void begin_stop(bool fast);
    void finish_stop();
    void reopen_logs();
    void hand_log_files_to_workers();
    bool record_report(const nlohmann::json& request, std::string& error);

    // generations.cpp: reload and scaling.
    void request_reload(std::uint64_t requester);
    void request_workers(std::uint64_t requester, int count);
    // `source` is the config as written (DNS names unexpanded); the workers get it expanded.
    // `text` (when not null) is the config file's text `source` was loaded from.
    void start_generation(config::Config source, Resolutions resolutions, std::string what,
                          std::uint64_t requester, const std::string* text = nullptr);
    bool expand_config(config::Config& config, const Resolutions& resolutions, std::string& error);
    void apply_upstream_changes();
    void maybe_commit_transition();
    void commit_transition();
    void abort_transition(const std::string& reason);
    void drain_old_generations();
    static void on_transition_deadline(evutil_socket_t, short, void* arg);

    // admin.cpp: the admin API's endpoints.
    void setup_admin_routes();
    void configure_admin();
    AdminReply stats_backend(const std::string& upstream, const std::string& backend) const;
    std::optional<AdminReply> put_config(const nlohmann::json& body, std::uint64_t ticket);
    void restore_config_file_if_refused(std::uint64_t requester, bool ok);
    // GET /api/v1/stats/routes (and the dashboard's routes table).
    nlohmann::json routes_json();

    // runtime_backends.cpp: backend changes through the admin API, without a new generation.
    AdminReply add_backend(const nlohmann::json& body);
    AdminReply update_backend(const nlohmann::json& body);
    AdminReply remove_backend(const std::string& upstream, const std::string& id);
    AdminReply disconnect_backend(const std::string& upstream, const std::string& id);
    // Validates `next` over the config file, then makes it the running overlay: written to
    // server.state_file, the upstream's servers replaced in place and sent to every worker.
    std::optional<AdminReply> apply_backend_change(config::BackendOverlay next,
                                                   std::size_t upstream);
    void send_servers_to_workers(std::size_t upstream);
    // One server as GET /api/v1/backends shows it.
    nlohmann::json server_json(const std::string& upstream, const std::string& id) const;
    bool save_overlay(const config::BackendOverlay& overlay, std::string& error) const;

    // metrics.cpp: the [metrics] endpoint.
    void configure_metrics();
    void render_metrics_text(std::string& out);
    // master/cache.cpp: the shared response cache, sized by [cache] when a route caches.
    bool prepare_cache(const config::Config& config, shm::CacheStore& previous, std::string& error);
    shm::CacheStore* cache_for_workers();
    AdminReply purge_cache(const std::string& prefix, const std::string& host);
    void render_cache_metrics(std::string& out) const;
    bool ready_for_traffic() const;
    // `proxyctl stats` / `backends` (and later the admin API): JSON plus a human message.
    nlohmann::json stats_server_json() const;
    std::string stats_server_text(const nlohmann::json& stats) const;
    // Null when `upstream` is not "" and names no upstream.
    std::optional<nlohmann::json> backends_json(const std::string& upstream) const;

    // tls.cpp: certificates, session-ticket keys, renewals.
    bool build_tls(const config::Config& config, TlsState& out, std::string& error);
    // After a generation is in place: ticket keys filled and rotated on its schedule,
    // certificate files watched when it asks for it.
    void start_tls_services();
    // Re-reads the certificate files; `requester` (0: the watcher) gets the outcome.
    void reload_certificates(std::uint64_t requester);
    static void on_ticket_rotation(evutil_socket_t, short, void* arg);
    nlohmann::json tls_json() const;

    // upgrade.cpp: binary upgrade.
    void request_upgrade(std::uint64_t requester);
    static void on_upgrade_channel(evutil_socket_t fd, short, void* arg);
    static void on_upgrade_deadline(evutil_socket_t, short, void* arg);
    void finish_upgrade(bool ok, const std::string& reason);
    bool receive_handoff(std::string& error);
    void adopt_backend_overlay(const nlohmann::json& header);
    void complete_handoff();

    config::Config config_;           // what the workers of the current generation run
    config::Config source_config_;    // the same before DNS names were expanded
    std::string source_text_;         // the config file's text it was loaded from
    config::BackendOverlay overlay_;  // runtime backend changes, applied over source_text_
    // A PUT /api/v1/config being applied: its ticket and the file it replaced (put back if the
    // reload is refused).
    std::uint64_t put_config_ticket_ = 0;
    std::string put_config_previous_text_;
    config::BackendOverlay put_config_previous_overlay_;
    Resolutions resolutions_;
    StartOptions options_;
    EventBasePtr base_;
    ListenerTable listeners_;
    shm::SharedStats stats_;
    shm::UpstreamState upstream_state_;
    shm::RateLimitRegion rate_limits_;
    shm::TicketKeyRegion ticket_keys_;
    shm::MetricsRegion metrics_;
    shm::CacheStore cache_;  // invalid until a config has a route with cache
    std::unique_ptr<MetricsServer> metrics_server_;
    std::unique_ptr<StatsWindow> stats_window_;
    RouteStatsWindow route_stats_;
    std::unique_ptr<AdminServer> admin_server_;
    double started_at_ = 0;  // unix time, for uptime
    // The master's own counters; handed to a new binary on upgrade.
    std::uint64_t worker_restarts_ = 0;
    std::uint64_t reloads_ok_ = 0;
    std::uint64_t reloads_failed_ = 0;
    TlsState tls_;
    EventPtr ticket_rotation_timer_;
    config::Millis ticket_rotation_period_{0};
    std::unique_ptr<CertificateWatcher> certificate_watcher_;
    EventPtr certificate_retry_timer_;
    // cert file -> why its last re-read was refused (cleared when a generation loads it).
    std::map<std::string, std::string> certificate_errors_;
    ServerRegistry registry_;
    std::unique_ptr<HealthChecker> health_;
    std::unique_ptr<Resolver> resolver_;
    std::vector<bool> stats_slot_used_;
    std::unique_ptr<ControlServer> control_;
    UniqueFd signal_fd_;
    EventPtr signal_event_;
    EventPtr stop_deadline_;
    EventPtr release_stats_timer_;
    std::vector<WorkerProcess> workers_;
    std::vector<SlotState> slots_;
    std::optional<Transition> transition_;
    std::optional<UpgradeInProgress> upgrade_;
    UniqueFd handoff_;  // new master: the channel to the old one until we are ready
    std::vector<std::size_t> inherited_stats_slots_;
    int generation_ = 1;
    bool started_ = false;  // every first-generation worker was ready once
    bool stopping_ = false;
    bool superseded_ = false;  // a newer master took over
    int exit_status_ = 0;
};

}  // namespace proxyd::master
