// The shared response cache; the layout and its invariants are described in cache_store.hpp.
#include "common/shm/cache_store.hpp"

#include <errno.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <new>
#include <string>

namespace proxyd::shm {

namespace {

constexpr std::uint32_t kNone = 0;
constexpr std::uint32_t kHasObject = CacheHeader::kHasObject;
constexpr std::uint32_t kMarked = CacheHeader::kMarked;
constexpr std::size_t kBlockSize = CacheStore::kBlockSize;
constexpr std::size_t kAlign = 64;
// Entry and block indices are u32 with 0 reserved: stay well below.
constexpr std::size_t kMaxIndex = std::size_t{1} << 31;

static_assert(std::atomic<std::uint64_t>::is_always_lock_free,
              "shared-memory atomics must be lock-free (address-free)");
static_assert(sizeof(CacheEntry) == 80);

std::size_t align_up(std::size_t value) {
    return (value + kAlign - 1) / kAlign * kAlign;
}

std::size_t blocks_for(std::size_t bytes) {
    return (bytes + kBlockSize - 1) / kBlockSize;
}

// Where the tables of a region of `size` bytes go; the same function checks attach().
struct Geometry {
    bool ok = false;
    std::size_t bucket_count = 0, entry_count = 0, block_count = 0;
    std::size_t buckets_offset = 0, entries_offset = 0, links_offset = 0, blocks_offset = 0;
};

Geometry geometry_for(std::size_t size) {
    Geometry g;
    g.entry_count =
        std::clamp(size / CacheStore::kBytesPerEntry, CacheStore::kMinEntries, kMaxIndex);
    g.bucket_count = std::bit_ceil(g.entry_count);
    g.buckets_offset = align_up(sizeof(CacheHeader));
    g.entries_offset = align_up(g.buckets_offset + g.bucket_count * sizeof(std::uint32_t));
    g.links_offset = align_up(g.entries_offset + g.entry_count * sizeof(CacheEntry));
    if (g.links_offset + kAlign >= size) return g;
    // Each block costs its bytes and its link; keep kAlign for aligning the blocks.
    std::size_t room = size - g.links_offset - kAlign;
    g.block_count = std::min(room / (kBlockSize + sizeof(std::uint32_t)), kMaxIndex);
    g.blocks_offset = align_up(g.links_offset + g.block_count * sizeof(std::uint32_t));
    g.ok = g.block_count >= CacheStore::kMinBlocks &&
           g.blocks_offset + g.block_count * kBlockSize <= size;
    return g;
}

bool matches(const CacheHeader& h, const Geometry& g) {
    return g.ok && h.block_size == kBlockSize && h.bucket_count == g.bucket_count &&
           h.entry_count == g.entry_count && h.block_count == g.block_count &&
           h.buckets_offset == g.buckets_offset && h.entries_offset == g.entries_offset &&
           h.links_offset == g.links_offset && h.blocks_offset == g.blocks_offset;
}

// FNV-1a over the key from a per-region random seed (so bucket chains cannot be aimed at from
// outside), then the murmur3 finalizer for avalanche.
std::uint64_t key_hash(std::uint64_t seed, std::string_view key) {
    std::uint64_t h = 0xcbf29ce484222325ULL ^ seed;
    for (char c : key) {
        h ^= static_cast<unsigned char>(c);
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

std::uint64_t random_seed() {
    std::uint64_t seed = 0;
    if (::getrandom(&seed, sizeof seed, 0) != sizeof seed)
        seed = static_cast<std::uint64_t>(cache_now_ms()) * 0x9e3779b97f4a7c15ULL;
    return seed;
}

bool init_mutex(pthread_mutex_t& mutex) {
    pthread_mutexattr_t attr;
    if (::pthread_mutexattr_init(&attr) != 0) return false;
    bool ok = ::pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED) == 0 &&
              ::pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST) == 0 &&
              ::pthread_mutex_init(&mutex, &attr) == 0;
    ::pthread_mutexattr_destroy(&attr);
    return ok;
}

// The tables of a locked region, and every operation on them (callers hold the mutex).
class Index {
  public:
    explicit Index(CacheHeader& h) : h_(h), base_(reinterpret_cast<char*>(&h)) {}

