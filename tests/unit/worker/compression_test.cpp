#include "worker/compression.hpp"

#include <brotli/decode.h>
#include <doctest.h>
#include <unistd.h>
#include <zlib.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "common/util/event_ptr.hpp"

using namespace proxyd;
using config::CompressionAlgorithm;
using worker::choose_coding;
using worker::Compressor;
using worker::ContentCoding;

namespace {

constexpr std::array<CompressionAlgorithm, 2> kBrFirst{CompressionAlgorithm::Brotli,
                                                       CompressionAlgorithm::Gzip};
constexpr std::array<CompressionAlgorithm, 2> kGzipFirst{CompressionAlgorithm::Gzip,
                                                         CompressionAlgorithm::Brotli};
constexpr std::array<CompressionAlgorithm, 1> kGzipOnly{CompressionAlgorithm::Gzip};

std::string drain_all(evbuffer* buffer) {
    std::string s(evbuffer_get_length(buffer), '\0');
    evbuffer_remove(buffer, s.data(), s.size());
    return s;
}

std::string random_bytes(std::size_t size, unsigned seed) {
    std::mt19937 rng(seed);
    std::string s(size, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    return s;
}

// Text-like input: log lines with a counter, so it compresses well but is not one repeated block.
std::string repetitive_text(std::size_t size) {
    std::string s;
    for (int i = 0; s.size() < size; ++i)
        s += "<li class=\"entry\">GET /api/v1/items/" + std::to_string(i % 977) +
             " HTTP/1.1 200 OK</li>\n";
    s.resize(size);
    return s;
}

// A decoder fed the compressed stream piece by piece, as a client would; decoded() is everything
// it could produce from the bytes given so far.
class StreamDecoder {
  public:
    explicit StreamDecoder(ContentCoding coding) : coding_(coding) {
        if (coding_ == ContentCoding::Gzip) {
            REQUIRE(inflateInit2(&zlib_, 15 + 16) == Z_OK);  // 31: gzip wrapper only
        } else {
            brotli_ = BrotliDecoderCreateInstance(nullptr, nullptr, nullptr);
            REQUIRE(brotli_ != nullptr);
        }
    }
    ~StreamDecoder() {
        if (coding_ == ContentCoding::Gzip)
            inflateEnd(&zlib_);
        else
            BrotliDecoderDestroyInstance(brotli_);
    }
    StreamDecoder(const StreamDecoder&) = delete;
    StreamDecoder& operator=(const StreamDecoder&) = delete;

    // Feeds `bytes`; false on a decoding error.
    bool feed(std::string_view bytes) {
        return coding_ == ContentCoding::Gzip ? feed_zlib(bytes) : feed_brotli(bytes);
    }
    const std::string& decoded() const { return decoded_; }
    bool ended() const { return ended_; }

  private:
    bool feed_zlib(std::string_view bytes) {
        zlib_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
        zlib_.avail_in = static_cast<uInt>(bytes.size());
        std::array<unsigned char, 16384> chunk;
        for (;;) {
            zlib_.next_out = chunk.data();
            zlib_.avail_out = chunk.size();
            const int rc = inflate(&zlib_, Z_NO_FLUSH);
            decoded_.append(reinterpret_cast<char*>(chunk.data()), chunk.size() - zlib_.avail_out);
            if (rc == Z_STREAM_END) {
                ended_ = true;
                return zlib_.avail_in == 0;  // nothing may follow the trailer
            }
            if (rc == Z_BUF_ERROR && zlib_.avail_in == 0) return true;  // needs more input
            if (rc != Z_OK) return false;
            if (zlib_.avail_in == 0 && zlib_.avail_out != 0) return true;
        }
    }
    bool feed_brotli(std::string_view bytes) {
        const auto* next_in = reinterpret_cast<const std::uint8_t*>(bytes.data());
        std::size_t avail_in = bytes.size();
        std::array<std::uint8_t, 16384> chunk;
        for (;;) {
            std::uint8_t* next_out = chunk.data();
            std::size_t avail_out = chunk.size();
            const auto rc = BrotliDecoderDecompressStream(brotli_, &avail_in, &next_in, &avail_out,
                                                          &next_out, nullptr);
            decoded_.append(reinterpret_cast<char*>(chunk.data()), chunk.size() - avail_out);
            if (rc == BROTLI_DECODER_RESULT_SUCCESS) {
                ended_ = true;
                return avail_in == 0;
            }
            if (rc == BROTLI_DECODER_RESULT_ERROR) return false;
            // libbrotlidec 1.0.9 may say NEEDS_MORE_INPUT while output is still pending.
            if (rc == BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT &&
                !BrotliDecoderHasMoreOutput(brotli_))
                return true;
        }
    }

    ContentCoding coding_;
    z_stream zlib_{};
    BrotliDecoderState* brotli_ = nullptr;
    std::string decoded_;
    bool ended_ = false;
};

// Irregular write sizes: small, odd, segment-crossing and large ones, cycling.
constexpr std::array<std::size_t, 9> kWriteSizes{1, 7, 4096, 65539, 3, 16384, 100, 250000, 1500};

// Compresses `input` through `compressor` as a proxy would: the input arrives in `in` in pieces of
// irregular sizes (several evbuffer segments) and is taken by write() in other irregular sizes;
// after every write() a client decoder must have everything written so far. Returns the whole
// compressed stream.
std::string compress_streaming(Compressor& compressor, ContentCoding coding,
                               const std::string& input) {
    REQUIRE(compressor.start(coding));
    REQUIRE(compressor.active());
    auto in = make_evbuffer();
    auto out = make_evbuffer();
    StreamDecoder client(coding);
    std::string compressed;
    std::size_t added = 0;
    std::size_t written = 0;
    for (std::size_t i = 0; written < input.size(); ++i) {
        // Feed the upstream side in pieces sized differently from the writes, so a write spans
        // several segments and ends inside one.
        const std::size_t n = std::min(kWriteSizes[i % kWriteSizes.size()], input.size() - written);
        while (added < written + n) {
            const std::size_t piece = std::min<std::size_t>(3000, input.size() - added);
            REQUIRE(evbuffer_add(in.get(), input.data() + added, piece) == 0);
            added += piece;
        }
        const std::size_t before = evbuffer_get_length(in.get());
        REQUIRE(compressor.write(in.get(), n, out.get()));
        REQUIRE(evbuffer_get_length(in.get()) == before - n);  // exactly n consumed
        written += n;
        const std::string piece = drain_all(out.get());
        compressed += piece;
        REQUIRE(client.feed(piece));
        REQUIRE_FALSE(client.ended());
        // The flush property: what the client has decodes to exactly what was written.
        REQUIRE(client.decoded().size() == written);
        REQUIRE(std::string_view(client.decoded()) == std::string_view(input).substr(0, written));
    }
    REQUIRE(compressor.finish(out.get()));
    CHECK_FALSE(compressor.active());
    const std::string tail = drain_all(out.get());
    compressed += tail;
    REQUIRE(client.feed(tail));
    CHECK(client.ended());
    CHECK(client.decoded() == input);
    return compressed;
}

// Decodes a whole stream in one go (not the streaming decoder above).
std::string inflate_gzip(const std::string& compressed) {
    z_stream z{};
    REQUIRE(inflateInit2(&z, 31) == Z_OK);
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(compressed.data()));
    z.avail_in = static_cast<uInt>(compressed.size());
    std::string result;
    std::array<unsigned char, 65536> chunk;
    int rc = Z_OK;
    while (rc == Z_OK) {
        z.next_out = chunk.data();
        z.avail_out = chunk.size();
        rc = inflate(&z, Z_NO_FLUSH);
        result.append(reinterpret_cast<char*>(chunk.data()), chunk.size() - z.avail_out);
    }
    inflateEnd(&z);
    CHECK(rc == Z_STREAM_END);
    return result;
}

std::string decompress_brotli(const std::string& compressed) {
    StreamDecoder decoder(ContentCoding::Brotli);
    CHECK(decoder.feed(compressed));
    CHECK(decoder.ended());
    return decoder.decoded();
}

std::string decompress(ContentCoding coding, const std::string& compressed) {
    return coding == ContentCoding::Gzip ? inflate_gzip(compressed) : decompress_brotli(compressed);
}

// Runs `tool -dc` on a file holding `compressed`; `decoded` gets its output. False when it fails.
bool run_decoder_cli(const std::string& tool, const std::string& compressed, std::string& decoded) {
    char path[] = "/tmp/proxyd-compression-XXXXXX";
    const int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, compressed.data(), compressed.size()) ==
            static_cast<ssize_t>(compressed.size()));
    ::close(fd);
    const std::string out_path = std::string(path) + ".out";
    const std::string command = tool + " -dc < " + path + " > " + out_path + " 2>/dev/null";
    const int status = std::system(command.c_str());
    std::ifstream file(out_path, std::ios::binary);
    decoded.assign(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
    std::remove(path);
    std::remove(out_path.c_str());
    return status == 0;
}

}  // namespace

