#include "master/health_checker.hpp"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "common/http/parser.hpp"
#include "common/util/event_ptr.hpp"
#include "common/util/timeval.hpp"
#include "common/version.hpp"

namespace proxyd::master {

// One server's probe loop: connect, send the request, read the status line, judge, repeat.
struct HealthChecker::Probe {
    HealthChecker* owner = nullptr;
    std::string upstream;
    std::string server_id;
    config::SocketAddress address;
    config::UpstreamServer server;  // for TLS: its name, CA and verification
    const tls::ClientTls* tls = nullptr;
    config::HealthCheck check;
    std::uint32_t state_index = 0;
    int successes = 0;
    int failures = 0;
    EventPtr interval_timer;
    EventPtr timeout_timer;
    bufferevent* connection = nullptr;

    ~Probe() { drop_connection(); }

    void schedule(std::chrono::milliseconds delay) {
        timeval tv = to_timeval(delay);
        event_add(interval_timer.get(), &tv);
    }

    void drop_connection() {
        if (connection) bufferevent_free(connection);
        connection = nullptr;
        if (timeout_timer) event_del(timeout_timer.get());
    }

    void start() {
        drop_connection();
        if (server.tls) {
            std::string error;
            tls::SslPtr ssl = tls ? tls->connect(server, -1, nullptr, error) : nullptr;
            if (!ssl) return finish(false, tls ? error : "TLS is not set up");
            // The bufferevent owns the SSL from here (BEV_OPT_CLOSE_ON_FREE frees it).
            connection = bufferevent_openssl_socket_new(
                owner->base_, -1, ssl.release(), BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
        } else {
            connection = bufferevent_socket_new(owner->base_, -1, BEV_OPT_CLOSE_ON_FREE);
        }
        if (connection == nullptr) return finish(false, "cannot create a connection");
        bufferevent_setcb(connection, on_read, nullptr, on_event, this);
        bufferevent_enable(connection, EV_READ | EV_WRITE);
        timeval tv = to_timeval(check.timeout);
        event_add(timeout_timer.get(), &tv);
        std::string request =
            check.method + " " + check.path + " HTTP/1.1\r\nHost: " + address.text +
            "\r\nUser-Agent: proxyd-health-check/" + kVersion + "\r\nConnection: close\r\n\r\n";
        bufferevent_write(connection, request.data(), request.size());
        if (bufferevent_socket_connect(connection,
                                       reinterpret_cast<const sockaddr*>(&address.storage),
                                       static_cast<int>(address.length)) != 0) {
            finish(false, "connect failed");
        }
    }

    static void on_read(bufferevent* bev, void* arg) {
        auto* probe = static_cast<Probe*>(arg);
        evbuffer* input = bufferevent_get_input(bev);
        std::size_t len = evbuffer_get_length(input);
        auto* data = reinterpret_cast<const char*>(evbuffer_pullup(input, -1));
        http::Response response;
        switch (http::parse_response(data, len, 64 * 1024, false, response)) {
            case http::ParseStatus::Incomplete:
                if (len > 64 * 1024) probe->finish(false, "response head too large");
                return;
            case http::ParseStatus::Error:
                probe->finish(false, response.error_reason);
                return;
            case http::ParseStatus::Done:
                break;
        }
        const auto& expected = probe->check.expected_status;
        bool ok = std::find(expected.begin(), expected.end(), response.status) != expected.end();
        probe->finish(ok, "status " + std::to_string(response.status));
    }

    static void on_event(bufferevent* bev, short what, void* arg) {
        auto* probe = static_cast<Probe*>(arg);
        if (what & BEV_EVENT_CONNECTED) return;
        if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
            std::string detail = (what & BEV_EVENT_EOF) ? "closed without a response"
                                                        : std::strerror(EVUTIL_SOCKET_ERROR());
            if (probe->server.tls) {
                if (unsigned long tls_error = bufferevent_get_openssl_error(bev)) {
                    char text[256];
                    ERR_error_string_n(tls_error, text, sizeof text);
                    detail = std::string("TLS: ") + text;
                }
            }
            probe->finish(false, detail);
        }
    }

    static void on_timeout(evutil_socket_t, short, void* arg) {
        static_cast<Probe*>(arg)->finish(false, "timed out");
    }

    static void on_interval(evutil_socket_t, short, void* arg) {
        static_cast<Probe*>(arg)->start();
    }

    // Thresholds turn single results into state changes, so one lost probe does not flap.
    void finish(bool ok, const std::string& detail) {
        drop_connection();
        auto& state = (*owner->state_)->servers[state_index];
        bool healthy = state.unhealthy.load(std::memory_order_relaxed) == 0;
        if (ok) {
            failures = 0;
            if (!healthy && ++successes >= check.healthy_threshold) {
                state.healthy_since_ms.store(shm::monotonic_ms(), std::memory_order_relaxed);
                state.unhealthy.store(0, std::memory_order_release);
                spdlog::warn("upstream {} server {} is healthy again ({})", upstream, server_id,
                             detail);
            }
        } else {
            successes = 0;
            if (healthy && ++failures >= check.unhealthy_threshold) {
                state.unhealthy.store(1, std::memory_order_release);
                spdlog::error("upstream {} server {} is unhealthy: {}", upstream, server_id,
                              detail);
            }
        }
        schedule(check.interval);
    }
};

HealthChecker::HealthChecker(event_base* base, shm::UpstreamState& state)
    : base_(base), state_(&state) {}

HealthChecker::~HealthChecker() = default;

void HealthChecker::configure(const config::Config& config, const tls::ClientTls* tls) {
    probes_.clear();
    for (const auto& upstream : config.upstreams) {
        if (!upstream.health_check.enabled) continue;
        for (const auto& server : upstream.servers) {
            auto probe = std::make_unique<Probe>();
            probe->owner = this;
            probe->upstream = upstream.name;
            probe->server_id = server.id;
            probe->address = server.address;
            probe->server = server;
            probe->tls = tls;
            probe->check = upstream.health_check;
            probe->state_index = server.state_index;
            probe->interval_timer.reset(evtimer_new(base_, Probe::on_interval, probe.get()));
            probe->timeout_timer.reset(evtimer_new(base_, Probe::on_timeout, probe.get()));
            probe->start();
            probes_.push_back(std::move(probe));
        }
    }
}

}  // namespace proxyd::master
