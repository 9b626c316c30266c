// libFuzzer target: the header parsing of the response cache and of compression, all of it on
// input that clients and upstreams control. The input is a response head and a request head
// separated by the first NUL byte (either may fail to parse; the raw halves are used as header
// values then). Invariants:
//   - evaluate_response: stored => a positive lifetime; the Vary list is lower-case, ","-joined,
//     without spaces or duplicates; the stored head parses again, without framing or
//     per-response headers, and with every other header of the response;
//   - parse_http_date: a parsed date formats (IMF-fixdate) and parses back to the same second;
//   - choose_coding: identity or one of the server's codings;
//   - the cache key of a request matches its own path as a purge prefix, and its host;
//   - is_not_modified, is_compressible_type and append_vary_suffix never crash.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "common/http/cache_key.hpp"
#include "common/http/parser.hpp"
#include "tests/fuzz/fuzz_check.hpp"
#include "worker/cache_policy.hpp"
#include "worker/compression.hpp"

using namespace proxyd;

namespace {

constexpr std::int64_t kNow = 1'800'000'000;  // 2027

void check_vary(std::string_view vary) {
    std::set<std::string_view> seen;
    while (!vary.empty()) {
        const std::size_t comma = vary.find(',');
        const std::string_view name = vary.substr(0, comma);
        FUZZ_CHECK(!name.empty());
        for (char c : name) FUZZ_CHECK(c != ' ' && !(c >= 'A' && c <= 'Z'));
        FUZZ_CHECK(seen.insert(name).second);
        vary = comma == std::string_view::npos ? std::string_view{} : vary.substr(comma + 1);
    }
}

void check_stored_head(const http::Response& response) {
    std::string head;
    worker::build_stored_head(response, head);
    http::Response again;
    FUZZ_CHECK(http::parse_response(head.data(), head.size(), head.size() + 1, false, again) ==
               http::ParseStatus::Done);
    FUZZ_CHECK(again.status == response.status);
    for (std::size_t i = 0; i < again.header_count; ++i) {
        const std::string_view name = again.headers[i].name;
        FUZZ_CHECK(!http::iequals(name, "content-length"));
        FUZZ_CHECK(!http::iequals(name, "transfer-encoding"));
        FUZZ_CHECK(!http::iequals(name, "set-cookie"));
        FUZZ_CHECK(!http::iequals(name, "x-request-id"));
    }
}

void check_date(std::string_view text) {
    std::int64_t seconds = 0;
    if (!worker::parse_http_date(text, seconds)) return;
    std::string formatted;
    worker::append_http_date(formatted, seconds);
    std::int64_t again = 0;
    // Years outside IMF-fixdate's four digits cannot round-trip.
    if (seconds < -2'208'988'800 || seconds > 253'402'300'799) return;  // 1900..9999
    FUZZ_CHECK(worker::parse_http_date(formatted, again));
    FUZZ_CHECK(again == seconds);
}

void check_coding(std::string_view accept) {
    static constexpr config::CompressionAlgorithm kBoth[] = {config::CompressionAlgorithm::Brotli,
                                                             config::CompressionAlgorithm::Gzip};
    static constexpr config::CompressionAlgorithm kGzipOnly[] = {
        config::CompressionAlgorithm::Gzip};
    const worker::ContentCoding both = worker::choose_coding(accept, kBoth);
    (void)both;
    const worker::ContentCoding gzip_only = worker::choose_coding(accept, kGzipOnly);
    FUZZ_CHECK(gzip_only != worker::ContentCoding::Brotli);
}

void check_request(const http::Request& request, std::string_view etag,
                   std::string_view last_modified) {
    (void)worker::is_not_modified(request, etag, last_modified);
    (void)worker::cache_bypass(request, false);
    check_coding(http::find_header(request, "accept-encoding"));
    std::string key;
    http::append_cache_key(key, request.method, request.host, request.path, request.query);
    if (!request.path.empty() && request.path.front() == '/') {
        FUZZ_CHECK(http::cache_key_matches(key, request.path, {}));
    }
    http::append_vary_suffix(key, "accept-encoding,accept-language,cookie", request);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    const std::size_t nul = input.find('\0');
    const std::string_view response_text = input.substr(0, nul);
    const std::string_view request_text =
        nul == std::string_view::npos ? std::string_view{} : input.substr(nul + 1);

    check_date(response_text);
    check_coding(request_text);
    static const std::vector<std::string> kTypes{"text/html", "text/*", "application/json"};
    (void)worker::is_compressible_type(response_text, kTypes);

    std::string_view etag;
    std::string_view last_modified;
    http::Response response;
    if (http::parse_response(response_text.data(), response_text.size(), 64 * 1024, false,
                             response) == http::ParseStatus::Done) {
        const worker::Storability storability = worker::evaluate_response(response, 300'000, kNow);
        FUZZ_CHECK(!storability.store || storability.fresh_ms > 0);
        if (storability.store) check_vary(storability.vary);
        check_stored_head(response);
        etag = http::find_header(response, "etag");
        last_modified = http::find_header(response, "last-modified");
        check_date(last_modified);
        check_date(http::find_header(response, "expires"));
        std::string lines;
        worker::append_not_modified_lines(response, lines);
    }
    http::Request request;
    if (http::parse_request(request_text.data(), request_text.size(), {}, request) ==
        http::ParseStatus::Done) {
        check_request(request, etag, last_modified);
        check_date(http::find_header(request, "if-modified-since"));
    }
    return 0;
}
