// The response cache shared by every worker: one memfd region of exactly max_size bytes, made by
// the master, inherited by forked workers and attachable from its fd by a new binary on upgrade.
// It maps a key (text, compared in full) to an opaque object (bytes the worker defines), its
// caller flags and times; least recently used objects are evicted to make room; per-key fill
// marks let one request fetch a missing object while the others wait (stampede lock).
//
// Layout (all inside max_size, offsets from the region's start, each 64-byte aligned):
//   CacheHeader | buckets: u32[bucket_count] | entries: CacheEntry[entry_count]
//   | links: u32[block_count] (next block of a chain) | blocks: char[block_count][kBlockSize]
// entry_count = max(16, max_size / kBytesPerEntry); bucket_count = the power of two >= it; the
// rest is blocks. Indices of entries and blocks are 1-based: 0 means "none", so a zero-filled
// region (what a fresh memfd is) holds valid empty buckets, and untouched pages cost no memory.
//
// Invariants (everything below the mutex is read and written only under it):
// - An entry in use is in exactly one bucket chain (by hash), and in the LRU list (head = most
//   recently used). It owns a chain of block_count blocks holding its key, then its object's
//   bytes (object_size of them, when state has kHasObject). state has kMarked while a fill mark
//   is set (it lasts until fill_until_ms). An entry in use has an object, a mark, or both.
// - A mark-only entry keeps just its key's blocks. Eviction (from the LRU tail) drops objects
//   whole; it removes an entry whose mark is still running only down to its key: someone is
//   filling it. Expired marks are cleared when met.
// - Free entries and free blocks form singly linked lists (through chain_next and links); past
//   them, entries_minted / blocks_minted count the ones ever handed out (a bump allocator over
//   the zero-filled tables). objects = entries with kHasObject, blocks_used = blocks in chains.
// - The mutex is process-shared and robust: a process that dies holding it (mid-update) leaves
//   EOWNERDEAD to the next locker, which resets the whole cache (counters survive) instead of
//   trusting half-written lists. A crashed worker costs the cache's contents, never a wedge.
// - Counters are atomics, written without the lock (hits...) or under it (stores...), read
//   without it.
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <type_traits>

#include "common/shm/region.hpp"
#include "common/util/unique_fd.hpp"

namespace proxyd::shm {

// CLOCK_MONOTONIC in milliseconds: the same clock in every process of the machine.
std::int64_t cache_now_ms();

struct CacheTimes {
    std::int64_t stored_ms = 0;        // when the response was received
    std::int64_t fresh_until_ms = 0;   // served as HIT before this
    std::int64_t usable_until_ms = 0;  // kept (stale windows) before this; dropped from then on
};

struct CacheFound {
    bool hit = false;         // an object was found and passed to the sink
    bool filling = false;     // someone holds the fill mark of this key (not expired)
    std::uint32_t flags = 0;  // the caller's flags stored with the object
    CacheTimes times;
};

struct CacheCounters {
    std::uint64_t hits = 0, misses = 0, stale = 0, bypass = 0;
    std::uint64_t stores = 0, evictions = 0, purges = 0;
};

struct CacheUsage {
    std::uint64_t entries = 0;     // objects stored
    std::uint64_t bytes_used = 0;  // blocks in use * kBlockSize (keys included)
    // max_size, the whole region (its data blocks hold a bit less: see block_capacity()).
    std::uint64_t capacity_bytes = 0;
};

enum class CacheResult { Hit, Miss, Stale, Bypass };

struct CacheEntry {
    std::uint64_t hash;
    std::int64_t stored_ms;
    std::int64_t fresh_until_ms;
    std::int64_t usable_until_ms;
    std::int64_t fill_until_ms;  // end of the fill mark (when state has kMarked)
    std::uint32_t chain_next;    // next entry of the bucket chain, or of the free list
    std::uint32_t lru_prev;      // towards the most recently used
    std::uint32_t lru_next;      // towards the least recently used
    std::uint32_t first_block;
    std::uint32_t block_count;
    std::uint32_t key_size;
    std::uint32_t object_size;
    std::uint32_t flags;
    std::uint32_t state;  // kHasObject | kMarked
    std::uint32_t reserved;
};

struct alignas(64) CacheCounterWords {
    std::atomic<std::uint64_t> hits{0}, misses{0}, stale{0}, bypass{0};
    std::atomic<std::uint64_t> stores{0}, evictions{0}, purges{0};
    std::atomic<std::uint64_t> objects{0}, blocks_used{0};
};

struct CacheHeader {
    static constexpr std::uint32_t kMagic = 0x70726368;  // "prch"
    static constexpr std::uint32_t kVersion = 1;
    static constexpr std::uint32_t kHasObject = 1;
    static constexpr std::uint32_t kMarked = 2;

