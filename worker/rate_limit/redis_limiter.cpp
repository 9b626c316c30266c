// Redis-backed rate limits: connection pool, script calls, timeouts. See redis_limiter.hpp.
#include "worker/rate_limit/redis_limiter.hpp"

#include <arpa/inet.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <openssl/sha.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "common/util/timeval.hpp"

namespace proxyd::worker {

namespace redis_gcra {

namespace {
// GCRA with Redis's clock. Integers stay exact: µs since the epoch (~1.8e15) is below 2^53, and
// the TAT is written with %d, never through Lua's default %.14g number formatting.
constexpr std::string_view kScript = R"lua(-- proxyd GCRA v1
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
if tat + interval - now > tau then
  return {0, tat - now}
end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX',
           string.format('%d', math.ceil((tat - now) / 1000) + 1))
return {1, tat - now}
)lua";
}  // namespace

std::string_view script() {
    return kScript;
}

const std::string& script_sha1() {
    static const std::string sha = sha1_hex(kScript);
    return sha;
}

std::string key(std::string_view limit_name, std::string_view key) {
    std::string out = "proxyd:rl:";
    out.append(limit_name);
    out.push_back(':');
    out.append(key);
    return out;
}

std::string sha1_hex(std::string_view data) {
    std::array<unsigned char, SHA_DIGEST_LENGTH> digest{};
    ::SHA1(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest.data());
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    out.reserve(2 * digest.size());
    for (unsigned char c : digest) {
        out.push_back(kHex[c >> 4]);
        out.push_back(kHex[c & 15]);
    }
    return out;
}

}  // namespace redis_gcra

namespace {

constexpr std::uint64_t kBackoffFirstMs = 100;
constexpr std::uint64_t kBackoffMaxMs = 2000;
constexpr std::uint64_t kWarnEveryUs = 5'000'000;

std::uint64_t now_us() {
    return shm::monotonic_us();
}

static_assert(sizeof(void*) >= sizeof(std::uint64_t), "tickets travel as hiredis privdata");
void* ticket_ptr(std::uint64_t ticket) {
    return reinterpret_cast<void*>(static_cast<std::uintptr_t>(ticket));
}
std::uint64_t ticket_of(void* privdata) {
    return static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(privdata));
}

// Numeric host and port of a config address, for redisAsyncConnect (no name lookup).
bool host_port(const config::SocketAddress& address, std::string& host, int& port) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (address.storage.ss_family == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(&address.storage);
        if (!::inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf)) return false;
        port = ntohs(in->sin_port);
    } else if (address.storage.ss_family == AF_INET6) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&address.storage);
        if (!::inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf)) return false;
        port = ntohs(in6->sin6_port);
    } else {
        return false;
    }
    host = buf;
    return true;
}

// A server message for the log, cut short, with any copy of the password masked.
std::string redacted(std::string_view message, std::string_view password) {
    std::string out(message.substr(0, 200));
    if (password.empty()) return out;
    for (std::size_t at = out.find(password); at != std::string::npos;
         at = out.find(password, at + 3))
        out.replace(at, password.size(), "***");
    return out;
}

}  // namespace

struct RedisLimiter::Connection {
    RedisLimiter* owner = nullptr;
    Pool* pool = nullptr;
    redisAsyncContext* ac = nullptr;  // null while down
    bool connected = false;
    std::uint64_t retry_at_us = 0;  // while down: not before
    std::uint64_t backoff_ms = 0;
    std::uint64_t last_reply_us = 0;
};

struct RedisLimiter::Pool {
    std::string address;  // as written in the config, for logs
    std::string host;
    int port = 0;
    bool valid = false;
    std::string password;
    std::array<Connection, kPoolSize> conns;
    std::size_t next = 0;
    bool down_logged = false;  // a loss was logged and no connection has come back since
    std::uint64_t last_warn_us = 0;
    std::uint64_t suppressed = 0;
};

struct RedisLimiter::Pending {
    RateLimitWaiter* waiter = nullptr;
    shm::RateParams params{};
    std::string key;
    Connection* conn = nullptr;
    std::uint64_t sent_us = 0;
    bool eval_sent = false;
};

struct RedisLimiter::TimeoutQueue {
    RedisLimiter* owner = nullptr;
    config::Millis duration{0};
    // Deadlines are pushed in increasing order (one duration, a monotonic clock), so the front is
    // always the next to expire. Completed or cancelled tickets are skipped when they come up.
    std::deque<std::pair<std::uint64_t, std::uint64_t>> entries;  // (deadline µs, ticket)
    EventPtr timer;
};

RedisLimiter::RedisLimiter(event_base* base) : base_(base) {
    deferred_event_.reset(::event_new(base_, -1, 0, &RedisLimiter::on_deferred, this));
}

