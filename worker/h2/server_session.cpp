#include "worker/h2/server_session.hpp"

#include <algorithm>
#include <charconv>
#include <iterator>
#include <new>
#include <string_view>
#include <utility>

#include "common/http/parser.hpp"
#include "common/util/event_ptr.hpp"

namespace proxyd::worker::h2 {

// One stream's state, from its first HEADERS frame to its close. Owned by live_, reached through
// nghttp2's stream user data, which is cleared at the close: a closed id finds nothing.
struct ServerSession::Stream {
    std::int32_t id = 0;
    std::size_t slot = 0;  // index in live_
    RequestHead head;      // assembled until on_request / on_request_rejected takes it
    std::vector<Header> trailers_in;
    std::size_t block_bytes = 0;  // of the header block being received, as RFC 9113 6.5.2 counts
    std::size_t unconsumed = 0;   // request body bytes handed to the owner, not yet consumed
    OutgoingBody response_body;   // waiting for the client's window
    bool too_large = false;       // the header block being received broke the limit
    bool announced = false;       // the owner knows the stream: it gets on_stream_closed
    bool forwarding = false;      // request events go to the owner (not rejected, reset or ended)
    bool reset = false;           // we queued a RST_STREAM
    bool responded = false;

    void clear() {
        response_body.clear();
        head = RequestHead{};
        trailers_in.clear();
        block_bytes = unconsumed = 0;
        too_large = announced = forwarding = reset = responded = false;
    }
};

namespace {

const std::string* find_field(const std::vector<Header>& headers, std::string_view name) {
    for (const Header& header : headers) {
        if (header.name == name) return &header.value;
    }
    return nullptr;
}

// RFC 9113 8.3.1: without :authority the Host field names the target; with both, a Host that
// differs would let the proxy route by one and the upstream by the other.
bool settle_authority(RequestHead& head) {
    const std::string* host = find_field(head.headers, "host");
    if (host == nullptr) return true;
    if (head.authority.empty()) {
        head.authority = *host;
        return true;
    }
    return http::iequals(head.authority, *host);
}

void set_pseudo(RequestHead& head, std::string_view name, std::string_view value) {
    if (name == ":method") {
        head.method = value;
    } else if (name == ":scheme") {
        head.scheme = value;
    } else if (name == ":authority") {
        head.authority = value;
    } else if (name == ":path") {
        head.path = value;
    }
    // nghttp2 lets no other pseudo-header through (":protocol" needs SETTINGS we do not send).
}

std::string_view view(const std::uint8_t* data, std::size_t len) {
    return {reinterpret_cast<const char*>(data), len};
}

OptionPtr make_options(const Limits& limits) {
    nghttp2_option* raw = nullptr;
    if (nghttp2_option_new(&raw) != 0) throw std::bad_alloc();
    OptionPtr option(raw);
    // WINDOW_UPDATE only for what the owner consumed: flow control reaches the upstream.
    nghttp2_option_set_no_auto_window_update(raw, 1);
    // nghttp2's own rapid-reset bucket, a backstop at twice ours (reset_budget.hpp).
    nghttp2_option_set_stream_reset_rate_limit(raw, 2 * std::uint64_t{limits.reset_burst},
                                               2 * std::uint64_t{limits.reset_rate});
    nghttp2_option_set_max_settings(raw, limits.max_settings_entries);
    nghttp2_option_set_max_continuations(raw, limits.max_continuations);
    nghttp2_option_set_max_outbound_ack(raw, limits.max_outbound_ack);
    return option;
}

}  // namespace

// nghttp2's C callbacks, each handing over to the member that does the work.
struct ServerSession::Callbacks {
    static ServerSession& self(void* user_data) { return *static_cast<ServerSession*>(user_data); }

    static int on_begin_headers(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
        if (frame->hd.type != NGHTTP2_HEADERS) return 0;
        ServerSession& session = self(user_data);
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            return session.open_stream(frame->hd.stream_id);
        }
        if (Stream* stream = session.find(frame->hd.stream_id)) {
            // Trailers: a block with a limit of its own.
            stream->block_bytes = 0;
            stream->too_large = false;
        }
        return 0;
    }