TEST_CASE("content coding names") {
    CHECK(worker::coding_name(ContentCoding::Gzip) == "gzip");
    CHECK(worker::coding_name(ContentCoding::Brotli) == "br");
}

TEST_CASE("choose_coding negotiates Accept-Encoding") {
    struct Case {
        const char* header;
        std::span<const CompressionAlgorithm> order;
        ContentCoding expected;
    };
    const ContentCoding I = ContentCoding::Identity;
    const ContentCoding G = ContentCoding::Gzip;
    const ContentCoding B = ContentCoding::Brotli;
    const Case cases[] = {
        // absent / empty / nothing we produce
        {"", kBrFirst, I},
        {"   ", kBrFirst, I},
        {"identity", kBrFirst, I},
        {"deflate, compress, zstd", kBrFirst, I},
        // plain lists: equal weights, the server's order decides
        {"gzip", kBrFirst, G},
        {"br", kBrFirst, B},
        {"gzip, deflate, br", kBrFirst, B},
        {"gzip, deflate, br", kGzipFirst, G},
        {"br", kGzipOnly, I},  // a coding not in algorithms is never chosen
        {"gzip, br", kGzipOnly, G},
        // weights
        {"gzip;q=1.0, br;q=0.5", kBrFirst, G},
        {"br;q=0.9, gzip;q=0.8", kGzipFirst, B},
        {"gzip;q=0.001", kBrFirst, G},
        {"gzip;q=0.5, br;q=0.500", kGzipFirst, G},  // a tie
        {"gzip;q=0", kBrFirst, I},
        {"br;q=0, gzip", kBrFirst, G},
        {"br;q=0.0, gzip;q=0.00", kBrFirst, I},
        // "*" covers what is not named
        {"*", kBrFirst, B},
        {"*", kGzipFirst, G},
        {"*;q=0.5, gzip", kBrFirst, G},
        {"*;q=0.5, br;q=0.2", kBrFirst, G},
        {"br;q=0, *", kBrFirst, G},
        {"*;q=0", kBrFirst, I},
        {"*;q=0, identity", kBrFirst, I},
        // identity
        {"identity;q=0, gzip", kBrFirst, G},
        {"gzip;q=0.5, identity", kBrFirst, I},  // the client prefers it
        {"gzip, identity", kBrFirst, G},        // a tie: compress
        {"identity;q=0.5, *", kBrFirst, B},
        // case and spaces
        {"GZIP", kBrFirst, G},
        {"Br;Q=1, gZip;q=0.5", kGzipFirst, B},
        {"  gzip ;  q=0.5 ,\tbr ; q=0.4  ", kBrFirst, G},
        {",, ,gzip,,", kBrFirst, G},
        // x-gzip
        {"x-gzip", kBrFirst, G},
        {"X-GZIP;q=0.7, br;q=0.6", kBrFirst, G},
        // malformed weights: the element is ignored
        {"gzip;q=2", kBrFirst, I},
        {"gzip;q=1.5", kBrFirst, I},
        {"gzip;q=0.1234", kBrFirst, I},
        {"gzip;q=", kBrFirst, I},
        {"gzip;q=-1", kBrFirst, I},
        {"gzip;q=abc, br;q=0.1", kBrFirst, B},
        {"gzip;q = 0.5", kBrFirst, I},
        {"gzip;level=1", kBrFirst, I},
        {"gzip;q=0.5;q=1", kBrFirst, I},
        {"br;q=0.x, *;q=0.3", kBrFirst, B},  // br ignored, so "*" covers it
        {";q=1, gzip", kBrFirst, G},
        // allowed forms of qvalue
        {"gzip;q=1., br;q=0.", kBrFirst, G},
        {"br;q=1.000", kGzipFirst, B},
        {"br;q=1.001", kBrFirst, I},
        // first mention counts
        {"gzip;q=0, gzip", kBrFirst, I},
    };
    for (const Case& c : cases) {
        CAPTURE(c.header);
        CHECK(choose_coding(c.header, c.order) == c.expected);
    }
    CHECK(choose_coding("gzip, br", std::span<const CompressionAlgorithm>{}) == I);
}

