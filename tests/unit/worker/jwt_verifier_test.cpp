// JwtVerifier: algorithms, keys, claims, extraction, cache, and hostile input. Tokens are made
// here with cpp-jwt's signing primitives (and its jwt_object encoder) and the test-only key pairs
// in tests/data/jwt/.
#include "worker/auth/jwt_verifier.hpp"

#include <doctest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <jwt/jwt.hpp>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using namespace proxyd;
using worker::AuthFailure;
using worker::JwtVerifier;
using worker::TokenCache;
using worker::VerifiedToken;
using json = nlohmann::json;

namespace {

constexpr std::int64_t kNow = 1'800'000'000;  // the clock every test passes to verify()

// ---- fixtures

std::filesystem::path data_dir() {
    namespace fs = std::filesystem;
    std::vector<fs::path> candidates;
    if (const char* root = std::getenv("PROXYD_SOURCE_ROOT")) {
        candidates.push_back(fs::path(root) / "tests/data/jwt");
    }
    const fs::path file = __FILE__;  // relative to the build directory when meson compiles it
    if (file.is_absolute()) {
        candidates.push_back(file.parent_path() / "../../data/jwt");
    } else {
        std::error_code ec;
        const fs::path exe = fs::read_symlink("/proc/self/exe", ec);  // BUILD/tests/unit_tests
        if (!ec) {
            candidates.push_back(exe.parent_path().parent_path() / file.parent_path() /
                                 "../../data/jwt");
        }
        candidates.push_back(fs::current_path() / file.parent_path() / "../../data/jwt");
    }
    candidates.push_back("tests/data/jwt");
    for (const fs::path& c : candidates) {
        if (fs::exists(c / "rsa.pub.pem")) return c;
    }
    FAIL("tests/data/jwt not found (set PROXYD_SOURCE_ROOT to the source tree)");
    return {};
}

// A key file as the config loader reads it: the trailing newline trimmed.
std::string read_key(const std::string& name) {
    std::ifstream in(data_dir() / name, std::ios::binary);
    REQUIRE(in.good());
    std::ostringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    return text;
}

struct Keys {
    std::string rsa_private = read_key("rsa.key.pem");
    std::string rsa_public = read_key("rsa.pub.pem");
    std::string rsa2_private = read_key("rsa2.key.pem");
    std::string rsa2_public = read_key("rsa2.pub.pem");
    std::string ec256_private = read_key("ec256.key.pem");
    std::string ec256_public = read_key("ec256.pub.pem");
    std::string ec384_private = read_key("ec384.key.pem");
    std::string ec384_public = read_key("ec384.pub.pem");
};

const Keys& keys() {
    static const Keys k;
    return k;
}

const std::string kSecret = "correct horse battery staple, 32+ bytes of secret";
const std::string kOtherSecret = "another secret that is not the right one at all";

// ---- token making

std::string b64url(std::string_view data) {
    std::string s = jwt::base64_encode(data.data(), data.size());
    s.resize(jwt::base64_uri_encode(s.data(), s.size()));
    return s;
}

// The raw signature of `input` by cpp-jwt (for ES: r || s, as JWS wants).
std::string sign_raw(const std::string& alg, std::string_view key, std::string_view input) {
    jwt::sign_result_t r;
    if (alg == "HS256") {
        r = jwt::HMACSign<jwt::algo::HS256>::sign(key, input);
    } else if (alg == "HS384") {
        r = jwt::HMACSign<jwt::algo::HS384>::sign(key, input);
    } else if (alg == "HS512") {
        r = jwt::HMACSign<jwt::algo::HS512>::sign(key, input);
    } else if (alg == "RS256") {
        r = jwt::PEMSign<jwt::algo::RS256>::sign(key, input);
    } else if (alg == "RS384") {
        r = jwt::PEMSign<jwt::algo::RS384>::sign(key, input);
    } else if (alg == "RS512") {
        r = jwt::PEMSign<jwt::algo::RS512>::sign(key, input);
    } else if (alg == "ES256") {
        r = jwt::PEMSign<jwt::algo::ES256>::sign(key, input);
    } else if (alg == "ES384") {
        r = jwt::PEMSign<jwt::algo::ES384>::sign(key, input);
    } else {
        FAIL("no signer for " << alg);
    }
    REQUIRE_FALSE(r.second);
    return r.first;
}

std::string join3(std::string_view a, std::string_view b, std::string_view c) {
    std::string out;
    out.append(a).append(".").append(b).append(".").append(c);
    return out;
}

// header.payload signed with `key` by the header's "alg".
std::string make_token(const json& header, const json& payload, std::string_view key) {
    const std::string h = b64url(header.dump());
    const std::string p = b64url(payload.dump());
    std::string input;
    input.append(h).append(".").append(p);
    return join3(h, p, b64url(sign_raw(header.at("alg").get<std::string>(), key, input)));
}

std::string hs256(const json& payload, const std::string& secret = kSecret) {
    return make_token({{"alg", "HS256"}, {"typ", "JWT"}}, payload, secret);
}

json claims(json extra = json::object()) {
    json p = {{"sub", "alice"}, {"exp", kNow + 600}};
    for (auto it = extra.begin(); it != extra.end(); ++it) {
        if (it->is_null()) {
            p.erase(it.key());
        } else {
            p[it.key()] = *it;
        }
    }
    return p;
}

// ---- config

config::JwtKey secret_key(std::string material, std::string kid = "") {
    config::JwtKey k;
    k.kind = config::JwtKey::Kind::Secret;
    k.kid = std::move(kid);
    k.file = "/etc/proxyd/test.secret";
    k.material = std::move(material);
    return k;
}

config::JwtKey public_key(std::string pem, std::string kid = "") {
    config::JwtKey k;
    k.kind = config::JwtKey::Kind::PublicKey;
    k.kid = std::move(kid);
    k.file = "/etc/proxyd/test.pub.pem";
    k.material = std::move(pem);
    return k;
}

config::JwtAuth auth(std::vector<std::string> algorithms, std::vector<config::JwtKey> ks) {
    config::JwtAuth a;
    a.enabled = true;
    a.algorithms = std::move(algorithms);
    a.keys = std::move(ks);
    return a;
}

config::JwtAuth hs_auth() {
    return auth({"HS256"}, {secret_key(kSecret)});
}

AuthFailure failure_of(JwtVerifier& v, std::string_view token, std::int64_t now = kNow) {
    AuthFailure f = AuthFailure::None;
    const VerifiedToken* t = v.verify(token, now, f);
    CHECK((t == nullptr) == (f != AuthFailure::None));
    return f;
}

bool accepted(JwtVerifier& v, std::string_view token, std::int64_t now = kNow) {
    return failure_of(v, token, now) == AuthFailure::None;
}

// Replaces the character at `i` by another one of the base64url alphabet.
std::string flip(std::string token, std::size_t i) {
    token[i] = token[i] == 'A' ? 'B' : 'A';
    return token;
}

}  // namespace