RedisLimiter::~RedisLimiter() {
    // Detach first: the callbacks redisAsyncFree runs (NULL replies, disconnect) see no owner.
    for (auto& [name, pool] : pools_) {
        for (Connection& conn : pool->conns) {
            if (!conn.ac) continue;
            redisAsyncContext* ac = std::exchange(conn.ac, nullptr);
            ac->data = nullptr;
            ::redisAsyncFree(ac);
        }
    }
    // Waiters of decisions still in flight are not called: their owner is going away too.
}

std::uint64_t RedisLimiter::decide(const config::RateLimit& limit, std::string_view key,
                                   RateLimitWaiter& waiter) {
    std::uint64_t ticket = ++next_ticket_;
    Pending pending;
    pending.waiter = &waiter;
    pending.params = shm::rate_params(limit.requests_per_minute, limit.burst);
    pending.key = redis_gcra::key(limit.name, key);
    Pool& pool = pool_for(limit);
    Connection* conn = pick(pool);
    pending.conn = conn;
    pending.sent_us = now_us();
    bool sent = conn && send(*conn, ticket, pending, false);
    if (!sent) pending.conn = nullptr;
    pending_.emplace(ticket, std::move(pending));
    if (sent)
        schedule_timeout(limit.redis_timeout, ticket);
    else
        fail_later(ticket);
    return ticket;
}

void RedisLimiter::cancel(std::uint64_t ticket) {
    pending_.erase(ticket);
}

// --- connections -------------------------------------------------------------------------------

RedisLimiter::Pool& RedisLimiter::pool_for(const config::RateLimit& limit) {
    std::string id = limit.redis.text;
    id.push_back('\0');
    id.append(limit.redis_password);
    auto it = pools_.find(id);
    if (it != pools_.end()) return *it->second;
    auto pool = std::make_unique<Pool>();
    pool->address = limit.redis.text;
    pool->valid = host_port(limit.redis, pool->host, pool->port);
    pool->password = limit.redis_password;
    for (Connection& conn : pool->conns) {
        conn.owner = this;
        conn.pool = pool.get();
    }
    return *pools_.emplace(std::move(id), std::move(pool)).first->second;
}

// The next connection in round-robin order that is open (or opening), opening one whose
// backoff is over; null when every one is backing off.
RedisLimiter::Connection* RedisLimiter::pick(Pool& pool) {
    if (!pool.valid) {
        warn(pool, "not a numeric IPv4/IPv6 address");
        return nullptr;
    }
    std::uint64_t now = now_us();
    for (std::size_t i = 0; i < kPoolSize; ++i) {
        Connection& conn = pool.conns[(pool.next + i) % kPoolSize];
        // A context hiredis is tearing down (its callbacks are running) takes no new command.
        if (conn.ac && (conn.ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING))) continue;
        if (conn.ac || (now >= conn.retry_at_us && connect(conn))) {
            pool.next = (pool.next + i + 1) % kPoolSize;
            return &conn;
        }
    }
    return nullptr;
}

bool RedisLimiter::connect(Connection& conn) {
    Pool& pool = *conn.pool;
    // Non-blocking: the connect completes (or fails) later in the event loop.
    redisAsyncContext* ac = ::redisAsyncConnect(pool.host.c_str(), pool.port);
    if (!ac) {
        mark_down(conn, "out of memory");
        return false;
    }
    if (ac->err) {
        std::string reason = ac->errstr ? ac->errstr : "connect failed";
        ::redisAsyncFree(ac);
        mark_down(conn, reason);
        return false;
    }
    ac->data = &conn;
    if (::redisLibeventAttach(ac, base_) != REDIS_OK) {
        ac->data = nullptr;
        ::redisAsyncFree(ac);
        mark_down(conn, "cannot attach to the event loop");
        return false;
    }
    ::redisAsyncSetConnectCallback(ac, &RedisLimiter::on_connect);
    ::redisAsyncSetDisconnectCallback(ac, &RedisLimiter::on_disconnect);
    conn.ac = ac;
    conn.connected = false;
    conn.last_reply_us = now_us();
    if (!pool.password.empty()) {
        // Queued before any script call, so it runs first on this connection.
        const char* argv[] = {"AUTH", pool.password.c_str()};
        const std::size_t lens[] = {4, pool.password.size()};
        if (::redisAsyncCommandArgv(ac, &RedisLimiter::on_auth_reply, nullptr, 2, argv, lens) !=
            REDIS_OK) {
            drop(conn, "cannot queue AUTH");
            return false;
        }
    }
    return true;
}

