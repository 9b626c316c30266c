#include "common/net/proxy_protocol.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace proxyd::net {
namespace {

constexpr std::string_view kV1Prefix = "PROXY ";
constexpr char kV2Signature[12] = {'\r', '\n', '\r', '\n', '\0', '\r',
                                   '\n', 'Q',  'U',  'I',  'T',  '\n'};
constexpr std::size_t kV2FixedLength = 16;

ProxyHeaderStatus fail(ProxyHeader& out, const char* why) {
    out.error = why;
    return ProxyHeaderStatus::Error;
}

// ---------------------------------------------------------------------------------------------
// v1

// Next space-separated field of `line` (moved past it and its single separating space). False if
// the field is empty: a leading, doubled or trailing space.
bool next_field(std::string_view& line, std::string_view& field) {
    auto space = line.find(' ');
    field = line.substr(0, space);
    line = space == std::string_view::npos ? std::string_view() : line.substr(space + 1);
    if (space != std::string_view::npos && line.empty()) return false;  // trailing space
    return !field.empty();
}

bool parse_port(std::string_view text, std::uint16_t& port) {
    if (text.empty() || text.size() > 5 || (text.size() > 1 && text[0] == '0')) return false;
    std::uint32_t value = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return false;
        value = value * 10 + static_cast<std::uint32_t>(c - '0');
    }
    if (value > 65535) return false;
    port = static_cast<std::uint16_t>(value);
    return true;
}

bool parse_v1_address(std::string_view text, std::string_view port_text, int family,
                      sockaddr_storage& out) {
    char buf[INET6_ADDRSTRLEN];
    if (text.size() >= sizeof buf) return false;
    std::memcpy(buf, text.data(), text.size());
    buf[text.size()] = '\0';
    std::uint16_t port = 0;
    if (!parse_port(port_text, port)) return false;
    std::memset(&out, 0, sizeof out);
    if (family == AF_INET) {
        auto* sin = reinterpret_cast<sockaddr_in*>(&out);
        if (::inet_pton(AF_INET, buf, &sin->sin_addr) != 1) return false;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
    } else {
        auto* sin6 = reinterpret_cast<sockaddr_in6*>(&out);
        if (::inet_pton(AF_INET6, buf, &sin6->sin6_addr) != 1) return false;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
    }
    return true;
}

ProxyHeaderStatus parse_v1(const char* data, std::size_t len, ProxyHeader& out) {
    if (std::string_view(data, std::min(len, kV1Prefix.size())) !=
        kV1Prefix.substr(0, std::min(len, kV1Prefix.size())))
        return fail(out, "not a PROXY protocol header");
    // The line, CRLF included, fits in 107 bytes; every byte before the CR is printable ASCII.
    std::size_t end = 0;
    const std::size_t scan = std::min(len, kProxyV1MaxLength);
    for (std::size_t i = 0;; ++i) {
        if (i == scan) {
            if (len >= kProxyV1MaxLength) return fail(out, "PROXY v1 line longer than 107 bytes");
            return ProxyHeaderStatus::Incomplete;
        }
        char c = data[i];
        if (c == '\r') {
            if (i + 1 >= kProxyV1MaxLength) return fail(out, "PROXY v1 line longer than 107 bytes");
            if (i + 1 == len) return ProxyHeaderStatus::Incomplete;
            if (data[i + 1] != '\n') return fail(out, "PROXY v1: CR without LF");
            end = i;
            break;
        }
        if (c < 0x20 || c > 0x7e) return fail(out, "PROXY v1: invalid byte in the line");
    }

    std::string_view line(data + kV1Prefix.size(), end - kV1Prefix.size());
    const std::string_view proto = line.substr(0, line.find(' '));
    if (proto == "UNKNOWN") {  // the rest of the line is to be ignored
        out = ProxyHeader{};
        out.length = end + 2;
        out.local = true;
        return ProxyHeaderStatus::Done;
    }
    int family;
    if (proto == "TCP4") {
        family = AF_INET;
    } else if (proto == "TCP6") {
        family = AF_INET6;
    } else {
        return fail(out, "PROXY v1: protocol must be TCP4, TCP6 or UNKNOWN");
    }
    if (line.size() <= proto.size() + 1) return fail(out, "PROXY v1: missing addresses");
    line.remove_prefix(proto.size() + 1);
    std::string_view fields[4];  // source, destination, source port, destination port
    for (auto& field : fields)
        if (!next_field(line, field)) return fail(out, "PROXY v1: malformed line");
    if (!line.empty()) return fail(out, "PROXY v1: extra fields");

    ProxyHeader result;
    if (!parse_v1_address(fields[0], fields[2], family, result.source) ||
        !parse_v1_address(fields[1], fields[3], family, result.destination))
        return fail(out, "PROXY v1: invalid address or port");
    result.length = end + 2;
    out = result;
    return ProxyHeaderStatus::Done;
}