// ------------------------------------------------------------------------------------------------

TEST_CASE("jwt: every supported algorithm verifies with its key") {
    const Keys& k = keys();
    struct Case {
        const char* alg;
        std::string signing_key;
        config::JwtKey key;
    };
    const std::vector<Case> cases = {
        {"HS256", kSecret, secret_key(kSecret)},
        {"HS384", kSecret, secret_key(kSecret)},
        {"HS512", kSecret, secret_key(kSecret)},
        {"RS256", k.rsa_private, public_key(k.rsa_public)},
        {"RS384", k.rsa_private, public_key(k.rsa_public)},
        {"RS512", k.rsa_private, public_key(k.rsa_public)},
        {"ES256", k.ec256_private, public_key(k.ec256_public)},
        {"ES384", k.ec384_private, public_key(k.ec384_public)},
    };
    for (const Case& c : cases) {
        CAPTURE(c.alg);
        JwtVerifier v(auth({c.alg}, {c.key}), {});
        const std::string token = make_token({{"alg", c.alg}}, claims(), c.signing_key);
        AuthFailure f = AuthFailure::Malformed;
        const VerifiedToken* t = v.verify(token, kNow, f);
        REQUIRE(t != nullptr);
        CHECK(f == AuthFailure::None);
        CHECK(t->expires_at == kNow + 600);
        CHECK(v.signature_checks() == 1);
        // another algorithm's token is refused when only this one is configured
        const std::string other = std::string(c.alg).starts_with("HS")
                                      ? make_token({{"alg", "RS256"}}, claims(), k.rsa_private)
                                      : make_token({{"alg", "HS256"}}, claims(), kSecret);
        CHECK(failure_of(v, other) == AuthFailure::AlgorithmNotAllowed);
    }
}

TEST_CASE("jwt: tokens made by cpp-jwt's encoder (typ JWT) verify") {
    using namespace jwt::params;
    jwt::jwt_object obj{algorithm("HS256"), secret(kSecret), payload({{"sub", "bob"}})};
    obj.add_claim("exp", kNow + 60);
    const std::string token = obj.signature();
    JwtVerifier v(hs_auth(), {});
    CHECK(accepted(v, token));

    jwt::jwt_object rs{algorithm("RS256"), secret(keys().rsa_private), payload({{"sub", "bob"}})};
    JwtVerifier vr(auth({"RS256"}, {public_key(keys().rsa_public)}), {});
    CHECK(accepted(vr, rs.signature()));
}

TEST_CASE("jwt: typ may be missing or JWT in any case; anything else is refused") {
    JwtVerifier v(hs_auth(), {});
    CHECK(accepted(v, make_token({{"alg", "HS256"}}, claims(), kSecret)));
    CHECK(accepted(v, make_token({{"alg", "HS256"}, {"typ", "jwt"}}, claims(), kSecret)));
    CHECK(accepted(v, make_token({{"alg", "HS256"}, {"typ", "JWT"}}, claims(), kSecret)));
    CHECK(failure_of(v, make_token({{"alg", "HS256"}, {"typ", "at+jwt"}}, claims(), kSecret)) ==
          AuthFailure::Malformed);
    // cpp-jwt throws a json type_error for a non-string typ: caught
    CHECK(failure_of(v, make_token({{"alg", "HS256"}, {"typ", 7}}, claims(), kSecret)) ==
          AuthFailure::Malformed);
}

TEST_CASE("jwt: wrong secret, wrong key, tampered payload and signature") {
    const Keys& k = keys();
    JwtVerifier hs(hs_auth(), {});
    CHECK(failure_of(hs, hs256(claims(), kOtherSecret)) == AuthFailure::BadSignature);

    JwtVerifier rs(auth({"RS256"}, {public_key(k.rsa_public)}), {});
    CHECK(failure_of(rs, make_token({{"alg", "RS256"}}, claims(), k.rsa2_private)) ==
          AuthFailure::BadSignature);

    JwtVerifier es(auth({"ES256"}, {public_key(k.ec256_public)}), {});

    struct Signed {
        JwtVerifier* v;
        std::string token;
    };
    const std::vector<Signed> tokens = {
        {&hs, hs256(claims())},
        {&rs, make_token({{"alg", "RS256"}}, claims(), k.rsa_private)},
        {&es, make_token({{"alg", "ES256"}}, claims(), k.ec256_private)},
    };
    for (const Signed& s : tokens) {
        CAPTURE(s.token);
        REQUIRE(accepted(*s.v, s.token));
        const std::size_t dot1 = s.token.find('.');
        const std::size_t dot2 = s.token.find('.', dot1 + 1);
        // payload changed to another valid JSON, signature kept
        const std::string forged_payload =
            join3(s.token.substr(0, dot1), b64url(claims({{"sub", "mallory"}}).dump()),
                  s.token.substr(dot2 + 1));
        CHECK(failure_of(*s.v, forged_payload) == AuthFailure::BadSignature);
        // one signature character changed (in the middle: the last may only carry padding bits)
        const std::size_t mid = dot2 + 1 + (s.token.size() - dot2 - 1) / 2;
        CHECK(failure_of(*s.v, flip(s.token, mid)) == AuthFailure::BadSignature);
        CHECK(failure_of(*s.v, flip(s.token, dot2 + 1)) == AuthFailure::BadSignature);
        // truncated signature: shorter, or a length no base64 text has
        CHECK(failure_of(*s.v, s.token.substr(0, s.token.size() - 4)) != AuthFailure::None);
        CHECK(failure_of(*s.v, s.token.substr(0, s.token.size() - 1)) != AuthFailure::None);
        // signature removed
        CHECK(failure_of(*s.v, s.token.substr(0, dot2 + 1)) == AuthFailure::Malformed);
        // signature of another token
        CHECK(failure_of(*s.v, join3(s.token.substr(0, dot1), b64url(claims({{"x", 1}}).dump()),
                                     s.token.substr(dot2 + 1))) == AuthFailure::BadSignature);
    }
}

