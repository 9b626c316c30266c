// Certificate loading (common/tls/certificate.hpp) and SNI name matching
// (common/tls/sni_table.hpp), with certificates generated in the test.
#include <doctest.h>
#include <openssl/err.h>

#include <string>
#include <vector>

#include "common/tls/certificate.hpp"
#include "common/tls/sni_table.hpp"
#include "tls_test_certs.hpp"

using namespace proxyd::tls;
using namespace proxyd::tls::test;

namespace {

constexpr std::int64_t kNotBefore = 1767323045;  // 2026-01-02 03:04:05 UTC
constexpr std::int64_t kNotAfter = 1798859045;   // 2027-01-02 03:04:05 UTC
constexpr std::int64_t kNow = kNotBefore + 86400;

TestCertSpec spec(TestKey key, std::string cn, std::vector<std::string> dns_names = {}) {
    TestCertSpec s;
    s.key = key;
    s.common_name = std::move(cn);
    s.dns_names = std::move(dns_names);
    s.not_before = kNotBefore;
    s.not_after = kNotAfter;
    return s;
}

// A loading failure: no certificate, a message, and nothing left on OpenSSL's error queue.
std::string load_error(const std::string& cert_pem, const std::string& key_pem,
                       std::int64_t now = kNow) {
    std::string error;
    const auto cert = load_certificate(cert_pem, key_pem, now, error);
    CHECK_FALSE(cert.has_value());
    CHECK(ERR_peek_error() == 0);
    return error;
}

// The base64 body lines of a PEM text, each of which must never appear in a message.
std::vector<std::string> body_lines(const std::string& pem) {
    std::vector<std::string> lines;
    std::size_t start = 0;
    while (start < pem.size()) {
        const std::size_t end = pem.find('\n', start);
        std::string line = pem.substr(start, end - start);
        if (!line.empty() && !line.starts_with("-----")) lines.push_back(line);
        if (end == std::string::npos) break;
        start = end + 1;
    }
    return lines;
}

}  // namespace

TEST_CASE("tls certificate: RSA leaf with SAN names, lower-cased, wildcard kept") {
    const TestCert rsa =
        make_cert(spec(TestKey::Rsa, "Ignored.Example", {"WWW.Example.com", "*.example.com"}));
    std::string error;
    const auto cert = load_certificate(rsa.cert_pem, rsa.key_pem, kNow, error);
    REQUIRE_MESSAGE(cert.has_value(), error);
    CHECK(cert->key_type == KeyType::Rsa);
    CHECK(cert->names == std::vector<std::string>{"www.example.com", "*.example.com"});
    CHECK(cert->not_before == kNotBefore);
    CHECK(cert->not_after == kNotAfter);
    CHECK(cert->subject == "CN=Ignored.Example");
    CHECK(cert->leaf != nullptr);
    CHECK(cert->key != nullptr);
    CHECK(cert->intermediates.empty());
    CHECK(ERR_peek_error() == 0);
}

TEST_CASE("tls certificate: ECDSA leaf") {
    const TestCert ec = make_cert(spec(TestKey::Ecdsa, "api.example.com", {"api.example.com"}));
    std::string error;
    const auto cert = load_certificate(ec.cert_pem, ec.key_pem, kNow, error);
    REQUIRE_MESSAGE(cert.has_value(), error);
    CHECK(cert->key_type == KeyType::Ecdsa);
    CHECK(cert->names == std::vector<std::string>{"api.example.com"});
}

TEST_CASE("tls certificate: subject CN when there is no subjectAltName") {
    const TestCert ec = make_cert(spec(TestKey::Ecdsa, "Legacy.Example.COM"));
    std::string error;
    const auto cert = load_certificate(ec.cert_pem, ec.key_pem, kNow, error);
    REQUIRE_MESSAGE(cert.has_value(), error);
    CHECK(cert->names == std::vector<std::string>{"legacy.example.com"});
}

