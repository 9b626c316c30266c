// The master's listening sockets: for every listen address, one SO_REUSEPORT socket per worker
// slot, kept for the master's whole life.
//
// Invariants:
// - A slot's sockets are never closed while the master runs with that address: closing a
//   reuseport socket resets the connections in its queue. When the worker count goes down, the
//   sockets of the retired slots stay open and a surviving worker polls them (adoption), so no
//   socket exists that nobody polls.
// - Changes are two-phase: prepare() binds what a new config needs beside the current sockets;
//   commit() makes them current (and retires addresses the config dropped), rollback() closes the
//   new ones and leaves everything as it was.
#pragma once

#include <string>
#include <vector>

#include "common/config/types.hpp"
#include "common/util/unique_fd.hpp"

namespace proxyd::master {

class ListenerTable {
  public:
    struct Entry {
        config::SocketAddress address;
        std::vector<UniqueFd> slots;  // index = worker slot
        bool pending = false;         // bound by prepare(), not committed yet
        bool removed = false;         // the pending config no longer lists it
    };

    // Binds every address of `server` for slots [0, max(slot_count, server.workers)).
    bool prepare(const config::ServerSection& server, std::string& error);
    // The same for every listener of `config`: server.listen and [tls] listen.
    bool prepare(const config::Config& config, std::string& error);
    void commit();
    void rollback();
    // Sockets of addresses dropped by committed configs: closed once no old worker needs them.
    void close_retired() { retired_.clear(); }
    bool has_retired() const { return !retired_.empty(); }
    void close_all();

    // For a new master taking over: the received sockets, matched by address.
    void adopt(Entry entry);

    std::size_t slot_count() const { return slot_count_; }
    // Slots with sockets bound, pending ones included (a transition to more workers).
    std::size_t bound_slot_count() const;
    // The slots a worker in `slot` polls when `workers` workers run: its own, and the retired
    // slots k >= workers with k % workers == slot.
    static std::vector<int> slots_polled_by(int slot, int workers, std::size_t slot_count);
    // Every socket (all addresses, pending ones included) of the given slots.
    std::vector<int> fds_of(const std::vector<int>& slots) const;
    const std::vector<Entry>& entries() const { return entries_; }

  private:
    std::vector<Entry> entries_;
    std::vector<Entry> retired_;
    std::size_t slot_count_ = 0;
    std::size_t pending_slot_count_ = 0;
};

bool same_address(const config::SocketAddress& a, const config::SocketAddress& b);

}  // namespace proxyd::master