// ---------------------------------------------------------------------------------------------
// v2

std::uint16_t read_be16(const char* p) {
    auto b = reinterpret_cast<const unsigned char*>(p);
    return static_cast<std::uint16_t>((b[0] << 8) | b[1]);
}

// TLVs (type, 16-bit length, value) must exactly fill [pos, end).
bool tlvs_well_formed(const char* data, std::size_t pos, std::size_t end) {
    while (pos < end) {
        if (end - pos < 3) return false;
        pos += 3 + read_be16(data + pos + 1);
        if (pos > end) return false;
    }
    return true;
}

ProxyHeaderStatus parse_v2(const char* data, std::size_t len, ProxyHeader& out) {
    const std::size_t have = std::min(len, sizeof kV2Signature);
    if (std::memcmp(data, kV2Signature, have) != 0) return fail(out, "not a PROXY protocol header");
    if (len > 12) {
        const auto ver_cmd = static_cast<unsigned char>(data[12]);
        if ((ver_cmd >> 4) != 2) return fail(out, "PROXY v2: version must be 2");
        if ((ver_cmd & 0x0f) > 1) return fail(out, "PROXY v2: command must be LOCAL or PROXY");
    }
    if (len < kV2FixedLength) return ProxyHeaderStatus::Incomplete;
    const std::size_t payload = read_be16(data + 14);
    if (payload > kProxyV2MaxPayload) return fail(out, "PROXY v2: header longer than 4096 bytes");
    const std::size_t total = kV2FixedLength + payload;
    if (len < total) return ProxyHeaderStatus::Incomplete;

    ProxyHeader result;
    result.length = total;
    const bool local_command = (static_cast<unsigned char>(data[12]) & 0x0f) == 0;
    if (local_command) {  // health checks from the balancer itself: family and block ignored
        result.local = true;
        out = result;
        return ProxyHeaderStatus::Done;
    }
    const char* block = data + kV2FixedLength;
    std::size_t address_length = 0;
    switch (static_cast<unsigned char>(data[13])) {
        case 0x00:  // AF_UNSPEC, UNSPEC: unknown protocol, keep the real endpoints
            result.local = true;
            out = result;
            return ProxyHeaderStatus::Done;
        case 0x11: {  // AF_INET, STREAM
            address_length = 12;
            if (payload < address_length) return fail(out, "PROXY v2: address block too short");
            auto* src = reinterpret_cast<sockaddr_in*>(&result.source);
            auto* dst = reinterpret_cast<sockaddr_in*>(&result.destination);
            src->sin_family = AF_INET;
            dst->sin_family = AF_INET;
            std::memcpy(&src->sin_addr, block, 4);
            std::memcpy(&dst->sin_addr, block + 4, 4);
            std::memcpy(&src->sin_port, block + 8, 2);
            std::memcpy(&dst->sin_port, block + 10, 2);
            break;
        }
        case 0x21: {  // AF_INET6, STREAM
            address_length = 36;
            if (payload < address_length) return fail(out, "PROXY v2: address block too short");
            auto* src = reinterpret_cast<sockaddr_in6*>(&result.source);
            auto* dst = reinterpret_cast<sockaddr_in6*>(&result.destination);
            src->sin6_family = AF_INET6;
            dst->sin6_family = AF_INET6;
            std::memcpy(&src->sin6_addr, block, 16);
            std::memcpy(&dst->sin6_addr, block + 16, 16);
            std::memcpy(&src->sin6_port, block + 32, 2);
            std::memcpy(&dst->sin6_port, block + 34, 2);
            break;
        }
        case 0x31:  // AF_UNIX, STREAM: no IP to take, keep the real endpoints
            address_length = 216;
            if (payload < address_length) return fail(out, "PROXY v2: address block too short");
            result.local = true;
            break;
        default:
            return fail(out, "PROXY v2: unsupported address family or transport");
    }
    if (!tlvs_well_formed(data, kV2FixedLength + address_length, total))
        return fail(out, "PROXY v2: malformed TLV");
    out = result;
    return ProxyHeaderStatus::Done;
}

}  // namespace

ProxyHeaderStatus parse_proxy_header(const char* data, std::size_t len, ProxyHeader& out) {
    if (len == 0) return ProxyHeaderStatus::Incomplete;
    if (data[0] == 'P') return parse_v1(data, len, out);
    if (data[0] == '\r') return parse_v2(data, len, out);
    return fail(out, "not a PROXY protocol header");
}

}  // namespace proxyd::net
