// The bodies a session sends: request bodies on the client side, response bodies on the server
// side. Both ends of the wire move them the same way, so the way lives here once:
// - each stream's body waits in an evbuffer chain (OutgoingBody) until nghttp2 has window for it;
// - nghttp2 asks for it through the session's data provider, which hands over to
//   BodySender::read: pause when the output is full, defer when the chain is dry, end with the
//   trailers' HEADERS frame when there are any;
// - with NO_COPY the bytes then move from the chain to the output without a copy
//   (BodySender::write_data_frame);
// - a stream that ran dry is told to its owner after the flush, outside nghttp2_session_send.
// The session keeps what differs: how it finds a stream, when a body may be appended, and which
// Handler event says "writable".
#pragma once

#include <event2/buffer.h>
#include <nghttp2/nghttp2.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/util/event_ptr.hpp"
#include "worker/h2/header_block.hpp"
#include "worker/h2/types.hpp"

namespace proxyd::worker::h2 {

// One stream's body on its way out, and its trailers.
struct OutgoingBody {
    EvbufferPtr chain = make_evbuffer();  // appended, waiting for the peer's window
    std::vector<Header> trailers;         // a final HEADERS frame after the body, if any
    bool ended = false;                   // no more body will be appended
    bool deferred = false;  // nghttp2 waits for resume_data before asking for body again

    // Bytes appended but not yet written to the output.
    std::size_t pending() const { return evbuffer_get_length(chain.get()); }
    // Moves all of `data` to the end of the chain and wakes nghttp2 if it was waiting for it.
    void append(nghttp2_session* session, std::int32_t id, evbuffer* data);
    // No more body: what is in the chain goes out, then `fields` as trailers if there are any.
    void end(nghttp2_session* session, std::int32_t id, const std::vector<Header>& fields);
    // Empty and open again, for a new stream.
    void clear();

  private:
    void resume(nghttp2_session* session, std::int32_t id);
};

// The session's side of sending: where frames go during a flush, how far the output may fill,
// and which streams ran dry on the way.
class BodySender {
  public:
    // nghttp2_session_send with the callbacks below writing into `out`, taking no more body once
    // it holds `watermark` bytes. Returns nghttp2_session_send's result (non-zero: fatal).
    int send(nghttp2_session* session, evbuffer* out, std::size_t watermark);
    // nghttp2's send callback: a frame other than a body's DATA frame, serialised.
    ssize_t add(const std::uint8_t* data, std::size_t len);
    // nghttp2's data provider: up to `length` bytes of stream `id`'s body (null: the stream is
    // unknown), within the peer's windows. `scratch` builds the trailer block.
    ssize_t read(nghttp2_session* session, std::int32_t id, OutgoingBody* body, std::size_t length,
                 std::uint32_t* flags, HeaderBlock& scratch);
    // nghttp2's send_data callback: the DATA frame read() just promised, moved to the output.
    int write_data_frame(OutgoingBody* body, const std::uint8_t* frame_header, std::size_t len);

    // After send(), so that what the owner does in the callback (append, end) finds the session
    // outside nghttp2_session_send; what it queues goes out with the next flush. Calls
    // `writable(id)` for each stream that ran dry and is still waiting: `body_of(id)` finds its
    // body, or null when the stream is gone.
    template <typename BodyOf, typename Writable>
    void notify_ran_dry(BodyOf&& body_of, Writable&& writable) {
        std::vector<std::int32_t> ids;
        ids.swap(ran_dry_);
        for (std::int32_t id : ids) {
            OutgoingBody* body = body_of(id);
            if (body != nullptr && body->deferred) writable(id);
        }
        ids.clear();
        if (ran_dry_.empty()) ran_dry_.swap(ids);  // keep the capacity
    }

  private:
    evbuffer* out_ = nullptr;  // during send(): where frames go
    std::size_t watermark_ = SIZE_MAX;
    std::vector<std::int32_t> ran_dry_;  // streams to tell the owner about after a send
};

}  // namespace proxyd::worker::h2
