// TLS session-ticket keys shared by every worker, so a ticket issued by one worker resumes on any
// other, and — the region being handed to new workers and to a new binary — across reloads and
// upgrades.
//
// The master is the only writer: it fills the ring at start and rotates it on a schedule
// (rotate()). keys[0] encrypts new tickets; every key in the ring decrypts, so a ticket stays
// valid for kKeys - 1 rotation periods after the key that made it was replaced. Workers read
// the ring on each ticket operation through a sequence lock: the sequence is odd while the
// master writes, and a reader that saw it change retries. Every word is an atomic, so a reader
// racing a write gets torn values it then discards, never undefined behaviour.
#pragma once

#include <atomic>
#include <cstdint>

#include "common/shm/region.hpp"

namespace proxyd::shm {

// A key as OpenSSL's ticket callback uses it: 16-byte name (sent in the ticket to find the key
// again), AES-256 key, HMAC-SHA256 key.
struct TicketKey {
    unsigned char name[16];
    unsigned char aes_key[32];
    unsigned char hmac_key[32];
};

struct TicketKeyRing {
    static constexpr std::uint32_t kMagic = 0x7072746b;  // "prtk"
    static constexpr std::uint32_t kVersion = 1;
    static constexpr std::size_t kKeys = 3;
    static constexpr std::size_t kWordsPerKey = sizeof(TicketKey) / sizeof(std::uint64_t);
    static_assert(sizeof(TicketKey) % sizeof(std::uint64_t) == 0);

    LayoutHeader header;
    std::atomic<std::uint64_t> sequence{0};
    std::atomic<std::uint32_t> count{0};  // keys in use, 0 until the master's first rotate()
    std::atomic<std::uint64_t> rotations{0};
    std::atomic<std::uint64_t> words[kKeys][kWordsPerKey];
};

using TicketKeyRegion = Region<TicketKeyRing>;

struct TicketKeys {
    std::uint32_t count = 0;
    TicketKey keys[TicketKeyRing::kKeys];
};

// Master: a fresh random key becomes keys[0]; the others move down, the oldest is dropped.
// False if the system could not supply random bytes (the ring is then unchanged).
bool rotate(TicketKeyRing& ring);

// Worker: a consistent copy of the ring; false when it is empty or no consistent copy could be
// read within a bounded number of tries (the master would have to rotate continuously).
bool read_keys(const TicketKeyRing& ring, TicketKeys& out);

}  // namespace proxyd::shm