TEST_CASE("jwt: non-canonical base64url (padding bits set) is refused") {
    JwtVerifier v(hs_auth(), {});
    const std::string token = hs256(claims());
    REQUIRE(accepted(v, token));
    // HS256: 32 bytes -> 43 characters, the last carries 2 data bits and 4 zero bits
    std::string odd = token;
    char& last = odd.back();
    last = last == 'A' ? 'B' : static_cast<char>(last + 1);
    CHECK(failure_of(v, odd) != AuthFailure::None);
    // padding characters are not base64url
    CHECK(failure_of(v, token + "=") == AuthFailure::Malformed);
}

TEST_CASE("jwt: alg none is always refused, whatever its case and the config") {
    auto cfg = hs_auth();
    cfg.algorithms.push_back("none");  // the config parser refuses this; the verifier too
    cfg.algorithms.push_back("NONE");
    JwtVerifier v(cfg, {});
    for (const char* none : {"none", "None", "NONE", "nOnE"}) {
        CAPTURE(none);
        const std::string h = b64url(json{{"alg", none}}.dump());
        const std::string p = b64url(claims().dump());
        CHECK(failure_of(v, join3(h, p, "")) == AuthFailure::AlgorithmNotAllowed);
        CHECK(failure_of(v, join3(h, p, b64url("sig"))) == AuthFailure::AlgorithmNotAllowed);
        // with an HMAC over it by the right secret: still none
        std::string input;
        input.append(h).append(".").append(p);
        CHECK(failure_of(v, join3(h, p, b64url(sign_raw("HS256", kSecret, input)))) ==
              AuthFailure::AlgorithmNotAllowed);
        const std::string typed = b64url(json{{"alg", none}, {"typ", "JWT"}}.dump());
        CHECK(failure_of(v, join3(typed, p, "")) == AuthFailure::AlgorithmNotAllowed);
        // more dots: cpp-jwt's own decode is lax about them for none
        CHECK(failure_of(v, join3(h, p, "") + ".") == AuthFailure::Malformed);
    }
    CHECK(v.signature_checks() == 0);
}

TEST_CASE("jwt: an algorithm not listed is refused, compared exactly") {
    JwtVerifier v(auth({"HS256"}, {secret_key(kSecret)}), {});
    CHECK(failure_of(v, make_token({{"alg", "HS384"}}, claims(), kSecret)) ==
          AuthFailure::AlgorithmNotAllowed);
    CHECK(failure_of(v, make_token({{"alg", "HS512"}}, claims(), kSecret)) ==
          AuthFailure::AlgorithmNotAllowed);
    // cpp-jwt maps "hs256" to HS256 (strcasecmp); JOSE names are case-sensitive
    {
        const std::string h = b64url(json{{"alg", "hs256"}}.dump());
        const std::string p = b64url(claims().dump());
        std::string input;
        input.append(h).append(".").append(p);
        CHECK(failure_of(v, join3(h, p, b64url(sign_raw("HS256", kSecret, input)))) ==
              AuthFailure::AlgorithmNotAllowed);
    }
    for (const char* alg : {"ES512", "PS256", "EdDSA", "", "HS256 ", "HS2560"}) {
        CAPTURE(alg);
        const std::string h = b64url(json{{"alg", alg}}.dump());
        CHECK(failure_of(v, join3(h, b64url(claims().dump()), b64url("sig"))) ==
              AuthFailure::AlgorithmNotAllowed);
    }
    // "HS256\0x": strcasecmp would stop at the NUL
    {
        json hdr;
        hdr["alg"] = std::string("HS256\0x", 7);
        const std::string h = b64url(hdr.dump());
        const std::string p = b64url(claims().dump());
        std::string input;
        input.append(h).append(".").append(p);
        CHECK(failure_of(v, join3(h, p, b64url(sign_raw("HS256", kSecret, input)))) ==
              AuthFailure::AlgorithmNotAllowed);
    }
    CHECK(v.signature_checks() == 0);
}

TEST_CASE("jwt: a public key is never used as an HMAC secret (RS -> HS confusion)") {
    const Keys& k = keys();
    // The attacker knows the public key and signs HS256 with its PEM text as the secret.
    JwtVerifier v(auth({"RS256", "HS256"}, {public_key(k.rsa_public), secret_key(kOtherSecret)}),
                  {});
    for (const std::string& secret : {k.rsa_public, k.rsa_public + "\n"}) {
        const std::string forged = make_token({{"alg", "HS256"}}, claims(), secret);
        CHECK(failure_of(v, forged) == AuthFailure::BadSignature);
    }
    // the genuine tokens of both families work
    CHECK(accepted(v, make_token({{"alg", "RS256"}}, claims(), k.rsa_private)));
    CHECK(accepted(v, make_token({{"alg", "HS256"}}, claims(), kOtherSecret)));

    // with no secret at all, HS256 has no key
    JwtVerifier only_public(auth({"RS256", "HS256"}, {public_key(k.rsa_public, "rsa")}), {});
    CHECK(failure_of(only_public, make_token({{"alg", "HS256"}}, claims(), k.rsa_public)) ==
          AuthFailure::UnknownKey);
    // ... even when its kid names the public key
    CHECK(failure_of(only_public, make_token({{"alg", "HS256"}, {"kid", "rsa"}}, claims(),
                                             k.rsa_public)) == AuthFailure::UnknownKey);
    CHECK(only_public.signature_checks() == 0);

    // and the other way: an RS token is never checked against a secret
    JwtVerifier only_secret(auth({"RS256", "HS256"}, {secret_key(kSecret)}), {});
    CHECK(failure_of(only_secret, make_token({{"alg", "RS256"}}, claims(), k.rsa_private)) ==
          AuthFailure::UnknownKey);
}

