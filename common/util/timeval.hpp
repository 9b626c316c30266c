// libevent takes timeouts as struct timeval; the config holds milliseconds.
#pragma once

#include <sys/time.h>

#include <chrono>

namespace proxyd {

inline timeval to_timeval(std::chrono::milliseconds ms) {
    return {static_cast<time_t>(ms.count() / 1000),
            static_cast<suseconds_t>((ms.count() % 1000) * 1000)};
}

}  // namespace proxyd
