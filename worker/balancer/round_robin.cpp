#include "worker/balancer/round_robin.hpp"

namespace proxyd::worker {

std::size_t RoundRobin::pick(std::size_t server_count, std::size_t attempt) {
    if (attempt == 0) current_ = next_++;
    return (current_ + attempt) % server_count;
}

}  // namespace proxyd::worker
