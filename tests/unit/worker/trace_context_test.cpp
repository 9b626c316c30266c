#include "worker/trace_context.hpp"

#include <doctest.h>

#include <string>

using namespace proxyd::worker;

TEST_CASE("traceparent: valid version 00 values pass, malformed ones do not") {
    CHECK(is_valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    CHECK(is_valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
    // Upper case, wrong lengths, separators, all-zero ids, version ff.
    CHECK_FALSE(is_valid_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
    CHECK_FALSE(is_valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"));
    CHECK_FALSE(is_valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-"));
    CHECK_FALSE(is_valid_traceparent("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    CHECK_FALSE(is_valid_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
    CHECK_FALSE(is_valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"));
    CHECK_FALSE(is_valid_traceparent("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    CHECK_FALSE(is_valid_traceparent(""));
    // A later version may append fields after a dash.
    CHECK(is_valid_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz"));
    CHECK_FALSE(is_valid_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"));
}

TEST_CASE("traceparent: made ones are valid, sampled and distinct") {
    RequestIdGenerator ids(42);
    std::string a, b;
    make_traceparent(ids, a);
    make_traceparent(ids, b);
    CHECK(is_valid_traceparent(a));
    CHECK(is_valid_traceparent(b));
    CHECK(a.ends_with("-01"));
    CHECK(a.substr(3, 32) != b.substr(3, 32));
}