TEST_CASE("jwt: exp and nbf, with and without leeway") {
    auto cfg = hs_auth();
    JwtVerifier strict(cfg, {});
    cfg.leeway = std::chrono::seconds(30);
    JwtVerifier lenient(cfg, {});

    const std::string exp_now = hs256(claims({{"exp", kNow}}));
    CHECK(accepted(strict, exp_now, kNow));  // expired once now > exp
    CHECK(failure_of(strict, exp_now, kNow + 1) == AuthFailure::Expired);
    CHECK(accepted(lenient, exp_now, kNow + 30));
    CHECK(failure_of(lenient, exp_now, kNow + 31) == AuthFailure::Expired);

    const std::string past = hs256(claims({{"exp", kNow - 10}}));
    CHECK(failure_of(strict, past) == AuthFailure::Expired);
    CHECK(accepted(lenient, past));

    const std::string nbf = hs256(claims({{"nbf", kNow + 10}}));
    CHECK(failure_of(strict, nbf) == AuthFailure::NotYetValid);
    CHECK(accepted(strict, nbf, kNow + 10));
    CHECK(accepted(lenient, nbf));
    CHECK(failure_of(lenient, hs256(claims({{"nbf", kNow + 31}}))) == AuthFailure::NotYetValid);
    CHECK(accepted(lenient, hs256(claims({{"nbf", kNow + 30}}))));

    // no exp at all is fine (then no expiry)
    const std::string forever = hs256(claims({{"exp", nullptr}}));
    AuthFailure f;
    const VerifiedToken* t = strict.verify(forever, kNow, f);
    REQUIRE(t != nullptr);
    CHECK(t->expires_at == 0);

    // fractional NumericDates, far values, negative values
    CHECK(accepted(strict, hs256(claims({{"exp", kNow + 0.5}}))));
    CHECK(failure_of(strict, hs256(claims({{"exp", kNow - 0.5}}))) == AuthFailure::Expired);
    CHECK(failure_of(strict, hs256(claims({{"nbf", kNow + 0.5}}))) == AuthFailure::NotYetValid);
    CHECK(accepted(strict, hs256(claims({{"exp", 1e300}}))));
    CHECK(accepted(strict, hs256(claims({{"exp", UINT64_MAX}}))));
    CHECK(failure_of(strict, hs256(claims({{"exp", -5}}))) == AuthFailure::Expired);
    CHECK(failure_of(strict, hs256(claims({{"nbf", 1e300}}))) == AuthFailure::NotYetValid);
    CHECK(accepted(strict, hs256(claims({{"nbf", -1e300}}))));
    // a NumericDate that is not a number
    CHECK(failure_of(strict, hs256(claims({{"exp", std::to_string(kNow + 60)}}))) ==
          AuthFailure::Malformed);
    CHECK(failure_of(strict, hs256(claims({{"nbf", true}}))) == AuthFailure::Malformed);
    CHECK(failure_of(strict, hs256(claims({{"exp", json::array({kNow})}}))) ==
          AuthFailure::Malformed);
}

TEST_CASE("jwt: issuer and audience") {
    auto cfg = hs_auth();
    cfg.issuer = "https://auth.test";
    cfg.audience = "proxyd";
    JwtVerifier v(cfg, {});
    const json good = {{"iss", "https://auth.test"}, {"aud", "proxyd"}};
    CHECK(accepted(v, hs256(claims(good))));
    CHECK(failure_of(v, hs256(claims({{"iss", "https://evil.test"}, {"aud", "proxyd"}}))) ==
          AuthFailure::WrongIssuer);
    CHECK(failure_of(v, hs256(claims({{"aud", "proxyd"}}))) == AuthFailure::WrongIssuer);
    CHECK(failure_of(v, hs256(claims({{"iss", json::array({"https://auth.test"})},
                                      {"aud", "proxyd"}}))) == AuthFailure::WrongIssuer);
    CHECK(failure_of(v, hs256(claims({{"iss", "https://auth.test/"}, {"aud", "proxyd"}}))) ==
          AuthFailure::WrongIssuer);
    CHECK(failure_of(v, hs256(claims({{"iss", "https://auth.test"}, {"aud", "other"}}))) ==
          AuthFailure::WrongAudience);
    CHECK(failure_of(v, hs256(claims({{"iss", "https://auth.test"}}))) ==
          AuthFailure::WrongAudience);
    CHECK(accepted(v, hs256(claims({{"iss", "https://auth.test"},
                                    {"aud", json::array({"a", "proxyd", "b"})}}))));
    CHECK(failure_of(
              v, hs256(claims({{"iss", "https://auth.test"}, {"aud", json::array({"a", "b"})}}))) ==
          AuthFailure::WrongAudience);
    CHECK(failure_of(v, hs256(claims({{"iss", "https://auth.test"}, {"aud", json::array()}}))) ==
          AuthFailure::WrongAudience);
    CHECK(failure_of(v, hs256(claims({{"iss", "https://auth.test"}, {"aud", 1}}))) ==
          AuthFailure::WrongAudience);

    JwtVerifier unchecked(hs_auth(), {});  // neither configured: anything goes
    CHECK(accepted(unchecked, hs256(claims({{"iss", "whoever"}, {"aud", 5}}))));
    CHECK(accepted(unchecked, hs256(claims())));
}

