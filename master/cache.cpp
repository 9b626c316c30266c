// The master's side of the shared response cache: the store's shared memory (made when a config
// first has a route with `cache`, made anew when a reload changes [cache]'s sizes, its counters
// carried over), the admin purge, and the proxyd_cache_* metrics.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/http/cache_key.hpp"
#include "master/master.hpp"
#include "master/metrics_render.hpp"

namespace proxyd::master {
namespace {

bool uses_cache(const config::Config& config) {
    return std::any_of(config.routes.begin(), config.routes.end(),
                       [](const config::Route& route) { return route.has_cache; });
}

}  // namespace

// Before a generation's workers are forked. A store that is resized moves to `previous`, which
// the caller keeps until the generation is committed (restored if it is aborted).
bool Master::prepare_cache(const config::Config& config, shm::CacheStore& previous,
                           std::string& error) {
    if (!uses_cache(config)) return true;
    if (cache_.valid() && cache_.max_size() == config.cache.max_size &&
        cache_.max_object_size() == config.cache.max_object_size) {
        return true;
    }
    shm::CacheStore fresh =
        shm::CacheStore::create(config.cache.max_size, config.cache.max_object_size);
    if (!fresh.valid()) {
        error = "cannot create the cache's shared memory of " +
                std::to_string(config.cache.max_size) + " bytes";
        return false;
    }
    if (cache_.valid()) {
        fresh.adopt_counters(cache_);
        spdlog::info("cache: resized to max_size {} bytes; stored responses start anew",
                     config.cache.max_size);
    }
    previous = std::move(cache_);
    cache_ = std::move(fresh);
    return true;
}

shm::CacheStore* Master::cache_for_workers() {
    return cache_.valid() && uses_cache(config_) ? &cache_ : nullptr;
}

// DELETE /api/v1/cache?prefix=/p[&host=H] (key_prefix= is the same): drops every stored
// response whose path starts with the prefix, in every worker at once (the store is shared).
AdminReply Master::purge_cache(const std::string& prefix, const std::string& host) {
    if (prefix.empty() || prefix.front() != '/') {
        return {400, {{"error", "prefix must be a path starting with \"/\" (e.g. prefix=/)"}}};
    }
    if (!cache_.valid()) return {200, {{"purged", 0}}};
    const std::size_t purged = cache_.purge(
        [&](std::string_view key) { return http::cache_key_matches(key, prefix, host); });
    spdlog::info("cache: purged {} response(s) under {}{}", purged, host, prefix);
    return {200, {{"purged", purged}}};
}

void Master::render_cache_metrics(std::string& out) const {
    if (!cache_.valid()) return;
    const shm::CacheCounters counters = cache_.counters();
    const shm::CacheUsage usage = cache_.usage();
    append_metric_header(out, "proxyd_cache_requests_total", "counter",
                         "Requests on cached routes by cache result.");
    const std::pair<const char*, std::uint64_t> results[] = {
        {"result=\"hit\"", counters.hits},
        {"result=\"miss\"", counters.misses},
        {"result=\"stale\"", counters.stale},
        {"result=\"bypass\"", counters.bypass}};
    for (const auto& [labels, value] : results) {
        append_metric_sample(out, "proxyd_cache_requests_total", labels, std::to_string(value));
    }
    struct Single {
        const char* name;
        const char* type;
        const char* help;
        std::uint64_t value;
    };
    const Single singles[] = {
        {"proxyd_cache_stores_total", "counter", "Responses stored in the cache.", counters.stores},
        {"proxyd_cache_evictions_total", "counter",
         "Stored responses evicted to make room (least recently used first).", counters.evictions},
        {"proxyd_cache_purges_total", "counter", "Stored responses removed by the admin API.",
         counters.purges},
        {"proxyd_cache_entries", "gauge", "Responses in the cache.", usage.entries},
        {"proxyd_cache_bytes", "gauge", "Cache memory in use.", usage.bytes_used},
        {"proxyd_cache_max_bytes", "gauge", "The cache's size ([cache] max_size).",
         usage.capacity_bytes},
    };
    for (const Single& single : singles) {
        append_metric_header(out, single.name, single.type, single.help);
        append_metric_sample(out, single.name, "", std::to_string(single.value));
    }
}

}  // namespace proxyd::master
