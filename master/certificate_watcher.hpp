// Notices renewed certificates ([tls] watch = true): inotify on the directories that hold the
// certificate and key files, and on the directories their symlinks resolve to. Renewal tools
// replace files by atomic rename (certbot's symlinks in live/, cert-manager's "..data" symlink
// swap in a Kubernetes secret volume), which a watch on the file itself would miss.
//
// Events are debounced: a renewal writes several files, and the callback runs once they have
// been quiet for kSettle. The callback compares contents itself, so unrelated changes in the
// same directory cost one read of the files and nothing else.
#pragma once

#include <event2/event.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "common/util/event_ptr.hpp"
#include "common/util/unique_fd.hpp"

namespace proxyd::master {

class CertificateWatcher {
  public:
    static constexpr std::chrono::milliseconds kSettle{150};

    CertificateWatcher(event_base* base, std::function<void()> on_change);
    // Watches the directories of `paths` (and of their resolved targets) instead of the previous
    // ones. False with `error` when inotify is unavailable.
    bool watch(const std::vector<std::string>& paths, std::string& error);

  private:
    static void on_inotify(evutil_socket_t fd, short, void* arg);
    static void on_settled(evutil_socket_t, short, void* arg);

    event_base* base_;
    std::function<void()> on_change_;
    UniqueFd inotify_;
    EventPtr inotify_event_;
    EventPtr settle_timer_;
    std::vector<int> watches_;
};

}  // namespace proxyd::master
