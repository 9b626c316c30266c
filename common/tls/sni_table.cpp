// Server names are matched the way RFC 6125 §6.4.3 matches reference identifiers: the wildcard
// stands for exactly one whole left-most label, so it is stored keyed by the rest of the name
// and a lookup strips one label from the server name before consulting it.
#include "common/tls/sni_table.hpp"

namespace proxyd::tls {

namespace {

// DNS names compare case-insensitively and "host." is the same host as "host" (a client may
// send the fully qualified form). Only ASCII is folded: internationalized names travel as
// A-labels ("xn--..."), and locale-dependent folding would differ between machines.
std::string normalize(std::string_view name) {
    if (name.ends_with('.')) name.remove_suffix(1);
    std::string out(name);
    for (char& c : out) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    return out;
}

}  // namespace

void SniTable::add(std::string_view name, std::size_t index) {
    std::string key = normalize(name);
    if (key.starts_with("*.")) {
        key.erase(0, 2);
        // "*." alone would cover every single-label name: no certificate means that.
        if (!key.empty() && key.find('*') == std::string::npos) {
            wildcard_.try_emplace(std::move(key), index);
        }
        return;
    }
    // Any other '*' ("*", "f*.example.com", "a.*.com") is a partial or misplaced wildcard that
    // RFC 6125 leaves to each client and no host name contains: such a name matches nothing.
    if (!key.empty() && key.find('*') == std::string::npos) {
        exact_.try_emplace(std::move(key), index);
    }
}

std::optional<std::size_t> SniTable::find(std::string_view server_name) const {
    const std::string name = normalize(server_name);
    if (name.empty()) return std::nullopt;
    if (const auto it = exact_.find(name); it != exact_.end()) return it->second;

    // The wildcard's label must be non-empty (".example.com" is not a host under it) and what
    // follows must be a whole domain, so a name without a dot is never covered.
    const std::size_t dot = name.find('.');
    if (dot == std::string::npos || dot == 0 || dot + 1 == name.size()) return std::nullopt;
    if (const auto it = wildcard_.find(name.substr(dot + 1)); it != wildcard_.end()) {
        return it->second;
    }
    return std::nullopt;
}

}  // namespace proxyd::tls
