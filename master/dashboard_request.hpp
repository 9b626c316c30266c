// The small parsers the dashboard's login needs, apart from any socket so they can be tested:
// an application/x-www-form-urlencoded body, one cookie out of a Cookie header, the Origin check
// and the Set-Cookie values.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace proxyd::master {

inline constexpr std::string_view kSessionCookie = "proxyd_session";

// name -> value, percent- and '+'-decoded; the first of repeated names wins. A malformed escape
// is kept as written (the token compare then fails, which is the right answer).
std::map<std::string, std::string> parse_form(std::string_view body);
// The value of cookie `name` in a Cookie request header ("a=1; b=2"), if present.
std::optional<std::string> cookie_value(std::string_view header, std::string_view name);
// True when `origin` (an Origin header) is this listener as the browser addressed it: "http://"
// or "https://" followed by `host` (the Host header), compared case-insensitively.
bool same_origin(std::string_view origin, std::string_view host);
// Set-Cookie values: the session (HttpOnly, SameSite=Strict, Secure, Path=/) and its removal.
std::string session_cookie(std::string_view id);
std::string expired_session_cookie();

}  // namespace proxyd::master
