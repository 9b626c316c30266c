// GCRA decisions on the shared table; the slot protocol is described in rate_limit_table.hpp.
#include "common/shm/rate_limit_table.hpp"

#include <sched.h>
#include <sys/random.h>
#include <time.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace proxyd::shm {

namespace {

using Table = RateLimitTable;

constexpr int kTagShift = 48;
constexpr std::uint64_t kLowMask = (std::uint64_t{1} << kTagShift) - 1;
constexpr std::uint64_t kClaimTag = 0xffff;
constexpr std::uint64_t kClaimStaleUs = 1'000'000;
// Bounds on retries, each caused by another process's successful CAS: on the same key's TAT (a
// busy key) and on slot ownership (claims and takeovers). Past them, fail open.
constexpr int kMaxCasRetries = 1000;
constexpr int kMaxRetries = 64;
constexpr std::uint64_t kBuckets = Table::kSlots / Table::kWindow;
static_assert((Table::kSlots & (Table::kSlots - 1)) == 0, "kSlots must be a power of two");
static_assert((Table::kWindow & (Table::kWindow - 1)) == 0, "kWindow must be a power of two");
static_assert(kBuckets >= 2 && kBuckets <= (std::uint64_t{1} << 28));
static_assert(std::atomic<std::uint64_t>::is_always_lock_free,
              "shared-memory atomics must be lock-free (address-free)");
static_assert(sizeof(RateSlot) == 16);

// 1..0xfffe: never 0 (the low bits of an owned word may be 0) and never kClaimTag.
std::uint64_t tag_of(std::uint64_t key_hash) {
    return (key_hash >> kTagShift) % (kClaimTag - 1) + 1;
}
std::uint64_t tag_bits(std::uint64_t word) {
    return word >> kTagShift;
}
std::uint64_t low_bits(std::uint64_t word) {
    return word & kLowMask;
}
std::uint64_t make_word(std::uint64_t tag, std::uint64_t low) {
    return tag << kTagShift | low;
}

bool claim_is_stale(std::uint64_t word) {
    std::uint64_t started = low_bits(word);
    std::uint64_t real_now = monotonic_us() & kLowMask;
    return real_now > started && real_now - started > kClaimStaleUs;
}

std::uint64_t ceil_seconds(std::uint64_t us) {
    return (us + 999'999) / 1'000'000;
}

RateDecision fail_open(Table& table, const RateParams& params) {
    table.counters.fail_open.fetch_add(1, std::memory_order_relaxed);
    return make_decision(params, true, 0);
}

enum class SlotResult { Allowed, Denied, Lost };

// Decides on a slot found to hold the key (word `w`, tag `tag`). Lost: the slot changed owner
// meanwhile (or CAS kept failing); the caller scans again.
SlotResult decide_in_slot(RateSlot& slot, std::uint64_t w, std::uint64_t key_hash,
                          std::uint64_t tag, const RateParams& params, std::uint64_t now,
                          std::uint64_t& ahead) {
    for (int attempt = 0; attempt < kMaxCasRetries; ++attempt) {
        std::uint64_t tat = std::max(low_bits(w), now);
        if (tat + params.interval_us - now > params.tau_us) {
            ahead = tat - now;
            return SlotResult::Denied;
        }
        std::uint64_t new_tat = tat + params.interval_us;
        if (slot.word.compare_exchange_strong(w, make_word(tag, new_tat))) {
            ahead = new_tat - now;
            return SlotResult::Allowed;
        }
        // w now holds the current word: still this key's only if the tag and key still match.
        if (tag_bits(w) != tag || slot.key.load(std::memory_order_acquire) != key_hash)
            return SlotResult::Lost;
    }
    return SlotResult::Lost;
}

// The key's two buckets of kWindow slots, from independent bits of its hash ("two choices": a
// new key goes to the less used one, so buckets overflow only when the table is nearly full).
void bucket_pair(Table& table, std::uint64_t key_hash, RateSlot* out[2]) {
    std::uint64_t first = key_hash & (kBuckets - 1);
    std::uint64_t second = (key_hash >> 20) & (kBuckets - 1);
    if (second == first) second ^= 1;
    out[0] = &table.slots[first * Table::kWindow];
    out[1] = &table.slots[second * Table::kWindow];
}

// One pass over a key's two buckets: finds the key, or else the slot a claim must take, and
// notes claims in progress.
struct Scan {
    RateSlot* found = nullptr;
    std::uint64_t found_word = 0;
    RateSlot* first_empty[2] = {nullptr, nullptr};
    std::size_t used[2] = {0, 0};  // slots before the first empty one
    RateSlot* oldest = nullptr;    // smallest TAT, for full buckets
    std::uint64_t oldest_word = 0;
    std::uint64_t oldest_tat = std::numeric_limits<std::uint64_t>::max();
    bool pending_claim = false;

    void run(RateSlot* const buckets[2], std::uint64_t key_hash, std::uint64_t tag) {
        for (int b = 0; b < 2; ++b) {
            used[b] = Table::kWindow;
            for (std::size_t i = 0; i < Table::kWindow; ++i) {
                RateSlot& slot = buckets[b][i];
                std::uint64_t w = slot.word.load(std::memory_order_acquire);
                if (w == 0) {  // slots fill in order and never empty again: the key is not after
                    first_empty[b] = &slot;
                    used[b] = i;
                    break;
                }
                std::uint64_t slot_tat = low_bits(w);
                if (tag_bits(w) == kClaimTag) {
                    if (!claim_is_stale(w)) {
                        pending_claim = true;  // perhaps this very key: the caller waits for it
                        continue;
                    }
                    slot_tat = 0;  // abandoned claim: the best slot to take
                } else if (tag_bits(w) == tag &&
                           slot.key.load(std::memory_order_acquire) == key_hash) {
                    found = &slot;
                    found_word = w;
                    return;
                }
                if (slot_tat < oldest_tat) {
                    oldest = &slot;
                    oldest_word = w;
                    oldest_tat = slot_tat;
                }
            }
        }
    }

    // Where a new key goes: the first empty slot of the less used bucket (the first on a tie);
    // with both full, the smallest TAT. `word` gets the value the claim must replace.
    RateSlot* choice(std::uint64_t& word) const {
        int b = first_empty[1] && (!first_empty[0] || used[1] < used[0]) ? 1 : 0;
        if (first_empty[b]) {
            word = 0;
            return first_empty[b];
        }
        word = oldest_word;
        return oldest;
    }
};

}  // namespace

RateParams rate_params(int requests_per_minute, int burst) {
    RateParams p{};
    std::uint64_t rpm =
        requests_per_minute > 0 ? static_cast<std::uint64_t>(requests_per_minute) : 1;
    p.interval_us = std::max<std::uint64_t>(1, (60'000'000 + rpm / 2) / rpm);
    p.burst = std::max(1, burst);
    p.tau_us = p.interval_us * static_cast<std::uint64_t>(p.burst);
    return p;
}

RateDecision make_decision(const RateParams& params, bool allowed, std::uint64_t ahead_us) {
    RateDecision d;
    d.allowed = allowed;
    d.limit = params.burst;
    d.reset_seconds = static_cast<std::int64_t>(ceil_seconds(ahead_us));
    if (allowed) {
        std::uint64_t room = ahead_us >= params.tau_us ? 0 : params.tau_us - ahead_us;
        // A decision whose clock was read just before another worker's commit sees `ahead` a
        // few µs too large, which floored would report one unit less than is left (and two
        // workers the same number). Forgive up to 1 ms of that, never a quarter interval.
        std::uint64_t slack = std::min<std::uint64_t>(1000, params.interval_us / 4);
        d.remaining = static_cast<int>(std::min<std::uint64_t>(
            (room + slack) / params.interval_us, static_cast<unsigned>(params.burst)));
    } else {
        // Next allowed when TAT + T - tau <= now, i.e. after ahead + T - tau (> 0 on a deny).
        std::uint64_t wait = ahead_us + params.interval_us > params.tau_us
                                 ? ahead_us + params.interval_us - params.tau_us
                                 : 0;
        d.retry_after_seconds = std::max<std::int64_t>(1, ceil_seconds(wait));
    }
    return d;
}

std::uint64_t rate_key_hash(std::string_view limit_name, std::string_view key, std::uint64_t seed) {
    // FNV-1a over (seed, len(name), name, key), then the murmur3 finalizer for avalanche.
    std::uint64_t h = 0xcbf29ce484222325ULL;
    auto mix_byte = [&h](unsigned char c) {
        h ^= c;
        h *= 0x100000001b3ULL;
    };
    auto mix_u64 = [&mix_byte](std::uint64_t v) {
        for (int i = 0; i < 8; ++i) mix_byte(static_cast<unsigned char>(v >> (8 * i)));
    };
    mix_u64(seed);
    mix_u64(limit_name.size());
    for (char c : limit_name) mix_byte(static_cast<unsigned char>(c));
    for (char c : key) mix_byte(static_cast<unsigned char>(c));
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h == 0 ? 1 : h;
}

std::uint64_t hash_seed(RateLimitTable& table) {
    std::uint64_t seed = table.hash_seed.load(std::memory_order_acquire);
    if (seed != 0) return seed;
    std::uint64_t fresh = 0;
    if (::getrandom(&fresh, sizeof fresh, 0) != sizeof fresh)
        fresh = monotonic_us() * 0x9e3779b97f4a7c15ULL;
    fresh |= 1;
    // Whoever publishes first wins; everyone uses the published seed.
    if (table.hash_seed.compare_exchange_strong(seed, fresh)) return fresh;
    return seed;
}

RateDecision decide(RateLimitTable& table, std::uint64_t key_hash, const RateParams& params,
                    std::uint64_t now_us) {
    if (key_hash == 0) key_hash = 1;
    table.counters.decisions.fetch_add(1, std::memory_order_relaxed);
    // Every TAT the decision may write must fit in 48 bits (about 8.9 years of uptime).
    if (now_us > kLowMask || params.tau_us + params.interval_us > kLowMask - now_us)
        return fail_open(table, params);

    const std::uint64_t tag = tag_of(key_hash);
    RateSlot* buckets[2];
    bucket_pair(table, key_hash, buckets);
    int lost = 0;
    while (lost < kMaxRetries) {
        Scan scan;
        scan.run(buckets, key_hash, tag);
        if (scan.found) {
            std::uint64_t ahead = 0;
            SlotResult r =
                decide_in_slot(*scan.found, scan.found_word, key_hash, tag, params, now_us, ahead);
            if (r == SlotResult::Lost) {  // the slot changed hands under us
                ++lost;
                continue;
            }
            if (r == SlotResult::Denied)
                table.counters.denials.fetch_add(1, std::memory_order_relaxed);
            return make_decision(params, r == SlotResult::Allowed, ahead);
        }
        if (scan.pending_claim) {
            // Someone is between the two stores of a claim (nanoseconds), perhaps for this key:
            // claiming elsewhere could give the key a second slot. Look again.
            ::sched_yield();
            continue;
        }
        std::uint64_t chosen_word = 0;
        RateSlot* chosen = scan.choice(chosen_word);
        if (!chosen) break;  // cannot happen: full buckets have a smallest TAT

        // Claim: from the exact word seen, so any change since (a decision, another claim)
        // makes this fail and the scan starts over.
        std::uint64_t claim = make_word(kClaimTag, monotonic_us() & kLowMask);
        if (!chosen->word.compare_exchange_strong(chosen_word, claim)) {
            ++lost;
            continue;
        }
        chosen->key.store(key_hash, std::memory_order_relaxed);
        // A fresh bucket always allows its first request (tau >= T): publish the key with it.
        std::uint64_t new_tat = now_us + params.interval_us;
        if (!chosen->word.compare_exchange_strong(claim, make_word(tag, new_tat))) {
            ++lost;  // our claim was declared abandoned and taken over (a stall of > 1 s)
            continue;
        }
        bool owned = chosen_word != 0 && tag_bits(chosen_word) != kClaimTag;
        if (owned && low_bits(chosen_word) > now_us)
            table.counters.evictions.fetch_add(1, std::memory_order_relaxed);
        return make_decision(params, true, params.interval_us);
    }
    return fail_open(table, params);
}

std::uint64_t monotonic_us() {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000 +
           static_cast<std::uint64_t>(ts.tv_nsec) / 1000;
}

}  // namespace proxyd::shm
