// What the request path needs from a verified JWT. Kept small and copyable: one of these is what
// the per-worker token cache stores for every token it remembers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace proxyd::worker {

struct VerifiedToken {
    std::int64_t expires_at = 0;  // unix seconds; 0 = no exp claim
    // From config.roles_claim: a JSON array of strings, or one space-separated string.
    std::vector<std::string> roles;
    // Aligned with config.forward_claims; "" = claim absent (then the header is not sent).
    // Strings as they are, arrays joined with ", ", numbers/bools as JSON text, objects as
    // compact JSON. Control characters (CR, LF, NUL...) are replaced by spaces: these become
    // header values.
    std::vector<std::string> forwarded_values;
    // Aligned with the `extra_claims` names given to JwtVerifier (rate-limit keys jwt:CLAIM),
    // same stringification.
    std::vector<std::string> extra_claims;
};

}  // namespace proxyd::worker
