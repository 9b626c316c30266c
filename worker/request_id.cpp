#include "worker/request_id.hpp"

#include <sys/random.h>
#include <unistd.h>

#include <chrono>

namespace proxyd::worker {

bool is_valid_request_id(std::string_view id) {
    if (id.empty() || id.size() > 128) return false;
    for (char c : id) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok) return false;
    }
    return true;
}

static std::uint64_t splitmix64(std::uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

RequestIdGenerator::RequestIdGenerator() {
    std::uint64_t seed = 0;
    if (::getrandom(&seed, sizeof seed, 0) != sizeof seed) {
        seed = static_cast<std::uint64_t>(
                   std::chrono::steady_clock::now().time_since_epoch().count()) ^
               static_cast<std::uint64_t>(::getpid()) << 32;
    }
    seed_ = seed;
}

namespace {

// "00", "01", ... "ff": a byte's two hex digits in one lookup (ids are made 3 times a request).
struct HexPairs {
    char pairs[256][2];
    constexpr HexPairs() : pairs() {
        constexpr char kHex[] = "0123456789abcdef";
        for (int i = 0; i < 256; ++i) {
            pairs[i][0] = kHex[i >> 4];
            pairs[i][1] = kHex[i & 15];
        }
    }
};
constexpr HexPairs kHexPairs;

void write_hex(std::uint64_t value, char* out) {
    for (int i = 0; i < 8; ++i) {
        const auto byte = static_cast<unsigned>(value >> (56 - 8 * i)) & 0xffu;
        out[2 * i] = kHexPairs.pairs[byte][0];
        out[2 * i + 1] = kHexPairs.pairs[byte][1];
    }
}

}  // namespace

std::string_view RequestIdGenerator::next() {
    ++counter_;
    std::uint64_t high = splitmix64(seed_ ^ counter_);
    std::uint64_t low = splitmix64(high + seed_);
    write_hex(high, text_);
    write_hex(low, text_ + 16);
    return {text_, sizeof text_};
}

}  // namespace proxyd::worker