    CacheEntry& entry(std::uint32_t i) { return entries()[i - 1]; }

    // Forgets everything but the counters: the tables' contents become garbage nobody reads.
    void reset() {
        h_.lru_head = h_.lru_tail = kNone;
        h_.free_entries = h_.free_blocks = kNone;
        h_.entries_minted = h_.blocks_minted = 0;
        h_.entries_in_use = 0;
        h_.counters.objects.store(0, std::memory_order_relaxed);
        h_.counters.blocks_used.store(0, std::memory_order_relaxed);
        std::memset(buckets(), 0, h_.bucket_count * sizeof(std::uint32_t));
    }

    std::uint32_t find(std::uint64_t hash, std::string_view key) {
        for (std::uint32_t i = bucket(hash); i != kNone; i = entry(i).chain_next)
            if (key_equals(entry(i), hash, key)) return i;
        return kNone;
    }

    // Frees LRU-tail objects (and entries with expired marks) until `blocks` blocks and, if
    // asked, an entry are free. Entries whose mark runs past now_ms keep their key: someone is
    // filling them. False if that was not enough.
    bool make_room(std::size_t blocks, bool need_entry, std::int64_t now_ms) {
        auto enough = [&] {
            return free_block_count() >= blocks &&
                   (!need_entry || h_.entries_in_use < h_.entry_count);
        };
        std::uint32_t i = h_.lru_tail;
        while (!enough() && i != kNone) {
            std::uint32_t prev = entry(i).lru_prev;
            bool running = mark_running(entry(i), now_ms);
            if (entry(i).state & kHasObject) {
                h_.counters.evictions.fetch_add(1, std::memory_order_relaxed);
                drop_object(i, running);
            } else if (!running) {
                remove(i);
            }
            i = prev;
        }
        return enough();
    }

    // A new entry holding `key` followed by `parts`, in its bucket and at the LRU head, with
    // state 0 (the caller sets it). Needs make_room(blocks, true) first.
    std::uint32_t insert(std::uint64_t hash, std::string_view key,
                         std::span<const std::string_view> parts, std::size_t blocks) {
        std::uint32_t i = pop_entry();
        CacheEntry& e = entry(i);
        e = CacheEntry{};
        e.hash = hash;
        e.key_size = static_cast<std::uint32_t>(key.size());
        e.block_count = static_cast<std::uint32_t>(blocks);
        e.first_block = alloc_chain(e.block_count);
        ChainWriter writer{*this, e.first_block, 0};
        writer.put(key);
        for (std::string_view part : parts) writer.put(part);
        std::uint32_t& head = bucket(hash);
        e.chain_next = head;
        head = i;
        link_front(i);
        return i;
    }

    // Unlinks entry i from everything and frees it with its blocks.
    void remove(std::uint32_t i) {
        CacheEntry& e = entry(i);
        if (e.state & kHasObject) h_.counters.objects.fetch_sub(1, std::memory_order_relaxed);
        std::uint32_t* link = &bucket(e.hash);
        while (*link != kNone && *link != i) link = &entry(*link).chain_next;
        if (*link == i) *link = e.chain_next;
        unlink_lru(i);
        free_chain(e.first_block, e.block_count);
        e.state = 0;
        e.chain_next = h_.free_entries;
        h_.free_entries = i;
        --h_.entries_in_use;
    }

    // Drops entry i's object; with keep_mark, the entry stays (down to its key) for its mark.
    void drop_object(std::uint32_t i, bool keep_mark) {
        if (!keep_mark) return remove(i);
        CacheEntry& e = entry(i);
        h_.counters.objects.fetch_sub(1, std::memory_order_relaxed);
        truncate(e, blocks_for(e.key_size));
        e.state &= ~kHasObject;
        e.object_size = 0;
    }

    void touch(std::uint32_t i) {
        if (h_.lru_head == i) return;
        unlink_lru(i);
        link_front(i);
    }

