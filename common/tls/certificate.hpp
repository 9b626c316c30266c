// A certificate chain with its private key, parsed and validated before anything uses it: the
// master loads these when the config is read, on reload and when a watched file changes, and a
// certificate that fails here never replaces a working one.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/tls/openssl_ptr.hpp"

namespace proxyd::tls {

enum class KeyType { Rsa, Ecdsa, Other };

struct Certificate {
    X509Ptr leaf;
    std::vector<X509Ptr> intermediates;  // in file order, after the leaf
    PkeyPtr key;
    KeyType key_type = KeyType::Other;
    // The names SNI chooses it by: the subjectAltName DNS entries, else the subject CN;
    // lower-case, wildcards ("*.example.com") kept as written.
    std::vector<std::string> names;
    std::int64_t not_before = 0;  // unix seconds
    std::int64_t not_after = 0;
    std::string subject;  // one line, for status and logs
};

// Parses `cert_pem` (leaf first, then intermediates) and `key_pem`, and checks that the key
// matches the leaf and that `now` (unix seconds) lies within the leaf's validity. On failure,
// `error` says why in one line without any key material, e.g. "certificate does not match its
// key", "certificate expired on 2026-01-02 03:04:05 UTC", "no PEM certificate found".
std::optional<Certificate> load_certificate(std::string_view cert_pem, std::string_view key_pem,
                                            std::int64_t now, std::string& error);

// The certificates of a CA bundle (upstream verification); false with `error` when the text
// holds none or one does not parse.
bool load_ca_bundle(std::string_view pem, std::vector<X509Ptr>& out, std::string& error);

// "2026-01-02 03:04:05 UTC".
std::string format_utc(std::int64_t unix_seconds);

}  // namespace proxyd::tls
