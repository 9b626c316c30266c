// Binary upgrade: the old master starts the binary now installed at its path as a child, and
// hands it the listening sockets and the shared memory over a socketpair (SCM_RIGHTS). The new
// master starts its workers on those sockets; once they all accept it takes the control socket
// and pid file and says "ready"; only then does the old generation drain. Until that moment the
// old master serves alone, and any failure leaves it so.
//
// Handoff protocol (version 1, SOCK_SEQPACKET, old -> new):
//   1. {"v":1,"generation":G,"listeners":[{"address":"127.0.0.1:8080","slots":N},...],
//       "stats_slots_in_use":[...],"fds":TOTAL}            (no fds)
//   2. "fds" messages carrying the sockets in that order (at most 200 each), then the stats memfd
//      and the upstream state memfd; the header also carries the server registry
//   3. "end"
// new -> old: "ready" | "error REASON".
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/config/units.hpp"
#include "common/net/fd_passing.hpp"
#include "common/util/timeval.hpp"
#include "master/master.hpp"
#include "master/pid_file.hpp"
#include "master/sd_notify.hpp"

namespace proxyd::master {
namespace {

constexpr int kHandoffVersion = 1;
constexpr std::size_t kFdsPerMessage = 200;
constexpr auto kUpgradeTimeout = std::chrono::seconds(20);
constexpr int kHandoffReadTimeoutMs = 5000;

bool send_fds_in_chunks(int fd, const std::vector<int>& fds) {
    for (std::size_t i = 0; i < fds.size(); i += kFdsPerMessage) {
        std::vector<int> chunk(
            fds.begin() + static_cast<long>(i),
            fds.begin() + static_cast<long>(std::min(fds.size(), i + kFdsPerMessage)));
        if (!net::send_with_fds(fd, "fds", chunk)) return false;
    }
    return net::send_with_fds(fd, "end", {});
}

bool receive_message(int fd, std::string& message, std::vector<UniqueFd>& fds) {
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, kHandoffReadTimeoutMs) <= 0) return false;
    return net::receive_with_fds(fd, message, fds, 1 << 20);
}

}  // namespace

// ---- old master -------------------------------------------------------------------------------

void Master::request_upgrade(std::uint64_t requester) {
    if (stopping_) return answer(requester, false, "upgrade refused: the master is stopping");
    if (upgrade_)
        return answer(requester, false, "upgrade refused: an upgrade is already in progress");
    if (transition_) {
        return answer(requester, false, "upgrade refused: a reload or scaling is in progress");
    }
    const std::string& binary = options_.binary_path;
    if (::access(binary.c_str(), X_OK) != 0) {
        return answer(requester, false,
                      "upgrade failed: cannot execute " + binary + ": " + std::strerror(errno) +
                          "; still serving");
    }
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
        return answer(requester, false,
                      std::string("upgrade failed: socketpair: ") + std::strerror(errno));
    }
    pid_t child = ::fork();
    if (child < 0) {
        ::close(pair[0]);
        ::close(pair[1]);
        return answer(requester, false,
                      std::string("upgrade failed: fork: ") + std::strerror(errno));
    }
    if (child == 0) {
        // Everything else of ours is close-on-exec; only the handoff end crosses the exec.
        ::fcntl(pair[1], F_SETFD, 0);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        std::string fd_text = std::to_string(pair[1]);
        ::setenv("PROXYD_UPGRADE_FD", fd_text.c_str(), 1);
        const char* argv[] = {binary.c_str(), "-c", options_.config_path.c_str(), nullptr};
        ::execv(binary.c_str(), const_cast<char* const*>(argv));
        ::_exit(127);
    }
    ::close(pair[1]);
    upgrade_.emplace();
    upgrade_->child = child;
    upgrade_->requester = requester;
    upgrade_->channel.reset(pair[0]);

    nlohmann::json header = {{"v", kHandoffVersion}, {"generation", generation_}};
    nlohmann::json listeners = nlohmann::json::array();
    std::vector<int> fds;
    for (const auto& entry : listeners_.entries()) {
        listeners.push_back({{"address", entry.address.text}, {"slots", entry.slots.size()}});
        for (const auto& fd : entry.slots) fds.push_back(fd.get());
    }
    fds.push_back(stats_.fd());
    fds.push_back(upstream_state_.fd());
    fds.push_back(rate_limits_.fd());
    header["rate_limits"] = true;  // absent in handoffs from 0.1
    fds.push_back(ticket_keys_.fd());
    header["ticket_keys"] = true;  // absent in handoffs from 0.1
    fds.push_back(metrics_.fd());
    header["metrics"] = true;  // absent in handoffs from 0.1
    if (cache_.valid()) {
        fds.push_back(cache_.fd());
        header["cache"] = true;  // the last fd when present
    }
    header["counters"] = {{"worker_restarts", worker_restarts_},
                          {"reloads_ok", reloads_ok_},
                          {"reloads_failed", reloads_failed_}};
    header["registry"] = registry_.to_json();
    header["backend_overlay"] = overlay_.to_json();
    nlohmann::json in_use = nlohmann::json::array();
    for (const auto& worker : workers_) in_use.push_back(worker.stats_slot);
    header["listeners"] = listeners;
    header["stats_slots_in_use"] = in_use;
    header["fds"] = fds.size();
    if (!net::send_with_fds(pair[0], header.dump(), {}) || !send_fds_in_chunks(pair[0], fds)) {
        return finish_upgrade(false, "cannot hand over the sockets to the new master");
    }
    spdlog::info("upgrade: started {} as pid {}", binary, child);
    upgrade_->channel_event.reset(
        event_new(base_.get(), pair[0], EV_READ | EV_PERSIST, on_upgrade_channel, this));
    event_add(upgrade_->channel_event.get(), nullptr);
    upgrade_->deadline.reset(evtimer_new(base_.get(), on_upgrade_deadline, this));
    timeval tv = to_timeval(kUpgradeTimeout);
    event_add(upgrade_->deadline.get(), &tv);
}

