// The HTTP/2 client session against the project's own server session, in memory: the bytes each
// side flushes are handed to the other by the test, so every exchange is deterministic and no
// socket is involved. Frames no ServerSession would send (an interim 1xx head, protocol
// violations) are made by hand.
#include <doctest.h>
#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/util/event_ptr.hpp"
#include "worker/h2/client_session.hpp"
#include "worker/h2/server_session.hpp"

using namespace proxyd;
using namespace proxyd::worker::h2;

namespace {

constexpr std::size_t kMiB = 1024 * 1024;
constexpr std::size_t kWindow = 256 * 1024;  // Limits::initial_window_size's default

std::string drain(evbuffer* buffer) {
    std::string text(evbuffer_get_length(buffer), '\0');
    evbuffer_remove(buffer, text.data(), text.size());
    return text;
}

EvbufferPtr chain(const std::string& text) {
    EvbufferPtr buffer = make_evbuffer();
    evbuffer_add(buffer.get(), text.data(), text.size());
    return buffer;
}

std::string pattern(std::size_t size) {
    std::string text(size, '\0');
    for (std::size_t i = 0; i < size; ++i)
        text[i] = static_cast<char>('a' + (i * 7 + i / 991) % 26);
    return text;
}

// "/prefix<n>", built by appending: GCC 12 sees a false -Wrestrict in `"/" + std::to_string(n)`.
std::string numbered(const char* prefix, std::size_t n) {
    std::string text = prefix;
    text += std::to_string(n);
    return text;
}

std::string value_of(const std::vector<Header>& headers, const std::string& name) {
    for (const Header& header : headers) {
        if (header.name == name) return header.value;
    }
    return "<none>";
}

// A gRPC message: compressed flag, 4-byte big-endian length, payload.
std::string grpc_message(const std::string& payload) {
    std::string framed(5, '\0');
    const auto size = static_cast<std::uint32_t>(payload.size());
    for (int i = 0; i < 4; ++i) framed[1 + i] = static_cast<char>((size >> (24 - 8 * i)) & 0xff);
    return framed + payload;
}

std::string frame_header(std::size_t length, std::uint8_t type, std::uint8_t flags,
                         std::int32_t stream) {
    std::string header(9, '\0');
    header[0] = static_cast<char>((length >> 16) & 0xff);
    header[1] = static_cast<char>((length >> 8) & 0xff);
    header[2] = static_cast<char>(length & 0xff);
    header[3] = static_cast<char>(type);
    header[4] = static_cast<char>(flags);
    for (int i = 0; i < 4; ++i) header[5 + i] = static_cast<char>((stream >> (24 - 8 * i)) & 0xff);
    return header;
}

// A HEADERS frame with ":status: 100". Encoded as a literal that is never indexed, by a fresh
// encoder that announces no table size: the client's HPACK decoder state is left as the real
// server's encoder expects it.
std::string informational_frame(std::int32_t stream) {
    nghttp2_hd_deflater* deflater = nullptr;
    REQUIRE(nghttp2_hd_deflate_new(&deflater, 4096) == 0);
    std::string name = ":status", value = "100";
    nghttp2_nv nv = {reinterpret_cast<std::uint8_t*>(name.data()),
                     reinterpret_cast<std::uint8_t*>(value.data()), name.size(), value.size(),
                     NGHTTP2_NV_FLAG_NO_INDEX};
    std::uint8_t block[64];
    const ssize_t n = nghttp2_hd_deflate_hd(deflater, block, sizeof block, &nv, 1);
    nghttp2_hd_deflate_del(deflater);
    REQUIRE(n > 0);
    return frame_header(static_cast<std::size_t>(n), NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS,
                        stream) +
           std::string(reinterpret_cast<const char*>(block), static_cast<std::size_t>(n));
}

// The upstream's side: records each request; consumes its body at once unless told not to.
struct ServerOwner : ServerSession::Handler {
    struct Request {
        RequestHead head;
        std::string body;
        std::vector<Header> trailers;
        bool ended = false;
        std::optional<std::uint32_t> closed;
    };

    ServerSession* session = nullptr;
    bool auto_consume = true;
    std::map<std::int32_t, Request> requests;

