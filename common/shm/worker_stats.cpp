#include "common/shm/worker_stats.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <new>
#include <utility>

namespace proxyd::shm {
namespace {

StatsLayout* map_layout(int fd) {
    void* p = ::mmap(nullptr, sizeof(StatsLayout), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? nullptr : static_cast<StatsLayout*>(p);
}

}  // namespace

SharedStats SharedStats::create() {
    SharedStats stats;
    UniqueFd fd(::memfd_create("proxyd-stats", MFD_CLOEXEC));
    if (!fd || ::ftruncate(fd.get(), sizeof(StatsLayout)) != 0) return stats;
    StatsLayout* layout = map_layout(fd.get());
    if (!layout) return stats;
    // A fresh memfd is zero-filled; the atomics are valid at zero.
    layout->magic = kStatsMagic;
    layout->layout_version = kStatsLayoutVersion;
    stats.fd_ = std::move(fd);
    stats.layout_ = layout;
    return stats;
}

SharedStats SharedStats::attach(UniqueFd fd) {
    SharedStats stats;
    StatsLayout* layout = map_layout(fd.get());
    if (!layout) return stats;
    if (layout->magic != kStatsMagic || layout->layout_version != kStatsLayoutVersion) {
        ::munmap(layout, sizeof(StatsLayout));
        return stats;
    }
    stats.fd_ = std::move(fd);
    stats.layout_ = layout;
    return stats;
}

SharedStats::SharedStats(SharedStats&& other) noexcept
    : fd_(std::move(other.fd_)), layout_(std::exchange(other.layout_, nullptr)) {}

SharedStats& SharedStats::operator=(SharedStats&& other) noexcept {
    if (this != &other) {
        if (layout_) ::munmap(layout_, sizeof(StatsLayout));
        fd_ = std::move(other.fd_);
        layout_ = std::exchange(other.layout_, nullptr);
    }
    return *this;
}

SharedStats::~SharedStats() {
    if (layout_) ::munmap(layout_, sizeof(StatsLayout));
}

}  // namespace proxyd::shm
