#include "common/shm/cache_store.hpp"

#include <doctest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

using namespace proxyd;
using shm::CacheStore;
using shm::CacheTimes;

namespace {

constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = 1024 * 1024;
constexpr std::int64_t kNow = 1'000'000;  // a fixed "now" far from 0
constexpr std::int64_t kMarkMs = 5000;

CacheStore make_store(std::size_t max_size = kMiB, std::size_t max_object_size = 512 * kKiB) {
    CacheStore store = CacheStore::create(max_size, max_object_size);
    REQUIRE(store.valid());
    return store;
}

CacheTimes times_at(std::int64_t now, std::int64_t fresh_ms = 60'000,
                    std::int64_t usable_ms = 120'000) {
    return {now, now + fresh_ms, now + usable_ms};
}

// Bytes that differ by position and seed, so misplaced blocks show.
// "k" + std::to_string(i) trips GCC 12's -Wrestrict at -O3 (a false positive): appended instead.
std::string numbered(const char* prefix, std::size_t i) {
    std::string s(prefix);
    s += std::to_string(i);
    return s;
}

std::string pattern(std::size_t size, std::uint32_t seed) {
    std::string s(size, '\0');
    std::uint32_t x = seed * 2654435761u + 1;
    for (std::size_t i = 0; i < size; ++i) {
        x = x * 1664525u + 1013904223u;
        s[i] = static_cast<char>(x >> 24);
    }
    return s;
}

bool put(CacheStore& store, std::string_view key, std::string_view body,
         const CacheTimes& times = times_at(kNow), std::uint32_t flags = 0) {
    std::string_view parts[] = {body};
    return store.store(key, flags, times, parts);
}

struct Got {
    shm::CacheFound found;
    std::string body;
    int pieces = 0;
};

Got get(CacheStore& store, std::string_view key, std::int64_t now = kNow) {
    Got got;
    got.found = store.lookup(key, now, [&](const char* data, std::size_t size) {
        got.body.append(data, size);
        ++got.pieces;
    });
    return got;
}

bool has(CacheStore& store, std::string_view key, std::int64_t now = kNow) {
    return get(store, key, now).found.hit;
}

int wait_child(pid_t pid) {
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    return status;
}

}  // namespace

TEST_CASE("cache store: create sizes its tables inside max_size") {
    CacheStore store = make_store();
    CHECK(store.max_size() == kMiB);
    CHECK(store.max_object_size() == 512 * kKiB);
    CHECK(store.entry_capacity() == kMiB / CacheStore::kBytesPerEntry);
    CHECK(store.block_capacity() * CacheStore::kBlockSize < kMiB);
    CHECK(store.block_capacity() * CacheStore::kBlockSize > kMiB * 9 / 10);
    CHECK(store.usage().capacity_bytes == kMiB);
    CHECK(store.usage().entries == 0);
    CHECK(store.usage().bytes_used == 0);
    CHECK_FALSE(CacheStore::create(8 * kKiB, kKiB).valid());
    CHECK(CacheStore::create(64 * kKiB, kKiB).valid());
}

TEST_CASE("cache store: a multi-block object stored in pieces reads back whole") {
    CacheStore store = make_store();
    std::string body = pattern(300 * kKiB, 1);
    std::vector<std::string_view> parts;
    std::string_view rest = body;
    for (std::size_t size : {0, 1, 1023, 1024, 1025, 4096, 77777}) {
        parts.push_back(rest.substr(0, size));
        rest.remove_prefix(size);
    }
    parts.push_back(rest);
    CacheTimes times = times_at(kNow);
    REQUIRE(store.store("GET example.com/big", 7, times, parts));

    Got got = get(store, "GET example.com/big");
    CHECK(got.found.hit);
    CHECK_FALSE(got.found.filling);
    CHECK(got.found.flags == 7);
    CHECK(got.found.times.stored_ms == times.stored_ms);
    CHECK(got.found.times.fresh_until_ms == times.fresh_until_ms);
    CHECK(got.found.times.usable_until_ms == times.usable_until_ms);
    CHECK(got.body == body);
    CHECK(got.pieces >= 1);
    CHECK(store.usage().entries == 1);
    std::size_t blocks = (body.size() + 19 + CacheStore::kBlockSize - 1) / CacheStore::kBlockSize;
    CHECK(store.usage().bytes_used == blocks * CacheStore::kBlockSize);
    CHECK(store.counters().stores == 1);

    CHECK_FALSE(get(store, "GET example.com/big2").found.hit);
    CHECK_FALSE(get(store, "GET example.com/bi").found.hit);
}