    void on_request(std::int32_t id, RequestHead&& head) override {
        requests[id].head = std::move(head);
    }
    void on_request_data(std::int32_t id, const std::uint8_t* data, std::size_t len) override {
        requests[id].body.append(reinterpret_cast<const char*>(data), len);
        if (auto_consume) session->consume(id, len);
    }
    void on_request_trailers(std::int32_t id, std::vector<Header>&& trailers) override {
        requests[id].trailers = std::move(trailers);
    }
    void on_request_end(std::int32_t id) override { requests[id].ended = true; }
    void on_request_rejected(std::int32_t id, int, RequestHead&&) override {
        session->reset_stream(id, NGHTTP2_REFUSED_STREAM);
    }
    void on_stream_closed(std::int32_t id, std::uint32_t error_code) override {
        requests[id].closed = error_code;
    }
};

// The proxy's side: records each response and the order of events; consumes the body at once
// unless told not to.
struct ClientOwner : ClientSession::Handler {
    struct Response {
        int status = 0;
        std::vector<Header> headers;
        bool head_end_stream = false;
        std::vector<int> informational;
        std::string body;
        std::optional<std::vector<Header>> trailers;
        bool ended = false;
        std::optional<std::uint32_t> closed;
    };

    ClientSession* session = nullptr;
    bool auto_consume = true;
    std::map<std::int32_t, Response> responses;
    std::vector<std::string> events;
    std::vector<std::int32_t> writable;
    std::optional<std::pair<std::int32_t, std::uint32_t>> goaway;

    void on_response_informational(std::int32_t id, int status, std::vector<Header>&&) override {
        events.push_back("informational " + std::to_string(id));
        responses[id].informational.push_back(status);
    }
    void on_response_head(std::int32_t id, int status, std::vector<Header>&& headers,
                          bool end_stream) override {
        events.push_back("head " + std::to_string(id));
        Response& response = responses[id];
        response.status = status;
        response.headers = std::move(headers);
        response.head_end_stream = end_stream;
    }
    void on_response_data(std::int32_t id, const std::uint8_t* data, std::size_t len) override {
        responses[id].body.append(reinterpret_cast<const char*>(data), len);
        if (auto_consume) session->consume(id, len);
    }
    void on_response_trailers(std::int32_t id, std::vector<Header>&& trailers) override {
        events.push_back("trailers " + std::to_string(id));
        responses[id].trailers = std::move(trailers);
    }
    void on_response_end(std::int32_t id) override {
        events.push_back("end " + std::to_string(id));
        responses[id].ended = true;
    }
    void on_stream_closed(std::int32_t id, std::uint32_t error_code) override {
        events.push_back("closed " + std::to_string(id));
        responses[id].closed = error_code;
    }
    void on_request_writable(std::int32_t id) override { writable.push_back(id); }
    void on_goaway(std::int32_t last_stream_id, std::uint32_t error_code) override {
        events.push_back("goaway " + std::to_string(last_stream_id));
        goaway = std::make_pair(last_stream_id, error_code);
    }
};

// A client session and a server session, wired back to back.
struct Pair {
    explicit Pair(const Limits& client_limits = {}, const Limits& server_limits = {})
        : client(c, client_limits), server(s, server_limits) {
        c.session = &client;
        s.session = &server;
    }

    std::string client_output() {
        EvbufferPtr out = make_evbuffer();
        client_ok = client.flush(out.get()) && client_ok;
        return drain(out.get());
    }
    std::string server_output() {
        EvbufferPtr out = make_evbuffer();
        server_ok = server.flush(out.get()) && server_ok;
        return drain(out.get());
    }
    void to_server(const std::string& bytes) {
        server_ok =
            server.receive(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()) &&
            server_ok;
    }
    void to_client(const std::string& bytes) {
        client_ok =
            client.receive(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()) &&
            client_ok;
    }

    // One round trip; false when nothing moved either way.
    bool step() {
        const std::string request_bytes = client_output();
        if (!request_bytes.empty()) to_server(request_bytes);
        const std::string response_bytes = server_output();
        if (!response_bytes.empty()) to_client(response_bytes);
        return !request_bytes.empty() || !response_bytes.empty();
    }
    // Until both sides are quiet.
    void pump() {
        for (int round = 0; round < 100000 && step(); ++round) {
        }
    }

