// Round robin over an upstream's servers, per worker. Each worker starts at a different offset
// so that N workers do not all send their first request to the first server.
#pragma once

#include <cstddef>

namespace proxyd::worker {

class RoundRobin {
  public:
    explicit RoundRobin(std::size_t start = 0) : next_(start) {}
    // Index of the server to try for the `attempt`-th time (0-based) for one request: the first
    // attempt advances the rotation, retries walk on from there so each server is tried once.
    std::size_t pick(std::size_t server_count, std::size_t attempt);

  private:
    std::size_t next_;
    std::size_t current_ = 0;
};

}  // namespace proxyd::worker
