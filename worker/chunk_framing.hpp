// Chunked transfer coding on evbuffer chains, for both directions of the proxy: parsing a body's
// framing off the front of a buffer (the data itself is moved on as is), and writing a chunk
// header in front of data moved into a buffer. The request flow re-chunks request bodies toward
// the upstream; the HTTP/1.1 client side de-chunks request bodies and chunks responses.
#pragma once

#include <event2/buffer.h>

#include <cstddef>

#include "common/http/parser.hpp"

namespace proxyd::worker {

// "<n in hex>\r\n"; the caller adds the data and its "\r\n".
void append_chunk_header(evbuffer* out, std::size_t n);

// Runs the decoder over the framing at the front of `in` (a size line, a chunk's CRLF, the last
// chunk and trailers), without consuming: the caller drains result.consumed. Usually the first
// chain holds it all; framing that straddles chains is made contiguous first.
http::ChunkedDecoder::Result parse_framing_front(evbuffer* in, http::ChunkedDecoder& decoder);

}  // namespace proxyd::worker
