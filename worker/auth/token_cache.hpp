// The per-worker cache of verified tokens: a repeated token costs a hash and one string compare
// instead of a signature verification.
//
// Bounded to `capacity` entries (0 = no cache). Keyed by the exact token text: an open-addressing
// table (linear probing, backward-shift deletion) of indices into the entry array, each entry
// holding the full token, its hash and the VerifiedToken. A lookup allocates nothing. When full,
// the CLOCK algorithm picks the entry to replace (a hit sets the entry's reference bit; the hand
// clears bits until it finds an unreferenced entry), amortised O(1). Storage grows with use up to
// the bound, so a large capacity costs nothing until tokens arrive.
//
// Memory: an entry holds its token (proxyd bounds tokens to 8 KiB; typical ones are < 1 KiB).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "worker/auth/verified_token.hpp"

namespace proxyd::worker {

class TokenCache {
  public:
    struct Entry {
        std::string token;
        std::uint64_t hash = 0;
        VerifiedToken value;
        std::int64_t not_before = 0;   // nbf claim (INT64_MIN = none)
        std::int64_t valid_until = 0;  // unix seconds; the entry is not used after this
        bool referenced = false;       // CLOCK reference bit
        bool used = false;
    };

    explicit TokenCache(std::size_t capacity);

    static std::uint64_t hash(std::string_view token);

    std::size_t capacity() const { return capacity_; }
    std::size_t size() const { return live_; }

    // The entry holding exactly `token` (whose hash is `h`), or nullptr. Sets its reference bit.
    Entry* find(std::string_view token, std::uint64_t h);

    // Stores `token`, replacing an entry when full; `value` is swapped into the entry (the caller
    // gets the replaced entry's buffers back, to reuse). nullptr when the capacity is 0. The
    // token must not be present already.
    Entry* insert(std::string_view token, std::uint64_t h, VerifiedToken& value,
                  std::int64_t not_before, std::int64_t valid_until);

    // Forgets the entry (from find or insert).
    void erase(Entry* entry);

  private:
    static constexpr std::uint32_t kEmpty = 0xffffffffu;

    std::uint32_t take_slot();
    void unlink(std::uint32_t index);
    void link(std::uint32_t index);
    void grow_buckets();

    std::size_t capacity_;
    std::size_t live_ = 0;
    std::vector<Entry> entries_;          // grows up to capacity_
    std::vector<std::uint32_t> free_;     // erased entries, reused first
    std::vector<std::uint32_t> buckets_;  // power of two, at least twice entries_.size()
    std::size_t hand_ = 0;                // CLOCK hand into entries_
};

}  // namespace proxyd::worker
