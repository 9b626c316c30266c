#include "worker/rate_limit/redis_limiter.hpp"

#include <arpa/inet.h>
#include <doctest.h>
#include <event2/event.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/util/event_ptr.hpp"
#include "common/util/unique_fd.hpp"

using namespace proxyd;
using worker::RedisLimiter;

namespace {

constexpr const char* kRedisServer = "/usr/bin/redis-server";

std::uint64_t ms_since(std::chrono::steady_clock::time_point t0) {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
            .count());
}

int free_port() {
    UniqueFd s(::socket(AF_INET, SOCK_STREAM, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len) == 0);
    return ntohs(a.sin_port);
}

bool port_accepts(int port) {
    UniqueFd s(::socket(AF_INET, SOCK_STREAM, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return ::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
}

// A redis-server of our own on 127.0.0.1, killed by pid when the test ends.
class RedisServer {
  public:
    static bool available() { return ::access(kRedisServer, X_OK) == 0; }

    explicit RedisServer(std::string password = "", int port = 0)
        : password_(std::move(password)), port_(port) {
        start();
    }
    ~RedisServer() { kill(); }

    void start() {
        if (port_ == 0) port_ = free_port();
        char dir_template[] = "/tmp/proxyd-redis-XXXXXX";
        REQUIRE(::mkdtemp(dir_template) != nullptr);
        dir_ = dir_template;
        std::string port = std::to_string(port_);
        pid_ = ::fork();
        REQUIRE(pid_ >= 0);
        if (pid_ == 0) {
            int null = ::open("/dev/null", O_WRONLY);
            ::dup2(null, 1);
            ::dup2(null, 2);
            std::vector<const char*> argv = {kRedisServer, "--port", port.c_str(), "--bind",
                                             "127.0.0.1",  "--save", "",           "--appendonly",
                                             "no",         "--dir",  dir_.c_str()};
            if (!password_.empty()) {
                argv.push_back("--requirepass");
                argv.push_back(password_.c_str());
            }
            argv.push_back(nullptr);
            ::execv(kRedisServer, const_cast<char* const*>(argv.data()));
            ::_exit(127);
        }
        auto t0 = std::chrono::steady_clock::now();
        while (!port_accepts(port_)) {
            REQUIRE(ms_since(t0) < 5000);
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }

    void kill() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
            pid_ = -1;
        }
        if (!dir_.empty()) {
            std::system(("rm -rf " + dir_).c_str());
            dir_.clear();
        }
    }

    int port() const { return port_; }

    // A blocking client for checks from the test (never used by proxyd).
    redisReply* command(const char* format, const char* arg) {
        redisContext* c = ::redisConnect("127.0.0.1", port_);
        REQUIRE(c != nullptr);
        REQUIRE(c->err == 0);
        if (!password_.empty()) ::freeReplyObject(::redisCommand(c, "AUTH %s", password_.c_str()));
        auto* r = static_cast<redisReply*>(::redisCommand(c, format, arg));
        ::redisFree(c);
        return r;
    }

  private:
    std::string password_;
    std::string dir_;
    int port_ = 0;
    pid_t pid_ = -1;
};

config::SocketAddress address(int port) {
    config::SocketAddress a;
    a.text = "127.0.0.1:" + std::to_string(port);
    auto* in = reinterpret_cast<sockaddr_in*>(&a.storage);
    in->sin_family = AF_INET;
    in->sin_port = htons(static_cast<std::uint16_t>(port));
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.length = sizeof(sockaddr_in);
    return a;
}

config::RateLimit limit(int port, int burst, int rpm = 60, const std::string& name = "api") {
    config::RateLimit l;
    l.name = name;
    l.requests_per_minute = rpm;
    l.burst = burst;
    l.store = config::RateLimit::Store::Redis;
    l.redis = address(port);
    l.redis_timeout = config::Millis(250);
    return l;
}

struct Result {
    shm::RateDecision decision;
    bool error;
};

class Collector final : public worker::RateLimitWaiter {
  public:
    void on_rate_decision(const shm::RateDecision& d, bool redis_error) override {
        results.push_back({d, redis_error});
    }
    std::vector<Result> results;
};

// The worker's loop: one event_base, run until pred() or the time limit.
class Loop {
  public:
    Loop() : base_(::event_base_new()) {
        tick_.reset(::event_new(
            base_.get(), -1, EV_PERSIST, [](evutil_socket_t, short, void*) {}, nullptr));
        timeval tv{0, 5000};
        ::event_add(tick_.get(), &tv);
    }
    ~Loop() { tick_.reset(); }
    event_base* base() { return base_.get(); }
    bool run_until(const std::function<bool()>& pred, std::uint64_t limit_ms = 3000) {
        auto t0 = std::chrono::steady_clock::now();
        while (!pred()) {
            if (ms_since(t0) > limit_ms) return false;
            ::event_base_loop(base_.get(), EVLOOP_ONCE);
        }
        return true;
    }
    void run_for(std::uint64_t ms) {
        run_until([] { return false; }, ms);
    }

  private:
    EventBasePtr base_;
    EventPtr tick_;
};

int count_allowed(const Collector& c) {
    int n = 0;
    for (const auto& r : c.results) n += !r.error && r.decision.allowed;
    return n;
}

}  // namespace

