// JWT verification for [auth.jwt] (see CONTRACT.md): signature, algorithm allow-list, key choice
// by "kid", exp/nbf with leeway, iss and aud; extraction of roles and forwarded claims; and a
// bounded per-worker cache of verified tokens. One JwtVerifier per worker and config generation
// (not thread-safe). cpp-jwt does the base64url/JSON decoding and the signature arithmetic; it is
// an implementation detail of jwt_verifier.cpp and not visible here.
//
// Security rules enforced here, whatever the config says:
//  - "alg" must be listed in config.algorithms (exact, case-sensitive); "none" in any case is
//    always refused;
//  - an HS* token is only checked with secrets, an RS*/ES* token only with public keys (a PEM
//    public key is never used as an HMAC secret);
//  - a token with a "crit" header is refused (no extension is understood); "jku", "jwk", "x5u"
//    and the like are ignored: keys come from the config only;
//  - tokens longer than kMaxTokenLength are refused before any work; characters outside the
//    base64url alphabet and non-canonical base64url are refused before decoding;
//  - the key material is never logged nor put in a message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/config/types.hpp"
#include "worker/auth/token_cache.hpp"
#include "worker/auth/verified_token.hpp"

namespace proxyd::worker {

enum class AuthFailure {
    None,
    Missing,              // no Bearer token
    Malformed,            // not a well-formed signed JWT (or too long)
    AlgorithmNotAllowed,  // "alg" not in config.algorithms, or "none"
    UnknownKey,           // no configured key for this "kid" / algorithm family
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
};

// Short snake_case label: the metrics label `reason` and the JSON error text. "none" for None.
std::string_view auth_failure_reason(AuthFailure failure);

// The token in "Authorization: Bearer <token>" (scheme case-insensitive, one or more spaces,
// surrounding whitespace ignored); "" if the value is not a Bearer credential or has no token.
std::string_view bearer_token(std::string_view authorization);

// True if `required` is empty or the token carries at least one of its roles (exact match).
bool has_any_role(const VerifiedToken& token, const std::vector<std::string>& required);

class JwtVerifier {
  public:
    static constexpr std::size_t kMaxTokenLength = 8 * 1024;

    // `extra_claims`: claim names whose values the caller needs too (rate-limit keys jwt:CLAIM);
    // VerifiedToken::extra_claims is aligned with them.
    JwtVerifier(const config::JwtAuth& config, std::vector<std::string> extra_claims);

    // The verified token, or nullptr with `failure` set when the token is not acceptable ("" is
    // Missing). `now_unix_seconds` is the time exp/nbf are checked against. The pointer stays
    // valid until the next verify() call. Never throws.
    const VerifiedToken* verify(std::string_view token, std::int64_t now_unix_seconds,
                                AuthFailure& failure);

    // How many real signature verifications were done (one per key tried).
    std::uint64_t signature_checks() const { return signature_checks_; }

    std::size_t cached_tokens() const { return cache_.size(); }

  private:
    // Supported algorithms; the order matches kAlgorithmNames in the .cpp.
    enum class Alg : std::uint8_t { HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384 };

    struct Key {
        bool secret = true;  // HMAC secret (HS*), else PEM public key (RS*/ES*)
        std::string kid;
        std::string material;
    };

    const VerifiedToken* verify_uncached(std::string_view token, std::uint64_t hash,
                                         std::int64_t now, AuthFailure& failure);
    bool signature_ok(Alg alg, const Key& key, std::string_view signing_input,
                      std::string_view signature);

    std::uint32_t allowed_ = 0;  // bit per Alg
    std::vector<Key> keys_;
    bool any_kid_ = false;  // some key has a kid
    std::string issuer_;
    std::string audience_;
    std::int64_t leeway_ = 0;  // seconds
    std::string roles_claim_;
    std::vector<std::string> forward_claims_;  // claim names, aligned with config.forward_claims
    std::vector<std::string> extra_claims_;

    TokenCache cache_;
    VerifiedToken scratch_;  // built for each new token; returned when there is no cache
    std::uint64_t signature_checks_ = 0;
};

}  // namespace proxyd::worker
