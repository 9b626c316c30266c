#include "common/net/listener.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace proxyd::net {

UniqueFd bind_reuseport(const config::SocketAddress& address, std::string& error) {
    UniqueFd fd(::socket(address.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) {
        error = std::string("socket: ") + std::strerror(errno);
        return {};
    }
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
        error = std::string("SO_REUSEPORT: ") + std::strerror(errno);
        return {};
    }
    if (address.storage.ss_family == AF_INET6) {
        ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address.storage), address.length) !=
        0) {
        error = "bind " + address.text + ": " + std::strerror(errno);
        return {};
    }
    if (::listen(fd.get(), kListenBacklog) != 0) {
        error = "listen " + address.text + ": " + std::strerror(errno);
        return {};
    }
    return fd;
}

std::string format_address(const sockaddr* address, bool with_port) {
    char text[INET6_ADDRSTRLEN] = "?";
    if (address->sa_family == AF_INET) {
        auto* v4 = reinterpret_cast<const sockaddr_in*>(address);
        ::inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text);
        std::string out(text);
        if (with_port) {
            out += ':';
            out += std::to_string(ntohs(v4->sin_port));
        }
        return out;
    }
    if (address->sa_family == AF_INET6) {
        auto* v6 = reinterpret_cast<const sockaddr_in6*>(address);
        ::inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text);
        if (!with_port) return text;
        std::string out = "[";
        out += text;
        out += "]:";
        out += std::to_string(ntohs(v6->sin6_port));
        return out;
    }
    if (address->sa_family == AF_UNIX) return "unix";
    return text;
}

UniqueFd bind_unix_listener(const std::string& path, std::string& error) {
    std::error_code ec;
    auto parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    std::string temp = path + ".tmp." + std::to_string(::getpid());
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (temp.size() >= sizeof addr.sun_path) {
        error = "control socket path too long: " + path;
        return {};
    }
    std::memcpy(addr.sun_path, temp.c_str(), temp.size() + 1);
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) {
        error = std::string("socket: ") + std::strerror(errno);
        return {};
    }
    ::unlink(temp.c_str());
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::chmod(temp.c_str(), 0660) != 0 || ::listen(fd.get(), 64) != 0 ||
        ::rename(temp.c_str(), path.c_str()) != 0) {
        error = "control socket " + path + ": " + std::strerror(errno);
        ::unlink(temp.c_str());
        return {};
    }
    return fd;
}

}  // namespace proxyd::net