    // Calls fn(const char*, size_t) -> bool (false stops) on the bytes [skip, skip + length)
    // of a chain, one piece per run of consecutive blocks.
    template <typename Fn>
    void for_each_piece(std::uint32_t b, std::size_t skip, std::size_t length, Fn&& fn) {
        if (length == 0) return;
        for (; skip >= kBlockSize; skip -= kBlockSize) b = next(b);
        while (length > 0) {
            const char* start = block(b) + skip;
            std::size_t size = std::min(length, kBlockSize - skip);
            while (size < length && next(b) == b + 1) {
                ++b;
                size += std::min(length - size, kBlockSize);
            }
            if (!fn(start, size)) return;
            length -= size;
            b = next(b);
            skip = 0;
        }
    }

    // The key of entry e: a view into the blocks when they are consecutive, else a copy.
    std::string_view key_of(const CacheEntry& e, std::string& scratch) {
        std::string_view key;
        bool copied = false;
        for_each_piece(e.first_block, 0, e.key_size, [&](const char* p, std::size_t n) {
            if (key.empty() && !copied) {
                key = {p, n};
                return true;
            }
            if (!copied) scratch.assign(key);
            copied = true;
            scratch.append(p, n);
            return true;
        });
        return copied ? std::string_view(scratch) : key;
    }

    std::uint32_t lru_head() const { return h_.lru_head; }

    static bool mark_running(const CacheEntry& e, std::int64_t now_ms) {
        return (e.state & kMarked) && e.fill_until_ms > now_ms;
    }

  private:
    struct ChainWriter {
        Index& index;
        std::uint32_t b;
        std::size_t offset;
        void put(std::string_view bytes) {
            while (!bytes.empty()) {
                if (offset == kBlockSize) {
                    b = index.next(b);
                    offset = 0;
                }
                std::size_t n = std::min(bytes.size(), kBlockSize - offset);
                std::memcpy(index.block(b) + offset, bytes.data(), n);
                offset += n;
                bytes.remove_prefix(n);
            }
        }
    };

    std::uint32_t* buckets() { return reinterpret_cast<std::uint32_t*>(base_ + h_.buckets_offset); }
    CacheEntry* entries() { return reinterpret_cast<CacheEntry*>(base_ + h_.entries_offset); }
    std::uint32_t& next(std::uint32_t b) {
        return reinterpret_cast<std::uint32_t*>(base_ + h_.links_offset)[b - 1];
    }
    char* block(std::uint32_t b) { return base_ + h_.blocks_offset + (b - 1) * kBlockSize; }
    std::uint32_t& bucket(std::uint64_t hash) { return buckets()[hash & (h_.bucket_count - 1)]; }
    std::size_t free_block_count() const {
        return h_.block_count - h_.counters.blocks_used.load(std::memory_order_relaxed);
    }

    bool key_equals(CacheEntry& e, std::uint64_t hash, std::string_view key) {
        if (e.hash != hash || e.key_size != key.size()) return false;
        bool equal = true;
        std::size_t at = 0;
        for_each_piece(e.first_block, 0, e.key_size, [&](const char* p, std::size_t n) {
            equal = std::memcmp(p, key.data() + at, n) == 0;
            at += n;
            return equal;
        });
        return equal;
    }

    std::uint32_t pop_entry() {
        ++h_.entries_in_use;
        if (h_.free_entries != kNone) {
            std::uint32_t i = h_.free_entries;
            h_.free_entries = entry(i).chain_next;
            return i;
        }
        return ++h_.entries_minted;
    }

    std::uint32_t pop_block() {
        if (h_.free_blocks != kNone) {
            std::uint32_t b = h_.free_blocks;
            h_.free_blocks = next(b);
            return b;
        }
        return ++h_.blocks_minted;
    }

    // A chain of n blocks (n free ones must exist); kNone for n = 0.
    std::uint32_t alloc_chain(std::uint32_t n) {
        std::uint32_t first = kNone, last = kNone;
        for (std::uint32_t k = 0; k < n; ++k) {
            std::uint32_t b = pop_block();
            (last == kNone ? first : next(last)) = b;
            last = b;
        }
        if (last != kNone) next(last) = kNone;
        h_.counters.blocks_used.fetch_add(n, std::memory_order_relaxed);
        return first;
    }

    void free_chain(std::uint32_t first, std::uint32_t n) {
        if (n == 0) return;
        std::uint32_t last = first;
        for (std::uint32_t k = 1; k < n; ++k) last = next(last);
        next(last) = h_.free_blocks;
        h_.free_blocks = first;
        h_.counters.blocks_used.fetch_sub(n, std::memory_order_relaxed);
    }