TEST_CASE("tls certificate: the cert and key may share one file") {
    const TestCert ec = make_cert(spec(TestKey::Ecdsa, "a.example.com"));
    const std::string both = ec.key_pem + ec.cert_pem;
    std::string error;
    const auto cert = load_certificate(both, both, kNow, error);
    REQUIRE_MESSAGE(cert.has_value(), error);
    CHECK(cert->intermediates.empty());
}

TEST_CASE("tls certificate: a key that is not the certificate's") {
    const TestCert one = make_cert(spec(TestKey::Ecdsa, "one.example.com"));
    const TestCert two = make_cert(spec(TestKey::Ecdsa, "two.example.com"));
    const TestCert rsa = make_cert(spec(TestKey::Rsa, "rsa.example.com"));
    CHECK(load_error(one.cert_pem, two.key_pem) == "certificate does not match its key");
    CHECK(load_error(one.cert_pem, rsa.key_pem) == "certificate does not match its key");
}

TEST_CASE("tls certificate: validity bounds are inclusive and checked against now") {
    const TestCert ec = make_cert(spec(TestKey::Ecdsa, "a.example.com"));
    std::string error;
    CHECK(load_certificate(ec.cert_pem, ec.key_pem, kNotBefore, error).has_value());
    CHECK(load_certificate(ec.cert_pem, ec.key_pem, kNotAfter, error).has_value());
    CHECK(load_error(ec.cert_pem, ec.key_pem, kNotAfter + 1) ==
          "certificate expired on 2027-01-02 03:04:05 UTC");
    CHECK(load_error(ec.cert_pem, ec.key_pem, kNotBefore - 1) ==
          "certificate is not valid before 2026-01-02 03:04:05 UTC");
}

TEST_CASE("tls certificate: missing or garbage PEM") {
    const TestCert ec = make_cert(spec(TestKey::Ecdsa, "a.example.com"));
    CHECK(load_error("", ec.key_pem) == "no PEM certificate found");
    CHECK(load_error("not a certificate\n", ec.key_pem) == "no PEM certificate found");
    CHECK(load_error(ec.key_pem, ec.key_pem) == "no PEM certificate found");
    CHECK(load_error(ec.cert_pem, "") == "no PEM private key found");
    CHECK(load_error(ec.cert_pem, "garbage\n") == "no PEM private key found");
    CHECK(load_error(ec.cert_pem, ec.cert_pem) == "no PEM private key found");

    std::string broken = ec.cert_pem;
    broken[broken.size() / 2] = '!';  // inside the base64 body
    const std::string error = load_error(broken, ec.key_pem);
    CHECK(error.starts_with("certificate 1 does not parse: "));

    // A second, truncated block fails the whole chain rather than being dropped.
    const std::string truncated = ec.cert_pem + ec.cert_pem.substr(0, ec.cert_pem.size() / 2);
    CHECK(load_error(truncated, ec.key_pem).starts_with("certificate 2 does not parse: "));
}

TEST_CASE("tls certificate: a bad key's message holds none of the key") {
    const TestCert ec = make_cert(spec(TestKey::Ecdsa, "a.example.com"));
    std::string broken = ec.key_pem;
    const std::size_t body = broken.find('\n') + 1;
    broken.replace(body, 8, "AAAAAAAA");  // valid base64, invalid DER
    const std::string error = load_error(ec.cert_pem, broken);
    CHECK(error.starts_with("private key does not parse: "));
    for (const std::string& line : body_lines(broken)) {
        CHECK_MESSAGE(error.find(line) == std::string::npos, error);
        CHECK(error.find(line.substr(0, 16)) == std::string::npos);
    }
}

