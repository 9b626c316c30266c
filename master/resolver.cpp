#include "master/resolver.hpp"

#include <arpa/inet.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "common/net/listener.hpp"
#include "common/util/timeval.hpp"

namespace proxyd::master {
namespace {

std::string key_of(const std::string& host, std::uint16_t port) {
    return host + ":" + std::to_string(port);
}

evdns_base* make_dns(event_base* base, const std::string& hosts_file) {
    evdns_base* dns =
        evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!dns) dns = evdns_base_new(base, 0);
    if (dns && !hosts_file.empty() && evdns_base_load_hosts(dns, hosts_file.c_str()) != 0) {
        spdlog::error("hosts_file {}: cannot be read", hosts_file);
    }
    return dns;
}

std::vector<config::SocketAddress> to_addresses(evutil_addrinfo* results, std::uint16_t port) {
    std::vector<config::SocketAddress> out;
    for (auto* ai = results; ai; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
        config::SocketAddress address;
        std::memcpy(&address.storage, ai->ai_addr, ai->ai_addrlen);
        address.length = static_cast<socklen_t>(ai->ai_addrlen);
        if (ai->ai_family == AF_INET) {
            reinterpret_cast<sockaddr_in*>(&address.storage)->sin_port = htons(port);
        } else {
            reinterpret_cast<sockaddr_in6*>(&address.storage)->sin6_port = htons(port);
        }
        address.text = net::format_address(reinterpret_cast<sockaddr*>(&address.storage), true);
        if (std::none_of(out.begin(), out.end(), [&](auto& a) { return a.text == address.text; })) {
            out.push_back(address);
        }
    }
    std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.text < b.text; });
    return out;
}

struct Lookup {
    std::string key;
    std::uint16_t port;
    Resolutions* into;
    std::size_t* outstanding;
    std::function<void()> on_done;
};

void on_lookup(int result, evutil_addrinfo* res, void* arg) {
    auto* lookup = static_cast<Lookup*>(arg);
    if (result == 0) {
        (*lookup->into)[lookup->key] = to_addresses(res, lookup->port);
    } else {
        spdlog::warn("resolving {}: {}", lookup->key, evutil_gai_strerror(result));
    }
    if (res) evutil_freeaddrinfo(res);
    --*lookup->outstanding;
    if (lookup->on_done) lookup->on_done();
    delete lookup;
}

void start_lookup(evdns_base* dns, const std::string& host, std::uint16_t port, Resolutions& into,
                  std::size_t& outstanding, std::function<void()> on_done) {
    evutil_addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    ++outstanding;
    auto* lookup = new Lookup{key_of(host, port), port, &into, &outstanding, std::move(on_done)};
    evdns_getaddrinfo(dns, host.c_str(), nullptr, &hints, on_lookup, lookup);
}

}  // namespace

std::vector<std::pair<std::string, std::uint16_t>> names_in(const config::Config& config) {
    std::vector<std::pair<std::string, std::uint16_t>> names;
    for (const auto& upstream : config.upstreams) {
        for (const auto& server : upstream.servers) {
            if (server.hostname.empty()) continue;
            std::pair<std::string, std::uint16_t> name{server.hostname, server.port};
            if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
        }
    }
    return names;
}

Resolutions resolve_now(const config::Config& config, std::chrono::milliseconds timeout) {
    Resolutions out;
    auto names = names_in(config);
    if (names.empty()) return out;
    event_base* base = event_base_new();
    evdns_base* dns = make_dns(base, config.server.hosts_file);
    std::size_t outstanding = 0;
    for (const auto& [host, port] : names) {
        start_lookup(dns, host, port, out, outstanding, [&] {
            if (outstanding == 0) event_base_loopexit(base, nullptr);
        });
    }
    if (outstanding > 0) {
        timeval tv = to_timeval(timeout);
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
    evdns_base_free(dns, /*fail_requests=*/1);  // unanswered lookups end (and free) here
    event_base_free(base);
    return out;
}

void expand_names(config::Config& config, const Resolutions& resolutions) {
    for (auto& upstream : config.upstreams) {
        std::vector<config::UpstreamServer> expanded;
        for (const auto& server : upstream.servers) {
            if (server.hostname.empty()) {
                expanded.push_back(server);
                continue;
            }
            auto it = resolutions.find(key_of(server.hostname, server.port));
            if (it == resolutions.end()) continue;
            for (const auto& address : it->second) {
                config::UpstreamServer copy = server;
                copy.address = address;
                copy.id = server.id + "#" + address.text;
                expanded.push_back(std::move(copy));
            }
        }
        upstream.servers = std::move(expanded);
    }
}

Resolver::Resolver(event_base* base, std::function<void(Resolutions)> changed)
    : base_(base), changed_(std::move(changed)) {
    timer_ = evtimer_new(base_, on_timer, this);
}

Resolver::~Resolver() {
    destroying_ = true;
    if (timer_) event_free(timer_);
    if (dns_) evdns_base_free(dns_, 1);
}

void Resolver::watch(const config::Config& config, Resolutions current) {
    names_ = names_in(config);
    current_ = std::move(current);
    interval_ = std::chrono::milliseconds(30'000);
    for (const auto& upstream : config.upstreams) {
        bool named = std::any_of(upstream.servers.begin(), upstream.servers.end(),
                                 [](auto& s) { return !s.hostname.empty(); });
        if (named) interval_ = std::min(interval_, upstream.resolve_interval);
    }
    if (hosts_file_ != config.server.hosts_file || !dns_) {
        if (dns_) evdns_base_free(dns_, 1);
        hosts_file_ = config.server.hosts_file;
        dns_ = make_dns(base_, hosts_file_);
    }
    event_del(timer_);
    if (names_.empty()) return;
    timeval tv = to_timeval(interval_);
    event_add(timer_, &tv);
}

void Resolver::on_timer(evutil_socket_t, short, void* arg) {
    static_cast<Resolver*>(arg)->resolve_all();
}

void Resolver::resolve_all() {
    if (outstanding_ > 0) return;
    pending_.clear();
    // A fresh resolver each round: /etc/resolv.conf and the hosts files may have changed.
    if (dns_) evdns_base_free(dns_, 1);
    dns_ = make_dns(base_, hosts_file_);
    for (const auto& [host, port] : names_) {
        start_lookup(dns_, host, port, pending_, outstanding_, [this] {
            if (outstanding_ != 0 || destroying_) return;
            // A failed lookup keeps the last known records rather than dropping the servers.
            for (auto& [key, addresses] : current_) {
                if (!pending_.count(key)) pending_[key] = addresses;
            }
            bool differs =
                pending_.size() != current_.size() ||
                std::any_of(pending_.begin(), pending_.end(), [&](auto& entry) {
                    auto it = current_.find(entry.first);
                    if (it == current_.end() || it->second.size() != entry.second.size()) {
                        return true;
                    }
                    for (std::size_t i = 0; i < entry.second.size(); ++i) {
                        if (it->second[i].text != entry.second[i].text) return true;
                    }
                    return false;
                });
            if (differs) changed_(pending_);
        });
    }
    timeval tv = to_timeval(interval_);
    event_add(timer_, &tv);
}

}  // namespace proxyd::master