    // Keeps the first `keep` blocks of e's chain, frees the rest.
    void truncate(CacheEntry& e, std::size_t keep) {
        if (keep >= e.block_count) return;
        if (keep == 0) {
            free_chain(e.first_block, e.block_count);
            e.first_block = kNone;
        } else {
            std::uint32_t last = e.first_block;
            for (std::size_t k = 1; k < keep; ++k) last = next(last);
            free_chain(next(last), e.block_count - static_cast<std::uint32_t>(keep));
            next(last) = kNone;
        }
        e.block_count = static_cast<std::uint32_t>(keep);
    }

    void link_front(std::uint32_t i) {
        CacheEntry& e = entry(i);
        e.lru_prev = kNone;
        e.lru_next = h_.lru_head;
        if (h_.lru_head != kNone) entry(h_.lru_head).lru_prev = i;
        h_.lru_head = i;
        if (h_.lru_tail == kNone) h_.lru_tail = i;
    }

    void unlink_lru(std::uint32_t i) {
        CacheEntry& e = entry(i);
        (e.lru_prev != kNone ? entry(e.lru_prev).lru_next : h_.lru_head) = e.lru_next;
        (e.lru_next != kNone ? entry(e.lru_next).lru_prev : h_.lru_tail) = e.lru_prev;
        e.lru_prev = e.lru_next = kNone;
    }

    CacheHeader& h_;
    char* base_;
};

// Holds the region's mutex. A previous holder that died (EOWNERDEAD) may have left the tables
// half-updated: make the mutex consistent and start the cache afresh.
class Locked {
  public:
    explicit Locked(CacheHeader& h) : h_(h) {
        int rc = ::pthread_mutex_lock(&h.mutex);
        if (rc == EOWNERDEAD) {  // we own the mutex either way
            Index(h).reset();
            ::pthread_mutex_consistent(&h.mutex);
            rc = 0;
        }
        locked_ = rc == 0;
    }
    ~Locked() {
        if (locked_) ::pthread_mutex_unlock(&h_.mutex);
    }
    Locked(const Locked&) = delete;
    Locked& operator=(const Locked&) = delete;
    explicit operator bool() const { return locked_; }

