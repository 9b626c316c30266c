// TLS towards upstream servers (`tls = true`): one client SSL_CTX per distinct (verify, CA)
// among the configured servers, built by the master before it forks (workers and the master's
// health checks share them).
//
// A connection verifies the server's chain against the server's ca_file (else the system trust
// store) and its name against `sni` (else the hostname the server was written with, else its IP
// address); `verify = false` skips both. Sessions are resumed: each new session is handed to
// the SessionSlot set as the SSL's app data (the pool keeps one per server).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/config/types.hpp"
#include "common/tls/openssl_ptr.hpp"

namespace proxyd::tls {

// The most recent session with one server, offered on the next connection to it.
struct SessionSlot {
    SessionPtr session;
};

class ClientTls {
  public:
    // Null with `error` when a CA bundle does not load; an empty ClientTls when no server uses TLS.
    static std::unique_ptr<ClientTls> create(const config::Config& config, std::string& error);
    ~ClientTls();
    // Adds the contexts `config`'s TLS servers need and this one lacks: servers added at runtime
    // (admin API) may bring a CA bundle of their own.
    bool add_contexts(const config::Config& config, std::string& error);

    // A client-side SSL on `fd` (-1: set later, e.g. by a bufferevent) for `server`, resuming from
    // `slot`'s session when there is one; new sessions go to `slot` (may be null). Null (with the
    // reason in `error`) on failure. `h2`: offer only "h2" in ALPN (protocol = "h2" upstreams),
    // else only "http/1.1".
    SslPtr connect(const config::UpstreamServer& server, int fd, SessionSlot* slot,
                   std::string& error, bool h2 = false) const;

  private:
    struct Context {
        bool h2 = false;  // ALPN offers "h2" rather than "http/1.1"
        bool verify = true;
        std::string ca_pem;
        SslCtxPtr ctx;
    };
    ClientTls() = default;
    const Context* find(const config::UpstreamServer& server, bool h2) const;
    static int on_new_session(SSL* ssl, SSL_SESSION* session);

    std::vector<Context> contexts_;
};

// "the name to verify": sni, else hostname, else the IP address of `server`.
std::string verified_name(const config::UpstreamServer& server);

}  // namespace proxyd::tls
