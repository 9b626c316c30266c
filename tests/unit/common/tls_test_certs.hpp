// Certificates made on the fly for tests, so no test depends on files that expire: a key, a
// subject CN, optional subjectAltName DNS entries and validity, self-signed or signed by another.
#pragma once

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <cstdint>
#include <ctime>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "common/tls/openssl_ptr.hpp"

namespace proxyd::tls::test {

enum class TestKey { Rsa, Ecdsa };

struct TestCertSpec {
    TestKey key = TestKey::Ecdsa;
    std::string common_name = "test";
    std::vector<std::string> dns_names;  // subjectAltName; none means no extension
    std::int64_t not_before = 0;
    std::int64_t not_after = 4102444800;  // 2100-01-01
    bool is_ca = false;
};

struct TestCert {
    X509Ptr cert;
    PkeyPtr key;
    std::string cert_pem;
    std::string key_pem;
};

inline void check(bool ok, const char* what) {
    if (!ok) throw std::runtime_error(std::string("test certificate: ") + what);
}

inline PkeyPtr make_key(TestKey type) {
    // 2048 bits: OpenSSL's default security level refuses smaller RSA keys in handshakes.
    PkeyPtr key(type == TestKey::Rsa ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256"));
    check(key != nullptr, "key generation");
    return key;
}

inline std::string bio_text(BIO* bio) {
    char* data = nullptr;
    const long length = BIO_get_mem_data(bio, &data);
    return std::string(data, static_cast<std::size_t>(length));
}

inline std::string to_pem(X509* cert) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    check(bio && PEM_write_bio_X509(bio.get(), cert) == 1, "certificate PEM");
    return bio_text(bio.get());
}

inline std::string to_pem(EVP_PKEY* key) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    check(
        bio && PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) == 1,
        "key PEM");
    return bio_text(bio.get());
}

// `config` is in openssl.cnf syntax, e.g. "DNS:a.example.com,DNS:*.example.com".
inline void add_extension(X509* cert, int nid, const std::string& config) {
    X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, nullptr, nid, config.c_str());
    check(extension != nullptr, "extension");
    const int added = X509_add_ext(cert, extension, -1);
    X509_EXTENSION_free(extension);
    check(added == 1, "add extension");
}

inline void add_names(X509* cert, const TestCertSpec& spec) {
    X509_NAME* subject = X509_get_subject_name(cert);
    const auto* cn = reinterpret_cast<const unsigned char*>(spec.common_name.c_str());
    check(X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8, cn, -1, -1, 0) == 1, "CN");
    if (spec.dns_names.empty()) return;
    std::string san;
    for (const std::string& name : spec.dns_names) san += (san.empty() ? "DNS:" : ",DNS:") + name;
    add_extension(cert, NID_subject_alt_name, san);
}

// Signed by `issuer` when given, else self-signed.
inline TestCert make_cert(const TestCertSpec& spec, const TestCert* issuer = nullptr) {
    static long serial = 1;
    TestCert out{X509Ptr(X509_new()), make_key(spec.key), {}, {}};
    X509* cert = out.cert.get();
    check(cert != nullptr, "X509_new");
    check(X509_set_version(cert, 2) == 1, "version");
    check(ASN1_INTEGER_set(X509_get_serialNumber(cert), serial++) == 1, "serial");
    check(ASN1_TIME_set(X509_getm_notBefore(cert), static_cast<time_t>(spec.not_before)) &&
              ASN1_TIME_set(X509_getm_notAfter(cert), static_cast<time_t>(spec.not_after)),
          "validity");
    check(X509_set_pubkey(cert, out.key.get()) == 1, "public key");
    add_names(cert, spec);
    if (spec.is_ca) add_extension(cert, NID_basic_constraints, "critical,CA:TRUE");
    X509* signer = issuer != nullptr ? issuer->cert.get() : cert;
    EVP_PKEY* signing_key = issuer != nullptr ? issuer->key.get() : out.key.get();
    check(X509_set_issuer_name(cert, X509_get_subject_name(signer)) == 1, "issuer");
    check(X509_sign(cert, signing_key, EVP_sha256()) > 0, "sign");
    out.cert_pem = to_pem(cert);
    out.key_pem = to_pem(out.key.get());
    return out;
}

}  // namespace proxyd::tls::test