    std::int32_t get(const std::string& path, const std::vector<Header>& headers = {}) {
        return client.submit_request("GET", "http", "example.com", path, headers, true);
    }
    std::int32_t post(const std::string& path, const std::string& body, bool end = true,
                      const std::vector<Header>& headers = {}) {
        const std::int32_t id =
            client.submit_request("POST", "http", "example.com", path, headers, false);
        REQUIRE(id > 0);
        client.append_request_data(id, chain(body).get());
        if (end) client.end_request(id);
        return id;
    }
    void respond(std::int32_t id, int status, const std::string& body,
                 const std::vector<Header>& headers = {},
                 const std::vector<Header>& trailers = {}) {
        REQUIRE(server.submit_response(id, status, headers, false));
        server.append_response_data(id, chain(body).get());
        server.end_response(id, trailers);
    }

    ClientOwner c;
    ServerOwner s;
    ClientSession client;
    ServerSession server;
    bool client_ok = true;
    bool server_ok = true;
};

}  // namespace

TEST_CASE("h2 client: a GET round trip") {
    Pair p;
    const std::int32_t id = p.client.submit_request("GET", "https", "example.com", "/a?b=1",
                                                    {{"X-Custom", "v"},
                                                     {"Connection", "keep-alive"},
                                                     {"Keep-Alive", "timeout=5"},
                                                     {"Proxy-Connection", "keep-alive"},
                                                     {"Transfer-Encoding", "chunked"},
                                                     {"Upgrade", "h2c"},
                                                     {"TE", "gzip"},
                                                     {"Host", "example.com"},
                                                     {":path", "/smuggled"},
                                                     {"accept", "*/*"}},
                                                    true);
    CHECK(id == 1);
    CHECK(p.client.open_streams() == 1);
    p.pump();
    REQUIRE(p.s.requests.count(id) == 1);
    const ServerOwner::Request& request = p.s.requests[id];
    CHECK(request.head.method == "GET");
    CHECK(request.head.scheme == "https");
    CHECK(request.head.authority == "example.com");
    CHECK(request.head.path == "/a?b=1");
    CHECK(request.head.end_stream);
    CHECK(request.ended);
    // Lower-cased, and nothing HTTP/2 forbids, Host folded into :authority.
    REQUIRE(request.head.headers.size() == 2);
    CHECK(request.head.headers[0].name == "x-custom");
    CHECK(request.head.headers[0].value == "v");
    CHECK(request.head.headers[1].name == "accept");

    p.respond(id, 200, "hello", {{"content-type", "text/plain"}, {"X-Up", "1"}});
    p.pump();
    const ClientOwner::Response& response = p.c.responses[id];
    CHECK(response.status == 200);
    CHECK_FALSE(response.head_end_stream);
    CHECK(value_of(response.headers, "content-type") == "text/plain");
    CHECK(value_of(response.headers, "x-up") == "1");
    CHECK(response.body == "hello");
    CHECK_FALSE(response.trailers.has_value());
    CHECK(response.closed == NGHTTP2_NO_ERROR);
    CHECK(p.c.events == std::vector<std::string>{"head 1", "end 1", "closed 1"});
    CHECK(p.client.open_streams() == 0);
    CHECK(p.server.open_streams() == 0);
    CHECK(p.client_ok);
    CHECK(p.server_ok);

    SUBCASE("without an authority, Host names it") {
        const std::int32_t next =
            p.client.submit_request("GET", "http", "", "/", {{"Host", "backend.local"}}, true);
        p.pump();
        CHECK(p.s.requests[next].head.authority == "backend.local");
        CHECK(p.s.requests[next].head.headers.empty());
    }
}

