// cpp-jwt (Debian libcpp-jwt-dev 1.4) is used for what it does well: base64url + JSON decoding of
// the header and payload (jwt_header / jwt_payload ::decode) and the signature arithmetic
// (HMACSign<>::sign, PEMSign<>::verify). Its jwt::decode() entry point is NOT used, because:
//  - it checks exp/nbf against system_clock::now() (not the caller's clock), with unsigned
//    arithmetic that wraps for nbf < leeway, and BEFORE the signature;
//  - it accepts "aud" only as a string (an array is a type error) and matches "alg" with
//    strcasecmp (so "hs256" or "HS256\0x" pass for HS256);
//  - its error_code overloads still throw (nlohmann type_error when "alg"/"typ" is not a string,
//    invalid_iterator when the payload is an array, MemoryAllocationException);
//  - its base64 decoder indexes a 256-entry table with a signed char: a byte >= 0x80 asserts
//    (debug) or reads out of bounds (release), and invalid characters are skipped silently.
// So the token's shape and alphabet are checked here first, every cpp-jwt call is inside a try,
// and the claim checks are done here from the decoded payload. HMAC signatures are compared in
// constant time (CRYPTO_memcmp) instead of cpp-jwt's HMACSign<>::verify, which uses ==.
#include "worker/auth/jwt_verifier.hpp"

#include <openssl/crypto.h>
#include <openssl/err.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <utility>

// After the OpenSSL headers: cpp-jwt includes them too.
#include <jwt/jwt.hpp>

namespace proxyd::worker {

namespace {

using json = nlohmann::json;

constexpr std::string_view kAlgorithmNames[] = {"HS256", "HS384", "HS512", "RS256",
                                                "RS384", "RS512", "ES256", "ES384"};
constexpr std::int64_t kMaxCacheSeconds = 3600;      // a cached token is re-verified after 1 h
constexpr std::int64_t kNoExpiryCacheSeconds = 300;  // ... or after 5 min if it has no exp
constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();
constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();

std::int64_t saturating_add(std::int64_t a, std::int64_t b) {
    std::int64_t r;
    if (__builtin_add_overflow(a, b, &r)) return b > 0 ? kMax : kMin;
    return r;
}

char lower(char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (lower(a[i]) != lower(b[i])) return false;
    }
    return true;
}

// The 6-bit value of a base64url character, or -1.
int b64url_value(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

// Non-empty, unpadded, canonical base64url: only the alphabet, no length that leaves a lone
// character, and zero bits where the last character has bits beyond the data (else two texts
// would decode to the same bytes).
bool canonical_b64url(std::string_view s) {
    if (s.empty()) return false;
    for (char c : s) {
        if (b64url_value(c) < 0) return false;
    }
    const int last = b64url_value(s.back());
    switch (s.size() % 4) {
        case 1:
            return false;
        case 2:
            return (last & 0x0f) == 0;
        case 3:
            return (last & 0x03) == 0;
        default:
            return true;
    }
}

// header.payload.signature, each canonical base64url; the signature may be empty here (an
// unsigned "alg": "none" token is then refused for its algorithm, which is what it is).
bool split_token(std::string_view token, std::string_view (&parts)[3]) {
    const std::size_t a = token.find('.');
    if (a == std::string_view::npos) return false;
    const std::size_t b = token.find('.', a + 1);
    if (b == std::string_view::npos || token.find('.', b + 1) != std::string_view::npos) {
        return false;
    }
    parts[0] = token.substr(0, a);
    parts[1] = token.substr(a + 1, b - a - 1);
    parts[2] = token.substr(b + 1);
    return canonical_b64url(parts[0]) && canonical_b64url(parts[1]) &&
           (parts[2].empty() || canonical_b64url(parts[2]));
}

enum class Numeric { Absent, Ok, Invalid };

// A NumericDate claim as whole seconds (a fraction rounds towards the lenient side: down for
// exp, up for nbf, which keeps `now > exp` and `now < nbf` exact for whole `now`).
Numeric numeric_date(const json& payload, const char* name, bool round_up, std::int64_t& out) {
    const auto it = payload.find(name);
    if (it == payload.end()) return Numeric::Absent;
    const json& v = *it;
    if (v.is_number_unsigned()) {
        const auto u = v.get<std::uint64_t>();
        out = u > static_cast<std::uint64_t>(kMax) ? kMax : static_cast<std::int64_t>(u);
        return Numeric::Ok;
    }
    if (v.is_number_integer()) {
        out = v.get<std::int64_t>();
        return Numeric::Ok;
    }
    if (v.is_number_float()) {
        double d = v.get<double>();
        if (std::isnan(d)) return Numeric::Invalid;
        d = round_up ? std::ceil(d) : std::floor(d);
        if (d >= 9.2e18) {
            out = kMax;
        } else if (d <= -9.2e18) {
            out = kMin;
        } else {
            out = static_cast<std::int64_t>(d);
        }
        return Numeric::Ok;
    }
    return Numeric::Invalid;
}

void append_json(const json& v, std::string& out) {
    out.append(v.dump(-1, ' ', false, json::error_handler_t::replace));
}

// Strings as they are, arrays joined with ", " (string elements as they are), anything else as
// compact JSON; null = absent. Control characters become spaces: the text may be a header value.
void claim_text(const json& payload, const std::string& name, std::string& out) {
    out.clear();
    const auto it = payload.find(name);
    if (it == payload.end()) return;
    const json& v = *it;
    if (v.is_null()) return;
    if (v.is_string()) {
        out.append(v.get_ref<const std::string&>());
    } else if (v.is_array()) {
        bool first = true;
        for (const json& e : v) {
            if (!first) out.append(", ");
            first = false;
            if (e.is_string()) {
                out.append(e.get_ref<const std::string&>());
            } else {
                append_json(e, out);
            }
        }
    } else {
        append_json(v, out);
    }
    for (char& c : out) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f) c = ' ';
    }
}

