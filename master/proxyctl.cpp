// proxyctl: the control client. Sends one command to the master over its Unix socket and prints
// the reply (one human line, or JSON with --json).
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/config/load.hpp"
#include "common/control/protocol.hpp"
#include "common/util/unique_fd.hpp"

namespace {

constexpr const char* kDefaultConfig = "/etc/proxyd/proxyd.toml";
constexpr int kReplyTimeoutMs = 10'000;
// reload, workers and upgrade answer once the new workers accept (the master gives up at 20 s).
constexpr int kSlowReplyTimeoutMs = 60'000;

struct Options {
    std::string config_path;
    std::string socket_path;
    std::string command;
    std::vector<std::string> args;
    bool json = false;
    bool fast = false;
    int wait_seconds = 600;  // how long `stop` waits for the master to exit
};

void usage(FILE* out) {
    std::fprintf(out,
                 "usage: proxyctl [-c FILE | -s SOCKET] COMMAND [--json]\n"
                 "commands:\n"
                 "  status [--json]   master pid, version, generation, workers\n"
                 "  stop [--fast]     graceful stop (waits until the master has exited)\n"
                 "  reload            re-read the config; new workers serve, old ones drain\n"
                 "  upgrade           start the binary now installed at the master's path\n"
                 "  workers N         change the number of workers\n"
                 "  reload-tls        re-read the [tls] certificate and key files only\n"
                 "  stats [--json]    requests, current rates, latency percentiles, connections\n"
                 "  backends [UPSTREAM] [--json]  servers: weight, health, active, requests\n"
                 "  reopen            reopen log files\n"
                 "  report UPSTREAM BACKEND_ID CPU MEM LOAD1   (percent, percent, load average)\n"
                 "                    a backend's load, for balance = \"adaptive\"\n");
}

int fail(const std::string& message) {
    std::fprintf(stderr, "proxyctl: %s\n", message.c_str());
    return 1;
}

bool parse_args(int argc, char** argv, Options& options) {
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "-c" && i + 1 < argc) {
            options.config_path = argv[++i];
        } else if (arg == "-s" && i + 1 < argc) {
            options.socket_path = argv[++i];
        } else if (arg == "--json") {
            options.json = true;
        } else if (arg == "--fast") {
            options.fast = true;
        } else if (arg == "--wait" && i + 1 < argc) {
            options.wait_seconds = std::atoi(argv[++i]);
        } else if (options.command.empty()) {
            options.command = arg;
        } else {
            options.args.push_back(arg);
        }
    }
    return !options.command.empty();
}

// -s wins; else the config's server.control_socket (from -c or the default config).
bool find_socket(Options& options, std::string& error) {
    if (!options.socket_path.empty()) return true;
    std::string path = options.config_path.empty() ? kDefaultConfig : options.config_path;
    auto result = proxyd::config::load_file(path);
    if (!result.config) {
        error = "cannot find the control socket: " +
                (result.errors.empty() ? path : result.errors.front().format()) +
                " (use -s SOCKET)";
        return false;
    }
    options.socket_path = result.config->server.control_socket;
    return true;
}

proxyd::UniqueFd connect_to(const std::string& path, std::string& error) {
    proxyd::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) {
        error = "socket path too long: " + path;
        return {};
    }
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    if (!fd || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        error = "cannot connect to " + path + ": " + std::strerror(errno) + " (is proxyd running?)";
        return {};
    }
    return fd;
}

void print_reply(const nlohmann::json& reply, bool json) {
    if (json) {
        nlohmann::json out = reply;
        out.erase("v");
        std::printf("%s\n", out.dump(2).c_str());
    } else {
        std::printf("%s\n", reply.value("message", std::string("ok")).c_str());
    }
}

// The master keeps the connection open until it exits; EOF is the signal that it has.
bool wait_for_exit(int fd, int seconds) {
    nlohmann::json ignored;
    std::string error;
    return !proxyd::control::read_frame(fd, ignored, seconds * 1000, error) &&
           error.find("closed") != std::string::npos;
}

}  // namespace

int main(int argc, char** argv) {
    Options options;
    if (!parse_args(argc, argv, options)) {
        usage(stderr);
        return 2;
    }
    if (options.command == "-h" || options.command == "--help" || options.command == "help") {
        usage(stdout);
        return 0;
    }
    std::string error;
    if (!find_socket(options, error)) return fail(error);
    proxyd::UniqueFd fd = connect_to(options.socket_path, error);
    if (!fd) return fail(error);

    nlohmann::json request = proxyd::control::make_request(options.command);
    if (options.command == "stop") request["fast"] = options.fast;
    if (options.command == "workers") {
        if (options.args.empty()) return fail("usage: proxyctl workers N");
        request["count"] = std::atoi(options.args[0].c_str());
    }
    if (options.command == "backends" && !options.args.empty()) {
        request["upstream"] = options.args[0];
    }
    if (options.command == "report") {
        if (options.args.size() != 5) {
            return fail("usage: proxyctl report UPSTREAM BACKEND_ID CPU MEM LOAD1");
        }
        request["upstream"] = options.args[0];
        request["backend_id"] = options.args[1];
        request["cpu_usage"] = std::atof(options.args[2].c_str());
        request["memory_usage"] = std::atof(options.args[3].c_str());
        request["load_avg_1"] = std::atof(options.args[4].c_str());
    }
    nlohmann::json reply;
    bool slow = options.command == "reload" || options.command == "workers" ||
                options.command == "upgrade" || options.command == "reload-tls";
    if (!proxyd::control::write_frame(fd.get(), request, error) ||
        !proxyd::control::read_frame(fd.get(), reply, slow ? kSlowReplyTimeoutMs : kReplyTimeoutMs,
                                     error)) {
        return fail(error);
    }
    if (!reply.value("ok", false)) {
        if (options.json) print_reply(reply, true);
        if (reply.contains("errors")) {
            for (const auto& line : reply["errors"]) {
                std::fprintf(stderr, "%s\n", line.get<std::string>().c_str());
            }
        }
        return fail(reply.value("message", std::string("failed")));
    }
    if (options.command == "stop") {
        if (!wait_for_exit(fd.get(), options.wait_seconds)) {
            return fail("the master did not exit within " + std::to_string(options.wait_seconds) +
                        " s");
        }
        if (options.json) {
            print_reply({{"ok", true}, {"message", "stopped"}}, true);
        } else {
            std::printf("stopped\n");
        }
        return 0;
    }
    print_reply(reply, options.json);
    return 0;
}