    static int on_header(nghttp2_session*, const nghttp2_frame* frame, const std::uint8_t* name,
                         std::size_t name_len, const std::uint8_t* value, std::size_t value_len,
                         std::uint8_t, void* user_data) {
        ServerSession& session = self(user_data);
        Stream* stream = session.find(frame->hd.stream_id);
        if (stream == nullptr) return 0;
        return session.add_header(*stream, *frame, name, name_len, value, value_len);
    }

    static int on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
        return self(user_data).on_frame_received(*frame);
    }

    static int on_data_chunk_recv(nghttp2_session*, std::uint8_t, std::int32_t stream_id,
                                  const std::uint8_t* data, std::size_t len, void* user_data) {
        return self(user_data).on_body_chunk(stream_id, data, len);
    }

    static ssize_t read_body(nghttp2_session*, std::int32_t stream_id, std::uint8_t*,
                             std::size_t length, std::uint32_t* flags, nghttp2_data_source*,
                             void* user_data) {
        ServerSession& session = self(user_data);
        return session.sender_.read(session.session_.get(), stream_id, session.body_of(stream_id),
                                    length, flags, session.block_);
    }

    static ssize_t send(nghttp2_session*, const std::uint8_t* data, std::size_t len, int,
                        void* user_data) {
        return self(user_data).sender_.add(data, len);
    }

    static int send_data(nghttp2_session*, nghttp2_frame* frame, const std::uint8_t* frame_header,
                         std::size_t length, nghttp2_data_source*, void* user_data) {
        ServerSession& session = self(user_data);
        return session.sender_.write_data_frame(session.body_of(frame->hd.stream_id), frame_header,
                                                length);
    }

    static int on_frame_send(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
        return self(user_data).on_frame_sent(*frame);
    }

    static int on_frame_not_send(nghttp2_session*, const nghttp2_frame* frame, int,
                                 void* user_data) {
        self(user_data).on_frame_not_sent(*frame);
        return 0;
    }

    static int on_stream_close(nghttp2_session*, std::int32_t stream_id, std::uint32_t error_code,
                               void* user_data) {
        self(user_data).close_stream(stream_id, error_code);
        return 0;
    }

    static CallbacksPtr make() {
        nghttp2_session_callbacks* raw = nullptr;
        if (nghttp2_session_callbacks_new(&raw) != 0) throw std::bad_alloc();
        CallbacksPtr callbacks(raw);
        nghttp2_session_callbacks_set_on_begin_headers_callback(raw, on_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(raw, on_header);
        nghttp2_session_callbacks_set_on_frame_recv_callback(raw, on_frame_recv);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(raw, on_data_chunk_recv);
        nghttp2_session_callbacks_set_send_callback(raw, send);
        nghttp2_session_callbacks_set_send_data_callback(raw, send_data);
        nghttp2_session_callbacks_set_on_frame_send_callback(raw, on_frame_send);
        nghttp2_session_callbacks_set_on_frame_not_send_callback(raw, on_frame_not_send);
        nghttp2_session_callbacks_set_on_stream_close_callback(raw, on_stream_close);
        return callbacks;
    }

    // nghttp2 copies the table into each session: one for the process is enough.
    static const nghttp2_session_callbacks* table() {
        static const CallbacksPtr callbacks = make();
        return callbacks.get();
    }
};

ServerSession::ServerSession(Handler& handler, const Limits& limits)
    : handler_(handler), limits_(limits), reset_budget_(limits.reset_burst, limits.reset_rate) {
    OptionPtr option = make_options(limits_);
    nghttp2_session* raw = nullptr;
    if (nghttp2_session_server_new2(&raw, Callbacks::table(), this, option.get()) != 0) {
        throw std::bad_alloc();
    }
    session_.reset(raw);
    submit_settings();
}

ServerSession::~ServerSession() = default;

