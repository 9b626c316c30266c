#include "worker/h2/client_session.hpp"

#include <algorithm>
#include <charconv>
#include <iterator>
#include <new>
#include <string>
#include <utility>

#include "common/http/parser.hpp"
#include "common/util/event_ptr.hpp"

namespace proxyd::worker::h2 {

// One request's state, from submit_request to its close. Owned by live_ and found by id there
// rather than through nghttp2's stream user data: nghttp2 opens the stream only when its HEADERS
// frame goes out, and the owner appends body or resets it before that.
struct ClientSession::Stream {
    std::int32_t id = 0;
    std::vector<Header> fields;   // of the header block being received
    int status = 0;               // its :status
    std::size_t block_bytes = 0;  // of that block, as RFC 9113 6.5.2 counts
    std::size_t unconsumed = 0;   // response body bytes handed to the owner, not yet consumed
    OutgoingBody request_body;    // waiting for the server's window
    std::uint32_t close_code = NGHTTP2_NO_ERROR;  // reported instead of nghttp2's, if set
    bool override_close = false;
    bool too_large = false;  // the header block being received broke the limit
    bool head_done = false;  // the final response head was delivered
    bool forwarding = true;  // response events go to the owner (not reset, not ended)
    bool reset = false;      // we queued a RST_STREAM

    void clear() {
        request_body.clear();
        fields.clear();
        status = 0;
        block_bytes = unconsumed = 0;
        close_code = NGHTTP2_NO_ERROR;
        override_close = too_large = head_done = reset = false;
        forwarding = true;
    }
};

namespace {

std::string_view view(const std::uint8_t* data, std::size_t len) {
    return {reinterpret_cast<const char*>(data), len};
}

nghttp2_nv field(std::string_view name, std::string_view value) {
    // nghttp2's API is not const-correct; with NGHTTP2_NV_FLAG_NONE it copies (lower-casing the
    // name) and never writes.
    return {reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
            reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
            NGHTTP2_NV_FLAG_NONE};
}

bool named(const nghttp2_nv& nv, std::string_view name) {
    return http::iequals(view(nv.name, nv.namelen), name);
}

// "te: trailers" is the only TE an HTTP/2 request may carry (RFC 9113 8.2.2), and gRPC servers
// refuse requests without it.
bool asks_for_trailers(const std::vector<Header>& headers) {
    for (const Header& header : headers) {
        if (http::iequals(header.name, "te") && http::list_contains_token(header.value, "trailers"))
            return true;
    }
    return false;
}

// Where stream `id` is, or would be, in the open streams ordered by id.
template <typename Streams>
auto position(Streams& live, std::int32_t id) {
    return std::lower_bound(live.begin(), live.end(), id,
                            [](const auto& stream, std::int32_t v) { return stream->id < v; });
}

OptionPtr make_options(const Limits& limits) {
    nghttp2_option* raw = nullptr;
    if (nghttp2_option_new(&raw) != 0) throw std::bad_alloc();
    OptionPtr option(raw);
    // WINDOW_UPDATE only for what the owner consumed: flow control reaches the client.
    nghttp2_option_set_no_auto_window_update(raw, 1);
    nghttp2_option_set_max_settings(raw, limits.max_settings_entries);
    nghttp2_option_set_max_continuations(raw, limits.max_continuations);
    nghttp2_option_set_max_outbound_ack(raw, limits.max_outbound_ack);
    return option;
}

}  // namespace

// nghttp2's C callbacks, each handing over to the member that does the work.
struct ClientSession::Callbacks {
    static ClientSession& self(void* user_data) { return *static_cast<ClientSession*>(user_data); }

    static int on_begin_headers(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
        if (frame->hd.type == NGHTTP2_HEADERS) self(user_data).begin_block(frame->hd.stream_id);
        return 0;
    }

