#include "common/tls/server_context.hpp"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <array>
#include <cstring>
#include <map>

namespace proxyd::tls {

namespace {

// Mozilla's "intermediate" TLS 1.2 suites: forward secrecy and AEAD only. TLS 1.3 suites are
// OpenSSL's defaults, all of which are safe.
constexpr const char* kDefaultCiphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

constexpr unsigned char kSessionContext[] = "proxyd";

const char* key_type_name(KeyType type) {
    switch (type) {
        case KeyType::Rsa:
            return "RSA";
        case KeyType::Ecdsa:
            return "ECDSA";
        case KeyType::Other:
            break;
    }
    return "other";
}

// The certificates sharing a context: the first of each key type that carries a name.
using Group = std::array<int, 3>;

Group empty_group() {
    return {-1, -1, -1};
}

std::size_t type_index(KeyType type) {
    return static_cast<std::size_t>(type);
}

// The ALPN list in wire format (length-prefixed names), in the config's order of preference.
std::vector<unsigned char> alpn_wire(const std::vector<std::string>& protocols) {
    std::vector<unsigned char> wire;
    for (const auto& protocol : protocols) {
        wire.push_back(static_cast<unsigned char>(protocol.size()));
        wire.insert(wire.end(), protocol.begin(), protocol.end());
    }
    return wire;
}

}  // namespace

CertificateSummary summarize(const std::string& cert_file, const Certificate& certificate) {
    CertificateSummary summary;
    summary.cert_file = cert_file;
    summary.names = certificate.names;
    summary.key_type = key_type_name(certificate.key_type);
    summary.subject = certificate.subject;
    summary.not_after = certificate.not_after;
    return summary;
}

std::unique_ptr<ServerTls> ServerTls::create(const config::TlsSection& section,
                                             const shm::TicketKeyRing* ring, std::int64_t now,
                                             std::string& error) {
    std::unique_ptr<ServerTls> tls(new ServerTls());
    tls->ring_ = section.session_tickets ? ring : nullptr;
    tls->alpn_ = alpn_wire(section.alpn);

    std::vector<Certificate> certificates;
    for (const auto& entry : section.certificates) {
        std::string why;
        auto certificate = load_certificate(entry.cert_pem, entry.key_pem, now, why);
        if (!certificate) {
            error = "certificate \"" + entry.cert_file + "\": " + why;
            return nullptr;
        }
        tls->summaries_.push_back(summarize(entry.cert_file, *certificate));
        certificates.push_back(std::move(*certificate));
    }
    if (certificates.empty()) {
        error = "[tls] has no certificate";
        return nullptr;
    }

    std::map<std::string, Group> by_name;
    for (std::size_t i = 0; i < certificates.size(); ++i) {
        for (const auto& name : certificates[i].names) {
            auto [it, inserted] = by_name.try_emplace(name, empty_group());
            int& slot = it->second[type_index(certificates[i].key_type)];
            if (slot < 0) slot = static_cast<int>(i);
        }
    }
    Group default_group = empty_group();
    if (certificates[0].names.empty()) {
        default_group[type_index(certificates[0].key_type)] = 0;
    } else {
        default_group = by_name[certificates[0].names[0]];
    }

    std::map<Group, std::size_t> context_of;
    auto context_for = [&](const Group& group) -> std::optional<std::size_t> {
        if (auto it = context_of.find(group); it != context_of.end()) return it->second;
        SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
        if (!ctx || !tls->configure(ctx.get(), section, error)) return std::nullopt;
        for (int index : group) {
            if (index < 0) continue;
            const Certificate& certificate = certificates[static_cast<std::size_t>(index)];
            if (SSL_CTX_use_certificate(ctx.get(), certificate.leaf.get()) != 1 ||
                SSL_CTX_use_PrivateKey(ctx.get(), certificate.key.get()) != 1) {
                error = "certificate \"" + section.certificates[index].cert_file +
                        "\": " + last_error();
                return std::nullopt;
            }
            for (const auto& intermediate : certificate.intermediates) {
                if (SSL_CTX_add1_chain_cert(ctx.get(), intermediate.get()) != 1) {
                    error = "certificate \"" + section.certificates[index].cert_file +
                            "\": its chain: " + last_error();
                    return std::nullopt;
                }
            }
        }
        tls->contexts_.push_back(std::move(ctx));
        context_of.emplace(group, tls->contexts_.size() - 1);
        return tls->contexts_.size() - 1;
    };

    if (!context_for(default_group)) return nullptr;
    for (const auto& [name, group] : by_name) {
        auto index = context_for(group);
        if (!index) return nullptr;
        tls->names_.add(name, *index);
    }
    return tls;
}

ServerTls::~ServerTls() = default;

bool ServerTls::configure(SSL_CTX* ctx, const config::TlsSection& section, std::string& error) {
    SSL_CTX_set_app_data(ctx, this);
    int min_version = section.min_version >= 13 ? TLS1_3_VERSION : TLS1_2_VERSION;
    if (SSL_CTX_set_min_proto_version(ctx, min_version) != 1) {
        error = "[tls] min_version: " + last_error();
        return false;
    }
    std::uint64_t options = SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                            SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF;
    if (!ring_) {
        options |= SSL_OP_NO_TICKET;
        // Under TLS 1.3 NO_TICKET means stateful tickets, which with no session cache could
        // never resume: send none.
        SSL_CTX_set_num_tickets(ctx, 0);
    }
    SSL_CTX_set_options(ctx, options);
    // Idle keep-alive connections give their read and write buffers back.
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    const std::string& ciphers = section.ciphers.empty() ? kDefaultCiphers : section.ciphers;
    if (SSL_CTX_set_cipher_list(ctx, ciphers.c_str()) != 1) {
        error = "[tls] ciphers: " + last_error();
        return false;
    }
    // Resumption is by tickets only: a per-worker session-ID cache would resume only on the
    // worker that made the session.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof kSessionContext - 1);
    if (ring_) {
        auto lifetime =
            std::chrono::duration_cast<std::chrono::seconds>(section.session_ticket_rotation)
                .count();
        // A key decrypts for two periods after it stopped encrypting: a ticket must not be
        // offered for longer than its key can open it.
        SSL_CTX_set_timeout(ctx, static_cast<long>(2 * lifetime));
        SSL_CTX_set_num_tickets(ctx, 1);
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key);
    }
    SSL_CTX_set_tlsext_servername_callback(ctx, on_server_name);
    SSL_CTX_set_tlsext_servername_arg(ctx, this);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, this);
    return true;
}

