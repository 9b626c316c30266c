// The HTTP/2 server session against an in-memory nghttp2 client session: the bytes each side
// produces are handed to the other by the test, so every exchange is deterministic and no
// socket is involved.
#include <doctest.h>
#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/util/event_ptr.hpp"
#include "worker/h2/server_session.hpp"

using namespace proxyd;
using namespace proxyd::worker::h2;

namespace {

using Fields = std::vector<std::pair<std::string, std::string>>;

std::string drain(evbuffer* buffer) {
    std::string text(evbuffer_get_length(buffer), '\0');
    evbuffer_remove(buffer, text.data(), text.size());
    return text;
}

const Header* find(const std::vector<Header>& headers, const std::string& name) {
    for (const Header& header : headers) {
        if (header.name == name) return &header;
    }
    return nullptr;
}

std::string value_of(const std::vector<Header>& headers, const std::string& name) {
    const Header* header = find(headers, name);
    return header == nullptr ? "<none>" : header->value;
}

std::string pattern(std::size_t size) {
    std::string text(size, '\0');
    for (std::size_t i = 0; i < size; ++i)
        text[i] = static_cast<char>('a' + (i * 7 + i / 991) % 26);
    return text;
}

// The owner of the server session: records what it is told, in order.
struct Owner : ServerSession::Handler {
    struct Request {
        RequestHead head;
        std::string body;
        std::size_t chunks = 0;
        std::vector<Header> trailers;
        bool ended = false;
        int rejected = 0;
        std::optional<std::uint32_t> closed;
    };

    ServerSession* session = nullptr;
    std::map<std::int32_t, Request> requests;
    std::vector<std::string> events;
    std::vector<std::int32_t> writable;
    std::size_t data_after_close = 0;

    void on_request(std::int32_t id, RequestHead&& head) override {
        events.push_back("request " + std::to_string(id));
        requests[id].head = std::move(head);
    }
    void on_request_data(std::int32_t id, const std::uint8_t* data, std::size_t len) override {
        Request& request = requests[id];
        if (request.closed) ++data_after_close;
        request.body.append(reinterpret_cast<const char*>(data), len);
        ++request.chunks;
    }
    void on_request_trailers(std::int32_t id, std::vector<Header>&& trailers) override {
        events.push_back("trailers " + std::to_string(id));
        requests[id].trailers = std::move(trailers);
    }
    void on_request_end(std::int32_t id) override {
        events.push_back("end " + std::to_string(id));
        requests[id].ended = true;
    }
    // Answers as the proxy will: its own error response, JSON body and all.
    void on_request_rejected(std::int32_t id, int status, RequestHead&& partial) override {
        events.push_back("rejected " + std::to_string(id));
        requests[id].rejected = status;
        requests[id].head = std::move(partial);
        session->submit_response(id, status, {{"content-type", "application/json"}}, false);
        EvbufferPtr body = make_evbuffer();
        evbuffer_add_printf(body.get(), "{\"error\": \"request header too large\"}");
        session->append_response_data(id, body.get());
        session->end_response(id);
    }
    void on_stream_closed(std::int32_t id, std::uint32_t error_code) override {
        events.push_back("closed " + std::to_string(id));
        requests[id].closed = error_code;
    }
    void on_response_writable(std::int32_t id) override { writable.push_back(id); }
};

struct ClientOptions {
    std::uint32_t initial_window = 0;    // 0: the protocol's 65535
    std::int32_t connection_window = 0;  // 0: the protocol's 65535
    std::size_t max_send_header_block = 0;
};

// An nghttp2 client session in memory, with what it received per stream.
class Client {
  public:
    struct Response {
        std::vector<Header> headers;
        std::vector<Header> trailers;
        std::string body;
        std::optional<std::uint32_t> closed;
        std::optional<std::uint32_t> reset;  // RST_STREAM received
    };

    explicit Client(const ClientOptions& options = {}) {
        nghttp2_session_callbacks* raw_callbacks = nullptr;
        REQUIRE(nghttp2_session_callbacks_new(&raw_callbacks) == 0);
        CallbacksPtr callbacks(raw_callbacks);
        nghttp2_session_callbacks_set_on_header_callback(raw_callbacks, on_header);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(raw_callbacks, on_data);
        nghttp2_session_callbacks_set_on_frame_recv_callback(raw_callbacks, on_frame);
        nghttp2_session_callbacks_set_on_stream_close_callback(raw_callbacks, on_close);
        nghttp2_option* raw_option = nullptr;
        REQUIRE(nghttp2_option_new(&raw_option) == 0);
        OptionPtr option(raw_option);
        if (options.max_send_header_block > 0) {
            nghttp2_option_set_max_send_header_block_length(raw_option,
                                                            options.max_send_header_block);
        }
        nghttp2_session* raw = nullptr;
        REQUIRE(nghttp2_session_client_new2(&raw, raw_callbacks, this, raw_option) == 0);
        session_.reset(raw);
        std::vector<nghttp2_settings_entry> settings;
        if (options.initial_window > 0) {
            settings.push_back({NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, options.initial_window});
        }
        nghttp2_submit_settings(raw, NGHTTP2_FLAG_NONE, settings.data(), settings.size());
        if (options.connection_window > 0) {
            nghttp2_session_set_local_window_size(raw, NGHTTP2_FLAG_NONE, 0,
                                                  options.connection_window);
        }
    }
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    // A request with exactly these fields; a body when `body` is set (more may follow with
    // upload() until `end`).
    std::int32_t submit(const Fields& fields, std::optional<std::string> body = std::nullopt,
                        bool end = true) {
        // Sent as given (nghttp2 would lower-case copied names): the fields must outlive the
        // HEADERS frame, so the client keeps them.
        const Fields& kept = sent_fields_.emplace_back(fields);
        std::vector<nghttp2_nv> nva;
        for (const auto& field : kept) {
            nva.push_back({reinterpret_cast<std::uint8_t*>(const_cast<char*>(field.first.data())),
                           reinterpret_cast<std::uint8_t*>(const_cast<char*>(field.second.data())),
                           field.first.size(), field.second.size(),
                           NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE});
        }
        nghttp2_data_provider provider{};
        provider.read_callback = read_upload;
        const std::int32_t id = nghttp2_submit_request(
            session_.get(), nullptr, nva.data(), nva.size(), body ? &provider : nullptr, nullptr);
        REQUIRE(id > 0);
        if (body) uploads_[id] = Upload{*body, 0, end, false};
        return id;
    }

