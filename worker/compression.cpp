#include "worker/compression.hpp"

#include <brotli/encode.h>
#include <zlib.h>

#include <algorithm>
#include <climits>
#include <utility>

#include "common/http/parser.hpp"

namespace proxyd::worker {
namespace {

// ---- Accept-Encoding ----------------------------------------------------------------------------

bool is_ows(char c) {
    return c == ' ' || c == '\t';
}

std::string_view trim_ows(std::string_view s) {
    while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
    return s;
}

// Weights in thousandths (qvalue has at most three decimals), or kNotNamed.
constexpr int kNotNamed = -1;
constexpr int kFullWeight = 1000;

// RFC 9110 qvalue: ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ).
bool parse_qvalue(std::string_view s, int& weight) {
    if (s.empty() || (s[0] != '0' && s[0] != '1')) return false;
    int value = (s[0] - '0') * kFullWeight;
    if (s.size() == 1) {
        weight = value;
        return true;
    }
    if (s[1] != '.' || s.size() > 5) return false;
    int scale = kFullWeight / 10;
    for (char c : s.substr(2)) {
        if (c < '0' || c > '9') return false;
        value += (c - '0') * scale;
        scale /= 10;
    }
    if (value > kFullWeight) return false;
    weight = value;
    return true;
}

// One list element, `coding [ OWS ";" OWS "q=" qvalue ]` with its OWS already trimmed. False when
// the weight is malformed or there is any other parameter: the element is then ignored.
bool parse_element(std::string_view element, std::string_view& coding, int& weight) {
    const auto semicolon = element.find(';');
    coding = trim_ows(element.substr(0, semicolon));
    weight = kFullWeight;
    if (semicolon == std::string_view::npos) return !coding.empty();
    const std::string_view param = trim_ows(element.substr(semicolon + 1));
    if (coding.empty() || param.size() < 2 || (param[0] != 'q' && param[0] != 'Q') ||
        param[1] != '=')
        return false;
    return parse_qvalue(param.substr(2), weight);  // a second ';' makes it malformed here
}

// What a client said about the codings we care about; the first mention of a coding counts.
struct ClientWeights {
    int gzip = kNotNamed;
    int brotli = kNotNamed;
    int identity = kNotNamed;
    int any = kNotNamed;  // "*"

    int* slot_for(std::string_view coding) {
        if (http::iequals(coding, "gzip") || http::iequals(coding, "x-gzip")) return &gzip;
        if (http::iequals(coding, "br")) return &brotli;
        if (http::iequals(coding, "identity")) return &identity;
        if (coding == "*") return &any;
        return nullptr;
    }

    // The weight of a coding the server can produce: its own, else that of "*", else 0.
    int of(config::CompressionAlgorithm algorithm) const {
        const int named = algorithm == config::CompressionAlgorithm::Gzip ? gzip : brotli;
        if (named != kNotNamed) return named;
        return any != kNotNamed ? any : 0;
    }
};

ClientWeights parse_accept_encoding(std::string_view header) {
    ClientWeights weights;
    while (!header.empty()) {
        const auto comma = header.find(',');
        const std::string_view element = trim_ows(header.substr(0, comma));
        header = comma == std::string_view::npos ? std::string_view{} : header.substr(comma + 1);
        std::string_view coding;
        int weight = 0;
        if (element.empty() || !parse_element(element, coding, weight)) continue;
        int* slot = weights.slot_for(coding);
        if (slot != nullptr && *slot == kNotNamed) *slot = weight;
    }
    return weights;
}

ContentCoding coding_of(config::CompressionAlgorithm algorithm) {
    return algorithm == config::CompressionAlgorithm::Gzip ? ContentCoding::Gzip
                                                           : ContentCoding::Brotli;
}

// ---- Streaming into an evbuffer -----------------------------------------------------------------

// zlib counts in uInt; a larger evbuffer segment is fed in pieces of this size.
constexpr std::size_t kMaxPiece = std::size_t{1} << 30;
// Bounds for one reservation at the end of the output: at least room for a flush marker or a
// stream's end, at most one modest chain (the loops reserve again when it fills).
constexpr std::size_t kMinReserve = 256;
constexpr std::size_t kMaxReserve = 64 * 1024;

// Room for the compressed form of `pending` more input bytes: their size plus a little (stored
// blocks of incompressible data grow slightly); compressible text leaves the rest of the chain
// for the next reservation.
std::size_t reserve_size(std::size_t pending) {
    return std::clamp(pending + pending / 16 + 64, kMinReserve, kMaxReserve);
}

// Space reserved at the end of an evbuffer, then committed with however much was written in it.
class OutputSpace {
  public:
    bool reserve(evbuffer* out, std::size_t size) {
        out_ = out;
        return evbuffer_reserve_space(out, static_cast<ev_ssize_t>(size), &vec_, 1) == 1;
    }
    unsigned char* data() const { return static_cast<unsigned char*>(vec_.iov_base); }
    std::size_t size() const { return std::min<std::size_t>(vec_.iov_len, UINT_MAX); }
    bool commit(std::size_t used) {
        vec_.iov_len = used;
        return evbuffer_commit_space(out_, &vec_, 1) == 0;
    }

