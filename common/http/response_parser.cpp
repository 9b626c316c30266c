// Response heads from upstreams (RFC 9112 §4, §6.3). The same strict field rules as requests:
// a response we could frame differently from the client is as dangerous as a smuggled request.
// Response has no error_status: every error is a broken upstream, which the proxy answers 502.
#include <string_view>

#include "common/http/parser.hpp"
#include "common/http/tokens_internal.hpp"

namespace proxyd::http {

namespace {

using detail::advance;
using detail::need_more;
using detail::Step;

Step bad(const char* reason) {
    return detail::fail(502, reason);
}

void reset(Response& r) {
    r.status = 0;
    r.reason = {};
    r.version_minor = 1;
    r.header_count = 0;
    r.body = BodyKind::UntilClose;
    r.content_length = 0;
    r.keep_alive = true;
    r.head_length = 0;
    r.error_reason = "";
}

Step parse_status_version(const char* data, std::size_t end, int& minor) {
    int major = 0;
    const Step s = detail::match_http_version(data, 0, end, major, minor);
    if (s.ok() && (major != 1 || minor > 1)) return bad("unsupported HTTP version");
    return s;
}

Step parse_status_code(const char* data, std::size_t pos, std::size_t end, int& status) {
    if (pos == end) return need_more();
    if (data[pos] != ' ') return bad("invalid status line");
    ++pos;
    status = 0;
    for (int i = 0; i < 3; ++i, ++pos) {
        if (pos == end) return need_more();
        if (!detail::is_digit(data[pos])) return bad("invalid status code");
        status = status * 10 + (data[pos] - '0');
    }
    if (status < 100) return bad("invalid status code");
    return advance(pos);
}

// "SP reason CRLF", or a bare CRLF: some servers drop the space when the reason is empty.
Step parse_reason(const char* data, std::size_t pos, std::size_t end, std::string_view& reason) {
    if (pos == end) return need_more();
    if (data[pos] == ' ') {
        const std::size_t start = ++pos;
        while (pos < end && detail::is_field_char(data[pos])) ++pos;
        reason = {data + start, pos - start};
    }
    if (pos < end && data[pos] != '\r' && data[pos] != '\n') return bad("invalid reason phrase");
    return detail::expect_crlf(data, pos, end);
}

Step parse_status_line(const char* data, std::size_t end, Response& r) {
    Step s = parse_status_version(data, end, r.version_minor);
    if (!s.ok()) return s;
    s = parse_status_code(data, s.pos, end, r.status);
    if (!s.ok()) return s;
    return parse_reason(data, s.pos, end, r.reason);
}

struct ResponseFields {
    bool cl_seen = false;
    std::uint64_t content_length = 0;
    bool te_seen = false;
    int te_codings = 0;
    int chunked_count = 0;
    bool final_chunked = false;
    bool connection_close = false;
    bool connection_keep_alive = false;
};

// Several Transfer-Encoding fields form one list in order (RFC 9110 §5.3); only the final
// coding decides the framing.
void add_transfer_codings(std::string_view value, ResponseFields& f) {
    f.te_seen = true;
    detail::for_each_list_element(value, [&](std::string_view coding) {
        ++f.te_codings;
        f.final_chunked = iequals(coding, "chunked");
        if (f.final_chunked) ++f.chunked_count;
    });
}

Step collect_fields(const Response& r, ResponseFields& f) {
    for (std::size_t i = 0; i < r.header_count; ++i) {
        const Header& h = r.headers[i];
        if (iequals(h.name, "content-length")) {
            if (const char* why =
                    detail::merge_content_length(h.value, f.cl_seen, f.content_length))
                return bad(why);
        } else if (iequals(h.name, "transfer-encoding")) {
            add_transfer_codings(h.value, f);
        } else if (iequals(h.name, "connection")) {
            f.connection_close |= list_contains_token(h.value, "close");
            f.connection_keep_alive |= list_contains_token(h.value, "keep-alive");
        }
    }
    return advance(0);
}

// RFC 9112 §6.1 and §6.3 call all of these faulty framing; a proxy cannot pick a reading safely.
Step check_transfer_encoding(const ResponseFields& f, const Response& r) {
    if (!f.te_seen) return advance(0);
    if (f.cl_seen) return bad("content-length with transfer-encoding");
    if (r.version_minor == 0) return bad("transfer-encoding in HTTP/1.0");
    if (f.te_codings == 0) return bad("empty transfer-encoding");
    if (f.chunked_count > 1) return bad("chunked applied more than once");
    return advance(0);
}

BodyKind body_kind(const ResponseFields& f, const Response& r, bool request_was_head) {
    if (request_was_head || r.status < 200 || r.status == 204 || r.status == 304)
        return BodyKind::None;
    if (f.te_seen) return f.final_chunked ? BodyKind::Chunked : BodyKind::UntilClose;
    if (f.cl_seen) return f.content_length > 0 ? BodyKind::ContentLength : BodyKind::None;
    return BodyKind::UntilClose;
}

Step apply_semantics(Response& r, bool request_was_head) {
    ResponseFields f;
    Step s = collect_fields(r, f);
    if (!s.ok()) return s;
    s = check_transfer_encoding(f, r);
    if (!s.ok()) return s;
    r.body = body_kind(f, r, request_was_head);
    if (r.body == BodyKind::ContentLength) r.content_length = f.content_length;
    const bool persistent =
        r.version_minor == 1 ? !f.connection_close : f.connection_keep_alive && !f.connection_close;
    r.keep_alive = persistent && r.body != BodyKind::UntilClose;
    return s;
}

Step parse_head(const char* data, std::size_t len, std::size_t max_head_size, bool request_was_head,
                Response& r) {
    // Nothing past max_head_size + 1 bytes can belong to an acceptable head.
    const std::size_t limit = len > max_head_size ? max_head_size + 1 : len;
    Step s = parse_status_line(data, limit, r);
    if (!s.ok()) return s;
    s = detail::parse_fields(data, s.pos, limit, r.headers, r.header_count);
    if (!s.ok()) return s;
    if (s.pos > max_head_size) return bad("response header too large");
    r.head_length = s.pos;
    const Step semantics = apply_semantics(r, request_was_head);
    return semantics.ok() ? s : semantics;
}

}  // namespace

ParseStatus parse_response(const char* data, std::size_t len, std::size_t max_head_size,
                           bool request_was_head, Response& out) {
    reset(out);
    Step s = parse_head(data, len, max_head_size, request_was_head, out);
    if (s.status == ParseStatus::Incomplete && len > max_head_size)
        s = bad("response header too large");
    if (s.status == ParseStatus::Error) {
        out.head_length = 0;
        out.error_reason = s.reason;
    }
    return s.status;
}

}  // namespace proxyd::http