    LayoutHeader header;
    std::uint32_t block_size;
    std::uint32_t bucket_count, entry_count, block_count;
    std::uint64_t region_size, max_object_size, hash_seed;
    std::uint64_t buckets_offset, entries_offset, links_offset, blocks_offset;
    pthread_mutex_t mutex;
    // Under the mutex:
    std::uint32_t lru_head, lru_tail;
    std::uint32_t free_entries, free_blocks;  // heads of the free lists
    std::uint32_t entries_minted, blocks_minted;
    std::uint32_t entries_in_use;  // objects and mark-only entries
    CacheCounterWords counters;
};

class CacheStore {
  public:
    static constexpr std::size_t kBlockSize = 1024;
    static constexpr std::size_t kBytesPerEntry = 2048;
    static constexpr std::size_t kMinEntries = 16;
    static constexpr std::size_t kMinBlocks = 16;
    // Longer keys are never cached: lookup finds nothing, try_begin_fill grants an unmarked
    // fill, store refuses.
    static constexpr std::size_t kMaxKeySize = 16 * 1024;

    // Master: a fresh region of exactly max_size bytes (tables included). Invalid if max_size is
    // too small for kMinBlocks blocks or the memfd cannot be made.
    // max_object_size bounds what the caller counts as the object's payload (a response body);
    // an object may exceed it by this much (the response head stored with it).
    static constexpr std::size_t kHeadAllowance = 64 * 1024;

    static CacheStore create(std::size_t max_size, std::size_t max_object_size);
    // A new binary on upgrade; invalid on a region of another layout.
    static CacheStore attach(UniqueFd fd);

    CacheStore() = default;
    CacheStore(CacheStore&& other) noexcept;
    CacheStore& operator=(CacheStore&& other) noexcept;
    CacheStore(const CacheStore&) = delete;
    CacheStore& operator=(const CacheStore&) = delete;
    ~CacheStore();

    bool valid() const { return header_ != nullptr; }
    int fd() const { return fd_.get(); }
    std::size_t max_size() const { return size_; }
    std::size_t max_object_size() const;
    std::size_t entry_capacity() const;  // entries of the table (objects and marks at once)
    std::size_t block_capacity() const;  // data blocks of kBlockSize

    // Copies the object out under the lock, passing its bytes to `sink(const char*, size_t)` in
    // one or more pieces, and marks it most recently used. The sink must not call the store
    // (the lock is held). An object at or past usable_until is dropped and not found. A key
    // with an unexpired fill mark reports filling = true, with or without an object.
    template <typename Sink>
    CacheFound lookup(std::string_view key, std::int64_t now_ms, Sink&& sink) {
        auto call = [](void* ctx, const char* data, std::size_t size) {
            (*static_cast<std::remove_reference_t<Sink>*>(ctx))(data, size);
        };
        return lookup_with(key, now_ms, call, as_context(sink));
    }

    // Stampede lock: true = the caller now holds the fill mark of `key` (there was none, or it
    // had expired; a mark lasts mark_ms); false = someone else is filling. Also true, without a
    // mark, when the store has no room for one: the caller then fills unguarded.
    bool try_begin_fill(std::string_view key, std::int64_t now_ms, std::int64_t mark_ms);
    // Drops the mark without storing (the response was not storable).
    void end_fill(std::string_view key);

    // Stores (or replaces) the object made of the concatenated `parts` and clears the key's fill
    // mark. Evicts least recently used objects until it fits. False (nothing stored, the mark
    // cleared) when the total exceeds max_object_size + kHeadAllowance or cannot fit even after
    // evicting.
    bool store(std::string_view key, std::uint32_t flags, const CacheTimes& times,
               std::span<const std::string_view> parts);

    // Removes every object whose key satisfies pred(std::string_view); returns how many. The
    // predicate runs under the lock and must not call the store. Fill marks stay.
    template <typename Pred>
    std::size_t purge(Pred&& pred) {
        auto call = [](void* ctx, std::string_view key) -> bool {
            return (*static_cast<std::remove_reference_t<Pred>*>(ctx))(key);
        };
        return purge_with(call, as_context(pred));
    }
    // Removes every object (counted as purges); returns how many.
    std::size_t clear();

    // Lock-free: hits, misses, stale, bypass.
    void count(CacheResult result);
    CacheCounters counters() const;
    CacheUsage usage() const;
    // Adds the old store's counters to this one's: the master recreates the store when a reload
    // changes max_size, and counters must survive reloads.
    void adopt_counters(const CacheStore& old);

  private:
    using SinkFn = void (*)(void* ctx, const char* data, std::size_t size);
    using PredFn = bool (*)(void* ctx, std::string_view key);

    template <typename T>
    static void* as_context(T& object) {
        return const_cast<void*>(static_cast<const void*>(std::addressof(object)));
    }

    CacheFound lookup_with(std::string_view key, std::int64_t now_ms, SinkFn sink, void* ctx);
    std::size_t purge_with(PredFn pred, void* ctx);
    void unmap();

    UniqueFd fd_;
    CacheHeader* header_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace proxyd::shm