TEST_CASE("cache store: long keys and empty objects") {
    CacheStore store = make_store();
    std::string key_a = "GET example.com/" + std::string(3000, 'a');
    std::string key_b = key_a;
    key_b.back() = 'b';
    REQUIRE(put(store, key_a, "A"));
    REQUIRE(put(store, key_b, ""));
    CHECK(get(store, key_a).body == "A");
    Got b = get(store, key_b);
    CHECK(b.found.hit);
    CHECK(b.body.empty());
    CHECK(b.pieces == 0);
    std::string too_long(CacheStore::kMaxKeySize + 1, 'k');
    CHECK_FALSE(put(store, too_long, "x"));
    CHECK_FALSE(has(store, too_long));
    CHECK(store.try_begin_fill(too_long, kNow, kMarkMs));  // unguarded fill
}

TEST_CASE("cache store: store replaces an object") {
    CacheStore store = make_store();
    REQUIRE(put(store, "k", pattern(10 * kKiB, 1), times_at(kNow), 1));
    REQUIRE(put(store, "k", "short", times_at(kNow + 5), 2));
    Got got = get(store, "k");
    CHECK(got.body == "short");
    CHECK(got.found.flags == 2);
    CHECK(got.found.times.stored_ms == kNow + 5);
    CHECK(store.usage().entries == 1);
    CHECK(store.usage().bytes_used == CacheStore::kBlockSize);
    CHECK(store.counters().evictions == 0);
}

TEST_CASE("cache store: an object is dropped from usable_until on") {
    CacheStore store = make_store();
    REQUIRE(put(store, "k", "body", {kNow, kNow + 10, kNow + 20}));
    Got stale = get(store, "k", kNow + 15);
    CHECK(stale.found.hit);  // past fresh_until, still usable: the caller decides
    CHECK(stale.found.times.fresh_until_ms == kNow + 10);
    CHECK(has(store, "k", kNow + 19));
    CHECK_FALSE(has(store, "k", kNow + 20));
    CHECK(store.usage().entries == 0);
    CHECK(store.usage().bytes_used == 0);
    CHECK_FALSE(has(store, "k", kNow));  // gone, not merely hidden
}

TEST_CASE("cache store: least recently used objects are evicted first") {
    CacheStore store = make_store(256 * kKiB);
    // Objects of 4 blocks: the blocks run out before the entries.
    const std::size_t body_size = 4 * CacheStore::kBlockSize - 8;
    const std::size_t fit = store.block_capacity() / 4;
    REQUIRE(fit < store.entry_capacity());
    auto key = [](std::size_t i) { return numbered("k", 1000 + i); };
    for (std::size_t i = 0; i < fit; ++i) REQUIRE(put(store, key(i), pattern(body_size, i)));
    CHECK(store.usage().entries == fit);
    CHECK(store.counters().evictions == 0);

    CHECK(has(store, key(0)));  // touched: now the most recently used
    REQUIRE(put(store, "new1", pattern(body_size, 99)));
    CHECK(store.counters().evictions == 1);
    CHECK(has(store, key(0)));
    CHECK_FALSE(has(store, key(1)));  // the least recently used went
    REQUIRE(put(store, "new2", pattern(body_size, 98)));
    CHECK_FALSE(has(store, key(2)));
    CHECK(has(store, key(3)));
    CHECK(get(store, key(0)).body == pattern(body_size, 0));
    CHECK(get(store, "new1").body == pattern(body_size, 99));

    // A big object evicts as many as it needs, oldest first.
    REQUIRE(put(store, "big", pattern(40 * CacheStore::kBlockSize, 5)));
    CHECK(store.usage().bytes_used <= store.usage().capacity_bytes);
    CHECK_FALSE(has(store, key(4)));
    CHECK(has(store, "new2"));
    CHECK(get(store, "big").body == pattern(40 * CacheStore::kBlockSize, 5));
}