TEST_CASE("jwt: kid selects the key; rotation overlap; unknown kid") {
    const std::string old_secret = "old secret, from the previous rotation";
    const std::string new_secret = "new secret, from the current rotation!";
    JwtVerifier v(auth({"HS256"}, {secret_key(old_secret, "old"), secret_key(new_secret, "new")}),
                  {});
    CHECK(accepted(v, make_token({{"alg", "HS256"}, {"kid", "old"}}, claims(), old_secret)));
    CHECK(accepted(v, make_token({{"alg", "HS256"}, {"kid", "new"}}, claims(), new_secret)));
    // the kid names one key: only that one is tried
    std::uint64_t before = v.signature_checks();
    CHECK(failure_of(v, make_token({{"alg", "HS256"}, {"kid", "new"}}, claims(), old_secret)) ==
          AuthFailure::BadSignature);
    CHECK(v.signature_checks() == before + 1);
    // a kid no key has
    before = v.signature_checks();
    CHECK(failure_of(v, make_token({{"alg", "HS256"}, {"kid", "nope"}}, claims(), old_secret)) ==
          AuthFailure::UnknownKey);
    CHECK(failure_of(v, make_token({{"alg", "HS256"}, {"kid", ""}}, claims(), old_secret)) ==
          AuthFailure::UnknownKey);
    CHECK(v.signature_checks() == before);
    // no kid: every key is tried
    CHECK(accepted(v, make_token({{"alg", "HS256"}}, claims({{"n", 1}}), old_secret)));
    CHECK(accepted(v, make_token({{"alg", "HS256"}}, claims({{"n", 2}}), new_secret)));
    CHECK(failure_of(v, make_token({{"alg", "HS256"}}, claims(), kOtherSecret)) ==
          AuthFailure::BadSignature);
    // a kid that is not a string
    CHECK(failure_of(v, make_token({{"alg", "HS256"}, {"kid", 1}}, claims(), old_secret)) ==
          AuthFailure::Malformed);

    // no key has a kid: a token's kid does not matter, all keys are tried
    JwtVerifier anon(auth({"HS256"}, {secret_key(old_secret), secret_key(new_secret)}), {});
    CHECK(accepted(anon, make_token({{"alg", "HS256"}, {"kid", "x"}}, claims(), new_secret)));
    CHECK(accepted(anon, make_token({{"alg", "HS256"}}, claims(), old_secret)));

    // mixed families under kids: the kid's key must suit the algorithm
    const Keys& k = keys();
    JwtVerifier mixed(auth({"HS256", "RS256", "ES256"},
                           {secret_key(old_secret, "old"), public_key(k.rsa_public, "new"),
                            public_key(k.ec256_public, "ec")}),
                      {});
    CHECK(accepted(mixed, make_token({{"alg", "RS256"}, {"kid", "new"}}, claims(), k.rsa_private)));
    CHECK(accepted(mixed, make_token({{"alg", "HS256"}, {"kid", "old"}}, claims(), old_secret)));
    CHECK(
        accepted(mixed, make_token({{"alg", "ES256"}, {"kid", "ec"}}, claims(), k.ec256_private)));
    CHECK(accepted(mixed, make_token({{"alg", "ES256"}}, claims(), k.ec256_private)));
    CHECK(failure_of(mixed, make_token({{"alg", "HS256"}, {"kid", "new"}}, claims(),
                                       k.rsa_public)) == AuthFailure::UnknownKey);
    CHECK(failure_of(mixed, make_token({{"alg", "RS256"}, {"kid", "ec"}}, claims(),
                                       k.rsa_private)) == AuthFailure::BadSignature);
    // public key rotation: old and new RSA keys both accepted
    JwtVerifier rot(auth({"RS256"}, {public_key(k.rsa_public), public_key(k.rsa2_public)}), {});
    CHECK(accepted(rot, make_token({{"alg", "RS256"}}, claims(), k.rsa_private)));
    CHECK(accepted(rot, make_token({{"alg", "RS256"}}, claims(), k.rsa2_private)));
}

TEST_CASE("jwt: roles as an array or a space-separated string") {
    JwtVerifier v(hs_auth(), {});
    AuthFailure f;
    const VerifiedToken* t =
        v.verify(hs256(claims({{"roles", json::array({"admin", "dev", 3, "ops"})}})), kNow, f);
    REQUIRE(t != nullptr);
    CHECK(t->roles == std::vector<std::string>{"admin", "dev", "ops"});
    CHECK(worker::has_any_role(*t, {}));
    CHECK(worker::has_any_role(*t, {"ops"}));
    CHECK(worker::has_any_role(*t, {"x", "dev"}));
    CHECK_FALSE(worker::has_any_role(*t, {"Admin"}));
    CHECK_FALSE(worker::has_any_role(*t, {"root"}));

    t = v.verify(hs256(claims({{"roles", "  read   write admin "}})), kNow, f);
    REQUIRE(t != nullptr);
    CHECK(t->roles == std::vector<std::string>{"read", "write", "admin"});

    t = v.verify(hs256(claims({{"roles", json::object({{"a", 1}})}})), kNow, f);
    REQUIRE(t != nullptr);
    CHECK(t->roles.empty());
    CHECK(worker::has_any_role(*t, {}));
    CHECK_FALSE(worker::has_any_role(*t, {"a"}));

    auto cfg = hs_auth();
    cfg.roles_claim = "https://example.com/roles";  // namespaced claim names work as they are
    JwtVerifier ns(cfg, {});
    t = ns.verify(hs256(claims({{"https://example.com/roles", json::array({"x"})},
                                {"roles", json::array({"y"})}})),
                  kNow, f);
    REQUIRE(t != nullptr);
    CHECK(t->roles == std::vector<std::string>{"x"});
}

