#include "worker/h2/upstream_connection.hpp"

#include <openssl/ssl.h>

#include <algorithm>
#include <cstring>

#include "worker/h2/upstream_pool.hpp"

namespace proxyd::worker {
namespace {

constexpr std::size_t kReadSize = 64 * 1024;
// Request bodies stay in their streams' chains (where they count as pending, which pauses the
// clients that send them) once this much waits for the socket; writing resumes below the low
// mark. The same marks as between a client and an HTTP/1.1 upstream.
constexpr std::size_t kOutputHigh = 256 * 1024;
constexpr std::size_t kOutputLow = 64 * 1024;
// Flushes in a row when users queue more while the session writes (a body that ran dry and got
// more at once): enough for that, bounded so a loop cannot spin.
constexpr int kMaxFlushRounds = 4;

h2::Limits session_limits(const config::Config& config) {
    h2::Limits limits;
    // A response head as large as the one an HTTP/1.1 upstream may send.
    limits.max_header_list_size = static_cast<std::uint32_t>(
        std::max<std::size_t>(config.server.limits.max_header_size, 16 * 1024));
    return limits;
}

}  // namespace

H2Upstream::H2Upstream(H2UpstreamPool& pool, std::size_t upstream, std::size_t server)
    : pool_(pool),
      upstream_(upstream),
      server_(server),
      session_(std::make_unique<h2::ClientSession>(*this, session_limits(pool.config()))) {}

H2Upstream::~H2Upstream() = default;

std::unique_ptr<H2Upstream> H2Upstream::open(H2UpstreamPool& pool, UpstreamPool& connector,
                                             std::size_t upstream, std::size_t server,
                                             std::string& error) {
    std::unique_ptr<H2Upstream> self(new H2Upstream(pool, upstream, server));
    self->socket_ = connector.connect(upstream, server, self.get(), error);
    if (!self->socket_) return nullptr;
    // Even a connect that finished at once is confirmed by its writability, so that a failure is
    // always reported from the loop, never from inside open().
    self->socket_->stream.wait_writable();
    self->socket_->stream.arm_timer(pool.config().server.timeouts.upstream_connect);
    return self;
}

// ---- users' calls -----------------------------------------------------------------------------

std::int32_t H2Upstream::submit(H2StreamUser& user, std::string_view method,
                                std::string_view scheme, std::string_view authority,
                                std::string_view path, const std::vector<h2::Header>& headers,
                                bool end_stream) {
    if (closed_) return -1;
    const std::int32_t id =
        session_->submit_request(method, scheme, authority, path, headers, end_stream);
    if (id < 0) return id;
    users_.emplace_back(id, &user);                  // ids only grow: users_ stays in order
    if (connected_) socket_->stream.cancel_timer();  // the idle timer; else it is the connect's
    write_out();
    return id;
}

void H2Upstream::append(std::int32_t stream, evbuffer* from, std::size_t n) {
    evbuffer_remove_buffer(from, body_.get(), n);
    session_->append_request_data(stream, body_.get());  // takes all of it
    write_out();
}

void H2Upstream::end_request(std::int32_t stream) {
    session_->end_request(stream);
    write_out();
}

void H2Upstream::consume(std::int32_t stream, std::size_t n) {
    session_->consume(stream, n);
    write_out();  // a WINDOW_UPDATE may be due
}

void H2Upstream::release(std::int32_t stream, bool cancel) {
    if (take_user(stream) == nullptr) return;
    if (cancel && !closed_) session_->reset_stream(stream, NGHTTP2_CANCEL);
    write_out();
    maybe_close();
}

void H2Upstream::close_if_idle() {
    if (!closed_ && users_.empty()) close();
}

// ---- the socket -------------------------------------------------------------------------------

void H2Upstream::on_upstream_writable() {
    if (closed_) return;
    if (!connected_) {
        if (finish_connect()) write_out();
        return;
    }
    if (!socket_->stream.flush()) {
        fail(H2StreamError::Kind::Connection, "upstream write failed");
        return;
    }
    if (socket_->stream.pending_output() < kOutputLow) write_out();
}

void H2Upstream::on_upstream_readable() {
    if (closed_) return;
    switch (socket_->stream.read(kReadSize)) {
        case Stream::ReadResult::WouldBlock:
            return;
        case Stream::ReadResult::Data:
            receive_input();
            return;
        case Stream::ReadResult::Eof:
            fail(H2StreamError::Kind::Connection, "upstream closed the connection");
            return;
        case Stream::ReadResult::Error:
            fail(H2StreamError::Kind::Connection, "upstream connection reset");
            return;
    }
}

void H2Upstream::on_upstream_timeout() {
    if (closed_) return;
    if (!connected_) {
        fail(H2StreamError::Kind::Connect, "connect timed out");
        return;
    }
    // The idle timer: armed only while no stream uses the connection.
    if (users_.empty()) close();
}

// Connected (and, over TLS, the handshake done): HTTP/2 only if the server chose it in ALPN.
bool H2Upstream::finish_connect() {
    std::string error;
    if (!UpstreamPool::finish_connect(*socket_, error)) {
        fail(H2StreamError::Kind::Connect, error);
        return false;
    }
    if (SSL* ssl = socket_->stream.ssl()) {
        const unsigned char* selected = nullptr;
        unsigned int length = 0;
        SSL_get0_alpn_selected(ssl, &selected, &length);
        if (length != 2 || std::memcmp(selected, "h2", 2) != 0) {
            fail(H2StreamError::Kind::Connect, "the server did not select HTTP/2 (ALPN h2)");
            return false;
        }
    }
    connected_ = true;
    socket_->stream.cancel_timer();
    socket_->stream.enable_read(true);
    return true;
}

void H2Upstream::receive_input() {
    evbuffer* in = socket_->stream.in();
    const std::size_t len = evbuffer_get_length(in);
    const unsigned char* bytes = evbuffer_pullup(in, -1);
    in_session_ = true;
    const bool ok = session_->receive(bytes, len);
    in_session_ = false;
    evbuffer_drain(in, len);
    write_out();  // what the users queued, WINDOW_UPDATEs, or the GOAWAY that says why not ok
    if (!ok) {
        fail(H2StreamError::Kind::Connection, "the upstream broke the HTTP/2 protocol");
        return;
    }
    maybe_close();
}

// Serialises what the session has queued and writes it. Called after every change; inside the
// session it only notes that another round is due.
void H2Upstream::write_out() {
    if (closed_ || !connected_) return;
    if (in_session_) {
        rewrite_ = true;
        return;
    }
    for (int round = 0; round < kMaxFlushRounds; ++round) {
        rewrite_ = false;
        in_session_ = true;
        const bool ok = session_->flush(socket_->stream.out(), kOutputHigh);
        in_session_ = false;
        if (!socket_->stream.flush()) {
            fail_later("upstream write failed");
            return;
        }
        if (!ok) {
            fail_later("HTTP/2 session error");
            return;
        }
        if (!rewrite_) break;
    }
}

// Failing calls users back: never from inside a user's own call.
void H2Upstream::fail_later(std::string reason) {
    if (!failure_.empty()) return;
    failure_ = std::move(reason);
    if (!failure_event_)
        failure_event_.reset(event_new(pool_.base(), -1, 0, on_failure_event, this));
    event_active(failure_event_.get(), EV_TIMEOUT, 1);
}

void H2Upstream::on_failure_event(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<H2Upstream*>(arg);
    self->fail(self->connected_ ? H2StreamError::Kind::Connection : H2StreamError::Kind::Connect,
               self->failure_);
}

// The connection is lost: every stream on it ends with `kind`, then it closes.
void H2Upstream::fail(H2StreamError::Kind kind, std::string_view reason) {
    if (closed_) return;
    closed_ = true;  // first: a user that retries must not pick this connection again
    const std::string why(reason);
    std::vector<std::pair<std::int32_t, H2StreamUser*>> users;
    users.swap(users_);
    for (const auto& entry : users) entry.second->on_h2_closed({kind, 0, why});
    close();
}

void H2Upstream::maybe_close() {
    if (closed_ || !users_.empty()) return;
    const auto& server = pool_.config().upstreams[upstream_].servers[server_];
    // After a GOAWAY (either side's) and its last stream, or for a server on its way out.
    if (session_->finished() || server.retired || server.drain ||
        (session_->open_streams() == 0 && !session_->can_submit())) {
        close();
        return;
    }
    if (connected_) socket_->stream.arm_timer(pool_.config().server.timeouts.keepalive);
}

void H2Upstream::close() {
    closed_ = true;
    socket_->stream.close();
    if (failure_event_) event_del(failure_event_.get());
    pool_.retire(this);
}

// ---- the session's events ---------------------------------------------------------------------

H2StreamUser* H2Upstream::user_of(std::int32_t stream) const {
    auto it = std::lower_bound(users_.begin(), users_.end(), stream,
                               [](const auto& entry, std::int32_t id) { return entry.first < id; });
    return it != users_.end() && it->first == stream ? it->second : nullptr;
}

H2StreamUser* H2Upstream::take_user(std::int32_t stream) {
    auto it = std::lower_bound(users_.begin(), users_.end(), stream,
                               [](const auto& entry, std::int32_t id) { return entry.first < id; });
    if (it == users_.end() || it->first != stream) return nullptr;
    H2StreamUser* user = it->second;
    users_.erase(it);
    return user;
}

void H2Upstream::on_response_head(std::int32_t stream, int status,
                                  std::vector<h2::Header>&& headers, bool end_stream) {
    if (H2StreamUser* user = user_of(stream))
        user->on_h2_head(status, std::move(headers), end_stream);
}

void H2Upstream::on_response_data(std::int32_t stream, const std::uint8_t* data, std::size_t len) {
    H2StreamUser* user = user_of(stream);
    if (user == nullptr) {
        session_->consume(stream, len);  // nobody forwards it: the window must not shrink for good
        return;
    }
    evbuffer_add(data_.get(), data, len);
    user->on_h2_data(data_.get());
    evbuffer_drain(data_.get(), evbuffer_get_length(data_.get()));
}

void H2Upstream::on_response_trailers(std::int32_t stream, std::vector<h2::Header>&& trailers) {
    if (H2StreamUser* user = user_of(stream)) user->on_h2_trailers(std::move(trailers));
}

void H2Upstream::on_response_end(std::int32_t stream) {
    if (H2StreamUser* user = user_of(stream)) user->on_h2_end();
}

void H2Upstream::on_stream_closed(std::int32_t stream, std::uint32_t error_code) {
    H2StreamUser* user = take_user(stream);
    if (user == nullptr) return;
    const bool refused = error_code == NGHTTP2_REFUSED_STREAM;
    user->on_h2_closed(
        {refused ? H2StreamError::Kind::Refused : H2StreamError::Kind::Reset, error_code,
         refused ? "the upstream refused the stream" : "the upstream reset the stream"});
}

void H2Upstream::on_request_writable(std::int32_t stream) {
    if (H2StreamUser* user = user_of(stream)) user->on_h2_writable();
}

void H2Upstream::on_goaway(std::int32_t, std::uint32_t) {
    // can_submit() is false from now on: new requests open another connection, and this one
    // closes once its last stream is done (maybe_close).
}

}  // namespace proxyd::worker