TEST_CASE("tls certificate: an encrypted key fails without asking for a passphrase") {
    const TestCert ec = make_cert(spec(TestKey::Ecdsa, "a.example.com"));
    char passphrase[] = "secret";
    auto* pass = reinterpret_cast<unsigned char*>(passphrase);
    BioPtr bio(BIO_new(BIO_s_mem()));
    SUBCASE("PKCS#8") {
        REQUIRE(PEM_write_bio_PrivateKey(bio.get(), ec.key.get(), EVP_aes_128_cbc(), pass, 6,
                                         nullptr, nullptr) == 1);
    }
    SUBCASE("traditional, with a Proc-Type header") {
        REQUIRE(PEM_write_bio_PrivateKey_traditional(bio.get(), ec.key.get(), EVP_aes_128_cbc(),
                                                     pass, 6, nullptr, nullptr) == 1);
    }
    const std::string encrypted = bio_text(bio.get());
    CHECK(load_error(ec.cert_pem, encrypted) ==
          "private key is encrypted; it must be stored unencrypted");
}

TEST_CASE("tls certificate: a public key is not a private key") {
    const TestCert ec = make_cert(spec(TestKey::Ecdsa, "a.example.com"));
    BioPtr bio(BIO_new(BIO_s_mem()));
    REQUIRE(PEM_write_bio_PUBKEY(bio.get(), ec.key.get()) == 1);
    CHECK(load_error(ec.cert_pem, bio_text(bio.get())) == "no PEM private key found");
}

TEST_CASE("tls certificate: a chain keeps its intermediates in file order") {
    TestCertSpec root_spec = spec(TestKey::Ecdsa, "Test Root");
    root_spec.is_ca = true;
    const TestCert root = make_cert(root_spec);
    TestCertSpec intermediate_spec = spec(TestKey::Ecdsa, "Test Intermediate");
    intermediate_spec.is_ca = true;
    const TestCert intermediate = make_cert(intermediate_spec, &root);
    const TestCert leaf =
        make_cert(spec(TestKey::Rsa, "leaf", {"leaf.example.com"}), &intermediate);

    std::string error;
    const auto cert = load_certificate(leaf.cert_pem + intermediate.cert_pem + root.cert_pem,
                                       leaf.key_pem, kNow, error);
    REQUIRE_MESSAGE(cert.has_value(), error);
    CHECK(cert->key_type == KeyType::Rsa);
    CHECK(cert->names == std::vector<std::string>{"leaf.example.com"});
    CHECK(cert->subject == "CN=leaf");
    REQUIRE(cert->intermediates.size() == 2);
    CHECK(X509_cmp(cert->intermediates[0].get(), intermediate.cert.get()) == 0);
    CHECK(X509_cmp(cert->intermediates[1].get(), root.cert.get()) == 0);
}

TEST_CASE("tls certificate: CA bundle") {
    const TestCert a = make_cert(spec(TestKey::Ecdsa, "CA A"));
    const TestCert b = make_cert(spec(TestKey::Ecdsa, "CA B"));
    std::vector<X509Ptr> out;
    std::string error;

    SUBCASE("all certificates, comments between them ignored") {
        REQUIRE_MESSAGE(
            load_ca_bundle("# bundle\n" + a.cert_pem + "\n# B\n" + b.cert_pem, out, error), error);
        REQUIRE(out.size() == 2);
        CHECK(X509_cmp(out[0].get(), a.cert.get()) == 0);
        CHECK(X509_cmp(out[1].get(), b.cert.get()) == 0);
    }
    SUBCASE("empty") {
        CHECK_FALSE(load_ca_bundle("", out, error));
        CHECK(error == "no PEM certificate found");
        CHECK(out.empty());
    }
    SUBCASE("garbage") {
        CHECK_FALSE(load_ca_bundle("this is not PEM\n", out, error));
        CHECK(error == "no PEM certificate found");
    }
    SUBCASE("a certificate that does not parse") {
        std::string broken = b.cert_pem;
        broken[broken.size() / 2] = '!';
        CHECK_FALSE(load_ca_bundle(a.cert_pem + broken, out, error));
        CHECK(error.starts_with("certificate 2 does not parse: "));
        CHECK(out.empty());
    }
    CHECK(ERR_peek_error() == 0);
}