    std::int32_t get(const std::string& path, const Fields& extra = {}) {
        Fields fields = {{":method", "GET"},
                         {":scheme", "http"},
                         {":authority", "example.com"},
                         {":path", path}};
        fields.insert(fields.end(), extra.begin(), extra.end());
        return submit(fields);
    }

    std::int32_t post(const std::string& path, const std::string& body, bool end = true,
                      const Fields& extra = {}) {
        Fields fields = {{":method", "POST"},
                         {":scheme", "http"},
                         {":authority", "example.com"},
                         {":path", path}};
        fields.insert(fields.end(), extra.begin(), extra.end());
        return submit(fields, body, end);
    }

    void upload(std::int32_t id, const std::string& more, bool end) {
        Upload& upload = uploads_.at(id);
        upload.data += more;
        upload.end = end;
        if (upload.deferred) {
            upload.deferred = false;
            nghttp2_session_resume_data(session_.get(), id);
        }
    }

    void reset(std::int32_t id, std::uint32_t code) {
        REQUIRE(nghttp2_submit_rst_stream(session_.get(), NGHTTP2_FLAG_NONE, id, code) == 0);
    }

    // Everything the client has to send now.
    std::string output() {
        std::string bytes;
        for (;;) {
            const std::uint8_t* data = nullptr;
            const ssize_t n = nghttp2_session_mem_send(session_.get(), &data);
            REQUIRE(n >= 0);
            if (n == 0) return bytes;
            bytes.append(reinterpret_cast<const char*>(data), static_cast<std::size_t>(n));
        }
    }

    // The same, one frame per string (nghttp2 hands them out so).
    std::vector<std::string> frames() {
        std::vector<std::string> frames;
        for (;;) {
            const std::uint8_t* data = nullptr;
            const ssize_t n = nghttp2_session_mem_send(session_.get(), &data);
            REQUIRE(n >= 0);
            if (n == 0) return frames;
            frames.emplace_back(reinterpret_cast<const char*>(data), static_cast<std::size_t>(n));
        }
    }

    void input(const std::string& bytes) {
        const ssize_t n = nghttp2_session_mem_recv(
            session_.get(), reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
        REQUIRE(n == static_cast<ssize_t>(bytes.size()));
    }

    nghttp2_session* raw() const { return session_.get(); }
    Response& response(std::int32_t id) { return responses_[id]; }
    std::size_t responses() const { return responses_.size(); }
    std::optional<std::uint32_t> goaway_error;
    std::int32_t goaway_last_stream = -1;

  private:
    struct Upload {
        std::string data;
        std::size_t offset = 0;
        bool end = true;
        bool deferred = false;
    };

    static Client& self(void* user_data) { return *static_cast<Client*>(user_data); }

    static int on_header(nghttp2_session*, const nghttp2_frame* frame, const std::uint8_t* name,
                         std::size_t name_len, const std::uint8_t* value, std::size_t value_len,
                         std::uint8_t, void* user_data) {
        Response& response = self(user_data).responses_[frame->hd.stream_id];
        Header header{std::string(reinterpret_cast<const char*>(name), name_len),
                      std::string(reinterpret_cast<const char*>(value), value_len)};
        if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE) {
            response.headers.push_back(std::move(header));
        } else {
            response.trailers.push_back(std::move(header));
        }
        return 0;
    }

    static int on_data(nghttp2_session*, std::uint8_t, std::int32_t id, const std::uint8_t* data,
                       std::size_t len, void* user_data) {
        self(user_data).responses_[id].body.append(reinterpret_cast<const char*>(data), len);
        return 0;
    }

    static int on_frame(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
        Client& client = self(user_data);
        if (frame->hd.type == NGHTTP2_GOAWAY) {
            client.goaway_error = frame->goaway.error_code;
            client.goaway_last_stream = frame->goaway.last_stream_id;
        } else if (frame->hd.type == NGHTTP2_RST_STREAM) {
            client.responses_[frame->hd.stream_id].reset = frame->rst_stream.error_code;
        }
        return 0;
    }

