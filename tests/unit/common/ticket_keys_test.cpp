// The shared session-ticket ring and the server contexts built on it: SNI choice, ALPN, and
// resumption across two ServerTls objects (two workers, or two generations) sharing one ring.
#include "common/shm/ticket_keys.hpp"

#include <doctest.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "common/tls/server_context.hpp"
#include "tests/unit/common/tls_test_certs.hpp"

using namespace proxyd;
using tls::test::make_cert;
using tls::test::TestCertSpec;
using tls::test::TestKey;

namespace {

constexpr std::int64_t kNow = 1'800'000'000;

shm::TicketKeyRegion make_ring() {
    auto region = shm::TicketKeyRegion::create("ticket-test");
    REQUIRE(region.valid());
    return region;
}

config::TlsCertificate entry(const tls::test::TestCert& cert, std::string file) {
    config::TlsCertificate out;
    out.cert_file = std::move(file);
    out.cert_pem = cert.cert_pem;
    out.key_pem = cert.key_pem;
    return out;
}

struct Result {
    bool ok = false;
    std::string subject_cn;
    std::string alpn;
    bool reused = false;
    tls::SessionPtr session;
};

std::string common_name(X509* cert) {
    char text[256] = {};
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, text, sizeof text);
    return text;
}

// One handshake over a socketpair, both ends non-blocking, driven alternately.
Result handshake(const tls::ServerTls& server, const char* sni, SSL_SESSION* resume = nullptr,
                 const char* sigalgs = nullptr, const unsigned char* alpn = nullptr,
                 unsigned alpn_len = 0, int max_version = 0) {
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) == 0);
    tls::SslPtr server_ssl = server.accept(fds[0]);
    REQUIRE(server_ssl);
    tls::SslCtxPtr client_ctx(SSL_CTX_new(TLS_client_method()));
    SSL_CTX_set_verify(client_ctx.get(), SSL_VERIFY_NONE, nullptr);
    // No internal cache: freeing the context would mark its cached sessions not resumable.
    SSL_CTX_set_session_cache_mode(client_ctx.get(), SSL_SESS_CACHE_OFF);
    if (sigalgs) SSL_CTX_set1_sigalgs_list(client_ctx.get(), sigalgs);
    if (max_version) SSL_CTX_set_max_proto_version(client_ctx.get(), max_version);
    tls::SslPtr client(SSL_new(client_ctx.get()));
    SSL_set_fd(client.get(), fds[1]);
    SSL_set_connect_state(client.get());
    if (sni) SSL_set_tlsext_host_name(client.get(), sni);
    if (alpn) SSL_set_alpn_protos(client.get(), alpn, alpn_len);
    if (resume) SSL_set_session(client.get(), resume);
    Result result;
    bool client_done = false, server_done = false, failed = false;
    for (int i = 0; i < 200 && !(client_done && server_done) && !failed; ++i) {
        if (!client_done) {
            int rc = SSL_do_handshake(client.get());
            int error = SSL_get_error(client.get(), rc);
            client_done = rc == 1;
            failed = rc != 1 && error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE;
        }
        if (!server_done && !failed) {
            int rc = SSL_do_handshake(server_ssl.get());
            int error = SSL_get_error(server_ssl.get(), rc);
            server_done = rc == 1;
            failed = rc != 1 && error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE;
        }
    }
    ERR_clear_error();
    if (client_done && server_done) {
        result.ok = true;
        // TLS 1.3 tickets arrive after the handshake: a read processes them.
        char byte;
        SSL_read(client.get(), &byte, 1);
        ERR_clear_error();
        X509* peer = SSL_get0_peer_certificate(client.get());
        if (peer) result.subject_cn = common_name(peer);
        const unsigned char* chosen = nullptr;
        unsigned chosen_len = 0;
        SSL_get0_alpn_selected(client.get(), &chosen, &chosen_len);
        result.alpn.assign(reinterpret_cast<const char*>(chosen), chosen_len);
        result.reused = SSL_session_reused(client.get()) == 1;
        result.session.reset(SSL_get1_session(client.get()));
        // Freed without close_notify, OpenSSL would mark the session not resumable.
        SSL_shutdown(client.get());
        ERR_clear_error();
    }
    ::close(fds[0]);
    ::close(fds[1]);
    return result;
}

config::TlsSection section_with(std::vector<config::TlsCertificate> certificates) {
    config::TlsSection section;
    section.enabled = true;
    section.certificates = std::move(certificates);
    return section;
}

}  // namespace