TEST_CASE("h2 client: a 1 MiB request body stops at the server's window until it consumes") {
    Pair p;
    p.s.auto_consume = false;
    const std::string body = pattern(kMiB);
    const std::int32_t id = p.client.submit_request("POST", "http", "example.com", "/upload",
                                                    {{"content-length", "1048576"}}, false);
    p.client.append_request_data(id, chain(body).get());
    p.client.end_request(id);
    p.pump();
    const ServerOwner::Request& request = p.s.requests[id];
    // The server's stream window, and not a byte more, however often the sides talk.
    CHECK(request.body.size() == kWindow);
    CHECK(p.client.pending_request_bytes(id) == kMiB - kWindow);
    p.pump();
    CHECK(request.body.size() == kWindow);

    std::size_t consumed = 0;
    int rounds = 0;
    while (!request.ended && rounds++ < 50) {
        p.server.consume(id, request.body.size() - consumed);
        consumed = request.body.size();
        p.pump();
        CHECK(request.body.size() - consumed <= kWindow);
    }
    CHECK(rounds >= 3);
    CHECK(request.ended);
    CHECK(request.body == body);
    CHECK(p.client.pending_request_bytes(id) == 0);
    p.respond(id, 204, "");
    p.pump();
    CHECK(p.c.responses[id].closed == NGHTTP2_NO_ERROR);
}

TEST_CASE("h2 client: on_request_writable says the appended body is all out") {
    Pair p;
    const std::int32_t id = p.post("/stream", "first", false);
    p.pump();
    CHECK(p.s.requests[id].body == "first");
    CHECK(p.client.pending_request_bytes(id) == 0);
    CHECK(p.c.writable == std::vector<std::int32_t>{id});
    p.client.append_request_data(id, chain("-second").get());
    p.client.end_request(id);
    p.pump();
    CHECK(p.s.requests[id].body == "first-second");
    CHECK(p.s.requests[id].ended);
}

TEST_CASE("h2 client: flush stops at the watermark and leaves the rest pending per stream") {
    Limits server_limits;
    server_limits.initial_window_size = kMiB;
    Pair p({}, server_limits);
    p.pump();  // the server's larger window is known
    const std::string body = pattern(300 * 1024);
    const std::int32_t id = p.post("/", body);
    EvbufferPtr out = make_evbuffer();
    REQUIRE(p.client.flush(out.get(), 32 * 1024));
    std::string first = drain(out.get());
    CHECK(first.size() >= 32 * 1024);
    CHECK(first.size() < 32 * 1024 + 16 * 1024 + 64);  // at most one frame past it
    CHECK(p.client.pending_request_bytes(id) > 200 * 1024);
    CHECK(p.client.want_write());
    p.to_server(first);
    int rounds = 0;
    while (p.client.want_write() && rounds++ < 100) {
        REQUIRE(p.client.flush(out.get(), 32 * 1024));
        p.to_server(drain(out.get()));
    }
    CHECK(rounds >= 8);
    CHECK(p.s.requests[id].body == body);
    CHECK(p.s.requests[id].ended);
}

TEST_CASE("h2 client: a 1 MiB response stops at the client's window until the owner consumes") {
    Pair p;
    p.c.auto_consume = false;
    const std::int32_t id = p.get("/big");
    p.pump();
    const std::string body = pattern(kMiB);
    p.respond(id, 200, body);
    p.pump();
    const ClientOwner::Response& response = p.c.responses[id];
    CHECK(response.body.size() == kWindow);
    CHECK(p.server.pending_response_bytes(id) == kMiB - kWindow);
    p.pump();
    CHECK(response.body.size() == kWindow);

    std::size_t consumed = 0;
    int rounds = 0;
    while (!response.ended && rounds++ < 50) {
        p.client.consume(id, response.body.size() - consumed);
        consumed = response.body.size();
        p.pump();
        CHECK(response.body.size() - consumed <= kWindow);
    }
    CHECK(rounds >= 3);
    CHECK(response.body == body);
    CHECK(response.closed == NGHTTP2_NO_ERROR);
}

TEST_CASE("h2 client: unconsumed response bytes of a reset stream go back to the connection") {
    Limits limits;
    limits.connection_window = kWindow;  // one stream's worth fills the connection
    Pair p(limits);
    p.c.auto_consume = false;
    const std::int32_t first = p.get("/first");
    p.pump();
    p.respond(first, 200, pattern(kMiB));
    p.pump();
    CHECK(p.c.responses[first].body.size() == kWindow);
    p.client.reset_stream(first, NGHTTP2_CANCEL);
    p.pump();
    CHECK(p.c.responses[first].closed == NGHTTP2_CANCEL);
    CHECK(p.s.requests[first].closed == NGHTTP2_CANCEL);

    p.c.auto_consume = true;
    const std::int32_t second = p.get("/second");
    p.pump();
    p.respond(second, 200, pattern(kWindow));
    p.pump();
    CHECK(p.c.responses[second].body == pattern(kWindow));
    CHECK(p.c.responses[second].closed == NGHTTP2_NO_ERROR);
}

