// W3C Trace Context (https://www.w3.org/TR/trace-context/): a client's valid `traceparent` goes
// upstream unchanged (proxyd records no spans of its own, so inserting one would leave a hole in
// the trace); an absent or invalid one is replaced by a new trace, sampled ("01") so services
// whose sampler follows the parent trace every request, as they would with no proxy in front.
// `tracestate` is forwarded as it came.
#pragma once

#include <string>
#include <string_view>

#include "worker/request_id.hpp"

namespace proxyd::worker {

// Version 00 exactly, or a later version's 00-compatible prefix; lower-case hex; trace-id and
// parent-id not all zeros; version ff refused.
bool is_valid_traceparent(std::string_view value);

// "00-<32 hex trace-id>-<16 hex parent-id>-01" from the worker's id generator.
void make_traceparent(RequestIdGenerator& ids, std::string& out);

}  // namespace proxyd::worker
