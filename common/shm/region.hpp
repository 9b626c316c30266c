// A shared-memory region holding one fixed layout: created by the master from a memfd (so it can
// be handed to a new binary on upgrade), inherited by forked workers. A layout starts with
// {magic, version}; attach() refuses a region of another layout instead of misreading it.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <new>
#include <utility>

#include "common/util/unique_fd.hpp"

namespace proxyd::shm {

struct LayoutHeader {
    std::uint32_t magic;
    std::uint32_t version;
};

template <typename Layout>
class Region {
  public:
    static Region create(const char* name) {
        Region region;
        UniqueFd fd(::memfd_create(name, MFD_CLOEXEC));
        if (!fd || ::ftruncate(fd.get(), sizeof(Layout)) != 0) return region;
        Layout* layout = map(fd.get());
        if (!layout) return region;
        // A fresh memfd is zero-filled, and every layout is valid at zero (atomics included), so
        // nothing is written but the header: untouched pages cost no memory.
        layout->header = {Layout::kMagic, Layout::kVersion};
        region.fd_ = std::move(fd);
        region.layout_ = layout;
        return region;
    }

    static Region attach(UniqueFd fd) {
        Region region;
        Layout* layout = map(fd.get());
        if (!layout) return region;
        if (layout->header.magic != Layout::kMagic || layout->header.version != Layout::kVersion) {
            ::munmap(layout, sizeof(Layout));
            return region;
        }
        region.fd_ = std::move(fd);
        region.layout_ = layout;
        return region;
    }

    Region() = default;
    Region(Region&& other) noexcept
        : fd_(std::move(other.fd_)), layout_(std::exchange(other.layout_, nullptr)) {}
    Region& operator=(Region&& other) noexcept {
        if (this != &other) {
            unmap();
            fd_ = std::move(other.fd_);
            layout_ = std::exchange(other.layout_, nullptr);
        }
        return *this;
    }
    ~Region() { unmap(); }

    bool valid() const { return layout_ != nullptr; }
    int fd() const { return fd_.get(); }
    Layout* operator->() { return layout_; }
    const Layout* operator->() const { return layout_; }
    Layout& operator*() { return *layout_; }
    const Layout& operator*() const { return *layout_; }

  private:
    static Layout* map(int fd) {
        void* p = ::mmap(nullptr, sizeof(Layout), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        return p == MAP_FAILED ? nullptr : static_cast<Layout*>(p);
    }
    void unmap() {
        if (layout_) ::munmap(layout_, sizeof(Layout));
        layout_ = nullptr;
    }

    UniqueFd fd_;
    Layout* layout_ = nullptr;
};

}  // namespace proxyd::shm