TEST_CASE("h2 client: a gRPC call with a message each way and grpc-status in the trailers") {
    Pair p;
    const std::string request_message = grpc_message("hello");
    const std::int32_t id = p.client.submit_request(
        "POST", "http", "grpc.example", "/pkg.Greeter/SayHello",
        {{"content-type", "application/grpc"}, {"te", "trailers"}, {"grpc-timeout", "1S"}}, false);
    REQUIRE(id > 0);
    p.client.append_request_data(id, chain(request_message).get());
    p.client.end_request(id);
    p.pump();
    const ServerOwner::Request& request = p.s.requests[id];
    CHECK(request.head.path == "/pkg.Greeter/SayHello");
    CHECK(value_of(request.head.headers, "content-type") == "application/grpc");
    CHECK(value_of(request.head.headers, "te") == "trailers");
    CHECK(value_of(request.head.headers, "grpc-timeout") == "1S");
    CHECK(request.body == request_message);
    CHECK(request.ended);

    const std::string reply = grpc_message("hi there");
    p.respond(id, 200, reply, {{"content-type", "application/grpc"}}, {{"grpc-status", "0"}});
    p.pump();
    const ClientOwner::Response& response = p.c.responses[id];
    CHECK(response.status == 200);
    CHECK_FALSE(response.head_end_stream);
    CHECK(response.body == reply);
    REQUIRE(response.trailers.has_value());
    REQUIRE(response.trailers->size() == 1);
    CHECK(value_of(*response.trailers, "grpc-status") == "0");
    CHECK(p.c.events == std::vector<std::string>{"head 1", "trailers 1", "end 1", "closed 1"});
}

TEST_CASE("h2 client: a gRPC trailers-only error is one head that ends the stream") {
    Pair p;
    const std::int32_t id =
        p.client.submit_request("POST", "http", "grpc.example", "/pkg.Greeter/SayHello",
                                {{"content-type", "application/grpc"}, {"TE", "trailers"}}, false);
    p.client.append_request_data(id, chain(grpc_message("hello")).get());
    p.client.end_request(id);
    p.pump();
    CHECK(value_of(p.s.requests[id].head.headers, "te") == "trailers");
    REQUIRE(p.server.submit_response(id, 200,
                                     {{"content-type", "application/grpc"},
                                      {"grpc-status", "14"},
                                      {"grpc-message", "upstream unavailable"}},
                                     true));
    p.pump();
    const ClientOwner::Response& response = p.c.responses[id];
    CHECK(response.status == 200);
    CHECK(response.head_end_stream);
    CHECK(value_of(response.headers, "grpc-status") == "14");
    CHECK(value_of(response.headers, "grpc-message") == "upstream unavailable");
    CHECK(response.body.empty());
    CHECK_FALSE(response.trailers.has_value());
    CHECK(p.c.events == std::vector<std::string>{"head 1", "end 1", "closed 1"});
}

TEST_CASE("h2 client: request trailers and an empty end of body") {
    Pair p;
    SUBCASE("trailers after the body") {
        const std::int32_t id = p.post("/", "body", false);
        p.client.end_request(id, {{"X-Checksum", "abc"}, {"connection", "close"}});
        p.pump();
        CHECK(p.s.requests[id].body == "body");
        REQUIRE(p.s.requests[id].trailers.size() == 1);
        CHECK(p.s.requests[id].trailers[0].name == "x-checksum");
        CHECK(p.s.requests[id].ended);
    }
    SUBCASE("end_request with nothing appended sends END_STREAM on an empty DATA frame") {
        const std::int32_t id =
            p.client.submit_request("POST", "http", "example.com", "/", {}, false);
        p.pump();
        CHECK_FALSE(p.s.requests[id].ended);
        p.client.end_request(id);
        p.pump();
        CHECK(p.s.requests[id].ended);
        CHECK(p.s.requests[id].body.empty());
    }
}

