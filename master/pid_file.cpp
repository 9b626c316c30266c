#include "master/pid_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace proxyd::master {

bool write_pid_file(const std::string& path, pid_t pid, std::string& error) {
    std::error_code ec;
    auto parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    std::string temp = path + ".tmp." + std::to_string(pid);
    std::string text = std::to_string(pid) + "\n";
    int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size()) ||
        ::fsync(fd) != 0 || ::close(fd) != 0 || ::rename(temp.c_str(), path.c_str()) != 0) {
        error = "pid file " + path + ": " + std::strerror(errno);
        ::unlink(temp.c_str());
        return false;
    }
    return true;
}

void remove_pid_file(const std::string& path, pid_t pid) {
    if (path.empty()) return;
    std::ifstream in(path);
    pid_t stored = 0;
    if (in >> stored && stored == pid) ::unlink(path.c_str());
}

}  // namespace proxyd::master
