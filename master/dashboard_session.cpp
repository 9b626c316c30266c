#include "master/dashboard_session.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <algorithm>

namespace proxyd::master {

std::string random_hex(std::size_t bytes) {
    std::vector<unsigned char> raw(bytes);
    if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) return "";
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes * 2);
    for (unsigned char c : raw) {
        out += kDigits[c >> 4];
        out += kDigits[c & 0xf];
    }
    return out;
}

// Comparing digests hides the length too: a plain memcmp of the strings would stop at the
// first difference and tell an attacker how much of the secret they had right.
bool constant_time_equal(std::string_view a, std::string_view b) {
    unsigned char da[SHA256_DIGEST_LENGTH], db[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const unsigned char*>(a.data()), a.size(), da);
    SHA256(reinterpret_cast<const unsigned char*>(b.data()), b.size(), db);
    return CRYPTO_memcmp(da, db, sizeof da) == 0;
}

std::optional<DashboardSession> SessionStore::create(Clock::time_point now) {
    DashboardSession session{random_hex(32), random_hex(32), now, now};
    if (session.id.empty() || session.csrf.empty()) return std::nullopt;
    std::erase_if(sessions_, [&](const DashboardSession& s) { return expired(s, now); });
    // Bounded so that a script logging in in a loop cannot grow the master.
    while (!sessions_.empty() && sessions_.size() >= limits_.max_sessions) {
        sessions_.erase(sessions_.begin());
    }
    sessions_.push_back(session);
    return session;
}

const DashboardSession* SessionStore::find(std::string_view id, Clock::time_point now) {
    if (id.empty()) return nullptr;
    // Every entry is compared, so the time taken does not say which one matched.
    DashboardSession* found = nullptr;
    for (auto& session : sessions_) {
        if (constant_time_equal(session.id, id)) found = &session;
    }
    if (found == nullptr) return nullptr;
    if (expired(*found, now)) {
        remove(found->id);
        return nullptr;
    }
    found->last_used = now;
    return found;
}

bool SessionStore::remove(std::string_view id) {
    std::string key(id);  // `id` may point into the entry being erased
    return std::erase_if(sessions_, [&](const DashboardSession& s) { return s.id == key; }) > 0;
}

bool SessionStore::expired(const DashboardSession& session, Clock::time_point now) const {
    return now - session.last_used >= limits_.idle || now - session.created >= limits_.absolute;
}

}  // namespace proxyd::master