TEST_CASE("h2 client: 50 concurrent streams on one connection") {
    Pair p;
    std::vector<std::int32_t> ids;
    for (std::size_t i = 0; i < 50; ++i) {
        ids.push_back(p.post(numbered("/s", i), pattern(1000 + 100 * i)));
    }
    CHECK(p.client.open_streams() == 50);
    p.pump();
    CHECK(p.server.open_streams() == 50);
    for (std::size_t i = 0; i < ids.size(); ++i) {
        const ServerOwner::Request& request = p.s.requests[ids[i]];
        CHECK(request.ended);
        CHECK(request.body == pattern(1000 + 100 * i));
        p.respond(ids[i], 200, request.head.path + ":" + request.body);
    }
    p.pump();
    for (std::size_t i = 0; i < ids.size(); ++i) {
        CAPTURE(i);
        const ClientOwner::Response& response = p.c.responses[ids[i]];
        CHECK(response.body == numbered("/s", i) + ":" + pattern(1000 + 100 * i));
        CHECK(response.closed == NGHTTP2_NO_ERROR);
    }
    CHECK(p.client.open_streams() == 0);
}

TEST_CASE("h2 client: can_submit respects the server's max_concurrent_streams") {
    Limits server_limits;
    server_limits.max_concurrent_streams = 4;
    Pair p({}, server_limits);
    CHECK(p.client.can_submit());  // nghttp2 assumes 100 until the server's SETTINGS arrive
    p.pump();
    std::vector<std::int32_t> ids;
    for (std::size_t i = 0; i < 4; ++i) {
        CHECK(p.client.can_submit());
        ids.push_back(p.get(numbered("/", i)));
    }
    CHECK_FALSE(p.client.can_submit());
    CHECK(p.get("/5") < 0);
    CHECK(p.client.open_streams() == 4);
    p.pump();
    CHECK(p.server.open_streams() == 4);

    p.respond(ids[0], 200, "done");
    p.pump();
    CHECK(p.c.responses[ids[0]].closed == NGHTTP2_NO_ERROR);
    REQUIRE(p.client.can_submit());
    const std::int32_t fifth = p.get("/5");
    p.pump();
    CHECK(p.s.requests[fifth].ended);
    CHECK_FALSE(p.client.can_submit());
    CHECK(p.server_ok);
}

TEST_CASE("h2 client: Limits::max_concurrent_streams caps the streams below the server's") {
    Limits limits;
    limits.max_concurrent_streams = 2;
    Pair p(limits);
    p.get("/1");
    CHECK(p.client.can_submit());
    p.get("/2");
    CHECK_FALSE(p.client.can_submit());
}

TEST_CASE("h2 client: the server's GOAWAY stops new streams; those above it are retryable") {
    Pair p;
    const std::int32_t first = p.get("/1");
    const std::int32_t second = p.post("/2", "part", false);
    p.pump();
    p.server.shutdown_gracefully();
    const std::string goaway = p.server_output();
    const std::int32_t crossing = p.get("/3");  // sent before the client hears of the GOAWAY
    p.to_server(p.client_output());
    const std::int32_t queued = p.get("/4");  // submitted, not yet sent
    p.to_client(goaway);
    REQUIRE(p.c.goaway.has_value());
    CHECK(p.c.goaway->first == second);
    CHECK(p.c.goaway->second == NGHTTP2_NO_ERROR);
    CHECK_FALSE(p.client.can_submit());
    CHECK(p.get("/5") < 0);
    p.pump();
    CHECK(p.c.responses[crossing].closed == NGHTTP2_REFUSED_STREAM);
    CHECK(p.c.responses[queued].closed == NGHTTP2_REFUSED_STREAM);
    CHECK(p.s.requests.count(crossing) == 0);
    CHECK(p.s.requests.count(queued) == 0);

    // The streams the server took finish, the upload included.
    p.client.append_request_data(second, chain("-rest").get());
    p.client.end_request(second);
    p.respond(first, 200, "one");
    p.pump();
    CHECK_FALSE(p.client.finished());
    CHECK(p.s.requests[second].body == "part-rest");
    p.respond(second, 200, "two");
    p.pump();
    CHECK(p.c.responses[first].body == "one");
    CHECK(p.c.responses[second].body == "two");
    CHECK(p.client.open_streams() == 0);
    CHECK(p.client.finished());
    CHECK(p.server.finished());
    CHECK(p.client_ok);
}

