#include "worker/forward_headers.hpp"

#include <charconv>
#include <cstring>

#include "common/http/status.hpp"
#include "common/log.hpp"

namespace proxyd::worker {
namespace {

using http::iequals;

void append_number(std::string& out, std::uint64_t n) {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, n);
    out.append(buf, end);
}

// Case-insensitive, and "_" equal to "-": frameworks that map headers to CGI-style variables
// (X_Forwarded_For -> HTTP_X_FORWARDED_FOR) cannot tell the two apart.
bool same_header_name(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        char x = a[i] == '_' ? '-' : a[i];
        char y = b[i] == '_' ? '-' : b[i];
        if (!iequals(std::string_view(&x, 1), std::string_view(&y, 1))) return false;
    }
    return true;
}

// Headers the proxy sets itself on the way up; a client's copy (in any spelling) is dropped.
bool is_replaced_upstream(std::string_view name) {
    static constexpr std::string_view kNames[] = {
        "x-forwarded-for", "x-forwarded-proto",   "x-forwarded-host", "x-real-ip",
        "x-request-id",    "proxy-authorization", "expect",           "traceparent"};
    for (auto n : kNames) {
        if (same_header_name(name, n)) return true;
    }
    return false;
}

void append_framing(std::string& out, Framing framing, std::uint64_t content_length) {
    if (framing == Framing::ContentLength) {
        out += "Content-Length: ";
        append_number(out, content_length);
        out += "\r\n";
    } else if (framing == Framing::Chunked) {
        out += "Transfer-Encoding: chunked\r\n";
    }
}

void append_forwarded_for(const http::Request& request, std::string_view client_ip,
                          std::string& out) {
    out += "X-Forwarded-For: ";
    for (std::size_t i = 0; i < request.header_count; ++i) {
        if (iequals(request.headers[i].name, "x-forwarded-for") &&
            !request.headers[i].value.empty()) {
            out += request.headers[i].value;
            out += ", ";
        }
    }
    out += client_ip;
    out += "\r\n";
}

bool is_removed(const std::vector<std::string>* removed, std::string_view name) {
    if (!removed) return false;
    for (const auto& n : *removed) {
        if (same_header_name(n, name)) return true;
    }
    return false;
}

bool is_cors_header(std::string_view name) {
    constexpr std::string_view kPrefix = "access-control-";
    return name.size() > kPrefix.size() && iequals(name.substr(0, kPrefix.size()), kPrefix);
}

void append_extra_headers(const ClientResponseInfo& info, std::string& out) {
    if (info.extra_headers) {
        for (const auto& [name, value] : *info.extra_headers) append_header(out, name, value);
    }
    append_header(out, "X-Request-Id", info.request_id);
}

void append_connection(const ClientResponseInfo& info, std::string& out) {
    if (!info.keep_alive) {
        out += "Connection: close\r\n";
    } else if (info.client_version_minor == 0) {
        out += "Connection: keep-alive\r\n";
    }
}

}  // namespace

ConnectionOptions::ConnectionOptions(const http::Header* headers, std::size_t count)
    : headers_(headers), count_(count), first_(0) {
    while (first_ < count && !iequals(headers[first_].name, "connection")) ++first_;
}

bool ConnectionOptions::names(std::string_view name) const {
    for (std::size_t i = first_; i < count_; ++i) {
        if (iequals(headers_[i].name, "connection") &&
            http::list_contains_token(headers_[i].value, name)) {
            return true;
        }
    }
    return false;
}

bool is_hop_by_hop(std::string_view name) {
    static constexpr std::string_view kNames[] = {
        "connection", "keep-alive", "proxy-connection",  "te",
        "trailer",    "upgrade",    "transfer-encoding", "content-length"};
    for (auto n : kNames) {
        if (iequals(name, n)) return true;
    }
    return false;
}

bool has_extra_header(const HeaderList* extra, std::string_view name) {
    if (!extra) return false;
    for (const auto& [n, v] : *extra) {
        if (iequals(n, name)) return true;
    }
    return false;
}

void append_header(std::string& out, std::string_view name, std::string_view value) {
    // One size change instead of four appends, each with its own capacity check.
    const std::size_t at = out.size();
    out.resize(at + name.size() + value.size() + 4);
    char* p = out.data() + at;
    if (!name.empty()) std::memcpy(p, name.data(), name.size());
    p += name.size();
    *p++ = ':';
    *p++ = ' ';
    if (!value.empty()) std::memcpy(p, value.data(), value.size());
    p += value.size();
    *p++ = '\r';
    *p = '\n';
}

