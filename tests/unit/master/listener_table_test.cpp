#include "master/listener_table.hpp"

#include <doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/config/units.hpp"

using namespace proxyd;
using master::ListenerTable;

namespace {

int free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    ::close(fd);
    return ntohs(addr.sin_port);
}

config::ServerSection server_with(std::vector<int> ports, int workers) {
    config::ServerSection server;
    for (int port : ports) {
        config::SocketAddress address;
        std::string error;
        REQUIRE(config::parse_socket_address("127.0.0.1:" + std::to_string(port), address, error));
        server.listen.push_back(address);
    }
    server.workers = workers;
    return server;
}

}  // namespace

TEST_CASE("slots of a scaled-down table are polled by survivors, each exactly once") {
    CHECK(ListenerTable::slots_polled_by(0, 1, 4) == std::vector<int>{0, 1, 2, 3});
    CHECK(ListenerTable::slots_polled_by(0, 3, 4) == std::vector<int>{0, 3});
    CHECK(ListenerTable::slots_polled_by(1, 3, 4) == std::vector<int>{1});
    CHECK(ListenerTable::slots_polled_by(2, 2, 2) == std::vector<int>{2});
    for (int workers = 1; workers <= 6; ++workers) {
        std::vector<int> seen(6, 0);
        for (int slot = 0; slot < workers; ++slot) {
            for (int k : ListenerTable::slots_polled_by(slot, workers, 6)) seen[k]++;
        }
        for (int k = 0; k < 6; ++k)
            CHECK_MESSAGE(seen[k] == 1, "workers=" << workers << " k=" << k);
    }
}

TEST_CASE("prepare binds beside the current sockets; rollback closes only what it added") {
    int port_a = free_port();
    int port_b = free_port();
    ListenerTable table;
    std::string error;
    REQUIRE(table.prepare(server_with({port_a}, 2), error));
    table.commit();
    CHECK(table.slot_count() == 2);
    auto before = table.fds_of({0, 1});
    REQUIRE(before.size() == 2);

    REQUIRE(table.prepare(server_with({port_a, port_b}, 4), error));
    CHECK(table.bound_slot_count() == 4);
    CHECK(table.fds_of({0, 1, 2, 3}).size() == 8);
    table.rollback();
    CHECK(table.slot_count() == 2);
    CHECK(table.fds_of({0, 1, 2, 3}) == before);  // the same sockets, nothing closed

    REQUIRE(table.prepare(server_with({port_b}, 1), error));  // drop a, add b
    CHECK(table.fds_of({0, 1}).size() == 2);                  // only b's sockets for new workers
    table.commit();
    CHECK(table.has_retired());
    CHECK(table.slot_count() == 2);  // slots never shrink: slot 1 is adopted by worker 0
    CHECK(table.entries().size() == 1);
    table.close_retired();
    CHECK_FALSE(table.has_retired());
}

TEST_CASE("prepare fails cleanly when an address can't be bound") {
    int port = free_port();
    int blocker = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(blocker, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(blocker, 1) == 0);  // no SO_REUSEPORT: nobody else may bind it
    ListenerTable table;
    std::string error;
    CHECK_FALSE(table.prepare(server_with({port}, 1), error));
    CHECK(error.find("bind") != std::string::npos);
    CHECK(table.entries().empty());
    ::close(blocker);
}
