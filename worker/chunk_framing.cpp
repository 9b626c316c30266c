#include "worker/chunk_framing.hpp"

#include <algorithm>
#include <cstdio>

namespace proxyd::worker {

void append_chunk_header(evbuffer* out, std::size_t n) {
    char buf[24];
    int len = std::snprintf(buf, sizeof buf, "%zx\r\n", n);
    evbuffer_add(out, buf, static_cast<std::size_t>(len));
}

http::ChunkedDecoder::Result parse_framing_front(evbuffer* in, http::ChunkedDecoder& decoder) {
    evbuffer_iovec first;
    if (evbuffer_peek(in, -1, nullptr, &first, 1) < 1) return {};
    auto result = decoder.parse_framing(static_cast<const char*>(first.iov_base), first.iov_len);
    std::size_t len = evbuffer_get_length(in);
    if (result.consumed == 0 && !result.error && first.iov_len < len) {
        // The framing straddles chains: make a small front contiguous and retry.
        std::size_t window = std::min<std::size_t>(len, http::ChunkedDecoder::kMaxLineLength + 64);
        auto* p =
            reinterpret_cast<const char*>(evbuffer_pullup(in, static_cast<ev_ssize_t>(window)));
        result = decoder.parse_framing(p, window);
    }
    return result;
}

}  // namespace proxyd::worker