    static int on_header(nghttp2_session*, const nghttp2_frame* frame, const std::uint8_t* name,
                         std::size_t name_len, const std::uint8_t* value, std::size_t value_len,
                         std::uint8_t, void* user_data) {
        ClientSession& session = self(user_data);
        if (Stream* stream = session.find(frame->hd.stream_id)) {
            session.add_header(*stream, view(name, name_len), view(value, value_len));
        }
        return 0;
    }

    static int on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
        return self(user_data).on_frame_received(*frame);
    }

    static int on_data_chunk_recv(nghttp2_session*, std::uint8_t, std::int32_t stream_id,
                                  const std::uint8_t* data, std::size_t len, void* user_data) {
        self(user_data).on_body_chunk(stream_id, data, len);
        return 0;
    }

    static ssize_t read_body(nghttp2_session*, std::int32_t stream_id, std::uint8_t*,
                             std::size_t length, std::uint32_t* flags, nghttp2_data_source*,
                             void* user_data) {
        ClientSession& session = self(user_data);
        return session.sender_.read(session.session_.get(), stream_id, session.body_of(stream_id),
                                    length, flags, session.block_);
    }

    static ssize_t send(nghttp2_session*, const std::uint8_t* data, std::size_t len, int,
                        void* user_data) {
        return self(user_data).sender_.add(data, len);
    }

    static int send_data(nghttp2_session*, nghttp2_frame* frame, const std::uint8_t* frame_header,
                         std::size_t length, nghttp2_data_source*, void* user_data) {
        ClientSession& session = self(user_data);
        return session.sender_.write_data_frame(session.body_of(frame->hd.stream_id), frame_header,
                                                length);
    }

    static int on_frame_send(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
        return self(user_data).on_frame_sent(*frame);
    }

