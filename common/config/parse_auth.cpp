// [auth.jwt]: how tokens are verified. Key and secret files are read here, while the config is
// loaded by the master (before workers drop privileges, and again on every reload so rotated keys
// take effect); their content is secret and never appears in a message.
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <algorithm>

#include "common/config/reader.hpp"
#include "common/config/secret_file.hpp"
#include "common/config/text.hpp"

namespace proxyd::config::detail {

namespace {

constexpr std::string_view kAuthKeys[] = {"jwt"};
constexpr std::string_view kJwtKeys[] = {
    "algorithms", "secret_file", "public_key_file", "keys",           "issuer",
    "audience",   "leeway",      "roles_claim",     "forward_claims", "cache_entries"};
constexpr std::string_view kKeyEntryKeys[] = {"kid", "secret_file", "public_key_file"};
constexpr std::string_view kAlgorithms[] = {"HS256", "HS384", "HS512", "RS256",
                                            "RS384", "RS512", "ES256", "ES384"};
constexpr std::int64_t kMaxCacheEntries = 10'000'000;

bool is_hmac(std::string_view alg) {
    return alg.starts_with("HS");
}

bool parses_as_public_key(const std::string& pem) {
    BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    if (bio == nullptr) return false;
    EVP_PKEY* key = PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    if (key == nullptr) return false;
    EVP_PKEY_free(key);
    return true;
}

// Reads `key` (secret_file or public_key_file) of `table` into a JwtKey; false if absent.
bool read_key(Reader& r, const toml::table& table, std::string_view key, JwtKey::Kind kind,
              JwtKey& out) {
    const toml::node* node = table.get(key);
    if (node == nullptr) return false;
    out.kind = kind;
    out.loc = loc_of(*node);
    const auto path = r.nonempty_string(*node, key);
    if (!path) return true;
    out.file = resolve_config_path(r.file(), *path);
    std::string error;
    if (!read_secret_file(out.file, out.material, error)) {
        r.error(*node, "cannot read " + quote(key) + " " + quote(out.file) + ": " + error);
    } else if (kind == JwtKey::Kind::PublicKey && !parses_as_public_key(out.material)) {
        r.error(*node, quote(key) + " " + quote(out.file) +
                           " is not a PEM public key (\"-----BEGIN PUBLIC KEY-----\")");
        out.material.clear();
    }
    return true;
}

// One key from a table holding exactly one of secret_file / public_key_file.
void read_key_entry(Reader& r, const toml::table& table, const toml::node& where, JwtAuth& out) {
    JwtKey key;
    const bool secret = read_key(r, table, "secret_file", JwtKey::Kind::Secret, key);
    JwtKey pub;
    const bool public_key = read_key(r, table, "public_key_file", JwtKey::Kind::PublicKey, pub);
    if (secret && public_key) {
        r.error(where, "a JWT key has \"secret_file\" or \"public_key_file\", not both");
        return;
    }
    if (!secret && !public_key) {
        r.error(where, "a JWT key needs \"secret_file\" (HS*) or \"public_key_file\" (RS*/ES*)");
        return;
    }
    if (public_key) key = std::move(pub);
    if (const toml::node* kid = table.get("kid")) {
        if (auto text = r.nonempty_string(*kid, "kid")) key.kid = std::move(*text);
    }
    out.keys.push_back(std::move(key));
}

void parse_keys_list(Reader& r, const toml::node& node, JwtAuth& out) {
    const toml::array* keys = r.array(node, "keys");
    if (keys == nullptr) return;
    if (keys->empty()) r.error(node, "\"keys\" must not be empty");
    for (const toml::node& element : *keys) {
        const toml::table* entry = r.table(element, "keys");
        if (entry == nullptr) continue;
        r.check_keys(*entry, "in a JWT key", kKeyEntryKeys);
        read_key_entry(r, *entry, element, out);
    }
}

void parse_algorithms(Reader& r, const toml::table& jwt, JwtAuth& out) {
    if (!r.require(jwt, "algorithms", "in [auth.jwt]")) return;
    const toml::node& node = *jwt.get("algorithms");
    const auto items = r.strings(node, "algorithms");
    if (!items) return;
    if (items->empty()) r.error(node, "\"algorithms\" must list at least one algorithm");
    for (const StringItem& item : *items) {
        const std::string alg = upper(item.value);
        if (alg == "NONE") {
            r.error(*item.node, "algorithm \"none\" is never accepted: tokens must be signed");
        } else if (std::find(std::begin(kAlgorithms), std::end(kAlgorithms), alg) ==
                   std::end(kAlgorithms)) {
            r.error(*item.node, "unknown JWT algorithm " + quote(item.value) +
                                    did_you_mean(alg, kAlgorithms) +
                                    " (HS256/384/512, RS256/384/512, ES256/384)");
        } else {
            out.algorithms.push_back(alg);
        }
    }
}

void parse_forward_claims(Reader& r, const toml::node& node, JwtAuth& out) {
    const toml::table* t = r.table(node, "forward_claims");
    if (t == nullptr) return;
    for (auto&& [claim, value] : *t) {
        auto header = r.nonempty_string(value, claim.str());
        if (!header) continue;
        if (!is_token(*header)) {
            r.error(value, "forward_claims: invalid header name " + quote(*header));
            continue;
        }
        out.forward_claims.emplace_back(std::string(claim.str()), std::move(*header));
    }
}

// Every algorithm family configured needs a key it can use, and every key an algorithm.
void check_key_families(Reader& r, const toml::node& jwt, JwtAuth& out) {
    if (out.keys.empty()) {
        r.error(jwt, "[auth.jwt] needs \"secret_file\", \"public_key_file\" or \"keys\"");
        return;
    }
    const bool wants_hmac = std::any_of(out.algorithms.begin(), out.algorithms.end(), is_hmac);
    const bool wants_public = std::any_of(out.algorithms.begin(), out.algorithms.end(),
                                          [](const std::string& a) { return !is_hmac(a); });
    for (const JwtKey& key : out.keys) {
        const bool secret = key.kind == JwtKey::Kind::Secret;
        if (secret && !wants_hmac) {
            r.error(key.loc,
                    "a secret is only used by HS* algorithms, and \"algorithms\" has none");
        } else if (!secret && !wants_public) {
            r.error(key.loc,
                    "a public key is only used by RS*/ES* algorithms, and \"algorithms\" has none");
        }
    }
}

}  // namespace

void parse_auth(Reader& r, const toml::node& node, JwtAuth& out) {
    const toml::table* auth = r.table(node, "auth");
    if (auth == nullptr) return;
    r.check_keys(*auth, "in [auth]", kAuthKeys);
    const toml::node* jwt_node = auth->get("jwt");
    if (jwt_node == nullptr) return;
    const toml::table* jwt = r.table(*jwt_node, "jwt");
    if (jwt == nullptr) return;
    out.enabled = true;
    r.check_keys(*jwt, "in [auth.jwt]", kJwtKeys);
    parse_algorithms(r, *jwt, out);
    if (jwt->get("keys") != nullptr &&
        (jwt->get("secret_file") != nullptr || jwt->get("public_key_file") != nullptr)) {
        r.error(*jwt->get("keys"),
                "[auth.jwt] has either \"keys\" or \"secret_file\"/\"public_key_file\", not both");
    } else if (const toml::node* keys = jwt->get("keys")) {
        parse_keys_list(r, *keys, out);
    } else {
        JwtKey secret;
        if (read_key(r, *jwt, "secret_file", JwtKey::Kind::Secret, secret)) {
            out.keys.push_back(std::move(secret));
        }
        JwtKey pub;
        if (read_key(r, *jwt, "public_key_file", JwtKey::Kind::PublicKey, pub)) {
            out.keys.push_back(std::move(pub));
        }
    }
    check_key_families(r, *jwt_node, out);
    r.read(*jwt, "issuer", out.issuer);
    r.read(*jwt, "audience", out.audience);
    r.read_duration(*jwt, "leeway", out.leeway, true);
    if (const toml::node* n = jwt->get("roles_claim")) {
        if (auto claim = r.nonempty_string(*n, "roles_claim")) out.roles_claim = std::move(*claim);
    }
    if (const toml::node* n = jwt->get("forward_claims")) parse_forward_claims(r, *n, out);
    if (const toml::node* n = jwt->get("cache_entries")) {
        if (auto v = r.integer(*n, "cache_entries", 0, kMaxCacheEntries)) {
            out.cache_entries = static_cast<std::size_t>(*v);
        }
    }
}

}  // namespace proxyd::config::detail
