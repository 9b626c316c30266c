// [tls]: TLS listeners, their certificates and handshake settings. Certificate and key files are
// read here, while the config is loaded by the master (before workers drop privileges, and again
// on every reload), and each pair is validated as the TLS code will use it, so a config that
// passes `proxyd -t` does not fail later on a certificate. Key material never appears in a message.
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <cctype>
#include <ctime>

#include "common/config/reader.hpp"
#include "common/config/secret_file.hpp"
#include "common/config/text.hpp"
#include "common/tls/certificate.hpp"
#include "common/tls/openssl_ptr.hpp"

namespace proxyd::config::detail {

namespace {

constexpr std::string_view kTlsKeys[] = {
    "listen",      "certificates", "alpn", "session_tickets", "session_ticket_rotation", "hsts",
    "min_version", "ciphers",      "watch"};
constexpr std::string_view kCertificateKeys[] = {"cert", "key"};
constexpr std::string_view kAlpnProtocols[] = {"h2", "http/1.1"};
constexpr std::string_view kMinVersions[] = {"1.2", "1.3"};
constexpr std::string_view kHstsFlags[] = {"includeSubDomains", "preload"};

constexpr Millis kMinTicketRotation{60'000};
// A ticket stays valid for two rotation periods, and TLS 1.3 caps a ticket's lifetime at 7 days
// (RFC 8446, 4.6.1).
constexpr Millis kMaxTicketRotation{84 * 3'600'000};

// ---- certificates ----

// Reads `key` ("cert" or "key") of a certificate entry: the resolved path into `path`, the
// content into `pem`. False (reported) when absent, not a string or unreadable.
bool read_pem_file(Reader& r, const toml::table& entry, std::string_view key, std::size_t max_size,
                   std::string& path, std::string& pem) {
    if (!r.require(entry, key, "in a [tls] certificate")) return false;
    const toml::node& node = *entry.get(key);
    const auto text = r.nonempty_string(node, key);
    if (!text) return false;
    path = resolve_config_path(r.file(), *text);
    std::string error;
    if (!read_secret_file(path, pem, error, max_size)) {
        r.error(node, "cannot read " + quote(key) + " " + quote(path) + ": " + error);
        return false;
    }
    return true;
}

void parse_certificate(Reader& r, const toml::node& node, TlsSection& out) {
    const toml::table* entry = node.as_table();
    if (entry == nullptr) {
        r.wrong_type(node, "a table like { cert = \"site.crt\", key = \"site.key\" }",
                     "certificates");
        return;
    }
    r.check_keys(*entry, "in a [tls] certificate", kCertificateKeys);
    TlsCertificate cert;
    cert.loc = loc_of(node);
    // Both files are read even when the first fails, so that every problem is reported at once.
    const bool cert_ok =
        read_pem_file(r, *entry, "cert", kMaxPemBundleFile, cert.cert_file, cert.cert_pem);
    const bool key_ok =
        read_pem_file(r, *entry, "key", kMaxSecretFile, cert.key_file, cert.key_pem);
    if (!cert_ok || !key_ok) return;
    std::string error;
    if (!tls::load_certificate(cert.cert_pem, cert.key_pem, std::time(nullptr), error)) {
        r.error(node, "certificate " + quote(cert.cert_file) + ": " + error);
        return;
    }
    out.certificates.push_back(std::move(cert));
}

void parse_certificates(Reader& r, const toml::table& tls, TlsSection& out) {
    if (!r.require(tls, "certificates", "in [tls]")) return;
    const toml::node& node = *tls.get("certificates");
    const toml::array* list = r.array(node, "certificates");
    if (list == nullptr) return;
    if (list->empty()) {
        r.error(node, "\"certificates\" must list at least one { cert = \"...\", key = \"...\" }");
        return;
    }
    for (const toml::node& entry : *list) parse_certificate(r, entry, out);
}

// ---- handshake settings ----

void parse_alpn(Reader& r, const toml::node& node, TlsSection& out) {
    const auto items = r.strings(node, "alpn");
    if (!items) return;
    if (node.as_array()->empty()) {
        r.error(node, "\"alpn\" must list at least one protocol: \"h2\", \"http/1.1\"");
        return;
    }
    std::vector<std::string> protocols;
    bool ok = true;
    for (const StringItem& item : *items) {
        if (std::find(std::begin(kAlpnProtocols), std::end(kAlpnProtocols), item.value) ==
            std::end(kAlpnProtocols)) {
            r.error(*item.node, "unknown ALPN protocol " + quote(item.value) +
                                    "; expected \"h2\" or \"http/1.1\"" +
                                    did_you_mean(item.value, kAlpnProtocols));
            ok = false;
        } else if (std::find(protocols.begin(), protocols.end(), item.value) != protocols.end()) {
            r.error(*item.node, "duplicate ALPN protocol " + quote(item.value));
            ok = false;
        } else {
            protocols.push_back(item.value);
        }
    }
    if (!ok || items->size() != node.as_array()->size()) return;
    out.alpn = std::move(protocols);
}

void parse_ticket_rotation(Reader& r, const toml::table& tls, TlsSection& out) {
    const toml::node* node = tls.get("session_ticket_rotation");
    if (node == nullptr) return;
    const auto d = r.duration(*node, "session_ticket_rotation", false);
    if (!d) return;
    if (*d < kMinTicketRotation) {
        r.error(*node, "\"session_ticket_rotation\" must be at least \"1m\"");
    } else if (*d > kMaxTicketRotation) {
        r.error(*node,
                "\"session_ticket_rotation\" must be at most \"84h\": a ticket stays valid for "
                "two periods, and TLS 1.3 allows at most 7 days");
    } else {
        out.session_ticket_rotation = *d;
    }
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && lower(a) == lower(b);
}

// Why `value` is not a Strict-Transport-Security value this proxy will send ("max-age=N" then
// optional "includeSubDomains" and "preload", separated by ";"), or "" when it is.
std::string hsts_problem(std::string_view value) {
    std::vector<std::string_view> directives;
    std::size_t start = 0;
    while (start <= value.size()) {
        const auto semi = std::min(value.find(';', start), value.size());
        directives.push_back(trim(value.substr(start, semi - start)));
        start = semi + 1;
    }
    const std::string_view first = directives.front();
    constexpr std::string_view kMaxAge = "max-age=";
    if (first.size() < kMaxAge.size() || !iequals(first.substr(0, kMaxAge.size()), kMaxAge)) {
        return "it must start with \"max-age=SECONDS\"";
    }
    const std::string_view seconds = first.substr(kMaxAge.size());
    const bool digits = !seconds.empty() && std::all_of(seconds.begin(), seconds.end(), [](char c) {
        return std::isdigit(static_cast<unsigned char>(c)) != 0;
    });
    if (!digits) return "max-age must be a whole number of seconds, got " + quote(seconds);
    if (seconds.size() > 10) return "max-age " + std::string(seconds) + " is too large";
    std::vector<std::string> seen;
    for (std::size_t i = 1; i < directives.size(); ++i) {
        const std::string_view d = directives[i];
        if (d.empty()) return "empty directive (a stray \";\")";
        const auto known = std::find_if(std::begin(kHstsFlags), std::end(kHstsFlags),
                                        [&](std::string_view f) { return iequals(f, d); });
        if (known == std::end(kHstsFlags)) {
            return "unknown directive " + quote(d) +
                   "; expected \"includeSubDomains\" or \"preload\"" + did_you_mean(d, kHstsFlags);
        }
        if (std::find(seen.begin(), seen.end(), *known) != seen.end()) {
            return quote(*known) + " is repeated";
        }
        seen.emplace_back(*known);
    }
    return "";
}

void parse_hsts(Reader& r, const toml::node& node, TlsSection& out) {
    auto value = r.string(node, "hsts");
    if (!value) return;
    if (value->empty()) {
        r.error(node,
                "\"hsts\" must not be empty; leave it out to send no Strict-Transport-Security");
        return;
    }
    if (const std::string problem = hsts_problem(*value); !problem.empty()) {
        r.error(node, "\"hsts\" value " + quote(*value) +
                          " is not a Strict-Transport-Security value: " + problem +
                          " (e.g. \"max-age=31536000; includeSubDomains\")");
        return;
    }
    out.hsts = std::move(*value);
}

void parse_min_version(Reader& r, const toml::node& node, TlsSection& out) {
    if (node.is_floating_point()) {
        // min_version = 1.2 is an easy slip; the float would also lose "1.10"-style precision.
        r.wrong_type(node, "a string (\"1.2\" or \"1.3\")", "min_version");
        return;
    }
    const auto text = r.string(node, "min_version");
    if (!text) return;
    if (*text == "1.0" || *text == "1.1") {
        r.error(node, "min_version " + quote(*text) +
                          ": TLS below 1.2 is not supported; use \"1.2\" or \"1.3\"");
        return;
    }
    if (std::find(std::begin(kMinVersions), std::end(kMinVersions), *text) ==
        std::end(kMinVersions)) {
        r.error(node, "unknown min_version " + quote(*text) + "; expected one of: 1.2, 1.3");
        return;
    }
    out.min_version = *text == "1.3" ? 13 : 12;
}

bool selects_a_cipher(SSL_CTX* ctx, const std::string& list) {
    const bool ok = SSL_CTX_set_cipher_list(ctx, list.c_str()) == 1;
    ERR_clear_error();
    return ok;
}

// The list as OpenSSL reads it (elements separated by ":", ",", " " or ";"), checked as a whole and
// element by element: OpenSSL itself skips an element it does not know, so a typo in one name
// would otherwise pass unnoticed.
void parse_ciphers(Reader& r, const toml::node& node, TlsSection& out) {
    auto list = r.nonempty_string(node, "ciphers");
    if (!list) return;
    const tls::SslCtxPtr ctx(SSL_CTX_new(TLS_method()));
    if (!ctx) {
        ERR_clear_error();
        r.error(node, "\"ciphers\": cannot check the list (OpenSSL could not make a context)");
        return;
    }
    bool ok = true;
    std::size_t start = 0;
    while (start < list->size()) {
        const auto end = std::min(list->find_first_of(":, ;", start), list->size());
        const std::string element = list->substr(start, end - start);
        start = end + 1;
        // Empty, removals ("!x", "-x"), moves ("+x") and commands ("@STRENGTH") select nothing.
        if (element.empty() || std::string_view("!-+@").find(element[0]) != std::string::npos) {
            continue;
        }
        if (selects_a_cipher(ctx.get(), element)) continue;
        ok = false;
        if (element.starts_with("TLS_")) {
            r.error(node, "\"ciphers\": " + quote(element) +
                              " is a TLS 1.3 cipher suite; \"ciphers\" is the TLS 1.2 list "
                              "(TLS 1.3 suites are not configurable)");
        } else {
            r.error(node,
                    "\"ciphers\": " + quote(element) + " matches no cipher this OpenSSL supports");
        }
    }
    if (ok && !selects_a_cipher(ctx.get(), *list)) {
        r.error(node, "\"ciphers\": OpenSSL selects no cipher from " + quote(*list));
        ok = false;
    }
    if (ok) out.ciphers = std::move(*list);
}

}  // namespace

void parse_tls(Reader& r, const toml::node& node, TlsSection& out) {
    const toml::table* tls = r.table(node, "tls");
    if (tls == nullptr) return;
    out.enabled = true;
    out.loc = loc_of(node);
    r.check_keys(*tls, "in [tls]", kTlsKeys);
    parse_listen(r, *tls, "in [tls]", out.listen);
    parse_certificates(r, *tls, out);
    if (const toml::node* n = tls->get("alpn")) parse_alpn(r, *n, out);
    r.read(*tls, "session_tickets", out.session_tickets);
    parse_ticket_rotation(r, *tls, out);
    if (const toml::node* n = tls->get("hsts")) parse_hsts(r, *n, out);
    if (const toml::node* n = tls->get("min_version")) parse_min_version(r, *n, out);
    if (const toml::node* n = tls->get("ciphers")) parse_ciphers(r, *n, out);
    r.read(*tls, "watch", out.watch);
}

}  // namespace proxyd::config::detail