void Master::on_upgrade_channel(evutil_socket_t fd, short, void* arg) {
    auto* self = static_cast<Master*>(arg);
    std::string message;
    std::vector<UniqueFd> fds;
    if (!net::receive_with_fds(fd, message, fds, 4096)) {
        if (errno == EAGAIN || errno == EINTR) return;
        self->finish_upgrade(false, "the new master exited before it was ready");
        return;
    }
    if (message == "ready") {
        self->finish_upgrade(true, "");
    } else if (message.rfind("error ", 0) == 0) {
        self->finish_upgrade(false, "the new master failed: " + message.substr(6));
    }
}

void Master::on_upgrade_deadline(evutil_socket_t, short, void* arg) {
    static_cast<Master*>(arg)->finish_upgrade(
        false,
        "the new master was not ready within " + std::to_string(kUpgradeTimeout.count()) + " s");
}

void Master::finish_upgrade(bool ok, const std::string& reason) {
    if (!upgrade_) return;
    UpgradeInProgress done = std::move(*upgrade_);
    upgrade_.reset();
    if (!ok) {
        ::kill(done.child, SIGKILL);
        return answer(done.requester, false, "upgrade failed: " + reason + "; still serving");
    }
    superseded_ = true;
    answer(done.requester, true,
           "upgraded: new master pid " + std::to_string(done.child) + " serves; old master " +
               std::to_string(::getpid()) + " drains");
    // The control socket path and the listening sockets now belong to the new master; dropping
    // our copies closes nothing it uses.
    control_->stop_listening();
    metrics_server_.reset();  // the new master answers scrapes and admin calls now
    admin_server_.reset();
    stopping_ = true;
    listeners_.close_all();
    for (auto& worker : workers_) {
        worker.draining = true;
        send_command(worker, "drain");
    }
    stop_deadline_.reset(evtimer_new(base_.get(), on_stop_deadline, this));
    timeval tv = to_timeval(config_.server.shutdown_timeout + std::chrono::seconds(2));
    event_add(stop_deadline_.get(), &tv);
    if (workers_.empty()) finish_stop();
}

// ---- new master -------------------------------------------------------------------------------

// Runtime backend changes kept only in memory (no state_file) would be lost with the old master:
// the new one takes them over and applies them over the config file it loaded.
void Master::adopt_backend_overlay(const nlohmann::json& header) {
    if (!header.contains("backend_overlay") || !config_.server.state_file.empty()) return;
    std::string error;
    auto overlay = config::BackendOverlay::from_json(header["backend_overlay"], error);
    if (!overlay || overlay->empty()) return;
    std::vector<std::string> skipped;
    auto result = config::load_with_overlay(source_text_, options_.config_path, *overlay, skipped);
    for (const auto& note : skipped) spdlog::warn("upgrade: {}", note);
    if (!result.config) {
        spdlog::error("upgrade: the runtime backend changes no longer apply: {}",
                      result.errors.front().format());
        return;
    }
    config_ = std::move(*result.config);
    source_config_ = config_;
    overlay_ = std::move(*overlay);
}

