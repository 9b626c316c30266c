#include "common/shm/rate_limit_table.hpp"

#include <doctest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

using namespace proxyd;
using shm::RateLimitTable;

namespace {

constexpr std::uint64_t kSecond = 1'000'000;
constexpr std::uint64_t kT0 = 1000 * kSecond;  // a fixed "now" far from 0

shm::RateLimitRegion make_region() {
    auto region = shm::RateLimitRegion::create("rl-test");
    REQUIRE(region.valid());
    return region;
}

constexpr std::uint64_t kBuckets = RateLimitTable::kSlots / RateLimitTable::kWindow;
constexpr std::uint64_t kCapacity = 2 * RateLimitTable::kWindow;  // slots a key may use

// Hashes that share both buckets (bits 0..12 pick the first, bits 20..32 the second) but differ
// in their tag (bits 48..63).
std::uint64_t same_buckets(std::uint64_t bucket, std::uint64_t n) {
    std::uint64_t second = (bucket + kBuckets / 2) % kBuckets;
    return (n + 1) << 48 | second << 20 | bucket;
}

int allowed_in_a_row(RateLimitTable& table, std::uint64_t key, const shm::RateParams& p,
                     std::uint64_t now, int tries) {
    int allowed = 0;
    for (int i = 0; i < tries; ++i) allowed += shm::decide(table, key, p, now).allowed ? 1 : 0;
    return allowed;
}

// Anonymous shared memory for results written by forked children.
template <typename T>
struct SharedArray {
    explicit SharedArray(std::size_t n) : n(n) {
        void* mem = ::mmap(nullptr, sizeof(T) * n, PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        REQUIRE(mem != MAP_FAILED);
        p = static_cast<T*>(mem);
    }
    ~SharedArray() { ::munmap(p, sizeof(T) * n); }
    T& operator[](std::size_t i) { return p[i]; }
    std::size_t n;
    T* p;
};

// Forks `n` children running fn(i) then _exit(0).
template <typename Fn>
std::vector<pid_t> fork_children(int n, Fn fn) {
    std::vector<pid_t> pids;
    for (int i = 0; i < n; ++i) {
        pid_t pid = ::fork();
        if (pid == 0) {
            fn(i);
            ::_exit(0);
        }
        REQUIRE(pid > 0);
        pids.push_back(pid);
    }
    return pids;
}

// True if every child exited 0.
bool wait_children(const std::vector<pid_t>& pids) {
    bool ok = true;
    for (pid_t pid : pids) {
        int status = 0;
        ok = ::waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
             ok;
    }
    return ok;
}

}  // namespace

TEST_CASE("rate params: T = 60e6 / rpm µs, tau = burst * T") {
    auto p = shm::rate_params(600, 20);
    CHECK(p.interval_us == 100'000);
    CHECK(p.tau_us == 2'000'000);
    CHECK(p.burst == 20);
    CHECK(shm::rate_params(60, 1).interval_us == kSecond);
    CHECK(shm::rate_params(7, 1).interval_us == 8'571'429);  // rounded
    CHECK(shm::rate_params(0, 0).burst == 1);                // nonsense is clamped
}

TEST_CASE("the region is a fresh zero-valid layout that attach() accepts") {
    auto region = make_region();
    CHECK(region->header.magic == RateLimitTable::kMagic);
    CHECK(region->counters.decisions.load() == 0);
    auto again = shm::RateLimitRegion::attach(UniqueFd(::dup(region.fd())));
    CHECK(again.valid());
}

TEST_CASE("a quiet key may make `burst` requests at once, then is denied") {
    auto region = make_region();
    auto p = shm::rate_params(60, 5);
    for (int i = 0; i < 5; ++i) {
        auto d = shm::decide(*region, 42, p, kT0);
        CHECK(d.allowed);
        CHECK(d.limit == 5);
        CHECK(d.remaining == 4 - i);
        CHECK(d.reset_seconds == i + 1);  // the bucket is full again after (i + 1) * T
        CHECK(d.retry_after_seconds == 0);
    }
    auto d = shm::decide(*region, 42, p, kT0);
    CHECK_FALSE(d.allowed);
    CHECK(d.limit == 5);
    CHECK(d.remaining == 0);
    CHECK(d.reset_seconds == 5);
    CHECK(d.retry_after_seconds == 1);
    CHECK(region->counters.decisions.load() == 6);
    CHECK(region->counters.denials.load() == 1);
    CHECK(region->counters.evictions.load() == 0);
}

TEST_CASE("refill: one more request every 60/rpm seconds, never more than burst") {
    auto region = make_region();
    auto p = shm::rate_params(600, 3);  // T = 100 ms
    CHECK(allowed_in_a_row(*region, 7, p, kT0, 10) == 3);
    CHECK_FALSE(shm::decide(*region, 7, p, kT0 + 99'999).allowed);
    CHECK(shm::decide(*region, 7, p, kT0 + 100'000).allowed);
    CHECK_FALSE(shm::decide(*region, 7, p, kT0 + 100'000).allowed);
    // 250 ms later: two more (at 200 and 300 ms the bucket would hold 1 and 2... at 350: 2).
    CHECK(allowed_in_a_row(*region, 7, p, kT0 + 350'000, 10) == 2);
    // After a long pause the bucket is full, but never more than burst.
    CHECK(allowed_in_a_row(*region, 7, p, kT0 + 100 * kSecond, 10) == 3);
}

TEST_CASE("remaining, reset and retry-after values") {
    auto region = make_region();
    auto p = shm::rate_params(60, 10);  // T = 1 s, tau = 10 s
    auto d = shm::decide(*region, 9, p, kT0);
    CHECK(d.allowed);
    CHECK(d.remaining == 9);
    CHECK(d.reset_seconds == 1);
    CHECK(allowed_in_a_row(*region, 9, p, kT0, 9) == 9);
    d = shm::decide(*region, 9, p, kT0);
    CHECK_FALSE(d.allowed);
    CHECK(d.reset_seconds == 10);
    CHECK(d.retry_after_seconds == 1);
    // 0.4 s later: still denied, retry after ceil(0.6) = 1 s; full in ceil(9.6) = 10 s.
    d = shm::decide(*region, 9, p, kT0 + 400'000);
    CHECK_FALSE(d.allowed);
    CHECK(d.retry_after_seconds == 1);
    CHECK(d.reset_seconds == 10);
    // 1 s later: one allowed, none remaining, full again in 10 s.
    d = shm::decide(*region, 9, p, kT0 + kSecond);
    CHECK(d.allowed);
    CHECK(d.remaining == 0);
    CHECK(d.reset_seconds == 10);
    // 5.5 s later: TAT is 11 s, 5.5 ahead -> remaining floor((10-5.5-1)/1) = 3 after this one.
    d = shm::decide(*region, 9, p, kT0 + 5'500'000);
    CHECK(d.allowed);
    CHECK(d.remaining == 3);
    CHECK(d.reset_seconds == 7);  // TAT 12 s - 5.5 s = 6.5 s

    // A long interval: retry-after counts whole seconds up.
    auto slow = shm::rate_params(1, 1);  // one per minute
    CHECK(shm::decide(*region, 10, slow, kT0).allowed);
    d = shm::decide(*region, 10, slow, kT0 + 15 * kSecond);
    CHECK_FALSE(d.allowed);
    CHECK(d.retry_after_seconds == 45);
    CHECK(d.reset_seconds == 45);
    d = shm::decide(*region, 10, slow, kT0 + 59'999'999);
    CHECK(d.retry_after_seconds == 1);  // at least 1
}

TEST_CASE("make_decision is the shared arithmetic of both stores") {
    auto p = shm::rate_params(600, 20);  // T = 0.1 s, tau = 2 s
    auto d = shm::make_decision(p, true, 100'000);
    CHECK(d.remaining == 19);
    CHECK(d.reset_seconds == 1);
    d = shm::make_decision(p, false, 2'000'000);
    CHECK(d.remaining == 0);
    CHECK(d.retry_after_seconds == 1);
    CHECK(d.reset_seconds == 2);
}

TEST_CASE("key hashes: never 0, depend on limit name, key and seed") {
    CHECK(shm::rate_key_hash("a", "b") != 0);
    CHECK(shm::rate_key_hash("a", "b") == shm::rate_key_hash("a", "b"));
    CHECK(shm::rate_key_hash("a", "b") != shm::rate_key_hash("ab", ""));
    CHECK(shm::rate_key_hash("a", "b") != shm::rate_key_hash("b", "a"));
    CHECK(shm::rate_key_hash("a", "b", 1) != shm::rate_key_hash("a", "b", 2));
    auto region = make_region();
    std::uint64_t seed = shm::hash_seed(*region);
    CHECK(seed != 0);
    CHECK(shm::hash_seed(*region) == seed);
    // Key 0 is mapped to 1: they share a bucket.
    auto p = shm::rate_params(60, 1);
    CHECK(shm::decide(*region, 0, p, kT0).allowed);
    CHECK_FALSE(shm::decide(*region, 1, p, kT0).allowed);
}

TEST_CASE("many keys have independent buckets") {
    auto region = make_region();
    auto p = shm::rate_params(60, 3);
    constexpr int kKeys = 50'000;
    int allowed = 0;
    for (int round = 0; round < 4; ++round)
        for (int k = 0; k < kKeys; ++k)
            allowed +=
                shm::decide(*region, shm::rate_key_hash("l", std::to_string(k)), p, kT0).allowed;
    CHECK(allowed == 3 * kKeys);
    CHECK(region->counters.evictions.load() == 0);
    CHECK(region->counters.fail_open.load() == 0);
}

TEST_CASE("a nearly full table: 90% of the slots active at once") {
    auto region = make_region();
    auto p = shm::rate_params(60, 1);
    const int keys = static_cast<int>(RateLimitTable::kSlots * 9 / 10);
    for (int k = 0; k < keys; ++k)
        shm::decide(*region, shm::rate_key_hash("full", std::to_string(k)), p, kT0);
    std::uint64_t evictions = region->counters.evictions.load();
    MESSAGE(keys << " active keys in " << RateLimitTable::kSlots << " slots: " << evictions
                 << " evictions");
    CHECK(evictions < static_cast<std::uint64_t>(keys) / 1000);
}

TEST_CASE("an idle key's slot is reused without loss") {
    auto region = make_region();
    auto p = shm::rate_params(60, 2);
    const std::uint64_t bucket = 1234;
    // Fill both buckets with keys whose buckets are empty at kT0.
    for (std::uint64_t n = 0; n < kCapacity; ++n)
        CHECK(allowed_in_a_row(*region, same_buckets(bucket, n), p, kT0, 3) == 2);
    // Once they are full again (2 s), a new key takes an idle slot (key 0's): no eviction.
    std::uint64_t later = kT0 + 2 * kSecond;
    std::uint64_t newcomer = same_buckets(bucket, 100);
    CHECK(allowed_in_a_row(*region, newcomer, p, later, 3) == 2);
    CHECK(region->counters.evictions.load() == 0);
    // The other keys still have their slots; key 0 was full anyway: forgetting it lost nothing.
    for (std::uint64_t n = 1; n < kCapacity; ++n)
        CHECK(allowed_in_a_row(*region, same_buckets(bucket, n), p, later, 3) == 2);
    CHECK_FALSE(shm::decide(*region, newcomer, p, later).allowed);
    CHECK(region->counters.evictions.load() == 0);
}

TEST_CASE("full buckets of active keys evict the one with the smallest TAT, counted") {
    auto region = make_region();
    auto p = shm::rate_params(60, 1);  // T = 1 s
    const std::uint64_t bucket = 777;
    // Key n is used at kT0 + n ms: key 0 has the smallest TAT.
    for (std::uint64_t n = 0; n < kCapacity; ++n)
        CHECK(shm::decide(*region, same_buckets(bucket, n), p, kT0 + n * 1000).allowed);
    std::uint64_t now = kT0 + 50'000;  // everyone's bucket is still empty
    for (std::uint64_t n = 0; n < kCapacity; ++n)
        CHECK_FALSE(shm::decide(*region, same_buckets(bucket, n), p, now).allowed);
    CHECK(region->counters.evictions.load() == 0);
    // One key too many: allowed (a fresh bucket), key 0 evicted.
    CHECK(shm::decide(*region, same_buckets(bucket, 99), p, now).allowed);
    CHECK(region->counters.evictions.load() == 1);
    CHECK_FALSE(shm::decide(*region, same_buckets(bucket, 99), p, now).allowed);
    // Key 0 forgot its state (the documented cost of overloaded buckets): it is allowed again,
    // evicting the next smallest TAT (key 1); the others keep theirs.
    CHECK(shm::decide(*region, same_buckets(bucket, 0), p, now).allowed);
    CHECK(region->counters.evictions.load() == 2);
    for (std::uint64_t n = 2; n < kCapacity; ++n)
        CHECK_FALSE(shm::decide(*region, same_buckets(bucket, n), p, now).allowed);
}

TEST_CASE("a key whose two bucket choices coincide uses the neighbouring bucket") {
    auto region = make_region();
    auto p = shm::rate_params(60, 1);
    const std::uint64_t bucket = kBuckets - 1;
    auto key = [&](std::uint64_t n) { return (n + 1) << 48 | bucket << 20 | bucket; };
    for (std::uint64_t n = 0; n < kCapacity; ++n)
        CHECK(shm::decide(*region, key(n), p, kT0).allowed);
    for (std::uint64_t n = 0; n < kCapacity; ++n)
        CHECK_FALSE(shm::decide(*region, key(n), p, kT0).allowed);
    CHECK(region->counters.evictions.load() == 0);
}

TEST_CASE("a clock beyond 48 bits or a huge tau fails open, counted") {
    auto region = make_region();
    auto p = shm::rate_params(60, 1);
    CHECK(shm::decide(*region, 5, p, std::uint64_t{1} << 48).allowed);
    CHECK(shm::decide(*region, 5, p, std::uint64_t{1} << 48).allowed);
    CHECK(region->counters.fail_open.load() == 2);
    CHECK(shm::monotonic_us() < (std::uint64_t{1} << 48));
}

TEST_CASE("exact across processes: 4 children hammer one key at a fixed now") {
    auto region = make_region();
    // Enough work per child (tens of ms) that the children really interleave.
    constexpr int kBurst = 100'000;
    constexpr int kTries = 60'000;
    auto p = shm::rate_params(60, kBurst);
    SharedArray<std::atomic<int>> go(1);
    SharedArray<int> allowed(4);
    auto pids = fork_children(4, [&](int i) {
        while (go[0].load() == 0) {
        }
        int n = 0;
        for (int k = 0; k < kTries; ++k) n += shm::decide(*region, 0xabcdef, p, kT0).allowed;
        allowed[i] = n;
    });
    go[0].store(1);
    REQUIRE(wait_children(pids));
    int total = allowed[0] + allowed[1] + allowed[2] + allowed[3];
    MESSAGE("allowed per child: " << allowed[0] << " " << allowed[1] << " " << allowed[2] << " "
                                  << allowed[3] << " = " << total << " (burst " << kBurst << ")");
    CHECK(total == kBurst);
    CHECK(region->counters.decisions.load() == 4 * kTries);
    CHECK(region->counters.denials.load() == 4 * kTries - kBurst);
    CHECK(region->counters.fail_open.load() == 0);
    CHECK(region->counters.evictions.load() == 0);
}

TEST_CASE("exact across processes: many new keys claimed concurrently get one bucket each") {
    auto region = make_region();
    auto p = shm::rate_params(60, 7);
    constexpr int kChildren = 4;
    constexpr int kKeys = 3000;
    SharedArray<std::atomic<int>> go(1);
    SharedArray<std::atomic<int>> per_key(kKeys);
    auto pids = fork_children(kChildren, [&](int i) {
        while (go[0].load() == 0) {
        }
        // Every child walks the keys in its own order and asks 10 times for each.
        for (int step = 0; step < kKeys; ++step) {
            int k = (i % 2 == 0) ? step : kKeys - 1 - step;
            std::uint64_t h = shm::rate_key_hash("claims", std::to_string(k));
            for (int r = 0; r < 10; ++r)
                if (shm::decide(*region, h, p, kT0).allowed) per_key[k].fetch_add(1);
        }
    });
    go[0].store(1);
    REQUIRE(wait_children(pids));
    int wrong = 0;
    for (int k = 0; k < kKeys; ++k) wrong += per_key[k].load() != 7;
    CHECK(wrong == 0);
    CHECK(region->counters.fail_open.load() == 0);
    CHECK(region->counters.evictions.load() == 0);
}

TEST_CASE("exact across threads, with time moving on") {
    auto region = make_region();
    auto p = shm::rate_params(6000, 50);  // T = 10 ms
    constexpr int kThreads = 8;
    std::atomic<int> go{0};
    std::atomic<int> allowed{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            while (go.load() == 0) {
            }
            // 1 s of simulated time in 100 µs steps; threads interleave their clocks.
            for (std::uint64_t step = 0; step < 10'000; ++step) {
                std::uint64_t now = kT0 + step * 100 + static_cast<std::uint64_t>(t);
                if (shm::decide(*region, 31337, p, now).allowed) allowed.fetch_add(1);
            }
        });
    }
    go.store(1);
    for (auto& th : threads) th.join();
    // burst + one per 10 ms after the first 10 ms of the ~1 s the clocks covered: 50 + 99. Each
    // allow moves TAT on by T and needs TAT <= now + tau, so at most 149; the last decisions at
    // the latest clock see at most one interval unused, so at least 148.
    MESSAGE("allowed over 1 s of simulated time: " << allowed.load() << " (expect 149)");
    CHECK(allowed.load() >= 148);
    CHECK(allowed.load() <= 149);
    CHECK(region->counters.fail_open.load() == 0);
}

TEST_CASE("exact across threads at a fixed now") {
    auto region = make_region();
    auto p = shm::rate_params(60, 777);
    std::atomic<int> go{0};
    std::atomic<int> allowed{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&] {
            while (go.load() == 0) {
            }
            for (int k = 0; k < 2000; ++k)
                if (shm::decide(*region, 99, p, kT0).allowed) allowed.fetch_add(1);
        });
    }
    go.store(1);
    for (auto& th : threads) th.join();
    CHECK(allowed.load() == 777);
}