TEST_CASE("cache store: entries run out before blocks: evicts for an entry") {
    CacheStore store = make_store(256 * kKiB);
    const std::size_t n = store.entry_capacity();
    REQUIRE(n < store.block_capacity());
    for (std::size_t i = 0; i < n + 10; ++i) REQUIRE(put(store, numbered("e", i), "x"));
    CHECK(store.usage().entries == n);
    CHECK(store.counters().evictions == 10);
    CHECK_FALSE(has(store, "e9"));
    CHECK(has(store, "e10"));
}

TEST_CASE("cache store: random stores never exceed the capacity and never corrupt") {
    CacheStore store = make_store(kMiB, 200 * kKiB - CacheStore::kHeadAllowance);
    const auto capacity = store.block_capacity() * CacheStore::kBlockSize;
    std::mt19937 rng(12345);
    std::uniform_int_distribution<std::size_t> small(0, 6000);
    std::uniform_int_distribution<std::size_t> large(0, 210 * kKiB);
    std::uniform_int_distribution<int> key_pick(0, 399);
    std::vector<std::uint32_t> version(400, 0);  // what each key last held (its pattern seed)
    std::vector<std::size_t> size_of(400, 0);
    std::string body;
    for (std::uint32_t n = 1; n <= 5000; ++n) {
        int k = key_pick(rng);
        std::size_t size = n % 10 == 0 ? large(rng) : small(rng);
        body = pattern(size, n);
        std::string key = numbered("GET h/", k);
        bool stored = put(store, key, body);
        CHECK(stored == (size <= 200 * kKiB));
        if (stored) {
            version[k] = n;
            size_of[k] = size;
        }
        REQUIRE(store.usage().bytes_used <= capacity);
        REQUIRE(store.usage().entries <= store.entry_capacity());
        if (n % 97 == 0) {
            // Whatever is still there holds the bytes last stored under its key.
            std::size_t found = 0;
            for (int j = 0; j < 400; ++j) {
                Got got = get(store, numbered("GET h/", j));
                if (!got.found.hit) continue;
                ++found;
                REQUIRE(version[j] != 0);
                REQUIRE(got.body == pattern(size_of[j], version[j]));
            }
            CHECK(found == store.usage().entries);
        }
    }
    CHECK(store.counters().evictions > 0);
}

TEST_CASE("cache store: objects above max_object_size (plus the head allowance) are refused") {
    CacheStore store = make_store(kMiB, 10 * kKiB);
    const std::size_t limit = 10 * kKiB + CacheStore::kHeadAllowance;
    CHECK(put(store, "exact", std::string(limit, 'x')));
    CHECK_FALSE(put(store, "over", std::string(limit + 1, 'x')));
    CHECK_FALSE(has(store, "over"));
    // A refused replacement keeps the old object (still usable as stale) and drops the mark.
    REQUIRE(store.try_begin_fill("exact", kNow, kMarkMs));
    CHECK_FALSE(put(store, "exact", std::string(limit + 1, 'y')));
    Got got = get(store, "exact");
    CHECK(got.found.hit);
    CHECK_FALSE(got.found.filling);
    CHECK(got.body == std::string(limit, 'x'));
    // Larger than the whole store: refused even with a large max_object_size.
    CacheStore small = make_store(64 * kKiB, kMiB);
    CHECK_FALSE(put(small, "huge", std::string(100 * kKiB, 'h')));
    CHECK(small.usage().bytes_used == 0);
}

