#include "master/master.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <tuple>

#include "common/config/load.hpp"
#include "common/control/protocol.hpp"
#include "common/log.hpp"
#include "common/net/fd_passing.hpp"
#include "common/net/listener.hpp"
#include "common/util/timeval.hpp"
#include "common/version.hpp"
#include "master/pid_file.hpp"
#include "master/sd_notify.hpp"
#include "worker/worker.hpp"

namespace proxyd::master {
namespace {

constexpr int kHandledSignals[] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGCHLD};
constexpr auto kMaxRespawnDelay = std::chrono::seconds(30);
constexpr auto kStableLifetime = std::chrono::seconds(5);
constexpr std::size_t kMaxSlots = 128;
constexpr std::chrono::milliseconds kResolveTimeout{3000};

double unix_now() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// Every socket the master holds (other slots' listeners, control connections, other workers'
// channels) is closed in a new worker, except its own. Files are left alone: spdlog still owns
// the master's log file objects, and closing their fds under them could close a reused number.
void close_inherited_sockets(const std::vector<int>& keep, int channel_fd) {
    DIR* dir = ::opendir("/proc/self/fd");
    if (!dir) return;
    std::vector<int> to_close;
    while (dirent* entry = ::readdir(dir)) {
        int fd = std::atoi(entry->d_name);
        struct stat st;
        if (fd <= 2 || fd == ::dirfd(dir) || fd == channel_fd) continue;
        if (std::find(keep.begin(), keep.end(), fd) != keep.end()) continue;
        if (::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) to_close.push_back(fd);
    }
    ::closedir(dir);
    for (int fd : to_close) ::close(fd);
}

}  // namespace

std::string describe_exit(int status) {
    if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) {
        return std::string("killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
               ::strsignal(WTERMSIG(status)) + ")";
    }
    return "stopped";
}

Master::Master(config::Config config, StartOptions options)
    : config_(std::move(config)), options_(std::move(options)) {}

Master::~Master() = default;

int Master::run() {
    std::string error;
    base_.reset(event_base_new());
    stats_slot_used_.assign(shm::kMaxWorkerSlots, false);
    slots_.resize(kMaxSlots);
    for (std::size_t slot = 0; slot < slots_.size(); ++slot) {
        slots_[slot].master = this;
        slots_[slot].slot = static_cast<int>(slot);
    }
    if (!base_ || !setup_signals(error)) {
        spdlog::error("cannot start: {}", error);
        return 1;
    }
    source_config_ = config_;
    source_text_ = std::move(options_.config_text);
    overlay_ = std::move(options_.overlay);
    if (options_.upgrade_fd >= 0) {
        if (!receive_handoff(error)) {
            spdlog::error("upgrade: {}", error);
            net::send_with_fds(handoff_.get(), "error " + error, {});
            return 1;
        }
    } else {
        stats_ = shm::SharedStats::create("proxyd-stats");
        upstream_state_ = shm::UpstreamState::create("proxyd-upstreams");
        rate_limits_ = shm::RateLimitRegion::create("proxyd-rate-limits");
        ticket_keys_ = shm::TicketKeyRegion::create("proxyd-ticket-keys");
        metrics_ = shm::MetricsRegion::create("proxyd-metrics");
        if (!stats_.valid() || !upstream_state_.valid() || !rate_limits_.valid() ||
            !ticket_keys_.valid() || !metrics_.valid()) {
            spdlog::error("cannot create shared memory");
            return 1;
        }
        if (!listeners_.prepare(config_, error) || !open_control_socket(error)) {
            spdlog::error("{}", error);
            return 1;
        }
        listeners_.commit();
        if (!config_.server.pid_file.empty() &&
            !write_pid_file(config_.server.pid_file, ::getpid(), error)) {
            spdlog::error("{}", error);
            return 1;
        }
    }
    resolutions_ = resolve_now(source_config_, kResolveTimeout);
    shm::CacheStore no_previous;
    if (!expand_config(config_, resolutions_, error) || !build_tls(config_, tls_, error) ||
        !prepare_cache(config_, no_previous, error)) {
        spdlog::error("{}", error);
        return 1;
    }
    start_tls_services();
    started_at_ = unix_now();
    stats_window_ = std::make_unique<StatsWindow>(base_.get(),
                                                  [this] { return sum_request_totals(*metrics_); });
    metrics_server_ = std::make_unique<MetricsServer>(
        base_.get(), [this](std::string& out) { render_metrics_text(out); },
        [this] { return ready_for_traffic(); });
    if (!metrics_server_->configure(config_.metrics, error)) {
        spdlog::error("{}", error);
        return 1;
    }
    setup_admin_routes();
    if (!admin_server_->configure(config_.admin, error)) {
        spdlog::error("{}", error);
        return 1;
    }
    // (Already running as that user, e.g. under the packaged systemd unit, is fine as it is.)
    if (!config_.server.user.empty() && ::geteuid() != 0 && ::geteuid() != config_.server.uid) {
        spdlog::warn("server.user {} has no effect: the master does not run as root",
                     config_.server.user);
    }
    health_ = std::make_unique<HealthChecker>(base_.get(), upstream_state_);
    resolver_ = std::make_unique<Resolver>(base_.get(), [this](Resolutions changed) {
        if (transition_ || upgrade_ || stopping_) return;  // the next round tries again
        spdlog::info("DNS records changed; starting workers with the new servers");
        start_generation(source_config_, std::move(changed), "dns", 0);
    });
    apply_upstream_changes();
    for (int slot = 0; slot < config_.server.workers; ++slot) {
        if (!spawn_worker(slot)) {
            begin_stop(true);
            exit_status_ = 1;
            break;
        }
    }
    event_base_dispatch(base_.get());
    if (!superseded_) ::unlink(config_.server.control_socket.c_str());
    remove_pid_file(config_.server.pid_file, ::getpid());
    spdlog::info("master {} exiting", ::getpid());
    return exit_status_;
}