void RedisLimiter::on_connect(const redisAsyncContext* ac, int status) {
    auto* conn = static_cast<Connection*>(ac->data);
    if (!conn || conn->ac != ac) return;
    if (status != REDIS_OK) {
        // hiredis frees the context after this callback (running pending callbacks with NULL).
        conn->ac = nullptr;
        conn->owner->mark_down(*conn, ac->errstr ? ac->errstr : "connect failed");
        return;
    }
    conn->connected = true;
    conn->backoff_ms = 0;
    Pool& pool = *conn->pool;
    if (pool.down_logged) {
        spdlog::info("rate limit Redis {}: connected again", pool.address);
        pool.down_logged = false;
    }
}

void RedisLimiter::on_disconnect(const redisAsyncContext* ac, int status) {
    auto* conn = static_cast<Connection*>(ac->data);
    if (!conn || conn->ac != ac) return;  // freed by us (drop) or by the destructor
    conn->ac = nullptr;
    const char* reason = status == REDIS_OK ? "connection closed"
                         : ac->errstr       ? ac->errstr
                                            : "connection lost";
    conn->owner->mark_down(*conn, reason);
}

void RedisLimiter::on_auth_reply(redisAsyncContext* ac, void* reply, void*) {
    auto* conn = static_cast<Connection*>(ac->data);
    if (!conn || conn->ac != ac) return;
    auto* r = static_cast<redisReply*>(reply);
    if (r && r->type == REDIS_REPLY_ERROR) {
        std::string reason = "AUTH refused: ";
        reason.append(redacted(std::string_view(r->str ? r->str : "", r->str ? r->len : 0),
                               conn->pool->password));
        conn->owner->drop(*conn, reason);
    }
}

// The connection is down: back off before reopening it, and say so once per outage.
void RedisLimiter::mark_down(Connection& conn, std::string_view reason) {
    conn.connected = false;
    conn.backoff_ms =
        conn.backoff_ms == 0 ? kBackoffFirstMs : std::min(conn.backoff_ms * 2, kBackoffMaxMs);
    conn.retry_at_us = now_us() + conn.backoff_ms * 1000;
    Pool& pool = *conn.pool;
    if (!pool.down_logged) {
        pool.down_logged = true;
        spdlog::warn("rate limit Redis {}: {}; retrying every {}..{} ms", pool.address, reason,
                     kBackoffFirstMs, kBackoffMaxMs);
    } else {
        spdlog::debug("rate limit Redis {}: {}", pool.address, reason);
    }
}

// Closes a connection now; the decisions waiting on it fail (their callbacks get NULL replies).
void RedisLimiter::drop(Connection& conn, std::string_view reason) {
    redisAsyncContext* ac = std::exchange(conn.ac, nullptr);
    mark_down(conn, reason);       // first: a waiter called from the free below must not pick it
    if (ac) ::redisAsyncFree(ac);  // deferred by hiredis when inside one of its callbacks
}

// --- decisions ---------------------------------------------------------------------------------

bool RedisLimiter::send(Connection& conn, std::uint64_t ticket, const Pending& pending, bool eval) {
    char interval[24];
    char tau[24];
    int interval_len =
        std::snprintf(interval, sizeof interval, "%" PRIu64, pending.params.interval_us);
    int tau_len = std::snprintf(tau, sizeof tau, "%" PRIu64, pending.params.tau_us);
    std::string_view body =
        eval ? redis_gcra::script() : std::string_view(redis_gcra::script_sha1());
    const char* argv[] = {eval ? "EVAL" : "EVALSHA", body.data(), "1",
                          pending.key.data(),        interval,    tau};
    const std::size_t lens[] = {eval ? 4u : 7u,
                                body.size(),
                                1,
                                pending.key.size(),
                                static_cast<std::size_t>(interval_len),
                                static_cast<std::size_t>(tau_len)};
    return ::redisAsyncCommandArgv(conn.ac, &RedisLimiter::on_reply, ticket_ptr(ticket), 6, argv,
                                   lens) == REDIS_OK;
}

void RedisLimiter::on_reply(redisAsyncContext* ac, void* reply, void* privdata) {
    auto* conn = static_cast<Connection*>(ac->data);
    if (!conn) return;  // the limiter is gone
    if (reply) conn->last_reply_us = now_us();
    conn->owner->handle_reply(*conn, ticket_of(privdata), reply);
}

void RedisLimiter::handle_reply(Connection& conn, std::uint64_t ticket, void* reply) {
    auto it = pending_.find(ticket);
    if (it == pending_.end()) return;  // cancelled, or timed out already
    auto* r = static_cast<redisReply*>(reply);
    if (!r) {
        complete(ticket, nullptr);  // the connection went down
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        std::string_view msg(r->str ? r->str : "", r->str ? r->len : 0);
        Pending& pending = it->second;
        if (msg.starts_with("NOSCRIPT") && !pending.eval_sent && conn.ac) {
            // The server does not know the script yet: send it whole (it caches it for EVALSHA).
            pending.eval_sent = true;
            if (send(conn, ticket, pending, true)) return;
        }
        std::string what = "script error: ";
        what.append(redacted(msg, conn.pool->password));
        warn(*conn.pool, what);
        complete(ticket, nullptr);
        return;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_INTEGER && r->element[1]->type == REDIS_REPLY_INTEGER &&
        r->element[1]->integer >= 0) {
        shm::RateDecision d =
            shm::make_decision(it->second.params, r->element[0]->integer == 1,
                               static_cast<std::uint64_t>(r->element[1]->integer));
        complete(ticket, &d);
        return;
    }
    warn(*conn.pool, "unexpected reply to the rate-limit script");
    complete(ticket, nullptr);
}

