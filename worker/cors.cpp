#include "worker/cors.hpp"

#include <charconv>
#include <chrono>

#include "common/http/parser.hpp"

namespace proxyd::worker {
namespace {

// A serialised origin split into its parts; views into the input.
struct Origin {
    std::string_view scheme;
    std::string_view host;  // with the brackets of an IPv6 literal
    std::string_view port;  // digits, or empty for the scheme's default
};

bool is_alpha(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

// RFC 9110 tchar.
bool is_tchar(char c) {
    return is_alpha(c) || is_digit(c) ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) {
    if (s.empty()) return false;
    for (char c : s)
        if (!is_tchar(c)) return false;
    return true;
}

// One DNS-ish label of a host name: letters, digits, '-' and '_' (seen in the wild).
bool is_label(std::string_view s) {
    if (s.empty() || s.size() > 63) return false;
    for (char c : s)
        if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '_') return false;
    return true;
}

// Labels separated by single dots, no empty label.
bool is_host_name(std::string_view s) {
    if (s.empty() || s.size() > 253) return false;
    while (true) {
        auto dot = s.find('.');
        if (!is_label(s.substr(0, dot))) return false;
        if (dot == std::string_view::npos) return true;
        s.remove_prefix(dot + 1);
    }
}

bool is_ipv6_literal(std::string_view s) {
    if (s.size() < 4 || s.front() != '[' || s.back() != ']') return false;
    for (char c : s.substr(1, s.size() - 2)) {
        bool ok =
            is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' || c == '.';
        if (!ok) return false;
    }
    return true;
}

// "scheme://host[:port]" with nothing else (no path, query, userinfo or whitespace).
// `allow_wildcard` accepts a leading "*." in the host (for patterns).
bool parse_origin(std::string_view text, Origin& out, bool allow_wildcard = false) {
    auto sep = text.find("://");
    if (sep == std::string_view::npos || sep == 0) return false;
    out.scheme = text.substr(0, sep);
    if (!is_alpha(out.scheme.front())) return false;
    for (char c : out.scheme)
        if (!is_alpha(c) && !is_digit(c) && c != '+' && c != '-' && c != '.') return false;
    std::string_view authority = text.substr(sep + 3);
    std::size_t host_end;
    if (!authority.empty() && authority.front() == '[') {
        host_end = authority.find(']');
        if (host_end == std::string_view::npos) return false;
        ++host_end;
    } else {
        host_end = authority.find(':');
        if (host_end == std::string_view::npos) host_end = authority.size();
    }
    out.host = authority.substr(0, host_end);
    out.port = {};
    std::string_view rest = authority.substr(host_end);
    if (!rest.empty()) {
        if (rest.front() != ':' || rest.size() < 2 || rest.size() > 6) return false;
        out.port = rest.substr(1);
        for (char c : out.port)
            if (!is_digit(c)) return false;
    }
    std::string_view host = out.host;
    if (allow_wildcard && host.size() > 2 && host[0] == '*' && host[1] == '.')
        return is_host_name(host.substr(2));
    return is_ipv6_literal(host) || is_host_name(host);
}

// The scheme's default port is the same as no port ("https://h:443" is "https://h").
std::string_view effective_port(const Origin& o) {
    if ((o.port == "443" && http::iequals(o.scheme, "https")) ||
        (o.port == "80" && http::iequals(o.scheme, "http")))
        return {};
    return o.port;
}

bool same_port(const Origin& a, const Origin& b) {
    return effective_port(a) == effective_port(b);
}

bool pattern_matches(std::string_view pattern, const Origin& origin) {
    Origin p;
    if (!parse_origin(pattern, p, true)) return false;
    if (!http::iequals(p.scheme, origin.scheme) || !same_port(p, origin)) return false;
    std::string_view suffix = p.host.substr(1);  // ".example.com"
    if (origin.host.size() <= suffix.size()) return false;
    std::string_view labels = origin.host.substr(0, origin.host.size() - suffix.size());
    if (!http::iequals(origin.host.substr(labels.size()), suffix)) return false;
    return is_host_name(labels);  // one or more non-empty labels, no leading or trailing dot
}

bool entry_matches(std::string_view entry, std::string_view text, const Origin* origin) {
    if (origin == nullptr) return http::iequals(entry, text);  // "null"
    auto star = entry.find("://*.");
    if (star != std::string_view::npos) return pattern_matches(entry, *origin);
    Origin e;
    if (!parse_origin(entry, e)) return false;
    return http::iequals(e.scheme, origin->scheme) && http::iequals(e.host, origin->host) &&
           same_port(e, *origin);
}

bool any_origin_literal(const config::Cors& cors) {
    return cors.allowed_origins.size() == 1 && cors.allowed_origins[0] == "*" &&
           !cors.allow_credentials;
}

void append_line(std::string& out, std::string_view name, std::string_view value) {
    out.append(name);
    out.append(": ");
    out.append(value);
    out.append("\r\n");
}

void append_joined(std::string& out, std::string_view name,
                   const std::vector<std::string>& values) {
    out.append(name);
    out.append(": ");
    for (std::size_t i = 0; i < values.size(); ++i) {
        if (i > 0) out.append(", ");
        out.append(values[i]);
    }
    out.append("\r\n");
}

// Allow-Origin, then the Vary line (Origin, plus `extra_vary` when given), Allow-Credentials.
void append_origin_lines(const config::Cors& cors, std::string_view origin, std::string& out,
                         std::string_view extra_vary = {}) {
    bool literal = any_origin_literal(cors);
    append_line(out, "Access-Control-Allow-Origin", literal ? std::string_view("*") : origin);
    if (!literal || !extra_vary.empty()) {
        out.append("Vary: ");
        if (!literal) out.append("Origin");
        if (!literal && !extra_vary.empty()) out.append(", ");
        out.append(extra_vary);
        out.append("\r\n");
    }
    if (cors.allow_credentials) append_line(out, "Access-Control-Allow-Credentials", "true");
}

bool is_ows(char c) {
    return c == ' ' || c == '\t';
}

// Access-Control-Request-Headers as "a, b, c" (elements trimmed), or false if it is not a
// comma-separated list of tokens. Empty elements are refused: browsers never send them.
bool normalise_token_list(std::string_view list, std::string& out) {
    std::size_t start = out.size();
    bool first = true;
    while (true) {
        auto comma = list.find(',');
        std::string_view element = list.substr(0, comma);
        while (!element.empty() && is_ows(element.front())) element.remove_prefix(1);
        while (!element.empty() && is_ows(element.back())) element.remove_suffix(1);
        if (!is_token(element)) {
            out.resize(start);
            return false;
        }
        if (!first) out.append(", ");
        out.append(element);
        first = false;
        if (comma == std::string_view::npos) return true;
        list.remove_prefix(comma + 1);
    }
}

}  // namespace

bool is_preflight(const CorsRequest& request) {
    return request.method == "OPTIONS" && !request.origin.empty() &&
           !request.request_method.empty();
}

bool origin_allowed(const config::Cors& cors, std::string_view origin) {
    Origin parsed;
    const Origin* parts = nullptr;
    if (http::iequals(origin, "null")) {
        origin = "null";
    } else if (parse_origin(origin, parsed)) {
        parts = &parsed;
    } else {
        return false;
    }
    for (const auto& entry : cors.allowed_origins) {
        if (entry == "*") {
            if (parts != nullptr || !cors.allow_credentials) return true;
            continue;
        }
        if (entry_matches(entry, origin, parts)) return true;
    }
    return false;
}

bool varies_by_origin(const config::Cors& cors) {
    return cors.enabled && !any_origin_literal(cors);
}

bool append_preflight_headers(const config::Cors& cors, const CorsRequest& request,
                              std::string& out) {
    if (!cors.enabled || request.origin.empty() || !origin_allowed(cors, request.origin))
        return false;
    bool method_ok = false;
    for (const auto& method : cors.allowed_methods)
        if (method == request.request_method) method_ok = true;
    if (!method_ok) return false;

    const std::size_t start = out.size();
    const bool echo_headers = cors.allowed_headers.empty() && !request.request_headers.empty();
    append_origin_lines(cors, request.origin, out,
                        echo_headers ? "Access-Control-Request-Headers" : "");
    append_joined(out, "Access-Control-Allow-Methods", cors.allowed_methods);
    if (!cors.allowed_headers.empty()) {
        append_joined(out, "Access-Control-Allow-Headers", cors.allowed_headers);
    } else if (echo_headers) {
        out.append("Access-Control-Allow-Headers: ");
        if (!normalise_token_list(request.request_headers, out)) {
            out.resize(start);
            return false;
        }
        out.append("\r\n");
    }
    auto seconds = std::chrono::duration_cast<std::chrono::seconds>(cors.max_age).count();
    if (seconds > 0) {
        char digits[24];
        auto end = std::to_chars(digits, digits + sizeof digits, seconds).ptr;
        append_line(out, "Access-Control-Max-Age",
                    std::string_view(digits, static_cast<std::size_t>(end - digits)));
    }
    return true;
}

bool append_actual_headers(const config::Cors& cors, std::string_view origin, std::string& out) {
    if (!cors.enabled || origin.empty() || !origin_allowed(cors, origin)) return false;
    append_origin_lines(cors, origin, out);
    if (!cors.expose_headers.empty())
        append_joined(out, "Access-Control-Expose-Headers", cors.expose_headers);
    return true;
}

}  // namespace proxyd::worker
