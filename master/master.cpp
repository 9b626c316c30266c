#include "master/master.hpp"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/control/protocol.hpp"
#include "common/log.hpp"
#include "common/net/listener.hpp"
#include "master/pid_file.hpp"
#include "worker/worker.hpp"

namespace proxyd::master {
namespace {

constexpr int kHandledSignals[] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGCHLD};
constexpr auto kMaxRespawnDelay = std::chrono::seconds(30);
constexpr auto kStableLifetime = std::chrono::seconds(5);

double unix_now() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::string describe_exit(int status) {
    if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) {
        return std::string("killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
               ::strsignal(WTERMSIG(status)) + ")";
    }
    return "stopped";
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

timeval to_timeval(std::chrono::milliseconds ms) {
    return {static_cast<time_t>(ms.count() / 1000),
            static_cast<suseconds_t>((ms.count() % 1000) * 1000)};
}

}  // namespace

Master::Master(config::Config config) : config_(std::move(config)) {}

Master::~Master() = default;

int Master::run() {
    std::string error;
    base_.reset(event_base_new());
    stats_ = shm::SharedStats::create();
    stats_slot_used_.assign(shm::kMaxWorkerSlots, false);
    if (!base_ || !stats_.valid()) {
        spdlog::error("cannot create the event loop or shared memory");
        return 1;
    }
    if (!setup_signals(error) || !open_listeners(error) || !open_control_socket(error)) {
        spdlog::error("{}", error);
        return 1;
    }
    if (!config_.server.pid_file.empty() &&
        !write_pid_file(config_.server.pid_file, ::getpid(), error)) {
        spdlog::error("{}", error);
        return 1;
    }
    slots_.resize(static_cast<std::size_t>(config_.server.workers));
    for (std::size_t slot = 0; slot < slots_.size(); ++slot) {
        slots_[slot].master = this;
        slots_[slot].slot = static_cast<int>(slot);
    }
    for (int slot = 0; slot < config_.server.workers; ++slot) {
        if (!spawn_worker(slot)) {
            begin_stop(true);
            exit_status_ = 1;
            break;
        }
    }
    std::string listen_text;
    for (const auto& address : config_.server.listen) listen_text += " " + address.text;
    spdlog::info("proxyd {} master {} started: {} worker(s), listening on{}", PROXYD_VERSION,
                 ::getpid(), config_.server.workers, listen_text);
    event_base_dispatch(base_.get());
    remove_pid_file(config_.server.pid_file, ::getpid());
    ::unlink(config_.server.control_socket.c_str());
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

bool Master::open_listeners(std::string& error) {
    listeners_.resize(static_cast<std::size_t>(config_.server.workers));
    for (auto& slot_sockets : listeners_) {
        for (const auto& address : config_.server.listen) {
            UniqueFd fd = net::bind_reuseport(address, error);
            if (!fd) return false;
            slot_sockets.push_back(std::move(fd));
        }
    }
    return true;
}

bool Master::open_control_socket(std::string& error) {
    const std::string& path = config_.server.control_socket;
    // Refuse to take over the socket of a master that is still running.
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (probe && ::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
        error = "another proxyd master is running on control socket " + path;
        return false;
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
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
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
    spdlog::info("worker {} started, pid {}", slot, pid);
    return true;
}

void Master::become_worker(int slot, int channel_fd, std::size_t stats_slot) {
    // Keep only what this worker needs: its slot's sockets and its channel. The master's event
    // loop is left untouched (freeing it would unregister the master's events from the epoll
    // instance both processes share); _exit() below never runs its destructors.
    std::vector<int> mine;
    for (auto& fd : listeners_[static_cast<std::size_t>(slot)]) mine.push_back(fd.get());
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
    options.stats = &stats_.slot(stats_slot);
    options.slot = slot;
    options.generation = generation_;
    options.master_pid = ::getppid();
    ::_exit(worker::run_worker(options));
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
                spdlog::warn("SIGHUP: reload is not supported yet; ignored");
                break;
            case SIGUSR1:
                spdlog::warn("SIGUSR1: log reopening is not supported yet; ignored");
                break;
            case SIGUSR2:
                spdlog::warn("SIGUSR2: binary upgrade is not supported yet; ignored");
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
    char buf[256];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        it->channel_event.reset();  // the worker is exiting; SIGCHLD will tell how
        return;
    }
    if (std::string_view(buf, static_cast<std::size_t>(n)).find("ready") !=
            std::string_view::npos &&
        !it->ready) {
        it->ready = true;
        spdlog::debug("worker {} (pid {}) ready", it->slot, it->pid);
    }
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
    auto it = std::find_if(workers_.begin(), workers_.end(),
                           [&](const WorkerProcess& w) { return w.pid == pid; });
    if (it == workers_.end()) return;
    int slot = it->slot;
    bool expected = stopping_ || it->draining;
    auto lived = std::chrono::steady_clock::now() - it->started;
    // A dead worker's gauge would otherwise stay counted forever.
    stats_.slot(it->stats_slot).connections_active.store(0, std::memory_order_relaxed);
    stats_slot_used_[it->stats_slot] = false;
    workers_.erase(it);
    if (expected) {
        spdlog::info("worker {} (pid {}) {}", slot, pid, describe_exit(status));
        return;
    }
    spdlog::error("worker {} (pid {}) {}; replacing it", slot, pid, describe_exit(status));
    schedule_respawn(slot, lived);
}

void Master::schedule_respawn(int slot, std::chrono::steady_clock::duration lived) {
    auto& state = slots_[static_cast<std::size_t>(slot)];
    if (lived >= kStableLifetime) state.quick_crashes = 0;
    if (state.quick_crashes == 0) {
        state.quick_crashes = 1;
        if (!spawn_worker(slot)) schedule_respawn(slot, {});
        return;
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
}

void Master::on_respawn_timer(evutil_socket_t, short, void* arg) {
    auto* state = static_cast<SlotState*>(arg);
    Master* self = state->master;
    if (self->stopping_) return;
    if (!self->spawn_worker(state->slot)) self->schedule_respawn(state->slot, {});
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
        std::size_t connections = 0;
        for (const auto& w : reply["workers"]) connections += w["connections"].get<std::size_t>();
        reply["v"] = control::kProtocolVersion;
        reply["ok"] = true;
        reply["message"] = "proxyd " + std::string(PROXYD_VERSION) + ", master " +
                           std::to_string(::getpid()) + ", generation " +
                           std::to_string(generation_) + ", " + std::to_string(workers_.size()) +
                           " worker(s), " + std::to_string(connections) + " open connection(s)";
        from.reply(reply);
        return;
    }
    if (command == "stop") {
        bool fast = request.value("fast", false);
        from.reply(control::make_reply(true, fast ? "stopping now" : "stopping gracefully"));
        // The connection stays open: proxyctl sees it close when this master has exited.
        begin_stop(fast);
        return;
    }
    if (command == "reload" || command == "upgrade" || command == "workers" ||
        command == "reopen") {
        from.reply(control::make_reply(false, "\"" + command + "\" is not supported yet"));
        return;
    }
    from.reply(control::make_reply(false, "unknown command \"" + command + "\""));
}

nlohmann::json Master::status_json() const {
    nlohmann::json workers = nlohmann::json::array();
    std::vector<const WorkerProcess*> sorted;
    for (const auto& w : workers_) sorted.push_back(&w);
    std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) {
        return a->slot < b->slot || (a->slot == b->slot && a->pid < b->pid);
    });
    for (const auto* w : sorted) {
        auto connections =
            stats_.slot(w->stats_slot).connections_active.load(std::memory_order_relaxed);
        workers.push_back({{"slot", w->slot},
                           {"pid", w->pid},
                           {"generation", w->generation},
                           {"state", w->draining ? "draining" : (w->ready ? "active" : "starting")},
                           {"started_at", w->started_at},
                           {"connections", std::max<std::int64_t>(connections, 0)}});
    }
    return {{"master_pid", ::getpid()},
            {"version", PROXYD_VERSION},
            {"generation", generation_},
            {"config", config_.file},
            {"workers", workers}};
}

void Master::send_to_workers(const char* command) {
    for (auto& worker : workers_) {
        if (::write(worker.channel.get(), command, std::strlen(command)) < 0) {
            ::kill(worker.pid, SIGTERM);
        }
    }
}

void Master::begin_stop(bool fast) {
    if (stopping_ && !fast) return;
    stopping_ = true;
    spdlog::info("{} stop: {} worker(s)", fast ? "fast" : "graceful", workers_.size());
    // New connections are refused from now on; queued ones are lost either way.
    listeners_.clear();
    for (auto& worker : workers_) worker.draining = true;
    send_to_workers(fast ? "quit\n" : "drain\n");
    auto limit = fast ? std::chrono::milliseconds(3000)
                      : config_.server.shutdown_timeout + std::chrono::milliseconds(2000);
    stop_deadline_.reset(evtimer_new(base_.get(), on_stop_deadline, this));
    timeval tv = to_timeval(limit);
    event_add(stop_deadline_.get(), &tv);
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
