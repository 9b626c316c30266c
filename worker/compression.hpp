// Response compression ([compression] in the config): which coding a client gets
// (choose_coding), which responses qualify by type (is_compressible_type), and a streaming
// Compressor that turns upstream body bytes into gzip or br on their way to the client.
//
// Streaming is the point: every write() ends with a flush, so what the client has received so far
// always decodes to everything the upstream has sent so far. Server-sent events and slow streams
// are never held back waiting for a compression block to fill; the price is a few bytes per write
// (an empty stored block for gzip, a byte-alignment for br) and a slightly worse ratio.
#pragma once

#include <event2/buffer.h>

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/config/types.hpp"

struct BrotliEncoderStateStruct;

namespace proxyd::worker {

enum class ContentCoding { Identity, Gzip, Brotli };

// The Content-Encoding token: "gzip", "br" ("identity" for Identity, which is never sent).
std::string_view coding_name(ContentCoding coding);

// The coding to answer with, given the request's Accept-Encoding value (RFC 9110 §12.5.3) and the
// server's preference order (config algorithms; codings not in it are never chosen):
//   - a comma-separated list of `coding [ OWS ";" OWS "q=" qvalue ]`, tokens and "q" in any case;
//     "x-gzip" is gzip; an element with a malformed weight or any other parameter is ignored;
//   - q=0 means "not acceptable"; "*" gives its weight to every coding not named in the list;
//   - the highest weight wins, ties go to the earlier coding in server_order;
//   - identity wins only when the client names it with a weight above the best coding's
//     (e.g. "gzip;q=0.5, identity"); empty or absent header = Identity.
// With several Accept-Encoding lines, pass their values joined with ", ".
ContentCoding choose_coding(std::string_view accept_encoding,
                            std::span<const config::CompressionAlgorithm> server_order);

// Whether the media type of `content_type` (the part before ';', OWS trimmed) is one of `types`,
// case-insensitively. An entry "type/*" (e.g. "text/*") matches every subtype of that type.
bool is_compressible_type(std::string_view content_type, const std::vector<std::string>& types);

// Levels, measured with this streaming pattern (16 KiB writes, each flushed) on 14.5 MB of HTML,
// JS, CSS and JSON (242 rustdoc files), CPU time on this project's dev machine:
//   gzip 1: 21.5% of the input at 167 MB/s   gzip 6: 16.7% at 61 MB/s   gzip 9: 16.2% at 15 MB/s
//   br 3:   18.1% at 166 MB/s   br 4: 17.4% at 115 MB/s   br 5: 15.8% at 79 MB/s (window 256 KiB)
// A proxy compresses every response afresh, on the request path, so CPU per byte comes first.
//
// gzip level 1, nginx's default gzip_comp_level: the fastest level; level 6 saves another ~22% of
// the output for 2.7x the CPU. gzip is what clients without br get (browsers only offer br over
// HTTPS), so it must stay cheap enough to be turned on everywhere.
inline constexpr int kGzipLevel = 1;
// deflate's own defaults: 32 KiB window (the largest; every gzip decoder accepts it), memLevel 8.
// The state is ~256 KiB per live stream, kept between responses (deflateReset) until release().
inline constexpr int kGzipWindowBits = 15;
inline constexpr int kGzipMemLevel = 8;
// brotli quality 4: about gzip 6's ratio at twice its speed, i.e. ~19% less output than gzip 1 for
// ~45% more CPU. Quality 5 switches to a slower hasher (-9% output, +45% CPU); 10-11 are for
// static assets compressed once, never for on-the-fly compression.
inline constexpr int kBrotliQuality = 4;
// A 256 KiB window (brotli's default is 4 MiB): the encoder's ring buffer and the client's decoder
// buffer grow up to the window. 4 MiB would save ~3.5% of the output but raise the encoder's peak
// memory on a 2 MB response from 1.3 MiB to 9 MiB (per concurrent stream); responses worth
// compressing on the fly are mostly far smaller than either window.
inline constexpr int kBrotliWindowBits = 18;

// Streams one response body at a time into gzip or br; reusable for the next response. Not
// thread-safe; one per exchange (or connection) in a worker.
//
//   start(coding)       begin a response's body (Identity = not active)
//   write(in, n, out)*  take n bytes from the front of `in`, append their compressed form to
//                       `out`, flushed so the client can decode everything so far
//   finish(out)         append the end of the stream (gzip trailer / br last block)
//
// Each returns false on a library error (out of memory, or a call out of order: write/finish
// while not active, n > the length of `in`); the stream is then unusable and the caller should
// abort the response. The input is never copied: write() compresses evbuffer_peek segments in
// place and writes into space reserved at the end of `out`.
class Compressor {
  public:
    Compressor();
    ~Compressor();
    Compressor(Compressor&&) noexcept;
    Compressor& operator=(Compressor&&) noexcept;
    Compressor(const Compressor&) = delete;
    Compressor& operator=(const Compressor&) = delete;

    // Begins a stream, abandoning any unfinished one. Returns false if the encoder could not be
    // set up (out of memory); Identity always succeeds and leaves the compressor inactive.
    bool start(ContentCoding coding);
    bool write(evbuffer* in, std::size_t n, evbuffer* out);
    bool finish(evbuffer* out);
    // Between a successful start(Gzip|Brotli) and finish() (or an error).
    bool active() const { return active_ != ContentCoding::Identity; }
    // Whether it holds a zlib state that a later gzip stream reuses (see Worker's spare ones).
    bool has_gzip_state() const { return zlib_ != nullptr; }
    // Frees the encoders' memory (the kept zlib state too), e.g. when a connection goes idle.
    void release();

  private:
    struct ZlibStream;
    struct BrotliDeleter {
        void operator()(BrotliEncoderStateStruct* state) const noexcept;
    };

    bool start_gzip();
    bool start_brotli();
    // Compresses `size` bytes, flushing after them when `flush`; `hint` = input bytes still to
    // come in this write(), to size the output reservation.
    bool encode(const unsigned char* data, std::size_t size, bool flush, std::size_t hint,
                evbuffer* out);
    bool fail();  // ends the stream after an error; returns false

    ContentCoding active_ = ContentCoding::Identity;
    std::unique_ptr<ZlibStream> zlib_;  // on the heap: zlib's state points back at its z_stream
    std::unique_ptr<BrotliEncoderStateStruct, BrotliDeleter> brotli_;
};

}  // namespace proxyd::worker
