// Loading a certificate and its key is where a bad file is caught: everything here runs in the
// master before a certificate is put to use, so every failure becomes a one-line message and the
// working certificate stays in place.
//
// OpenSSL reports failures through its per-thread error queue. Each entry point clears it first,
// so that telling "no more PEM blocks" apart from "a block does not parse" reads our own error,
// and clears it again before returning, so no caller inherits ours.
#include "common/tls/certificate.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <array>
#include <climits>
#include <ctime>
#include <memory>
#include <utility>

namespace proxyd::tls {

namespace {

using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, OpenSslDeleter<GENERAL_NAMES_free>>;

struct OpenSslFree {
    void operator()(unsigned char* p) const { OPENSSL_free(p); }
};
using OpenSslBytes = std::unique_ptr<unsigned char, OpenSslFree>;

BioPtr memory_bio(std::string_view text) {
    if (text.size() > static_cast<std::size_t>(INT_MAX)) return nullptr;
    return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

// The PEM readers end a file the same way they fail on one: by returning null. Only "no start
// line" means the text simply held no further block of the kind asked for.
bool reached_end_of_pem() {
    const unsigned long code = ERR_peek_last_error();
    return ERR_GET_LIB(code) == ERR_LIB_PEM && ERR_GET_REASON(code) == PEM_R_NO_START_LINE;
}

// An encrypted key would otherwise make OpenSSL prompt on the terminal, from a daemon. Keys are
// stored unencrypted (protected by file permissions), so a passphrase is never available; an
// encrypted key is refused before OpenSSL sees it, and this is the backstop.
int refuse_passphrase(char*, int, int, void*) {
    return -1;
}

// Appends every certificate of `pem` to `out`; false when a block does not parse.
bool read_certificates(std::string_view pem, std::vector<X509Ptr>& out, std::string& error) {
    BioPtr bio = memory_bio(pem);
    if (!bio) {
        error = "certificate text cannot be read: " + last_error();
        return false;
    }
    while (true) {
        X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, refuse_passphrase, nullptr));
        if (!cert) break;
        out.push_back(std::move(cert));
    }
    if (reached_end_of_pem()) {
        ERR_clear_error();
        return true;
    }
    error = "certificate " + std::to_string(out.size() + 1) + " does not parse: " + last_error();
    return false;
}

enum class KeyBlock { None, Plain, Encrypted };

// The first private key block of `pem`, found by its label ("PRIVATE KEY", "RSA PRIVATE KEY",
// "ENCRYPTED PRIVATE KEY", ...). OpenSSL 3's key decoders report a missing key, an encrypted one
// and a corrupt one alike ("DECODER routines::unsupported"), so the text is looked at first to
// tell the operator which it is.
KeyBlock find_key_block(std::string_view pem) {
    constexpr std::string_view kBegin = "-----BEGIN ";
    for (std::size_t at = pem.find(kBegin); at != std::string_view::npos;
         at = pem.find(kBegin, at + 1)) {
        const std::size_t label_start = at + kBegin.size();
        const std::size_t label_end = pem.find("-----", label_start);
        if (label_end == std::string_view::npos) break;
        const std::string_view label = pem.substr(label_start, label_end - label_start);
        if (!label.ends_with("PRIVATE KEY")) continue;
        // PKCS#8 marks encryption in the label, the older format in a Proc-Type header.
        const std::string_view block = pem.substr(label_end);
        const std::string_view header = block.substr(0, block.find("-----END"));
        const bool encrypted = label.starts_with("ENCRYPTED") ||
                               header.find("Proc-Type: 4,ENCRYPTED") != std::string_view::npos;
        return encrypted ? KeyBlock::Encrypted : KeyBlock::Plain;
    }
    return KeyBlock::None;
}

// The message never quotes the key text: only what kind of block was there, and OpenSSL's
// reason (a library and reason code, no data).
PkeyPtr read_private_key(std::string_view pem, std::string& error) {
    switch (find_key_block(pem)) {
        case KeyBlock::None:
            error = "no PEM private key found";
            return nullptr;
        case KeyBlock::Encrypted:
            error = "private key is encrypted; it must be stored unencrypted";
            return nullptr;
        case KeyBlock::Plain:
            break;
    }
    BioPtr bio = memory_bio(pem);
    if (!bio) {
        error = "private key text cannot be read: " + last_error();
        return nullptr;
    }
    PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, refuse_passphrase, nullptr));
    if (!key) {
        error = "private key does not parse: " + last_error();
        return nullptr;
    }
    ERR_clear_error();
    return key;
}

// Splits the chain into the leaf and its intermediates, in file order.
bool read_chain(std::string_view pem, Certificate& cert, std::string& error) {
    std::vector<X509Ptr> chain;
    if (!read_certificates(pem, chain, error)) return false;
    if (chain.empty()) {
        error = "no PEM certificate found";
        return false;
    }
    cert.leaf = std::move(chain.front());
    chain.erase(chain.begin());
    cert.intermediates = std::move(chain);
    return true;
}

bool to_unix_seconds(const ASN1_TIME* time, std::int64_t& out) {
    std::tm tm{};
    if (time == nullptr || ASN1_TIME_to_tm(time, &tm) != 1) return false;
    out = static_cast<std::int64_t>(timegm(&tm));
    return true;
}

