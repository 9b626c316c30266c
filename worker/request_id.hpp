// X-Request-Id: a client's id is kept when it is 1-128 characters of [A-Za-z0-9._-]; otherwise the
// worker makes one: 32 hex digits from a per-worker random seed and a counter, unique across
// workers and restarts without a syscall per request.
#pragma once

#include <cstdint>
#include <string_view>

namespace proxyd::worker {

bool is_valid_request_id(std::string_view id);

class RequestIdGenerator {
  public:
    RequestIdGenerator();  // seeds from getrandom()
    explicit RequestIdGenerator(std::uint64_t seed) : seed_(seed) {}
    // The view is valid until the next call.
    std::string_view next();

  private:
    std::uint64_t seed_;
    std::uint64_t counter_ = 0;
    char text_[32];
};

}  // namespace proxyd::worker
