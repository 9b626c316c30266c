#include "worker/real_ip.hpp"

#include <arpa/inet.h>

#include <cstring>
#include <string>

namespace proxyd::worker {
namespace {

bool parse_ip(std::string_view text, int& family, unsigned char bytes[16]) {
    char buf[INET6_ADDRSTRLEN + 1];
    if (text.empty() || text.size() >= sizeof buf) return false;
    std::memcpy(buf, text.data(), text.size());
    buf[text.size()] = '\0';
    if (::inet_pton(AF_INET, buf, bytes) == 1) {
        family = AF_INET;
        return true;
    }
    if (::inet_pton(AF_INET6, buf, bytes) == 1) {
        family = AF_INET6;
        return true;
    }
    return false;
}

bool in_cidr(int family, const unsigned char bytes[16], const config::Cidr& cidr) {
    if (family != cidr.family) return false;
    int full = cidr.prefix_len / 8;
    if (std::memcmp(bytes, cidr.bytes, static_cast<std::size_t>(full)) != 0) return false;
    int rest = cidr.prefix_len % 8;
    if (rest == 0) return true;
    unsigned char mask = static_cast<unsigned char>(0xff << (8 - rest));
    return (bytes[full] & mask) == (cidr.bytes[full] & mask);
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

}  // namespace

bool address_in_cidrs(std::string_view ip, const std::vector<config::Cidr>& cidrs) {
    int family = 0;
    unsigned char bytes[16]{};
    if (!parse_ip(ip, family, bytes)) return false;
    for (const auto& cidr : cidrs) {
        if (in_cidr(family, bytes, cidr)) return true;
    }
    return false;
}

std::string_view select_real_ip(std::string_view peer_ip,
                                const std::vector<std::string_view>& header_values,
                                const std::vector<config::Cidr>& trusted) {
    if (!address_in_cidrs(peer_ip, trusted)) return peer_ip;
    std::string_view chosen = peer_ip;
    for (auto line = header_values.rbegin(); line != header_values.rend(); ++line) {
        std::string_view rest = *line;
        while (!rest.empty()) {
            auto comma = rest.rfind(',');
            std::string_view item =
                trim(comma == std::string_view::npos ? rest : rest.substr(comma + 1));
            rest = comma == std::string_view::npos ? std::string_view() : rest.substr(0, comma);
            int family = 0;
            unsigned char bytes[16]{};
            if (!parse_ip(item, family, bytes))
                return chosen;  // garbage: stop at the last good hop
            chosen = item;
            if (!address_in_cidrs(item, trusted)) return chosen;
        }
    }
    return chosen;
}

}  // namespace proxyd::worker