// A JSON array of strings (other elements ignored), or one string of space-separated roles.
void read_roles(const json& payload, const std::string& name, std::vector<std::string>& roles) {
    roles.clear();
    const auto it = payload.find(name);
    if (it == payload.end()) return;
    if (it->is_array()) {
        for (const json& e : *it) {
            if (e.is_string()) roles.push_back(e.get<std::string>());
        }
    } else if (it->is_string()) {
        const std::string_view s = it->get_ref<const std::string&>();
        std::size_t i = 0;
        while (i < s.size()) {
            while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
            std::size_t j = i;
            while (j < s.size() && s[j] != ' ' && s[j] != '\t') ++j;
            if (j > i) roles.emplace_back(s.substr(i, j - i));
            i = j;
        }
    }
}

bool audience_matches(const json& payload, const std::string& audience) {
    const auto it = payload.find("aud");
    if (it == payload.end()) return false;
    if (it->is_string()) return it->get_ref<const std::string&>() == audience;
    if (it->is_array()) {
        return std::any_of(it->begin(), it->end(), [&](const json& e) {
            return e.is_string() && e.get_ref<const std::string&>() == audience;
        });
    }
    return false;
}

// cpp-jwt computes the MAC and its base64url text exactly as its HMACSign<>::verify does; the
// comparison is constant-time.
template <typename Hasher>
bool hmac_matches(std::string_view key, std::string_view input, std::string_view signature) {
    auto [mac, ec] = jwt::HMACSign<Hasher>::sign(key, input);
    if (ec || mac.empty()) return false;
    std::string expected = jwt::base64_encode(mac.data(), mac.size());
    expected.resize(jwt::base64_uri_encode(expected.data(), expected.size()));
    return expected.size() == signature.size() &&
           CRYPTO_memcmp(expected.data(), signature.data(), signature.size()) == 0;
}

template <typename Hasher>
bool pem_verifies(std::string_view pem, std::string_view input, std::string_view signature) {
    const auto [ok, ec] = jwt::PEMSign<Hasher>::verify(pem, input, signature);
    return ok && !ec;
}

}  // namespace

std::string_view auth_failure_reason(AuthFailure failure) {
    switch (failure) {
        case AuthFailure::None:
            return "none";
        case AuthFailure::Missing:
            return "missing";
        case AuthFailure::Malformed:
            return "malformed";
        case AuthFailure::AlgorithmNotAllowed:
            return "algorithm";
        case AuthFailure::UnknownKey:
            return "unknown_key";
        case AuthFailure::BadSignature:
            return "signature";
        case AuthFailure::Expired:
            return "expired";
        case AuthFailure::NotYetValid:
            return "not_yet_valid";
        case AuthFailure::WrongIssuer:
            return "issuer";
        case AuthFailure::WrongAudience:
            return "audience";
    }
    return "malformed";
}

std::string_view bearer_token(std::string_view authorization) {
    std::string_view v = authorization;
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    constexpr std::string_view kScheme = "bearer";
    if (v.size() <= kScheme.size() || !iequals(v.substr(0, kScheme.size()), kScheme) ||
        v[kScheme.size()] != ' ') {
        return {};
    }
    v.remove_prefix(kScheme.size());
    while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
    return v;
}