TEST_CASE("jwt: forwarded and extra claims are stringified") {
    auto cfg = hs_auth();
    cfg.forward_claims = {{"sub", "X-User-Id"}, {"roles", "X-User-Roles"}, {"n", "X-N"},
                          {"ok", "X-Ok"},       {"obj", "X-Obj"},          {"absent", "X-Absent"},
                          {"nul", "X-Null"},    {"evil", "X-Evil"},        {"mixed", "X-Mixed"},
                          {"f", "X-F"},         {"empty", "X-Empty"},      {"utf8", "X-Utf8"}};
    JwtVerifier v(cfg, {"tenant", "sub", "missing"});
    json payload = claims({{"roles", json::array({"a", "b"})},
                           {"n", 42},
                           {"ok", true},
                           {"obj", {{"k", "v"}, {"z", json::array({1, 2})}}},
                           {"evil", std::string("x\r\nX-Admin: yes\0\x7f", 17)},
                           {"mixed", json::array({"s", 1, false, nullptr})},
                           {"f", 1.5},
                           {"empty", json::array()},
                           {"utf8", "h\u00e9"},
                           {"tenant", "acme"}});
    payload["nul"] = nullptr;
    AuthFailure f;
    const VerifiedToken* t = v.verify(hs256(payload), kNow, f);
    REQUIRE(t != nullptr);
    REQUIRE(t->forwarded_values.size() == cfg.forward_claims.size());
    const auto& fv = t->forwarded_values;
    CHECK(fv[0] == "alice");
    CHECK(fv[1] == "a, b");
    CHECK(fv[2] == "42");
    CHECK(fv[3] == "true");
    CHECK(fv[4] == R"({"k":"v","z":[1,2]})");
    CHECK(fv[5] == "");
    CHECK(fv[6] == "");
    CHECK(fv[7] == "x  X-Admin: yes  ");
    CHECK(fv[8] == "s, 1, false, null");
    CHECK(fv[9] == "1.5");
    CHECK(fv[10] == "");
    CHECK(fv[11] == "h\xc3\xa9");
    CHECK(t->extra_claims == std::vector<std::string>{"acme", "alice", ""});
}

TEST_CASE("jwt: the cache spares the signature check of a repeated token") {
    const Keys& k = keys();
    JwtVerifier v(auth({"RS256"}, {public_key(k.rsa_public)}), {});
    const std::string token =
        make_token({{"alg", "RS256"}}, claims({{"roles", "a"}}), k.rsa_private);
    AuthFailure f;
    const VerifiedToken* first = v.verify(token, kNow, f);
    REQUIRE(first != nullptr);
    CHECK(v.signature_checks() == 1);
    for (int i = 0; i < 100; ++i) {
        const VerifiedToken* again = v.verify(token, kNow + i, f);
        REQUIRE(again != nullptr);
        CHECK(again->roles == std::vector<std::string>{"a"});
    }
    CHECK(v.signature_checks() == 1);
    CHECK(v.cached_tokens() == 1);
    // a copy of the token in another buffer hits too (keyed by content)
    const std::string copy(token.begin(), token.end());
    CHECK(accepted(v, copy));
    CHECK(v.signature_checks() == 1);
    // a token that differs in one character is not the cached one
    CHECK(failure_of(v, flip(token, token.size() / 2)) != AuthFailure::None);

    // failures are not cached
    const std::string bad = make_token({{"alg", "RS256"}}, claims(), k.rsa2_private);
    const std::uint64_t before = v.signature_checks();
    CHECK(failure_of(v, bad) == AuthFailure::BadSignature);
    CHECK(failure_of(v, bad) == AuthFailure::BadSignature);
    CHECK(v.signature_checks() == before + 2);
}

TEST_CASE("jwt: cache bound, CLOCK eviction, no cache") {
    auto cfg = hs_auth();
    cfg.cache_entries = 3;
    JwtVerifier v(cfg, {});
    std::vector<std::string> tokens;
    for (int i = 0; i < 20; ++i) tokens.push_back(hs256(claims({{"i", i}})));
    for (const std::string& t : tokens) {
        CHECK(accepted(v, t));
        CHECK(v.cached_tokens() <= 3);
    }
    CHECK(v.cached_tokens() == 3);
    CHECK(v.signature_checks() == 20);

    cfg.cache_entries = 2;
    JwtVerifier clock(cfg, {});
    CHECK(accepted(clock, tokens[0]));
    CHECK(accepted(clock, tokens[1]));
    CHECK(accepted(clock, tokens[0]));  // hit: referenced
    CHECK(clock.signature_checks() == 2);
    CHECK(accepted(clock, tokens[2]));  // evicts tokens[1], the unreferenced one
    CHECK(clock.signature_checks() == 3);
    CHECK(accepted(clock, tokens[0]));
    CHECK(clock.signature_checks() == 3);
    CHECK(accepted(clock, tokens[1]));
    CHECK(clock.signature_checks() == 4);

    cfg.cache_entries = 0;
    JwtVerifier none(cfg, {});
    AuthFailure f;
    const VerifiedToken* t = none.verify(tokens[0], kNow, f);
    REQUIRE(t != nullptr);
    CHECK(none.verify(tokens[0], kNow, f) != nullptr);
    CHECK(none.signature_checks() == 2);
    CHECK(none.cached_tokens() == 0);
}

TEST_CASE("jwt: a cached token is re-checked against the clock") {
    auto cfg = hs_auth();
    cfg.leeway = std::chrono::seconds(5);
    JwtVerifier v(cfg, {});
    const std::string token = hs256(claims({{"exp", kNow + 10}, {"nbf", kNow - 10}}));
    CHECK(accepted(v, token, kNow));
    CHECK(accepted(v, token, kNow + 15));  // exp + leeway
    CHECK(v.signature_checks() == 1);
    CHECK(failure_of(v, token, kNow + 16) == AuthFailure::Expired);
    CHECK(v.signature_checks() == 1);  // decided from the cached exp
    CHECK(failure_of(v, token, kNow + 17) == AuthFailure::Expired);
    // the clock went back before nbf - leeway
    const std::string nbf = hs256(claims({{"nbf", kNow}, {"n", 1}}));
    CHECK(accepted(v, nbf, kNow));
    const std::uint64_t checks = v.signature_checks();
    CHECK(failure_of(v, nbf, kNow - 6) == AuthFailure::NotYetValid);
    CHECK(accepted(v, nbf, kNow - 5));
    CHECK(v.signature_checks() == checks);

    // kept at most 1 h (with a far exp) or 5 min (without exp), then verified again
    const std::string far = hs256(claims({{"exp", kNow + 86400}}));
    CHECK(accepted(v, far, kNow));
    std::uint64_t n = v.signature_checks();
    CHECK(accepted(v, far, kNow + 3600));
    CHECK(v.signature_checks() == n);
    CHECK(accepted(v, far, kNow + 3601));
    CHECK(v.signature_checks() == n + 1);

    const std::string no_exp = hs256(claims({{"exp", nullptr}}));
    CHECK(accepted(v, no_exp, kNow));
    n = v.signature_checks();
    CHECK(accepted(v, no_exp, kNow + 300));
    CHECK(v.signature_checks() == n);
    CHECK(accepted(v, no_exp, kNow + 301));
    CHECK(v.signature_checks() == n + 1);
}