void build_upstream_request_head(const http::Request& request, const UpstreamRequestInfo& info,
                                 std::string& out) {
    out += request.method;
    out += ' ';
    out += info.path;
    if (!info.query.empty()) {
        out += '?';
        out += info.query;
    }
    out += " HTTP/1.1\r\n";
    bool host_seen = false;
    const ConnectionOptions connection_options(request.headers, request.header_count);
    for (std::size_t i = 0; i < request.header_count; ++i) {
        const auto& h = request.headers[i];
        if (is_hop_by_hop(h.name) || is_replaced_upstream(h.name)) continue;
        if (is_removed(info.removed_headers, h.name)) continue;
        if (connection_options.names(h.name)) continue;
        if (iequals(h.name, "host")) {
            host_seen = true;
            append_header(out, "Host", request.host);  // absolute-form authority wins
            continue;
        }
        append_header(out, h.name, h.value);
    }
    if (!host_seen) {
        append_header(out, "Host", request.host.empty() ? info.default_host : request.host);
    }
    append_forwarded_for(request, info.client_ip, out);
    append_header(out, "X-Forwarded-Proto", info.proto);
    if (host_seen) append_header(out, "X-Forwarded-Host", request.host);
    append_header(out, "X-Real-IP", info.real_ip);
    append_header(out, "X-Request-Id", info.request_id);
    if (!info.traceparent.empty()) append_header(out, "traceparent", info.traceparent);
    out += info.extra_lines;
    append_framing(out, info.framing, info.content_length);
    if (!info.upgrade.empty()) {
        out += "Connection: Upgrade\r\n";
        append_header(out, "Upgrade", info.upgrade);
    }
    out += "\r\n";
}

bool wants_websocket(const http::Request& request) {
    if (request.method != "GET" || request.version_minor != 1 || !request.has_upgrade) {
        return false;
    }
    bool websocket = false;
    bool connection_upgrade = false;
    for (std::size_t i = 0; i < request.header_count; ++i) {
        const auto& h = request.headers[i];
        if (iequals(h.name, "upgrade") && http::list_contains_token(h.value, "websocket")) {
            websocket = true;
        } else if (iequals(h.name, "connection") && http::list_contains_token(h.value, "upgrade")) {
            connection_upgrade = true;
        }
    }
    return websocket && connection_upgrade;
}

Framing choose_client_framing(const http::Response& response, int client_version_minor,
                              bool& keep_alive) {
    switch (response.body) {
        case http::BodyKind::None:
            return Framing::None;
        case http::BodyKind::ContentLength:
            return Framing::ContentLength;
        case http::BodyKind::Chunked:
        case http::BodyKind::UntilClose:
            if (client_version_minor >= 1) return Framing::Chunked;
            keep_alive = false;
            return Framing::UntilClose;
    }
    return Framing::None;
}

void build_client_response_head(const http::Response& response, const ClientResponseInfo& info,
                                std::string& out) {
    out += "HTTP/1.1 ";
    append_number(out, static_cast<std::uint64_t>(response.status));
    out += ' ';
    out += response.reason.empty() ? http::reason_phrase(response.status) : response.reason;
    out += "\r\n";
    const ConnectionOptions connection_options(response.headers, response.header_count);
    for (std::size_t i = 0; i < response.header_count; ++i) {
        const auto& h = response.headers[i];
        // A HEAD or 304 answer keeps the representation's Content-Length.
        bool keep_length = info.framing == Framing::None && iequals(h.name, "content-length");
        if (!keep_length && is_hop_by_hop(h.name)) continue;
        if (iequals(h.name, "x-request-id") || has_extra_header(info.extra_headers, h.name)) {
            continue;
        }
        if (info.replace_cors && is_cors_header(h.name)) continue;
        if (connection_options.names(h.name)) continue;
        append_header(out, h.name, h.value);
    }
    append_extra_headers(info, out);
    out += info.extra_lines;
    if (!info.set_cookie.empty()) append_header(out, "Set-Cookie", info.set_cookie);
    append_framing(out, info.framing, info.content_length);
    if (!info.upgrade.empty()) {
        out += "Connection: Upgrade\r\n";
        append_header(out, "Upgrade", info.upgrade);
    } else {
        append_connection(info, out);
    }
    out += "\r\n";
}

void build_error_body(int status, std::string_view detail, std::string_view request_id,
                      std::string& out) {
    out += "{\"error\": \"";
    log::append_json_escaped(out, http::error_text(status));
    if (!detail.empty()) {
        out += ": ";
        log::append_json_escaped(out, detail);
    }
    out += "\", \"request_id\": \"";
    log::append_json_escaped(out, request_id);
    out += "\"}\n";
}

void build_error_response(int status, std::string_view detail, const ClientResponseInfo& info,
                          std::string& out) {
    std::string body;
    build_error_body(status, detail, info.request_id, body);

    out += "HTTP/1.1 ";
    append_number(out, static_cast<std::uint64_t>(status));
    out += ' ';
    out += http::reason_phrase(status);
    out += "\r\nContent-Type: application/json\r\n";
    append_extra_headers(info, out);
    out += info.extra_lines;
    append_framing(out, Framing::ContentLength, body.size());
    append_connection(info, out);
    out += "\r\n";
    out += body;
}

