// Dashboard logins ([admin], GET /): a browser that posted the admin token to /login gets a
// session id in an HttpOnly cookie instead of keeping the token in the page, plus a separate
// CSRF token that the page echoes in X-CSRF-Token on every state-changing call. Sessions live in
// the master's memory only: a restart, an upgrade or a new admin token logs everyone out.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace proxyd::master {

struct DashboardSession {
    std::string id;    // 64 hex digits (32 random bytes): the cookie's value
    std::string csrf;  // 64 hex digits, independent of the id
    std::chrono::steady_clock::time_point created;
    std::chrono::steady_clock::time_point last_used;
};

class SessionStore {
  public:
    using Clock = std::chrono::steady_clock;
    struct Limits {
        std::size_t max_sessions = 64;                      // the oldest is dropped past this
        Clock::duration idle = std::chrono::hours(12);      // unused this long: gone
        Clock::duration absolute = std::chrono::hours(24);  // then a new login, however used
    };

    SessionStore() = default;
    explicit SessionStore(Limits limits) : limits_(limits) {}

    // A new session with fresh random id and CSRF token. Nullopt only if the system's random
    // generator fails (then nobody should get a session).
    std::optional<DashboardSession> create(Clock::time_point now);
    // The live session with this id (compared in constant time), its idle timer restarted;
    // null when unknown or expired (an expired one is removed).
    const DashboardSession* find(std::string_view id, Clock::time_point now);
    // True when a session was removed.
    bool remove(std::string_view id);
    void clear() { sessions_.clear(); }
    std::size_t size() const { return sessions_.size(); }

  private:
    bool expired(const DashboardSession& session, Clock::time_point now) const;

    Limits limits_;
    std::vector<DashboardSession> sessions_;  // oldest first; small, so a scan is cheap
};

// `bytes` random bytes from OpenSSL's CSPRNG as lower-case hex; "" when it fails.
std::string random_hex(std::size_t bytes);
// Equal contents, in time that depends on neither (digests compared with CRYPTO_memcmp).
bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace proxyd::master
