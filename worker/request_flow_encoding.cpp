// The request flow's way out for response bodies: compression ([compression], route compress)
// decided on the response head, and every body byte, from an upstream or from the cache, passing
// through deliver_body (copied for the store, then compressed or moved as it is) and ending with
// end_body.
//
// Compression streams: each piece the upstream sends is compressed and flushed to the client at
// once (worker/compression.hpp), so nothing waits for the whole body.
#include <spdlog/spdlog.h>

#include <charconv>

#include "worker/request_flow.hpp"
#include "worker/worker.hpp"

namespace proxyd::worker {
namespace {

constexpr std::string_view kAcceptEncoding = "Accept-Encoding";

// Whether compression applies to this response at all (then it varies by Accept-Encoding, even
// for a client that gets it uncompressed).
bool worth_compressing(const http::Response& response, const config::CompressionSettings& settings,
                       bool is_head) {
    if (response.status != 200) return false;
    const std::string_view coding = http::find_header(response, "content-encoding");
    if (!coding.empty() && !http::iequals(coding, "identity")) return false;
    if (http::list_contains_token(http::find_header(response, "cache-control"), "no-transform")) {
        return false;
    }
    if (!is_compressible_type(http::find_header(response, "content-type"), settings.types)) {
        return false;
    }
    // A body that is not there (an empty 200) stays empty: "Content-Encoding: gzip" on no bytes
    // at all is not a valid gzip stream.
    if (!is_head && response.body == http::BodyKind::None) return false;
    std::uint64_t length = response.content_length;
    bool known = response.body == http::BodyKind::ContentLength;
    if (is_head) {
        // A HEAD answer's Content-Length describes the GET's body.
        const std::string_view text = http::find_header(response, "content-length");
        const char* end = text.data() + text.size();
        known = !text.empty() && std::from_chars(text.data(), end, length).ptr == end;
    }
    return !known || length >= settings.min_size;
}

}  // namespace

// While the request head is in place: the client's Accept-Encoding, if compression may apply.
void RequestFlow::prepare_encoding(const http::Request& request) {
    auto& ex = *exchange_;
    const auto& settings = worker_.config().compression;
    if (!settings.enabled || !ex.route->compress || ex.route->grpc || ex.websocket) return;
    ex.may_compress = true;
    ex.accept_encoding.assign(http::find_header(request, "accept-encoding"));
}

// The head the client gets: the response's own, or a copy that names the content coding the body
// will get (Content-Encoding, no Content-Length, Vary: Accept-Encoding, a weak ETag).
const http::Response& RequestFlow::encode_head(const http::Response& response) {
    auto& ex = *exchange_;
    const auto& settings = worker_.config().compression;
    if (!ex.may_compress || !worth_compressing(response, settings, ex.is_head)) return response;
    ContentCoding coding = choose_coding(ex.accept_encoding, settings.algorithms);
    if (coding != ContentCoding::Identity && response.body != http::BodyKind::None && !ex.is_head) {
        if (coding == ContentCoding::Gzip) worker_.take_spare_encoder(ex.compressor);
        if (!ex.compressor.start(coding)) {
            spdlog::error("request {}: cannot start {} encoding", ex.request_id,
                          coding_name(coding));
            coding = ContentCoding::Identity;
        }
    }
    http::Response& out = worker_.encoded_response();
    out.status = response.status;
    out.reason = response.reason;
    out.version_minor = response.version_minor;
    out.body = response.body;
    out.content_length = response.content_length;
    out.keep_alive = response.keep_alive;
    out.head_length = response.head_length;
    out.header_count = 0;
    bool has_vary = false;
    for (std::size_t i = 0; i < response.header_count; ++i) {
        http::Header header = response.headers[i];
        if (http::iequals(header.name, "vary")) {
            if (has_vary || http::list_contains_token(header.value, kAcceptEncoding)) {
                has_vary = true;
                out.headers[out.header_count++] = header;
                continue;
            }
            has_vary = true;
            ex.encoded_vary.assign(header.value);
            ex.encoded_vary += ", ";
            ex.encoded_vary += kAcceptEncoding;
            header.value = ex.encoded_vary;
        } else if (coding != ContentCoding::Identity) {
            if (http::iequals(header.name, "content-length")) continue;
            if (http::iequals(header.name, "etag") && !header.value.starts_with("W/")) {
                ex.encoded_etag.assign("W/");
                ex.encoded_etag += header.value;
                header.value = ex.encoded_etag;
            }
        }
        out.headers[out.header_count++] = header;
    }
    // Room for the two fields added: a response with kMaxHeaders fields goes as it is.
    if (out.header_count + 2 > http::kMaxHeaders) {
        ex.compressor.start(ContentCoding::Identity);
        return response;
    }
    if (!has_vary) out.headers[out.header_count++] = {"Vary", kAcceptEncoding};
    if (coding == ContentCoding::Identity) return out;
    out.headers[out.header_count++] = {"Content-Encoding", coding_name(coding)};
    if (out.body == http::BodyKind::ContentLength) out.body = http::BodyKind::Chunked;
    return out;
}

// A 304 for a stored response carries the Vary its 200 would have had (RFC 9110 15.4.5),
// Accept-Encoding included when compression applies to it.
void RequestFlow::append_encoding_vary(const http::Response& stored, std::string& lines) {
    auto& ex = *exchange_;
    if (!ex.may_compress || !worth_compressing(stored, worker_.config().compression, false)) {
        return;
    }
    for (std::size_t i = 0; i < stored.header_count; ++i) {
        if (http::iequals(stored.headers[i].name, "vary") &&
            http::list_contains_token(stored.headers[i].value, kAcceptEncoding)) {
            return;
        }
    }
    append_header(lines, "Vary", kAcceptEncoding);
}

// Body bytes on their way to the client: `n` from the front of `in`.
void RequestFlow::deliver_body(evbuffer* in, std::size_t n) {
    auto& ex = *exchange_;
    if (ex.cache_storing) copy_for_store(in, n);
    if (!ex.compressor.active()) {
        client_->send_response_data(in, n);
        return;
    }
    evbuffer* out = worker_.encoded_body();
    if (!ex.compressor.write(in, n, out)) {
        // zlib and brotli fail only on a broken state or no memory: the body cannot go on.
        spdlog::error("request {}: compression failed", ex.request_id);
        evbuffer_drain(in, n);
        evbuffer_drain(out, evbuffer_get_length(out));
        ex.compressor.release();
        ex.upstream_reusable = false;
        return;
    }
    client_->send_response_data(out, evbuffer_get_length(out));
}

// The body is complete: the coding's end, the copy into the store, the client side's end.
void RequestFlow::end_body() {
    auto& ex = *exchange_;
    if (ex.compressor.active()) {
        evbuffer* out = worker_.encoded_body();
        if (ex.compressor.finish(out)) client_->send_response_data(out, evbuffer_get_length(out));
        evbuffer_drain(out, evbuffer_get_length(out));
    }
    commit_cache_store();
    client_->end_response();
}

void RequestFlow::end_body_with_trailers(const HeaderList& trailers) {
    auto& ex = *exchange_;
    if (ex.compressor.active()) {
        evbuffer* out = worker_.encoded_body();
        if (ex.compressor.finish(out)) client_->send_response_data(out, evbuffer_get_length(out));
        evbuffer_drain(out, evbuffer_get_length(out));
    }
    commit_cache_store();
    client_->end_response_with_trailers(trailers);
}

}  // namespace proxyd::worker
