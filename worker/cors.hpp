// Cross-origin resource sharing for routes with `cors = {...}` (config::Cors). Pure functions
// over a few request header values, appending "Name: value\r\n" lines to a reused string; the
// caller builds the response around them:
//
//   - a preflight (is_preflight) on a cors route is answered by the proxy: 204 plus
//     append_preflight_headers(), or 403 when that returns false; it never reaches the upstream;
//   - any other request with an Origin is proxied, and append_actual_headers() adds its lines to
//     the response head (nothing when the origin is not allowed).
//
// Origins (RFC 6454 serialisation, "scheme://host[:port]"):
//   - "*" in allowed_origins allows any well-formed origin; the opaque origin "null" only when
//     credentials are off (then the answer is a literal "*", which grants nothing private);
//   - an exact entry matches case-insensitively on scheme and host, and the port must be the same
//     (absent on both sides, or equal);
//   - a pattern "https://*.example.com[:port]" matches one or more DNS labels before
//     ".example.com", the same scheme and the same port (no port in the pattern = no port in the
//     origin, i.e. the scheme's default). "https://example.com" and "https://evil-example.com"
//     do not match it.
// Access-Control-Allow-Origin is a literal "*" only for allowed_origins = ["*"] without
// credentials; otherwise it echoes the request's origin and the answer carries "Vary: Origin".
#pragma once

#include <string>
#include <string_view>

#include "common/config/types.hpp"

namespace proxyd::worker {

// The request header values CORS looks at (empty = absent). Views into the parsed head.
struct CorsRequest {
    std::string_view method;
    std::string_view origin;           // Origin
    std::string_view request_method;   // Access-Control-Request-Method
    std::string_view request_headers;  // Access-Control-Request-Headers
};

// OPTIONS with an Origin and an Access-Control-Request-Method.
bool is_preflight(const CorsRequest& request);

// Whether `origin` is allowed by cors.allowed_origins (see the rules above). A malformed origin
// (path, userinfo, whitespace, bad port...) is never allowed.
bool origin_allowed(const config::Cors& cors, std::string_view origin);

// True when the CORS lines of a response depend on the request's Origin (everything but
// allowed_origins = ["*"] without credentials). Caches must then see "Vary: Origin", also on
// responses to requests whose origin got no CORS headers; the caller may add it there.
bool varies_by_origin(const config::Cors& cors);

// Lines for the 204 answer to a preflight: Allow-Origin, Vary, Allow-Credentials, Allow-Methods,
// Allow-Headers (the configured list, or the requested headers echoed when the list is empty),
// Max-Age (whole seconds, when >= 1 s). Returns false and appends nothing when the origin is not
// allowed, the requested method is not in allowed_methods, or the requested headers would be
// echoed but are not a valid token list: the proxy then answers 403.
bool append_preflight_headers(const config::Cors& cors, const CorsRequest& request,
                              std::string& out);

// Lines for a proxied response to a request carrying `origin`: Allow-Origin, Vary,
// Allow-Credentials, Expose-Headers. Returns false and appends nothing when there is no origin
// or it is not allowed.
bool append_actual_headers(const config::Cors& cors, std::string_view origin, std::string& out);

}  // namespace proxyd::worker
