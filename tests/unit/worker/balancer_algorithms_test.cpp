#include <doctest.h>

#include <limits>
#include <map>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "worker/balancer/adaptive.hpp"
#include "worker/balancer/balancer.hpp"
#include "worker/balancer/consistent_hash.hpp"
#include "worker/balancer/ip_hash.hpp"
#include "worker/balancer/least_conn.hpp"
#include "worker/balancer/least_time.hpp"
#include "worker/balancer/round_robin.hpp"
#include "worker/balancer/weighted_least_conn.hpp"
#include "worker/balancer/weighted_round_robin.hpp"

using namespace proxyd;
using worker::PickContext;
using worker::ServerView;

namespace {

constexpr config::Balance kAlgorithms[] = {
    config::Balance::RoundRobin, config::Balance::WeightedRoundRobin,
    config::Balance::LeastConn,  config::Balance::WeightedLeastConn,
    config::Balance::IpHash,     config::Balance::ConsistentHash,
    config::Balance::LeastTime,  config::Balance::Adaptive,
};

// span<const bool> needs real bools in a row, which std::vector<bool> is not.
class Mask {
  public:
    explicit Mask(std::size_t size) : bits_(new bool[size]()), size_(size) {}
    bool& operator[](std::size_t i) { return bits_[i]; }
    std::span<const bool> span() const { return {bits_.get(), size_}; }

  private:
    std::unique_ptr<bool[]> bits_;
    std::size_t size_;
};

ServerView server(const std::string& id, int weight = 1) {
    ServerView view;
    view.weight = weight;
    view.id_hash = worker::hash_bytes(id);
    return view;
}

std::vector<ServerView> servers_with_weights(std::initializer_list<int> weights) {
    std::vector<ServerView> servers;
    for (int weight : weights)
        servers.push_back(server("srv-" + std::to_string(servers.size()), weight));
    return servers;
}

std::vector<ServerView> equal_servers(std::size_t count) {
    std::vector<ServerView> servers;
    for (std::size_t i = 0; i < count; ++i) servers.push_back(server("srv-" + std::to_string(i)));
    return servers;
}

// The sequence of picks as letters, 'a' for position 0.
std::string sequence(worker::Balancer& balancer, const std::vector<ServerView>& servers,
                     int picks) {
    Mask none(servers.size());
    std::string out;
    for (int i = 0; i < picks; ++i) {
        auto pick = balancer.pick(servers, none.span(), {});
        out += pick ? static_cast<char>('a' + *pick) : '-';
    }
    return out;
}

std::uint64_t key_hash(int key) {
    return worker::hash_bytes("key-" + std::to_string(key));
}

// Server id hash each of `keys` keys maps to.
std::vector<std::uint64_t> map_keys(worker::Balancer& balancer,
                                    const std::vector<ServerView>& servers, int keys) {
    Mask none(servers.size());
    std::vector<std::uint64_t> owners;
    for (int k = 0; k < keys; ++k) {
        PickContext context;
        context.key_hash = key_hash(k);
        auto pick = balancer.pick(servers, none.span(), context);
        owners.push_back(pick ? servers[*pick].id_hash : 0);
    }
    return owners;
}

}  // namespace

TEST_CASE("weighted round robin: nginx's smooth sequence") {
    {
        worker::WeightedRoundRobin wrr;
        auto servers = servers_with_weights({5, 1, 1});
        wrr.rebuild(servers);
        CHECK(sequence(wrr, servers, 14) == "aabacaaaabacaa");
    }
    {
        worker::WeightedRoundRobin wrr;
        auto servers = servers_with_weights({3, 2});
        wrr.rebuild(servers);
        CHECK(sequence(wrr, servers, 10) == "ababaababa");
    }
    {
        worker::WeightedRoundRobin wrr;
        auto servers = servers_with_weights({1, 1, 1});
        wrr.rebuild(servers);
        CHECK(sequence(wrr, servers, 6) == "abcabc");
    }
    {
        worker::WeightedRoundRobin wrr;
        auto servers = servers_with_weights({2, 1});
        wrr.rebuild(servers);
        CHECK(sequence(wrr, servers, 6) == "abaaba");
    }
    SUBCASE("without rebuild() the state is sized on first use, same sequence") {
        worker::WeightedRoundRobin wrr;
        CHECK(sequence(wrr, servers_with_weights({5, 1, 1}), 7) == "aabacaa");
    }
    SUBCASE("a worker offset starts later in the same cycle") {
        worker::WeightedRoundRobin wrr(1);
        auto servers = servers_with_weights({5, 1, 1});
        wrr.rebuild(servers);
        CHECK(sequence(wrr, servers, 7) == "abacaaa");
    }
}

