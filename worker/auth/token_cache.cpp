#include "worker/auth/token_cache.hpp"

#include <functional>
#include <utility>

namespace proxyd::worker {

namespace {

constexpr std::size_t kInitialBuckets = 16;

}  // namespace

TokenCache::TokenCache(std::size_t capacity) : capacity_(capacity) {
    // Indices are 32-bit; kEmpty is reserved.
    if (capacity_ >= kEmpty) capacity_ = kEmpty - 1;
}

std::uint64_t TokenCache::hash(std::string_view token) {
    return std::hash<std::string_view>{}(token);
}

TokenCache::Entry* TokenCache::find(std::string_view token, std::uint64_t h) {
    if (buckets_.empty()) return nullptr;
    const std::size_t mask = buckets_.size() - 1;
    for (std::size_t i = h & mask;; i = (i + 1) & mask) {
        const std::uint32_t index = buckets_[i];
        if (index == kEmpty) return nullptr;
        Entry& e = entries_[index];
        if (e.hash == h && e.token == token) {
            e.referenced = true;
            return &e;
        }
    }
}

TokenCache::Entry* TokenCache::insert(std::string_view token, std::uint64_t h, VerifiedToken& value,
                                      std::int64_t not_before, std::int64_t valid_until) {
    if (capacity_ == 0) return nullptr;
    const std::uint32_t index = take_slot();
    Entry& e = entries_[index];
    e.token.assign(token.data(), token.size());
    e.hash = h;
    std::swap(e.value, value);
    e.not_before = not_before;
    e.valid_until = valid_until;
    e.referenced = false;
    e.used = true;
    ++live_;
    link(index);
    return &e;
}

void TokenCache::erase(Entry* entry) {
    if (entry == nullptr || !entry->used) return;
    const auto index = static_cast<std::uint32_t>(entry - entries_.data());
    unlink(index);
    entry->used = false;
    entry->referenced = false;
    --live_;
    free_.push_back(index);
}

// A free entry: an erased one, a new one while below capacity, else the CLOCK victim (unlinked).
std::uint32_t TokenCache::take_slot() {
    if (!free_.empty()) {
        const std::uint32_t index = free_.back();
        free_.pop_back();
        return index;
    }
    if (entries_.size() < capacity_) {
        entries_.emplace_back();
        if (entries_.size() * 2 > buckets_.size()) grow_buckets();
        return static_cast<std::uint32_t>(entries_.size() - 1);
    }
    // Full (every entry in use): CLOCK. At most one full sweep clears every bit, so this ends.
    for (;;) {
        const auto index = static_cast<std::uint32_t>(hand_);
        hand_ = hand_ + 1 == entries_.size() ? 0 : hand_ + 1;
        Entry& e = entries_[index];
        if (!e.used) return index;
        if (e.referenced) {
            e.referenced = false;
            continue;
        }
        unlink(index);
        e.used = false;
        --live_;
        return index;
    }
}

void TokenCache::link(std::uint32_t index) {
    const std::size_t mask = buckets_.size() - 1;
    std::size_t i = entries_[index].hash & mask;
    while (buckets_[i] != kEmpty) i = (i + 1) & mask;
    buckets_[i] = index;
}

// Removes `index` from the table, shifting later members of its probe run back so that lookups
// never need tombstones.
void TokenCache::unlink(std::uint32_t index) {
    const std::size_t mask = buckets_.size() - 1;
    std::size_t i = entries_[index].hash & mask;
    while (buckets_[i] != index) i = (i + 1) & mask;
    std::size_t j = i;
    for (;;) {
        buckets_[i] = kEmpty;
        for (;;) {
            j = (j + 1) & mask;
            if (buckets_[j] == kEmpty) return;
            const std::size_t home = entries_[buckets_[j]].hash & mask;
            // The member at j may move to i unless its home lies cyclically in (i, j].
            const bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
            if (!stays) break;
        }
        buckets_[i] = buckets_[j];
        i = j;
    }
}

void TokenCache::grow_buckets() {
    std::size_t n = buckets_.empty() ? kInitialBuckets : buckets_.size() * 2;
    while (n < entries_.size() * 2) n *= 2;
    buckets_.assign(n, kEmpty);
    for (std::size_t k = 0; k < entries_.size(); ++k) {
        if (entries_[k].used) link(static_cast<std::uint32_t>(k));
    }
}

}  // namespace proxyd::worker
