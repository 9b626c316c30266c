#include "worker/grpc.hpp"

#include <charconv>
#include <cstdint>

namespace proxyd::worker::grpc {

std::optional<std::chrono::microseconds> parse_timeout(std::string_view text) {
    if (text.size() < 2 || text.size() > 9) return std::nullopt;
    const std::string_view digits = text.substr(0, text.size() - 1);
    std::uint64_t value = 0;
    for (char c : digits) {
        if (c < '0' || c > '9') return std::nullopt;
        value = value * 10 + static_cast<std::uint64_t>(c - '0');
    }
    using std::chrono::microseconds;
    // 8 digits of hours is about 11,400 years of microseconds: no overflow in 64 bits.
    switch (text.back()) {
        case 'H':
            return microseconds(value * 3'600'000'000ULL);
        case 'M':
            return microseconds(value * 60'000'000ULL);
        case 'S':
            return microseconds(value * 1'000'000ULL);
        case 'm':
            return microseconds(value * 1'000ULL);
        case 'u':
            return microseconds(value);
        case 'n':
            return microseconds((value + 999) / 1000);  // rounded up: never earlier
        default:
            return std::nullopt;
    }
}

std::string format_timeout(std::chrono::microseconds remaining) {
    constexpr std::uint64_t kMaxValue = 99'999'999;
    const std::uint64_t us =
        remaining.count() > 0 ? static_cast<std::uint64_t>(remaining.count()) : 1;
    struct Unit {
        std::uint64_t per;
        char name;
    };
    for (const Unit unit : {Unit{1, 'u'}, Unit{1'000, 'm'}, Unit{1'000'000, 'S'},
                            Unit{60'000'000, 'M'}, Unit{3'600'000'000ULL, 'H'}}) {
        const std::uint64_t value = (us + unit.per - 1) / unit.per;
        if (value <= kMaxValue) return std::to_string(value) + unit.name;
    }
    return std::to_string(kMaxValue) + 'H';
}

Code code_for_http_status(int status) {
    switch (status) {
        case 401:
            return kUnauthenticated;
        case 403:
            return kPermissionDenied;
        case 404:
            return kUnimplemented;
        case 413:
        case 429:
            return kResourceExhausted;
        case 502:
        case 503:
            return kUnavailable;
        case 504:
            return kDeadlineExceeded;
        default:
            return kInternal;
    }
}

void append_percent_encoded(std::string& out, std::string_view message) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    for (char ch : message) {
        const auto c = static_cast<unsigned char>(ch);
        if (c >= 0x20 && c <= 0x7e && c != '%') {
            out += ch;
            continue;
        }
        out += '%';
        out += kHex[c >> 4];
        out += kHex[c & 0xf];
    }
}

}  // namespace proxyd::worker::grpc
