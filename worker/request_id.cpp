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

std::string_view RequestIdGenerator::next() {
    static constexpr char kHex[] = "0123456789abcdef";
    ++counter_;
    std::uint64_t high = splitmix64(seed_ ^ counter_);
    std::uint64_t low = splitmix64(high + seed_);
    for (int i = 0; i < 16; ++i) {
        text_[i] = kHex[(high >> (60 - 4 * i)) & 15];
        text_[16 + i] = kHex[(low >> (60 - 4 * i)) & 15];
    }
    return {text_, sizeof text_};
}

}  // namespace proxyd::worker