void build_bodiless_response(int status, const ClientResponseInfo& info, std::string& out) {
    out += "HTTP/1.1 ";
    append_number(out, static_cast<std::uint64_t>(status));
    out += ' ';
    out += http::reason_phrase(status);
    out += "\r\n";
    append_extra_headers(info, out);
    out += info.extra_lines;
    if (status != 204 && status != 304) out += "Content-Length: 0\r\n";
    append_connection(info, out);
    out += "\r\n";
}

// ---- HTTP/2 field lists ------------------------------------------------------------------------

namespace {

void add_field(FieldList& out, std::string_view name, std::string_view value) {
    out.push_back({std::string(name), std::string(value)});
}

// The access phase's lines ("Name: value\r\n" each) as fields.
void add_lines_as_fields(std::string_view lines, FieldList& out) {
    while (!lines.empty()) {
        const std::size_t end = lines.find("\r\n");
        const std::string_view line = lines.substr(0, end);
        lines = end == std::string_view::npos ? std::string_view{} : lines.substr(end + 2);
        const std::size_t colon = line.find(':');
        if (colon == std::string_view::npos) continue;
        std::string_view value = line.substr(colon + 1);
        while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) {
            value.remove_prefix(1);
        }
        add_field(out, line.substr(0, colon), value);
    }
}

void add_extra_fields(const ClientResponseInfo& info, FieldList& out) {
    if (info.extra_headers) {
        for (const auto& [name, value] : *info.extra_headers) add_field(out, name, value);
    }
    add_field(out, "x-request-id", info.request_id);
    add_lines_as_fields(info.extra_lines, out);
}

void add_content_length(FieldList& out, std::uint64_t length) {
    std::string value;
    append_number(value, length);
    out.push_back({"content-length", std::move(value)});
}

}  // namespace

void build_client_response_fields(const http::Response& response, const ClientResponseInfo& info,
                                  FieldList& out) {
    out.clear();
    const ConnectionOptions connection_options(response.headers, response.header_count);
    for (std::size_t i = 0; i < response.header_count; ++i) {
        const auto& h = response.headers[i];
        const bool known_length =
            iequals(h.name, "content-length") && response.body != http::BodyKind::Chunked;
        if (!known_length && is_hop_by_hop(h.name)) continue;
        if (iequals(h.name, "x-request-id") || has_extra_header(info.extra_headers, h.name)) {
            continue;
        }
        if (info.replace_cors && is_cors_header(h.name)) continue;
        if (connection_options.names(h.name)) continue;
        add_field(out, h.name, h.value);
    }
    add_extra_fields(info, out);
    if (!info.set_cookie.empty()) add_field(out, "set-cookie", info.set_cookie);
}

void build_error_fields(const ClientResponseInfo& info, std::size_t body_size, FieldList& out) {
    out.clear();
    add_field(out, "content-type", "application/json");
    add_extra_fields(info, out);
    add_content_length(out, body_size);
}

void build_bodiless_fields(int status, const ClientResponseInfo& info, FieldList& out) {
    out.clear();
    add_extra_fields(info, out);
    if (status != 204 && status != 304) add_content_length(out, 0);
}

void build_upstream_h2_fields(const http::Request& request, const UpstreamRequestInfo& info,
                              std::vector<h2::Header>& out, std::string& authority) {
    out.clear();
    bool host_seen = false;
    bool trailers = false;
    const ConnectionOptions connection_options(request.headers, request.header_count);
    for (std::size_t i = 0; i < request.header_count; ++i) {
        const auto& h = request.headers[i];
        if (iequals(h.name, "te")) {
            trailers = trailers || http::list_contains_token(h.value, "trailers");
            continue;
        }
        if (is_hop_by_hop(h.name) || is_replaced_upstream(h.name)) continue;
        if (is_removed(info.removed_headers, h.name)) continue;
        if (connection_options.names(h.name)) continue;
        if (iequals(h.name, "host")) {
            host_seen = true;
            continue;
        }
        add_field(out, h.name, h.value);
    }
    authority.assign(request.host.empty() ? info.default_host : request.host);
    if (trailers) add_field(out, "te", "trailers");
    std::string forwarded_for;
    for (std::size_t i = 0; i < request.header_count; ++i) {
        if (iequals(request.headers[i].name, "x-forwarded-for") &&
            !request.headers[i].value.empty()) {
            forwarded_for += request.headers[i].value;
            forwarded_for += ", ";
        }
    }
    forwarded_for += info.client_ip;
    add_field(out, "x-forwarded-for", forwarded_for);
    add_field(out, "x-forwarded-proto", info.proto);
    if (host_seen) add_field(out, "x-forwarded-host", request.host);
    add_field(out, "x-real-ip", info.real_ip);
    add_field(out, "x-request-id", info.request_id);
    if (!info.traceparent.empty()) add_field(out, "traceparent", info.traceparent);
    add_lines_as_fields(info.extra_lines, out);
    if (info.framing == Framing::ContentLength) {
        char digits[24];
        auto [end, ec] = std::to_chars(digits, digits + sizeof digits, info.content_length);
        add_field(out, "content-length",
                  std::string_view(digits, static_cast<std::size_t>(end - digits)));
    }
}

}  // namespace proxyd::worker