bool Master::setup_signals(std::string& error) {
    // signalfd rather than libevent's signal handlers: a forked worker then inherits no handler
    // that writes into the master's loop, and can install its own.
    sigset_t mask;
    sigemptyset(&mask);
    for (int signal : kHandledSignals) sigaddset(&mask, signal);
    ::sigprocmask(SIG_BLOCK, &mask, nullptr);
    signal_fd_.reset(::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC));
    if (!signal_fd_) {
        error = std::string("signalfd: ") + std::strerror(errno);
        return false;
    }
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    ::sigaction(SIGPIPE, &ignore, nullptr);
    signal_event_.reset(
        event_new(base_.get(), signal_fd_.get(), EV_READ | EV_PERSIST, on_signal, this));
    event_add(signal_event_.get(), nullptr);
    return true;
}

bool Master::open_control_socket(std::string& error) {
    const std::string& path = config_.server.control_socket;
    // Refuse to take over the socket of a master that is still running (except the one handing
    // over to us in an upgrade, which knows).
    if (handoff_.get() < 0) {
        UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
        if (probe && ::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
            error = "another proxyd master is running on control socket " + path;
            return false;
        }
    }
    UniqueFd listener = net::bind_unix_listener(path, error);
    if (!listener) return false;
    control_ = std::make_unique<ControlServer>(
        base_.get(), std::move(listener),
        [this](const nlohmann::json& request, ControlConnection& from) {
            handle_control(request, from);
        });
    return true;
}

// DNS names become one server per record, and every server gets its shared-state index.
bool Master::expand_config(config::Config& config, const Resolutions& resolutions,
                           std::string& error) {
    expand_names(config, resolutions);
    return registry_.assign(config, error);
}

// Health probes and DNS watching follow the servers of the current generation.
void Master::apply_upstream_changes() {
    health_->configure(config_, tls_.client.get());
    resolver_->watch(source_config_, resolutions_);
}

void Master::announce_ready() {
    std::string listen_text;
    for (const auto& address : config_.server.listen) listen_text += " " + address.text;
    for (const auto& address : config_.tls.listen) listen_text += " " + address.text + " (TLS)";
    spdlog::info("proxyd {} master {} ready: generation {}, {} worker(s), listening on{}", kVersion,
                 ::getpid(), generation_, config_.server.workers, listen_text);
    sd_notify("READY=1\nMAINPID=" + std::to_string(::getpid()));
}

// ---- workers ----------------------------------------------------------------------------------

std::size_t Master::allocate_stats_slot() {
    for (std::size_t i = 0; i < stats_slot_used_.size(); ++i) {
        if (!stats_slot_used_[i]) {
            stats_slot_used_[i] = true;
            return i;
        }
    }
    return stats_slot_used_.size();
}

