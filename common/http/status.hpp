// Status lines and the proxy's own error responses (CONTRACT.md "Errors the proxy itself
// produces"): one place maps a status to its reason phrase and to the JSON error text.
#pragma once

#include <string_view>

namespace proxyd::http {

std::string_view reason_phrase(int status);
// The "error" text of the JSON body the proxy sends with `status`.
std::string_view error_text(int status);

}  // namespace proxyd::http
