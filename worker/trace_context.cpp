#include "worker/trace_context.hpp"

namespace proxyd::worker {

namespace {

bool lower_hex(std::string_view text) {
    for (char c : text) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
}

bool all_zeros(std::string_view text) {
    return text.find_first_not_of('0') == std::string_view::npos;
}

}  // namespace

bool is_valid_traceparent(std::string_view value) {
    // version "-" trace-id "-" parent-id "-" flags = 2 + 1 + 32 + 1 + 16 + 1 + 2
    constexpr std::size_t kLength = 55;
    if (value.size() < kLength) return false;
    const std::string_view version = value.substr(0, 2);
    if (!lower_hex(version) || version == "ff") return false;
    if (version == "00" ? value.size() != kLength
                        : (value.size() > kLength && value[kLength] != '-')) {
        return false;
    }
    if (value[2] != '-' || value[35] != '-' || value[52] != '-') return false;
    const std::string_view trace_id = value.substr(3, 32);
    const std::string_view parent_id = value.substr(36, 16);
    const std::string_view flags = value.substr(53, 2);
    return lower_hex(trace_id) && lower_hex(parent_id) && lower_hex(flags) &&
           !all_zeros(trace_id) && !all_zeros(parent_id);
}

void make_traceparent(RequestIdGenerator& ids, std::string& out) {
    out.assign("00-");
    out.append(ids.next());
    out.push_back('-');
    out.append(ids.next().substr(0, 16));
    out.append("-01");
}

}  // namespace proxyd::worker