TEST_CASE("redis GCRA pieces: script SHA-1, key names") {
    CHECK(worker::redis_gcra::sha1_hex("abc") == "a9993e364706816aba3e25717850c26c9cd0d89d");
    CHECK(worker::redis_gcra::sha1_hex("") == "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    const std::string& sha = worker::redis_gcra::script_sha1();
    CHECK(sha.size() == 40);
    CHECK(sha == worker::redis_gcra::sha1_hex(worker::redis_gcra::script()));
    CHECK(worker::redis_gcra::script().find("redis.call('TIME')") != std::string_view::npos);
    CHECK(worker::redis_gcra::key("per_ip", "10.0.0.1") == "proxyd:rl:per_ip:10.0.0.1");
    CHECK(worker::redis_gcra::key("k", "") == "proxyd:rl:k:");
    CHECK(worker::redis_gcra::key("k", "a:b c") == "proxyd:rl:k:a:b c");
}

TEST_CASE(
    "redis limiter: an unreachable Redis is an error, reported later, never inside "
    "decide()") {
    Loop loop;
    RedisLimiter limiter(loop.base());
    Collector c;
    // A bound port that is not listening: connect is refused.
    UniqueFd bound(::socket(AF_INET, SOCK_STREAM, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(bound.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    ::getsockname(bound.get(), reinterpret_cast<sockaddr*>(&a), &len);
    auto l = limit(ntohs(a.sin_port), 5);
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 3; ++i) {
        CHECK(limiter.decide(l, "k", c) != 0);
        CHECK(c.results.empty());
    }
    REQUIRE(loop.run_until([&] { return c.results.size() == 3; }));
    CHECK(ms_since(t0) < 250);  // refused: no need to wait for the timeout
    for (const auto& r : c.results) {
        CHECK(r.error);
        CHECK(r.decision.limit == 5);
    }
    CHECK(limiter.errors() == 3);
    CHECK(limiter.in_flight() == 0);
}

TEST_CASE("redis limiter: a server that never answers times out after redis_timeout") {
    Loop loop;
    RedisLimiter limiter(loop.base());
    Collector c;
    // Listening but never reading: the connect completes, the script call gets no reply.
    UniqueFd silent(::socket(AF_INET, SOCK_STREAM, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(silent.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(silent.get(), 16) == 0);
    socklen_t len = sizeof a;
    ::getsockname(silent.get(), reinterpret_cast<sockaddr*>(&a), &len);
    auto l = limit(ntohs(a.sin_port), 5);
    l.redis_timeout = config::Millis(200);
    auto t0 = std::chrono::steady_clock::now();
    limiter.decide(l, "k", c);
    REQUIRE(loop.run_until([&] { return c.results.size() == 1; }));
    std::uint64_t elapsed = ms_since(t0);
    MESSAGE("timed out after " << elapsed << " ms (redis_timeout 200 ms)");
    CHECK(elapsed >= 190);
    CHECK(elapsed < 700);
    CHECK(c.results[0].error);
    CHECK(limiter.errors() == 1);
}

TEST_CASE("redis limiter against a real redis-server") {
    if (!RedisServer::available()) {
        MESSAGE("SKIPPED: " << kRedisServer << " is not installed (apt-get install redis-server)");
        return;
    }
    RedisServer redis;
    Loop loop;
    auto l = limit(redis.port(), 5);

    SUBCASE("burst allowed, then denied, with the numbers of the local store") {
        RedisLimiter limiter(loop.base());
        Collector c;
        for (int i = 0; i < 8; ++i) limiter.decide(l, "client-1", c);
        CHECK(c.results.empty());
        REQUIRE(loop.run_until([&] { return c.results.size() == 8; }));
        CHECK(count_allowed(c) == 5);
        std::multiset<int> remaining;
        for (const auto& r : c.results) {
            CHECK_FALSE(r.error);
            CHECK(r.decision.limit == 5);
            if (r.decision.allowed) {
                remaining.insert(r.decision.remaining);
                CHECK(r.decision.reset_seconds >= 1);
                CHECK(r.decision.reset_seconds <= 5);
            } else {
                CHECK(r.decision.remaining == 0);
                CHECK(r.decision.retry_after_seconds == 1);
                CHECK(r.decision.reset_seconds == 5);
            }
        }
        CHECK(remaining == std::multiset<int>{0, 1, 2, 3, 4});
        CHECK(limiter.errors() == 0);
        // The first call met NOSCRIPT and fell back to EVAL, which loaded the script under the
        // SHA-1 computed here; the key expires once the bucket is full again (<= 5 s).
        redisReply* r =
            redis.command("SCRIPT EXISTS %s", worker::redis_gcra::script_sha1().c_str());
        REQUIRE(r);
        REQUIRE(r->type == REDIS_REPLY_ARRAY);
        CHECK(r->element[0]->integer == 1);
        ::freeReplyObject(r);
        r = redis.command("PTTL %s", "proxyd:rl:api:client-1");
        REQUIRE(r);
        CHECK(r->integer > 4000);
        CHECK(r->integer <= 5001);
        ::freeReplyObject(r);
        // Another key has its own bucket; the first stays denied (EVALSHA path now).
        Collector c2;
        limiter.decide(l, "client-2", c2);
        limiter.decide(l, "client-1", c2);
        REQUIRE(loop.run_until([&] { return c2.results.size() == 2; }));
        CHECK(c2.results[0].decision.allowed != c2.results[1].decision.allowed);
        CHECK(count_allowed(c2) == 1);
    }

    SUBCASE("two limiters (two workers or hosts) share one bucket") {
        RedisLimiter a(loop.base()), b(loop.base());
        Collector c;
        auto l10 = limit(redis.port(), 10, 60, "shared");
        for (int i = 0; i < 15; ++i) {
            a.decide(l10, "k", c);
            b.decide(l10, "k", c);
        }
        REQUIRE(loop.run_until([&] { return c.results.size() == 30; }));
        CHECK(count_allowed(c) == 10);
        CHECK(a.errors() + b.errors() == 0);
    }

    SUBCASE("refill: one more after 60/rpm seconds") {
        RedisLimiter limiter(loop.base());
        Collector c;
        auto fast = limit(redis.port(), 1, 600, "fast");  // T = 100 ms
        limiter.decide(fast, "k", c);
        limiter.decide(fast, "k", c);
        REQUIRE(loop.run_until([&] { return c.results.size() == 2; }));
        CHECK(count_allowed(c) == 1);
        loop.run_for(150);
        limiter.decide(fast, "k", c);
        REQUIRE(loop.run_until([&] { return c.results.size() == 3; }));
        CHECK(c.results[2].decision.allowed);
    }

    SUBCASE("a cancelled decision never calls its waiter") {
        RedisLimiter limiter(loop.base());
        Collector cancelled, kept;
        std::uint64_t t1 = limiter.decide(l, "c", cancelled);
        std::uint64_t t2 = limiter.decide(l, "c", kept);
        CHECK(t1 != t2);
        limiter.cancel(t1);
        REQUIRE(loop.run_until([&] { return kept.results.size() == 1; }));
        loop.run_for(100);
        CHECK(cancelled.results.empty());
        CHECK(limiter.in_flight() == 0);
        limiter.cancel(t1);  // twice, or after completion: harmless
        limiter.cancel(t2);
    }

    SUBCASE("replies that arrive after the limiter is destroyed touch nothing") {
        Collector c;
        {
            RedisLimiter limiter(loop.base());
            for (int i = 0; i < 10; ++i) limiter.decide(l, "gone", c);
            loop.run_for(1);  // connected and sent, perhaps some replies read
        }
        loop.run_for(100);  // anything left arrives now (sanitizers watch)
        CHECK(c.results.size() <= 10);
    }

    SUBCASE("Redis killed: decisions become errors within redis_timeout, then recover") {
        RedisLimiter limiter(loop.base());
        Collector c;
        limiter.decide(l, "before", c);
        REQUIRE(loop.run_until([&] { return c.results.size() == 1; }));
        CHECK_FALSE(c.results[0].error);
        redis.kill();
        auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < 5; ++i) limiter.decide(l, "after", c);
        REQUIRE(loop.run_until([&] { return c.results.size() == 6; }));
        std::uint64_t elapsed = ms_since(t0);
        MESSAGE("5 decisions failed within " << elapsed << " ms of Redis being killed");
        CHECK(elapsed <= 400);
        for (std::size_t i = 1; i < c.results.size(); ++i) CHECK(c.results[i].error);
        CHECK(limiter.errors() == 5);
    }
}

TEST_CASE("redis limiter reconnects after Redis comes back") {
    if (!RedisServer::available()) {
        MESSAGE("SKIPPED: " << kRedisServer << " is not installed");
        return;
    }
    auto redis = std::make_unique<RedisServer>();
    int port = redis->port();
    Loop loop;
    RedisLimiter limiter(loop.base());
    Collector c;
    auto l = limit(port, 100);
    limiter.decide(l, "k", c);
    REQUIRE(loop.run_until([&] { return c.results.size() == 1; }));
    CHECK_FALSE(c.results[0].error);
    redis.reset();
    limiter.decide(l, "k", c);
    REQUIRE(loop.run_until([&] { return c.results.size() == 2; }));
    CHECK(c.results[1].error);
    // A new server on the same port (a restart): decisions succeed again once the backoff of the
    // pool's connections (100 ms, doubling to 2 s) lets them reconnect.
    redis = std::make_unique<RedisServer>("", port);
    auto t0 = std::chrono::steady_clock::now();
    bool ok = false;
    while (!ok && ms_since(t0) < 5000) {
        std::size_t before = c.results.size();
        limiter.decide(l, "k", c);
        REQUIRE(loop.run_until([&] { return c.results.size() == before + 1; }));
        ok = !c.results.back().error;
        if (!ok) loop.run_for(50);
    }
    MESSAGE("decisions succeed again " << ms_since(t0) << " ms after Redis restarted");
    CHECK(ok);
}

TEST_CASE("redis limiter: AUTH with redis_password; a wrong one is an error, never logged") {
    if (!RedisServer::available()) {
        MESSAGE("SKIPPED: " << kRedisServer << " is not installed");
        return;
    }
    const std::string password = "s3cret-Pa55word";
    RedisServer redis(password);
    Loop loop;
    auto log_stream = std::make_shared<std::ostringstream>();
    auto old_logger = spdlog::default_logger();
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(*log_stream);
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
    spdlog::set_level(spdlog::level::debug);

    RedisLimiter limiter(loop.base());
    Collector good, bad, none;
    auto l = limit(redis.port(), 3);
    l.redis_password = password;
    limiter.decide(l, "k", good);
    auto wrong = limit(redis.port(), 3);
    wrong.redis_password = "wrong-" + password;
    limiter.decide(wrong, "k", bad);
    auto missing = limit(redis.port(), 3);
    limiter.decide(missing, "k", none);
    REQUIRE(loop.run_until([&] {
        return good.results.size() == 1 && bad.results.size() == 1 && none.results.size() == 1;
    }));
    spdlog::set_default_logger(old_logger);

    CHECK_FALSE(good.results[0].error);
    CHECK(good.results[0].decision.allowed);
    CHECK(bad.results[0].error);
    CHECK(none.results[0].error);
    std::string log = log_stream->str();
    MESSAGE("log: " << log);
    CHECK(log.find("AUTH") != std::string::npos);
    CHECK(log.find(password) == std::string::npos);
}