TEST_CASE("weighted round robin: counts are proportional to weights") {
    worker::WeightedRoundRobin wrr;
    auto servers = servers_with_weights({5, 3, 2});
    wrr.rebuild(servers);
    std::map<char, int> counts;
    for (char c : sequence(wrr, servers, 1000)) counts[c]++;
    CHECK(counts['a'] == 500);
    CHECK(counts['b'] == 300);
    CHECK(counts['c'] == 200);
}

TEST_CASE("weighted round robin: an unusable server sits out, the others keep their ratio") {
    worker::WeightedRoundRobin wrr;
    auto servers = servers_with_weights({5, 1, 1});
    wrr.rebuild(servers);
    servers[1].usable = false;
    std::map<char, int> counts;
    for (char c : sequence(wrr, servers, 600)) counts[c]++;
    CHECK(counts['a'] == 500);
    CHECK(counts['b'] == 0);
    CHECK(counts['c'] == 100);

    servers[1].usable = true;  // back: its share returns at once, no burst to catch up
    counts.clear();
    const std::string after = sequence(wrr, servers, 700);
    for (char c : after) counts[c]++;
    CHECK(counts['a'] >= 495);
    CHECK(counts['a'] <= 505);
    CHECK(counts['b'] >= 95);
    CHECK(counts['b'] <= 105);
    CHECK(after.find("bb") == std::string::npos);
}

TEST_CASE("consistent hash: one of N servers leaving moves only its own keys") {
    constexpr int kKeys = 10'000;
    for (std::size_t n : {3u, 5u, 10u}) {
        CAPTURE(n);
        auto servers = equal_servers(n);
        worker::ConsistentHash ring;
        ring.rebuild(servers);
        const auto before = map_keys(ring, servers, kKeys);

        // Every server's share is close to 1/N, so no single departure moves more than that.
        std::map<std::uint64_t, int> share;
        for (auto owner : before) share[owner]++;
        CHECK(share.size() == n);

        for (std::size_t leaving = 0; leaving < n; ++leaving) {
            CAPTURE(leaving);
            // Removed from the list (positions of the others shift) and the ring rebuilt.
            std::vector<ServerView> rest;
            for (std::size_t i = 0; i < n; ++i) {
                if (i != leaving) rest.push_back(servers[i]);
            }
            worker::ConsistentHash smaller;
            smaller.rebuild(rest);
            const auto after = map_keys(smaller, rest, kKeys);
            int moved = 0;
            int survivors_moved = 0;
            for (int k = 0; k < kKeys; ++k) {
                if (after[k] != before[k]) ++moved;
                if (before[k] != servers[leaving].id_hash && after[k] != before[k]) {
                    ++survivors_moved;
                }
            }
            CHECK(moved <= static_cast<int>(kKeys * (1.0 / static_cast<double>(n) + 0.05)));
            CHECK(survivors_moved == 0);

            // Marked unusable rather than removed: the same keys move, the same others stay.
            auto down = servers;
            down[leaving].usable = false;
            const auto while_down = map_keys(ring, down, kKeys);
            CHECK(while_down == after);
        }
    }
}

TEST_CASE("consistent hash: a joining server takes keys only for itself") {
    constexpr int kKeys = 10'000;
    auto servers = equal_servers(4);
    worker::ConsistentHash ring;
    ring.rebuild(servers);
    const auto before = map_keys(ring, servers, kKeys);
    servers.push_back(server("srv-new"));
    ring.rebuild(servers);
    const auto after = map_keys(ring, servers, kKeys);
    int moved = 0;
    for (int k = 0; k < kKeys; ++k) {
        if (after[k] == before[k]) continue;
        ++moved;
        CHECK(after[k] == servers.back().id_hash);
    }
    CHECK(moved > kKeys / 5 - kKeys / 20);
    CHECK(moved < kKeys / 5 + kKeys / 20);
}