    static int on_close(nghttp2_session*, std::int32_t id, std::uint32_t error_code,
                        void* user_data) {
        self(user_data).responses_[id].closed = error_code;
        return 0;
    }

    static ssize_t read_upload(nghttp2_session*, std::int32_t id, std::uint8_t* buf,
                               std::size_t length, std::uint32_t* flags, nghttp2_data_source*,
                               void* user_data) {
        Upload& upload = self(user_data).uploads_.at(id);
        const std::size_t n = std::min(length, upload.data.size() - upload.offset);
        if (n == 0 && !upload.end) {
            upload.deferred = true;
            return NGHTTP2_ERR_DEFERRED;
        }
        std::copy_n(upload.data.data() + upload.offset, n, buf);
        upload.offset += n;
        if (upload.end && upload.offset == upload.data.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
        return static_cast<ssize_t>(n);
    }

    SessionPtr session_;
    std::deque<Fields> sent_fields_;
    std::map<std::int32_t, Upload> uploads_;
    std::map<std::int32_t, Response> responses_;
};

// A server session, its owner and a client, wired back to back.
struct Connection {
    explicit Connection(const Limits& limits = {}, const ClientOptions& options = {})
        : server(owner, limits), client(options) {
        owner.session = &server;
    }

    // The client's pending bytes to the server; false if the server gave up.
    bool to_server() {
        const std::string bytes = client.output();
        if (bytes.empty()) return true;
        received_ok =
            server.receive(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()) &&
            received_ok;
        return received_ok;
    }

    // The server's pending frames, as flush() leaves them.
    std::string from_server(std::size_t watermark = SIZE_MAX) {
        EvbufferPtr out = make_evbuffer();
        flushed_ok = server.flush(out.get(), watermark) && flushed_ok;
        return drain(out.get());
    }

    // One round trip; false when nothing moved either way.
    bool step() {
        const std::string request_bytes = client.output();
        if (!request_bytes.empty()) {
            received_ok =
                server.receive(reinterpret_cast<const std::uint8_t*>(request_bytes.data()),
                               request_bytes.size()) &&
                received_ok;
        }
        const std::string response_bytes = from_server();
        if (!response_bytes.empty()) client.input(response_bytes);
        return !request_bytes.empty() || !response_bytes.empty();
    }

    // Until both sides are quiet.
    void pump() {
        for (int round = 0; round < 100000 && step(); ++round) {
        }
    }

    void respond(std::int32_t id, int status, const std::string& body,
                 const std::vector<Header>& headers = {}) {
        REQUIRE(server.submit_response(id, status, headers, false));
        EvbufferPtr chain = make_evbuffer();
        evbuffer_add(chain.get(), body.data(), body.size());
        server.append_response_data(id, chain.get());
        server.end_response(id);
    }

