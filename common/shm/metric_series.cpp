#include "common/shm/metric_series.hpp"

namespace proxyd::shm {

std::size_t bucket_of(std::uint64_t micros) {
    for (std::size_t i = 0; i < std::size(kBucketBounds); ++i) {
        if (static_cast<double>(micros) <= kBucketBounds[i] * 1e6) return i;
    }
    return kBucketCount - 1;
}

}  // namespace proxyd::shm
