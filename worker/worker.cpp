#include "worker/worker.hpp"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/config/server_list.hpp"
#include "common/log.hpp"
#include "common/net/fd_passing.hpp"
#include "common/util/timeval.hpp"
#include "worker/client_connection.hpp"
#include "worker/privileges.hpp"
#include "worker/server_merge.hpp"

namespace proxyd::worker {

Worker::Worker(const WorkerOptions& options, event_base* base)
    : options_(options),
      config_(*options.config),
      base_(base),
      stats_(options.stats),
      pool_(base, *options.config, options.client_tls),
      h2_pool_(base, *options.config, pool_),
      selector_(*options.config, options.upstream_state, static_cast<std::size_t>(options.slot),
                options.stats_slot),
      access_(*options.config, options.rate_limits, base),
      metrics_(options.metrics, *options.config),
      scratch_request_(std::make_unique<http::Request>()),
      scratch_response_(std::make_unique<http::Response>()),
      cache_request_(std::make_unique<http::Request>()),
      encoded_response_(std::make_unique<http::Response>()),
      encoded_body_(make_evbuffer()) {
    tls_response_headers_ = config_.server.response_headers;
    if (!config_.tls.hsts.empty() &&
        !has_extra_header(&tls_response_headers_, "Strict-Transport-Security")) {
        tls_response_headers_.emplace_back("Strict-Transport-Security", config_.tls.hsts);
    }
}

void Worker::take_spare_encoder(Compressor& into) {
    if (into.has_gzip_state() || spare_encoders_.empty()) return;
    into = std::move(spare_encoders_.back());
    spare_encoders_.pop_back();
}

void Worker::keep_encoder(Compressor& from) {
    if (!from.has_gzip_state() || spare_encoders_.size() >= kSpareEncoders) return;
    spare_encoders_.push_back(std::move(from));
    from = Compressor();
}

Worker::~Worker() {
    // Connections unlink themselves as they close; close what is left, then free them.
    while (connections_) connections_->close();
    for (auto* connection : retired_) delete connection;
}

bool Worker::start(std::string& error) {
    for (int fd : options_.listen_fds) add_listener(-1, UniqueFd(fd));
    set_accepting(true);
    channel_event_.reset(
        event_new(base_, options_.channel_fd, EV_READ | EV_PERSIST, on_channel, this));
    event_add(channel_event_.get(), nullptr);
    for (int signal : {SIGTERM, SIGQUIT}) {
        EventPtr event(evsignal_new(base_, signal, on_signal, this));
        event_add(event.get(), nullptr);
        signal_events_.push_back(std::move(event));
    }
    reaper_.reset(event_new(base_, -1, 0, on_reap, this));
    if (!reaper_ || !channel_event_) {
        error = "event_new failed";
        return false;
    }
    return true;
}

void Worker::warn_redis_failure(const config::RateLimit& limit) {
    const auto now = std::chrono::steady_clock::now();
    ++redis_failures_unlogged_;
    if (now - last_redis_warning_ < std::chrono::seconds(1)) return;
    last_redis_warning_ = now;
    spdlog::warn("rate limit {}: Redis at {} failed {} time(s); on_redis_error = {}", limit.name,
                 limit.redis.text, redis_failures_unlogged_,
                 limit.redis_error_allow ? "allow" : "deny");
    redis_failures_unlogged_ = 0;
}

// A socket is TLS when its bound address is one of [tls] listen: the master hands sockets over
// (adoption, upgrades) without saying what they are for.
static bool bound_to_any(int fd, const std::vector<config::SocketAddress>& addresses) {
    sockaddr_storage local{};
    socklen_t len = sizeof local;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) return false;
    for (const auto& address : addresses) {
        if (address.length == len && std::memcmp(&address.storage, &local, len) == 0) return true;
    }
    return false;
}

bool Worker::is_tls_listener(int listen_fd) const {
    for (const auto& listening : listening_) {
        if (listening.fd.get() == listen_fd) return listening.tls;
    }
    return false;
}

void Worker::add_listener(int slot, UniqueFd fd) {
    Listening listening{slot, std::move(fd), nullptr};
    listening.tls = options_.server_tls && bound_to_any(listening.fd.get(), config_.tls.listen);
    listening.event.reset(
        event_new(base_, listening.fd.get(), EV_READ | EV_PERSIST, on_accept, this));
    if (accepting_) event_add(listening.event.get(), nullptr);
    listening_.push_back(std::move(listening));
}

// A sibling's socket adopted while its slot had no worker goes back: the slot's own worker polls
// it again, so this worker only forgets it (the master and the slot's worker keep it open).
void Worker::release_slot(int slot) {
    std::erase_if(listening_, [&](const Listening& l) { return l.slot == slot; });
}