void ServerSession::submit_settings() {
    auto window = [](std::uint32_t size) {
        return std::min<std::uint32_t>(size, NGHTTP2_MAX_WINDOW_SIZE);
    };
    const nghttp2_settings_entry entries[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, limits_.max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, window(limits_.initial_window_size)},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, limits_.max_header_list_size},
        // RFC 9113 deprecated the RFC 7540 priority tree; without it nghttp2 keeps no closed
        // streams around for it and a client cannot make us rebuild dependency trees.
        {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
    };
    // Both only queue; with these values they can fail only for want of memory.
    const auto connection_window = static_cast<std::int32_t>(window(limits_.connection_window));
    if (nghttp2_submit_settings(session_.get(), NGHTTP2_FLAG_NONE, entries, std::size(entries)) ||
        nghttp2_session_set_local_window_size(session_.get(), NGHTTP2_FLAG_NONE, 0,
                                              connection_window)) {
        throw std::bad_alloc();
    }
}

ServerSession::Stream* ServerSession::find(std::int32_t id) const {
    return static_cast<Stream*>(nghttp2_session_get_stream_user_data(session_.get(), id));
}

OutgoingBody* ServerSession::body_of(std::int32_t id) const {
    Stream* stream = find(id);
    return stream == nullptr ? nullptr : &stream->response_body;
}

bool ServerSession::receive(const std::uint8_t* data, std::size_t len) {
    if (fatal_ || enraged_) return false;
    if (nghttp2_session_mem_recv(session_.get(), data, len) < 0) {
        // Not HTTP/2 (bad preface), a flood of acknowledgements, or out of memory: nghttp2 wants
        // the connection dropped without another word.
        fatal_ = true;
        return false;
    }
    return !enraged_;
}