bool has_any_role(const VerifiedToken& token, const std::vector<std::string>& required) {
    if (required.empty()) return true;
    for (const std::string& role : required) {
        if (std::find(token.roles.begin(), token.roles.end(), role) != token.roles.end()) {
            return true;
        }
    }
    return false;
}

JwtVerifier::JwtVerifier(const config::JwtAuth& config, std::vector<std::string> extra_claims)
    : issuer_(config.issuer),
      audience_(config.audience),
      roles_claim_(config.roles_claim),
      extra_claims_(std::move(extra_claims)),
      cache_(config.cache_entries) {
    for (const std::string& name : config.algorithms) {
        for (std::size_t i = 0; i < std::size(kAlgorithmNames); ++i) {
            if (name == kAlgorithmNames[i]) allowed_ |= 1u << i;
        }
    }
    for (const config::JwtKey& key : config.keys) {
        if (!key.kid.empty()) any_kid_ = true;
        // An empty secret would make every HS token forgeable; the config parser refuses it.
        if (key.material.empty()) continue;
        keys_.push_back(Key{key.kind == config::JwtKey::Kind::Secret, key.kid, key.material});
    }
    leeway_ = std::max<std::int64_t>(0, config.leeway.count() / 1000);
    forward_claims_.reserve(config.forward_claims.size());
    for (const auto& [claim, header] : config.forward_claims) forward_claims_.push_back(claim);
}

const VerifiedToken* JwtVerifier::verify(std::string_view token, std::int64_t now,
                                         AuthFailure& failure) {
    failure = AuthFailure::None;
    if (token.empty()) {
        failure = AuthFailure::Missing;
        return nullptr;
    }
    if (token.size() > kMaxTokenLength) {
        failure = AuthFailure::Malformed;
        return nullptr;
    }
    const std::uint64_t hash = TokenCache::hash(token);
    if (TokenCache::Entry* e = cache_.find(token, hash)) {
        if (e->value.expires_at != 0 && saturating_add(e->value.expires_at, leeway_) < now) {
            cache_.erase(e);
            failure = AuthFailure::Expired;
            return nullptr;
        }
        if (saturating_add(now, leeway_) < e->not_before) {
            failure = AuthFailure::NotYetValid;  // only if the clock went back
            return nullptr;
        }
        if (now <= e->valid_until) return &e->value;
        cache_.erase(e);  // kept long enough: verify it again
    }
    try {
        return verify_uncached(token, hash, now, failure);
    } catch (...) {
        ERR_clear_error();
        failure = AuthFailure::Malformed;
        return nullptr;
    }
}

