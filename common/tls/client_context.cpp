#include "common/tls/client_context.hpp"

#include <arpa/inet.h>
#include <openssl/x509v3.h>

#include "common/tls/certificate.hpp"

namespace proxyd::tls {

namespace {

constexpr unsigned char kAlpnHttp11[] = "\x08http/1.1";
// HTTP/2 over TLS is only ever negotiated (RFC 9113 3.2): offering nothing else means a server
// that cannot speak it fails the handshake or selects nothing, and the connection is refused.
constexpr unsigned char kAlpnH2[] = "\x02h2";

bool is_ip_literal(const std::string& name) {
    unsigned char buffer[sizeof(in6_addr)];
    return inet_pton(AF_INET, name.c_str(), buffer) == 1 ||
           inet_pton(AF_INET6, name.c_str(), buffer) == 1;
}

SslCtxPtr make_context(bool h2, bool verify, const std::string& ca_pem, std::string& error) {
    SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
    if (!ctx) {
        error = "cannot create a TLS client context: " + last_error();
        return nullptr;
    }
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
    // Many servers close without close_notify; like nginx, take a bare EOF as the end (HTTP
    // framing, not TLS, says whether a response was complete).
    SSL_CTX_set_options(
        ctx.get(), SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx.get(), SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                                    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (h2) {
        SSL_CTX_set_alpn_protos(ctx.get(), kAlpnH2, sizeof kAlpnH2 - 1);
    } else {
        SSL_CTX_set_alpn_protos(ctx.get(), kAlpnHttp11, sizeof kAlpnHttp11 - 1);
    }
    SSL_CTX_set_session_cache_mode(ctx.get(),
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    if (!verify) {
        SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
        return ctx;
    }
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    if (ca_pem.empty()) {
        if (SSL_CTX_set_default_verify_paths(ctx.get()) != 1) {
            error = "cannot load the system's trust store: " + last_error();
            return nullptr;
        }
        return ctx;
    }
    std::vector<X509Ptr> authorities;
    if (!load_ca_bundle(ca_pem, authorities, error)) return nullptr;
    X509_STORE* store = SSL_CTX_get_cert_store(ctx.get());
    for (const auto& authority : authorities) {
        if (X509_STORE_add_cert(store, authority.get()) != 1) {
            error = "cannot use a CA certificate: " + last_error();
            return nullptr;
        }
    }
    return ctx;
}

}  // namespace

std::string verified_name(const config::UpstreamServer& server) {
    if (!server.sni.empty()) return server.sni;
    if (!server.hostname.empty()) return server.hostname;
    char text[INET6_ADDRSTRLEN] = {};
    const auto& storage = server.address.storage;
    if (storage.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(storage).sin6_addr, text,
                  sizeof text);
    } else {
        inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(storage).sin_addr, text,
                  sizeof text);
    }
    return text;
}

std::unique_ptr<ClientTls> ClientTls::create(const config::Config& config, std::string& error) {
    std::unique_ptr<ClientTls> tls(new ClientTls());
    if (!tls->add_contexts(config, error)) return nullptr;
    return tls;
}

bool ClientTls::add_contexts(const config::Config& config, std::string& error) {
    for (const auto& upstream : config.upstreams) {
        const bool h2 = upstream.protocol == config::UpstreamProtocol::H2;
        for (const auto& server : upstream.servers) {
            if (!server.tls || find(server, h2)) continue;
            std::string why;
            SslCtxPtr ctx = make_context(h2, server.verify, server.ca_pem, why);
            if (!ctx) {
                error = "upstream " + upstream.name + " server " + server.id + ": " + why;
                return false;
            }
            SSL_CTX_sess_set_new_cb(ctx.get(), on_new_session);
            contexts_.push_back(Context{h2, server.verify, server.ca_pem, std::move(ctx)});
        }
    }
    return true;
}

ClientTls::~ClientTls() = default;

const ClientTls::Context* ClientTls::find(const config::UpstreamServer& server, bool h2) const {
    for (const auto& context : contexts_) {
        if (context.h2 == h2 && context.verify == server.verify &&
            (!server.verify || context.ca_pem == server.ca_pem)) {
            return &context;
        }
    }
    return nullptr;
}

SslPtr ClientTls::connect(const config::UpstreamServer& server, int fd, SessionSlot* slot,
                          std::string& error, bool h2) const {
    const Context* context = find(server, h2);
    if (context == nullptr) {
        error = "no TLS context for server " + server.id;
        return nullptr;
    }
    SslPtr ssl(SSL_new(context->ctx.get()));
    if (!ssl || (fd >= 0 && SSL_set_fd(ssl.get(), fd) != 1)) {
        error = "cannot set up TLS: " + last_error();
        return nullptr;
    }
    SSL_set_connect_state(ssl.get());
    SSL_set_app_data(ssl.get(), slot);
    std::string name = verified_name(server);
    bool ip = is_ip_literal(name);
    // SNI carries host names only (RFC 6066).
    if (!ip && SSL_set_tlsext_host_name(ssl.get(), name.c_str()) != 1) {
        error = "cannot set the server name: " + last_error();
        return nullptr;
    }
    if (server.verify) {
        int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl.get()), name.c_str())
                    : SSL_set1_host(ssl.get(), name.c_str());
        if (ok != 1) {
            error = "cannot set the name to verify: " + last_error();
            return nullptr;
        }
    }
    if (slot && slot->session) {
        // A copy again: SSL_set_session shares the object, and a resumed TLS 1.2 connection gets
        // no new session to replace it, so one ended without close_notify would spoil the slot's.
        SessionPtr copy(SSL_SESSION_dup(slot->session.get()));
        if (copy) SSL_set_session(ssl.get(), copy.get());
    }
    return ssl;
}

int ClientTls::on_new_session(SSL* ssl, SSL_SESSION* session) {
    auto* slot = static_cast<SessionSlot*>(SSL_get_app_data(ssl));
    if (slot == nullptr) return 0;
    // A copy: OpenSSL marks the connection's own session object not resumable when the
    // connection ends without close_notify (a server that just closes after a response), which
    // would spoil the next connection's resumption for no reason of ours.
    slot->session.reset(SSL_SESSION_dup(session));
    return 0;
}

}  // namespace proxyd::tls