bool Master::spawn_worker(int slot) {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
        spdlog::error("socketpair: {}", std::strerror(errno));
        return false;
    }
    std::size_t stats_slot = allocate_stats_slot();
    if (stats_slot >= shm::kMaxWorkerSlots) {
        spdlog::error("no free worker stats slot");
        ::close(pair[0]);
        ::close(pair[1]);
        return false;
    }
    hand_log_files_to_workers();
    pid_t pid = ::fork();
    if (pid < 0) {
        spdlog::error("fork: {}", std::strerror(errno));
        ::close(pair[0]);
        ::close(pair[1]);
        stats_slot_used_[stats_slot] = false;
        return false;
    }
    if (pid == 0) {
        ::close(pair[0]);
        become_worker(slot, pair[1], stats_slot);
    }
    ::close(pair[1]);
    WorkerProcess worker;
    worker.slot = slot;
    worker.pid = pid;
    worker.generation = generation_;
    worker.started_at = unix_now();
    worker.started = std::chrono::steady_clock::now();
    worker.stats_slot = stats_slot;
    worker.channel.reset(pair[0]);
    worker.channel_event.reset(
        event_new(base_.get(), pair[0], EV_READ | EV_PERSIST, on_worker_channel, this));
    event_add(worker.channel_event.get(), nullptr);
    workers_.push_back(std::move(worker));
    spdlog::info("worker {} started, pid {}, generation {}", slot, pid, generation_);
    return true;
}

void Master::become_worker(int slot, int channel_fd, std::size_t stats_slot) {
    // Keep only what this worker needs: the sockets it polls and its channel. The master's event
    // loop is left untouched (freeing it would unregister the master's events from the epoll
    // instance both processes share); _exit() below never runs its destructors.
    auto polled =
        ListenerTable::slots_polled_by(slot, config_.server.workers, listeners_.bound_slot_count());
    std::vector<int> mine = listeners_.fds_of(polled);
    close_inherited_sockets(mine, channel_fd);
    ::close(signal_fd_.get());
    sigset_t none;
    sigemptyset(&none);
    for (int signal : kHandledSignals) ::signal(signal, SIG_DFL);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);

    worker::WorkerOptions options;
    options.config = &config_;
    options.listen_fds = mine;
    options.channel_fd = channel_fd;
    options.stats = &stats_->slots[stats_slot];
    options.upstream_state = &*upstream_state_;
    options.rate_limits = &*rate_limits_;
    options.metrics = &metrics_->slots[stats_slot];
    options.cache = cache_for_workers();
    options.server_tls = tls_.server.get();
    options.client_tls = tls_.client.get();
    options.stats_slot = stats_slot;
    options.slot = slot;
    options.generation = generation_;
    options.master_pid = ::getppid();
    ::_exit(worker::run_worker(options));
}

void Master::send_command(WorkerProcess& worker, const std::string& command,
                          const std::vector<int>& fds) {
    if (!net::send_with_fds(worker.channel.get(), command, fds)) {
        spdlog::warn("worker {} (pid {}) does not take commands; killing it", worker.slot,
                     worker.pid);
        ::kill(worker.pid, SIGKILL);
    }
}

WorkerProcess* Master::find_worker(pid_t pid) {
    for (auto& worker : workers_) {
        if (worker.pid == pid) return &worker;
    }
    return nullptr;
}

WorkerProcess* Master::current_worker_for_slot(int slot) {
    for (auto& worker : workers_) {
        if (worker.slot == slot && worker.generation == generation_ && !worker.draining) {
            return &worker;
        }
    }
    return nullptr;
}

// ---- supervision ------------------------------------------------------------------------------

void Master::on_signal(evutil_socket_t fd, short, void* arg) {
    auto* self = static_cast<Master*>(arg);
    signalfd_siginfo info;
    while (::read(fd, &info, sizeof info) == sizeof info) {
        switch (info.ssi_signo) {
            case SIGCHLD:
                self->reap_children();
                break;
            case SIGTERM:
            case SIGINT:
                self->begin_stop(false);
                break;
            case SIGQUIT:
                self->begin_stop(true);
                break;
            case SIGHUP:
                self->request_reload(0);
                break;
            case SIGUSR1:
                self->reopen_logs();
                break;
            case SIGUSR2:
                self->request_upgrade(0);
                break;
            default:
                break;
        }
    }
}

