// proxyd: check a config (-t), or run the master in the foreground.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/config/load.hpp"
#include "common/config/overlay.hpp"
#include "common/log.hpp"
#include "common/version.hpp"
#include "master/master.hpp"

namespace {

constexpr const char* kDefaultConfig = "/etc/proxyd/proxyd.toml";

void usage(FILE* out) {
    std::fprintf(out,
                 "usage: proxyd [-c FILE] [-t] [--version]\n"
                 "  -c FILE     configuration file (default %s)\n"
                 "  -t          check the configuration and exit (0 valid, 1 invalid)\n"
                 "  --version   print the version and exit\n",
                 kDefaultConfig);
}

// The path this binary was started from, read now: a package upgrade later replaces the file
// there, and `proxyctl upgrade` starts whatever is installed at that path then.
std::string own_binary_path(const char* argv0) {
    char buf[4096];
    ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return argv0;
    std::string path(buf, static_cast<std::size_t>(n));
    static constexpr std::string_view kDeleted = " (deleted)";
    if (path.size() > kDeleted.size() && path.ends_with(kDeleted)) {
        path.resize(path.size() - kDeleted.size());
    }
    return path;
}

void print_errors(const proxyd::config::LoadResult& result) {
    for (const auto& error : result.errors) std::fprintf(stderr, "%s\n", error.format().c_str());
}

}  // namespace

int main(int argc, char** argv) {
    std::string config_path = kDefaultConfig;
    bool check_only = false;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "-c" && i + 1 < argc) {
            config_path = argv[++i];
        } else if (arg == "-t") {
            check_only = true;
        } else if (arg == "--version" || arg == "-v") {
            std::printf("proxyd %s\n", proxyd::kVersion);
            return 0;
        } else if (arg == "-h" || arg == "--help") {
            usage(stdout);
            return 0;
        } else {
            std::fprintf(stderr, "proxyd: unknown argument \"%s\"\n", arg.c_str());
            usage(stderr);
            return 2;
        }
    }

    // With the runtime backend changes of server.state_file applied: what the master would run.
    auto effective = proxyd::config::load_effective(config_path, nullptr);
    auto& result = effective.result;
    for (const auto& note : effective.skipped) {
        std::fprintf(stderr, "%s: warning: %s\n", config_path.c_str(), note.c_str());
    }
    if (!result.config) {
        print_errors(result);
        std::fprintf(stderr, "%s: configuration invalid (%zu error%s)\n", config_path.c_str(),
                     result.errors.size(), result.errors.size() == 1 ? "" : "s");
        return 1;
    }
    if (check_only) {
        std::printf("%s: configuration ok\n", config_path.c_str());
        return 0;
    }
    std::string error;
    if (!proxyd::log::setup_error_log(result.config->log, "master", error)) {
        std::fprintf(stderr, "proxyd: error log %s: %s\n", result.config->log.error_log.c_str(),
                     error.c_str());
        return 1;
    }
    proxyd::master::StartOptions options;
    options.config_path = config_path;
    options.binary_path = own_binary_path(argv[0]);
    options.config_text = std::move(effective.text);
    options.overlay = std::move(effective.overlay);
    if (const char* fd = std::getenv("PROXYD_UPGRADE_FD")) {
        options.upgrade_fd = std::atoi(fd);
        ::unsetenv("PROXYD_UPGRADE_FD");
    }
    proxyd::master::Master master(std::move(*result.config), std::move(options));
    int status = master.run();
    proxyd::log::shutdown();
    return status;
}
