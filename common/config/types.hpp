// Plain configuration structs: parsed once from TOML (parse.cpp), validated whole (validate.cpp),
// then read-only for the life of a worker generation. No logic lives here.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace proxyd::config {

using Millis = std::chrono::milliseconds;

// Where a value came from, for FILE:LINE:COLUMN messages.
struct SourceLoc {
    int line = 0;
    int column = 0;
};

// A resolved "host:port" (numeric IPv4 or IPv6; "[::1]:80" for IPv6).
struct SocketAddress {
    std::string text;  // as written in the config, e.g. "127.0.0.1:8080"
    sockaddr_storage storage{};
    socklen_t length = 0;
    SourceLoc loc;
};

struct Cidr {
    std::string text;
    int family = AF_INET;       // AF_INET or AF_INET6
    unsigned char bytes[16]{};  // network address, in network order
    int prefix_len = 0;
};

struct Timeouts {
    Millis header{10'000};
    Millis body{30'000};
    Millis keepalive{60'000};
    Millis upstream_connect{2'000};
    Millis upstream_response{30'000};
    Millis upstream_idle{60'000};
    Millis tunnel_idle{3'600'000};
    // Slow-client rule (with Limits::min_request_rate): a request head still incomplete after
    // this long must have arrived at the minimum average rate so far, else 408.
    Millis min_rate_grace{2'000};
};

struct Limits {
    std::size_t max_header_size = 16 * 1024;
    std::size_t max_body_size = 10 * 1024 * 1024;
    std::size_t max_uri_size = 8 * 1024;
    std::size_t min_request_rate = 512;  // bytes per second for request heads; 0 = off
    // HTTP/2: streams one client connection may have open at once
    // (SETTINGS_MAX_CONCURRENT_STREAMS).
    int max_concurrent_streams = 128;
};

struct ServerSection {
    std::vector<SocketAddress> listen;
    int workers = 1;  // already resolved when workers = "auto"
    bool workers_auto = false;
    std::string control_socket = "/run/proxyd/proxyd.sock";
    std::string pid_file;  // empty = none
    // Runtime backend changes (admin API) are kept here and re-applied over this file at start
    // and reload; empty = kept in memory only (lost on restart).
    std::string state_file;
    // Workers switch to this user (and group: `group`, else the user's own) when the master
    // runs as root; resolved when the config is loaded.
    std::string user;
    std::string group;
    std::uint32_t uid = 0;
    std::uint32_t gid = 0;
    int max_connections = 10000;
    Millis shutdown_timeout{30'000};
    std::string real_ip_header;  // empty = off
    std::vector<Cidr> trusted_proxies;
    Timeouts timeouts;
    Limits limits;
    std::vector<std::pair<std::string, std::string>> response_headers;  // sorted by name
    // Optional /etc/hosts-style file consulted before the system resolver for upstream names.
    std::string hosts_file;
    // Every connection starts with a PROXY protocol v1 or v2 header from an L4 balancer; the
    // address it carries becomes the client's.
    bool proxy_protocol = false;
    // Plain listeners also take HTTP/2 with prior knowledge (the client's first bytes are the
    // HTTP/2 connection preface); TLS listeners choose HTTP/2 by ALPN ([tls] alpn).
    bool h2c = false;
};

enum class Balance {
    RoundRobin,
    WeightedRoundRobin,
    LeastConn,
    WeightedLeastConn,
    IpHash,
    ConsistentHash,
    LeastTime,
    Adaptive,
};

// What consistent_hash hashes: the client address, the path, a header or a cookie.
struct HashKey {
    enum class Kind { Ip, Path, Header, Cookie };
    Kind kind = Kind::Ip;
    std::string name;  // header or cookie name for Header/Cookie
};

struct HealthCheck {
    bool enabled = false;  // true when [upstreams.X.health_check] is present
    std::string path = "/health";
    Millis interval{5'000};
    Millis timeout{1'000};
    int healthy_threshold = 2;
    int unhealthy_threshold = 3;
    std::vector<int> expected_status{200};
    std::string method = "GET";
};

struct RetryPolicy {
    // Further tries on other servers after the first, when the request is safe to repeat.
    int attempts = 2;
};

struct UpstreamServer {
    std::string id;         // defaults to address text
    SocketAddress address;  // numeric; for a name, filled per resolved record
    std::string hostname;   // non-empty when the address was written as a DNS name
    std::uint16_t port = 0;
    int weight = 1;
    int max_connections = 0;  // 0 = unlimited; in-flight requests across all workers
    bool backup = false;      // used only when no primary server is healthy
    bool drain = false;       // gets no new requests; in-flight ones complete
    SourceLoc id_loc;         // where the id (or, without one, the address) is written
    // Reached over TLS: verified against ca_pem (or the system store) unless verify = false,
    // with `sni` (default: the hostname, or none for an IP) as server name and verified name.
    bool tls = false;
    std::string sni;
    bool verify = true;
    std::string ca_file;  // empty = the system's trust store
    std::string ca_pem;   // read from ca_file when the config is loaded
    // Index of this server's shared state (common/shm/upstream_state.hpp), set by the master.
    std::uint32_t state_index = 0;
    // Workers only: removed at runtime (admin API) but kept in place, so that the indices held
    // by requests still in flight stay valid; never picked again.
    bool retired = false;
};

// How the proxy speaks to an upstream's servers: HTTP/1.1, HTTP/2 over plain TCP with prior
// knowledge (h2c), or HTTP/2 over TLS negotiated with ALPN "h2" (every server has tls = true).
enum class UpstreamProtocol { Http1, H2c, H2 };

struct Upstream {
    std::string name;
    UpstreamProtocol protocol = UpstreamProtocol::Http1;
    SourceLoc protocol_loc;  // of the `protocol` value, for route checks
    Balance balance = Balance::RoundRobin;
    HashKey hash_key;
    int keepalive = 32;  // idle pooled connections per worker per server
    std::vector<UpstreamServer> servers;
    Millis resolve_interval{30'000};
    Millis slow_start{0};       // 0 = off
    std::string sticky_cookie;  // empty = no sticky sessions
    HealthCheck health_check;
    RetryPolicy retry;
    SourceLoc loc;
};

// Cross-origin resource sharing for a route: the proxy answers preflights itself and adds the
// Access-Control-* headers to actual responses.
struct Cors {
    bool enabled = false;
    // Exact origins ("https://example.com"), "*" for any, or "https://*.example.com" patterns.
    std::vector<std::string> allowed_origins;
    std::vector<std::string> allowed_methods{"GET", "HEAD", "POST"};  // upper-case
    // Empty = echo the preflight's Access-Control-Request-Headers.
    std::vector<std::string> allowed_headers;
    std::vector<std::string> expose_headers;
    bool allow_credentials = false;  // never combined with a literal "*" in the response
    Millis max_age{0};               // 0 = no Access-Control-Max-Age
};

// A route's `cache = {...}`: its responses may be stored in the shared cache and served from it.
struct RouteCache {
    // Freshness when the response says nothing (no s-maxage, max-age or Expires); > 0.
    std::chrono::milliseconds ttl{0};
    // After expiry, within this window, one request refreshes from upstream while the others get
    // the stale copy; 0 = off.
    std::chrono::milliseconds stale_while_revalidate{0};
    // After expiry, within this window, the stale copy stands in for a failed upstream; 0 = off.
    std::chrono::milliseconds stale_if_error{0};
    // Requests with Authorization may be served from / stored in the cache (else: BYPASS).
    bool authorization = false;
};

struct Route {
    // The route's name in metrics (`route` label): `name`, else host + path as matched
    // ("api.example.com/api/", "/", "=/exact").
    std::string label;
    std::string path;    // normalised segment prefix without trailing "/" or "/*" ("" = all)
    bool exact = false;  // path_exact: path must equal `path`
    std::string host;    // empty = any; lower-case; "*.example.com" for a wildcard
    std::vector<std::string> methods;  // empty = any; upper-case
    std::string upstream;
    SourceLoc upstream_loc;          // of the `upstream` value, for "not defined" errors
    std::size_t upstream_index = 0;  // into Config::upstreams, set by validation
    bool strip_prefix = false;
    // Balancing for WebSocket upgrades / requests that accept text/event-stream; unset = the
    // upstream's own `balance`.
    bool has_websocket_balance = false;
    Balance websocket_balance = Balance::RoundRobin;
    bool has_sse_balance = false;
    Balance sse_balance = Balance::RoundRobin;
    // Access phase.
    bool auth_required = false;      // a valid JWT ([auth.jwt]) is needed
    std::vector<std::string> roles;  // the token must carry one of these (empty = any)
    std::string rate_limit;          // name of a [rate_limits.NAME]; empty = none
    SourceLoc rate_limit_loc;
    std::size_t rate_limit_index = 0;  // into Config::rate_limits, set by validation
    Cors cors;
    // protocol = "grpc": the upstream speaks HTTP/2 and the proxy's own errors become gRPC
    // statuses (trailers-only responses); grpc-timeout bounds the upstream wait.
    bool grpc = false;
    SourceLoc protocol_loc;
    // Response phase.
    bool has_cache = false;  // `cache = {...}` is set: only such routes use the cache
    RouteCache cache;
    bool compress = true;  // opt-out of [compression] for this route
    SourceLoc loc;
};

// One verification key for [auth.jwt]. The material is read when the config is loaded (by the
// master, before workers drop privileges) and re-read on every reload; it is secret and never
// logged or shown.
struct JwtKey {
    enum class Kind { Secret, PublicKey };
    Kind kind = Kind::Secret;
    std::string kid;       // empty = not chosen by "kid" (tried for every token)
    std::string file;      // where it came from, for messages
    std::string material;  // HMAC secret bytes, or a PEM public key (trailing newline trimmed)
    SourceLoc loc;
};

struct JwtAuth {
    bool enabled = false;                 // [auth.jwt] present
    std::vector<std::string> algorithms;  // upper-case: HS256..HS512, RS256..RS512, ES256, ES384
    std::vector<JwtKey> keys;
    std::string issuer;    // empty = not checked
    std::string audience;  // empty = not checked
    Millis leeway{0};
    std::string roles_claim = "roles";
    // claim -> header sent upstream; client-sent copies of these headers are always removed.
    std::vector<std::pair<std::string, std::string>> forward_claims;
    std::size_t cache_entries = 10'000;  // verified tokens remembered per worker
};

struct RateLimit {
    enum class KeyKind { Ip, Header, JwtClaim };
    enum class Store { Local, Redis };
    std::string name;
    KeyKind key = KeyKind::Ip;
    std::string key_name;  // header or claim name for Header/JwtClaim
    int requests_per_minute = 60;
    int burst = 1;  // bucket capacity: a quiet key may make this many requests at once
    Store store = Store::Local;
    SocketAddress redis;              // store = "redis"
    std::string redis_password;       // from redis_password_file; secret
    std::string redis_password_file;  // as resolved; shown by GET /api/v1/config instead
    bool redis_error_allow = true;    // on_redis_error: allow | deny (503)
    Millis redis_timeout{250};
    SourceLoc loc;
};

// One certificate chain and its private key, read when the config is loaded (by the master, so
// workers never open key files) and on every reload or renewal. The key is secret: never logged.
struct TlsCertificate {
    std::string cert_file;  // resolved against the config file's directory
    std::string key_file;
    std::string cert_pem;  // leaf first, then intermediates
    std::string key_pem;
    SourceLoc loc;  // the entry in `certificates`
};

struct TlsSection {
    bool enabled = false;  // [tls] present
    std::vector<SocketAddress> listen;
    // Offered by ALPN, in order of preference ("h2", "http/1.1").
    std::vector<std::string> alpn{"http/1.1"};
    bool session_tickets = true;
    // Ticket keys (made by the master, shared by every worker) are replaced this often; a ticket
    // stays valid for two periods.
    Millis session_ticket_rotation{3'600'000};
    std::string hsts;  // Strict-Transport-Security value on TLS responses; empty = none
    // Chosen by SNI from the names in the certificates; the first is the default.
    std::vector<TlsCertificate> certificates;
    int min_version = 12;  // 12 = TLS 1.2, 13 = TLS 1.3
    std::string ciphers;   // TLS 1.2 cipher list (OpenSSL syntax); empty = safe default
    bool watch = false;    // re-read the certificate files when they change
    SourceLoc loc;
};

// [metrics]: Prometheus text on `path`, /healthz and /readyz, served by the master.
struct MetricsSection {
    bool enabled = false;
    SocketAddress listen;
    std::string path = "/metrics";
};

// [admin]: the REST API, served by the master. The token is secret: never logged or shown.
struct AdminSection {
    bool enabled = false;
    SocketAddress listen;
    std::string token_file;
    std::string token;  // read from token_file at load and on every reload
};

// [cache]: the one shared-memory store of every cached route (all workers share it). Defaults
// apply when a route has `cache` and [cache] is absent.
struct CacheSettings {
    std::size_t max_size = 100 * 1024 * 1024;   // the whole store; >= 64KiB
    std::size_t max_object_size = 1024 * 1024;  // one response body; 1KiB..max_size
};

enum class CompressionAlgorithm { Brotli, Gzip };

// [compression]: responses compressed on the way to clients that accept it.
struct CompressionSettings {
    bool enabled = false;  // the [compression] table is present
    // Lower-case media types ("type/subtype"); "text/*" matches every subtype of text.
    std::vector<std::string> types{"text/html", "text/css", "application/json",
                                   "application/javascript", "text/plain"};
    // Responses with a known Content-Length below this are not compressed.
    std::size_t min_size = 1024;
    // Server preference order: breaks ties between equally acceptable codings.
    std::vector<CompressionAlgorithm> algorithms{CompressionAlgorithm::Brotli,
                                                 CompressionAlgorithm::Gzip};
};

enum class LogLevel { Trace, Debug, Info, Warn, Error };
enum class LogFormat { Json, Text };

struct LogSection {
    LogLevel level = LogLevel::Info;
    LogFormat format = LogFormat::Json;
    std::string error_log = "-";  // "-" = stderr
    std::string access_log;       // "" = off; "-" = stdout
};

struct Config {
    std::string file;  // the path it was read from
    ServerSection server;
    std::vector<Upstream> upstreams;  // sorted by name
    std::vector<Route> routes;        // file order: first match wins
    TlsSection tls;
    MetricsSection metrics;
    AdminSection admin;
    JwtAuth jwt;
    std::vector<RateLimit> rate_limits;  // sorted by name
    CacheSettings cache;
    CompressionSettings compression;
    LogSection log;
};

}  // namespace proxyd::config