void Master::on_worker_channel(evutil_socket_t fd, short, void* arg) {
    auto* self = static_cast<Master*>(arg);
    auto it = std::find_if(self->workers_.begin(), self->workers_.end(),
                           [&](const WorkerProcess& w) { return w.channel.get() == fd; });
    if (it == self->workers_.end()) return;
    std::string message;
    std::vector<UniqueFd> fds;
    if (!net::receive_with_fds(fd, message, fds, 256)) {
        if (errno == EAGAIN || errno == EINTR) return;
        it->channel_event.reset();  // the worker is exiting; SIGCHLD will tell how
        return;
    }
    if (message == "ready" && !it->ready) self->on_worker_ready(*it);
}

void Master::on_worker_ready(WorkerProcess& worker) {
    worker.ready = true;
    spdlog::debug("worker {} (pid {}) ready", worker.slot, worker.pid);
    if (worker.generation == generation_ && !worker.draining) {
        release_adopted_slot(worker.slot);
    }
    if (!started_) {
        bool all = std::all_of(workers_.begin(), workers_.end(),
                               [](const WorkerProcess& w) { return w.ready || w.draining; });
        if (all && static_cast<int>(workers_.size()) >= config_.server.workers) {
            started_ = true;
            if (handoff_) {
                complete_handoff();
            } else {
                announce_ready();
            }
        }
    }
    maybe_commit_transition();
}

void Master::reap_children() {
    for (;;) {
        int status = 0;
        pid_t pid = ::waitpid(-1, &status, WNOHANG);
        if (pid <= 0) break;
        on_worker_exit(pid, status);
    }
    if (stopping_ && workers_.empty()) finish_stop();
}

void Master::on_worker_exit(pid_t pid, int status) {
    if (upgrade_ && pid == upgrade_->child) {
        finish_upgrade(false, "the new master " + describe_exit(status));
        return;
    }
    WorkerProcess* found = find_worker(pid);
    if (!found) return;  // e.g. a new master that already took over
    int slot = found->slot;
    int generation = found->generation;
    bool expected = stopping_ || found->draining;
    auto lived = std::chrono::steady_clock::now() - found->started;
    // A dead worker's gauges would otherwise stay counted forever.
    stats_->slots[found->stats_slot].connections_active.store(0, std::memory_order_relaxed);
    stats_->slots[found->stats_slot].tunnels_active.store(0, std::memory_order_relaxed);
    take_back_active_requests(found->stats_slot);
    stats_slot_used_[found->stats_slot] = false;
    std::erase_if(workers_, [&](const WorkerProcess& w) { return w.pid == pid; });
    for (auto& state : slots_) {
        if (state.adopter == pid) state.adopter = 0;  // it can't poll for anyone any more
    }

    if (expected) {
        spdlog::info("worker {} (pid {}, generation {}) {}", slot, pid, generation,
                     describe_exit(status));
        bool draining_left = std::any_of(workers_.begin(), workers_.end(),
                                         [](const WorkerProcess& w) { return w.draining; });
        if (!draining_left && !transition_) listeners_.close_retired();
        return;
    }
    spdlog::error("worker {} (pid {}, generation {}) {}", slot, pid, generation,
                  describe_exit(status));
    ++worker_restarts_;
    if (transition_ && generation == transition_->generation) {
        abort_transition("new worker " + std::to_string(slot) + " " + describe_exit(status));
        return;
    }
    if (generation != generation_) return;  // an old generation is being replaced anyway
    if (!started_ && handoff_) {
        net::send_with_fds(handoff_.get(),
                           "error worker " + std::to_string(slot) + " " + describe_exit(status),
                           {});
        exit_status_ = 1;
        begin_stop(true);
        return;
    }
    schedule_respawn(slot, lived);
}

// Requests a worker had in flight when it died are no longer active on their servers; and a
// half-open trial it may have been sending will never be judged, so another may go.
void Master::take_back_active_requests(std::size_t stats_slot) {
    auto& state = *upstream_state_;
    for (std::uint32_t i = 0; i < registry_.size(); ++i) {
        std::int32_t share = state.active_by_worker[stats_slot][i].exchange(0);
        if (share != 0) state.servers[i].active.fetch_sub(share, std::memory_order_relaxed);
        if (state.servers[i].circuit.load() == static_cast<std::uint8_t>(shm::Circuit::HalfOpen)) {
            state.servers[i].trial_in_flight.store(0, std::memory_order_relaxed);
        }
    }
}

