#include "worker/upstream_selector.hpp"

#include <doctest.h>

using namespace proxyd;
using worker::TriedServers;
using worker::UpstreamSelector;
using Outcome = UpstreamSelector::Outcome;
using namespace std::chrono_literals;

namespace {

struct Fixture {
    Fixture(int servers = 2, int max_connections = 0) {
        state = shm::UpstreamState::create("test-upstreams");
        REQUIRE(state.valid());
        config::Upstream upstream;
        upstream.name = "api";
        for (int i = 0; i < servers; ++i) {
            config::UpstreamServer server;
            server.id = std::to_string(i);
            server.id.insert(0, 1, 's');
            server.state_index = static_cast<std::uint32_t>(i);
            server.max_connections = max_connections;
            upstream.servers.push_back(server);
        }
        config.upstreams.push_back(upstream);
        tried.reset(static_cast<std::size_t>(servers));
    }
    UpstreamSelector::Pick pick(UpstreamSelector& selector) {
        return selector.pick(0, config::Balance::RoundRobin, 0, 0, tried);
    }
    shm::ServerState& server(int i) { return state->servers[i]; }

    shm::UpstreamState state;
    config::Config config;
    TriedServers tried;
};

}  // namespace

TEST_CASE("three consecutive failures open a server's circuit for every worker") {
    Fixture f;
    UpstreamSelector worker_a(f.config, &*f.state, 0);
    UpstreamSelector worker_b(f.config, &*f.state, 1);
    for (int i = 0; i < 3; ++i) {
        worker_a.begin(0, 0);
        worker_a.report(0, 0, false, false, 1ms);
        worker_a.release(0, 0, false);
    }
    CHECK(f.server(0).circuit.load() == static_cast<std::uint8_t>(shm::Circuit::Open));
    for (int i = 0; i < 10; ++i) {
        auto pick = f.pick(worker_b);  // another worker sees it at once
        REQUIRE(pick.outcome == Outcome::Picked);
        CHECK(pick.server == 1);
    }
}

TEST_CASE("a half-open circuit lets exactly one trial through; success closes it") {
    Fixture f(1);
    UpstreamSelector a(f.config, &*f.state, 0);
    UpstreamSelector b(f.config, &*f.state, 1);
    f.server(0).circuit = static_cast<std::uint8_t>(shm::Circuit::Open);
    f.server(0).open_until_ms = shm::monotonic_ms() + 60'000;
    CHECK(f.pick(a).outcome == Outcome::NoneUsable);
    f.server(0).open_until_ms = shm::monotonic_ms() - 1;  // the backoff has passed
    auto trial = f.pick(a);
    REQUIRE(trial.outcome == Outcome::Picked);
    CHECK(trial.trial);
    CHECK(f.pick(b).outcome == Outcome::NoneUsable);  // one trial across workers
    a.begin(0, 0);
    a.report(0, 0, true, true, 2ms);
    a.release(0, 0, false);
    CHECK(f.server(0).circuit.load() == static_cast<std::uint8_t>(shm::Circuit::Closed));
    auto after = f.pick(b);
    CHECK(after.outcome == Outcome::Picked);
    CHECK_FALSE(after.trial);
}

TEST_CASE("a failed trial opens the circuit again, for longer") {
    Fixture f(1);
    UpstreamSelector a(f.config, &*f.state, 0);
    f.server(0).circuit = static_cast<std::uint8_t>(shm::Circuit::Open);
    f.server(0).times_opened = 1;
    f.server(0).open_until_ms = shm::monotonic_ms() - 1;
    auto trial = f.pick(a);
    REQUIRE(trial.trial);
    auto before = shm::monotonic_ms();
    a.begin(0, 0);
    a.report(0, 0, false, true, 1ms);
    a.release(0, 0, false);
    CHECK(f.server(0).circuit.load() == static_cast<std::uint8_t>(shm::Circuit::Open));
    CHECK(f.server(0).open_until_ms.load() >= before + 2000);  // 1 s doubled
    CHECK(f.server(0).trial_in_flight.load() == 0);
}

TEST_CASE("an abandoned trial lets another one go") {
    Fixture f(1);
    UpstreamSelector a(f.config, &*f.state, 0);
    f.server(0).circuit = static_cast<std::uint8_t>(shm::Circuit::Open);
    f.server(0).open_until_ms = shm::monotonic_ms() - 1;
    REQUIRE(f.pick(a).trial);
    a.begin(0, 0);
    a.release(0, 0, /*unjudged_trial=*/true);
    CHECK(f.pick(a).trial);
}

TEST_CASE("active counts are global and max_connections makes servers full") {
    Fixture f(2, 1);
    UpstreamSelector a(f.config, &*f.state, 0);
    UpstreamSelector b(f.config, &*f.state, 1);
    auto first = f.pick(a);
    REQUIRE(first.outcome == Outcome::Picked);
    a.begin(0, first.server);
    auto second = f.pick(b);
    REQUIRE(second.outcome == Outcome::Picked);
    CHECK(second.server != first.server);  // the first one is full, seen from another worker
    b.begin(0, second.server);
    CHECK(f.pick(a).outcome == Outcome::AllFull);
    a.release(0, first.server, false);
    CHECK(f.pick(b).outcome == Outcome::Picked);
    CHECK(f.server(static_cast<int>(first.server)).active.load() == 0);
}

TEST_CASE("unhealthy servers are skipped; none usable is reported") {
    Fixture f(2);
    UpstreamSelector a(f.config, &*f.state, 0);
    f.server(0).unhealthy = 1;
    for (int i = 0; i < 5; ++i) CHECK(f.pick(a).server == 1);
    f.server(1).unhealthy = 1;
    CHECK(f.pick(a).outcome == Outcome::NoneUsable);
}

TEST_CASE("tried servers are not picked again for the same request") {
    Fixture f(3);
    UpstreamSelector a(f.config, &*f.state, 0);
    for (int i = 0; i < 3; ++i) {
        auto pick = f.pick(a);
        REQUIRE(pick.outcome == Outcome::Picked);
        f.tried.mark(pick.server);
    }
    CHECK(f.pick(a).outcome == Outcome::NoneUsable);
}

TEST_CASE("latency EWMA is kept per server") {
    Fixture f(1);
    UpstreamSelector a(f.config, &*f.state, 0);
    a.begin(0, 0);
    a.report(0, 0, true, false, 1000us);
    a.release(0, 0, false);
    CHECK(f.server(0).ewma_us.load() == 1000);
    a.begin(0, 0);
    a.report(0, 0, true, false, 2000us);
    a.release(0, 0, false);
    CHECK(f.server(0).ewma_us.load() == 1200);
}