void Worker::set_accepting(bool on) {
    if (on == accepting_ || draining_) return;
    for (auto& listening : listening_) {
        if (on) {
            event_add(listening.event.get(), nullptr);
        } else {
            event_del(listening.event.get());
        }
    }
    accepting_ = on;
}

void Worker::on_accept(evutil_socket_t fd, short, void* arg) {
    static_cast<Worker*>(arg)->accept_from(fd);
}

void Worker::accept_from(int listen_fd) {
    const bool tls = is_tls_listener(listen_fd);
    // A bounded batch per wake-up keeps one busy listener from starving the others.
    for (int i = 0; i < 64 && accepting_; ++i) {
        sockaddr_storage peer{};
        socklen_t len = sizeof peer;
        int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer), &len,
                           SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE) {
                spdlog::error("accept: {} (open connections: {})", std::strerror(errno),
                              open_connections_);
            }
            return;
        }
        tls::SslPtr ssl;
        if (tls) {
            // The handshake writes outside Stream::flush, so TLS sets TCP_NODELAY at once.
            set_tcp_nodelay(fd);
            if (!(ssl = options_.server_tls->accept(fd))) {
                ::close(fd);
                continue;
            }
        }
        auto* connection = new ClientConnection(*this, UniqueFd(fd), peer, std::move(ssl));
        connection->next = connections_;
        if (connections_) connections_->prev = connection;
        connections_ = connection;
        ++open_connections_;
        stats_->connections_active.fetch_add(1, std::memory_order_relaxed);
        stats_->connections_total.fetch_add(1, std::memory_order_relaxed);
        connection->start();
        if (open_connections_ >= static_cast<std::size_t>(config_.server.max_connections)) {
            set_accepting(false);  // the kernel queues the rest until a connection closes
        }
    }
}

void Worker::retire(ClientConnection* connection) {
    if (connection->prev) connection->prev->next = connection->next;
    if (connection->next) connection->next->prev = connection->prev;
    if (connections_ == connection) connections_ = connection->next;
    connection->prev = connection->next = nullptr;
    --open_connections_;
    stats_->connections_active.fetch_sub(1, std::memory_order_relaxed);
    retired_.push_back(connection);
    if (reaper_) event_active(reaper_.get(), 0, 1);
    if (!draining_ &&
        open_connections_ < static_cast<std::size_t>(config_.server.max_connections)) {
        set_accepting(true);
    }
}

void Worker::on_reap(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<Worker*>(arg);
    for (auto* connection : self->retired_) delete connection;
    self->retired_.clear();
    self->maybe_exit();
}

std::unique_ptr<Exchange> Worker::acquire_exchange() {
    return free_exchanges_.take();
}

void Worker::recycle_exchange(std::unique_ptr<Exchange> exchange) {
    exchange->reset();
    free_exchanges_.give_back(std::move(exchange));
}

void Worker::on_channel(evutil_socket_t fd, short, void* arg) {
    auto* self = static_cast<Worker*>(arg);
    std::string message;
    std::vector<UniqueFd> fds;
    if (!net::receive_with_fds(fd, message, fds, 4096)) {
        if (errno == EINTR || errno == EAGAIN) return;
        // The master is gone: nobody supervises us any more. Finish what is in flight and leave.
        self->channel_event_.reset();
        self->begin_drain(DrainMode::Stop);
        return;
    }
    self->handle_command(message, fds);
}

// Commands from the master, one per message (the channel is a SOCK_SEQPACKET pair):
//   drain | stop | quit | reopen | adopt SLOT (+ fds) | release SLOT | servers (+ memfd)
void Worker::handle_command(std::string_view command, std::vector<UniqueFd>& fds) {
    auto space = command.find(' ');
    std::string_view verb = command.substr(0, space);
    int slot = space == std::string_view::npos
                   ? -1
                   : std::atoi(std::string(command.substr(space + 1)).c_str());
    if (verb == "quit") {
        stop_now();
    } else if (verb == "drain") {
        begin_drain(DrainMode::Handover);
    } else if (verb == "stop") {
        begin_drain(DrainMode::Stop);
    } else if (verb == "reopen") {
        std::string error;
        log::setup_error_log(config_.log, "worker " + std::to_string(options_.slot), error);
        if (!log::setup_access_log(config_.log, error))
            spdlog::error("reopen access log: {}", error);
    } else if (verb == "adopt" && slot >= 0 && !draining_) {
        for (auto& fd : fds) add_listener(slot, std::move(fd));
        spdlog::info("polling the sockets of slot {} while it has no worker", slot);
    } else if (verb == "release" && slot >= 0) {
        release_slot(slot);
    } else if (verb == "servers" && fds.size() == 1) {
        replace_servers(fds[0].get());
    }
}

