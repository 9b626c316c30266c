#include "worker/client_connection.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <string>

#include "worker/chunk_framing.hpp"
#include "worker/worker.hpp"

namespace proxyd::worker {
namespace {

constexpr std::size_t kHeadReadSize = 16 * 1024;
constexpr std::size_t kBodyReadSize = 64 * 1024;
constexpr std::size_t kMaxLingerBytes = 1024 * 1024;
constexpr std::chrono::milliseconds kLingerTime{2000};
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

}  // namespace

void Http1Request::reset() {
    version_minor = 1;
    keep_alive = true;
    expect_continue = false;
    head_length = 0;
    body = http::BodyKind::None;
    body_remaining = body_bytes = 0;
    body_chunks.reset();
    body_done = true;
    framing = Framing::None;
    response_keep_alive = false;
    wire = {};
    tunnel_upstream.reset();
    tunnel_upstream_eof = false;
    frames_to_upstream = {};
    frames_to_client = {};
}

ClientConnection::ClientConnection(Worker& worker, UniqueFd fd, const sockaddr_storage& peer,
                                   tls::SslPtr ssl)
    : worker_(worker), awaiting_proxy_header_(worker.config().server.proxy_protocol) {
    stream_.open(worker.base(), std::move(fd), on_read_event, on_write_event, on_timer_event, this);
    if (!ssl) {
        stream_.defer_nodelay();
    } else {
        tls_ = true;
        if (awaiting_proxy_header_) {
            tls_after_proxy_header_ = std::move(ssl);
        } else {
            stream_.start_tls(std::move(ssl), false);
        }
    }
    set_peer(peer);
}

// The client's address for logs, forwarding headers and keys: the TCP peer, or the source of a
// PROXY protocol header. Other families (a LOCAL header's AF_UNSPEC) leave it unchanged.
void ClientConnection::set_peer(const sockaddr_storage& peer) {
    if (peer.ss_family == AF_INET) {
        auto* v4 = reinterpret_cast<const sockaddr_in*>(&peer);
        ::inet_ntop(AF_INET, &v4->sin_addr, peer_ip_, sizeof peer_ip_);
        peer_port_ = ntohs(v4->sin_port);
    } else if (peer.ss_family == AF_INET6) {
        auto* v6 = reinterpret_cast<const sockaddr_in6*>(&peer);
        ::inet_ntop(AF_INET6, &v6->sin6_addr, peer_ip_, sizeof peer_ip_);
        peer_port_ = ntohs(v6->sin6_port);
    }
}

ClientConnection::~ClientConnection() {
    if (request_) end_request();
}

void ClientConnection::start() {
    stream_.enable_read(true);
    stream_.arm_timer(worker_.config().server.timeouts.header);
}

void ClientConnection::begin_drain(bool close_idle) {
    if (phase_ == Phase::Http2) {
        h2_->begin_drain();
        return;
    }
    close_after_response_ = true;
    if (close_idle && phase_ == Phase::WaitingHead && evbuffer_get_length(stream_.in()) == 0) {
        close();
    }
}

void ClientConnection::close() {
    if (phase_ == Phase::Closed) return;
    if (phase_ == Phase::Tunneling) {
        // However it ends (either side, idle, the drain deadline), a tunnel is logged once.
        worker_.stats().tunnels_active.fetch_sub(1, std::memory_order_relaxed);
        request_->flow.end_tunnel();
    }
    if (phase_ == Phase::Http2) h2_->drop_streams();  // h2_ itself lives as long as this object
    phase_ = Phase::Closed;
    proxy_retry_timer_.reset();
    if (request_) {
        request_->flow.abandon();
        end_request();
    }
    stream_.close();
    worker_.retire(this);
}

// ---- events -------------------------------------------------------------------------------

void ClientConnection::on_read_event(evutil_socket_t, short, void* arg) {
    static_cast<ClientConnection*>(arg)->on_readable();
}

void ClientConnection::on_write_event(evutil_socket_t, short, void* arg) {
    static_cast<ClientConnection*>(arg)->on_writable();
}

void ClientConnection::on_timer_event(evutil_socket_t, short, void* arg) {
    static_cast<ClientConnection*>(arg)->on_timer();
}

void ClientConnection::on_readable() {
    if (tls_after_proxy_header_) return read_proxy_header_before_tls();
    if (phase_ == Phase::Tunneling) return on_tunnel_client_readable();
    if (phase_ == Phase::Http2) {
        if (!h2_->on_readable()) close();
        return;
    }
    if (phase_ == Phase::Lingering) {
        auto result = stream_.read(kHeadReadSize);
        std::size_t buffered = evbuffer_get_length(stream_.in());
        evbuffer_drain(stream_.in(), buffered);
        if (result == Stream::ReadResult::Eof || result == Stream::ReadResult::Error ||
            buffered > kMaxLingerBytes) {
            close();
        }
        return;
    }
    const bool body = request_ && !request_->body_done;
    switch (stream_.read(body ? kBodyReadSize : kHeadReadSize)) {
        case Stream::ReadResult::Data:
        case Stream::ReadResult::WouldBlock:
            break;
        case Stream::ReadResult::Eof:
            client_eof_ = true;  // no keep-alive after this request
            stream_.enable_read(false);
            if (!request_) {
                close();
            } else if (!request_->body_done) {
                request_->flow.fail(Failure::ClientGone);
            }
            return;
        case Stream::ReadResult::Error:
            if (request_) {
                request_->flow.fail(Failure::ClientGone);
            } else {
                close();
            }
            return;
    }
    process_input();
}

void ClientConnection::process_input() {
    if (phase_ == Phase::WaitingHead) {
        read_request_head();
        return;
    }
    if (phase_ != Phase::Exchanging) return;
    if (!request_->body_done && request_->flow.take_request_body()) return;
    const std::size_t buffered = evbuffer_get_length(stream_.in());
    if (buffered > kHighWatermark ||
        (request_->body_done && buffered > worker_.config().server.limits.max_header_size)) {
        // Body waiting for a connect, or pipelined requests piling up: read no further for now.
        stream_.enable_read(false);
    }
}

void ClientConnection::on_writable() {
    if (phase_ == Phase::Tunneling) return pump_tunnel();
    if (phase_ == Phase::Http2) {
        if (!h2_->on_writable()) close();
        return;
    }
    if (!stream_.flush()) {
        if (request_) {
            request_->flow.fail(Failure::ClientGone);
        } else {
            close();
        }
        return;
    }
    const std::size_t pending = stream_.pending_output();
    if (phase_ == Phase::Lingering) {
        if (pending == 0) start_lingering_close();
        return;
    }
    if (pending < kLowWatermark && request_) request_->flow.on_response_drained();
}

void ClientConnection::on_timer() {
    switch (phase_) {
        case Phase::WaitingHead:
            on_head_timer();
            return;
        case Phase::Exchanging:
            if (!request_->body_done) {
                request_->flow.fail(Failure::BodyTimeout);
            } else {
                request_->flow.fail(Failure::ClientGone, "client stopped reading");
            }
            return;
        case Phase::Http2:
            if (!h2_->on_idle_timer()) close();
            return;
        case Phase::Tunneling:
        case Phase::Lingering:
        case Phase::Closed:
            close();
            return;
    }
}

// ---- the request head -------------------------------------------------------------------------

void ClientConnection::read_request_head() {
    evbuffer* in = stream_.in();
    if (evbuffer_get_length(in) == 0) {
        if (client_eof_) close();
        return;
    }
    const auto& server = worker_.config().server;
    if (!head_timer_armed_) {
        head_started_ = std::chrono::steady_clock::now();
        head_timer_armed_ = true;
        // A keep-alive connection's next head nearly always comes whole in one read: its timer
        // is set only if it does not (the keep-alive timer runs meanwhile), which saves a timer
        // change per request.
        head_timer_deferred_ = !first_request_ && !awaiting_proxy_header_;
        if (!head_timer_deferred_) arm_head_timer();
    }
    if (!read_proxy_header()) return;
    std::size_t len = evbuffer_get_length(in);
    if (len == 0) return;
    if (first_request_) {
        bool wait = false;
        if (speaks_h2(wait)) return start_h2();
        if (wait) return;
    }
    std::size_t window =
        std::min(len, std::max(server.limits.max_header_size, server.limits.max_uri_size) + 1024);
    auto* data =
        reinterpret_cast<const char*>(evbuffer_pullup(in, static_cast<ev_ssize_t>(window)));
    http::Request& request = worker_.scratch_request();
    http::RequestLimits limits{server.limits.max_header_size, server.limits.max_uri_size};
    const http::ParseStatus status = http::parse_request(data, window, limits, request);
    if (status != http::ParseStatus::Done && head_timer_deferred_) arm_head_timer();
    switch (status) {
        case http::ParseStatus::Incomplete:
            if (request.error_status != 0) {
                reject(Failure::BadRequest, request.error_reason, request.error_status);
            } else if (client_eof_) {
                close();
            }
            return;
        case http::ParseStatus::Error:
            reject(Failure::BadRequest, request.error_reason, request.error_status);
            return;
        case http::ParseStatus::Done:
            begin_request(request);
            return;
    }
}

void ClientConnection::arm_head_timer() {
    const auto& server = worker_.config().server;
    head_timer_deferred_ = false;
    stream_.arm_timer(server.limits.min_request_rate > 0
                          ? std::min(server.timeouts.header, server.timeouts.min_rate_grace)
                          : server.timeouts.header);
}

// A parsed head: the HTTP/1.1 side of the request is noted, and its flow takes it from here.
void ClientConnection::begin_request(const http::Request& request) {
    head_timer_armed_ = false;
    head_timer_deferred_ = false;
    first_request_ = false;
    phase_ = Phase::Exchanging;
    Http1Request& r = new_request();
    r.version_minor = request.version_minor;
    r.keep_alive = request.keep_alive;
    r.expect_continue = request.expect_continue;
    r.head_length = request.head_length;
    r.body = request.body;
    r.body_remaining = request.content_length;
    r.body_done = request.body == http::BodyKind::None;
    r.wire.in = request.head_length;
    r.flow.start(request);
}

// HTTP/2 is the ALPN choice on TLS, or, with server.h2c on a plain listener, the client's first
// bytes are the connection preface (prior knowledge, RFC 9113 3.3). An HTTP/1.1 request line can
// never start with "PRI * HTTP/2.0".
bool ClientConnection::speaks_h2(bool& wait) {
    if (tls_) {
        const unsigned char* protocol = nullptr;
        unsigned int length = 0;
        SSL_get0_alpn_selected(stream_.ssl(), &protocol, &length);
        return length == 2 && protocol[0] == 'h' && protocol[1] == '2';
    }
    if (!worker_.config().server.h2c) return false;
    const std::size_t len = std::min(evbuffer_get_length(stream_.in()), kH2Preface.size());
    const auto* data =
        reinterpret_cast<const char*>(evbuffer_pullup(stream_.in(), static_cast<ev_ssize_t>(len)));
    if (std::string_view(data, len) != kH2Preface.substr(0, len)) return false;
    wait = len < kH2Preface.size();
    return !wait;
}

void ClientConnection::start_h2() {
    first_request_ = false;
    head_timer_armed_ = false;
    stream_.cancel_timer();
    phase_ = Phase::Http2;
    h2_ = std::make_unique<H2Client>(worker_, *this, stream_, peer_ip_, peer_port_, tls_);
    if (!h2_->start()) close();
}

// No head to give a flow (it did not parse, or did not come in time): a bare one answers.
void ClientConnection::reject(Failure failure, std::string_view detail, int parser_status) {
    phase_ = Phase::Exchanging;
    Http1Request& r = new_request();
    r.body_done = false;  // whatever was sent is unread
    r.wire.in = evbuffer_get_length(stream_.in());
    r.flow.fail(failure, detail, parser_status);
}

Http1Request& ClientConnection::new_request() {
    request_ = worker_.http1_requests().take(worker_);
    request_->flow.attach(*this);
    return *request_;
}

// The request has ended and its flow let go of everything: back to the worker's free list.
void ClientConnection::end_request() {
    request_->reset();
    worker_.http1_requests().give_back(std::move(request_));
}

void ClientConnection::release_request_head() {
    drop_request_head();
    stream_.cancel_timer();  // the head's time limit; the body's starts in accept_request_body
}

// An answer that comes while the head is still in the input buffer (404, 401, a preflight)
// consumes it first, so that what follows it is read as the next request.
void ClientConnection::drop_request_head() {
    evbuffer_drain(stream_.in(), request_->head_length);
    request_->head_length = 0;
}

// ---- the request body -------------------------------------------------------------------------

bool ClientConnection::accept_request_body() {
    if (request_->body_done) {
        stream_.cancel_timer();
        return true;
    }
    if (request_->expect_continue && request_->version_minor >= 1) {
        evbuffer_add(stream_.out(), kContinue.data(), kContinue.size());
        if (!stream_.flush()) return false;
    }
    stream_.arm_timer(worker_.config().server.timeouts.body);
    return true;
}

RequestBodyInput ClientConnection::request_body() {
    if (request_->body == http::BodyKind::Chunked) return chunked_request_body();
    RequestBodyInput input;
    input.buffer = stream_.in();
    input.ready = static_cast<std::size_t>(
        std::min<std::uint64_t>(request_->body_remaining, evbuffer_get_length(stream_.in())));
    if (input.ready == request_->body_remaining) {
        input.state = RequestBodyInput::State::Complete;
        if (input.ready == 0) {
            request_->body_done = true;
            stream_.cancel_timer();
        }
    }
    return input;
}

// The chunk framing is parsed off the front of the input until data is at its front, the body
// ended, or more input is needed; the data stays where it is for the flow to move.
RequestBodyInput ClientConnection::chunked_request_body() {
    RequestBodyInput input;
    evbuffer* in = input.buffer = stream_.in();
    auto& decoder = request_->body_chunks;
    const auto max_body = worker_.config().server.limits.max_body_size;
    while (evbuffer_get_length(in) > 0) {
        if (decoder.in_data()) {
            input.ready = static_cast<std::size_t>(
                std::min<std::uint64_t>(decoder.data_remaining(), evbuffer_get_length(in)));
            if (request_->body_bytes + input.ready > max_body) {
                input.ready = 0;
                input.state = RequestBodyInput::State::TooLarge;
            }
            return input;
        }
        auto result = parse_framing_front(in, decoder);
        if (result.error) {
            input.state = RequestBodyInput::State::Invalid;
            return input;
        }
        evbuffer_drain(in, result.consumed);
        request_->wire.in += result.consumed;
        if (decoder.done()) {
            request_->body_done = true;
            stream_.cancel_timer();
            input.state = RequestBodyInput::State::Complete;
            return input;
        }
        if (decoder.in_data() && decoder.data_remaining() + request_->body_bytes > max_body) {
            input.state = RequestBodyInput::State::TooLarge;
            return input;
        }
        if (result.consumed == 0) break;  // need more input
    }
    return input;
}

void ClientConnection::consume_request_body(std::size_t n) {
    request_->wire.in += n;
    request_->body_bytes += n;
    if (request_->body == http::BodyKind::Chunked) {
        request_->body_chunks.consume_data(n);
    } else {
        request_->body_remaining -= n;
        if (request_->body_remaining == 0) {
            request_->body_done = true;
            stream_.cancel_timer();
            return;
        }
    }
    stream_.arm_timer(worker_.config().server.timeouts.body);
}

void ClientConnection::pause_request_body(bool paused) {
    if (paused) {
        stream_.enable_read(false);
    } else if (!client_eof_) {
        stream_.enable_read(true);
    }
}

// The rest of the body can't be told apart from a next request: the flow's response says
// keep_alive = false, and the connection closes after it.
void ClientConnection::abandon_request_body() {
    request_->body_done = true;
    stream_.enable_read(false);
    stream_.cancel_timer();
}

// ---- the response -----------------------------------------------------------------------------

// Whether the connection stays open after this response: the client asked for it, the flow
// allows it (the request's input was read to its end), and nothing closes it meanwhile.
bool ClientConnection::keep_alive_after(bool flow_allows) const {
    return request_->keep_alive && flow_allows && !client_eof_ && !worker_.draining() &&
           !close_after_response_;
}

void ClientConnection::send_response_head(const http::Response& response,
                                          const ClientResponseInfo& flow_info) {
    ClientResponseInfo info = flow_info;
    bool keep_alive = keep_alive_after(flow_info.keep_alive);
    const bool switching = response.status == 101;
    request_->framing = switching
                            ? Framing::None
                            : choose_client_framing(response, request_->version_minor, keep_alive);
    request_->response_keep_alive = keep_alive && !switching;
    info.client_version_minor = request_->version_minor;
    info.keep_alive = keep_alive;
    info.framing = request_->framing;
    info.content_length = response.content_length;
    info.extra_headers = &worker_.response_headers(tls_);
    std::string& head = worker_.scratch();
    head.clear();
    build_client_response_head(response, info, head);
    evbuffer_add(stream_.out(), head.data(), head.size());
    request_->wire.out += head.size();
}

void ClientConnection::send_response_data(evbuffer* from, std::size_t n) {
    if (n == 0) return;
    evbuffer* out = stream_.out();
    if (request_->framing == Framing::Chunked) {
        append_chunk_header(out, n);
        evbuffer_remove_buffer(from, out, n);
        evbuffer_add(out, "\r\n", 2);
    } else {
        evbuffer_remove_buffer(from, out, n);
    }
    request_->wire.out += n;
}

void ClientConnection::end_response() {
    if (request_->framing != Framing::Chunked) return;
    evbuffer_add(stream_.out(), "0\r\n\r\n", 5);
    request_->wire.out += 5;
}

void ClientConnection::send_error(int status, std::string_view detail,
                                  const ClientResponseInfo& flow_info) {
    drop_request_head();
    ClientResponseInfo info = flow_info;
    info.client_version_minor = request_->version_minor;
    info.keep_alive = keep_alive_after(flow_info.keep_alive);
    info.framing = Framing::ContentLength;
    info.extra_headers = &worker_.response_headers(tls_);
    std::string& out = worker_.scratch();
    out.clear();
    build_error_response(status, detail, info, out);
    evbuffer_add(stream_.out(), out.data(), out.size());
    request_->wire.out += out.size();
    request_->response_keep_alive = info.keep_alive;
}

void ClientConnection::send_bodiless(int status, const ClientResponseInfo& flow_info) {
    drop_request_head();
    ClientResponseInfo info = flow_info;
    info.client_version_minor = request_->version_minor;
    info.keep_alive = keep_alive_after(flow_info.keep_alive);
    info.extra_headers = &worker_.response_headers(tls_);
    std::string& out = worker_.scratch();
    out.clear();
    build_bodiless_response(status, info, out);
    evbuffer_add(stream_.out(), out.data(), out.size());
    request_->wire.out += out.size();
    request_->response_keep_alive = info.keep_alive;
}

bool ClientConnection::flush_response() {
    return stream_.flush();
}

// The client stopped taking the response: it has timeouts.body to take some again.
void ClientConnection::response_stalled(bool stalled) {
    if (stalled) {
        stream_.arm_timer(worker_.config().server.timeouts.body);
    } else {
        stream_.cancel_timer();
    }
}

// ---- after the response -----------------------------------------------------------------------

void ClientConnection::flow_finished() {
    const bool keep_alive = request_->response_keep_alive && !client_eof_ &&
                            !close_after_response_ && !worker_.draining();
    unread_body_ = !request_->body_done;
    end_request();
    if (!keep_alive) {
        end_response_close();
        return;
    }
    wait_for_next_request();
}

void ClientConnection::wait_for_next_request() {
    phase_ = Phase::WaitingHead;
    head_timer_armed_ = false;
    stream_.arm_timer(worker_.config().server.timeouts.keepalive);
    if (evbuffer_get_length(stream_.in()) > 0) {
        stream_.activate_read();  // pipelined requests: handle them on the next loop turn
    } else if (client_eof_) {
        close();
        return;
    }
    if (!client_eof_) stream_.enable_read(true);
}

void ClientConnection::end_response_close() {
    phase_ = Phase::Lingering;
    if (!stream_.flush()) {
        close();
        return;
    }
    if (stream_.pending_output() == 0) {
        start_lingering_close();
        return;
    }
    stream_.enable_read(false);  // no further request is read; on_writable() continues
}

void ClientConnection::start_lingering_close() {
    // Closing with unread input would send a RST that can destroy the response in flight; so
    // shut down our side and read until the client closes, for a bounded time. Nothing can be
    // unread when the client closed, or when the body was read whole and the kernel holds no
    // more input (TLS always lingers: its close_notify exchange is the clean end).
    const bool nothing_unread =
        evbuffer_get_length(stream_.in()) == 0 &&
        (client_eof_ || (!tls_ && !unread_body_ && stream_.receive_queue_empty()));
    if (nothing_unread) {
        close();
        return;
    }
    stream_.shutdown_write();
    evbuffer_drain(stream_.in(), evbuffer_get_length(stream_.in()));
    if (client_eof_) {
        close();
        return;
    }
    stream_.enable_read(true);
    stream_.arm_timer(kLingerTime);
}

}  // namespace proxyd::worker
