#include "common/net/fd_passing.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace proxyd::net {

bool send_with_fds(int socket_fd, const std::string& payload, const std::vector<int>& fds) {
    if (payload.empty() || fds.size() > kMaxFdsPerMessage) return false;
    iovec iov{const_cast<char*>(payload.data()), payload.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
    if (!fds.empty()) {
        msg.msg_control = control.data();
        msg.msg_controllen = control.size();
        cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n;
    do n = ::sendmsg(socket_fd, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n == static_cast<ssize_t>(payload.size());
}

bool receive_with_fds(int socket_fd, std::string& payload, std::vector<UniqueFd>& fds,
                      std::size_t max_payload) {
    payload.resize(max_payload);
    iovec iov{payload.data(), payload.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage));
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    ssize_t n;
    do n = ::recvmsg(socket_fd, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n <= 0) return false;
    payload.resize(static_cast<std::size_t>(n));
    for (cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
        std::size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const unsigned char* data = CMSG_DATA(cmsg);
        for (std::size_t i = 0; i < count; ++i) {
            int fd;
            std::memcpy(&fd, data + i * sizeof(int), sizeof fd);
            fds.emplace_back(fd);
        }
    }
    return (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) == 0;
}

}  // namespace proxyd::net
