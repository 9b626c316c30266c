// Upstream servers written as DNS names: every A/AAAA record becomes a server. Resolution uses
// libevent's evdns (non-blocking; /etc/resolv.conf and /etc/hosts, plus server.hosts_file).
#pragma once

#include <event2/dns.h>
#include <event2/event.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/config/types.hpp"

namespace proxyd::master {

// "host:port" -> its records, sorted (so that equal sets compare equal).
using Resolutions = std::map<std::string, std::vector<config::SocketAddress>>;

// Every "host:port" that `config` names.
std::vector<std::pair<std::string, std::uint16_t>> names_in(const config::Config& config);

// Resolves every name of `config` on a private event loop, waiting at most `timeout`.
// Used at start and on reload, where the new config must be complete before workers fork.
Resolutions resolve_now(const config::Config& config, std::chrono::milliseconds timeout);

// Replaces each named server by one server per record (id "ID#ADDRESS"); a name without records
// leaves no server (requests get 503 until it resolves).
void expand_names(config::Config& config, const Resolutions& resolutions);

// Periodic re-resolution on the master's loop; calls `changed` when a record set differs.
class Resolver {
  public:
    Resolver(event_base* base, std::function<void(Resolutions)> changed);
    ~Resolver();
    // Starts (or restarts) the timer for `config`'s names from `current`.
    void watch(const config::Config& config, Resolutions current);

  private:
    static void on_timer(evutil_socket_t, short, void* arg);
    void resolve_all();

    event_base* base_;
    std::function<void(Resolutions)> changed_;
    evdns_base* dns_ = nullptr;
    event* timer_ = nullptr;
    std::vector<std::pair<std::string, std::uint16_t>> names_;
    std::string hosts_file_;
    std::chrono::milliseconds interval_{30'000};
    Resolutions current_;
    Resolutions pending_;
    std::size_t outstanding_ = 0;
    bool destroying_ = false;
};

}  // namespace proxyd::master