TEST_CASE("ticket keys: the ring is empty until the master rotates, then keeps the last three") {
    auto ring = make_ring();
    shm::TicketKeys keys;
    CHECK_FALSE(shm::read_keys(*ring, keys));
    REQUIRE(shm::rotate(*ring));
    REQUIRE(shm::read_keys(*ring, keys));
    CHECK(keys.count == 1);
    shm::TicketKey first = keys.keys[0];
    for (int i = 0; i < 2; ++i) REQUIRE(shm::rotate(*ring));
    REQUIRE(shm::read_keys(*ring, keys));
    CHECK(keys.count == 3);
    CHECK(std::memcmp(&keys.keys[2], &first, sizeof first) == 0);  // oldest last
    REQUIRE(shm::rotate(*ring));
    REQUIRE(shm::read_keys(*ring, keys));
    CHECK(keys.count == 3);
    for (const auto& key : keys.keys) CHECK(std::memcmp(&key, &first, sizeof first) != 0);
    CHECK(ring->rotations.load() == 4);
}

TEST_CASE("ticket keys: a region handed over by fd (upgrade) keeps its keys") {
    auto ring = make_ring();
    REQUIRE(shm::rotate(*ring));
    shm::TicketKeys before;
    REQUIRE(shm::read_keys(*ring, before));
    auto attached = shm::TicketKeyRegion::attach(UniqueFd(::fcntl(ring.fd(), F_DUPFD_CLOEXEC, 0)));
    REQUIRE(attached.valid());
    shm::TicketKeys after;
    REQUIRE(shm::read_keys(*attached, after));
    CHECK(std::memcmp(&before.keys[0], &after.keys[0], sizeof before.keys[0]) == 0);
}

TEST_CASE("server tls: SNI picks exact, then wildcard, else the first certificate") {
    auto a = make_cert({TestKey::Ecdsa, "a", {"a.test"}});
    auto b = make_cert({TestKey::Ecdsa, "b", {"b.test", "*.w.test"}});
    auto ring = make_ring();
    REQUIRE(shm::rotate(*ring));
    std::string error;
    auto server = tls::ServerTls::create(section_with({entry(a, "a.pem"), entry(b, "b.pem")}),
                                         &*ring, kNow, error);
    REQUIRE_MESSAGE(server, error);
    CHECK(handshake(*server, "a.test").subject_cn == "a");
    CHECK(handshake(*server, "b.test").subject_cn == "b");
    CHECK(handshake(*server, "X.W.test").subject_cn == "b");
    CHECK(handshake(*server, "x.y.w.test").subject_cn == "a");  // one label only
    CHECK(handshake(*server, "unknown.test").subject_cn == "a");
    CHECK(handshake(*server, nullptr).subject_cn == "a");
    REQUIRE(server->certificates().size() == 2);
    CHECK(server->certificates()[1].names == std::vector<std::string>{"b.test", "*.w.test"});
    CHECK(server->certificates()[1].key_type == "ECDSA");
}

TEST_CASE("server tls: RSA and ECDSA certificates for one name, chosen by the client") {
    auto rsa = make_cert({TestKey::Rsa, "rsa", {"both.test"}});
    auto ec = make_cert({TestKey::Ecdsa, "ecdsa", {"both.test"}});
    auto ring = make_ring();
    std::string error;
    auto server = tls::ServerTls::create(section_with({entry(rsa, "r.pem"), entry(ec, "e.pem")}),
                                         &*ring, kNow, error);
    REQUIRE_MESSAGE(server, error);
    CHECK(handshake(*server, "both.test", nullptr, "ECDSA+SHA256").subject_cn == "ecdsa");
    CHECK(handshake(*server, "both.test", nullptr, "RSA-PSS+SHA256:RSA+SHA256").subject_cn ==
          "rsa");
}