// Both bounds are inclusive (RFC 5280 §4.1.2.5).
bool check_validity(Certificate& cert, std::int64_t now, std::string& error) {
    if (!to_unix_seconds(X509_get0_notBefore(cert.leaf.get()), cert.not_before) ||
        !to_unix_seconds(X509_get0_notAfter(cert.leaf.get()), cert.not_after)) {
        ERR_clear_error();
        error = "certificate validity dates do not parse";
        return false;
    }
    if (now < cert.not_before) {
        error = "certificate is not valid before " + format_utc(cert.not_before);
        return false;
    }
    if (now > cert.not_after) {
        error = "certificate expired on " + format_utc(cert.not_after);
        return false;
    }
    return true;
}

KeyType key_type_of(const EVP_PKEY* key) {
    switch (EVP_PKEY_get_base_id(key)) {
        case EVP_PKEY_RSA:
            return KeyType::Rsa;
        case EVP_PKEY_EC:
            return KeyType::Ecdsa;
        default:
            return KeyType::Other;
    }
}

// DNS names are case-insensitive; SNI lookups compare lower-case. ASCII only: international
// names are carried as A-labels ("xn--...").
std::string to_lower(std::string text) {
    for (char& c : text) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    return text;
}

// An entry with an embedded NUL could claim a name it does not hold ("good.com\0.evil.com");
// it and empty entries are skipped rather than truncated.
bool usable_name(const std::string& name) {
    return !name.empty() && name.find('\0') == std::string::npos;
}

std::vector<std::string> san_dns_names(const X509* leaf) {
    std::vector<std::string> names;
    GeneralNamesPtr sans(static_cast<GENERAL_NAMES*>(
        X509_get_ext_d2i(leaf, NID_subject_alt_name, nullptr, nullptr)));
    if (!sans) return names;
    for (int i = 0; i < sk_GENERAL_NAME_num(sans.get()); ++i) {
        const GENERAL_NAME* entry = sk_GENERAL_NAME_value(sans.get(), i);
        if (entry->type != GEN_DNS) continue;
        const ASN1_STRING* dns = entry->d.dNSName;
        std::string name(reinterpret_cast<const char*>(ASN1_STRING_get0_data(dns)),
                         static_cast<std::size_t>(ASN1_STRING_length(dns)));
        if (usable_name(name)) names.push_back(to_lower(std::move(name)));
    }
    return names;
}

// The last CN is the most specific one, the one other TLS implementations also take.
std::string common_name(const X509* leaf) {
    const X509_NAME* subject = X509_get_subject_name(leaf);
    int last = -1;
    for (int i = -1; (i = X509_NAME_get_index_by_NID(subject, NID_commonName, i)) >= 0;) last = i;
    if (last < 0) return {};
    unsigned char* raw = nullptr;
    const int length =
        ASN1_STRING_to_UTF8(&raw, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, last)));
    const OpenSslBytes utf8(raw);
    if (length < 0 || !utf8) return {};
    std::string name(reinterpret_cast<const char*>(utf8.get()), static_cast<std::size_t>(length));
    return usable_name(name) ? to_lower(std::move(name)) : std::string();
}

// As RFC 6125 §6.4.4 requires, the CN is consulted only when the certificate lists no DNS name.
std::vector<std::string> names_of(const X509* leaf) {
    std::vector<std::string> names = san_dns_names(leaf);
    if (names.empty()) {
        std::string cn = common_name(leaf);
        if (!cn.empty()) names.push_back(std::move(cn));
    }
    return names;
}

std::string one_line(const X509_NAME* name) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio || X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253) < 0) return {};
    char* data = nullptr;
    const long length = BIO_get_mem_data(bio.get(), &data);
    if (length <= 0 || data == nullptr) return {};
    return std::string(data, static_cast<std::size_t>(length));
}

}  // namespace

std::optional<Certificate> load_certificate(std::string_view cert_pem, std::string_view key_pem,
                                            std::int64_t now, std::string& error) {
    ERR_clear_error();
    Certificate cert;
    if (!read_chain(cert_pem, cert, error)) return std::nullopt;
    cert.key = read_private_key(key_pem, error);
    if (!cert.key) return std::nullopt;
    if (X509_check_private_key(cert.leaf.get(), cert.key.get()) != 1) {
        ERR_clear_error();
        error = "certificate does not match its key";
        return std::nullopt;
    }
    if (!check_validity(cert, now, error)) return std::nullopt;
    cert.key_type = key_type_of(cert.key.get());
    cert.names = names_of(cert.leaf.get());
    cert.subject = one_line(X509_get_subject_name(cert.leaf.get()));
    ERR_clear_error();
    return cert;
}

bool load_ca_bundle(std::string_view pem, std::vector<X509Ptr>& out, std::string& error) {
    ERR_clear_error();
    std::vector<X509Ptr> certs;
    if (!read_certificates(pem, certs, error)) return false;
    if (certs.empty()) {
        error = "no PEM certificate found";
        return false;
    }
    for (X509Ptr& cert : certs) out.push_back(std::move(cert));
    return true;
}

std::string format_utc(std::int64_t unix_seconds) {
    const auto time = static_cast<std::time_t>(unix_seconds);
    std::tm tm{};
    std::array<char, 64> text{};
    if (gmtime_r(&time, &tm) == nullptr ||
        std::strftime(text.data(), text.size(), "%Y-%m-%d %H:%M:%S UTC", &tm) == 0) {
        return std::to_string(unix_seconds) + " (unix time)";
    }
    return text.data();
}

}  // namespace proxyd::tls