    static int on_frame_not_send(nghttp2_session*, const nghttp2_frame* frame, int lib_error,
                                 void* user_data) {
        self(user_data).on_frame_not_sent(*frame, lib_error);
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

ClientSession::ClientSession(Handler& handler, const Limits& limits)
    : handler_(handler), limits_(limits) {
    OptionPtr option = make_options(limits_);
    nghttp2_session* raw = nullptr;
    if (nghttp2_session_client_new2(&raw, Callbacks::table(), this, option.get()) != 0) {
        throw std::bad_alloc();
    }
    session_.reset(raw);
    submit_settings();
}

ClientSession::~ClientSession() = default;

void ClientSession::submit_settings() {
    auto window = [](std::uint32_t size) {
        return std::min<std::uint32_t>(size, NGHTTP2_MAX_WINDOW_SIZE);
    };
    const nghttp2_settings_entry entries[] = {
        // A proxy has no use for pushed responses; with push off a PUSH_PROMISE is a protocol
        // error, so no server-initiated stream ever exists.
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, window(limits_.initial_window_size)},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, limits_.max_header_list_size},
        // RFC 9113 deprecated the RFC 7540 priority tree (see server_session.cpp).
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

ClientSession::Stream* ClientSession::find(std::int32_t id) const {
    auto it = position(live_, id);
    return it != live_.end() && (*it)->id == id ? it->get() : nullptr;
}

OutgoingBody* ClientSession::body_of(std::int32_t id) const {
    Stream* stream = find(id);
    return stream == nullptr ? nullptr : &stream->request_body;
}

// A stream's state comes from the spares when there are some: at most as many as were ever open
// at once.
std::unique_ptr<ClientSession::Stream> ClientSession::take_spare() {
    if (spare_.empty()) return std::make_unique<Stream>();
    std::unique_ptr<Stream> stream = std::move(spare_.back());
    spare_.pop_back();
    return stream;
}

bool ClientSession::receive(const std::uint8_t* data, std::size_t len) {
    if (fatal_ || failed_) return false;
    if (nghttp2_session_mem_recv(session_.get(), data, len) < 0) {
        // A flood of acknowledgements, or out of memory: nghttp2 wants the connection dropped
        // without another word.
        fatal_ = true;
        return false;
    }
    return !nghttp2_gave_up();
}

// A server that breaks the protocol (not HTTP/2 at all, a bad frame) does not fail mem_recv:
// nghttp2 queues a GOAWAY, ignores the rest of the input, and from then on refuses requests. With
// no GOAWAY from either side and stream ids left, that refusal can only mean it gave up.
bool ClientSession::nghttp2_gave_up() const {
    return !goaway_received_ && !draining_ &&
           nghttp2_session_get_next_stream_id(session_.get()) <= std::uint32_t{INT32_MAX} &&
           nghttp2_session_check_request_allowed(session_.get()) == 0;
}

bool ClientSession::can_submit() const {
    if (fatal_ || failed_ || draining_ || goaway_received_) return false;
    if (nghttp2_session_check_request_allowed(session_.get()) == 0) return false;
    const std::uint32_t server_limit = nghttp2_session_get_remote_settings(
        session_.get(), NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    return live_.size() < std::min(server_limit, limits_.max_concurrent_streams);
}

std::int32_t ClientSession::submit_request(std::string_view method, std::string_view scheme,
                                           std::string_view authority, std::string_view path,
                                           const std::vector<Header>& headers, bool end_stream) {
    if (!can_submit()) return -1;
    build_request(method, scheme, authority, path, headers);
    std::unique_ptr<Stream> stream = take_spare();  // before nghttp2 queues anything
    nghttp2_data_provider body{};
    body.read_callback = Callbacks::read_body;
    const std::int32_t id =
        nghttp2_submit_request(session_.get(), nullptr, request_.data(), request_.size(),
                               end_stream ? nullptr : &body, nullptr);
    if (id < 0) {
        spare_.push_back(std::move(stream));
        return id;
    }
    stream->id = id;
    stream->request_body.ended = end_stream;
    live_.push_back(std::move(stream));  // the highest id so far: live_ stays in order
    return id;
}

// The request's HEADERS block: pseudo-headers first (RFC 9113 8.3), then the owner's fields less
// what HTTP/2 forbids. nghttp2 copies the block at submission: the views need not outlive it.
void ClientSession::build_request(std::string_view method, std::string_view scheme,
                                  std::string_view authority, std::string_view path,
                                  const std::vector<Header>& headers) {
    block_.build_trailers(headers);  // the regular fields, filtered
    const nghttp2_nv* host = nullptr;
    for (std::size_t i = 0; i < block_.size(); ++i) {
        if (named(block_.data()[i], "host")) host = &block_.data()[i];
    }
    // RFC 9113 8.3.1: an intermediary converting from HTTP/1.1 takes :authority from Host.
    if (authority.empty() && host != nullptr) authority = view(host->value, host->valuelen);

    request_.clear();
    request_.push_back(field(":method", method));
    if (!scheme.empty()) request_.push_back(field(":scheme", scheme));
    if (!authority.empty()) request_.push_back(field(":authority", authority));
    if (!path.empty()) request_.push_back(field(":path", path));
    for (std::size_t i = 0; i < block_.size(); ++i) {
        // Host says again what :authority says, or something else an upstream could route by.
        if (!named(block_.data()[i], "host")) request_.push_back(block_.data()[i]);
    }
    if (asks_for_trailers(headers)) request_.push_back(field("te", "trailers"));
}

void ClientSession::append_request_data(std::int32_t id, evbuffer* data) {
    Stream* stream = find(id);
    if (stream == nullptr || stream->request_body.ended || stream->reset) {
        evbuffer_drain(data, evbuffer_get_length(data));
        return;
    }
    stream->request_body.append(session_.get(), id, data);
}

void ClientSession::end_request(std::int32_t id, const std::vector<Header>& trailers) {
    Stream* stream = find(id);
    if (stream == nullptr || stream->request_body.ended || stream->reset) return;
    stream->request_body.end(session_.get(), id, trailers);
}

void ClientSession::consume(std::int32_t id, std::size_t n) {
    // A closed stream's unconsumed bytes went back to the connection window at its close.
    Stream* stream = find(id);
    if (stream == nullptr) return;
    n = std::min(n, stream->unconsumed);
    stream->unconsumed -= n;
    nghttp2_session_consume(session_.get(), id, n);
}

std::size_t ClientSession::pending_request_bytes(std::int32_t id) const {
    Stream* stream = find(id);
    return stream == nullptr ? 0 : stream->request_body.pending();
}

void ClientSession::reset_stream(std::int32_t id, std::uint32_t error_code) {
    Stream* stream = find(id);
    if (stream == nullptr || stream->reset) return;
    stream->reset = true;
    stream->forwarding = false;
    // The stream may still close without error before the RST_STREAM goes out (the server's
    // END_STREAM came in the same read): the owner hears the code it was reset with all the
    // same, and an over-limit response can never pass for a complete one.
    stream->close_code = error_code;
    stream->override_close = true;
    // Before its HEADERS went out nghttp2 drops the request instead and tells on_frame_not_sent.
    nghttp2_submit_rst_stream(session_.get(), NGHTTP2_FLAG_NONE, id, error_code);
}

void ClientSession::shutdown_gracefully() {
    if (draining_ || fatal_) return;
    draining_ = true;
    // The last stream the server opened: none, push is off.
    nghttp2_submit_goaway(session_.get(), NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(session_.get()), NGHTTP2_NO_ERROR,
                          nullptr, 0);
}

bool ClientSession::flush(evbuffer* out, std::size_t watermark) {
    if (fatal_) return false;
    if (sender_.send(session_.get(), out, watermark) != 0) {
        fatal_ = true;
        return false;
    }
    sender_.notify_ran_dry([this](std::int32_t id) { return body_of(id); },
                           [this](std::int32_t id) { handler_.on_request_writable(id); });
    return !failed_;
}

int ClientSession::on_frame_sent(const nghttp2_frame& frame) {
    // nghttp2's GOAWAY after a protocol error of the server: the connection is over once it is
    // written.
    if (frame.hd.type == NGHTTP2_GOAWAY && frame.goaway.error_code != NGHTTP2_NO_ERROR) {
        failed_ = true;
    }
    return 0;
}

// A request HEADERS frame that did not go out: the owner reset the stream first, a GOAWAY came
// first (START_STREAM_NOT_ALLOWED: not processed, retryable), or nghttp2 could not encode it
// (over its 64 KiB header block limit: retrying would not help). When nghttp2 had not opened the
// stream yet it will never report its close, so the session does.
void ClientSession::on_frame_not_sent(const nghttp2_frame& frame, int lib_error) {
    if (frame.hd.type != NGHTTP2_HEADERS || frame.headers.cat != NGHTTP2_HCAT_REQUEST) return;
    Stream* stream = find(frame.hd.stream_id);
    if (stream == nullptr) return;
    if (!stream->reset) {
        // nghttp2 would report REFUSED_STREAM either way; only the GOAWAY case is retryable.
        stream->close_code = lib_error == NGHTTP2_ERR_START_STREAM_NOT_ALLOWED
                                 ? NGHTTP2_REFUSED_STREAM
                                 : NGHTTP2_INTERNAL_ERROR;
        stream->override_close = true;
    }
    // Otherwise nghttp2 closes the stream it opened next, and close_stream reports close_code.
    if (nghttp2_session_find_stream(session_.get(), frame.hd.stream_id) == nullptr) {
        close_stream(frame.hd.stream_id, stream->close_code);
    }
}

// A header block of a response starts: a head (interim or final) or the trailers, each with a
// limit of its own.
void ClientSession::begin_block(std::int32_t id) {
    Stream* stream = find(id);
    if (stream == nullptr) return;
    stream->fields.clear();
    stream->status = 0;
    stream->block_bytes = 0;
    stream->too_large = false;
}

void ClientSession::add_header(Stream& stream, std::string_view name, std::string_view value) {
    // Counted on what HPACK decoded, not on the wire: a one-byte reference to a 4 KiB table entry
    // costs 4 KiB here.
    stream.block_bytes += name.size() + value.size() + 32;
    if (stream.block_bytes > limits_.max_header_list_size) stream.too_large = true;
    if (stream.too_large || !stream.forwarding)
        return;  // keep decoding (HPACK state), keep nothing
    if (name == ":status") {
        // nghttp2 has checked it is three digits; it lets no other pseudo-header through.
        std::from_chars(value.data(), value.data() + value.size(), stream.status);
        return;
    }
    stream.fields.push_back({std::string(name), std::string(value)});
}

int ClientSession::on_frame_received(const nghttp2_frame& frame) {
    const bool end_stream = (frame.hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (frame.hd.type) {
        case NGHTTP2_HEADERS:
            if (Stream* stream = find(frame.hd.stream_id); stream != nullptr && stream->forwarding)
                finish_block(*stream, end_stream);
            break;
        case NGHTTP2_DATA:
            if (Stream* stream = find(frame.hd.stream_id); stream != nullptr && end_stream)
                end_response(*stream);
            break;
        case NGHTTP2_GOAWAY:
            // nghttp2 closes the streams above last_stream_id (REFUSED_STREAM) after this.
            goaway_received_ = true;
            handler_.on_goaway(frame.goaway.last_stream_id, frame.goaway.error_code);
            break;
        default:
            break;
    }
    return 0;
}

// A complete header block, already checked by nghttp2's HTTP messaging rules (a :status, no
// connection-specific field, a valid content-length; trailers only with END_STREAM).
void ClientSession::finish_block(Stream& stream, bool end_stream) {
    if (stream.too_large) {
        reset_stream(stream.id, NGHTTP2_ENHANCE_YOUR_CALM);
        return;
    }
    if (stream.head_done) {
        handler_.on_response_trailers(stream.id, std::move(stream.fields));
        end_response(stream);
        return;
    }
    if (stream.status < 200) {
        handler_.on_response_informational(stream.id, stream.status, std::move(stream.fields));
        return;
    }
    stream.head_done = true;
    handler_.on_response_head(stream.id, stream.status, std::move(stream.fields), end_stream);
    if (end_stream) end_response(stream);
}

void ClientSession::on_body_chunk(std::int32_t id, const std::uint8_t* data, std::size_t len) {
    Stream* stream = find(id);
    if (stream == nullptr || !stream->forwarding) {
        // Nobody will forward these bytes (a reset or over-limit response): acknowledge them now,
        // or they would shrink the connection window for good.
        nghttp2_session_consume(session_.get(), id, len);
        return;
    }
    stream->unconsumed += len;
    handler_.on_response_data(id, data, len);
}

void ClientSession::end_response(Stream& stream) {
    if (!stream.forwarding) return;
    stream.forwarding = false;
    handler_.on_response_end(stream.id);
}

void ClientSession::close_stream(std::int32_t id, std::uint32_t error_code) {
    auto it = position(live_, id);
    if (it == live_.end() || (*it)->id != id) return;
    std::unique_ptr<Stream> stream = std::move(*it);
    live_.erase(it);
    if (stream->override_close) error_code = stream->close_code;
    // Body bytes the owner got but never consumed still hold the connection window.
    if (stream->unconsumed > 0) {
        nghttp2_session_consume_connection(session_.get(), stream->unconsumed);
    }
    stream->clear();
    spare_.push_back(std::move(stream));
    handler_.on_stream_closed(id, error_code);
}

bool ClientSession::want_read() const {
    return !fatal_ && !failed_ && nghttp2_session_want_read(session_.get()) != 0;
}

bool ClientSession::want_write() const {
    return !fatal_ && nghttp2_session_want_write(session_.get()) != 0;
}

}  // namespace proxyd::worker::h2
