#include "master/listener_table.hpp"

#include <algorithm>
#include <cstring>

#include "common/net/listener.hpp"

namespace proxyd::master {

bool same_address(const config::SocketAddress& a, const config::SocketAddress& b) {
    return a.length == b.length && std::memcmp(&a.storage, &b.storage, a.length) == 0;
}

bool ListenerTable::prepare(const config::ServerSection& server, std::string& error) {
    rollback();
    std::size_t slots = std::max(slot_count_, static_cast<std::size_t>(server.workers));
    for (auto& entry : entries_) {
        entry.removed = std::none_of(server.listen.begin(), server.listen.end(),
                                     [&](auto& a) { return same_address(a, entry.address); });
    }
    for (const auto& address : server.listen) {
        auto it = std::find_if(entries_.begin(), entries_.end(),
                               [&](const Entry& e) { return same_address(e.address, address); });
        if (it == entries_.end()) {
            entries_.push_back(Entry{address, {}, true, false});
            it = entries_.end() - 1;
        }
        while (it->slots.size() < slots) {
            UniqueFd fd = net::bind_reuseport(address, error);
            if (!fd) {
                rollback();
                return false;
            }
            it->slots.push_back(std::move(fd));
        }
    }
    pending_slot_count_ = slots;
    return true;
}

bool ListenerTable::prepare(const config::Config& config, std::string& error) {
    if (config.tls.listen.empty()) return prepare(config.server, error);
    config::ServerSection all = config.server;
    all.listen.insert(all.listen.end(), config.tls.listen.begin(), config.tls.listen.end());
    return prepare(all, error);
}

void ListenerTable::commit() {
    for (auto& entry : entries_) {
        entry.pending = false;
        if (entry.removed) retired_.push_back(std::move(entry));
    }
    std::erase_if(entries_, [](const Entry& e) { return e.removed; });
    slot_count_ = std::max(slot_count_, pending_slot_count_);
}

void ListenerTable::rollback() {
    std::erase_if(entries_, [](const Entry& e) { return e.pending; });
    for (auto& entry : entries_) {
        entry.removed = false;
        // Extra slots bound for a larger worker count that did not happen.
        while (entry.slots.size() > slot_count_) entry.slots.pop_back();
    }
    pending_slot_count_ = slot_count_;
}

void ListenerTable::close_all() {
    entries_.clear();
    retired_.clear();
}

void ListenerTable::adopt(Entry entry) {
    entry.pending = false;
    entry.removed = false;
    slot_count_ = std::max(slot_count_, entry.slots.size());
    pending_slot_count_ = slot_count_;
    entries_.push_back(std::move(entry));
}

std::size_t ListenerTable::bound_slot_count() const {
    std::size_t count = 0;
    for (const auto& entry : entries_) count = std::max(count, entry.slots.size());
    return count;
}

std::vector<int> ListenerTable::slots_polled_by(int slot, int workers, std::size_t slot_count) {
    std::vector<int> slots{slot};
    for (int k = workers; k < static_cast<int>(slot_count); ++k) {
        if (k % workers == slot) slots.push_back(k);
    }
    return slots;
}

std::vector<int> ListenerTable::fds_of(const std::vector<int>& slots) const {
    std::vector<int> fds;
    for (const auto& entry : entries_) {
        if (entry.removed) continue;
        for (int slot : slots) {
            if (slot < static_cast<int>(entry.slots.size())) {
                fds.push_back(entry.slots[static_cast<std::size_t>(slot)].get());
            }
        }
    }
    return fds;
}

}  // namespace proxyd::master
