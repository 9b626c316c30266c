// ip_hash: a client (its key_hash) keeps going to the same server. Implemented as weighted
// rendezvous hashing (each server scores the key, the highest wins): the mapping depends only on
// the key and the servers' ids, so it is stable for a given server set, and when the chosen
// server is down its keys fall back to their second choice, spread over all the others, and
// return when it comes back. No state, so no rebuild().
#pragma once

#include "worker/balancer/balancer.hpp"

namespace proxyd::worker {

class IpHash final : public Balancer {
  public:
    std::optional<std::size_t> pick(std::span<const ServerView> servers,
                                    std::span<const bool> excluded,
                                    const PickContext& context) override;
};

// The rendezvous choice itself, also consistent_hash's answer before its ring is built.
std::optional<std::size_t> rendezvous_pick(std::span<const ServerView> servers,
                                           std::span<const bool> excluded, Tier tier,
                                           std::uint64_t key_hash);

}  // namespace proxyd::worker
