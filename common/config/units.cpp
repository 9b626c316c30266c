#include "common/config/units.hpp"

#include <arpa/inet.h>

#include <cstring>
#include <limits>

#include "common/config/text.hpp"

namespace proxyd::config {

using detail::quote;

namespace {

struct Unit {
    std::string_view name;
    std::uint64_t factor;
};

constexpr Unit kDurationUnits[] = {{"ms", 1}, {"s", 1000}, {"m", 60'000}, {"h", 3'600'000}};
constexpr Unit kSizeUnits[] = {
    {"B", 1}, {"KiB", 1ULL << 10}, {"MiB", 1ULL << 20}, {"GiB", 1ULL << 30}, {"TiB", 1ULL << 40}};

struct Number {
    std::uint64_t value = 0;
    std::size_t digits = 0;  // how many leading characters were digits
    bool overflow = false;
};

Number leading_number(std::string_view text) {
    Number n;
    while (n.digits < text.size() && text[n.digits] >= '0' && text[n.digits] <= '9') {
        const auto digit = static_cast<std::uint64_t>(text[n.digits] - '0');
        if (__builtin_mul_overflow(n.value, 10, &n.value) ||
            __builtin_add_overflow(n.value, digit, &n.value)) {
            n.overflow = true;
        }
        ++n.digits;
    }
    return n;
}

template <std::size_t N>
const Unit* find_unit(const Unit (&units)[N], std::string_view name) {
    for (const Unit& u : units) {
        if (u.name == name) return &u;
    }
    return nullptr;
}

struct UnitSyntax {
    std::string_view kind;       // "duration", "size"
    std::string_view example;    // a valid value to show
    std::string_view unit_list;  // the units, for the message about an unknown one
    std::string missing_unit;    // the message for a number without a unit
};

// A number followed by a unit from `units`: the part both durations and sizes share. Returns the
// number times the unit's factor, or nullopt with `error` set.
template <std::size_t N>
std::optional<std::uint64_t> parse_with_unit(std::string_view text, const Unit (&units)[N],
                                             const UnitSyntax& syntax, std::string& error) {
    const std::string kind(syntax.kind);
    const std::string_view example = syntax.example;
    if (text.empty()) {
        error = "empty " + kind + "; write e.g. " + quote(example);
        return std::nullopt;
    }
    if (text[0] == '-') {
        error = kind + " must not be negative";
        return std::nullopt;
    }
    const Number n = leading_number(text);
    if (n.digits == 0) {
        error = "invalid " + kind + " " + quote(text) + "; write a number and a unit, e.g. " +
                quote(example);
        return std::nullopt;
    }
    const std::string_view unit_text = text.substr(n.digits);
    if (!unit_text.empty() && unit_text[0] == '.') {
        error = "invalid " + kind + " " + quote(text) + "; use a whole number with a smaller unit";
        return std::nullopt;
    }
    if (unit_text.empty()) {
        error = syntax.missing_unit;
        return std::nullopt;
    }
    const Unit* unit = find_unit(units, unit_text);
    if (unit == nullptr) {
        error = "unknown " + kind + " unit " + quote(unit_text) + " in " + quote(text) + "; use " +
                std::string(syntax.unit_list);
        return std::nullopt;
    }
    std::uint64_t result = 0;
    if (n.overflow || __builtin_mul_overflow(n.value, unit->factor, &result)) {
        error = kind + " " + quote(text) + " is too large";
        return std::nullopt;
    }
    return result;
}

}  // namespace

std::optional<Millis> parse_duration(std::string_view text, std::string& error) {
    error.clear();
    // A bare number is refused rather than guessed: "30" could mean seconds or milliseconds.
    const UnitSyntax syntax{"duration", "5s", "ms, s, m or h",
                            "duration needs a unit, e.g. " + quote(std::string(text) + "s")};
    const auto ms = parse_with_unit(text, kDurationUnits, syntax, error);
    if (!ms) return std::nullopt;
    if (*ms > static_cast<std::uint64_t>(std::numeric_limits<Millis::rep>::max())) {
        error = "duration " + quote(text) + " is too large";
        return std::nullopt;
    }
    return Millis{static_cast<Millis::rep>(*ms)};
}

std::optional<std::uint64_t> parse_size(std::string_view text, std::string& error) {
    error.clear();
    const UnitSyntax syntax{"size", "16KiB", "B, KiB, MiB, GiB or TiB",
                            "size " + quote(text) +
                                " needs a unit (B, KiB, MiB, GiB or TiB), or write it as a plain "
                                "integer of bytes"};
    return parse_with_unit(text, kSizeUnits, syntax, error);
}

namespace {

std::optional<std::uint16_t> parse_port(std::string_view port, std::string_view whole,
                                        std::string& error) {
    const Number n = leading_number(port);
    if (port.empty() || n.digits != port.size()) {
        error = "invalid port " + quote(port) + " in " + quote(whole);
        return std::nullopt;
    }
    if (n.overflow || n.value < 1 || n.value > 65535) {
        error = "port " + std::string(port) + " out of range in " + quote(whole) + " (1 to 65535)";
        return std::nullopt;
    }
    return static_cast<std::uint16_t>(n.value);
}

struct HostPort {
    std::string_view host;
    std::string_view port;
    bool bracketed = false;
};

std::optional<HostPort> split_host_port(std::string_view text, std::string& error) {
    HostPort hp;
    if (!text.empty() && text[0] == '[') {
        const auto close = text.find(']');
        if (close == std::string_view::npos) {
            error = "missing \"]\" in " + quote(text);
            return std::nullopt;
        }
        hp.host = text.substr(1, close - 1);
        hp.bracketed = true;
        const std::string_view rest = text.substr(close + 1);
        if (rest.empty() || rest[0] != ':') {
            error = "address " + quote(text) + " needs a port, e.g. \"[::1]:8080\"";
            return std::nullopt;
        }
        hp.port = rest.substr(1);
        return hp;
    }
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
        error =
            "address " + quote(text) + " needs a port, e.g. " + quote(std::string(text) + ":8080");
        return std::nullopt;
    }
    hp.host = text.substr(0, colon);
    hp.port = text.substr(colon + 1);
    if (hp.host.find(':') != std::string_view::npos) {
        error = "IPv6 address in " + quote(text) + " must be in brackets, e.g. \"[::1]:8080\"";
        return std::nullopt;
    }
    return hp;
}

}  // namespace

bool parse_socket_address(std::string_view text, SocketAddress& out, std::string& error) {
    error.clear();
    if (text.empty()) {
        error = "empty address; write e.g. \"0.0.0.0:8080\"";
        return false;
    }
    const auto hp = split_host_port(text, error);
    if (!hp) return false;
    const auto port = parse_port(hp->port, text, error);
    if (!port) return false;

    SocketAddress result;
    result.text = std::string(text);
    const std::string host(hp->bracketed || (hp->host != "*" && !hp->host.empty()) ? hp->host
                                                                                   : "0.0.0.0");
    if (hp->bracketed) {
        sockaddr_in6 sin6{};
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons(*port);
        if (inet_pton(AF_INET6, host.c_str(), &sin6.sin6_addr) != 1) {
            error = quote(host) + " is not a numeric IPv6 address";
            return false;
        }
        std::memcpy(&result.storage, &sin6, sizeof sin6);
        result.length = sizeof sin6;
    } else {
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_port = htons(*port);
        if (inet_pton(AF_INET, host.c_str(), &sin.sin_addr) != 1) {
            error = quote(host) + " is not a numeric IP address";
            return false;
        }
        std::memcpy(&result.storage, &sin, sizeof sin);
        result.length = sizeof sin;
    }
    result.loc = out.loc;  // the caller may have set the place already
    out = std::move(result);
    return true;
}

namespace {

// The address with every bit beyond `prefix_len` cleared; equal to `bytes` for a clean network.
void mask_host_bits(unsigned char* bytes, int total_bytes, int prefix_len) {
    for (int i = 0; i < total_bytes; ++i) {
        const int bits_left = prefix_len - i * 8;
        if (bits_left >= 8) continue;
        bytes[i] &= bits_left <= 0 ? 0 : static_cast<unsigned char>(0xff << (8 - bits_left));
    }
}

}  // namespace

bool parse_cidr(std::string_view text, Cidr& out, std::string& error) {
    error.clear();
    const auto slash = text.find('/');
    const std::string addr(text.substr(0, slash));
    Cidr result;
    result.text = std::string(text);
    if (inet_pton(AF_INET, addr.c_str(), result.bytes) == 1) {
        result.family = AF_INET;
    } else if (inet_pton(AF_INET6, addr.c_str(), result.bytes) == 1) {
        result.family = AF_INET6;
    } else {
        error = quote(addr) + " is not a numeric IP address (in " + quote(text) + ")";
        return false;
    }
    const int max_prefix = result.family == AF_INET ? 32 : 128;
    result.prefix_len = max_prefix;
    if (slash != std::string_view::npos) {
        const std::string_view prefix = text.substr(slash + 1);
        const Number n = leading_number(prefix);
        if (prefix.empty() || n.digits != prefix.size() || n.overflow ||
            n.value > static_cast<std::uint64_t>(max_prefix)) {
            error = "invalid prefix length " + quote(prefix) + " in " + quote(text) + " (0 to " +
                    std::to_string(max_prefix) + ")";
            return false;
        }
        result.prefix_len = static_cast<int>(n.value);
    }
    unsigned char network[16];
    std::memcpy(network, result.bytes, sizeof network);
    mask_host_bits(network, max_prefix / 8, result.prefix_len);
    if (std::memcmp(network, result.bytes, static_cast<std::size_t>(max_prefix / 8)) != 0) {
        // Almost always a typo for the network (or a host meant as /32): say which was meant.
        char buf[INET6_ADDRSTRLEN];
        inet_ntop(result.family, network, buf, sizeof buf);
        error = "host bits set in " + quote(text) + "; did you mean " +
                quote(std::string(buf) + "/" + std::to_string(result.prefix_len)) + "?";
        return false;
    }
    out = std::move(result);
    return true;
}

std::string format_duration(Millis value) {
    const auto ms = value.count();
    if (ms != 0 && ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
    if (ms != 0 && ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
    if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
    return std::to_string(ms) + "ms";
}

}  // namespace proxyd::config