// Calls the waiter once, after forgetting the ticket (the waiter may start or cancel others).
void RedisLimiter::complete(std::uint64_t ticket, const shm::RateDecision* decision) {
    auto it = pending_.find(ticket);
    if (it == pending_.end()) return;
    RateLimitWaiter* waiter = it->second.waiter;
    shm::RateDecision d;
    if (decision) {
        d = *decision;
    } else {
        d.limit = it->second.params.burst;
        ++errors_;
    }
    pending_.erase(it);
    waiter->on_rate_decision(d, decision == nullptr);
}

void RedisLimiter::fail_later(std::uint64_t ticket) {
    deferred_.push_back(ticket);
    if (deferred_event_) ::event_active(deferred_event_.get(), EV_TIMEOUT, 0);
}

void RedisLimiter::on_deferred(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<RedisLimiter*>(arg);
    std::vector<std::uint64_t> tickets;
    tickets.swap(self->deferred_);
    for (std::uint64_t ticket : tickets) self->complete(ticket, nullptr);
}

// --- timeouts ----------------------------------------------------------------------------------

void RedisLimiter::schedule_timeout(config::Millis timeout, std::uint64_t ticket) {
    timeout = std::max(timeout, config::Millis(1));
    TimeoutQueue* queue = nullptr;
    for (auto& q : timeouts_)
        if (q->duration == timeout) queue = q.get();
    if (!queue) {
        auto q = std::make_unique<TimeoutQueue>();
        q->owner = this;
        q->duration = timeout;
        q->timer.reset(::evtimer_new(base_, &RedisLimiter::on_timer, q.get()));
        queue = q.get();
        timeouts_.push_back(std::move(q));
    }
    std::uint64_t deadline = now_us() + static_cast<std::uint64_t>(timeout.count()) * 1000;
    queue->entries.emplace_back(deadline, ticket);
    if (queue->timer && !::evtimer_pending(queue->timer.get(), nullptr)) {
        timeval tv = to_timeval(timeout);
        ::evtimer_add(queue->timer.get(), &tv);
    }
}

void RedisLimiter::on_timer(evutil_socket_t, short, void* arg) {
    auto* queue = static_cast<TimeoutQueue*>(arg);
    queue->owner->run_timeouts(*queue);
}

void RedisLimiter::run_timeouts(TimeoutQueue& queue) {
    std::uint64_t now = now_us();
    while (!queue.entries.empty() && queue.entries.front().first <= now) {
        std::uint64_t ticket = queue.entries.front().second;
        queue.entries.pop_front();
        auto it = pending_.find(ticket);
        if (it == pending_.end()) continue;
        Connection* conn = it->second.conn;
        std::uint64_t sent = it->second.sent_us;
        complete(ticket, nullptr);
        // Nothing at all came back on that connection since this command went out: it is hung
        // (or its connect never completes). Close it; the next decisions open another.
        if (conn && conn->ac && conn->last_reply_us < sent) {
            warn(*conn->pool, "no reply within redis_timeout; closing the connection");
            drop(*conn, "no reply within redis_timeout");
        }
        now = now_us();
    }
    if (!queue.entries.empty() && queue.timer) {
        std::uint64_t wait_us = queue.entries.front().first - now;
        timeval tv{static_cast<time_t>(wait_us / 1'000'000),
                   static_cast<suseconds_t>(wait_us % 1'000'000)};
        ::evtimer_add(queue.timer.get(), &tv);
    }
}

// Warnings about one Redis address: at most one line per 5 s, with a count of those skipped.
void RedisLimiter::warn(Pool& pool, std::string_view what) {
    std::uint64_t now = now_us();
    if (pool.last_warn_us != 0 && now - pool.last_warn_us < kWarnEveryUs) {
        ++pool.suppressed;
        return;
    }
    if (pool.suppressed)
        spdlog::warn("rate limit Redis {}: {} ({} similar messages suppressed)", pool.address, what,
                     pool.suppressed);
    else
        spdlog::warn("rate limit Redis {}: {}", pool.address, what);
    pool.last_warn_us = now;
    pool.suppressed = 0;
}

}  // namespace proxyd::worker