TEST_CASE("consistent hash: weights, bounded ring, stale ring falls back") {
    auto servers = servers_with_weights({3, 1});
    worker::ConsistentHash ring;
    ring.rebuild(servers);
    CHECK(ring.ring_size() == 640);
    std::map<std::uint64_t, int> share;
    for (auto owner : map_keys(ring, servers, 10'000)) share[owner]++;
    CHECK(share[servers[0].id_hash] > 7'000);
    CHECK(share[servers[0].id_hash] < 8'000);

    auto heavy = servers_with_weights({1'000'000, 1'000'000, 1});
    ring.rebuild(heavy);
    CHECK(ring.ring_size() <= 2 * 1600 + 1);

    std::vector<ServerView> many;
    for (int i = 0; i < 1000; ++i) many.push_back(server("m-" + std::to_string(i), 100));
    ring.rebuild(many);
    CHECK(ring.ring_size() <= 65'536 + 1000);

    // The list changed size without a rebuild: still a stable answer over the right servers.
    auto three = equal_servers(3);
    Mask none(3);
    PickContext context;
    context.key_hash = 42;
    auto first = ring.pick(three, none.span(), context);
    REQUIRE(first.has_value());
    CHECK(*first < 3);
    CHECK(ring.pick(three, none.span(), context) == first);
}

TEST_CASE("ip_hash: stable per key, spread over servers, deterministic fallback") {
    constexpr int kKeys = 10'000;
    auto servers = equal_servers(3);
    worker::IpHash hash;
    const auto first = map_keys(hash, servers, kKeys);
    worker::IpHash other;  // another worker, or after a restart
    CHECK(map_keys(other, servers, kKeys) == first);
    CHECK(map_keys(hash, servers, kKeys) == first);

    std::map<std::uint64_t, int> share;
    for (auto owner : first) share[owner]++;
    REQUIRE(share.size() == 3);
    for (auto& [owner, count] : share) {
        CHECK(count > kKeys / 3 - kKeys / 20);
        CHECK(count < kKeys / 3 + kKeys / 20);
    }

    // Server 0 down: its keys go elsewhere (the same place every time), the others' stay.
    auto down = servers;
    down[0].usable = false;
    const auto fallback = map_keys(hash, down, kKeys);
    CHECK(map_keys(hash, down, kKeys) == fallback);
    std::map<std::uint64_t, int> moved_to;
    for (int k = 0; k < kKeys; ++k) {
        CHECK(fallback[k] != servers[0].id_hash);
        if (first[k] != servers[0].id_hash)
            CHECK(fallback[k] == first[k]);
        else
            moved_to[fallback[k]]++;
    }
    CHECK(moved_to.size() == 2);  // spread over both survivors, not piled onto one

    auto weighted = servers_with_weights({2, 1, 1});
    share.clear();
    for (auto owner : map_keys(hash, weighted, kKeys)) share[owner]++;
    CHECK(share[weighted[0].id_hash] > kKeys / 2 - kKeys / 20);
    CHECK(share[weighted[0].id_hash] < kKeys / 2 + kKeys / 20);
}

TEST_CASE("least_conn: the least loaded server, ties take turns") {
    worker::LeastConn lc;
    auto servers = equal_servers(3);
    Mask none(3);
    servers[0].active = 5;
    servers[1].active = 2;
    servers[2].active = 7;
    for (int i = 0; i < 10; ++i) CHECK(lc.pick(servers, none.span(), {}) == 1u);

    servers[0].active = servers[1].active = servers[2].active = 0;
    std::map<std::size_t, int> counts;
    for (int i = 0; i < 300; ++i) counts[*lc.pick(servers, none.span(), {})]++;
    CHECK(counts[0] == 100);
    CHECK(counts[1] == 100);
    CHECK(counts[2] == 100);

    servers[1].active = 3;
    counts.clear();
    for (int i = 0; i < 300; ++i) counts[*lc.pick(servers, none.span(), {})]++;
    CHECK(counts[1] == 0);
    CHECK(counts[0] >= 100);
    CHECK(counts[2] >= 100);
}

TEST_CASE("weighted_least_conn: lowest active per weight, ties by weight") {
    worker::WeightedLeastConn wlc;
    auto servers = servers_with_weights({4, 1});
    wlc.rebuild(servers);
    Mask none(2);
    servers[0].active = 3;  // 0.75 per unit
    servers[1].active = 1;  // 1.0 per unit
    CHECK(wlc.pick(servers, none.span(), {}) == 0u);
    servers[0].active = 5;  // 1.25 per unit
    CHECK(wlc.pick(servers, none.span(), {}) == 1u);

    // Idle (short requests): the weights still decide the split.
    servers[0].active = servers[1].active = 0;
    std::map<std::size_t, int> counts;
    for (int i = 0; i < 500; ++i) counts[*wlc.pick(servers, none.span(), {})]++;
    CHECK(counts[0] == 400);
    CHECK(counts[1] == 100);
}

TEST_CASE("least_time prefers the faster server by a clear ratio") {
    worker::LeastTime lt;
    auto servers = equal_servers(3);
    servers[0].ewma_us = 1'000;
    servers[1].ewma_us = 5'000;
    servers[2].ewma_us = 5'000;
    Mask none(3);
    std::mt19937_64 random(7);
    std::map<std::size_t, int> counts;
    for (int i = 0; i < 3'000; ++i) {
        PickContext context;
        context.random = random();
        counts[*lt.pick(servers, none.span(), context)]++;
    }
    // Two of three are sampled each time; the fast one wins whenever it is among them (2/3).
    CHECK(counts[0] > 3 * counts[1]);
    CHECK(counts[0] > 3 * counts[2]);
    CHECK(counts[1] > 0);  // the slow ones still see some traffic

    // Under load the fast server's queue counts against it.
    servers[0].active = 10;  // 1000 × 11 > 5000 × 1
    for (int i = 0; i < 100; ++i) {
        PickContext context;
        context.random = random();
        CHECK(lt.pick(servers, none.span(), context) != 0u);
    }
}

TEST_CASE("least_time measures new servers first, but not a stuck one") {
    worker::LeastTime lt;
    auto servers = equal_servers(2);
    servers[0].ewma_us = 1'000;
    servers[1].ewma_us = 0;
    Mask none(2);
    for (std::uint64_t r = 0; r < 50; ++r) {
        PickContext context;
        context.random = r;
        CHECK(lt.pick(servers, none.span(), context) == 1u);
    }
    servers[1].active = 5;  // five requests in flight and still no answer
    for (std::uint64_t r = 0; r < 50; ++r) {
        PickContext context;
        context.random = r;
        CHECK(lt.pick(servers, none.span(), context) == 0u);
    }
}

TEST_CASE("adaptive prefers the better-performing server") {
    worker::Adaptive adaptive;
    auto servers = equal_servers(2);
    servers[0].performance = 1.0;
    servers[1].performance = 0.25;
    Mask none(2);
    CHECK(adaptive.pick(servers, none.span(), {}) == 0u);

    // Requests that stay open: load spreads, about 4:1 by performance.
    std::map<std::size_t, int> counts;
    for (int i = 0; i < 1000; ++i) {
        std::size_t pick = *adaptive.pick(servers, none.span(), {});
        counts[pick]++;
        servers[pick].active++;
    }
    CHECK(counts[0] > 3 * counts[1]);
    CHECK(counts[1] > 0);

    // Equal scores take turns; a missing report counts as unknown (1), not as 0.
    auto even = equal_servers(2);
    even[1].performance = std::numeric_limits<double>::quiet_NaN();
    counts.clear();
    for (int i = 0; i < 100; ++i) counts[*adaptive.pick(even, none.span(), {})]++;
    CHECK(counts[0] == 50);
    CHECK(counts[1] == 50);
}

TEST_CASE("backups serve only when no primary is usable and untried") {
    for (auto algorithm : kAlgorithms) {
        CAPTURE(static_cast<int>(algorithm));
        auto balancer = worker::make_balancer(algorithm, 0);
        auto servers = equal_servers(3);
        servers[2].backup = true;
        balancer->rebuild(servers);
        Mask none(3);
        std::mt19937_64 random(1);
        auto pick = [&](std::span<const bool> excluded) {
            PickContext context;
            context.key_hash = random();
            context.random = random();
            return worker::pick_server(*balancer, servers, excluded, context);
        };
        for (int i = 0; i < 200; ++i) {
            auto chosen = pick(none.span());
            REQUIRE(chosen.has_value());
            CHECK(*chosen != 2);
        }
        servers[0].usable = false;
        for (int i = 0; i < 50; ++i) CHECK(pick(none.span()) == 1u);
        Mask tried(3);
        tried[1] = true;  // the last primary failed for this request: the backup is next
        CHECK(pick(tried.span()) == 2u);
        servers[1].usable = false;
        for (int i = 0; i < 50; ++i) CHECK(pick(none.span()) == 2u);
        servers[2].usable = false;
        CHECK_FALSE(pick(none.span()).has_value());
        servers[0].usable = true;  // a primary is back: the backup is dropped again
        CHECK(pick(none.span()) == 0u);
    }
}

TEST_CASE("no algorithm returns an excluded, unusable or wrong-tier server") {
    std::mt19937_64 random(2024);
    for (auto algorithm : kAlgorithms) {
        CAPTURE(static_cast<int>(algorithm));
        auto balancer = worker::make_balancer(algorithm, 3);
        for (int round = 0; round < 300; ++round) {
            const std::size_t n = 1 + random() % 8;
            std::vector<ServerView> servers;
            Mask excluded(n);
            for (std::size_t i = 0; i < n; ++i) {
                ServerView view = server("f-" + std::to_string(i), 1 + random() % 5);
                view.usable = random() % 3 != 0;
                view.backup = random() % 4 == 0;
                view.active = static_cast<std::int64_t>(random() % 4);
                view.ewma_us = static_cast<std::uint32_t>(random() % 3 * 1000);
                view.performance = static_cast<double>(random() % 5) / 4;
                excluded[i] = random() % 4 == 0;
                servers.push_back(view);
            }
            if (round % 2 == 0) balancer->rebuild(servers);  // and sometimes a stale state
            PickContext context;
            context.key_hash = random();
            context.random = random();
            auto chosen = worker::pick_server(*balancer, servers, excluded.span(), context);
            bool primary = false, backup = false;
            for (std::size_t i = 0; i < n; ++i) {
                if (!servers[i].usable || excluded.span()[i]) continue;
                (servers[i].backup ? backup : primary) = true;
            }
            if (!chosen) {
                CHECK_FALSE(primary);
                CHECK_FALSE(backup);
                continue;
            }
            REQUIRE(*chosen < n);
            CHECK(servers[*chosen].usable);
            CHECK_FALSE(excluded.span()[*chosen]);
            CHECK(servers[*chosen].backup == !primary);
        }
    }
}

TEST_CASE("nothing usable, or no servers: nullopt") {
    for (auto algorithm : kAlgorithms) {
        CAPTURE(static_cast<int>(algorithm));
        auto balancer = worker::make_balancer(algorithm, 0);
        std::vector<ServerView> empty;
        balancer->rebuild(empty);
        CHECK_FALSE(worker::pick_server(*balancer, empty, {}, {}).has_value());
        auto servers = equal_servers(3);
        balancer->rebuild(servers);
        for (auto& s : servers) s.usable = false;
        Mask none(3);
        CHECK_FALSE(worker::pick_server(*balancer, servers, none.span(), {}).has_value());
        for (auto& s : servers) s.usable = true;
        Mask all(3);
        all[0] = all[1] = all[2] = true;
        CHECK_FALSE(worker::pick_server(*balancer, servers, all.span(), {}).has_value());
    }
}

TEST_CASE("make_balancer builds the configured algorithm") {
    using config::Balance;
    CHECK(dynamic_cast<worker::RoundRobin*>(worker::make_balancer(Balance::RoundRobin, 0).get()));
    CHECK(dynamic_cast<worker::WeightedRoundRobin*>(
        worker::make_balancer(Balance::WeightedRoundRobin, 0).get()));
    CHECK(dynamic_cast<worker::LeastConn*>(worker::make_balancer(Balance::LeastConn, 0).get()));
    CHECK(dynamic_cast<worker::WeightedLeastConn*>(
        worker::make_balancer(Balance::WeightedLeastConn, 0).get()));
    CHECK(dynamic_cast<worker::IpHash*>(worker::make_balancer(Balance::IpHash, 0).get()));
    CHECK(dynamic_cast<worker::ConsistentHash*>(
        worker::make_balancer(Balance::ConsistentHash, 0).get()));
    CHECK(dynamic_cast<worker::LeastTime*>(worker::make_balancer(Balance::LeastTime, 0).get()));
    CHECK(dynamic_cast<worker::Adaptive*>(worker::make_balancer(Balance::Adaptive, 0).get()));
}

TEST_CASE("slow start ramps the weight from 1 to the configured weight") {
    CHECK(worker::slow_start_weight(100, 0, 10'000) == 1);
    CHECK(worker::slow_start_weight(100, -5, 10'000) == 1);
    const int half = worker::slow_start_weight(100, 5'000, 10'000);
    CHECK(half >= 49);
    CHECK(half <= 51);
    CHECK(worker::slow_start_weight(100, 10'000, 10'000) == 100);
    CHECK(worker::slow_start_weight(100, 99'999, 10'000) == 100);
    CHECK(worker::slow_start_weight(100, 0, 0) == 100);
    CHECK(worker::slow_start_weight(1, 10, 10'000) == 1);
    int previous = 0;
    for (std::int64_t t = 0; t <= 10'000; t += 500) {
        const int weight = worker::slow_start_weight(100, t, 10'000);
        CHECK(weight >= previous);
        previous = weight;
    }
}

TEST_CASE("hash_bytes is pinned: changing it would remap every hashed key") {
    CHECK(worker::hash_bytes("") == worker::hash_bytes(""));
    CHECK(worker::hash_bytes("127.0.0.1") != worker::hash_bytes("127.0.0.2"));
    CHECK(worker::hash_bytes("") == 0xc3817c016ba4ff30ULL);
    CHECK(worker::hash_bytes("127.0.0.1") == 0x25f5e054ec31a55cULL);
}
