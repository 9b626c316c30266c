// The TLS side of the listeners: one SSL_CTX per group of certificates that serve the same
// names (an RSA and an ECDSA certificate for one name share a context, and the client's
// signature algorithms pick one), chosen per connection by SNI.
//
// Built by the master from the validated config before it forks the workers (so private keys
// are read only by the master, and workers inherit the contexts); immutable afterwards. A renewal
// builds a new ServerTls for a new worker generation: connections on the old workers keep theirs.
// Session tickets are encrypted with the keys of the shared ring (common/shm/ticket_keys.hpp).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/config/types.hpp"
#include "common/shm/ticket_keys.hpp"
#include "common/tls/certificate.hpp"
#include "common/tls/openssl_ptr.hpp"
#include "common/tls/sni_table.hpp"

namespace proxyd::tls {

// What status and metrics show of one configured certificate.
struct CertificateSummary {
    std::string cert_file;
    std::vector<std::string> names;
    std::string key_type;  // "RSA", "ECDSA", "other"
    std::string subject;
    std::int64_t not_after = 0;
};

CertificateSummary summarize(const std::string& cert_file, const Certificate& certificate);

class ServerTls {
  public:
    // `ring` may be null when session tickets are off. Certificates are parsed again from the
    // config's PEM text (validated when the config was loaded; `now` re-checks expiry).
    static std::unique_ptr<ServerTls> create(const config::TlsSection& section,
                                             const shm::TicketKeyRing* ring, std::int64_t now,
                                             std::string& error);
    ~ServerTls();

    // A server-side SSL for an accepted socket; null (with the reason logged) on failure.
    SslPtr accept(int fd) const;
    const std::vector<CertificateSummary>& certificates() const { return summaries_; }

  private:
    ServerTls() = default;
    bool configure(SSL_CTX* ctx, const config::TlsSection& section, std::string& error);
    static int on_server_name(SSL* ssl, int* alert, void* arg);
    static int on_alpn(SSL* ssl, const unsigned char** out, unsigned char* out_len,
                       const unsigned char* in, unsigned int in_len, void* arg);
    static int on_ticket_key(SSL* ssl, unsigned char* name, unsigned char* iv,
                             EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac, int encrypt);

    std::vector<SslCtxPtr> contexts_;  // [0]: the default, for clients without a known name
    SniTable names_;
    std::vector<unsigned char> alpn_;  // wire format: length-prefixed protocol names
    const shm::TicketKeyRing* ring_ = nullptr;
    std::vector<CertificateSummary> summaries_;
};

}  // namespace proxyd::tls