void Master::schedule_respawn(int slot, std::chrono::steady_clock::duration lived) {
    auto& state = slots_[static_cast<std::size_t>(slot)];
    if (lived >= kStableLifetime) state.quick_crashes = 0;
    if (state.quick_crashes == 0) {
        state.quick_crashes = 1;
        if (spawn_worker(slot)) return;
    }
    auto delay = std::chrono::milliseconds(250) * (1 << std::min(state.quick_crashes - 1, 10));
    delay = std::min<std::chrono::milliseconds>(delay, kMaxRespawnDelay);
    ++state.quick_crashes;
    spdlog::warn("worker {} keeps crashing; next start in {} ms", slot, delay.count());
    if (!state.respawn_timer) {
        state.respawn_timer.reset(evtimer_new(base_.get(), on_respawn_timer, &state));
    }
    timeval tv = to_timeval(delay);
    event_add(state.respawn_timer.get(), &tv);
    adopt_slot(slot);
}

void Master::on_respawn_timer(evutil_socket_t, short, void* arg) {
    auto* state = static_cast<SlotState*>(arg);
    Master* self = state->master;
    if (self->stopping_ || self->current_worker_for_slot(state->slot)) return;
    if (state->slot >= self->config_.server.workers) return;  // scaled down meanwhile
    if (!self->spawn_worker(state->slot)) self->schedule_respawn(state->slot, {});
}

// While a slot has no worker, a sibling accepts on its sockets: a socket that nobody polls would
// swallow the connections the kernel queues on it.
void Master::adopt_slot(int slot) {
    auto& state = slots_[static_cast<std::size_t>(slot)];
    if (state.adopter) return;
    for (auto& worker : workers_) {
        if (worker.generation != generation_ || worker.draining || !worker.ready ||
            worker.slot == slot) {
            continue;
        }
        auto polled = ListenerTable::slots_polled_by(slot, config_.server.workers,
                                                     listeners_.bound_slot_count());
        send_command(worker, "adopt " + std::to_string(slot), listeners_.fds_of(polled));
        state.adopter = worker.pid;
        spdlog::info("worker {} (pid {}) polls slot {}'s sockets until it is back", worker.slot,
                     worker.pid, slot);
        return;
    }
    spdlog::warn("no other worker to poll slot {}'s sockets: connections wait in its queue", slot);
}

void Master::release_adopted_slot(int slot) {
    auto& state = slots_[static_cast<std::size_t>(slot)];
    if (!state.adopter) return;
    if (WorkerProcess* adopter = find_worker(state.adopter)) {
        send_command(*adopter, "release " + std::to_string(slot));
    }
    state.adopter = 0;
}

void Master::ensure_workers() {
    for (int slot = 0; slot < config_.server.workers; ++slot) {
        auto& timer = slots_[static_cast<std::size_t>(slot)].respawn_timer;
        bool pending = timer && evtimer_pending(timer.get(), nullptr);
        if (!current_worker_for_slot(slot) && !pending) schedule_respawn(slot, {});
    }
}

// ---- control ----------------------------------------------------------------------------------

