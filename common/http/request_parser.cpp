// Request heads from clients (RFC 9112 §2-3, §6), rejected at the first sign of ambiguity.
//
// The parser keeps no state between calls: it re-reads the buffer from the start, which is cheap
// for a head of a few KiB and means a half-received head can never leave a stale state behind.
#include <string_view>

#include "common/http/parser.hpp"
#include "common/http/tokens_internal.hpp"

namespace proxyd::http {

namespace {

using detail::advance;
using detail::fail;
using detail::need_more;
using detail::Step;

// RFC 9112 §2.2 asks servers to tolerate at least one CRLF before the request line (old clients
// add one after a POST body); a handful is generous, an endless stream is not a request.
constexpr int kMaxLeadingEmptyLines = 4;

void reset(Request& r) {
    r.method = r.target = r.path = r.query = r.host = {};
    r.version_minor = 1;
    r.header_count = 0;  // the array itself is left alone: rewriting 100 entries per call is waste
    r.body = BodyKind::None;
    r.content_length = 0;
    r.keep_alive = true;
    r.expect_continue = false;
    r.has_upgrade = false;
    r.head_length = 0;
    r.error_status = 0;
    r.error_reason = "";
}

// `end` bounds the scan; the caller picks it so work stays bounded by the configured limits.
std::size_t bounded_end(std::size_t start, std::size_t len, std::size_t max) {
    return len - start > max ? start + max + 1 : len;
}

Step skip_leading_empty_lines(const char* data, std::size_t end) {
    std::size_t pos = 0;
    for (int lines = 0;; ++lines) {
        if (pos == end) return need_more();
        if (data[pos] != '\r' && data[pos] != '\n') return advance(pos);
        if (lines == kMaxLeadingEmptyLines) return fail(400, "too many empty lines");
        const Step eol = detail::expect_crlf(data, pos, end);
        if (!eol.ok()) return eol;
        pos = eol.pos;
    }
}

Step parse_method(const char* data, std::size_t pos, std::size_t end, std::string_view& method) {
    const std::size_t start = pos;
    while (pos < end && detail::is_tchar(data[pos])) ++pos;
    if (pos == end) return need_more();
    if (data[pos] != ' ' || pos == start) return fail(400, "invalid method");
    method = {data + start, pos - start};
    return advance(pos + 1);
}

// The 414 is decided here, before the target is complete, so a client cannot make us buffer an
// endless target: more than max_uri bytes without the closing SP is already too long.
Step parse_target(const char* data, std::size_t pos, std::size_t len, std::size_t max_uri,
                  std::string_view& target) {
    const std::size_t start = pos;
    const std::size_t end = bounded_end(start, len, max_uri);
    pos = detail::skip_target_chars(data, pos, end);
    while (pos < end && detail::is_target_char(data[pos])) ++pos;
    if (pos == end)
        return len - start > max_uri ? fail(414, "request target too long") : need_more();
    if (data[pos] != ' ') return fail(400, "invalid request target");
    if (pos == start) return fail(400, "empty request target");
    target = {data + start, pos - start};
    return advance(pos + 1);
}

Step parse_request_version(const char* data, std::size_t pos, std::size_t end, int& minor) {
    int major = 0;
    const Step version = detail::match_http_version(data, pos, end, major, minor);
    if (!version.ok()) return version;
    const Step eol = detail::expect_crlf(data, version.pos, end);
    if (!eol.ok()) return eol;
    if (major != 1 || minor > 1) return fail(505, "HTTP version not supported");
    return eol;
}

void split_path_query(std::string_view path_and_query, Request& r) {
    const std::size_t q = path_and_query.find('?');
    r.path = path_and_query.substr(0, q);
    r.query = q == std::string_view::npos ? std::string_view{} : path_and_query.substr(q + 1);
}

// Returns the rest of `target` after a case-insensitive "http://" or "https://", or false.
bool strip_http_scheme(std::string_view target, std::string_view& rest) {
    for (std::string_view scheme : {std::string_view("http://"), std::string_view("https://")}) {
        if (target.size() >= scheme.size() && iequals(target.substr(0, scheme.size()), scheme)) {
            rest = target.substr(scheme.size());
            return true;
        }
    }
    return false;
}

Step classify_absolute_form(std::string_view rest, Request& r) {
    const std::size_t path_start = rest.find_first_of("/?");
    const std::string_view authority = rest.substr(0, path_start);
    if (authority.empty() || !detail::is_valid_host(authority))
        return fail(400, "invalid host in request target");
    r.host = authority;
    split_path_query(path_start == std::string_view::npos ? "" : rest.substr(path_start), r);
    if (r.path.empty()) r.path = "/";  // static storage: an empty absolute path means "/"
    return advance(0);
}

// Only the forms a reverse proxy serves; authority-form (CONNECT) would turn us into a tunnel.
Step classify_target(Request& r) {
    if (r.method == "CONNECT") return fail(400, "CONNECT not supported");
    if (r.target.front() == '/') {
        split_path_query(r.target, r);
        return advance(0);
    }
    if (r.target == "*") {
        if (r.method != "OPTIONS") return fail(400, "asterisk-form target without OPTIONS");
        r.path = r.target;
        return advance(0);
    }
    std::string_view rest;
    if (strip_http_scheme(r.target, rest)) return classify_absolute_form(rest, r);
    return fail(400, "invalid request target");
}

Step parse_request_line(const char* data, std::size_t pos, std::size_t limit, std::size_t len,
                        const RequestLimits& limits, Request& r) {
    Step s = parse_method(data, pos, limit, r.method);
    if (!s.ok()) return s;
    s = parse_target(data, s.pos, len, limits.max_uri_size, r.target);
    if (!s.ok()) return s;
    s = parse_request_version(data, s.pos, len, r.version_minor);
    if (!s.ok()) return s;
    if (s.pos > limits.max_header_size) return fail(431, "request header too large");
    const Step form = classify_target(r);
    return form.ok() ? s : form;
}

// "Content_Length" / "Transfer_Encoding": servers and gateways that map '-' and '_' to the same
// name (CGI-style HTTP_CONTENT_LENGTH, some frameworks' header normalisation) would take these as
// framing fields, while we would forward them as unknown fields next to our own framing.
bool is_underscored_framing_name(std::string_view name) {
    for (std::string_view framing :
         {std::string_view("content-length"), std::string_view("transfer-encoding")}) {
        if (name.size() != framing.size() || name.find('_') == std::string_view::npos) continue;
        bool same = true;
        for (std::size_t i = 0; i < name.size() && same; ++i) {
            const char c = name[i] == '_' ? '-' : static_cast<char>(name[i] | 0x20);
            same = c == framing[i];
        }
        if (same) return true;
    }
    return false;
}

// What the framing and connection-handling fields say, gathered in one pass over the headers.
struct RequestFields {
    bool cl_seen = false;
    std::uint64_t content_length = 0;
    int te_count = 0;
    std::string_view transfer_encoding;
    int host_count = 0;
    std::string_view host;
    bool connection_close = false;
    bool connection_keep_alive = false;
    bool expect_continue = false;
    bool upgrade = false;
};

Step collect_fields(const Request& r, RequestFields& f) {
    for (std::size_t i = 0; i < r.header_count; ++i) {
        const Header& h = r.headers[i];
        if (iequals(h.name, "content-length")) {
            if (const char* why =
                    detail::merge_content_length(h.value, f.cl_seen, f.content_length))
                return fail(400, why);
        } else if (iequals(h.name, "transfer-encoding")) {
            ++f.te_count;
            f.transfer_encoding = h.value;
        } else if (iequals(h.name, "host")) {
            ++f.host_count;
            f.host = h.value;
        } else if (iequals(h.name, "connection")) {
            f.connection_close |= list_contains_token(h.value, "close");
            f.connection_keep_alive |= list_contains_token(h.value, "keep-alive");
        } else if (iequals(h.name, "expect")) {
            f.expect_continue |= iequals(h.value, "100-continue");
        } else if (iequals(h.name, "upgrade")) {
            f.upgrade = true;
        } else if (is_underscored_framing_name(h.name)) {
            return fail(400, "underscore in framing header name");
        }
    }
    return advance(0);
}

// Only a lone "chunked" is accepted: any other coding list is one an upstream might end
// differently, and HTTP/1.0 has no chunked framing at all (RFC 9112 §6.1).
Step apply_body_framing(const RequestFields& f, Request& r) {
    if (f.te_count > 0) {
        if (f.cl_seen) return fail(400, "content-length with transfer-encoding");
        if (f.te_count > 1) return fail(400, "duplicate transfer-encoding");
        if (r.version_minor == 0) return fail(400, "transfer-encoding in HTTP/1.0");
        if (!iequals(f.transfer_encoding, "chunked"))
            return fail(400, "unsupported transfer-encoding");
        r.body = BodyKind::Chunked;
    } else if (f.cl_seen && f.content_length > 0) {
        r.body = BodyKind::ContentLength;
        r.content_length = f.content_length;
    }
    return advance(0);
}

Step apply_host(const RequestFields& f, Request& r) {
    if (f.host_count > 1) return fail(400, "duplicate host");
    if (f.host_count == 0 && r.version_minor == 1) return fail(400, "missing host");
    if (f.host_count == 1 && !detail::is_valid_host(f.host)) return fail(400, "invalid host");
    // RFC 9112 §3.2.2: an absolute-form target's authority overrides the Host field.
    if (r.host.empty()) r.host = f.host;
    return advance(0);
}

Step apply_semantics(Request& r) {
    RequestFields f;
    Step s = collect_fields(r, f);
    if (!s.ok()) return s;
    s = apply_body_framing(f, r);
    if (!s.ok()) return s;
    s = apply_host(f, r);
    if (!s.ok()) return s;
    r.keep_alive =
        r.version_minor == 1 ? !f.connection_close : f.connection_keep_alive && !f.connection_close;
    // A 1.0 client cannot know about 100 Continue; RFC 9110 §10.1.1 says to ignore it.
    r.expect_continue = f.expect_continue && r.version_minor == 1;
    r.has_upgrade = f.upgrade;
    return s;
}

Step parse_head(const char* data, std::size_t len, const RequestLimits& limits, Request& r) {
    // Nothing past max_header_size + 1 bytes can belong to an acceptable head.
    const std::size_t limit = bounded_end(0, len, limits.max_header_size);
    Step s = skip_leading_empty_lines(data, limit);
    if (!s.ok()) return s;
    s = parse_request_line(data, s.pos, limit, len, limits, r);
    if (!s.ok()) return s;
    s = detail::parse_fields(data, s.pos, limit, r.headers, r.header_count);
    if (!s.ok()) return s;
    if (s.pos > limits.max_header_size) return fail(431, "request header too large");
    r.head_length = s.pos;
    const Step semantics = apply_semantics(r);
    return semantics.ok() ? s : semantics;
}

}  // namespace

ParseStatus parse_request(const char* data, std::size_t len, const RequestLimits& limits,
                          Request& out) {
    reset(out);
    Step s = parse_head(data, len, limits, out);
    if (s.status == ParseStatus::Incomplete && len > limits.max_header_size)
        s = fail(431, "request header too large");
    if (s.status == ParseStatus::Error) {
        out.head_length = 0;
        out.error_status = s.error_status;
        out.error_reason = s.reason;
    }
    return s.status;
}

}  // namespace proxyd::http
