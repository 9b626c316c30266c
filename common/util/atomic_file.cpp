#include "common/util/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace proxyd {

bool write_file_atomically(const std::string& path, std::string_view data, std::string& error,
                           unsigned new_mode) {
    struct stat existing {};
    mode_t mode = ::stat(path.c_str(), &existing) == 0 ? existing.st_mode & 07777 : new_mode;
    const std::string temporary = path + ".tmp." + std::to_string(::getpid());
    int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        error = "cannot create " + temporary + ": " + std::strerror(errno);
        return false;
    }
    ::fchmod(fd, mode);  // open() applied the umask
    std::size_t done = 0;
    while (done < data.size()) {
        ssize_t n = ::write(fd, data.data() + done, data.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        done += static_cast<std::size_t>(n);
    }
    bool ok = done == data.size() && ::fsync(fd) == 0;
    if (!ok) error = "cannot write " + temporary + ": " + std::strerror(errno);
    ::close(fd);
    if (ok && ::rename(temporary.c_str(), path.c_str()) != 0) {
        error = "cannot rename " + temporary + " to " + path + ": " + std::strerror(errno);
        ok = false;
    }
    if (!ok) ::unlink(temporary.c_str());
    return ok;
}

}  // namespace proxyd