void Master::handle_control(const nlohmann::json& request, ControlConnection& from) {
    int version = request.value("v", 0);
    std::string command = request.value("cmd", "");
    if (version != control::kProtocolVersion) {
        from.reply(control::make_reply(
            false, "unsupported control protocol version " + std::to_string(version) +
                       " (this master speaks " + std::to_string(control::kProtocolVersion) + ")"));
        return;
    }
    if (command == "status") {
        nlohmann::json reply = status_json();
        std::int64_t connections = 0;
        for (const auto& w : reply["workers"]) connections += w["connections"].get<std::int64_t>();
        reply["v"] = control::kProtocolVersion;
        reply["ok"] = true;
        reply["message"] = "proxyd " + std::string(kVersion) + ", master " +
                           std::to_string(::getpid()) + ", generation " +
                           std::to_string(generation_) + ", " + std::to_string(workers_.size()) +
                           " worker(s), " + std::to_string(connections) + " open connection(s)";
        // Per generation: draining ones hold tunnels (WebSockets) until they end or time out.
        struct Generation {
            std::string state;
            std::int64_t workers = 0, connections = 0, tunnels = 0;
        };
        std::map<int, Generation> generations;
        for (const auto& w : reply["workers"]) {
            auto& g = generations[w["generation"].get<int>()];
            g.state = w["state"].get<std::string>();
            g.workers += 1;
            g.connections += w["connections"].get<std::int64_t>();
            g.tunnels += w["tunnels"].get<std::int64_t>();
        }
        std::string& message = reply["message"].get_ref<std::string&>();
        for (const auto& [generation, g] : generations) {
            message += "\ngeneration " + std::to_string(generation) + " (" + g.state +
                       "): " + std::to_string(g.workers) + " worker(s), " +
                       std::to_string(g.connections) + " connection(s), " +
                       std::to_string(g.tunnels) + " tunnel(s)";
        }
        // One line more per certificate: expiry is what an operator checks first.
        for (const auto& certificate : reply["tls"]["certificates"]) {
            std::string line = "\ncertificate " + certificate["cert"].get<std::string>() + " (" +
                               certificate["key_type"].get<std::string>() + "): expires " +
                               certificate["expires"].get<std::string>();
            if (certificate.contains("error")) {
                line += "; renewal refused: " + certificate["error"].get<std::string>();
            }
            reply["message"] = reply["message"].get<std::string>() + line;
        }
        from.reply(reply);
    } else if (command == "stop") {
        bool fast = request.value("fast", false);
        from.reply(control::make_reply(true, fast ? "stopping now" : "stopping gracefully"));
        // The connection stays open: proxyctl sees it close when this master has exited.
        begin_stop(fast);
    } else if (command == "reload") {
        request_reload(from.id());
    } else if (command == "workers") {
        request_workers(from.id(), request.value("count", 0));
    } else if (command == "upgrade") {
        request_upgrade(from.id());
    } else if (command == "report") {
        std::string error;
        if (record_report(request, error)) {
            from.reply(control::make_reply(true, "report recorded"));
        } else {
            from.reply(control::make_reply(false, error));
        }
    } else if (command == "stats") {
        nlohmann::json reply = stats_server_json();
        reply["message"] = stats_server_text(reply);
        reply["ok"] = true;
        reply["v"] = control::kProtocolVersion;
        from.reply(reply);
    } else if (command == "backends") {
        std::string upstream = request.value("upstream", "");
        auto backends = backends_json(upstream);
        if (!backends) {
            from.reply(control::make_reply(false, "unknown upstream \"" + upstream + "\""));
        } else {
            std::string text;
            for (const auto& [name, info] : backends->items()) {
                text += text.empty() ? "" : "\n";
                text += name + " (" + info["balance"].get<std::string>() + ")";
                for (const auto& s : info["servers"]) {
                    char line[512];
                    std::snprintf(
                        line, sizeof line,
                        "\n  %-24s %-22s weight %-4d %-9s circuit %-9s active %-4lld "
                        "requests %-8llu failures %-6llu ewma %.1f ms",
                        s["id"].get<std::string>().c_str(), s["address"].get<std::string>().c_str(),
                        s["weight"].get<int>(),
                        s["drain"].get<bool>()     ? "draining"
                        : s["healthy"].get<bool>() ? "healthy"
                                                   : "unhealthy",
                        s["circuit"].get<std::string>().c_str(),
                        static_cast<long long>(s["active"].get<std::int64_t>()),
                        static_cast<unsigned long long>(s["requests"].get<std::uint64_t>()),
                        static_cast<unsigned long long>(s["failures"].get<std::uint64_t>()),
                        s["response_ms_ewma"].get<double>());
                    text += line;
                }
            }
            nlohmann::json reply = control::make_reply(true, text);
            reply["upstreams"] = *backends;
            from.reply(reply);
        }
    } else if (command == "reload-tls") {
        reload_certificates(from.id());
    } else if (command == "reopen") {
        reopen_logs();
        from.reply(control::make_reply(true, "log files reopened"));
    } else {
        from.reply(control::make_reply(false, "unknown command \"" + command + "\""));
    }
}

void Master::answer(std::uint64_t requester, bool ok, const std::string& message,
                    nlohmann::json extra) {
    if (ok) {
        spdlog::info("{}", message);
    } else {
        spdlog::error("{}", message);
    }
    if (requester & kAdminTicketBit) {
        restore_config_file_if_refused(requester, ok);
        if (!admin_server_) return;
        nlohmann::json body = {{"ok", ok}, {"message", message}};
        if (!ok) body["error"] = message;  // as every other refusal of the admin API
        for (auto& [key, value] : extra.items()) body[key] = value;
        // A refused change (bad certificates, an invalid config) is the caller's input.
        return admin_server_->respond(requester, ok ? 200 : 400, body);
    }
    if (requester == 0 || !control_) return;
    nlohmann::json reply = control::make_reply(ok, message);
    for (auto& [key, value] : extra.items()) reply[key] = value;
    control_->reply(requester, reply);
}