// A new request stream: its state comes from the spares when there are some.
int ServerSession::open_stream(std::int32_t id) {
    std::unique_ptr<Stream> stream;
    if (spare_.empty()) {
        stream = std::make_unique<Stream>();
    } else {
        stream = std::move(spare_.back());
        spare_.pop_back();
    }
    stream->id = id;
    stream->slot = live_.size();
    if (nghttp2_session_set_stream_user_data(session_.get(), id, stream.get()) != 0) {
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    live_.push_back(std::move(stream));
    return 0;
}

int ServerSession::add_header(Stream& stream, const nghttp2_frame& frame, const std::uint8_t* name,
                              std::size_t name_len, const std::uint8_t* value,
                              std::size_t value_len) {
    // Counted on what HPACK decoded, not on the wire: a one-byte reference to a 4 KiB table entry
    // costs 4 KiB here.
    stream.block_bytes += name_len + value_len + 32;
    if (stream.block_bytes > limits_.max_header_list_size) stream.too_large = true;
    if (stream.too_large) return 0;  // keep decoding (HPACK state), keep nothing

    std::string_view field_name = view(name, name_len);
    std::string_view field_value = view(value, value_len);
    if (frame.headers.cat != NGHTTP2_HCAT_REQUEST) {
        if (stream.forwarding)
            stream.trailers_in.push_back({std::string(field_name), std::string(field_value)});
        return 0;
    }
    if (field_name[0] == ':') {
        set_pseudo(stream.head, field_name, field_value);
        return 0;
    }
    if (field_name == "content-length") {
        // nghttp2 has checked it is one non-negative number.
        std::uint64_t length = 0;
        std::from_chars(field_value.data(), field_value.data() + field_value.size(), length);
        stream.head.content_length = length;
    }
    stream.head.headers.push_back({std::string(field_name), std::string(field_value)});
    return 0;
}

int ServerSession::on_frame_received(const nghttp2_frame& frame) {
    const bool end_stream = (frame.hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (frame.hd.type) {
        case NGHTTP2_HEADERS:
            if (Stream* stream = find(frame.hd.stream_id)) {
                if (frame.headers.cat == NGHTTP2_HCAT_REQUEST) {
                    finish_head(*stream, end_stream);
                } else {
                    finish_trailers(*stream);  // trailers always end the stream
                }
            }
            break;
        case NGHTTP2_DATA:
            if (Stream* stream = find(frame.hd.stream_id); stream != nullptr && end_stream) {
                end_request(*stream);
            }
            break;
        case NGHTTP2_RST_STREAM:
            charge_reset();
            break;
        default:
            break;
    }
    return 0;
}

void ServerSession::finish_head(Stream& stream, bool end_stream) {
    if (stream.too_large) {
        stream.announced = true;
        stream.head.end_stream = end_stream;
        handler_.on_request_rejected(stream.id, 431, std::move(stream.head));
        return;
    }
    if (!settle_authority(stream.head)) {
        nghttp2_submit_rst_stream(session_.get(), NGHTTP2_FLAG_NONE, stream.id,
                                  NGHTTP2_PROTOCOL_ERROR);
        stream.reset = true;
        return;
    }
    stream.head.end_stream = end_stream;
    stream.announced = stream.forwarding = true;
    handler_.on_request(stream.id, std::move(stream.head));
    if (end_stream) end_request(stream);
}

int ServerSession::on_body_chunk(std::int32_t id, const std::uint8_t* data, std::size_t len) {
    Stream* stream = find(id);
    if (stream == nullptr || !stream->forwarding) {
        // Nobody will forward these bytes (a rejected or reset request): acknowledge them now,
        // or they would shrink the client's window for good.
        nghttp2_session_consume(session_.get(), id, len);
        return 0;
    }
    stream->unconsumed += len;
    handler_.on_request_data(id, data, len);
    return 0;
}

void ServerSession::finish_trailers(Stream& stream) {
    if (!stream.forwarding) return;  // rejected or reset: nobody wants them
    if (stream.too_large) {
        reset_stream(stream.id, NGHTTP2_ENHANCE_YOUR_CALM);
        return;
    }
    if (!stream.trailers_in.empty()) {
        handler_.on_request_trailers(stream.id, std::move(stream.trailers_in));
    }
    end_request(stream);
}

void ServerSession::end_request(Stream& stream) {
    if (!stream.forwarding) return;
    stream.forwarding = false;
    handler_.on_request_end(stream.id);
}

// Every received RST_STREAM costs a token (see reset_budget.hpp).
void ServerSession::charge_reset() {
    if (enraged_ || reset_budget_.take(ResetBudget::Clock::now())) return;
    enraged_ = true;
    // Queues GOAWAY(last processed stream, ENHANCE_YOUR_CALM) and makes nghttp2 ignore the rest
    // of the input.
    nghttp2_session_terminate_session(session_.get(), NGHTTP2_ENHANCE_YOUR_CALM);
}

bool ServerSession::submit_response(std::int32_t id, int status, const std::vector<Header>& headers,
                                    bool end_stream) {
    Stream* stream = find(id);
    if (stream == nullptr || stream->responded || stream->reset) return false;
    block_.build_response(status, headers);
    nghttp2_data_provider body{};
    body.read_callback = Callbacks::read_body;
    if (nghttp2_submit_response(session_.get(), id, block_.data(), block_.size(),
                                end_stream ? nullptr : &body) != 0) {
        return false;
    }
    stream->responded = true;
    if (end_stream) stream->response_body.ended = true;
    return true;
}

void ServerSession::append_response_data(std::int32_t id, evbuffer* data) {
    Stream* stream = find(id);
    if (stream == nullptr || stream->response_body.ended || stream->reset) {
        evbuffer_drain(data, evbuffer_get_length(data));
        return;
    }
    stream->response_body.append(session_.get(), id, data);
}

void ServerSession::end_response(std::int32_t id, const std::vector<Header>& trailers) {
    Stream* stream = find(id);
    if (stream == nullptr || stream->response_body.ended || stream->reset) return;
    stream->response_body.end(session_.get(), id, trailers);
}

void ServerSession::reset_stream(std::int32_t id, std::uint32_t error_code) {
    Stream* stream = find(id);
    if (stream == nullptr || stream->reset) return;
    stream->reset = true;
    stream->forwarding = false;
    nghttp2_submit_rst_stream(session_.get(), NGHTTP2_FLAG_NONE, id, error_code);
}

void ServerSession::consume(std::int32_t id, std::size_t n) {
    // A closed stream's unconsumed bytes went back to the connection window at its close.
    Stream* stream = find(id);
    if (stream == nullptr) return;
    n = std::min(n, stream->unconsumed);
    stream->unconsumed -= n;
    nghttp2_session_consume(session_.get(), id, n);
}

std::size_t ServerSession::pending_response_bytes(std::int32_t id) const {
    Stream* stream = find(id);
    return stream == nullptr ? 0 : stream->response_body.pending();
}

void ServerSession::announce_shutdown() {
    if (draining_ || fatal_ || announced_shutdown_) return;
    announced_shutdown_ = true;
    nghttp2_submit_shutdown_notice(session_.get());
}

void ServerSession::shutdown_gracefully() {
    if (draining_ || fatal_) return;
    draining_ = true;
    nghttp2_submit_goaway(session_.get(), NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(session_.get()), NGHTTP2_NO_ERROR,
                          nullptr, 0);
}

bool ServerSession::flush(evbuffer* out, std::size_t watermark) {
    if (fatal_) return false;
    if (sender_.send(session_.get(), out, watermark) != 0) {
        fatal_ = true;
        return false;
    }
    sender_.notify_ran_dry([this](std::int32_t id) { return body_of(id); },
                           [this](std::int32_t id) { handler_.on_response_writable(id); });
    return !failed_;
}

int ServerSession::on_frame_sent(const nghttp2_frame& frame) {
    if (frame.hd.type == NGHTTP2_GOAWAY) {
        // Ours after a spent reset budget, or nghttp2's on a protocol error or its own reset
        // limit: in every case the connection is over once this is written.
        if (frame.goaway.error_code != NGHTTP2_NO_ERROR) failed_ = true;
        return 0;
    }
    const bool ends_response =
        (frame.hd.type == NGHTTP2_HEADERS || frame.hd.type == NGHTTP2_DATA) &&
        (frame.hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    // A complete response to an incomplete request (an early error, a 431): RFC 9113 8.1 lets us
    // ask the client to stop sending the body with RST_STREAM(NO_ERROR).
    if (ends_response &&
        nghttp2_session_get_stream_remote_close(session_.get(), frame.hd.stream_id) == 0) {
        nghttp2_submit_rst_stream(session_.get(), NGHTTP2_FLAG_NONE, frame.hd.stream_id,
                                  NGHTTP2_NO_ERROR);
    }
    return 0;
}

// A response head nghttp2 could not send (larger than its 64 KiB header block limit) would leave
// the stream open for ever: reset it.
void ServerSession::on_frame_not_sent(const nghttp2_frame& frame) {
    if (frame.hd.type != NGHTTP2_HEADERS || find(frame.hd.stream_id) == nullptr) return;
    nghttp2_submit_rst_stream(session_.get(), NGHTTP2_FLAG_NONE, frame.hd.stream_id,
                              NGHTTP2_INTERNAL_ERROR);
}

void ServerSession::close_stream(std::int32_t id, std::uint32_t error_code) {
    Stream* stream = find(id);
    if (stream == nullptr) return;
    nghttp2_session_set_stream_user_data(session_.get(), id, nullptr);
    // Body bytes the owner got but never consumed still hold the connection window.
    if (stream->unconsumed > 0) {
        nghttp2_session_consume_connection(session_.get(), stream->unconsumed);
    }
    const bool announced = stream->announced;

    std::unique_ptr<Stream> owned = std::move(live_[stream->slot]);
    if (owned->slot + 1 != live_.size()) {
        live_[owned->slot] = std::move(live_.back());
        live_[owned->slot]->slot = owned->slot;
    }
    live_.pop_back();
    owned->clear();
    spare_.push_back(std::move(owned));  // at most as many as were ever open at once

    if (announced) handler_.on_stream_closed(id, error_code);
}

bool ServerSession::want_read() const {
    return !fatal_ && !failed_ && nghttp2_session_want_read(session_.get()) != 0;
}

bool ServerSession::want_write() const {
    return !fatal_ && nghttp2_session_want_write(session_.get()) != 0;
}

}  // namespace proxyd::worker::h2