SslPtr ServerTls::accept(int fd) const {
    SslPtr ssl(SSL_new(contexts_.front().get()));
    if (!ssl || SSL_set_fd(ssl.get(), fd) != 1) {
        spdlog::error("tls: cannot set up a connection: {}", last_error());
        return nullptr;
    }
    SSL_set_accept_state(ssl.get());
    return ssl;
}

int ServerTls::on_server_name(SSL* ssl, int*, void* arg) {
    const auto* self = static_cast<const ServerTls*>(arg);
    const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name == nullptr) return SSL_TLSEXT_ERR_OK;
    // An unknown name gets the default certificate, as nginx and HAProxy do: the client decides
    // whether it is acceptable.
    if (auto index = self->names_.find(name)) {
        SSL_CTX* chosen = self->contexts_[*index].get();
        if (chosen != SSL_get_SSL_CTX(ssl)) SSL_set_SSL_CTX(ssl, chosen);
    }
    return SSL_TLSEXT_ERR_OK;
}

int ServerTls::on_alpn(SSL*, const unsigned char** out, unsigned char* out_len,
                       const unsigned char* in, unsigned int in_len, void* arg) {
    const auto* self = static_cast<const ServerTls*>(arg);
    unsigned char* selected = nullptr;
    if (SSL_select_next_proto(&selected, out_len, self->alpn_.data(),
                              static_cast<unsigned int>(self->alpn_.size()), in,
                              in_len) != OPENSSL_NPN_NEGOTIATED) {
        // RFC 7301: a client that offers only protocols we do not speak is refused.
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
}

int ServerTls::on_ticket_key(SSL* ssl, unsigned char* name, unsigned char* iv,
                             EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac, int encrypt) {
    const auto* self = static_cast<const ServerTls*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
    shm::TicketKeys keys;
    // No keys: no ticket is issued, and a presented one means a full handshake.
    if (self == nullptr || self->ring_ == nullptr || !shm::read_keys(*self->ring_, keys)) return 0;
    auto use_key = [&](shm::TicketKey& key) {
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
            OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key.hmac_key,
                                              sizeof key.hmac_key),
            OSSL_PARAM_construct_end()};
        return EVP_MAC_CTX_set_params(mac, params) == 1;
    };
    int result = 0;
    if (encrypt) {
        shm::TicketKey& key = keys.keys[0];
        std::memcpy(name, key.name, sizeof key.name);
        bool ok = RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) == 1 &&
                  EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key.aes_key, iv) == 1 &&
                  use_key(key);
        result = ok ? 1 : -1;
    } else {
        for (std::uint32_t i = 0; i < keys.count; ++i) {
            shm::TicketKey& key = keys.keys[i];
            if (std::memcmp(name, key.name, sizeof key.name) != 0) continue;
            bool ok =
                EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key.aes_key, iv) == 1 &&
                use_key(key);
            // 2: the client gets a fresh ticket — when the key is an older one, and always under
            // TLS 1.3, whose clients use a ticket once (RFC 8446, C.4): without a new one every
            // other connection would be a full handshake.
            bool renew = i != 0 || SSL_version(ssl) >= TLS1_3_VERSION;
            result = !ok ? -1 : renew ? 2 : 1;
            break;
        }
    }
    OPENSSL_cleanse(&keys, sizeof keys);
    return result;
}

}  // namespace proxyd::tls