TEST_CASE("cache store: fill marks") {
    CacheStore store = make_store();
    SUBCASE("one filler at a time, the others see filling") {
        CHECK(store.try_begin_fill("k", kNow, kMarkMs));
        CHECK_FALSE(store.try_begin_fill("k", kNow + 1, kMarkMs));
        Got got = get(store, "k", kNow + 2);
        CHECK_FALSE(got.found.hit);
        CHECK(got.found.filling);
        CHECK(store.usage().entries == 0);  // a mark is not an object
        CHECK(store.try_begin_fill("other", kNow, kMarkMs));
    }
    SUBCASE("a mark expires after mark_ms") {
        CHECK(store.try_begin_fill("k", kNow, kMarkMs));
        CHECK_FALSE(store.try_begin_fill("k", kNow + kMarkMs - 1, kMarkMs));
        CHECK_FALSE(get(store, "k", kNow + kMarkMs).found.filling);
        CHECK(store.try_begin_fill("k", kNow + kMarkMs, kMarkMs));
    }
    SUBCASE("end_fill drops the mark") {
        CHECK(store.try_begin_fill("k", kNow, kMarkMs));
        store.end_fill("k");
        CHECK_FALSE(get(store, "k").found.filling);
        CHECK(store.usage().bytes_used == 0);
        CHECK(store.try_begin_fill("k", kNow, kMarkMs));
    }
    SUBCASE("store clears the mark") {
        CHECK(store.try_begin_fill("k", kNow, kMarkMs));
        REQUIRE(put(store, "k", "filled"));
        Got got = get(store, "k");
        CHECK(got.found.hit);
        CHECK_FALSE(got.found.filling);
        CHECK(got.body == "filled");
        CHECK(store.try_begin_fill("k", kNow, kMarkMs));
    }
    SUBCASE("a mark on an existing object (revalidation)") {
        REQUIRE(put(store, "k", "old"));
        CHECK(store.try_begin_fill("k", kNow, kMarkMs));
        Got got = get(store, "k");
        CHECK(got.found.hit);
        CHECK(got.found.filling);
        CHECK(got.body == "old");
        store.end_fill("k");  // not storable: the old object stays
        got = get(store, "k");
        CHECK(got.found.hit);
        CHECK_FALSE(got.found.filling);
    }
}

TEST_CASE("cache store: eviction keeps running fill marks") {
    CacheStore store = make_store(64 * kKiB);
    REQUIRE(store.try_begin_fill("marked", kNow, kMarkMs));
    REQUIRE(put(store, "both", "data"));
    REQUIRE(store.try_begin_fill("both", kNow, kMarkMs));
    // Fill the store many times over: every object goes, the running marks stay.
    for (std::size_t i = 0; i < 200; ++i) REQUIRE(put(store, numbered("f", i), pattern(3000, i)));
    CHECK_FALSE(store.try_begin_fill("marked", kNow, kMarkMs));
    Got both = get(store, "both");
    CHECK_FALSE(both.found.hit);  // lost its data
    CHECK(both.found.filling);    // kept its mark
    // Once expired (measured by stored_ms), marks give way too.
    CacheTimes later = times_at(kNow + kMarkMs);
    for (int i = 0; i < 200; ++i) REQUIRE(put(store, numbered("g", i), pattern(3000, i), later));
    CHECK(store.try_begin_fill("marked", kNow, kMarkMs));  // a new mark: the old one was dropped
}

TEST_CASE("cache store: purge by predicate and clear") {
    CacheStore store = make_store();
    std::string long_key = "GET a.com/" + std::string(2500, 'p');
    for (std::string_view key : {"GET a.com/x/1", "GET a.com/x/2", "GET a.com/y", "GET b.com/x/1"})
        REQUIRE(put(store, key, "v"));
    REQUIRE(put(store, long_key, "v"));
    REQUIRE(store.try_begin_fill("GET a.com/x/3", kNow, kMarkMs));  // a mark, no object

    std::vector<std::string> seen;
    std::size_t purged = store.purge([&](std::string_view key) {
        seen.emplace_back(key);
        return key.starts_with("GET a.com/x/");
    });
    CHECK(purged == 2);
    CHECK(seen.size() == 5);  // objects only
    CHECK(std::find(seen.begin(), seen.end(), long_key) != seen.end());
    CHECK_FALSE(has(store, "GET a.com/x/1"));
    CHECK_FALSE(has(store, "GET a.com/x/2"));
    CHECK(has(store, "GET a.com/y"));
    CHECK(has(store, "GET b.com/x/1"));
    CHECK_FALSE(store.try_begin_fill("GET a.com/x/3", kNow, kMarkMs));  // marks stay
    CHECK(store.counters().purges == 2);
    CHECK(store.usage().entries == 3);

    CHECK(store.purge([&](std::string_view key) { return key == long_key; }) == 1);
    CHECK(store.clear() == 2);
    CHECK(store.usage().entries == 0);
    CHECK(store.counters().purges == 5);
}

