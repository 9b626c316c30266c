// [rate_limits.NAME] store = "redis": one limit shared by several proxyd hosts through Redis.
//
// Each decision is one atomic Lua script (the same GCRA as common/shm/rate_limit_table.hpp) run
// by Redis with Redis's own clock (TIME), so every host agrees on time. The key is
// "proxyd:rl:<limit name>:<key>" holding the TAT in µs; it expires (PX) once the bucket would be
// full again, so idle keys vanish. EVALSHA with the SHA-1 computed here, EVAL when Redis answers
// NOSCRIPT (a fresh or flushed server).
//
// Per worker and per Redis address (and password), a pool of up to kPoolSize non-blocking hiredis
// connections on the worker's event_base, used round-robin and opened when first needed. A lost
// connection is reopened after a backoff (100 ms doubling to 2 s); while every connection of the
// pool is backing off, decisions fail at once instead of waiting. A connection that answers
// nothing within a decision's timeout is dropped (a hung server or a connect that never
// completes). AUTH is sent first on every connection when redis_password is set; the password is
// never logged. Connection losses and Redis errors are logged at warn, rate-limited.
//
// Completion: the waiter of a decision is called exactly once, from the event loop, never inside
// decide(): with the decision, or with redis_error = true on a Redis error, a lost connection, or
// when redis_timeout passes first (the caller then applies on_redis_error and counts it).
// cancel() drops the decision: its waiter is never called, and a reply that comes later finds no
// ticket and is ignored. hiredis callbacks carry only the ticket number and the connection, never
// a waiter pointer; destroying the limiter detaches and frees every connection first, so a reply
// can never reach freed memory. The limiter must be destroyed before its event_base, and not from
// inside one of its waiters' callbacks.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/config/types.hpp"
#include "common/shm/rate_limit_table.hpp"
#include "common/util/event_ptr.hpp"

struct redisAsyncContext;

namespace proxyd::worker {

class RateLimitWaiter {
  public:
    // `decision` is meaningful only when redis_error is false (then limit is still burst).
    virtual void on_rate_decision(const shm::RateDecision& decision, bool redis_error) = 0;

  protected:
    ~RateLimitWaiter() = default;
};

// The pieces of the protocol, exposed for tests.
namespace redis_gcra {
// The Lua script: KEYS[1] = key, ARGV[1] = T (µs), ARGV[2] = tau (µs); returns
// {allowed (0/1), TAT - now after the decision (µs)}.
std::string_view script();
// SHA-1 of script(), lower-case hex, as Redis's EVALSHA wants it.
const std::string& script_sha1();
// "proxyd:rl:<limit name>:<key>"
std::string key(std::string_view limit_name, std::string_view key);
std::string sha1_hex(std::string_view data);
}  // namespace redis_gcra

class RedisLimiter {
  public:
    static constexpr std::size_t kPoolSize = 4;

    explicit RedisLimiter(event_base* base);
    ~RedisLimiter();
    RedisLimiter(const RedisLimiter&) = delete;
    RedisLimiter& operator=(const RedisLimiter&) = delete;

    // Starts a decision for `key` under `limit` (store = "redis"); the waiter is called exactly
    // once later (never inside decide()), unless cancelled first. Returns a ticket (never 0).
    std::uint64_t decide(const config::RateLimit& limit, std::string_view key,
                         RateLimitWaiter& waiter);
    // The waiter is gone (client closed): its decision's reply is dropped.
    void cancel(std::uint64_t ticket);
    // Decisions that ended with redis_error (errors, lost connections, timeouts).
    std::uint64_t errors() const { return errors_; }
    // Decisions started and not yet completed or cancelled.
    std::size_t in_flight() const { return pending_.size(); }

  private:
    struct Pool;
    struct Connection;
    struct Pending;
    struct TimeoutQueue;

    static void on_connect(const redisAsyncContext* ac, int status);
    static void on_disconnect(const redisAsyncContext* ac, int status);
    static void on_auth_reply(redisAsyncContext* ac, void* reply, void* privdata);
    static void on_reply(redisAsyncContext* ac, void* reply, void* privdata);
    static void on_timer(evutil_socket_t, short, void* arg);
    static void on_deferred(evutil_socket_t, short, void* arg);

    Pool& pool_for(const config::RateLimit& limit);
    Connection* pick(Pool& pool);
    bool connect(Connection& conn);
    bool send(Connection& conn, std::uint64_t ticket, const Pending& pending, bool eval);
    void handle_reply(Connection& conn, std::uint64_t ticket, void* reply);
    void schedule_timeout(config::Millis timeout, std::uint64_t ticket);
    void run_timeouts(TimeoutQueue& queue);
    void fail_later(std::uint64_t ticket);
    void complete(std::uint64_t ticket, const shm::RateDecision* decision);
    void mark_down(Connection& conn, std::string_view reason);
    void drop(Connection& conn, std::string_view reason);
    void warn(Pool& pool, std::string_view what);

    event_base* base_;
    std::uint64_t next_ticket_ = 0;
    std::uint64_t errors_ = 0;
    std::unordered_map<std::string, std::unique_ptr<Pool>> pools_;
    std::unordered_map<std::uint64_t, Pending> pending_;
    std::vector<std::unique_ptr<TimeoutQueue>> timeouts_;  // one per distinct redis_timeout
    std::vector<std::uint64_t> deferred_;                  // tickets to fail from the loop
    EventPtr deferred_event_;
};

}  // namespace proxyd::worker