TEST_CASE("is_compressible_type matches media types") {
    const std::vector<std::string> types{"text/html", "application/json", "text/*"};
    CHECK(worker::is_compressible_type("text/html", types));
    CHECK(worker::is_compressible_type("application/json", types));
    CHECK(worker::is_compressible_type("Application/JSON", types));
    CHECK(worker::is_compressible_type("application/json; charset=utf-8", types));
    CHECK(worker::is_compressible_type("  application/json  ;charset=utf-8", types));
    CHECK(worker::is_compressible_type("text/plain", types));  // via text/*
    CHECK(worker::is_compressible_type("TEXT/CSS;q=1", types));
    CHECK(worker::is_compressible_type("text/event-stream", types));
    CHECK_FALSE(worker::is_compressible_type("", types));
    CHECK_FALSE(worker::is_compressible_type(" ; charset=utf-8", types));
    CHECK_FALSE(worker::is_compressible_type("text", types));
    CHECK_FALSE(worker::is_compressible_type("text/", types));
    CHECK_FALSE(worker::is_compressible_type("textual/html", types));
    CHECK_FALSE(worker::is_compressible_type("image/png", types));
    CHECK_FALSE(worker::is_compressible_type("application/json-seq", types));
    CHECK_FALSE(worker::is_compressible_type("application/jsonx", types));
    CHECK_FALSE(worker::is_compressible_type("application/javascript", types));

    const std::vector<std::string> exact{"text/html"};
    CHECK_FALSE(worker::is_compressible_type("text/plain", exact));
    CHECK_FALSE(worker::is_compressible_type("text/html", {}));
}

