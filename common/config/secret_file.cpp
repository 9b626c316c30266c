#include "common/config/secret_file.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace proxyd::config::detail {

namespace {
// Bigger than any real key; stops a mistyped path (a log file, /dev/zero) from being slurped.
constexpr std::size_t kMaxSecretFile = 64 * 1024;
}  // namespace

std::string resolve_config_path(const std::string& config_file, const std::string& path) {
    if (path.empty() || path.front() == '/') return path;
    const auto slash = config_file.rfind('/');
    if (slash == std::string::npos) return path;
    std::string out = config_file.substr(0, slash + 1);
    out.append(path);
    return out;
}

bool read_secret_file(const std::string& path, std::string& out, std::string& error) {
    out.clear();
    FILE* f = std::fopen(path.c_str(), "rbe");
    if (f == nullptr) {
        error = std::strerror(errno);
        return false;
    }
    char buf[4096];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
        out.append(buf, n);
        if (out.size() > kMaxSecretFile) {
            error = "larger than 64 KiB; is this the right file?";
            break;
        }
    }
    if (error.empty() && std::ferror(f)) error = "read error";
    std::fclose(f);
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    if (error.empty() && out.empty()) error = "the file is empty";
    if (!error.empty()) out.clear();
    return error.empty();
}

}  // namespace proxyd::config::detail