TEST_CASE("jwt: token cache table stays consistent under random operations") {
    constexpr std::size_t kCapacity = 64;
    TokenCache cache(kCapacity);
    // Few distinct hash values: long probe runs, so deletion's backward shift is exercised.
    auto hash_of = [](const std::string& s) { return TokenCache::hash(s) % 8; };
    std::map<std::string, std::int64_t> model;  // what the cache should hold -> expires_at
    std::vector<std::string> names;
    for (int i = 0; i < 200; ++i) names.push_back("token-" + std::to_string(i * 7919));
    std::mt19937 rng(12345);
    for (int step = 0; step < 20000; ++step) {
        const std::string& name = names[rng() % names.size()];
        TokenCache::Entry* e = cache.find(name, hash_of(name));
        const auto it = model.find(name);
        REQUIRE((e != nullptr) == (it != model.end()));
        if (e != nullptr) {
            CHECK(e->value.expires_at == it->second);
            if (rng() % 3 == 0) {
                cache.erase(e);
                model.erase(it);
            }
        } else {
            VerifiedToken value;
            value.expires_at = step;
            const bool was_full = cache.size() == kCapacity;
            REQUIRE(cache.insert(name, hash_of(name), value, 0, 0) != nullptr);
            model[name] = step;
            if (was_full) {  // exactly one other entry was evicted
                int gone = 0;
                for (auto m = model.begin(); m != model.end();) {
                    if (cache.find(m->first, hash_of(m->first)) == nullptr) {
                        ++gone;
                        m = model.erase(m);
                    } else {
                        ++m;
                    }
                }
                CHECK(gone == 1);
            }
        }
        REQUIRE(cache.size() <= kCapacity);
        REQUIRE(cache.size() == model.size());
    }
    for (const auto& [name, expires] : model) {
        TokenCache::Entry* e = cache.find(name, hash_of(name));
        REQUIRE(e != nullptr);
        CHECK(e->value.expires_at == expires);
    }
}

TEST_CASE("jwt: bearer_token") {
    using worker::bearer_token;
    CHECK(bearer_token("Bearer abc.def.ghi") == "abc.def.ghi");
    CHECK(bearer_token("bearer abc") == "abc");
    CHECK(bearer_token("BEARER    abc") == "abc");
    CHECK(bearer_token("BeArEr abc") == "abc");
    CHECK(bearer_token("  Bearer abc  ") == "abc");
    CHECK(bearer_token("Bearer abc\t") == "abc");
    CHECK(bearer_token("Bearer a b") == "a b");  // then refused as malformed
    CHECK(bearer_token("Bearer") == "");
    CHECK(bearer_token("Bearer ") == "");
    CHECK(bearer_token("Bearer    ") == "");
    CHECK(bearer_token("Bearerabc") == "");
    CHECK(bearer_token("Bearer\tabc") == "");
    CHECK(bearer_token("Basic YWxhZGRpbjpvcGVuc2VzYW1l") == "");
    CHECK(bearer_token("Bear abc") == "");
    CHECK(bearer_token("") == "");
    CHECK(bearer_token("abc") == "");
    CHECK(bearer_token("Token Bearer abc") == "");
}

TEST_CASE("jwt: reasons") {
    using worker::auth_failure_reason;
    CHECK(auth_failure_reason(AuthFailure::Missing) == "missing");
    CHECK(auth_failure_reason(AuthFailure::Malformed) == "malformed");
    CHECK(auth_failure_reason(AuthFailure::AlgorithmNotAllowed) == "algorithm");
    CHECK(auth_failure_reason(AuthFailure::UnknownKey) == "unknown_key");
    CHECK(auth_failure_reason(AuthFailure::BadSignature) == "signature");
    CHECK(auth_failure_reason(AuthFailure::Expired) == "expired");
    CHECK(auth_failure_reason(AuthFailure::NotYetValid) == "not_yet_valid");
    CHECK(auth_failure_reason(AuthFailure::WrongIssuer) == "issuer");
    CHECK(auth_failure_reason(AuthFailure::WrongAudience) == "audience");
}