    Owner owner;
    ServerSession server;
    Client client;
    bool received_ok = true;
    bool flushed_ok = true;
};

}  // namespace

TEST_CASE("h2: a GET arrives as one head with its pseudo-headers, fields and end_stream") {
    Connection c;
    const std::int32_t id = c.client.get(
        "/index.html?x=1",
        {{"accept", "*/*"}, {"user-agent", "test/1"}, {"cookie", "a=1"}, {"cookie", "b=2"}});
    c.pump();
    REQUIRE(c.owner.requests.count(id) == 1);
    const RequestHead& head = c.owner.requests[id].head;
    CHECK(head.method == "GET");
    CHECK(head.scheme == "http");
    CHECK(head.authority == "example.com");
    CHECK(head.path == "/index.html?x=1");
    CHECK(head.end_stream);
    CHECK_FALSE(head.content_length.has_value());
    REQUIRE(head.headers.size() == 4);
    CHECK(head.headers[0].name == "accept");
    CHECK(head.headers[1].value == "test/1");
    CHECK(head.headers[2].value == "a=1");  // cookie crumbs stay apart, in order
    CHECK(head.headers[3].value == "b=2");
    // One request event, then its end, nothing else yet.
    CHECK(c.owner.events == std::vector<std::string>{"request 1", "end 1"});
    CHECK(c.server.open_streams() == 1);

    REQUIRE(c.server.submit_response(id, 204, {}, true));
    CHECK_FALSE(c.server.submit_response(id, 200, {}, true));  // answered already
    c.pump();
    CHECK(value_of(c.client.response(id).headers, ":status") == "204");
    CHECK(c.client.response(id).closed == NGHTTP2_NO_ERROR);
    CHECK(c.owner.requests[id].closed == NGHTTP2_NO_ERROR);
    CHECK(c.server.open_streams() == 0);
    CHECK(c.received_ok);
    CHECK(c.flushed_ok);
}

TEST_CASE("h2: Host stands in for a missing :authority; a Host naming another is malformed") {
    Connection c;
    const std::int32_t plain = c.client.submit(
        {{":method", "GET"}, {":scheme", "https"}, {":path", "/"}, {"host", "Example.org"}});
    const std::int32_t same = c.client.submit({{":method", "GET"},
                                               {":scheme", "https"},
                                               {":authority", "example.org"},
                                               {":path", "/"},
                                               {"host", "EXAMPLE.org"}});
    const std::int32_t other = c.client.submit({{":method", "GET"},
                                                {":scheme", "https"},
                                                {":authority", "example.org"},
                                                {":path", "/"},
                                                {"host", "evil.example"}});
    c.pump();
    CHECK(c.owner.requests[plain].head.authority == "Example.org");
    CHECK(c.owner.requests[same].head.authority == "example.org");
    CHECK(c.owner.requests.count(other) == 0);
    CHECK(c.client.response(other).reset == NGHTTP2_PROTOCOL_ERROR);
    CHECK(c.received_ok);
}

TEST_CASE("h2: malformed requests are reset by nghttp2 and never reach the owner") {
    Connection c;
    const std::int32_t connection_header = c.client.get("/", {{"connection", "keep-alive"}});
    const std::int32_t upper_case = c.client.get("/", {{"X-Upper", "1"}});
    const std::int32_t no_path =
        c.client.submit({{":method", "GET"}, {":scheme", "http"}, {":authority", "a"}});
    const std::int32_t te_gzip = c.client.get("/", {{"te", "gzip"}});
    const std::int32_t bad_length = c.client.post("/", "abc", true, {{"content-length", "5"}});
    const std::int32_t fine = c.client.get("/fine", {{"te", "trailers"}});
    c.pump();
    for (std::int32_t id : {connection_header, upper_case, no_path, te_gzip}) {
        CAPTURE(id);
        CHECK(c.owner.requests.count(id) == 0);
        CHECK(c.client.response(id).reset == NGHTTP2_PROTOCOL_ERROR);
    }
    // The length mismatch shows only at the end of the body: the head went to the owner, the
    // reset follows as a close with PROTOCOL_ERROR, and no end.
    CHECK(c.owner.requests[bad_length].head.content_length == 5u);
    CHECK_FALSE(c.owner.requests[bad_length].ended);
    CHECK(c.owner.requests[bad_length].closed == NGHTTP2_PROTOCOL_ERROR);
    CHECK(c.owner.requests[fine].ended);
    CHECK(c.received_ok);
    CHECK(c.server.want_read());
}

TEST_CASE("h2: a 1 MiB POST body arrives in chunks, only as fast as the owner consumes it") {
    Connection c;  // 256 KiB stream window, 1 MiB connection window
    const std::string body = pattern(1024 * 1024);
    const std::int32_t id =
        c.client.post("/upload", body, true, {{"content-length", std::to_string(body.size())}});
    c.pump();
    Owner::Request& request = c.owner.requests[id];
    CHECK(request.head.content_length == body.size());
    CHECK_FALSE(request.head.end_stream);
    // Without consume() the client cannot send more than the stream's initial window...
    CHECK(request.body.size() == 256 * 1024);
    CHECK(nghttp2_session_get_stream_remote_window_size(c.client.raw(), id) == 0);
    c.pump();
    CHECK(request.body.size() == 256 * 1024);
    CHECK_FALSE(request.ended);

    // ... and after it, it can; never more than the window is unconsumed.
    std::size_t consumed = 0;
    for (int round = 0; round < 100 && !request.ended; ++round) {
        CHECK(request.body.size() - consumed <= 256 * 1024);
        c.server.consume(id, request.body.size() - consumed);
        consumed = request.body.size();
        c.pump();
    }
    CHECK(request.ended);
    CHECK(request.body == body);
    CHECK(request.chunks > 16);  // frames of at most 16 KiB
    CHECK(c.owner.events.back() == "end 1");
}

TEST_CASE("h2: a response head, a body appended in pieces and its end reach the client intact") {
    Connection c;
    const std::int32_t id = c.client.get("/");
    c.pump();
    REQUIRE(c.server.submit_response(id, 200,
                                     {{"content-type", "text/plain"},
                                      {"X-Upstream-Name", "A"},
                                      {"connection", "close"},
                                      {"transfer-encoding", "chunked"},
                                      {"keep-alive", "timeout=5"},
                                      {":status", "500"}},
                                     false));
    std::string expected;
    const std::string pieces[] = {"hello ", pattern(100 * 1024), "", "world"};
    for (const std::string& piece : pieces) {
        EvbufferPtr chain = make_evbuffer();
        evbuffer_add(chain.get(), piece.data(), piece.size());
        c.server.append_response_data(id, chain.get());
        CHECK(evbuffer_get_length(chain.get()) == 0);  // moved, not copied
        expected += piece;
        c.pump();
        CHECK(c.server.pending_response_bytes(id) == 0);
        CHECK_FALSE(c.client.response(id).closed.has_value());
    }
    CHECK_FALSE(c.owner.writable.empty());  // the body ran dry between pieces
    c.server.end_response(id);
    c.pump();

    Client::Response& response = c.client.response(id);
    CHECK(value_of(response.headers, ":status") == "200");
    CHECK(value_of(response.headers, "content-type") == "text/plain");
    CHECK(value_of(response.headers, "x-upstream-name") == "A");  // lower-cased
    CHECK(response.headers.size() == 3);  // connection-specific fields and :status 500 dropped
    CHECK(response.body == expected);
    CHECK(response.closed == NGHTTP2_NO_ERROR);
    CHECK(c.owner.requests[id].closed == NGHTTP2_NO_ERROR);
}

TEST_CASE("h2: trailers follow the body (gRPC's grpc-status)") {
    Connection c;
    const Fields grpc = {{"content-type", "application/grpc"}, {"te", "trailers"}};
    const std::string message("\0\0\0\0\3abc", 8);
    const std::int32_t id = c.client.post("/pkg.Service/Call", message, true, grpc);
    const std::int32_t trailers_only = c.client.post("/pkg.Service/Missing", message, true, grpc);
    c.pump();
    CHECK(c.owner.requests[id].body == message);

    REQUIRE(c.server.submit_response(id, 200, {{"content-type", "application/grpc"}}, false));
    EvbufferPtr chain = make_evbuffer();
    evbuffer_add(chain.get(), message.data(), message.size());
    c.server.append_response_data(id, chain.get());
    c.server.end_response(id, {{"grpc-status", "0"}, {"Grpc-Message", "ok"}});
    // A failed call answers with one HEADERS frame carrying the status.
    REQUIRE(c.server.submit_response(
        trailers_only, 200, {{"content-type", "application/grpc"}, {"grpc-status", "12"}}, true));
    c.pump();

    Client::Response& response = c.client.response(id);
    CHECK(response.body == message);
    CHECK(value_of(response.trailers, "grpc-status") == "0");
    CHECK(value_of(response.trailers, "grpc-message") == "ok");
    CHECK(response.closed == NGHTTP2_NO_ERROR);
    CHECK(value_of(c.client.response(trailers_only).headers, "grpc-status") == "12");
    CHECK(c.client.response(trailers_only).closed == NGHTTP2_NO_ERROR);
}

TEST_CASE("h2: request trailers reach the owner before the end") {
    Connection c;
    const std::int32_t id = c.client.post("/", "abc", false);
    c.pump();
    // nghttp2's client sends trailers with the DATA provider's NO_END_STREAM; in memory it is
    // simpler to send a HEADERS frame with END_STREAM after the body.
    c.client.upload(id, "def", false);
    c.pump();
    const nghttp2_nv trailer = {reinterpret_cast<std::uint8_t*>(const_cast<char*>("x-checksum")),
                                reinterpret_cast<std::uint8_t*>(const_cast<char*>("42")), 10, 2,
                                NGHTTP2_NV_FLAG_NONE};
    REQUIRE(nghttp2_submit_headers(c.client.raw(), NGHTTP2_FLAG_END_STREAM, id, nullptr, &trailer,
                                   1, nullptr) == 0);
    c.pump();
    CHECK(c.owner.requests[id].body == "abcdef");
    CHECK(value_of(c.owner.requests[id].trailers, "x-checksum") == "42");
    CHECK(c.owner.events == std::vector<std::string>{"request 1", "trailers 1", "end 1"});
}

TEST_CASE("h2: 100 concurrent streams on one connection each get their own response") {
    Connection c;
    std::vector<std::int32_t> ids;
    for (int i = 0; i < 100; ++i) ids.push_back(c.client.get("/item/" + std::to_string(i)));
    c.pump();
    CHECK(c.owner.requests.size() == 100);
    CHECK(c.server.open_streams() == 100);
    // Answered in reverse order, bodies of different sizes.
    for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
        const std::string& path = c.owner.requests[*it].head.path;
        c.respond(*it, 200, path + ":" + pattern(static_cast<std::size_t>(*it) * 100));
    }
    c.pump();
    for (std::int32_t id : ids) {
        CAPTURE(id);
        Client::Response& response = c.client.response(id);
        CHECK(value_of(response.headers, ":status") == "200");
        CHECK(response.body ==
              c.owner.requests[id].head.path + ":" + pattern(static_cast<std::size_t>(id) * 100));
        CHECK(response.closed == NGHTTP2_NO_ERROR);
    }
    CHECK(c.server.open_streams() == 0);
}

