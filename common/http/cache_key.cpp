#include "common/http/cache_key.hpp"

#include "common/http/tokens_internal.hpp"

namespace proxyd::http {
namespace {

// "host[:port]" -> "host"; "[v6]:port" -> "[v6]". The brackets are what tell an IPv6 literal's
// colons from the port's.
std::string_view strip_port(std::string_view host) {
    if (!host.empty() && host.front() == '[') {
        const std::size_t close = host.find(']');
        return close == std::string_view::npos ? host : host.substr(0, close + 1);
    }
    return host.substr(0, host.find(':'));
}

void append_lower(std::string& out, std::string_view text) {
    for (char c : text) out += (c >= 'A' && c <= 'Z') ? static_cast<char>(c | 0x20) : c;
}

// Appends the values of every `name` header of the request, joined by ", " (RFC 9110 5.3: the
// same as one field line with a list).
void append_request_values(std::string& out, std::string_view name, const Request& request) {
    bool first = true;
    for (std::size_t i = 0; i < request.header_count; ++i) {
        if (!iequals(request.headers[i].name, name)) continue;
        if (!first) out += ", ";
        out += request.headers[i].value;
        first = false;
    }
}

}  // namespace

void append_cache_key(std::string& out, std::string_view method, std::string_view host,
                      std::string_view path, std::string_view query) {
    out += method;
    out += ' ';
    append_lower(out, strip_port(host));
    out += path;
    if (!query.empty()) {
        out += '?';
        out += query;
    }
}

void append_vary_suffix(std::string& out, std::string_view vary_names, const Request& request) {
    detail::for_each_list_element(vary_names, [&](std::string_view name) {
        out += '\n';
        out += name;
        out += ':';
        append_request_values(out, name, request);
    });
}

bool cache_key_matches(std::string_view key, std::string_view path_prefix, std::string_view host) {
    key = key.substr(0, key.find('\n'));  // a variant matches like its base key
    const std::size_t space = key.find(' ');
    if (space == std::string_view::npos) return false;
    const std::string_view authority_and_target = key.substr(space + 1);
    // The parser lets no '/' into a host, and every cacheable target starts with '/'.
    const std::size_t slash = authority_and_target.find('/');
    if (slash == std::string_view::npos) return false;
    const std::string_view key_host = authority_and_target.substr(0, slash);
    const std::string_view target = authority_and_target.substr(slash);
    if (!target.starts_with(path_prefix)) return false;
    return host.empty() || iequals(key_host, strip_port(host));
}

}  // namespace proxyd::http