TEST_CASE("tls certificate: format_utc") {
    CHECK(format_utc(0) == "1970-01-01 00:00:00 UTC");
    CHECK(format_utc(kNotBefore) == "2026-01-02 03:04:05 UTC");
    CHECK(format_utc(951782400) == "2000-02-29 00:00:00 UTC");
}

TEST_CASE("tls last_error: oldest error, then the queue is empty") {
    CHECK(last_error().empty());
    ERR_raise(ERR_LIB_PEM, PEM_R_NO_START_LINE);
    ERR_raise(ERR_LIB_X509, X509_R_KEY_VALUES_MISMATCH);
    const std::string error = last_error();
    CHECK(error.find("no start line") != std::string::npos);
    CHECK(ERR_peek_error() == 0);
    CHECK(last_error().empty());
}

TEST_CASE("sni table: exact names") {
    SniTable table;
    CHECK(table.empty());
    table.add("a.example.com", 0);
    table.add("b.example.com", 1);
    CHECK_FALSE(table.empty());
    CHECK(table.find("a.example.com") == 0u);
    CHECK(table.find("b.example.com") == 1u);
    CHECK_FALSE(table.find("c.example.com").has_value());
    CHECK_FALSE(table.find("example.com").has_value());
    CHECK_FALSE(table.find("").has_value());
}

TEST_CASE("sni table: a wildcard covers exactly one more label") {
    SniTable table;
    table.add("*.example.com", 3);
    CHECK_FALSE(table.empty());
    CHECK(table.find("a.example.com") == 3u);
    CHECK(table.find("www.example.com") == 3u);
    CHECK_FALSE(table.find("example.com").has_value());
    CHECK_FALSE(table.find("a.b.example.com").has_value());
    CHECK_FALSE(table.find(".example.com").has_value());
    CHECK_FALSE(table.find("a.example.org").has_value());
    CHECK_FALSE(table.find("aexample.com").has_value());
    CHECK_FALSE(table.find("localhost").has_value());
    CHECK_FALSE(table.find("").has_value());
    CHECK_FALSE(table.find(".").has_value());
}

TEST_CASE("sni table: exact names win over a wildcard") {
    SniTable table;
    table.add("*.example.com", 0);
    table.add("www.example.com", 1);
    CHECK(table.find("www.example.com") == 1u);
    CHECK(table.find("api.example.com") == 0u);
}

TEST_CASE("sni table: case and one trailing dot are ignored") {
    SniTable table;
    table.add("WWW.Example.COM", 0);
    table.add("*.API.example.com.", 1);
    CHECK(table.find("www.example.com") == 0u);
    CHECK(table.find("Www.EXAMPLE.com.") == 0u);
    CHECK_FALSE(table.find("www.example.com..").has_value());
    CHECK(table.find("V1.api.Example.com") == 1u);
    CHECK(table.find("v1.api.example.com.") == 1u);
}

TEST_CASE("sni table: the first index added for a name keeps it") {
    SniTable table;
    table.add("a.example.com", 0);
    table.add("A.example.com.", 1);
    table.add("*.example.com", 2);
    table.add("*.EXAMPLE.com", 3);
    CHECK(table.find("a.example.com") == 0u);
    CHECK(table.find("b.example.com") == 2u);
}

TEST_CASE("sni table: degenerate certificate names match nothing") {
    SniTable table;
    table.add("", 0);
    table.add("*.", 1);
    table.add(".", 2);
    table.add("*", 3);
    table.add("f*.example.com", 4);
    table.add("*.*.example.com", 5);
    CHECK(table.empty());
    CHECK_FALSE(table.find("").has_value());
    CHECK_FALSE(table.find("a.").has_value());
    CHECK_FALSE(table.find("a").has_value());
    CHECK_FALSE(table.find("*").has_value());
    CHECK_FALSE(table.find("foo.example.com").has_value());
    CHECK_FALSE(table.find("a.b.example.com").has_value());
}
