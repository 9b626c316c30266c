#include "master/certificate_watcher.hpp"

#include <limits.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>

#include "common/util/timeval.hpp"

namespace proxyd::master {

namespace {

constexpr std::uint32_t kEvents =
    IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_ATTRIB;

std::string directory_of(const std::string& path) {
    auto slash = path.rfind('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

}  // namespace

CertificateWatcher::CertificateWatcher(event_base* base, std::function<void()> on_change)
    : base_(base), on_change_(std::move(on_change)) {}

bool CertificateWatcher::watch(const std::vector<std::string>& paths, std::string& error) {
    if (!inotify_) {
        inotify_.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
        if (!inotify_) {
            error = std::string("inotify: ") + std::strerror(errno);
            return false;
        }
        inotify_event_.reset(
            event_new(base_, inotify_.get(), EV_READ | EV_PERSIST, on_inotify, this));
        event_add(inotify_event_.get(), nullptr);
        settle_timer_.reset(evtimer_new(base_, on_settled, this));
    }
    for (int wd : watches_) ::inotify_rm_watch(inotify_.get(), wd);
    watches_.clear();
    std::set<std::string> directories;
    for (const auto& path : paths) {
        directories.insert(directory_of(path));
        char resolved[PATH_MAX];
        if (::realpath(path.c_str(), resolved)) directories.insert(directory_of(resolved));
    }
    for (const auto& directory : directories) {
        int wd = ::inotify_add_watch(inotify_.get(), directory.c_str(), kEvents);
        if (wd < 0) {
            error = "inotify on " + directory + ": " + std::strerror(errno);
            return false;
        }
        watches_.push_back(wd);
    }
    return true;
}

void CertificateWatcher::on_inotify(evutil_socket_t fd, short, void* arg) {
    auto* self = static_cast<CertificateWatcher*>(arg);
    alignas(inotify_event) char buffer[8192];
    while (::read(fd, buffer, sizeof buffer) > 0) {
    }
    timeval settle = to_timeval(kSettle);
    event_add(self->settle_timer_.get(), &settle);  // re-adding restarts the wait
}

void CertificateWatcher::on_settled(evutil_socket_t, short, void* arg) {
    static_cast<CertificateWatcher*>(arg)->on_change_();
}

}  // namespace proxyd::master