// The list comes in a memfd: it may be larger than a channel message. Every worker got the
// same open file, so it is read with pread (the file offset is shared).
void Worker::replace_servers(int fd) {
    std::string text;
    char buffer[65536];
    for (off_t offset = 0;;) {
        ssize_t n = ::pread(fd, buffer, sizeof buffer, offset);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        text.append(buffer, static_cast<std::size_t>(n));
        offset += n;
    }
    std::string error;
    auto list = config::decode_server_list(text, error);
    if (!list || list->upstream >= config_.upstreams.size()) {
        spdlog::error("servers command ignored: {}", error.empty() ? "unknown upstream" : error);
        return;
    }
    auto& upstream = config_.upstreams[list->upstream];
    merge_servers(upstream.servers, std::move(list->servers));
    selector_.servers_changed(list->upstream);
    if (!pool_.servers_changed(list->upstream, error)) {
        spdlog::error("upstream {}: {}", upstream.name, error);
    }
    spdlog::debug("upstream {}: {} server(s) after a runtime change", upstream.name,
                  upstream.servers.size());
}

void Worker::on_signal(evutil_socket_t signal, short, void* arg) {
    auto* self = static_cast<Worker*>(arg);
    if (signal == SIGQUIT) {
        self->stop_now();
    } else {
        self->begin_drain(DrainMode::Stop);
    }
}

void Worker::begin_drain(DrainMode mode) {
    if (draining_) {
        if (mode == DrainMode::Stop) {
            for (ClientConnection* c = connections_; c;) {
                ClientConnection* next = c->next;
                c->begin_drain(true);
                c = next;
            }
        }
        return;
    }
    set_accepting(false);
    draining_ = true;
    // The master keeps its own copies of the listening sockets; ours must go so that, if the
    // master is gone, the sockets close and clients are refused rather than queued forever.
    listening_.clear();
    pool_.close_all_idle();
    h2_pool_.close_all_idle();
    spdlog::info("draining {} connection(s)", open_connections_);
    for (ClientConnection* c = connections_; c;) {
        ClientConnection* next = c->next;
        c->begin_drain(mode == DrainMode::Stop);
        c = next;
    }
    drain_deadline_.reset(evtimer_new(base_, on_drain_deadline, this));
    timeval tv = to_timeval(config_.server.shutdown_timeout);
    event_add(drain_deadline_.get(), &tv);
    if (reaper_) event_active(reaper_.get(), 0, 1);
}

void Worker::on_drain_deadline(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<Worker*>(arg);
    spdlog::warn("shutdown_timeout reached with {} connection(s) open; closing them",
                 self->open_connections_);
    for (ClientConnection* c = self->connections_; c;) {
        ClientConnection* next = c->next;
        c->going_away();
        c = next;
    }
    self->stop_now();
}

void Worker::maybe_exit() {
    if (draining_ && open_connections_ == 0) event_base_loopexit(base_, nullptr);
}

void Worker::stop_now() {
    event_base_loopbreak(base_);
}

static void prepare_process(int slot) {
    // Exit with the master: it is the only one who can supervise us.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    std::string name = "proxyd: worker " + std::to_string(slot);
    ::prctl(PR_SET_NAME, name.c_str());
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    for (int signal : {SIGPIPE, SIGHUP, SIGINT, SIGUSR1, SIGUSR2})
        ::sigaction(signal, &ignore, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

int run_worker(const WorkerOptions& options) {
    prepare_process(options.slot);
    std::string error;
    log::setup_error_log(options.config->log, "worker " + std::to_string(options.slot), error);
    if (!log::setup_access_log(options.config->log, error)) {
        spdlog::error("access log {}: {}", options.config->log.access_log, error);
        return 1;
    }
    if (!drop_privileges(options.config->server, error)) {
        spdlog::error("worker cannot run as user {}: {}", options.config->server.user, error);
        return 1;
    }
    EventBasePtr base(event_base_new());
    if (!base) return 1;
    int status = 0;
    {
        Worker worker(options, base.get());
        if (!worker.start(error)) {
            spdlog::error("worker start: {}", error);
            return 1;
        }
        if (!net::send_with_fds(options.channel_fd, "ready", {})) return 1;
        if (::getppid() != options.master_pid) {
            worker.begin_drain(Worker::DrainMode::Stop);  // the master died before PDEATHSIG
        }
        event_base_dispatch(base.get());
    }
    log::shutdown();
    return status;
}

}  // namespace proxyd::worker
