// libFuzzer target: parse_request over the input with several limits, then the invariants a
// caller relies on (common/http/parser.hpp):
//   - Done: head_length <= len and <= max_header_size, the head ends with CRLFCRLF, every view
//     (method, target, path, query, host, header names and values) lies inside the head, header
//     names are tokens and values are trimmed field values, content_length agrees with the body
//     kind; parsing the head alone gives the same result, and any shorter prefix is Incomplete.
//   - Error: one of the documented statuses, with a reason, and head_length 0.
//   - Incomplete: only while the buffer is within max_header_size.
//   - Always: the same input parses the same way twice (no state leaks between calls).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string_view>
#include <vector>

#include "common/http/parser.hpp"
#include "tests/fuzz/fuzz_check.hpp"

using namespace proxyd::http;

namespace {

bool inside(std::string_view view, const char* begin, std::size_t len) {
    if (view.empty()) return true;
    return view.data() >= begin && view.data() + view.size() <= begin + len;
}

bool is_tchar(char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0';
}

bool is_field_value_byte(char c) {
    const auto u = static_cast<unsigned char>(c);
    return u == '\t' || (u >= 0x20 && u != 0x7f);
}

void check_done(const char* data, std::size_t len, const RequestLimits& limits, const Request& r) {
    FUZZ_CHECK(r.error_status == 0);
    FUZZ_CHECK(r.head_length >= 4 && r.head_length <= len);
    FUZZ_CHECK(r.head_length <= limits.max_header_size);
    FUZZ_CHECK(std::memcmp(data + r.head_length - 4, "\r\n\r\n", 4) == 0);
    const std::size_t head = r.head_length;

    FUZZ_CHECK(!r.method.empty() && inside(r.method, data, head));
    for (char c : r.method) FUZZ_CHECK(is_tchar(c));
    FUZZ_CHECK(!r.target.empty() && inside(r.target, data, head));
    FUZZ_CHECK(r.target.size() <= limits.max_uri_size);
    // path is a view into the target, or the static "/" of an absolute-form without a path.
    FUZZ_CHECK(!r.path.empty());
    FUZZ_CHECK(inside(r.path, r.target.data(), r.target.size()) || r.path == "/");
    FUZZ_CHECK(inside(r.query, r.target.data(), r.target.size()));
    FUZZ_CHECK(inside(r.host, data, head));
    FUZZ_CHECK(r.version_minor == 0 || r.version_minor == 1);

    FUZZ_CHECK(r.header_count <= kMaxHeaders);
    int hosts = 0, cls = 0, tes = 0;
    for (std::size_t i = 0; i < r.header_count; ++i) {
        const Header& h = r.headers[i];
        FUZZ_CHECK(!h.name.empty() && inside(h.name, data, head));
        FUZZ_CHECK(inside(h.value, data, head));
        for (char c : h.name) FUZZ_CHECK(is_tchar(c));
        for (char c : h.value) FUZZ_CHECK(is_field_value_byte(c));
        if (!h.value.empty()) {
            FUZZ_CHECK(h.value.front() != ' ' && h.value.front() != '\t');
            FUZZ_CHECK(h.value.back() != ' ' && h.value.back() != '\t');
        }
        if (i > 0) FUZZ_CHECK(h.name.data() > r.headers[i - 1].value.data());
        hosts += iequals(h.name, "host");
        cls += iequals(h.name, "content-length");
        tes += iequals(h.name, "transfer-encoding");
    }
    FUZZ_CHECK(hosts <= 1);
    if (r.version_minor == 1) FUZZ_CHECK(hosts == 1);
    FUZZ_CHECK(tes <= 1);

    constexpr auto kMaxLength =
        static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    switch (r.body) {
        case BodyKind::None:
            FUZZ_CHECK(r.content_length == 0);
            FUZZ_CHECK(tes == 0);
            break;
        case BodyKind::ContentLength:
            FUZZ_CHECK(r.content_length > 0 && r.content_length <= kMaxLength);
            FUZZ_CHECK(cls >= 1 && tes == 0);
            break;
        case BodyKind::Chunked:
            FUZZ_CHECK(r.content_length == 0);
            FUZZ_CHECK(tes == 1 && cls == 0);
            FUZZ_CHECK(r.version_minor == 1);
            break;
        case BodyKind::UntilClose:
            FUZZ_CHECK(false);  // responses only
    }
    if (r.expect_continue) FUZZ_CHECK(r.version_minor == 1);
}

ParseStatus parse_copy(const char* data, std::size_t len, const RequestLimits& limits, Request& r) {
    // An exact-size heap copy: ASan reports any read past the end of the given length.
    std::vector<char> copy(data, data + len);
    return parse_request(copy.empty() ? nullptr : copy.data(), len, limits, r);
}

void check_one(const char* data, std::size_t len, const RequestLimits& limits) {
    static Request r;  // big (100 headers): keep it off the stack, and reuse it like the proxy
    const ParseStatus status = parse_request(data, len, limits, r);
    switch (status) {
        case ParseStatus::Done:
            check_done(data, len, limits, r);
            break;
        case ParseStatus::Error:
            FUZZ_CHECK(r.error_status == 400 || r.error_status == 414 || r.error_status == 431 ||
                       r.error_status == 505);
            FUZZ_CHECK(r.error_reason != nullptr && r.error_reason[0] != '\0');
            FUZZ_CHECK(r.head_length == 0);
            break;
        case ParseStatus::Incomplete:
            FUZZ_CHECK(len <= limits.max_header_size);
            FUZZ_CHECK(r.error_status == 0);
            break;
    }

    // Same input, same answer (the parser keeps no state between calls).
    const std::size_t head_length = r.head_length;
    const std::size_t header_count = r.header_count;
    const int error_status = r.error_status;
    const BodyKind body = r.body;
    const std::uint64_t content_length = r.content_length;
    static Request again;
    FUZZ_CHECK(parse_request(data, len, limits, again) == status);
    FUZZ_CHECK(again.head_length == head_length && again.error_status == error_status);
    FUZZ_CHECK(again.header_count == header_count && again.body == body &&
               again.content_length == content_length);

    if (status != ParseStatus::Done) return;
    // The bytes after the head (a body, the next request) do not change how the head parses.
    FUZZ_CHECK(parse_copy(data, head_length, limits, again) == ParseStatus::Done);
    FUZZ_CHECK(again.head_length == head_length && again.header_count == header_count &&
               again.body == body && again.content_length == content_length);
    // Nothing in a complete head can be an error in a shorter prefix of it.
    for (std::size_t cut : {head_length - 1, head_length / 2, std::size_t{1}}) {
        FUZZ_CHECK(parse_copy(data, cut, limits, again) == ParseStatus::Incomplete);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
    const char* data = reinterpret_cast<const char*>(bytes);
    check_one(data, size, RequestLimits{});                                 // the defaults
    check_one(data, size, RequestLimits{256, 64});                          // small: 414/431 paths
    check_one(data, size, RequestLimits{40, 8});                            // tiny
    check_one(data, size, RequestLimits{size, size > 20 ? size - 20 : 1});  // around the input
    return 0;
}