TEST_CASE("h2: a stream the client resets closes for the owner; its unconsumed body is returned") {
    Connection c;
    std::vector<std::int32_t> ids;
    for (int i = 0; i < 4; ++i) ids.push_back(c.client.post("/", pattern(300 * 1024)));
    c.pump();
    // 4 x 256 KiB arrived and nobody consumed them: the connection window is used up.
    CHECK(nghttp2_session_get_remote_window_size(c.client.raw()) == 0);
    for (std::int32_t id : ids) c.client.reset(id, NGHTTP2_CANCEL);
    c.pump();
    for (std::int32_t id : ids) {
        CAPTURE(id);
        CHECK(c.owner.requests[id].closed == NGHTTP2_CANCEL);
        CHECK_FALSE(c.owner.requests[id].ended);
        // The id is dead: these are harmless no-ops.
        c.server.consume(id, 1000);
        CHECK_FALSE(c.server.submit_response(id, 200, {}, true));
        c.server.reset_stream(id, NGHTTP2_CANCEL);
        CHECK(c.server.pending_response_bytes(id) == 0);
    }
    CHECK(c.server.open_streams() == 0);
    c.pump();
    // The 1 MiB the owner never consumed went back to the connection window.
    CHECK(nghttp2_session_get_remote_window_size(c.client.raw()) == 1024 * 1024);
    // And the connection carries on.
    const std::int32_t next = c.client.post("/next", pattern(1000));
    c.pump();
    CHECK(c.owner.requests[next].ended);
    CHECK(c.owner.requests[next].body == pattern(1000));
}