TEST_CASE("h2 client: a stream the server resets closes with the server's code") {
    Pair p;
    SUBCASE("before the head: REFUSED_STREAM, nothing else") {
        const std::int32_t id = p.get("/");
        p.pump();
        p.server.reset_stream(id, NGHTTP2_REFUSED_STREAM);
        p.pump();
        CHECK(p.c.responses[id].closed == NGHTTP2_REFUSED_STREAM);
        CHECK(p.c.events == std::vector<std::string>{"closed 1"});
    }
    SUBCASE("in the middle of the body") {
        const std::int32_t id = p.get("/");
        p.pump();
        REQUIRE(p.server.submit_response(id, 200, {}, false));
        p.server.append_response_data(id, chain("partial").get());
        p.pump();
        p.server.reset_stream(id, NGHTTP2_INTERNAL_ERROR);
        p.pump();
        CHECK(p.c.responses[id].body == "partial");
        CHECK_FALSE(p.c.responses[id].ended);
        CHECK(p.c.responses[id].closed == NGHTTP2_INTERNAL_ERROR);
        CHECK(p.c.events == std::vector<std::string>{"head 1", "closed 1"});
    }
    CHECK(p.client_ok);
    CHECK(p.client.open_streams() == 0);
}

TEST_CASE("h2 client: reset_stream(CANCEL) reaches the server") {
    Pair p;
    SUBCASE("after the request went out") {
        const std::int32_t id = p.post("/", "abc", false);
        p.pump();
        REQUIRE(p.server.submit_response(id, 200, {}, false));
        p.server.append_response_data(id, chain("some").get());
        p.pump();
        CHECK(p.c.responses[id].status == 200);
        p.client.reset_stream(id, NGHTTP2_CANCEL);
        p.server.append_response_data(id, chain("more").get());  // crosses the RST_STREAM
        p.pump();
        CHECK(p.s.requests[id].closed == NGHTTP2_CANCEL);
        CHECK_FALSE(p.s.requests[id].ended);
        CHECK(p.c.responses[id].closed == NGHTTP2_CANCEL);
        CHECK(p.c.responses[id].body == "some");
        CHECK_FALSE(p.c.responses[id].ended);
        // The id is dead: these are harmless no-ops.
        p.client.consume(id, 100);
        p.client.append_request_data(id, chain("late").get());
        p.client.end_request(id);
        p.client.reset_stream(id, NGHTTP2_CANCEL);
        CHECK(p.client.pending_request_bytes(id) == 0);
    }
    SUBCASE("before its HEADERS went out: the server never hears of it") {
        const std::int32_t id = p.get("/");
        p.client.reset_stream(id, NGHTTP2_CANCEL);
        p.pump();
        CHECK(p.c.responses[id].closed == NGHTTP2_CANCEL);
        CHECK(p.s.requests.empty());
    }
    CHECK(p.client.open_streams() == 0);
    // The connection carries on.
    const std::int32_t next = p.get("/next");
    p.pump();
    p.respond(next, 200, "ok");
    p.pump();
    CHECK(p.c.responses[next].body == "ok");
    CHECK(p.client_ok);
    CHECK(p.server_ok);
}

