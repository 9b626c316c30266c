// What a connection must pass before it has a request at all: the PROXY protocol header (plain,
// or in front of a TLS ClientHello) and the slow-client rule on the head's arrival. A head that
// breaks the rule is answered 408 through a bare request flow (reject()); the access phases of a
// request (CORS, JWT, rate limits) are the flow's (request_flow_access.cpp).
#include <arpa/inet.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "common/net/proxy_protocol.hpp"
#include "worker/client_connection.hpp"
#include "worker/worker.hpp"

namespace proxyd::worker {

namespace {

std::chrono::milliseconds elapsed_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 start);
}

}  // namespace

// ---- before the head: PROXY protocol ----------------------------------------------------------

// True once the header is consumed (or none is expected); false to wait for more bytes, or when
// the connection was closed for sending something else.
bool ClientConnection::read_proxy_header() {
    if (!awaiting_proxy_header_) return true;
    evbuffer* in = stream_.in();
    const std::size_t len = evbuffer_get_length(in);
    const std::size_t window = std::min(len, net::kProxyV2MaxPayload + 16);
    const auto* data =
        reinterpret_cast<const char*>(evbuffer_pullup(in, static_cast<ev_ssize_t>(window)));
    net::ProxyHeader header;
    switch (net::parse_proxy_header(data, window, header)) {
        case net::ProxyHeaderStatus::Incomplete:
            if (client_eof_) close();
            return false;
        case net::ProxyHeaderStatus::Error:
            // Nothing we could answer would reach a client: the balancer in front speaks PROXY.
            spdlog::debug("connection from {}: no valid PROXY protocol header ({})", peer_ip_,
                          header.error);
            close();
            return false;
        case net::ProxyHeaderStatus::Done:
            break;
    }
    if (!header.local) set_peer(header.source);
    evbuffer_drain(in, header.length);
    awaiting_proxy_header_ = false;
    return true;
}

// On a TLS listener the PROXY header precedes the ClientHello, and OpenSSL must see the socket
// from the first byte after it: so the header is peeked, and exactly its length consumed.
void ClientConnection::read_proxy_header_before_tls() {
    char data[net::kProxyV2MaxPayload + 16];
    ssize_t n = ::recv(stream_.fd(), data, sizeof data, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) return close();
    net::ProxyHeader header;
    switch (net::parse_proxy_header(data, static_cast<std::size_t>(n), header)) {
        case net::ProxyHeaderStatus::Incomplete:
            if (static_cast<std::size_t>(n) == sizeof data) return close();
            // The rest is still on its way; the socket stays readable meanwhile, so look again
            // shortly instead of spinning on it (the head timer bounds the wait).
            stream_.enable_read(false);
            if (!proxy_retry_timer_) {
                proxy_retry_timer_.reset(evtimer_new(
                    worker_.base(),
                    [](evutil_socket_t, short, void* arg) {
                        auto* self = static_cast<ClientConnection*>(arg);
                        self->stream_.enable_read(true);
                    },
                    this));
            }
            {
                timeval retry{0, 10'000};
                event_add(proxy_retry_timer_.get(), &retry);
            }
            return;
        case net::ProxyHeaderStatus::Error:
            spdlog::debug("connection from {}: no valid PROXY protocol header ({})", peer_ip_,
                          header.error);
            return close();
        case net::ProxyHeaderStatus::Done:
            break;
    }
    if (::recv(stream_.fd(), data, header.length, 0) != static_cast<ssize_t>(header.length)) {
        return close();
    }
    if (!header.local) set_peer(header.source);
    awaiting_proxy_header_ = false;
    proxy_retry_timer_.reset();
    stream_.start_tls(std::move(tls_after_proxy_header_), false);
}

// ---- slow clients -----------------------------------------------------------------------------

// The head timer: the whole head must arrive within timeouts.header, and after min_rate_grace at
// no less than limits.min_request_rate bytes per second counted from the grace's end — so a
// slowloris client trickling a byte a second is cut after about the grace, not the full timeout,
// while a normal head (one packet) never meets the rule.
void ClientConnection::on_head_timer() {
    if ((evbuffer_get_length(stream_.in()) == 0 && !head_timer_armed_) || awaiting_proxy_header_) {
        // Idle keep-alive or never-used connection, or a balancer that never finished its PROXY
        // header: nothing to answer, nobody to answer to.
        close();
        return;
    }
    const auto& server = worker_.config().server;
    const auto elapsed = elapsed_since(head_started_);
    if (!head_timer_armed_ || elapsed >= server.timeouts.header) {
        reject(Failure::HeadTimeout);
        return;
    }
    const std::size_t rate = server.limits.min_request_rate;
    const std::size_t received = evbuffer_get_length(stream_.in());
    const auto allowed =
        server.timeouts.min_rate_grace +
        std::chrono::milliseconds(received * 1000 / std::max<std::size_t>(rate, 1));
    if (rate > 0 && elapsed >= allowed) {
        reject(Failure::HeadTimeout, "request head arriving too slowly");
        return;
    }
    auto next = std::min<std::chrono::milliseconds>(server.timeouts.header,
                                                    rate > 0 ? allowed : server.timeouts.header);
    next = std::max(next - elapsed, std::chrono::milliseconds(50));
    stream_.arm_timer(next);
}

}  // namespace proxyd::worker