TEST_CASE("jwt: malformed tokens") {
    JwtVerifier v(hs_auth(), {});
    const std::string good = hs256(claims());
    const std::size_t dot1 = good.find('.');
    const std::size_t dot2 = good.find('.', dot1 + 1);
    const std::string h = good.substr(0, dot1);
    const std::string p = good.substr(dot1 + 1, dot2 - dot1 - 1);
    const std::string s = good.substr(dot2 + 1);
    auto signed_with = [](const std::string& header_text, const std::string& payload_text) {
        const std::string hh = b64url(header_text);
        const std::string pp = b64url(payload_text);
        std::string input;
        input.append(hh).append(".").append(pp);
        return join3(hh, pp, b64url(sign_raw("HS256", kSecret, input)));
    };

    CHECK(failure_of(v, "") == AuthFailure::Missing);
    for (const char* text : {".", "..", "...", "a", "a.b", "a.b.c.d", ".b.c", "a..c", "...."}) {
        CAPTURE(text);
        CHECK(failure_of(v, text) == AuthFailure::Malformed);
    }
    CHECK(failure_of(v, join3(h, p, s) + ".") == AuthFailure::Malformed);
    CHECK(failure_of(v, h + "." + p) == AuthFailure::Malformed);
    // characters outside base64url (cpp-jwt's decoder would index out of its table)
    CHECK(failure_of(v, join3("\xff\xfe", p, s)) == AuthFailure::Malformed);
    CHECK(failure_of(v, join3(h, std::string("\x80") + p, s)) == AuthFailure::Malformed);
    CHECK(failure_of(v, join3(h + "+", p, s)) == AuthFailure::Malformed);
    CHECK(failure_of(v, join3(h, p, s + "/")) == AuthFailure::Malformed);
    CHECK(failure_of(v, join3(h, p, std::string(s).insert(3, " "))) == AuthFailure::Malformed);
    CHECK(failure_of(v, join3(h, p, std::string(s).insert(3, std::string(1, '\0')))) ==
          AuthFailure::Malformed);
    // a length that leaves one lone base64 character
    CHECK(failure_of(v, join3(h + "A", p, s)) != AuthFailure::None);
    // header: not JSON, not an object, no alg, alg not a string, crit
    CHECK(failure_of(v, join3(b64url("not json"), p, s)) == AuthFailure::Malformed);
    CHECK(failure_of(v, join3(b64url("[\"HS256\"]"), p, s)) == AuthFailure::Malformed);
    CHECK(failure_of(v, join3(b64url("\"HS256\""), p, s)) == AuthFailure::Malformed);
    CHECK(failure_of(v, join3(b64url("{}"), p, s)) == AuthFailure::Malformed);
    CHECK(failure_of(v, join3(b64url(R"({"alg":256})"), p, s)) == AuthFailure::Malformed);
    CHECK(failure_of(v, join3(b64url(R"({"alg":null})"), p, s)) == AuthFailure::Malformed);
    CHECK(failure_of(v, join3(b64url("{\"alg\":\"HS256\""), p, s)) == AuthFailure::Malformed);
    CHECK(failure_of(v, signed_with(R"({"alg":"HS256","crit":["exp"],"exp":1})",
                                    claims().dump())) == AuthFailure::Malformed);
    CHECK(failure_of(v, join3(b64url("{\"alg\":\"HS256\",\"x\":\"\xff\"}"), p, s)) ==
          AuthFailure::Malformed);
    // payload (validly signed): not JSON, not an object
    CHECK(failure_of(v, signed_with(R"({"alg":"HS256"})", "not json")) == AuthFailure::Malformed);
    CHECK(failure_of(v, signed_with(R"({"alg":"HS256"})", "[1,2,3]")) == AuthFailure::Malformed);
    CHECK(failure_of(v, signed_with(R"({"alg":"HS256"})", "42")) == AuthFailure::Malformed);
    CHECK(failure_of(v, signed_with(R"({"alg":"HS256"})", "null")) == AuthFailure::Malformed);
    CHECK(failure_of(v, signed_with(R"({"alg":"HS256"})", "\"str\"")) == AuthFailure::Malformed);
    CHECK(failure_of(v, signed_with(R"({"alg":"HS256"})", "{\"a\":1")) == AuthFailure::Malformed);
    CHECK(failure_of(v, signed_with(R"({"alg":"HS256"})", "{\"a\":1e999}")) != AuthFailure::None);
    CHECK(accepted(v, signed_with(R"({"alg":"HS256"})", "{}")));
    // duplicate member names: nlohmann keeps the last; never a crash
    failure_of(v, signed_with(R"({"alg":"HS256"})", R"({"exp":1,"exp":99999999999})"));
    // deep nesting within the size bound
    std::string deep(2000, '[');
    deep.append(2000, ']');
    CHECK(failure_of(v, signed_with(R"({"alg":"HS256"})", "{\"a\":" + deep + "}")) ==
          AuthFailure::None);
    // length bound
    std::string pad(JwtVerifier::kMaxTokenLength, 'A');
    CHECK(failure_of(v, pad + "." + p + "." + s) == AuthFailure::Malformed);
    CHECK(failure_of(v, std::string(1 << 20, '.')) == AuthFailure::Malformed);
    const std::string big_claim(JwtVerifier::kMaxTokenLength, 'x');
    CHECK(failure_of(v, hs256(claims({{"big", big_claim}}))) == AuthFailure::Malformed);
}

TEST_CASE("jwt: garbage and mutations never crash nor pass") {
    const Keys& k = keys();
    JwtVerifier v(auth({"HS256", "RS256", "ES256"},
                       {secret_key(kSecret), public_key(k.rsa_public), public_key(k.ec256_public)}),
                  {});
    std::mt19937 rng(20261122);
    // random bytes, random base64url-ish text with dots
    const std::string alphabet =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
    for (int i = 0; i < 3000; ++i) {
        const std::size_t len = rng() % 300;
        std::string s(len, '\0');
        if (i % 2 == 0) {
            for (char& c : s) c = static_cast<char>(rng() & 0xff);
        } else {
            for (char& c : s) c = alphabet[rng() % alphabet.size()];
        }
        CHECK(failure_of(v, s) != AuthFailure::None);
    }
    // random JSON-ish headers/payloads around valid ones
    const std::vector<std::string> originals = {
        hs256(claims()),
        make_token({{"alg", "RS256"}}, claims(), k.rsa_private),
        make_token({{"alg", "ES256"}}, claims(), k.ec256_private),
    };
    for (const std::string& original : originals) {
        REQUIRE(accepted(v, original));
        for (int i = 0; i < 300; ++i) {
            std::string m = original;
            const std::size_t pos = rng() % m.size();
            const char c = alphabet[rng() % alphabet.size()];
            if (m[pos] == c) continue;
            switch (rng() % 3) {
                case 0:
                    m[pos] = c;
                    break;
                case 1:
                    m.insert(pos, 1, c);
                    break;
                default:
                    m.erase(pos, 1);
                    break;
            }
            CAPTURE(m);
            CHECK(failure_of(v, m) != AuthFailure::None);
        }
    }
}
