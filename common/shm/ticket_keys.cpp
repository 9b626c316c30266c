#include "common/shm/ticket_keys.hpp"

#include <openssl/rand.h>

#include <cstring>

namespace proxyd::shm {

namespace {

void store_key(TicketKeyRing& ring, std::size_t index, const TicketKey& key) {
    std::uint64_t words[TicketKeyRing::kWordsPerKey];
    std::memcpy(words, &key, sizeof key);
    for (std::size_t w = 0; w < TicketKeyRing::kWordsPerKey; ++w) {
        ring.words[index][w].store(words[w], std::memory_order_relaxed);
    }
}

void load_key(const TicketKeyRing& ring, std::size_t index, TicketKey& key) {
    std::uint64_t words[TicketKeyRing::kWordsPerKey];
    for (std::size_t w = 0; w < TicketKeyRing::kWordsPerKey; ++w) {
        words[w] = ring.words[index][w].load(std::memory_order_relaxed);
    }
    std::memcpy(&key, words, sizeof key);
}

}  // namespace

bool rotate(TicketKeyRing& ring) {
    TicketKey fresh;
    if (RAND_bytes(reinterpret_cast<unsigned char*>(&fresh), sizeof fresh) != 1) return false;
    std::uint32_t count = ring.count.load(std::memory_order_relaxed);
    TicketKey moved[TicketKeyRing::kKeys];
    for (std::size_t i = 0; i < count; ++i) load_key(ring, i, moved[i]);

    ring.sequence.fetch_add(1, std::memory_order_acq_rel);  // odd: writing
    std::atomic_thread_fence(std::memory_order_release);
    store_key(ring, 0, fresh);
    std::size_t kept = count < TicketKeyRing::kKeys ? count : TicketKeyRing::kKeys - 1;
    for (std::size_t i = 0; i < kept; ++i) store_key(ring, i + 1, moved[i]);
    ring.count.store(static_cast<std::uint32_t>(kept + 1), std::memory_order_relaxed);
    ring.sequence.fetch_add(1, std::memory_order_release);  // even: done
    ring.rotations.fetch_add(1, std::memory_order_relaxed);
    OPENSSL_cleanse(&fresh, sizeof fresh);
    OPENSSL_cleanse(moved, sizeof moved);
    return true;
}

bool read_keys(const TicketKeyRing& ring, TicketKeys& out) {
    for (int attempt = 0; attempt < 64; ++attempt) {
        std::uint64_t before = ring.sequence.load(std::memory_order_acquire);
        if (before & 1) continue;
        std::uint32_t count = ring.count.load(std::memory_order_relaxed);
        if (count > TicketKeyRing::kKeys) count = TicketKeyRing::kKeys;
        for (std::size_t i = 0; i < count; ++i) load_key(ring, i, out.keys[i]);
        std::atomic_thread_fence(std::memory_order_acquire);
        if (ring.sequence.load(std::memory_order_relaxed) == before) {
            out.count = count;
            return count > 0;
        }
    }
    return false;
}

}  // namespace proxyd::shm
