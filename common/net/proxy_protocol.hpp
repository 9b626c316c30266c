// PROXY protocol v1 (text) and v2 (binary) headers, as sent by an L4 balancer (HAProxy, AWS NLB,
// ...) at the very start of a connection to carry the original client's address
// (https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt).
//
// parse_proxy_header() is called with everything received so far on the connection, from its
// first byte, until it returns Done or Error; it copies nothing and keeps no state, so feeding it
// byte by byte is fine. What it accepts:
//
//   v1  "PROXY TCP4 <src> <dst> <sport> <dport>\r\n" (TCP6 likewise), at most 107 bytes, single
//       spaces, addresses valid for the family (dotted quad / RFC 4291 text), ports 0..65535 in
//       plain decimal (no sign, no leading zero). "PROXY UNKNOWN ...\r\n" -> local.
//   v2  the 12-byte signature, version 2, command LOCAL (-> local, address block ignored) or
//       PROXY with AF_INET/AF_INET6 over STREAM; AF_UNSPEC and AF_UNIX -> local. At most 4096
//       bytes after the 16-byte fixed part; TLVs after the addresses are checked for framing and
//       skipped.
//
// Anything else is Error: the connection is not from the balancer (or is mangled) and must be
// closed without a response. Incomplete means a valid prefix of a header that is not complete
// yet; the caller bounds how long it waits (header timeout) — at most 107 bytes for v1 and
// 16 + 4096 for v2 are ever needed.
#pragma once

#include <sys/socket.h>

#include <cstddef>

namespace proxyd::net {

enum class ProxyHeaderStatus {
    Incomplete,  // a valid prefix: read more and call again with all the bytes
    Done,        // `out` is filled; the request starts at data + out.length
    Error,       // not a PROXY header (out.error says why)
};

inline constexpr std::size_t kProxyV1MaxLength = 107;
inline constexpr std::size_t kProxyV2MaxPayload = 4096;

struct ProxyHeader {
    std::size_t length = 0;  // bytes of the header, to consume from the connection
    // v2 LOCAL, v1 UNKNOWN, v2 AF_UNSPEC/AF_UNIX: keep the TCP peer as the client address.
    bool local = false;
    // AF_INET / AF_INET6 with the port in network order; ss_family AF_UNSPEC when local.
    sockaddr_storage source{};
    sockaddr_storage destination{};
    const char* error = "";  // static text, set on Error
};

ProxyHeaderStatus parse_proxy_header(const char* data, std::size_t len, ProxyHeader& out);

}  // namespace proxyd::net