TEST_CASE("cache store: counters and adopt_counters") {
    CacheStore store = make_store();
    store.count(shm::CacheResult::Hit);
    store.count(shm::CacheResult::Hit);
    store.count(shm::CacheResult::Miss);
    store.count(shm::CacheResult::Stale);
    store.count(shm::CacheResult::Bypass);
    REQUIRE(put(store, "k", "v"));
    auto c = store.counters();
    CHECK(c.hits == 2);
    CHECK(c.misses == 1);
    CHECK(c.stale == 1);
    CHECK(c.bypass == 1);
    CHECK(c.stores == 1);

    CacheStore bigger = make_store(2 * kMiB);
    bigger.count(shm::CacheResult::Hit);
    bigger.adopt_counters(store);
    auto b = bigger.counters();
    CHECK(b.hits == 3);
    CHECK(b.misses == 1);
    CHECK(b.stale == 1);
    CHECK(b.bypass == 1);
    CHECK(b.stores == 1);
    CHECK(bigger.usage().entries == 0);  // objects are not carried over
}

TEST_CASE("cache store: attach to the fd, refuse another layout") {
    CacheStore store = make_store();
    REQUIRE(put(store, "k", "shared"));
    CacheStore attached = CacheStore::attach(UniqueFd(::dup(store.fd())));
    REQUIRE(attached.valid());
    CHECK(attached.max_size() == store.max_size());
    CHECK(attached.max_object_size() == store.max_object_size());
    CHECK(get(attached, "k").body == "shared");
    REQUIRE(put(attached, "k2", "back"));
    CHECK(get(store, "k2").body == "back");

    UniqueFd other(::memfd_create("not-a-cache", MFD_CLOEXEC));
    REQUIRE(::ftruncate(other.get(), kMiB) == 0);
    CHECK_FALSE(CacheStore::attach(std::move(other)).valid());
    CHECK_FALSE(CacheStore::attach(UniqueFd()).valid());

    CacheStore moved = std::move(store);
    CHECK_FALSE(store.valid());
    CHECK(has(moved, "k"));
}

TEST_CASE("cache store: shared across processes") {
    CacheStore store = make_store();
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        bool ok = put(store, "GET x/from-child", "child body") &&
                  store.try_begin_fill("GET x/filling", kNow, kMarkMs);
        store.count(shm::CacheResult::Hit);
        ::_exit(ok ? 0 : 1);
    }
    int status = wait_child(pid);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
    CHECK(get(store, "GET x/from-child").body == "child body");
    CHECK_FALSE(store.try_begin_fill("GET x/filling", kNow, kMarkMs));
    CHECK(store.counters().hits == 1);
}

TEST_CASE("cache store: a process dying with the lock leaves a working store") {
    CacheStore store = make_store();
    REQUIRE(put(store, "before", "v"));
    store.count(shm::CacheResult::Miss);
    for (int signal_death = 0; signal_death < 2; ++signal_death) {
        pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            // The sink runs under the lock: die there, mid-lookup.
            get(store, "before");
            store.lookup("before", kNow, [&](const char*, std::size_t) {
                if (signal_death) ::raise(SIGKILL);
                ::_exit(0);
            });
            ::_exit(3);
        }
        wait_child(pid);
        // The next caller recovers the lock and starts afresh; the counters survive.
        CHECK_FALSE(has(store, "before"));
        CHECK(store.usage().entries == 0);
        CHECK(store.usage().bytes_used == 0);
        CHECK(store.counters().misses == 1);
        REQUIRE(put(store, "before", "v"));
        CHECK(has(store, "before"));
    }
}