TEST_CASE("h2: request data in flight when the owner reset the stream is dropped") {
    Connection c;
    const std::int32_t id = c.client.post("/", "abc", false);
    c.pump();
    REQUIRE(c.owner.requests[id].body == "abc");

    // Reset before the client hears of it: its next DATA crosses the RST_STREAM.
    c.server.reset_stream(id, NGHTTP2_CANCEL);
    c.client.upload(id, pattern(40 * 1024), false);
    REQUIRE(c.to_server());
    const std::string rst = c.from_server();
    CHECK(c.owner.requests[id].closed == NGHTTP2_CANCEL);
    // Data that comes after the stream closed on our side.
    c.client.upload(id, pattern(20 * 1024), true);
    REQUIRE(c.to_server());
    c.client.input(rst);
    c.pump();
    CHECK(c.owner.requests[id].body == "abc");
    CHECK(c.owner.data_after_close == 0);
    CHECK_FALSE(c.owner.requests[id].ended);
    CHECK(c.client.response(id).reset == NGHTTP2_CANCEL);
    CHECK(c.received_ok);
    // The connection lives on and its window was not lost to the dropped bytes.
    const std::string body = pattern(900 * 1024);
    const std::int32_t next = c.client.post("/next", body);
    for (int round = 0; round < 50 && !c.owner.requests[next].ended; ++round) {
        c.pump();
        c.server.consume(next, SIZE_MAX);
    }
    CHECK(c.owner.requests[next].body == body);
}

TEST_CASE("h2: a header list over the limit is refused with the owner's 431") {
    Limits limits;
    limits.max_header_list_size = 4096;
    Connection c(limits);
    const std::int32_t big = c.client.get("/big", {{"x-big", std::string(5000, 'a')}});
    c.pump();
    CHECK(c.owner.requests[big].rejected == 431);
    CHECK(c.owner.requests[big].head.path == "/big");  // what came before the limit
    CHECK(c.owner.requests[big].head.headers.empty());
    CHECK(c.owner.events == std::vector<std::string>{"rejected 1", "closed 1"});
    Client::Response& response = c.client.response(big);
    CHECK(value_of(response.headers, ":status") == "431");
    CHECK(response.body == "{\"error\": \"request header too large\"}");
    CHECK(response.closed == NGHTTP2_NO_ERROR);

    SUBCASE("with a body, which is discarded and which the client is told to stop sending") {
        const std::int32_t id =
            c.client.post("/big", "abc", false, {{"x-big", std::string(5000, 'a')}});
        c.pump();
        CHECK(c.owner.requests[id].rejected == 431);
        CHECK(c.owner.requests[id].body.empty());
        CHECK(value_of(c.client.response(id).headers, ":status") == "431");
        CHECK(c.client.response(id).reset == NGHTTP2_NO_ERROR);
        CHECK(c.owner.requests[id].closed == NGHTTP2_NO_ERROR);
    }
    SUBCASE("the next request on the connection is served") {
        const std::int32_t id = c.client.get("/small", {{"x-small", std::string(3000, 'a')}});
        c.pump();
        CHECK(c.owner.requests[id].rejected == 0);
        CHECK(c.owner.requests[id].ended);
    }
    CHECK(c.received_ok);
}

TEST_CASE("h2: the header list limit counts decoded bytes, so HPACK cannot amplify past it") {
    ClientOptions options;
    options.max_send_header_block = 1024 * 1024;
    Connection c(Limits{}, options);  // 64 KiB limit
    Fields fields;
    // Entries over 3/4 of the 4 KiB table are not indexed: 3000 bytes are.
    for (int i = 0; i < 25; ++i) fields.push_back({"x-repeat", std::string(3000, 'r')});
    const std::int32_t id = c.client.get("/", fields);
    const std::string wire = c.client.output();
    // 75 KB of fields in a few: every repetition is a one-byte reference to the dynamic table.
    CHECK(wire.size() < 8 * 1024);
    REQUIRE(c.server.receive(reinterpret_cast<const std::uint8_t*>(wire.data()), wire.size()));
    c.pump();
    CHECK(c.owner.requests[id].rejected == 431);
    CHECK(value_of(c.client.response(id).headers, ":status") == "431");
}

TEST_CASE("h2: oversize request trailers reset the stream") {
    Limits limits;
    limits.max_header_list_size = 4096;
    Connection c(limits);
    const std::int32_t id = c.client.post("/", "abc", false);
    c.pump();
    const std::string big(5000, 't');
    const nghttp2_nv trailer = {reinterpret_cast<std::uint8_t*>(const_cast<char*>("x-t")),
                                reinterpret_cast<std::uint8_t*>(const_cast<char*>(big.data())), 3,
                                big.size(), NGHTTP2_NV_FLAG_NONE};
    REQUIRE(nghttp2_submit_headers(c.client.raw(), NGHTTP2_FLAG_END_STREAM, id, nullptr, &trailer,
                                   1, nullptr) == 0);
    c.pump();
    CHECK(c.owner.requests[id].trailers.empty());
    CHECK_FALSE(c.owner.requests[id].ended);
    CHECK(c.owner.requests[id].closed == NGHTTP2_ENHANCE_YOUR_CALM);
    CHECK(c.client.response(id).reset == NGHTTP2_ENHANCE_YOUR_CALM);
}