  private:
    CacheHeader& h_;
    bool locked_ = false;
};

void add(std::atomic<std::uint64_t>& to, const std::atomic<std::uint64_t>& from) {
    to.fetch_add(from.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

}  // namespace

std::int64_t cache_now_ms() {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

CacheStore CacheStore::create(std::size_t max_size, std::size_t max_object_size) {
    CacheStore store;
    Geometry g = geometry_for(max_size);
    if (!g.ok) return store;
    UniqueFd fd(::memfd_create("proxyd-cache", MFD_CLOEXEC));
    if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(max_size)) != 0) return store;
    void* p = ::mmap(nullptr, max_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) return store;
    // The rest of the region stays zero (empty buckets; tables handed out from index 1 on), so
    // only the header's pages are touched now.
    auto* h = new (p) CacheHeader{};
    h->block_size = kBlockSize;
    h->bucket_count = static_cast<std::uint32_t>(g.bucket_count);
    h->entry_count = static_cast<std::uint32_t>(g.entry_count);
    h->block_count = static_cast<std::uint32_t>(g.block_count);
    h->region_size = max_size;
    h->max_object_size = max_object_size;
    h->hash_seed = random_seed();
    h->buckets_offset = g.buckets_offset;
    h->entries_offset = g.entries_offset;
    h->links_offset = g.links_offset;
    h->blocks_offset = g.blocks_offset;
    if (!init_mutex(h->mutex)) {
        ::munmap(p, max_size);
        return store;
    }
    h->header = {CacheHeader::kMagic, CacheHeader::kVersion};
    store.fd_ = std::move(fd);
    store.header_ = h;
    store.size_ = max_size;
    return store;
}

CacheStore CacheStore::attach(UniqueFd fd) {
    CacheStore store;
    struct stat st;
    if (!fd || ::fstat(fd.get(), &st) != 0) return store;
    auto size = static_cast<std::size_t>(st.st_size);
    if (st.st_size <= 0 || size < sizeof(CacheHeader)) return store;
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) return store;
    auto* h = static_cast<CacheHeader*>(p);
    if (h->header.magic != CacheHeader::kMagic || h->header.version != CacheHeader::kVersion ||
        h->region_size != size || !matches(*h, geometry_for(size))) {
        ::munmap(p, size);
        return store;
    }
    store.fd_ = std::move(fd);
    store.header_ = h;
    store.size_ = size;
    return store;
}

CacheStore::CacheStore(CacheStore&& other) noexcept
    : fd_(std::move(other.fd_)),
      header_(std::exchange(other.header_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

CacheStore& CacheStore::operator=(CacheStore&& other) noexcept {
    if (this != &other) {
        unmap();
        fd_ = std::move(other.fd_);
        header_ = std::exchange(other.header_, nullptr);
        size_ = std::exchange(other.size_, 0);
    }
    return *this;
}

CacheStore::~CacheStore() {
    unmap();
}

void CacheStore::unmap() {
    if (header_) ::munmap(header_, size_);
    header_ = nullptr;
    size_ = 0;
}

std::size_t CacheStore::max_object_size() const {
    return header_ ? header_->max_object_size : 0;
}

std::size_t CacheStore::entry_capacity() const {
    return header_ ? header_->entry_count : 0;
}

std::size_t CacheStore::block_capacity() const {
    return header_ ? header_->block_count : 0;
}

CacheFound CacheStore::lookup_with(std::string_view key, std::int64_t now_ms, SinkFn sink,
                                   void* ctx) {
    CacheFound found;
    if (!header_ || key.size() > kMaxKeySize) return found;
    Locked locked(*header_);
    if (!locked) return found;
    Index index(*header_);
    std::uint32_t i = index.find(key_hash(header_->hash_seed, key), key);
    if (i == kNone) return found;
    CacheEntry& e = index.entry(i);
    found.filling = Index::mark_running(e, now_ms);
    if (!found.filling) e.state &= ~kMarked;  // an expired mark: its filler gave up or died
    if ((e.state & kHasObject) && now_ms >= e.usable_until_ms) {
        index.drop_object(i, found.filling);
    } else if (e.state & kHasObject) {
        index.for_each_piece(e.first_block, e.key_size, e.object_size,
                             [&](const char* p, std::size_t n) {
                                 sink(ctx, p, n);
                                 return true;
                             });
        index.touch(i);
        found.hit = true;
        found.flags = e.flags;
        found.times = {e.stored_ms, e.fresh_until_ms, e.usable_until_ms};
    } else if (!found.filling) {
        index.remove(i);
    }
    return found;
}

bool CacheStore::try_begin_fill(std::string_view key, std::int64_t now_ms, std::int64_t mark_ms) {
    if (!header_ || key.size() > kMaxKeySize) return true;
    Locked locked(*header_);
    if (!locked) return true;
    Index index(*header_);
    std::uint64_t hash = key_hash(header_->hash_seed, key);
    std::uint32_t i = index.find(hash, key);
    if (i == kNone) {
        std::size_t blocks = blocks_for(key.size());
        if (!index.make_room(blocks, true, now_ms)) return true;  // no room for a mark
        i = index.insert(hash, key, {}, blocks);
    } else if (Index::mark_running(index.entry(i), now_ms)) {
        return false;
    }
    CacheEntry& e = index.entry(i);
    e.state |= kMarked;
    e.fill_until_ms = now_ms + mark_ms;
    return true;
}

void CacheStore::end_fill(std::string_view key) {
    if (!header_ || key.size() > kMaxKeySize) return;
    Locked locked(*header_);
    if (!locked) return;
    Index index(*header_);
    std::uint32_t i = index.find(key_hash(header_->hash_seed, key), key);
    if (i == kNone) return;
    CacheEntry& e = index.entry(i);
    e.state &= ~kMarked;
    if (!(e.state & kHasObject)) index.remove(i);
}

bool CacheStore::store(std::string_view key, std::uint32_t flags, const CacheTimes& times,
                       std::span<const std::string_view> parts) {
    if (!header_) return false;
    std::size_t total = 0;
    for (std::string_view part : parts) total += part.size();
    Locked locked(*header_);
    if (!locked) return false;
    Index index(*header_);
    std::uint64_t hash = key_hash(header_->hash_seed, key);
    std::uint32_t i = index.find(hash, key);
    std::size_t blocks = blocks_for(key.size() + total);
    if (total > header_->max_object_size + kHeadAllowance ||
        total > std::numeric_limits<std::uint32_t>::max() || key.size() > kMaxKeySize ||
        blocks > header_->block_count) {
        if (i != kNone) {  // keep a previous object (still usable as stale), drop the mark
            index.entry(i).state &= ~kMarked;
            if (!(index.entry(i).state & kHasObject)) index.remove(i);
        }
        return false;
    }
    if (i != kNone) index.remove(i);  // the new object replaces the old (and the mark)
    if (!index.make_room(blocks, true, times.stored_ms)) return false;
    i = index.insert(hash, key, parts, blocks);
    CacheEntry& e = index.entry(i);
    e.state = kHasObject;
    e.flags = flags;
    e.object_size = static_cast<std::uint32_t>(total);
    e.stored_ms = times.stored_ms;
    e.fresh_until_ms = times.fresh_until_ms;
    e.usable_until_ms = times.usable_until_ms;
    header_->counters.objects.fetch_add(1, std::memory_order_relaxed);
    header_->counters.stores.fetch_add(1, std::memory_order_relaxed);
    return true;
}

std::size_t CacheStore::purge_with(PredFn pred, void* ctx) {
    if (!header_) return 0;
    Locked locked(*header_);
    if (!locked) return 0;
    Index index(*header_);
    std::string scratch;  // for keys whose blocks are not consecutive (admin path only)
    std::size_t purged = 0;
    for (std::uint32_t i = index.lru_head(); i != kNone;) {
        CacheEntry& e = index.entry(i);
        std::uint32_t next = e.lru_next;
        if ((e.state & kHasObject) && pred(ctx, index.key_of(e, scratch))) {
            index.drop_object(i, e.state & kMarked);
            ++purged;
        }
        i = next;
    }
    header_->counters.purges.fetch_add(purged, std::memory_order_relaxed);
    return purged;
}

std::size_t CacheStore::clear() {
    return purge([](std::string_view) { return true; });
}

void CacheStore::count(CacheResult result) {
    if (!header_) return;
    CacheCounterWords& c = header_->counters;
    switch (result) {
        case CacheResult::Hit:
            c.hits.fetch_add(1, std::memory_order_relaxed);
            break;
        case CacheResult::Miss:
            c.misses.fetch_add(1, std::memory_order_relaxed);
            break;
        case CacheResult::Stale:
            c.stale.fetch_add(1, std::memory_order_relaxed);
            break;
        case CacheResult::Bypass:
            c.bypass.fetch_add(1, std::memory_order_relaxed);
            break;
    }
}

CacheCounters CacheStore::counters() const {
    CacheCounters out;
    if (!header_) return out;
    const CacheCounterWords& c = header_->counters;
    out.hits = c.hits.load(std::memory_order_relaxed);
    out.misses = c.misses.load(std::memory_order_relaxed);
    out.stale = c.stale.load(std::memory_order_relaxed);
    out.bypass = c.bypass.load(std::memory_order_relaxed);
    out.stores = c.stores.load(std::memory_order_relaxed);
    out.evictions = c.evictions.load(std::memory_order_relaxed);
    out.purges = c.purges.load(std::memory_order_relaxed);
    return out;
}

CacheUsage CacheStore::usage() const {
    CacheUsage out;
    if (!header_) return out;
    out.entries = header_->counters.objects.load(std::memory_order_relaxed);
    out.bytes_used = header_->counters.blocks_used.load(std::memory_order_relaxed) * kBlockSize;
    out.capacity_bytes = size_;
    return out;
}

void CacheStore::adopt_counters(const CacheStore& old) {
    if (!header_ || !old.header_ || old.header_ == header_) return;
    CacheCounterWords& to = header_->counters;
    const CacheCounterWords& from = old.header_->counters;
    add(to.hits, from.hits);
    add(to.misses, from.misses);
    add(to.stale, from.stale);
    add(to.bypass, from.bypass);
    add(to.stores, from.stores);
    add(to.evictions, from.evictions);
    add(to.purges, from.purges);
}

}  // namespace proxyd::shm
