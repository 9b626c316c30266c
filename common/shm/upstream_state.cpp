#include "common/shm/upstream_state.hpp"

#include <time.h>

namespace proxyd::shm {

std::int64_t monotonic_ms() {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

}  // namespace proxyd::shm