TEST_CASE("h2: streams beyond max_concurrent_streams are refused") {
    Limits limits;
    limits.max_concurrent_streams = 3;
    Connection c(limits);
    // The client opens five before it has seen our SETTINGS (it assumes 100 until then).
    std::vector<std::int32_t> ids;
    for (int i = 0; i < 5; ++i) ids.push_back(c.client.get("/n" + std::to_string(i)));
    REQUIRE(c.to_server());
    c.pump();
    CHECK(c.owner.requests.size() == 3);
    CHECK(c.server.open_streams() == 3);
    CHECK(c.client.response(ids[3]).reset == NGHTTP2_REFUSED_STREAM);
    CHECK(c.client.response(ids[4]).reset == NGHTTP2_REFUSED_STREAM);

    // Having seen the limit, the client holds further requests back until a stream closes.
    const std::int32_t later = c.client.get("/later");
    c.pump();
    CHECK(c.owner.requests.count(later) == 0);
    c.respond(ids[0], 200, "done");
    c.pump();
    CHECK(c.owner.requests.count(later) == 1);
    CHECK(c.received_ok);
}

TEST_CASE("h2: a client that exceeds the limit it acknowledged loses the connection") {
    Limits limits;
    limits.max_concurrent_streams = 3;
    Connection c(limits);
    for (int i = 0; i < 4; ++i) c.client.get("/");
    // The client's frames: preface, SETTINGS, four HEADERS. Its SETTINGS ACK is made to reach
    // us before the HEADERS, as if it had sent them after it knew the limit.
    std::vector<std::string> frames = c.client.frames();
    REQUIRE(frames.size() == 6);
    const std::string preface = frames[0] + frames[1];
    REQUIRE(
        c.server.receive(reinterpret_cast<const std::uint8_t*>(preface.data()), preface.size()));
    c.client.input(c.from_server());
    const std::string ack = c.client.output();
    REQUIRE(c.server.receive(reinterpret_cast<const std::uint8_t*>(ack.data()), ack.size()));
    for (std::size_t i = 2; i < frames.size(); ++i) {
        CHECK(c.server.receive(reinterpret_cast<const std::uint8_t*>(frames[i].data()),
                               frames[i].size()));
    }
    CHECK(c.owner.requests.size() == 3);
    c.client.input(c.from_server());
    CHECK_FALSE(c.flushed_ok);
    CHECK(c.client.goaway_error == NGHTTP2_PROTOCOL_ERROR);
    CHECK(c.server.finished());
}

TEST_CASE("h2: a rapid-reset burst ends the connection with ENHANCE_YOUR_CALM") {
    Connection c;
    c.pump();  // SETTINGS exchanged
    std::string burst;
    for (int i = 0; i < 2000; ++i) {
        const std::int32_t id = c.client.get("/");
        burst += c.client.output();
        c.client.reset(id, NGHTTP2_CANCEL);
        burst += c.client.output();
    }
    CHECK_FALSE(
        c.server.receive(reinterpret_cast<const std::uint8_t*>(burst.data()), burst.size()));
    // The budget is 1000 resets (plus 33 a second of refill while the burst is processed): work
    // stopped there, not after 2000 streams.
    CHECK(c.owner.requests.size() < 1100);
    CHECK(c.owner.requests.size() >= 1000);
    CHECK(c.server.open_streams() == 0);
    CHECK_FALSE(c.server.receive(reinterpret_cast<const std::uint8_t*>(burst.data()), 10));

    const std::string goaway = c.from_server();
    CHECK_FALSE(c.flushed_ok);
    c.client.input(goaway);
    CHECK(c.client.goaway_error == NGHTTP2_ENHANCE_YOUR_CALM);
    CHECK(c.server.finished());
}

TEST_CASE("h2: resets within the budget are served as usual") {
    Limits limits;
    limits.reset_burst = 50;
    Connection c(limits);
    for (int i = 0; i < 40; ++i) {
        const std::int32_t id = c.client.get("/");
        c.pump();
        c.client.reset(id, NGHTTP2_CANCEL);
        c.pump();
    }
    CHECK(c.received_ok);
    CHECK(c.owner.requests.size() == 40);
    const std::int32_t id = c.client.get("/after");
    c.pump();
    c.respond(id, 200, "ok");
    c.pump();
    CHECK(c.client.response(id).body == "ok");
    CHECK_FALSE(c.client.goaway_error.has_value());
}

TEST_CASE("h2: shutdown_gracefully lets the streams in flight finish and takes no new ones") {
    Connection c;
    const std::int32_t first = c.client.get("/1");
    const std::int32_t second = c.client.post("/2", "part", false);
    c.pump();
    c.server.shutdown_gracefully();
    const std::string goaway = c.from_server();
    // A request that crosses the GOAWAY is not taken.
    const std::int32_t crossing = c.client.get("/3");
    REQUIRE(c.to_server());
    c.client.input(goaway);
    CHECK(c.owner.requests.count(crossing) == 0);
    CHECK(c.client.goaway_error == NGHTTP2_NO_ERROR);
    CHECK(c.client.goaway_last_stream == second);
    CHECK(c.client.response(crossing).closed == NGHTTP2_REFUSED_STREAM);  // safe to retry

    // The two in flight finish, the upload included.
    c.client.upload(second, "-rest", true);
    c.respond(first, 200, "one");
    c.pump();
    CHECK(c.server.want_read());
    CHECK_FALSE(c.server.finished());
    CHECK(c.owner.requests[second].body == "part-rest");
    c.respond(second, 200, "two");
    c.pump();
    CHECK(c.client.response(first).body == "one");
    CHECK(c.client.response(second).body == "two");
    CHECK(c.server.finished());
    CHECK(c.flushed_ok);
}