const VerifiedToken* JwtVerifier::verify_uncached(std::string_view token, std::uint64_t hash,
                                                  std::int64_t now, AuthFailure& failure) {
    auto fail = [&failure](AuthFailure f) -> const VerifiedToken* {
        failure = f;
        return nullptr;
    };
    std::string_view parts[3];
    if (!split_token(token, parts)) return fail(AuthFailure::Malformed);

    // Header. cpp-jwt refuses a "typ" other than "JWT" (any case) and accepts a missing one.
    std::error_code ec;
    jwt::jwt_header header;
    header.decode(parts[0], ec);
    if (ec) return fail(AuthFailure::Malformed);
    const json& h = header.create_json_obj();
    if (!h.is_object()) return fail(AuthFailure::Malformed);
    const auto alg_it = h.find("alg");
    if (alg_it == h.end() || !alg_it->is_string()) return fail(AuthFailure::Malformed);
    const std::string& alg_name = alg_it->get_ref<const std::string&>();
    std::size_t alg_index = std::size(kAlgorithmNames);
    for (std::size_t i = 0; i < std::size(kAlgorithmNames); ++i) {
        if (alg_name == kAlgorithmNames[i]) alg_index = i;
    }
    // "none" (any case) is not in kAlgorithmNames: always refused.
    if (alg_index == std::size(kAlgorithmNames) || (allowed_ & (1u << alg_index)) == 0) {
        return fail(AuthFailure::AlgorithmNotAllowed);
    }
    const auto alg = static_cast<Alg>(alg_index);
    if (parts[2].empty() || h.contains("crit")) return fail(AuthFailure::Malformed);
    const std::string* kid = nullptr;
    if (const auto kid_it = h.find("kid"); kid_it != h.end()) {
        if (!kid_it->is_string()) return fail(AuthFailure::Malformed);
        kid = &kid_it->get_ref<const std::string&>();
    }

    // Keys: a secret for HS*, a public key for RS*/ES*. A kid that names a key selects it alone;
    // a kid that names none is unknown, unless no key has a kid (then, like a token without a
    // kid, every key of the family is tried: rotation overlap).
    const bool wants_secret = alg <= Alg::HS512;
    bool by_kid = false;
    if (kid != nullptr) {
        by_kid = std::any_of(keys_.begin(), keys_.end(),
                             [&](const Key& k) { return !k.kid.empty() && k.kid == *kid; });
        if (!by_kid && any_kid_) return fail(AuthFailure::UnknownKey);
    }
    const std::string_view signing_input = token.substr(0, parts[0].size() + 1 + parts[1].size());
    bool tried = false;
    bool verified = false;
    for (const Key& key : keys_) {
        if (key.secret != wants_secret || (by_kid && key.kid != *kid)) continue;
        tried = true;
        if (signature_ok(alg, key, signing_input, parts[2])) {
            verified = true;
            break;
        }
    }
    if (!tried) return fail(AuthFailure::UnknownKey);
    if (!verified) return fail(AuthFailure::BadSignature);

    // Payload and claims (only once the signature holds).
    jwt::jwt_payload payload;
    payload.decode(parts[1], ec);
    if (ec) return fail(AuthFailure::Malformed);
    const json& p = payload.create_json_obj();
    if (!p.is_object()) return fail(AuthFailure::Malformed);
    std::int64_t exp = 0;
    std::int64_t nbf = kMin;
    const Numeric has_exp = numeric_date(p, "exp", false, exp);
    const Numeric has_nbf = numeric_date(p, "nbf", true, nbf);
    if (has_exp == Numeric::Invalid || has_nbf == Numeric::Invalid) {
        return fail(AuthFailure::Malformed);
    }
    if (has_exp == Numeric::Ok && saturating_add(exp, leeway_) < now) {
        return fail(AuthFailure::Expired);
    }
    if (has_nbf == Numeric::Ok && saturating_add(now, leeway_) < nbf) {
        return fail(AuthFailure::NotYetValid);
    }
    if (!issuer_.empty()) {
        const auto it = p.find("iss");
        if (it == p.end() || !it->is_string() || it->get_ref<const std::string&>() != issuer_) {
            return fail(AuthFailure::WrongIssuer);
        }
    }
    if (!audience_.empty() && !audience_matches(p, audience_)) {
        return fail(AuthFailure::WrongAudience);
    }

    VerifiedToken& out = scratch_;
    out.expires_at = has_exp == Numeric::Ok ? exp : 0;
    read_roles(p, roles_claim_, out.roles);
    out.forwarded_values.resize(forward_claims_.size());
    for (std::size_t i = 0; i < forward_claims_.size(); ++i) {
        claim_text(p, forward_claims_[i], out.forwarded_values[i]);
    }
    out.extra_claims.resize(extra_claims_.size());
    for (std::size_t i = 0; i < extra_claims_.size(); ++i) {
        claim_text(p, extra_claims_[i], out.extra_claims[i]);
    }

    const std::int64_t until =
        has_exp == Numeric::Ok
            ? std::min(saturating_add(exp, leeway_), saturating_add(now, kMaxCacheSeconds))
            : saturating_add(now, kNoExpiryCacheSeconds);
    if (TokenCache::Entry* e = cache_.insert(token, hash, scratch_, nbf, until)) return &e->value;
    return &scratch_;
}

bool JwtVerifier::signature_ok(Alg alg, const Key& key, std::string_view input,
                               std::string_view signature) {
    ++signature_checks_;
    const std::string_view k = key.material;
    bool ok = false;
    try {
        switch (alg) {
            case Alg::HS256:
                ok = hmac_matches<jwt::algo::HS256>(k, input, signature);
                break;
            case Alg::HS384:
                ok = hmac_matches<jwt::algo::HS384>(k, input, signature);
                break;
            case Alg::HS512:
                ok = hmac_matches<jwt::algo::HS512>(k, input, signature);
                break;
            case Alg::RS256:
                ok = pem_verifies<jwt::algo::RS256>(k, input, signature);
                break;
            case Alg::RS384:
                ok = pem_verifies<jwt::algo::RS384>(k, input, signature);
                break;
            case Alg::RS512:
                ok = pem_verifies<jwt::algo::RS512>(k, input, signature);
                break;
            case Alg::ES256:
                ok = pem_verifies<jwt::algo::ES256>(k, input, signature);
                break;
            case Alg::ES384:
                ok = pem_verifies<jwt::algo::ES384>(k, input, signature);
                break;
        }
    } catch (const std::exception&) {
        ok = false;
    }
    // A failed verification leaves errors on OpenSSL's per-thread queue, where they would be
    // mistaken for the next TLS call's errors.
    ERR_clear_error();
    return ok;
}

}  // namespace proxyd::worker
