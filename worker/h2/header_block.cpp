#include "worker/h2/header_block.hpp"

#include <string_view>

#include "common/http/parser.hpp"

namespace proxyd::worker::h2 {
namespace {

bool is_connection_specific(std::string_view name) {
    for (std::string_view field :
         {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"}) {
        if (http::iequals(name, field)) return true;
    }
    return false;
}

nghttp2_nv field(std::string_view name, std::string_view value) {
    // nghttp2's API is not const-correct; with NGHTTP2_NV_FLAG_NONE it copies and never writes.
    return {reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
            reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
            NGHTTP2_NV_FLAG_NONE};
}

}  // namespace

void HeaderBlock::build_response(int status, const std::vector<Header>& headers) {
    fields_.clear();
    // A status outside 100..999 is the owner's bug; nghttp2 would send it and the client reject
    // the stream, so it becomes a plain 502 instead.
    if (status < 100 || status > 999) status = 502;
    for (int i = 2; i >= 0; --i, status /= 10) status_[i] = static_cast<char>('0' + status % 10);
    fields_.push_back(field(":status", std::string_view(status_, 3)));
    add_fields(headers);
}

void HeaderBlock::build_trailers(const std::vector<Header>& headers) {
    fields_.clear();
    add_fields(headers);
}

void HeaderBlock::add_fields(const std::vector<Header>& headers) {
    for (const Header& header : headers) {
        if (header.name.empty() || header.name[0] == ':') continue;
        if (is_connection_specific(header.name)) continue;
        fields_.push_back(field(header.name, header.value));
    }
}

}  // namespace proxyd::worker::h2