nlohmann::json Master::status_json() const {
    nlohmann::json workers = nlohmann::json::array();
    std::vector<const WorkerProcess*> sorted;
    for (const auto& w : workers_) sorted.push_back(&w);
    std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) {
        return std::tie(a->generation, a->slot) < std::tie(b->generation, b->slot);
    });
    for (const auto* w : sorted) {
        const auto& slot = stats_->slots[w->stats_slot];
        auto connections = slot.connections_active.load(std::memory_order_relaxed);
        auto tunnels = slot.tunnels_active.load(std::memory_order_relaxed);
        workers.push_back({{"slot", w->slot},
                           {"pid", w->pid},
                           {"generation", w->generation},
                           {"state", w->draining ? "draining" : (w->ready ? "active" : "starting")},
                           {"started_at", w->started_at},
                           {"connections", std::max<std::int64_t>(connections, 0)},
                           {"tunnels", std::max<std::int64_t>(tunnels, 0)}});
    }
    return {{"master_pid", ::getpid()},
            {"version", kVersion},
            {"generation", generation_},
            {"config", options_.config_path},
            {"binary", options_.binary_path},
            {"workers", workers},
            {"upstreams", upstreams_json()},
            {"totals", totals_json()},
            {"tls", tls_json()}};
}

// Counters summed over every worker slot, past workers included (slots keep counting).
nlohmann::json Master::totals_json() const {
    std::uint64_t requests = 0, connections = 0, auth_failures = 0, rate_limited = 0,
                  rate_limit_errors = 0;
    for (const auto& slot : stats_->slots) {
        requests += slot.requests_total.load(std::memory_order_relaxed);
        connections += slot.connections_total.load(std::memory_order_relaxed);
        auth_failures += slot.auth_failures.load(std::memory_order_relaxed);
        rate_limited += slot.rate_limited.load(std::memory_order_relaxed);
        rate_limit_errors += slot.rate_limit_errors.load(std::memory_order_relaxed);
    }
    return {{"requests", requests},
            {"connections", connections},
            {"auth_failures", auth_failures},
            {"rate_limited", rate_limited},
            {"rate_limit_store_errors", rate_limit_errors},
            {"rate_limit_table",
             {{"decisions", rate_limits_->counters.decisions.load(std::memory_order_relaxed)},
              {"denials", rate_limits_->counters.denials.load(std::memory_order_relaxed)},
              {"evictions", rate_limits_->counters.evictions.load(std::memory_order_relaxed)},
              {"fail_open", rate_limits_->counters.fail_open.load(std::memory_order_relaxed)}}}};
}

// The shared view of every upstream server, as the workers see it.
nlohmann::json Master::upstreams_json() const {
    static constexpr const char* kCircuit[] = {"closed", "open", "half_open"};
    nlohmann::json upstreams = nlohmann::json::object();
    std::int64_t now = shm::monotonic_ms();
    for (const auto& upstream : config_.upstreams) {
        nlohmann::json servers = nlohmann::json::array();
        for (const auto& server : upstream.servers) {
            const auto& st = upstream_state_->servers[server.state_index];
            auto circuit = std::min<unsigned>(st.circuit.load(std::memory_order_relaxed), 2);
            bool open = circuit != 0 && now < st.open_until_ms.load(std::memory_order_relaxed);
            servers.push_back(
                {{"id", server.id},
                 {"address", server.address.text},
                 {"weight", server.weight},
                 {"max_connections", server.max_connections},
                 {"backup", server.backup},
                 {"drain", server.drain},
                 {"healthy", st.unhealthy.load(std::memory_order_relaxed) == 0},
                 {"circuit", kCircuit[circuit]},
                 {"available",
                  st.unhealthy.load(std::memory_order_relaxed) == 0 && !open && !server.drain},
                 {"active", st.active.load(std::memory_order_relaxed)},
                 {"requests", st.requests.load(std::memory_order_relaxed)},
                 {"failures", st.failures.load(std::memory_order_relaxed)},
                 {"response_ms_ewma", st.ewma_us.load(std::memory_order_relaxed) / 1000.0}});
        }
        upstreams[upstream.name] = {{"balance", config::balance_name(upstream.balance)},
                                    {"servers", servers}};
    }
    return upstreams;
}

