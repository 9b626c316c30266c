// What a request flow needs from the client it answers: the seam between the request's phases
// (worker/request_flow.hpp, the same for every protocol) and the protocol the client speaks
// (today worker/client_connection.hpp, HTTP/1.1; an HTTP/2 stream next).
//
// The flow works in protocol-free terms: it pulls de-framed request body bytes, hands over a
// parsed response head and body bytes, asks for a proxy-made response (error, 204), and says when
// it is done. The client side owns everything of its wire format: head framing, the body's
// framing in both directions (H1: Content-Length counting, chunked parsing and re-chunking),
// "100 Continue", keep-alive, and its own timers (H1: the body and "client stopped reading"
// timer). It also counts the request's bytes on its wire, which is what the access log reports.
//
// Re-entrancy: a call that returns false ([[nodiscard]]) and abort() may have closed the client;
// the flow then returns at once, touching nothing of its request (it has been ended already).
#pragma once

#include <event2/buffer.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/http/parser.hpp"
#include "worker/forward_headers.hpp"
#include "worker/upstream_pool.hpp"

namespace proxyd::worker {

// Backpressure, the same on both sides of a flow: a side stops reading while the other side has
// more than kHighWatermark waiting to be sent, and resumes once that fell below kLowWatermark.
constexpr std::size_t kHighWatermark = 256 * 1024;
constexpr std::size_t kLowWatermark = 64 * 1024;

// The request body as far as it has arrived, without its framing.
struct RequestBodyInput {
    enum class State {
        More,      // more body is to come (`ready` may be 0: wait for on_request_body)
        Complete,  // the body ends with these `ready` bytes
        Invalid,   // its framing is broken: 400, and the client's input is lost
        TooLarge,  // it passed limits.max_body_size: 413
    };
    evbuffer* buffer = nullptr;  // holds the `ready` bytes at its front (and maybe other things)
    std::size_t ready = 0;       // body bytes to move on now; report them with consume_request_body
    State state = State::More;
};

// Bytes of the request on the client's wire (head, body and framing in; head and body out), for
// the access log. A tunnel adds everything it carried.
struct WireBytes {
    std::uint64_t in = 0;
    std::uint64_t out = 0;
};

class ClientSide {
  public:
    // ---- who the client is
    // The TCP peer, or the source of a PROXY protocol header.
    virtual std::string_view peer_ip() const = 0;
    virtual std::uint16_t peer_port() const = 0;
    virtual bool is_tls() const = 0;
    virtual WireBytes wire_bytes() const = 0;

    // ---- the request
    // The flow is done with the parsed head (the views it handed to the flow's start): the
    // request is admitted and goes on, and the head's time limit ends. A request answered before
    // this (404, 401, a preflight, ...) never calls it.
    virtual void release_request_head() = 0;
    // The request goes upstream: the client may now send its body (H1: "100 Continue" when it
    // waits for one; the body timer starts). False: the client is gone, and the flow must end.
    [[nodiscard]] virtual bool accept_request_body() = 0;
    // What has arrived of the body. Pulling may parse framing (H1 chunked) and so find it broken.
    virtual RequestBodyInput request_body() = 0;
    // The flow moved `n` of the ready bytes out of the buffer (H2: the client may send as many
    // more). Each call counts as progress for the body timer.
    virtual void consume_request_body(std::size_t n) = 0;
    // The upstream takes no more body for now (true), or takes it again (false).
    virtual void pause_request_body(bool paused) = 0;
    // The response came before the body ended: no more of it will be forwarded or read.
    virtual void abandon_request_body() = 0;

    // ---- the response
    // `info` holds the flow's part (request id, access-phase lines, cookie, upgrade); its
    // keep_alive is false when the request's input was not read to its end (H1 then closes, H2
    // would reset the stream after the response). The client side adds the rest: its framing,
    // its own keep-alive reasons, server.response_headers.
    virtual void send_response_head(const http::Response& response,
                                    const ClientResponseInfo& info) = 0;
    // Moves `n` bytes of response body out of `from` (framed as the client side chose).
    virtual void send_response_data(evbuffer* from, std::size_t n) = 0;
    // The response body is complete (H1: the last chunk when chunked).
    virtual void end_response() = 0;
    // The same, with trailer fields after the body (gRPC's grpc-status and grpc-message). H2
    // sends them as a final HEADERS frame; H1 drops them (a gRPC route never answers H1 with a
    // body: its clients speak HTTP/2).
    virtual void end_response_with_trailers(const HeaderList& trailers) = 0;
    // A complete response made by the proxy: an error with its JSON body, or one without a body
    // (a CORS preflight's 204).
    virtual void send_error(int status, std::string_view detail,
                            const ClientResponseInfo& info) = 0;
    virtual void send_bodiless(int status, const ClientResponseInfo& info) = 0;
    // Writes what was queued. False: the client is gone, and the flow must end.
    [[nodiscard]] virtual bool flush_response() = 0;
    // Response bytes queued and not yet taken by the client.
    virtual std::size_t response_pending() const = 0;
    // The flow stopped reading the upstream because the client takes nothing (true): the client
    // gets timeouts.body to take some, and the flow hears on_response_drained once it has taken
    // enough; false: the flow reads again.
    virtual void response_stalled(bool stalled) = 0;

    // ---- endings (the flow has released everything it held before any of these)
    // The response is complete: the client side goes on (H1: keep-alive or close).
    virtual void flow_finished() = 0;
    // The request ended without a complete response (client gone, response broken off): close
    // (H1) or reset (H2). The flow has been abandoned when this returns.
    virtual void abort() = 0;
    // A 101 answered a WebSocket handshake: the upstream connection becomes the client side's to
    // carry bytes both ways. The flow keeps its request (the server stays counted as active) until
    // end_tunnel(), which logs it.
    virtual void start_tunnel(UpstreamPtr upstream) = 0;

  protected:
    ~ClientSide() = default;
};

}  // namespace proxyd::worker
