#include "worker/h2/outgoing_body.hpp"

#include <algorithm>

namespace proxyd::worker::h2 {

void OutgoingBody::append(nghttp2_session* session, std::int32_t id, evbuffer* data) {
    evbuffer_add_buffer(chain.get(), data);
    resume(session, id);
}

void OutgoingBody::end(nghttp2_session* session, std::int32_t id,
                       const std::vector<Header>& fields) {
    ended = true;
    trailers = fields;
    resume(session, id);
}

void OutgoingBody::clear() {
    evbuffer_drain(chain.get(), evbuffer_get_length(chain.get()));
    trailers.clear();
    ended = deferred = false;
}

void OutgoingBody::resume(nghttp2_session* session, std::int32_t id) {
    if (!deferred) return;
    deferred = false;
    nghttp2_session_resume_data(session, id);
}

int BodySender::send(nghttp2_session* session, evbuffer* out, std::size_t watermark) {
    out_ = out;
    watermark_ = watermark;
    const int rv = nghttp2_session_send(session);
    out_ = nullptr;
    return rv;
}

ssize_t BodySender::add(const std::uint8_t* data, std::size_t len) {
    evbuffer_add(out_, data, len);
    return static_cast<ssize_t>(len);
}

// The bytes are not copied here: with NO_COPY write_data_frame moves them from the stream's chain
// to the output.
ssize_t BodySender::read(nghttp2_session* session, std::int32_t id, OutgoingBody* body,
                         std::size_t length, std::uint32_t* flags, HeaderBlock& scratch) {
    if (body == nullptr) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    const std::size_t buffered = body->pending();
    const std::size_t n = std::min(length, buffered);
    if (n == 0 && !body->ended) {
        body->deferred = true;
        ran_dry_.push_back(id);
        return NGHTTP2_ERR_DEFERRED;
    }
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (body->ended && n == buffered) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (!body->trailers.empty()) {
            // The stream ends with the trailers' HEADERS frame, not with this DATA frame.
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            scratch.build_trailers(body->trailers);
            if (nghttp2_submit_trailer(session, id, scratch.data(), scratch.size()) != 0) {
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
            }
        }
    }
    return static_cast<ssize_t>(n);
}

int BodySender::write_data_frame(OutgoingBody* body, const std::uint8_t* frame_header,
                                 std::size_t len) {
    if (body == nullptr || body->pending() < len) {
        return NGHTTP2_ERR_CALLBACK_FAILURE;  // read() just promised these bytes
    }
    // The output is full enough: nghttp2 keeps this frame and offers it again at the next
    // flush; the rest stays in the streams' chains, where it counts as pending (backpressure).
    // (The documented way to stop a send: a read callback's NGHTTP2_ERR_PAUSE is not one, and
    // can leave a stream deferred with nobody to resume it.)
    if (evbuffer_get_length(out_) >= watermark_) return NGHTTP2_ERR_WOULDBLOCK;
    // No padding: the sessions set no padding callback, so the frame is its header and the
    // payload.
    evbuffer_add(out_, frame_header, 9);
    evbuffer_remove_buffer(body->chain.get(), out_, len);
    return 0;
}

}  // namespace proxyd::worker::h2
