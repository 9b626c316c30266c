#include "worker/h2/header_block.hpp"

#include <algorithm>
#include <string_view>

namespace proxyd::worker::h2 {
namespace {

bool has_upper(std::string_view name) {
    return std::any_of(name.begin(), name.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}

char to_lower(char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

// RFC 9113 8.2.2; `name` is lower case.
bool is_connection_specific(std::string_view name) {
    return name == "connection" || name == "keep-alive" || name == "proxy-connection" ||
           name == "transfer-encoding" || name == "upgrade" || name == "te";
}

nghttp2_nv field(std::string_view name, std::string_view value) {
    // nghttp2's API is not const-correct; with NGHTTP2_NV_FLAG_NONE it copies and never writes.
    return {reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
            reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
            value.size(), NGHTTP2_NV_FLAG_NONE};
}

}  // namespace

void HeaderBlock::build_response(int status, const std::vector<Header>& headers) {
    fields_.clear();
    fields_.reserve(headers.size() + 1);
    // A status outside 100..999 is the owner's bug; nghttp2 would send it and the client reject
    // the stream, so it becomes a plain 502 instead.
    if (status < 100 || status > 999) status = 502;
    for (int i = 2; i >= 0; --i, status /= 10) status_[i] = static_cast<char>('0' + status % 10);
    fields_.push_back(field(":status", std::string_view(status_, 3)));
    add_fields(headers);
}

void HeaderBlock::build_trailers(const std::vector<Header>& headers) {
    fields_.clear();
    fields_.reserve(headers.size());
    add_fields(headers);
}

void HeaderBlock::add_fields(const std::vector<Header>& headers) {
    lowered_.clear();
    // Reserved once so that the strings never move: fields_ points into them.
    lowered_.reserve(headers.size());
    for (const Header& header : headers) add(header.name, header.value);
}

void HeaderBlock::add(const std::string& name, const std::string& value) {
    if (name.empty() || name[0] == ':') return;
    std::string_view lower = name;
    if (has_upper(name)) {
        std::string& copy = lowered_.emplace_back(name);
        std::transform(copy.begin(), copy.end(), copy.begin(), to_lower);
        lower = copy;
    }
    if (is_connection_specific(lower)) return;
    fields_.push_back(field(lower, value));
}

}  // namespace proxyd::worker::h2
