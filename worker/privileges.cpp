#include "worker/privileges.hpp"

#include <grp.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>

namespace proxyd::worker {

bool drop_privileges(const config::ServerSection& server, std::string& error) {
    if (server.user.empty() || ::geteuid() != 0) return true;
    auto fail = [&](const char* what) {
        error = std::string(what) + ": " + std::strerror(errno);
        return false;
    };
    // Supplementary groups first (root's would otherwise stay), then the group, then the user:
    // after setuid nothing else may be changed.
    if (::initgroups(server.user.c_str(), server.gid) != 0) return fail("initgroups");
    if (::setgid(server.gid) != 0) return fail("setgid");
    if (::setuid(server.uid) != 0) return fail("setuid");
    if (::setuid(0) == 0) {
        error = "setuid: root could be regained";
        return false;
    }
    // setuid clears it; the parent-death signal must survive.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    return true;
}

}  // namespace proxyd::worker
