// Rate-limit buckets shared by every worker of the host ([rate_limits.NAME] store = "local"): one
// fixed table of GCRA states, keyed by a 64-bit hash of (limit name, key), for all limits at once.
//
// GCRA (the generic cell rate algorithm, a token bucket written as one timestamp): interval
// T = 60e6 / requests_per_minute µs, tolerance tau = burst * T. A key's whole state is its TAT
// (theoretical arrival time). At `now`: tat = max(TAT, now); the request is allowed iff
// tat + T - now <= tau, and then TAT = tat + T. A key whose TAT <= now has a full bucket, which
// is exactly the state of a key never seen: forgetting such a key loses nothing.
//
// Layout: kSlots slots of 16 bytes (2 MiB in all, plus a cache line of seed and counters). The
// region is a zero-filled memfd, so untouched pages cost no memory. The slots form buckets of
// kWindow (16 slots, 4 cache lines); a key may live in either of two buckets picked by
// independent bits of its hash, and a new key goes to the less used one (two-choice hashing:
// buckets overflow only when the table is nearly full). Bounded: a decision looks at 32 slots at
// most. No deletion: idle keys are replaced in place (see below).
//
// Slot invariants (`word` is the only field that decides anything; every change is a CAS on it):
// - word == 0: empty, never used. A slot never becomes empty again, and a claim of an empty slot
//   always takes the first empty slot of its bucket: so a key is always before the first empty
//   slot of its bucket, and a lookup scans each of the two buckets only up to that point.
// - word == kClaimTag << 48 | t: being claimed since t (µs). Only the claimer (who CASed the word
//   from the value it read to this) writes `key`, then publishes the word. A claim older than
//   kClaimStaleUs is abandoned (its process died between two stores) and may be taken over.
// - word == tag << 48 | TAT with tag = tag_of(key) (1..0xfffe): owned by `key`, whose TAT is the
//   low 48 bits. `key` does not change while the word stays owned. A decision for K commits by a
//   CAS of the word it read (tag_of(K) | TAT) to (tag_of(K) | new TAT) after checking key == K:
//   if anyone claimed the slot meanwhile, the word changed and the CAS fails.
// - A claim replaces the word read by the claimer: a slot is claimed only by a CAS from the exact
//   value its chooser saw, so a decision racing with a takeover either commits first (the claim
//   fails and is retried) or fails (and finds or claims the key again).
// - Choice of slot for a new key K (not found): the first empty slot of the bucket with fewer
//   used slots (the first bucket on a tie); if both are full, the slot of the two with the
//   smallest TAT (an abandoned claim counts as 0; ties: first in scan order). This depends on the
//   buckets' contents, not on the caller's clock, and a claim is a CAS from the exact word seen, so
//   two processes claiming the same new key at once end on the same slot: one CAS wins; the other
//   fails, scans again, sees the claim in progress, waits for it (two stores long) and then finds
//   K. A key never has two slots (except that in overloaded buckets an eviction, which may lower a
//   slot's TAT, can let two concurrent claimers pick different slots: overload is lossy anyway).
//   Taking a slot whose TAT <= now forgets an idle key (lossless); taking one whose TAT > now
//   evicts a key that still had a partly used bucket (it starts afresh: lossy, counted in
//   `evictions`). Only overloaded buckets (2 * kWindow keys all active at once) ever evict.
// - Time: now_us is CLOCK_MONOTONIC in µs (monotonic_us()), the same clock in every process of
//   the machine. TATs are stored in 48 bits: 2^48 µs is about 8.9 years of uptime; beyond it (or
//   for a tau so large that now + tau does not fit) the table fails open (allows, counts
//   `fail_open`). Claim times are always the real clock, whatever now_us the caller passes.
// - Progress: no mutex, no global lock. A decision retries only when another process's CAS
//   succeeded; after kMaxRetries it fails open (counted). Waiting on someone else's fresh claim
//   is bounded by kClaimStaleUs (only a process killed between two stores makes anyone wait).
// - Exactness: all processes see the same TATs, so allowed requests per key are exact across
//   workers; the clock only matters through each caller's now_us (microseconds apart).
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

#include "common/shm/region.hpp"

namespace proxyd::shm {

struct alignas(16) RateSlot {
    std::atomic<std::uint64_t> key{0};   // hash of (limit name, key), never 0; see invariants
    std::atomic<std::uint64_t> word{0};  // tag (16 bits) | TAT or claim time (48 bits, µs)
};

struct alignas(64) RateCounters {
    std::atomic<std::uint64_t> decisions{0};
    std::atomic<std::uint64_t> denials{0};
    std::atomic<std::uint64_t> evictions{0};  // keys dropped before their bucket was full
    std::atomic<std::uint64_t> fail_open{0};  // allowed without a decision (contention, clock)
};

struct RateLimitTable {
    static constexpr std::uint32_t kMagic = 0x7072726c;  // "prrl"
    static constexpr std::uint32_t kVersion = 1;
    static constexpr std::size_t kSlots = 131072;  // power of two; 16 B each = 2 MiB
    static constexpr std::size_t kWindow = 16;     // slots per bucket: 4 cache lines
    LayoutHeader header;
    // Seed of rate_key_hash, set once by the first process that needs it (0 = not yet).
    std::atomic<std::uint64_t> hash_seed{0};
    RateCounters counters;
    alignas(64) RateSlot slots[kSlots];
};

using RateLimitRegion = Region<RateLimitTable>;

struct RateParams {
    std::uint64_t interval_us;  // T
    std::uint64_t tau_us;       // burst * T
    int burst;
};

// T = 60e6 / requests_per_minute µs (rounded, at least 1), tau = burst * T; burst < 1 counts as 1.
RateParams rate_params(int requests_per_minute, int burst);

struct RateDecision {
    bool allowed = false;
    int limit = 0;      // RateLimit-Limit: burst
    int remaining = 0;  // RateLimit-Remaining: requests that would be allowed now (0 on deny)
    std::int64_t reset_seconds = 0;        // RateLimit-Reset: until the bucket is full again
    std::int64_t retry_after_seconds = 0;  // Retry-After (deny only, >= 1)
};

// The decision's numbers from the outcome and ahead_us = TAT - now after it (the new TAT on
// allow, the unchanged one on deny). Shared by the local table and the Redis store.
RateDecision make_decision(const RateParams& params, bool allowed, std::uint64_t ahead_us);

// A 64-bit hash of (limit name, key), never 0. `seed` makes slot placement unpredictable from
// outside (see hash_seed()); every process of the host must use the same one.
std::uint64_t rate_key_hash(std::string_view limit_name, std::string_view key,
                            std::uint64_t seed = 0);
// The table's seed, chosen at random by the first caller and the same for every process after.
std::uint64_t hash_seed(RateLimitTable& table);

// One GCRA decision for key_hash (0 is mapped to 1) at now_us (monotonic_us()).
RateDecision decide(RateLimitTable& table, std::uint64_t key_hash, const RateParams& params,
                    std::uint64_t now_us);

// Microseconds of CLOCK_MONOTONIC: one clock for all processes of the machine.
std::uint64_t monotonic_us();

}  // namespace proxyd::shm