  private:
    evbuffer* out_ = nullptr;
    evbuffer_iovec vec_{};
};

// Runs deflate over `size` bytes with `flush` until the input is consumed and, for Z_SYNC_FLUSH,
// everything is out (avail_out left over) or, for Z_FINISH, the stream has ended.
bool deflate_into(z_stream& stream, const unsigned char* data, std::size_t size, int flush,
                  std::size_t hint, evbuffer* out) {
    stream.next_in = const_cast<unsigned char*>(data);  // zlib's API is not const-correct
    stream.avail_in = static_cast<uInt>(size);
    for (;;) {
        OutputSpace space;
        if (!space.reserve(out, reserve_size(std::max<std::size_t>(stream.avail_in, hint))))
            return false;
        stream.next_out = space.data();
        stream.avail_out = static_cast<uInt>(space.size());
        const int rc = deflate(&stream, flush);
        if (!space.commit(space.size() - stream.avail_out)) return false;
        if (flush == Z_FINISH) {
            if (rc == Z_STREAM_END) return true;
            if (rc != Z_OK) return false;  // Z_BUF_ERROR here = no progress possible
            continue;
        }
        if (rc != Z_OK && rc != Z_BUF_ERROR) return false;
        if (stream.avail_out != 0) return true;
        hint = 0;
    }
}

// The same for brotli: PROCESS until the input is taken, FLUSH/FINISH until the encoder has
// nothing more to give.
bool brotli_into(BrotliEncoderState* state, const unsigned char* data, std::size_t size,
                 BrotliEncoderOperation operation, std::size_t hint, evbuffer* out) {
    const std::uint8_t* next_in = data;
    std::size_t avail_in = size;
    for (;;) {
        OutputSpace space;
        if (!space.reserve(out, reserve_size(std::max(avail_in, hint)))) return false;
        std::uint8_t* next_out = space.data();
        std::size_t avail_out = space.size();
        const bool ok = BrotliEncoderCompressStream(state, operation, &avail_in, &next_in,
                                                    &avail_out, &next_out, nullptr);
        if (!space.commit(space.size() - avail_out) || !ok) return false;
        const bool done = operation == BROTLI_OPERATION_FINISH
                              ? BrotliEncoderIsFinished(state)
                              : avail_in == 0 && !BrotliEncoderHasMoreOutput(state);
        if (done) return true;
        hint = 0;
    }
}

}  // namespace

std::string_view coding_name(ContentCoding coding) {
    switch (coding) {
        case ContentCoding::Gzip:
            return "gzip";
        case ContentCoding::Brotli:
            return "br";
        case ContentCoding::Identity:
            break;
    }
    return "identity";
}

ContentCoding choose_coding(std::string_view accept_encoding,
                            std::span<const config::CompressionAlgorithm> server_order) {
    const ClientWeights weights = parse_accept_encoding(accept_encoding);
    ContentCoding best = ContentCoding::Identity;
    int best_weight = 0;  // q=0 = not acceptable, so a coding needs more than that
    for (const auto algorithm : server_order) {
        const int weight = weights.of(algorithm);
        if (weight > best_weight) {  // strictly: on a tie the earlier (preferred) one stays
            best = coding_of(algorithm);
            best_weight = weight;
        }
    }
    if (weights.identity > best_weight) return ContentCoding::Identity;
    return best;
}

bool is_compressible_type(std::string_view content_type, const std::vector<std::string>& types) {
    const std::string_view media_type = trim_ows(content_type.substr(0, content_type.find(';')));
    if (media_type.empty()) return false;
    for (const std::string& entry : types) {
        const std::string_view pattern = entry;
        if (pattern.ends_with("/*")) {
            const std::string_view type_and_slash = pattern.substr(0, pattern.size() - 1);
            if (media_type.size() > type_and_slash.size() &&
                http::iequals(media_type.substr(0, type_and_slash.size()), type_and_slash))
                return true;
        } else if (http::iequals(media_type, pattern)) {
            return true;
        }
    }
    return false;
}

// ---- Compressor ---------------------------------------------------------------------------------

struct Compressor::ZlibStream {
    z_stream stream{};
    ~ZlibStream() { deflateEnd(&stream); }
};

void Compressor::BrotliDeleter::operator()(BrotliEncoderStateStruct* state) const noexcept {
    BrotliEncoderDestroyInstance(state);
}

Compressor::Compressor() = default;
Compressor::~Compressor() = default;

Compressor::Compressor(Compressor&& other) noexcept
    : active_(std::exchange(other.active_, ContentCoding::Identity)),
      zlib_(std::move(other.zlib_)),
      brotli_(std::move(other.brotli_)) {}

Compressor& Compressor::operator=(Compressor&& other) noexcept {
    active_ = std::exchange(other.active_, ContentCoding::Identity);
    zlib_ = std::move(other.zlib_);
    brotli_ = std::move(other.brotli_);
    return *this;
}

bool Compressor::start(ContentCoding coding) {
    active_ = ContentCoding::Identity;
    brotli_.reset();  // whatever an abandoned br stream held
    bool ok = true;
    if (coding == ContentCoding::Gzip) ok = start_gzip();
    if (coding == ContentCoding::Brotli) ok = start_brotli();
    if (ok) active_ = coding;
    return ok;
}

// The z_stream is made once and reset for each later response: deflateInit2 allocates ~256 KiB
// (window, hash chains, pending buffer), deflateReset only clears what must be cleared.
bool Compressor::start_gzip() {
    if (zlib_) return deflateReset(&zlib_->stream) == Z_OK;
    auto zlib = std::make_unique<ZlibStream>();
    // windowBits + 16: a gzip header and trailer around the deflate data.
    if (deflateInit2(&zlib->stream, kGzipLevel, Z_DEFLATED, kGzipWindowBits + 16, kGzipMemLevel,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
        zlib->stream.state = nullptr;  // nothing for deflateEnd to free
        return false;
    }
    zlib_ = std::move(zlib);
    return true;
}

// brotli has no reset: a fresh encoder per response (its buffers grow with the input, so a short
// response costs little).
bool Compressor::start_brotli() {
    brotli_.reset(BrotliEncoderCreateInstance(nullptr, nullptr, nullptr));
    if (!brotli_) return false;
    return BrotliEncoderSetParameter(brotli_.get(), BROTLI_PARAM_QUALITY, kBrotliQuality) &&
           BrotliEncoderSetParameter(brotli_.get(), BROTLI_PARAM_LGWIN, kBrotliWindowBits);
}

bool Compressor::encode(const unsigned char* data, std::size_t size, bool flush, std::size_t hint,
                        evbuffer* out) {
    if (active_ == ContentCoding::Gzip)
        return deflate_into(zlib_->stream, data, size, flush ? Z_SYNC_FLUSH : Z_NO_FLUSH, hint,
                            out);
    return brotli_into(brotli_.get(), data, size,
                       flush ? BROTLI_OPERATION_FLUSH : BROTLI_OPERATION_PROCESS, hint, out);
}

bool Compressor::write(evbuffer* in, std::size_t n, evbuffer* out) {
    if (!active() || n > evbuffer_get_length(in)) return fail();
    // Segment by segment, in place; each batch of segments is drained once it is compressed.
    constexpr int kBatch = 8;
    while (n > 0) {
        evbuffer_iovec segments[kBatch];
        const int count = evbuffer_peek(in, static_cast<ev_ssize_t>(n), nullptr, segments, kBatch);
        std::size_t taken = 0;
        for (int i = 0; i < std::min(count, kBatch) && taken < n; ++i) {
            const auto* data = static_cast<const unsigned char*>(segments[i].iov_base);
            std::size_t left = std::min(segments[i].iov_len, n - taken);
            while (left > 0) {
                const std::size_t piece = std::min(left, kMaxPiece);
                // The flush goes with the last bytes of this write, not in a call of its own.
                const bool last = taken + piece == n;
                if (!encode(data, piece, last, n - taken, out)) return fail();
                data += piece;
                left -= piece;
                taken += piece;
            }
        }
        if (taken == 0) return fail();  // only empty segments: never loop forever
        if (evbuffer_drain(in, taken) != 0) return fail();
        n -= taken;
    }
    return true;
}

bool Compressor::finish(evbuffer* out) {
    if (!active()) return false;
    const bool ok = active_ == ContentCoding::Gzip
                        ? deflate_into(zlib_->stream, nullptr, 0, Z_FINISH, 0, out)
                        : brotli_into(brotli_.get(), nullptr, 0, BROTLI_OPERATION_FINISH, 0, out);
    active_ = ContentCoding::Identity;
    brotli_.reset();  // the zlib state is kept for the next response; brotli's cannot be reused
    return ok;
}

void Compressor::release() {
    active_ = ContentCoding::Identity;
    zlib_.reset();
    brotli_.reset();
}

bool Compressor::fail() {
    active_ = ContentCoding::Identity;
    brotli_.reset();
    return false;
}

}  // namespace proxyd::worker
