// libFuzzer target: ChunkedDecoder driven by the loop documented in common/http/parser.hpp, with
// the body cut into pieces whose sizes come from the first bytes of the input:
//   byte 0        number of piece sizes (1 + b % 8)
//   next N bytes  the piece sizes, cycled: b == 0 means "all the rest", else 1 + (b - 1) % 64...
//                 ... times 1, 7 or 61 (by b / 64) so both tiny and larger pieces occur
//   the rest      the body
// Invariants: consumed <= len; a framing call on non-empty input either errs, reaches data or the
// end, or takes all of it (no stall); data_remaining <= chunk_size <= 2^63 - 1 and moves by
// exactly what consume_data was given; an error is sticky; the framing between two data runs
// is bounded; and the outcome (error, done, data, where it stopped) is the same as for the
// body in one piece.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string_view>
#include <vector>

#include "common/http/parser.hpp"
#include "tests/fuzz/fuzz_check.hpp"

using proxyd::http::ChunkedDecoder;

namespace {

constexpr std::uint64_t kMaxChunkSize = std::numeric_limits<std::int64_t>::max();
// A size line (ext included) and the CRLFs around it, or the whole trailer section.
constexpr std::size_t kMaxFramingRun =
    ChunkedDecoder::kMaxLineLength + ChunkedDecoder::kMaxTrailerBytes + 8;

struct Outcome {
    bool error = false;
    bool done = false;
    std::uint64_t data_bytes = 0;
    std::uint64_t data_hash = 1469598103934665603ULL;  // FNV-1a over the data bytes
    std::size_t stopped_at = 0;                        // body offset where decoding stopped
};

void hash(Outcome& o, std::string_view bytes) {
    for (char c : bytes) {
        o.data_hash ^= static_cast<unsigned char>(c);
        o.data_hash *= 1099511628211ULL;
    }
    o.data_bytes += bytes.size();
}

void check_state(const ChunkedDecoder& dec) {
    FUZZ_CHECK(dec.chunk_size() <= kMaxChunkSize);
    if (dec.in_data()) {
        FUZZ_CHECK(dec.data_remaining() > 0);
        FUZZ_CHECK(dec.data_remaining() <= dec.chunk_size());
    }
    FUZZ_CHECK(!(dec.in_data() && dec.done()));
}

Outcome decode(std::string_view body, const std::vector<std::size_t>& sizes) {
    ChunkedDecoder dec;
    Outcome out;
    std::size_t offset = 0;  // body bytes handed to the decoder or moved as data so far
    std::size_t framing_run = 0;
    std::size_t k = 0;
    while (offset < body.size() && !out.error && !out.done) {
        std::size_t piece = sizes[k++ % sizes.size()];
        if (piece == 0) piece = body.size() - offset;
        piece = std::min(piece, body.size() - offset);
        // An exact-size heap copy of the piece: ASan sees any read past what was given.
        std::vector<char> buf(body.begin() + static_cast<std::ptrdiff_t>(offset),
                              body.begin() + static_cast<std::ptrdiff_t>(offset + piece));
        std::string_view in(buf.data(), buf.size());
        while (!in.empty()) {
            check_state(dec);
            if (dec.in_data()) {
                const std::uint64_t before = dec.data_remaining();
                const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(before, in.size()));
                hash(out, in.substr(0, n));
                dec.consume_data(n);
                FUZZ_CHECK(dec.data_remaining() == before - n);
                FUZZ_CHECK(dec.in_data() == (before - n > 0));
                in.remove_prefix(n);
                offset += n;
                framing_run = 0;
                continue;
            }
            const ChunkedDecoder::Result r = dec.parse_framing(in.data(), in.size());
            FUZZ_CHECK(r.consumed <= in.size());
            FUZZ_CHECK(r.error == false || !dec.done());
            in.remove_prefix(r.consumed);
            offset += r.consumed;
            framing_run += r.consumed;
            FUZZ_CHECK(framing_run <= kMaxFramingRun);
            if (r.error) {
                out.error = true;
                // Sticky: the same decoder keeps refusing, without consuming anything.
                const char byte = 'x';
                const ChunkedDecoder::Result again = dec.parse_framing(&byte, 1);
                FUZZ_CHECK(again.error && again.consumed == 0);
                FUZZ_CHECK(!dec.in_data() && !dec.done());
                break;
            }
            if (dec.done()) {
                out.done = true;
                // Bytes after the body are never framing: a further call takes nothing.
                if (!in.empty()) {
                    const ChunkedDecoder::Result after = dec.parse_framing(in.data(), in.size());
                    FUZZ_CHECK(after.consumed == 0 && !after.error && dec.done());
                }
                break;
            }
            // No stall: without error or end, the call stops early only where data starts.
            FUZZ_CHECK(dec.in_data() || in.empty());
            FUZZ_CHECK(r.consumed > 0 || dec.in_data());
        }
    }
    check_state(dec);
    out.stopped_at = offset;
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
    if (size < 2) return 0;
    const std::size_t count = 1 + bytes[0] % 8;
    if (size < 1 + count) return 0;
    std::vector<std::size_t> sizes;
    for (std::size_t i = 0; i < count; ++i) {
        const std::uint8_t b = bytes[1 + i];
        static constexpr std::size_t kScale[] = {1, 7, 61, 1};
        sizes.push_back(b == 0 ? 0 : (1 + (b - 1) % 64) * kScale[b / 64]);
    }
    const std::string_view body(reinterpret_cast<const char*>(bytes) + 1 + count, size - 1 - count);

    const Outcome split = decode(body, sizes);
    const Outcome whole = decode(body, {0});
    FUZZ_CHECK(split.error == whole.error);
    FUZZ_CHECK(split.done == whole.done);
    FUZZ_CHECK(split.data_bytes == whole.data_bytes);
    FUZZ_CHECK(split.data_hash == whole.data_hash);
    FUZZ_CHECK(split.stopped_at == whole.stopped_at);
    FUZZ_CHECK(whole.stopped_at <= body.size());
    if (!whole.error && !whole.done) FUZZ_CHECK(whole.stopped_at == body.size());
    return 0;
}
