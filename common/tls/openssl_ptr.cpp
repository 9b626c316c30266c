// OpenSSL reports failures through a per-thread queue; callers turn the oldest entry into a
// message and clear the rest, so a later check never reads a stale error as its own.
#include "common/tls/openssl_ptr.hpp"

#include <openssl/err.h>

#include <array>

namespace proxyd::tls {

std::string last_error() {
    const unsigned long code = ERR_get_error();
    ERR_clear_error();
    if (code == 0) return {};
    // 256 bytes holds any message OpenSSL formats ("error:<code>:<lib>:<func>:<reason>").
    std::array<char, 256> text{};
    ERR_error_string_n(code, text.data(), text.size());
    return text.data();
}

}  // namespace proxyd::tls
