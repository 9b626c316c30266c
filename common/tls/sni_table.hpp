// Server names to certificate contexts: exact names first, then a wildcard "*.example.com"
// covering exactly one more label (a.example.com, not a.b.example.com nor example.com), as in
// RFC 6125. Lookups ignore case and one trailing dot.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace proxyd::tls {

class SniTable {
  public:
    // `name` is a certificate name: "host.example.com" or "*.example.com". The first index added
    // for a name keeps it.
    void add(std::string_view name, std::size_t index);
    std::optional<std::size_t> find(std::string_view server_name) const;
    bool empty() const { return exact_.empty() && wildcard_.empty(); }

  private:
    std::unordered_map<std::string, std::size_t> exact_;
    std::unordered_map<std::string, std::size_t> wildcard_;  // keyed by the part after "*."
};

}  // namespace proxyd::tls
