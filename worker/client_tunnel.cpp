// The tunnel phase of an HTTP/1.1 connection: a WebSocket handshake the upstream answered with
// 101 leaves HTTP behind, and the connection pair carries bytes both ways, unparsed and
// unbuffered beyond the watermarks, until either side closes or `timeouts.tunnel_idle` passes
// without a byte. A draining worker leaves tunnels alone: they end by themselves or at the drain
// deadline (shutdown_timeout).
//
// The hand-over: the request flow gives its upstream connection to the connection
// (start_tunnel), which becomes that connection's user. The flow keeps its request: the server
// stays counted as active (least_conn sees tunnels) until the tunnel ends, and then the flow
// writes the request's log line (end_tunnel, from close()), with status 101 and the bytes of the
// whole tunnel as the connection counted them.
#include <sys/random.h>

#include "worker/client_connection.hpp"
#include "worker/worker.hpp"

namespace proxyd::worker {

namespace {

// Bytes read per event in a tunnel, and the output above which the sending side is not read.
constexpr std::size_t kTunnelReadSize = 64 * 1024;
constexpr std::size_t kTunnelHighWatermark = 256 * 1024;

}  // namespace

void ClientConnection::start_tunnel(UpstreamPtr upstream) {
    phase_ = Phase::Tunneling;
    request_->tunnel_upstream = std::move(upstream);
    request_->tunnel_upstream->user = this;
    worker_.stats().tunnels_active.fetch_add(1, std::memory_order_relaxed);
    stream_.cancel_timer();  // the tunnel's idle timer runs on the upstream side
    pump_tunnel();
}

// Moves what either side sent to the other, then reads only from sides whose peer can take more.
void ClientConnection::pump_tunnel() {
    auto& upstream = request_->tunnel_upstream->stream;
    const std::size_t up = evbuffer_get_length(stream_.in());
    const std::size_t down = evbuffer_get_length(upstream.in());
    if (up > 0) {
        request_->frames_to_upstream.feed(stream_.in());
        evbuffer_add_buffer(upstream.out(), stream_.in());
    }
    if (down > 0) {
        request_->frames_to_client.feed(upstream.in());
        evbuffer_add_buffer(stream_.out(), upstream.in());
    }
    request_->wire.in += up;
    request_->wire.out += down;
    if (!upstream.flush() || !stream_.flush()) return close();
    // A side that closed ends the tunnel once what it sent has reached the other side.
    if ((client_eof_ && upstream.pending_output() == 0) ||
        (request_->tunnel_upstream_eof && stream_.pending_output() == 0)) {
        return close();
    }
    stream_.enable_read(!client_eof_ && upstream.pending_output() < kTunnelHighWatermark);
    upstream.enable_read(!request_->tunnel_upstream_eof &&
                         stream_.pending_output() < kTunnelHighWatermark);
    upstream.arm_timer(worker_.config().server.timeouts.tunnel_idle);
}

void ClientConnection::going_away() {
    if (phase_ != Phase::Tunneling) return;  // the process exits: the kernel closes the rest
    auto& upstream = request_->tunnel_upstream->stream;
    if (request_->frames_to_client.at_boundary()) {
        std::uint8_t frame[4];
        evbuffer_add(stream_.out(), frame, going_away_frame_to_client(frame));
    }
    if (request_->frames_to_upstream.at_boundary()) {
        std::uint32_t mask = 0x5a17c0de;
        if (::getrandom(&mask, sizeof mask, GRND_NONBLOCK) != sizeof mask) mask ^= 0x9e3779b9;
        std::uint8_t frame[8];
        evbuffer_add(upstream.out(), frame, going_away_frame_to_server(frame, mask));
    }
    // One write each, as far as the sockets take it; the kernel sends the rest after the close.
    (void)upstream.flush();
    (void)stream_.flush();
    close();
}

void ClientConnection::on_tunnel_client_readable() {
    switch (stream_.read(kTunnelReadSize)) {
        case Stream::ReadResult::Data:
        case Stream::ReadResult::WouldBlock:
            break;
        case Stream::ReadResult::Eof:
            client_eof_ = true;
            break;
        case Stream::ReadResult::Error:
            return close();
    }
    pump_tunnel();
}

void ClientConnection::on_upstream_readable() {
    switch (request_->tunnel_upstream->stream.read(kTunnelReadSize)) {
        case Stream::ReadResult::Data:
        case Stream::ReadResult::WouldBlock:
            break;
        case Stream::ReadResult::Eof:
            request_->tunnel_upstream_eof = true;
            break;
        case Stream::ReadResult::Error:
            return close();
    }
    pump_tunnel();
}

void ClientConnection::on_upstream_writable() {
    pump_tunnel();
}

void ClientConnection::on_upstream_timeout() {
    close();  // tunnel_idle passed without a byte either way
}

}  // namespace proxyd::worker