TEST_CASE("h2: announce_shutdown then shutdown_gracefully: a request crossing the notice is taken") {
    Connection c;
    const std::int32_t first = c.client.get("/1");
    c.pump();
    c.server.announce_shutdown();
    const std::string notice = c.from_server();
    // Sent before the client saw the notice: still served.
    const std::int32_t crossing = c.client.get("/2");
    REQUIRE(c.to_server());
    c.client.input(notice);
    CHECK(c.owner.requests.count(crossing) == 1);
    CHECK(c.client.goaway_error == NGHTTP2_NO_ERROR);
    CHECK_FALSE(c.server.finished());
    c.server.shutdown_gracefully();
    c.pump();
    CHECK(c.client.goaway_last_stream == crossing);
    c.respond(first, 200, "one");
    c.respond(crossing, 200, "two");
    c.pump();
    CHECK(c.client.response(first).body == "one");
    CHECK(c.client.response(crossing).body == "two");
    CHECK(c.server.finished());
}

TEST_CASE("h2: bytes that are not the client preface fail receive()") {
    Owner owner;
    ServerSession server(owner, Limits{});
    owner.session = &server;
    const std::string http1 = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
    CHECK_FALSE(server.receive(reinterpret_cast<const std::uint8_t*>(http1.data()), http1.size()));
    EvbufferPtr out = make_evbuffer();
    CHECK_FALSE(server.flush(out.get()));
    CHECK(server.finished());
    CHECK(owner.events.empty());
}

TEST_CASE("h2: the first flush carries our SETTINGS") {
    Owner owner;
    ServerSession server(owner, Limits{});
    CHECK(server.want_write());
    EvbufferPtr out = make_evbuffer();
    REQUIRE(server.flush(out.get()));
    const std::string bytes = drain(out.get());
    REQUIRE(bytes.size() >= 9);
    CHECK(bytes[3] == NGHTTP2_SETTINGS);  // the server preface is a SETTINGS frame
    CHECK(bytes[4] == 0);                 // not an ACK
    CHECK_FALSE(server.want_write());
}

TEST_CASE("h2: flush stops at the watermark and leaves the rest pending per stream") {
    ClientOptions options;
    options.initial_window = 1024 * 1024;
    options.connection_window = 1024 * 1024;
    Connection c(Limits{}, options);
    const std::int32_t id = c.client.get("/");
    c.pump();
    const std::string body = pattern(300 * 1024);
    c.respond(id, 200, body);
    const std::string first = c.from_server(32 * 1024);
    CHECK(first.size() >= 32 * 1024);
    CHECK(first.size() < 32 * 1024 + 16 * 1024 + 64);  // at most one frame past it
    CHECK(c.server.pending_response_bytes(id) > 200 * 1024);
    CHECK(c.server.want_write());
    c.client.input(first);
    std::size_t rounds = 0;
    while (c.server.want_write() && rounds < 100) {
        c.client.input(c.from_server(32 * 1024));
        ++rounds;
    }
    CHECK(rounds >= 8);
    CHECK(c.client.response(id).body == body);
    CHECK(c.client.response(id).closed == NGHTTP2_NO_ERROR);
}

TEST_CASE("h2: a response head too large for nghttp2 resets the stream") {
    Connection c;
    const std::int32_t id = c.client.get("/");
    c.pump();
    REQUIRE(c.server.submit_response(id, 200, {{"set-cookie", std::string(70 * 1024, 'c')}}, true));
    c.pump();
    CHECK(c.client.response(id).reset == NGHTTP2_INTERNAL_ERROR);
    CHECK(c.owner.requests[id].closed == NGHTTP2_INTERNAL_ERROR);
    CHECK(c.flushed_ok);
}

TEST_CASE("h2: destroying the session with streams open tells the owner nothing") {
    Owner owner;
    Client client;
    {
        ServerSession server(owner, Limits{});
        owner.session = &server;
        client.post("/", "abc", false);
        client.get("/");
        const std::string bytes = client.output();
        REQUIRE(server.receive(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()));
        REQUIRE(server.submit_response(3, 200, {}, false));
        CHECK(server.open_streams() == 2);
        owner.events.clear();
    }
    CHECK(owner.events.empty());
}

TEST_CASE("h2: a SETTINGS frame with more entries than allowed ends the connection") {
    Limits limits;
    limits.max_settings_entries = 8;
    Connection c(limits);
    c.pump();
    std::vector<nghttp2_settings_entry> entries(
        9, nghttp2_settings_entry{NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 4096});
    REQUIRE(nghttp2_submit_settings(c.client.raw(), NGHTTP2_FLAG_NONE, entries.data(),
                                    entries.size()) == 0);
    c.pump();
    CHECK_FALSE(c.flushed_ok);
    CHECK(c.client.goaway_error == NGHTTP2_ENHANCE_YOUR_CALM);
    CHECK(c.server.finished());
}