bool Master::receive_handoff(std::string& error) {
    handoff_.reset(options_.upgrade_fd);
    std::string message;
    std::vector<UniqueFd> fds;
    if (!receive_message(handoff_.get(), message, fds)) {
        error = "no handoff from the old master";
        return false;
    }
    auto header = nlohmann::json::parse(message, nullptr, false);
    if (header.is_discarded() || header.value("v", 0) != kHandoffVersion) {
        error = "unsupported handoff version from the old master";
        return false;
    }
    fds.clear();
    for (;;) {
        std::vector<UniqueFd> chunk;
        if (!receive_message(handoff_.get(), message, chunk)) {
            error = "the handoff broke off";
            return false;
        }
        if (message == "end") break;
        for (auto& fd : chunk) fds.push_back(std::move(fd));
    }
    if (fds.size() != header.value("fds", 0u) || fds.empty()) {
        error = "the handoff carried " + std::to_string(fds.size()) + " sockets, expected " +
                std::to_string(header.value("fds", 0u));
        return false;
    }
    if (fds.size() < 2u + header.value("rate_limits", false) + header.value("ticket_keys", false) +
                         header.value("metrics", false) + header.value("cache", false)) {
        error = "the handoff carried no shared memory";
        return false;
    }
    // Stored responses stay (prepare_cache makes a new store if the new config sizes it
    // differently).
    if (header.value("cache", false)) {
        cache_ = shm::CacheStore::attach(std::move(fds.back()));
        fds.pop_back();
        if (!cache_.valid())
            spdlog::warn("upgrade: the old cache has another layout; starting empty");
    }
    // Series keep counting where the old binary's workers left them.
    if (header.value("metrics", false)) {
        metrics_ = shm::MetricsRegion::attach(std::move(fds.back()));
        fds.pop_back();
    } else {
        metrics_ = shm::MetricsRegion::create("proxyd-metrics");
    }
    const auto counters = header.value("counters", nlohmann::json::object());
    worker_restarts_ = counters.value("worker_restarts", std::uint64_t{0});
    reloads_ok_ = counters.value("reloads_ok", std::uint64_t{0});
    reloads_failed_ = counters.value("reloads_failed", std::uint64_t{0});
    // Session tickets issued by the old binary's workers stay valid under the new one.
    if (header.value("ticket_keys", false)) {
        ticket_keys_ = shm::TicketKeyRegion::attach(std::move(fds.back()));
        fds.pop_back();
    } else {
        ticket_keys_ = shm::TicketKeyRegion::create("proxyd-ticket-keys");
    }
    if (header.value("rate_limits", false)) {
        rate_limits_ = shm::RateLimitRegion::attach(std::move(fds.back()));
        fds.pop_back();
    } else {
        rate_limits_ = shm::RateLimitRegion::create("proxyd-rate-limits");
    }
    upstream_state_ = shm::UpstreamState::attach(std::move(fds.back()));
    fds.pop_back();
    stats_ = shm::SharedStats::attach(std::move(fds.back()));
    fds.pop_back();
    if (!stats_.valid() || !upstream_state_.valid() || !rate_limits_.valid() ||
        !ticket_keys_.valid() || !metrics_.valid()) {
        error = "the shared memory from the old master has another layout";
        return false;
    }
    std::size_t next = 0;
    for (const auto& item : header["listeners"]) {
        ListenerTable::Entry entry;
        std::string text = item.value("address", "");
        std::size_t slots = item.value("slots", 0u);
        if (!config::parse_socket_address(text, entry.address, error) ||
            next + slots > fds.size()) {
            error = "bad listener in the handoff: " + text;
            return false;
        }
        for (std::size_t i = 0; i < slots; ++i) entry.slots.push_back(std::move(fds[next++]));
        listeners_.adopt(std::move(entry));
    }
    // The old master's workers keep their stats slots until they have drained.
    for (const auto& slot : header["stats_slots_in_use"]) {
        std::size_t index = slot.get<std::size_t>();
        if (index < stats_slot_used_.size()) {
            stats_slot_used_[index] = true;
            inherited_stats_slots_.push_back(index);
        }
    }
    generation_ = header.value("generation", 0) + 1;
    registry_.from_json(header.value("registry", nlohmann::json::object()));
    adopt_backend_overlay(header);
    // Addresses the new config adds are bound now; dropped ones stay until old workers are done.
    if (!listeners_.prepare(config_, error)) return false;
    listeners_.commit();
    return true;
}

void Master::complete_handoff() {
    std::string error;
    if (!open_control_socket(error) ||
        (!config_.server.pid_file.empty() &&
         !write_pid_file(config_.server.pid_file, ::getpid(), error))) {
        spdlog::error("upgrade: {}", error);
        net::send_with_fds(handoff_.get(), "error " + error, {});
        exit_status_ = 1;
        begin_stop(true);
        return;
    }
    // systemd learns the new main pid before the old master can exit: with an idle old
    // generation it may be gone a moment after "ready", and if systemd saw its main pid exit
    // first it would take the service as stopped.
    sd_notify("MAINPID=" + std::to_string(::getpid()));
    net::send_with_fds(handoff_.get(), "ready", {});
    handoff_.reset();
    announce_ready();
    // Free the old workers' stats slots for reuse once they can no longer be writing to them.
    release_stats_timer_.reset(evtimer_new(
        base_.get(),
        [](evutil_socket_t, short, void* arg) {
            auto* self = static_cast<Master*>(arg);
            for (auto index : self->inherited_stats_slots_) self->stats_slot_used_[index] = false;
            self->inherited_stats_slots_.clear();
        },
        this));
    timeval tv = to_timeval(config_.server.shutdown_timeout + std::chrono::seconds(10));
    event_add(release_stats_timer_.get(), &tv);
}

}  // namespace proxyd::master