TEST_CASE("server tls: ALPN picks by the server's order and refuses what it does not offer") {
    auto a = make_cert({TestKey::Ecdsa, "a", {"a.test"}});
    auto ring = make_ring();
    std::string error;
    auto section = section_with({entry(a, "a.pem")});
    section.alpn = {"h2", "http/1.1"};
    auto server = tls::ServerTls::create(section, &*ring, kNow, error);
    REQUIRE_MESSAGE(server, error);
    static const unsigned char both[] = "\x08http/1.1\x02h2";
    static const unsigned char h2[] = "\x02h2";
    static const unsigned char h11[] = "\x08http/1.1";
    static const unsigned char h10[] = "\x08http/1.0";
    CHECK(handshake(*server, "a.test", nullptr, nullptr, both, sizeof both - 1).alpn == "h2");
    CHECK(handshake(*server, "a.test", nullptr, nullptr, h2, sizeof h2 - 1).alpn == "h2");
    CHECK(handshake(*server, "a.test", nullptr, nullptr, h11, sizeof h11 - 1).alpn == "http/1.1");
    CHECK_FALSE(handshake(*server, "a.test", nullptr, nullptr, h10, sizeof h10 - 1).ok);
    CHECK(handshake(*server, "a.test").ok);  // no ALPN at all is fine

    section.alpn = {"http/1.1"};
    server = tls::ServerTls::create(section, &*ring, kNow, error);
    REQUIRE_MESSAGE(server, error);
    CHECK(handshake(*server, "a.test", nullptr, nullptr, both, sizeof both - 1).alpn == "http/1.1");
    CHECK_FALSE(handshake(*server, "a.test", nullptr, nullptr, h2, sizeof h2 - 1).ok);
}

TEST_CASE("server tls: a ticket from one context set resumes on another sharing the ring") {
    auto a = make_cert({TestKey::Ecdsa, "a", {"a.test"}});
    auto ring = make_ring();
    REQUIRE(shm::rotate(*ring));
    std::string error;
    auto section = section_with({entry(a, "a.pem")});
    // Two workers, or the generations before and after a reload.
    auto first = tls::ServerTls::create(section, &*ring, kNow, error);
    auto second = tls::ServerTls::create(section, &*ring, kNow, error);
    REQUIRE(first);
    REQUIRE(second);
    for (int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
        CAPTURE(version);
        Result initial = handshake(*first, "a.test", nullptr, nullptr, nullptr, 0, version);
        REQUIRE(initial.ok);
        REQUIRE(initial.session);
        CHECK_FALSE(initial.reused);
        CHECK(SSL_SESSION_has_ticket(initial.session.get()) == 1);
        CHECK(SSL_SESSION_is_resumable(initial.session.get()) == 1);
        Result again =
            handshake(*second, "a.test", initial.session.get(), nullptr, nullptr, 0, version);
        CHECK(again.reused);
        if (version == TLS1_3_VERSION) {
            // A resumption brings a fresh ticket, which resumes in turn.
            REQUIRE(again.session);
            CHECK(SSL_SESSION_has_ticket(again.session.get()) == 1);
            CHECK(again.session.get() != initial.session.get());
            CHECK(handshake(*first, "a.test", again.session.get(), nullptr, nullptr, 0, version)
                      .reused);
        }
        // After one rotation the old key still decrypts; after three it is gone.
        REQUIRE(shm::rotate(*ring));
        CHECK(handshake(*first, "a.test", initial.session.get(), nullptr, nullptr, 0, version)
                  .reused);
        REQUIRE(shm::rotate(*ring));
        REQUIRE(shm::rotate(*ring));
        CHECK_FALSE(
            handshake(*second, "a.test", initial.session.get(), nullptr, nullptr, 0, version)
                .reused);
    }
}

TEST_CASE("server tls: session_tickets = false resumes nothing") {
    auto a = make_cert({TestKey::Ecdsa, "a", {"a.test"}});
    auto ring = make_ring();
    REQUIRE(shm::rotate(*ring));
    std::string error;
    auto section = section_with({entry(a, "a.pem")});
    section.session_tickets = false;
    auto server = tls::ServerTls::create(section, &*ring, kNow, error);
    REQUIRE(server);
    for (int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
        Result initial = handshake(*server, "a.test", nullptr, nullptr, nullptr, 0, version);
        REQUIRE(initial.ok);
        REQUIRE(initial.session);
        CHECK(SSL_SESSION_has_ticket(initial.session.get()) == 0);  // none sent at all
        CHECK_FALSE(
            handshake(*server, "a.test", initial.session.get(), nullptr, nullptr, 0, version)
                .reused);
    }
}

TEST_CASE("server tls: an expired certificate is refused when the contexts are built") {
    TestCertSpec spec{TestKey::Ecdsa, "old", {"old.test"}};
    spec.not_after = kNow - 10;
    auto old = make_cert(spec);
    auto ring = make_ring();
    std::string error;
    CHECK_FALSE(tls::ServerTls::create(section_with({entry(old, "old.pem")}), &*ring, kNow, error));
    CHECK(error.find("old.pem") != std::string::npos);
    CHECK(error.find("expired") != std::string::npos);
}