TEST_CASE("h2 client: bytes that are not HTTP/2 fail receive()") {
    SUBCASE("an HTTP/1 server on an h2c port") {
        ClientOwner owner;
        ClientSession client(owner, Limits{});
        owner.session = &client;
        const std::int32_t id = client.submit_request("GET", "http", "example.com", "/", {}, true);
        EvbufferPtr out = make_evbuffer();
        REQUIRE(client.flush(out.get()));
        const std::string http1 = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
        CHECK_FALSE(
            client.receive(reinterpret_cast<const std::uint8_t*>(http1.data()), http1.size()));
        CHECK_FALSE(client.can_submit());
        evbuffer_drain(out.get(), evbuffer_get_length(out.get()));
        CHECK_FALSE(client.flush(out.get()));
        const std::string goaway = drain(out.get());
        REQUIRE(goaway.size() >= 9);
        CHECK(goaway[3] == NGHTTP2_GOAWAY);
        CHECK(client.finished());
        CHECK_FALSE(client.receive(reinterpret_cast<const std::uint8_t*>(http1.data()), 1));
        CHECK(owner.responses[id].status == 0);
    }
    SUBCASE("a frame that breaks the protocol after a good start") {
        Pair p;
        const std::int32_t id = p.get("/");
        p.pump();
        const std::string data_on_stream_0 = frame_header(1, NGHTTP2_DATA, 0, 0) + "x";
        CHECK_FALSE(p.client.receive(reinterpret_cast<const std::uint8_t*>(data_on_stream_0.data()),
                                     data_on_stream_0.size()));
        p.to_server(p.client_output());
        CHECK_FALSE(p.client_ok);
        CHECK(p.client.finished());
        CHECK(p.s.requests[id].head.path == "/");
    }
}

TEST_CASE("h2 client: a response header list over the limit resets the stream") {
    Limits limits;
    limits.max_header_list_size = 4096;
    Pair p(limits);
    SUBCASE("the head: never delivered") {
        const std::int32_t id = p.get("/");
        p.pump();
        p.respond(id, 200, "body", {{"x-big", std::string(5000, 'b')}});
        p.pump();
        CHECK(p.c.events == std::vector<std::string>{"closed 1"});
        CHECK(p.c.responses[id].closed == NGHTTP2_ENHANCE_YOUR_CALM);
        // The server had sent all of it and closed its side before the reset arrived.
        CHECK(p.s.requests[id].closed.has_value());
    }
    SUBCASE("the trailers: the stream is reset after the body, without them") {
        const std::int32_t id = p.get("/");
        p.pump();
        p.respond(id, 200, "body", {}, {{"grpc-message", std::string(5000, 'm')}});
        p.pump();
        CHECK(p.c.responses[id].body == "body");
        CHECK_FALSE(p.c.responses[id].trailers.has_value());
        CHECK(p.c.responses[id].closed == NGHTTP2_ENHANCE_YOUR_CALM);
        CHECK(p.c.events == std::vector<std::string>{"head 1", "closed 1"});
    }
    // Under the limit, the next one on the same connection goes through.
    const std::int32_t next = p.get("/small");
    p.pump();
    p.respond(next, 200, "ok", {{"x-small", std::string(3000, 's')}});
    p.pump();
    CHECK(p.c.responses[next].body == "ok");
    CHECK(p.client_ok);
}

TEST_CASE("h2 client: an interim 1xx head is told apart from the final one") {
    Pair p;
    const std::int32_t id = p.post("/", "", false, {{"expect", "100-continue"}});
    p.pump();
    p.to_client(informational_frame(id));
    CHECK(p.c.responses[id].informational == std::vector<int>{100});
    p.client.end_request(id);
    p.pump();
    p.respond(id, 201, "made");
    p.pump();
    CHECK(p.c.responses[id].status == 201);
    CHECK(p.c.responses[id].body == "made");
    CHECK(p.c.events == std::vector<std::string>{"informational 1", "head 1", "end 1", "closed 1"});
    CHECK(p.client_ok);
}

TEST_CASE("h2 client: shutdown_gracefully finishes the streams open and takes no new ones") {
    Pair p;
    const std::int32_t id = p.get("/");
    p.pump();
    p.client.shutdown_gracefully();
    CHECK_FALSE(p.client.can_submit());
    CHECK(p.get("/later") < 0);
    p.pump();
    CHECK_FALSE(p.client.finished());
    p.respond(id, 200, "last");
    p.pump();
    CHECK(p.c.responses[id].body == "last");
    CHECK(p.client.finished());
    CHECK(p.client_ok);
}

TEST_CASE("h2 client: destroying the session with streams open tells the owner nothing") {
    ClientOwner owner;
    {
        ClientSession client(owner, Limits{});
        owner.session = &client;
        const std::int32_t id = client.submit_request("POST", "http", "a", "/", {}, false);
        client.append_request_data(id, chain("abc").get());
        EvbufferPtr out = make_evbuffer();
        REQUIRE(client.flush(out.get()));
        CHECK(client.open_streams() == 1);
    }
    CHECK(owner.events.empty());
}