TEST_CASE("Compressor round trips gzip and br, flushing after every write") {
    const struct {
        const char* name;
        std::string data;
    } inputs[] = {
        {"empty", ""},
        {"1 byte", "x"},
        {"100 KB random", random_bytes(100 * 1000, 1)},
        {"100 KB text", repetitive_text(100 * 1000)},
        {"3 MB random", random_bytes(3 * 1000 * 1000, 2)},
        {"3 MB text", repetitive_text(3 * 1000 * 1000)},
    };
    for (const ContentCoding coding : {ContentCoding::Gzip, ContentCoding::Brotli}) {
        for (const auto& input : inputs) {
            const std::string_view coding_name = worker::coding_name(coding);
            const std::string_view input_name = input.name;
            CAPTURE(coding_name);
            CAPTURE(input_name);
            Compressor compressor;
            const std::string compressed = compress_streaming(compressor, coding, input.data);
            // And decoded in one go, independently of the streaming decoder.
            CHECK(decompress(coding, compressed) == input.data);
        }
    }
}

TEST_CASE("Compressor shrinks repetitive text") {
    const std::string text = repetitive_text(1000 * 1000);
    for (const ContentCoding coding : {ContentCoding::Gzip, ContentCoding::Brotli}) {
        const std::string_view coding_name = worker::coding_name(coding);
        CAPTURE(coding_name);
        Compressor compressor;
        auto in = make_evbuffer();
        auto out = make_evbuffer();
        REQUIRE(compressor.start(coding));
        evbuffer_add(in.get(), text.data(), text.size());
        REQUIRE(compressor.write(in.get(), text.size(), out.get()));
        REQUIRE(compressor.finish(out.get()));
        const std::size_t size = evbuffer_get_length(out.get());
        MESSAGE(worker::coding_name(coding), ": ", text.size(), " -> ", size, " bytes");
        CHECK(size < text.size() / 20);
        CHECK(decompress(coding, drain_all(out.get())) == text);
    }
}

