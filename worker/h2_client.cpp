#include "worker/h2_client.hpp"

#include <nghttp2/nghttp2.h>

#include <algorithm>

#include "worker/client_connection.hpp"
#include "worker/worker.hpp"

namespace proxyd::worker {
namespace {

constexpr std::size_t kReadSize = 64 * 1024;
constexpr std::size_t kSpareStreams = 16;
// Between the shutdown notice and the final GOAWAY: a round trip, generously.
constexpr int kShutdownNoticeGrace = 500;  // ms

std::size_t field_bytes(const std::vector<h2::Header>& fields) {
    std::size_t n = 0;
    for (const auto& f : fields) n += f.name.size() + f.value.size() + 4;  // ": " and CRLF
    return n;
}

h2::Limits session_limits(const config::ServerSection& server) {
    h2::Limits limits;
    limits.max_concurrent_streams =
        static_cast<std::uint32_t>(server.limits.max_concurrent_streams);
    // The same bound as an HTTP/1.1 head: the decoded header list, so HPACK cannot amplify it.
    limits.max_header_list_size = static_cast<std::uint32_t>(
        std::min<std::size_t>(server.limits.max_header_size, UINT32_MAX));
    return limits;
}

}  // namespace

// ---- H2Stream -----------------------------------------------------------------------------

H2Stream::H2Stream(H2Client& client)
    : client_(client), flow_(client.worker()), body_(evbuffer_new()), piece_(evbuffer_new()) {}

void H2Stream::reset(std::int32_t id) {
    id_ = id;
    head_ = {};
    cookie_.clear();
    evbuffer_drain(body_.get(), evbuffer_get_length(body_.get()));
    evbuffer_drain(piece_.get(), evbuffer_get_length(piece_.get()));
    body_bytes_ = 0;
    body_ended_ = body_accepted_ = body_paused_ = body_abandoned_ = body_too_large_ = false;
    response_submitted_ = response_ended_ = session_closed_ = stalled_ = false;
    wire_ = {};
    cancel_timer();
}

void H2Stream::begin(h2::RequestHead&& head) {
    head_ = std::move(head);
    body_ended_ = head_.end_stream;
    wire_.in = field_bytes(head_.headers) + head_.method.size() + head_.path.size() +
               head_.authority.size() + head_.scheme.size();
    flow_.attach(*this);
    if (const int status = build_request()) {
        flow_.fail(Failure::BadRequest, {}, status);
        return;
    }
    flow_.start(request_);
}

// A head over the header list limit: answered like an HTTP/1.1 head that was too large.
void H2Stream::reject(int status, h2::RequestHead&& partial) {
    head_ = std::move(partial);
    body_abandoned_ = true;  // whatever body follows is discarded by the session
    flow_.attach(*this);
    flow_.fail(Failure::BadRequest, {}, status);
}

// The views the flow reads, over head_ (which stays put until the stream is reset). HTTP/2 has
// no request line or framing to get wrong; what is left to check are the limits the HTTP/1.1
// parser enforces (URI size, header count) and a target the router can use.
int H2Stream::build_request() {
    request_ = http::Request{};
    http::Request& r = request_;
    const auto& limits = client_.worker().config().server.limits;
    if (head_.path.size() > limits.max_uri_size) return 414;
    // CONNECT (no :path) and the asterisk form have nothing to route.
    if (head_.path.empty() || head_.path.front() != '/') return 400;
    r.method = head_.method;
    r.target = head_.path;
    const std::string_view target = head_.path;
    const std::size_t question = target.find('?');
    r.path = target.substr(0, question);
    if (question != std::string_view::npos) r.query = target.substr(question + 1);
    r.host = head_.authority;
    r.version_minor = 1;
    // :authority is the client's Host as sent (RFC 9113 8.3.1): with it as a host field the
    // forwarding rules see what they see in HTTP/1.1 (Host, X-Forwarded-Host).
    bool has_host = false;
    for (const auto& field : head_.headers) has_host = has_host || field.name == "host";
    if (!has_host && !head_.authority.empty())
        r.headers[r.header_count++] = {"host", head_.authority};
    for (const auto& field : head_.headers) {
        if (field.name == "cookie") {
            if (!cookie_.empty()) cookie_ += "; ";
            cookie_ += field.value;
            continue;
        }
        if (r.header_count == http::kMaxHeaders) return 431;
        r.headers[r.header_count++] = {field.name, field.value};
    }
    if (!cookie_.empty()) {
        if (r.header_count == http::kMaxHeaders) return 431;
        r.headers[r.header_count++] = {"cookie", cookie_};
    }
    if (head_.end_stream) {
        r.body = http::BodyKind::None;
    } else if (head_.content_length) {
        r.body = http::BodyKind::ContentLength;
        r.content_length = *head_.content_length;
    } else {
        // No length announced: the body is whatever DATA frames come, sent upstream chunked.
        r.body = http::BodyKind::Chunked;
    }
    return 0;
}

void H2Stream::add_body(const std::uint8_t* data, std::size_t len) {
    wire_.in += len;
    if (!flow_.active() || body_abandoned_) {
        client_.session().consume(id_, len);  // nobody wants it: give the window back
        return;
    }
    body_bytes_ += len;
    if (body_bytes_ > client_.worker().config().server.limits.max_body_size) {
        body_too_large_ = true;
        client_.session().consume(id_, len);
    } else {
        evbuffer_add(body_.get(), data, len);
    }
    forward_body();
}

void H2Stream::end_body() {
    body_ended_ = true;
    if (flow_.active() && !body_abandoned_) forward_body();
}

void H2Stream::forward_body() {
    if (!body_accepted_ || body_paused_) return;
    if (!body_ended_) arm_timer(client_.worker().config().server.timeouts.body);
    if (!flow_.take_request_body()) return;  // no upstream yet: the flow pulls it once connected
    if (body_ended_ && !stalled_) cancel_timer();
}

void H2Stream::closed_by_session(std::uint32_t error_code) {
    session_closed_ = true;
    cancel_timer();
    if (!flow_.active()) return;
    flow_.fail(Failure::ClientGone,
               error_code == NGHTTP2_NO_ERROR ? "stream closed" : "stream reset");
}

void H2Stream::response_writable() {
    if (flow_.active()) flow_.on_response_drained();
}

void H2Stream::drop() {
    session_closed_ = true;
    cancel_timer();
    if (flow_.active()) flow_.fail(Failure::ClientGone);
}

void H2Stream::on_timer() {
    if (!flow_.active()) return;
    if (body_accepted_ && !body_ended_ && !body_abandoned_) {
        flow_.fail(Failure::BodyTimeout);
    } else {
        flow_.fail(Failure::ClientGone, "client stopped reading");
    }
}

void H2Stream::arm_timer(std::chrono::milliseconds timeout) {
    if (!timer_) {
        timer_.reset(evtimer_new(
            client_.worker().base(),
            [](evutil_socket_t, short, void* arg) { static_cast<H2Stream*>(arg)->on_timer(); },
            this));
    }
    const timeval tv{static_cast<time_t>(timeout.count() / 1000),
                     static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
    evtimer_add(timer_.get(), &tv);
}

void H2Stream::cancel_timer() {
    if (timer_) evtimer_del(timer_.get());
}

// ---- ClientSide ---------------------------------------------------------------------------

std::string_view H2Stream::peer_ip() const {
    return client_.peer_ip();
}

std::uint16_t H2Stream::peer_port() const {
    return client_.peer_port();
}

bool H2Stream::is_tls() const {
    return client_.tls();
}

void H2Stream::release_request_head() {}

bool H2Stream::accept_request_body() {
    body_accepted_ = true;
    if (!body_ended_) arm_timer(client_.worker().config().server.timeouts.body);
    return !client_.dropping();
}

RequestBodyInput H2Stream::request_body() {
    RequestBodyInput input;
    input.buffer = body_.get();
    input.ready = evbuffer_get_length(body_.get());
    if (body_too_large_) {
        input.state = RequestBodyInput::State::TooLarge;
    } else if (body_ended_) {
        input.state = RequestBodyInput::State::Complete;
    }
    return input;
}

void H2Stream::consume_request_body(std::size_t n) {
    client_.session().consume(id_, n);
    client_.schedule_flush();  // the WINDOW_UPDATE that lets the client send more
    if (!body_ended_) arm_timer(client_.worker().config().server.timeouts.body);
}

void H2Stream::abandon_request_body() {
    body_abandoned_ = true;
    const std::size_t buffered = evbuffer_get_length(body_.get());
    if (buffered > 0) {
        evbuffer_drain(body_.get(), buffered);
        client_.session().consume(id_, buffered);
    }
    if (!stalled_) cancel_timer();
}

void H2Stream::submit(int status, bool end_stream) {
    if (response_ended_ || session_closed_) return;
    client_.session().submit_response(id_, status, fields_, end_stream);
    response_submitted_ = true;
    response_ended_ = end_stream;
    wire_.out += field_bytes(fields_) + 12;  // and ":status: NNN"
}

void H2Stream::send_response_head(const http::Response& response,
                                  const ClientResponseInfo& flow_info) {
    ClientResponseInfo info = flow_info;
    info.extra_headers = &client_.worker().response_headers(client_.tls());
    build_client_response_fields(response, info, fields_);
    submit(response.status, response.body == http::BodyKind::None);
}

void H2Stream::send_response_data(evbuffer* from, std::size_t n) {
    if (n == 0) return;
    if (response_ended_ || session_closed_) {
        evbuffer_drain(from, n);
        return;
    }
    wire_.out += n;
    if (n == evbuffer_get_length(from)) {
        client_.session().append_response_data(id_, from);
        return;
    }
    evbuffer_remove_buffer(from, piece_.get(), n);
    client_.session().append_response_data(id_, piece_.get());
}

void H2Stream::end_response() {
    if (response_ended_ || session_closed_) return;
    response_ended_ = true;
    client_.session().end_response(id_);
}

void H2Stream::end_response_with_trailers(const HeaderList& trailers) {
    if (response_ended_ || session_closed_) return;
    response_ended_ = true;
    fields_.clear();
    for (const auto& [name, value] : trailers) fields_.push_back({name, value});
    wire_.out += field_bytes(fields_);
    client_.session().end_response(id_, fields_);
}

void H2Stream::send_error(int status, std::string_view detail,
                          const ClientResponseInfo& flow_info) {
    ClientResponseInfo info = flow_info;
    info.extra_headers = &client_.worker().response_headers(client_.tls());
    std::string& body = client_.worker().scratch();
    body.clear();
    build_error_body(status, detail, info.request_id, body);
    build_error_fields(info, body.size(), fields_);
    const bool head = head_.method == "HEAD";
    submit(status, head);
    if (head) return;
    evbuffer_add(piece_.get(), body.data(), body.size());
    wire_.out += body.size();
    client_.session().append_response_data(id_, piece_.get());
    end_response();
}

void H2Stream::send_bodiless(int status, const ClientResponseInfo& flow_info) {
    ClientResponseInfo info = flow_info;
    info.extra_headers = &client_.worker().response_headers(client_.tls());
    build_bodiless_fields(status, info, fields_);
    submit(status, true);
}

// The session is flushed on the next loop turn, never from inside a flow (see h2_client.hpp);
// a stream the client has reset is "gone" as an HTTP/1.1 client would be.
bool H2Stream::flush_response() {
    if (client_.dropping()) return false;
    client_.schedule_flush();
    return true;
}

std::size_t H2Stream::response_pending() const {
    return client_.session().pending_response_bytes(id_);
}

void H2Stream::response_stalled(bool stalled) {
    stalled_ = stalled;
    if (stalled) {
        arm_timer(client_.worker().config().server.timeouts.body);
    } else {
        cancel_timer();
    }
}

void H2Stream::flow_finished() {
    stalled_ = false;
    cancel_timer();
    // The response is complete before the request: the session resets the stream (NO_ERROR)
    // once the response is out, and whatever body still comes is discarded.
    if (!body_ended_ && !body_abandoned_) abandon_request_body();
}

void H2Stream::abort() {
    stalled_ = false;
    cancel_timer();
    if (!session_closed_ && !client_.dropping()) {
        client_.session().reset_stream(id_, NGHTTP2_INTERNAL_ERROR);
        client_.schedule_flush();
    }
    flow_.abandon();
}

// A WebSocket handshake is HTTP/1.1 only (wants_websocket); an HTTP/2 stream never gets here.
void H2Stream::start_tunnel(UpstreamPtr upstream) {
    upstream.reset();
    abort();
}

// ---- H2Client -----------------------------------------------------------------------------

H2Client::H2Client(Worker& worker, ClientConnection& owner, Stream& stream,
                   std::string_view peer_ip, std::uint16_t peer_port, bool tls)
    : worker_(worker),
      owner_(owner),
      stream_(stream),
      peer_ip_(peer_ip),
      peer_port_(peer_port),
      tls_(tls) {}

H2Client::~H2Client() = default;

bool H2Client::start() {
    session_ = std::make_unique<h2::ServerSession>(*this, session_limits(worker_.config().server));
    flush_event_.reset(event_new(worker_.base(), -1, 0, on_flush_event, this));
    stream_.enable_read(true);
    return pump();
}

bool H2Client::on_readable() {
    switch (stream_.read(kReadSize)) {
        case Stream::ReadResult::Data:
        case Stream::ReadResult::WouldBlock:
            return pump();
        case Stream::ReadResult::Eof:
        case Stream::ReadResult::Error:
            return false;
    }
    return false;
}

bool H2Client::on_writable() {
    if (!stream_.flush()) return false;
    if (stream_.pending_output() >= kLowWatermark) return true;
    return pump();
}

bool H2Client::on_idle_timer() {
    idle_ = false;
    if (!streams_.empty()) return true;
    session_->shutdown_gracefully();
    return pump();
}

// Streams a client sent before it saw our GOAWAY would be refused by a GOAWAY naming the last
// stream at once; so first the notice (no new streams, please), then, a round trip later, the
// GOAWAY that counts. An idle connection goes at once.
void H2Client::begin_drain() {
    if (streams_.empty()) {
        session_->shutdown_gracefully();
    } else {
        session_->announce_shutdown();
        drain_timer_.reset(evtimer_new(
            worker_.base(),
            [](evutil_socket_t, short, void* arg) {
                auto* self = static_cast<H2Client*>(arg);
                self->session_->shutdown_gracefully();
                self->schedule_flush();
            },
            this));
        const timeval grace{0, kShutdownNoticeGrace * 1000};
        evtimer_add(drain_timer_.get(), &grace);
    }
    schedule_flush();
}

void H2Client::drop_streams() {
    dropping_ = true;
    if (flush_event_) event_del(flush_event_.get());
    if (drain_timer_) event_del(drain_timer_.get());
    for (auto& stream : streams_) stream->drop();
}

void H2Client::schedule_flush() {
    if (flush_scheduled_ || dropping_ || !flush_event_) return;
    flush_scheduled_ = true;
    event_active(flush_event_.get(), EV_TIMEOUT, 1);
}

void H2Client::on_flush_event(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<H2Client*>(arg);
    self->flush_scheduled_ = false;
    if (self->dropping_) return;
    if (!self->pump()) self->owner_.close();
}

// Everything read goes into the session, then everything it has to say goes out (up to a
// watermark of unwritten output: the rest waits in the session for on_writable).
bool H2Client::pump() {
    bool ok = true;
    evbuffer* in = stream_.in();
    while (ok && evbuffer_get_length(in) > 0) {
        evbuffer_iovec chunk;
        if (evbuffer_peek(in, -1, nullptr, &chunk, 1) < 1) break;
        ok = session_->receive(static_cast<const std::uint8_t*>(chunk.iov_base), chunk.iov_len);
        evbuffer_drain(in, chunk.iov_len);
    }
    if (!ok) evbuffer_drain(in, evbuffer_get_length(in));
    bool flushed = true;
    bool produced = false;
    // The session stops at the watermark; when the socket took all of it at once there is no
    // write event to come back on, so go on while it takes everything (a few rounds).
    for (int round = 0; round < 8; ++round) {
        const std::size_t before = stream_.pending_output();
        flushed = session_->flush(stream_.out(), kHighWatermark);
        produced = stream_.pending_output() > before;
        if (!stream_.flush()) return false;
        if (!flushed || !produced || !session_->want_write() || stream_.pending_output() > 0) {
            break;
        }
    }
    // Still something to send and no write event to send it on (the socket took everything, or
    // a body was appended during the flush, when a stream that ran dry woke its flow): the next
    // loop turn goes on. Bounded, in case nghttp2 wants to write and has nothing it may send.
    if (flushed && session_->want_write() && stream_.pending_output() == 0) {
        idle_flushes_ = produced ? 0 : idle_flushes_ + 1;
        if (idle_flushes_ <= 4) schedule_flush();
    }
    recycle_finished();
    if (!ok || !flushed) return false;
    if (session_->finished() && stream_.pending_output() == 0) return false;
    if (!session_->want_read()) stream_.enable_read(false);
    update_idle_timer();
    return true;
}

void H2Client::update_idle_timer() {
    if (streams_.empty() && !idle_) {
        idle_ = true;
        stream_.arm_timer(worker_.config().server.timeouts.keepalive);
    } else if (!streams_.empty() && idle_) {
        idle_ = false;
        stream_.cancel_timer();
    }
}

H2Stream* H2Client::find(std::int32_t id) const {
    for (const auto& stream : streams_) {
        if (stream->id() == id && !stream->finished()) return stream.get();
    }
    return nullptr;
}

H2Stream& H2Client::open_stream(std::int32_t id) {
    std::unique_ptr<H2Stream> stream;
    if (!spare_.empty()) {
        stream = std::move(spare_.back());
        spare_.pop_back();
    } else {
        stream = std::make_unique<H2Stream>(*this);
    }
    stream->reset(id);
    streams_.push_back(std::move(stream));
    return *streams_.back();
}

// Streams whose session side and flow have both ended go back to the spares.
void H2Client::recycle_finished() {
    for (std::size_t i = 0; i < streams_.size();) {
        if (!streams_[i]->finished()) {
            ++i;
            continue;
        }
        std::unique_ptr<H2Stream> done = std::move(streams_[i]);
        streams_[i] = std::move(streams_.back());
        streams_.pop_back();
        if (spare_.size() < kSpareStreams) spare_.push_back(std::move(done));
    }
}

// ---- session events -----------------------------------------------------------------------

void H2Client::on_request(std::int32_t id, h2::RequestHead&& head) {
    open_stream(id).begin(std::move(head));
}

void H2Client::on_request_data(std::int32_t id, const std::uint8_t* data, std::size_t len) {
    if (H2Stream* stream = find(id)) {
        stream->add_body(data, len);
    } else {
        session_->consume(id, len);
    }
}

void H2Client::on_request_end(std::int32_t id) {
    if (H2Stream* stream = find(id)) stream->end_body();
}

void H2Client::on_request_rejected(std::int32_t id, int status, h2::RequestHead&& partial) {
    open_stream(id).reject(status, std::move(partial));
}

void H2Client::on_stream_closed(std::int32_t id, std::uint32_t error_code) {
    if (H2Stream* stream = find(id)) stream->closed_by_session(error_code);
}

void H2Client::on_response_writable(std::int32_t id) {
    if (H2Stream* stream = find(id)) stream->response_writable();
}

}  // namespace proxyd::worker
