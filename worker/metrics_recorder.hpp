// The worker's side of the Prometheus metrics: finds or makes the labelled series of its stats
// slot (common/shm/metric_series.hpp) and adds to them. Series pointers are cached by config
// indices, so a steady stream of requests builds no label text and allocates nothing.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/config/types.hpp"
#include "common/shm/metric_series.hpp"

namespace proxyd::worker {

class MetricsRecorder {
  public:
    // `table` may be null (metrics off in a unit test): every call is then a no-op.
    MetricsRecorder(shm::SeriesTable* table, const config::Config& config);

    // A finished request: the status sent to the client, the route (null: none matched).
    void request(const config::Route* route, std::size_t route_index, int status,
                 std::chrono::microseconds duration);
    // An upstream response head arrived from that server, `latency` after the attempt began.
    void upstream_response(std::size_t upstream, std::size_t server, int status,
                           std::chrono::microseconds latency);
    void rate_limited(std::size_t limit_index);
    void auth_failure(const config::Route& route, std::string_view reason);

  private:
    shm::Series* series(shm::Family family, const std::string& labels);
    void observe(shm::Series* histogram, std::chrono::microseconds duration);
    static void add(shm::Series* series, std::uint64_t n = 1);

    shm::SeriesTable* table_;
    const config::Config& config_;
    std::unordered_map<std::string, shm::Series*> by_key_;   // family byte + label text
    std::unordered_map<std::uint64_t, shm::Series*> cache_;  // family | indices | status
    std::string labels_;                                     // scratch
};

// Appends `value` escaped for a Prometheus label value (\\, \", \n).
void append_label_value(std::string& out, std::string_view value);

}  // namespace proxyd::worker