TEST_CASE("one Compressor serves gzip, then br, then gzip") {
    Compressor compressor;
    CHECK_FALSE(compressor.active());
    const std::string first = repetitive_text(50000);
    const std::string second = random_bytes(20000, 3) + repetitive_text(30000);
    const std::string third = "short body";
    CHECK(decompress(ContentCoding::Gzip,
                     compress_streaming(compressor, ContentCoding::Gzip, first)) == first);
    CHECK(decompress(ContentCoding::Brotli,
                     compress_streaming(compressor, ContentCoding::Brotli, second)) == second);
    CHECK(decompress(ContentCoding::Gzip,
                     compress_streaming(compressor, ContentCoding::Gzip, third)) == third);

    SUBCASE("an abandoned stream does not leak into the next") {
        auto in = make_evbuffer();
        auto out = make_evbuffer();
        REQUIRE(compressor.start(ContentCoding::Gzip));
        evbuffer_add(in.get(), first.data(), first.size());
        REQUIRE(compressor.write(in.get(), 1000, out.get()));
        // The response was aborted; the next one starts clean.
        CHECK(decompress(ContentCoding::Gzip,
                         compress_streaming(compressor, ContentCoding::Gzip, third)) == third);
    }
    SUBCASE("moved, then released and started again") {
        Compressor moved = std::move(compressor);
        CHECK(decompress(ContentCoding::Brotli,
                         compress_streaming(moved, ContentCoding::Brotli, third)) == third);
        moved.release();
        CHECK(decompress(ContentCoding::Gzip,
                         compress_streaming(moved, ContentCoding::Gzip, first)) == first);
    }
}

TEST_CASE("Compressor refuses calls out of order") {
    Compressor compressor;
    auto in = make_evbuffer();
    auto out = make_evbuffer();
    evbuffer_add(in.get(), "abc", 3);
    CHECK_FALSE(compressor.write(in.get(), 3, out.get()));  // not started
    CHECK_FALSE(compressor.finish(out.get()));
    CHECK(compressor.start(ContentCoding::Identity));
    CHECK_FALSE(compressor.active());
    CHECK_FALSE(compressor.write(in.get(), 3, out.get()));

    REQUIRE(compressor.start(ContentCoding::Brotli));
    CHECK_FALSE(compressor.write(in.get(), 4, out.get()));  // more than `in` holds
    CHECK_FALSE(compressor.active());
    CHECK(evbuffer_get_length(in.get()) == 3);  // nothing consumed

    REQUIRE(compressor.start(ContentCoding::Gzip));
    CHECK(compressor.write(in.get(), 0, out.get()));  // nothing to do, nothing written
    CHECK(evbuffer_get_length(out.get()) == 0);
    CHECK(compressor.write(in.get(), 3, out.get()));
    CHECK(compressor.finish(out.get()));
    CHECK(inflate_gzip(drain_all(out.get())) == "abc");
}

TEST_CASE("command-line decoders read the Compressor's output") {
    const std::string input = repetitive_text(200000) + random_bytes(5000, 4);
    Compressor compressor;
    std::string decoded;

    const std::string gzipped = compress_streaming(compressor, ContentCoding::Gzip, input);
    CHECK(run_decoder_cli("gzip", gzipped, decoded));
    CHECK(decoded == input);

    const std::string brotlied = compress_streaming(compressor, ContentCoding::Brotli, input);
    if (access("/usr/bin/brotli", X_OK) != 0) {
        MESSAGE("/usr/bin/brotli is not installed: skipping the brotli -d check");
        return;
    }
    CHECK(run_decoder_cli("brotli", brotlied, decoded));
    CHECK(decoded == input);
}