// A backend's own report of its load (cpu and memory in percent, load average), for
// balance = "adaptive": turned into a performance score from 1 (idle) down to 0.05, smoothed
// with the previous report while that one is recent. Workers ignore reports older than 60 s.
bool Master::record_report(const nlohmann::json& request, std::string& error) {
    std::string upstream_name = request.value("upstream", "");
    std::string backend_id = request.value("backend_id", "");
    const config::UpstreamServer* found = nullptr;
    bool upstream_known = false;
    for (const auto& upstream : config_.upstreams) {
        if (upstream.name != upstream_name) continue;
        upstream_known = true;
        for (const auto& server : upstream.servers) {
            if (server.id == backend_id) found = &server;
        }
    }
    if (!found) {
        error = upstream_known
                    ? "unknown backend \"" + backend_id + "\" in upstream \"" + upstream_name + "\""
                    : "unknown upstream \"" + upstream_name + "\"";
        return false;
    }
    auto number = [&](const char* key) { return request.value(key, 0.0); };
    double cpu = number("cpu_usage"), memory = number("memory_usage"), load = number("load_avg_1");
    if (cpu < 0 || cpu > 100 || memory < 0 || memory > 100 || load < 0) {
        error = "cpu_usage and memory_usage must be 0..100, load_avg_1 >= 0";
        return false;
    }
    double score = 1.0 - 0.5 * cpu / 100 - 0.3 * memory / 100 - 0.2 * std::min(load / 4, 1.0);
    score = std::clamp(score, 0.05, 1.0);
    auto& st = upstream_state_->servers[found->state_index];
    std::int64_t now = shm::monotonic_ms();
    std::int64_t previous_at = st.reported_ms.load(std::memory_order_relaxed);
    if (previous_at > 0 && now - previous_at < 60'000) {
        score = 0.5 * score + 0.5 * st.performance_milli.load(std::memory_order_relaxed) / 1000.0;
    }
    st.performance_milli.store(static_cast<std::uint32_t>(score * 1000), std::memory_order_relaxed);
    st.reported_ms.store(now, std::memory_order_release);
    return true;
}

// Workers that run as server.user reopen their log files by name (`proxyctl reopen`): the files
// must exist and be theirs, as nginx arranges it too.
void Master::hand_log_files_to_workers() {
    const auto& server = config_.server;
    if (server.user.empty() || ::geteuid() != 0) return;
    for (const std::string& path : {config_.log.error_log, config_.log.access_log}) {
        if (path.empty() || path == "-") continue;
        UniqueFd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640));
        if (!fd || ::fchown(fd.get(), server.uid, server.gid) != 0) {
            spdlog::warn("log file {}: cannot give it to user {}: {}", path, server.user,
                         std::strerror(errno));
        }
    }
}

void Master::reopen_logs() {
    std::string error;
    hand_log_files_to_workers();
    if (!log::setup_error_log(config_.log, "master", error)) {
        spdlog::error("reopen error log: {}", error);
    }
    for (auto& worker : workers_) send_command(worker, "reopen");
    spdlog::info("log files reopened");
}

void Master::begin_stop(bool fast) {
    if (stopping_ && !fast) return;
    if (transition_) abort_transition("the master is stopping");
    if (upgrade_) finish_upgrade(false, "the master is stopping");
    stopping_ = true;
    spdlog::info("{} stop: {} worker(s)", fast ? "fast" : "graceful", workers_.size());
    // New connections are refused from now on; queued ones are lost either way.
    listeners_.close_all();
    for (auto& worker : workers_) {
        worker.draining = true;
        send_command(worker, fast ? "quit" : "stop");
    }
    auto limit = fast ? std::chrono::milliseconds(3000)
                      : config_.server.shutdown_timeout + std::chrono::milliseconds(2000);
    stop_deadline_.reset(evtimer_new(base_.get(), on_stop_deadline, this));
    timeval tv = to_timeval(limit);
    event_add(stop_deadline_.get(), &tv);
    sd_notify("STOPPING=1");
    if (workers_.empty()) finish_stop();
}

void Master::on_stop_deadline(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<Master*>(arg);
    for (auto& worker : self->workers_) {
        spdlog::warn("worker {} (pid {}) did not exit in time; killing it", worker.slot,
                     worker.pid);
        ::kill(worker.pid, SIGKILL);
    }
}

void Master::finish_stop() {
    event_base_loopexit(base_.get(), nullptr);
}

}  // namespace proxyd::master
