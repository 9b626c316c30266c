#include "common/config/secret_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace proxyd::config::detail {

namespace {

// "64 KiB", "4 MiB": the limit as a message states it.
std::string format_limit(std::size_t bytes) {
    if (bytes >= 1024 * 1024 && bytes % (1024 * 1024) == 0) {
        return std::to_string(bytes / (1024 * 1024)) + " MiB";
    }
    if (bytes >= 1024 && bytes % 1024 == 0) return std::to_string(bytes / 1024) + " KiB";
    return std::to_string(bytes) + " bytes";
}

}  // namespace

std::string resolve_config_path(const std::string& config_file, const std::string& path) {
    if (path.empty() || path.front() == '/') return path;
    const auto slash = config_file.rfind('/');
    if (slash == std::string::npos) return path;
    std::string out = config_file.substr(0, slash + 1);
    out.append(path);
    // "conf/../certs/a.crt" -> "certs/a.crt": the path shows in status and logs.
    return std::filesystem::path(out).lexically_normal().string();
}

bool read_secret_file(const std::string& path, std::string& out, std::string& error,
                      std::size_t max_size) {
    out.clear();
    // O_NONBLOCK and the regular-file check: a FIFO or a terminal named by mistake must not hang
    // the config load (and with it `proxyd -t` or a reload).
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        error = std::strerror(errno);
        return false;
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        error = "not a regular file";
        return false;
    }
    char buf[4096];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) error = std::strerror(errno);
        if (n <= 0) break;
        out.append(buf, static_cast<std::size_t>(n));
        if (out.size() > max_size) {
            error = "larger than " + format_limit(max_size) + "; is this the right file?";
            break;
        }
    }
    ::close(fd);
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    if (error.empty() && out.empty()) error = "the file is empty";
    if (!error.empty()) out.clear();
    return error.empty();
}

}  // namespace proxyd::config::detail
