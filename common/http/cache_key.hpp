// The text that names a cached response in the shared cache store.
//
//   key         = method SP host path [ "?" query ]          e.g. "GET example.com/a/b?x=1"
//   variant key = key *( LF vary-name ":" request-value )    e.g. "GET example.com/a\naccept:x"
//
// The host is lower-cased (host names are case-insensitive) and its port dropped: a route is
// chosen by host name, so "Example.com:8080" and "example.com" are the same resource to us. An
// IPv6 literal keeps its brackets ("[::1]:80" -> "[::1]"). The method is part of the key so that a
// HEAD response (no body) is never served for a GET.
//
// A response that varies (Vary) is stored under a variant key: one line per Vary name, in the
// order of the stored list, with the request's values for it joined by ", " (empty when absent).
// LF cannot appear in a method, host, target or field value the parser accepted, so the key's
// parts can be told apart again (cache_key_matches).
#pragma once

#include <string>
#include <string_view>

#include "common/http/parser.hpp"

namespace proxyd::http {

// Appends the base key. `host` is a Host value or authority ("Example.COM:8080", "[::1]:80").
void append_cache_key(std::string& out, std::string_view method, std::string_view host,
                      std::string_view path, std::string_view query);

// Appends the variant part for `vary_names`, the stored list of lower-case names separated by
// commas (worker::Storability::vary). Nothing is appended for an empty list.
void append_vary_suffix(std::string& out, std::string_view vary_names, const Request& request);

// The admin purge's filter: the key's target (path and query) starts with `path_prefix` and, when
// `host` is not empty, the key's host equals `host` case-insensitively (a port in `host` is
// ignored, as in the key). Any method; a variant key matches like its base key. A prefix without
// '?' therefore compares paths only; an empty prefix matches every key.
bool cache_key_matches(std::string_view key, std::string_view path_prefix, std::string_view host);

}  // namespace proxyd::http
