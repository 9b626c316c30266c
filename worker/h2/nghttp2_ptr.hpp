// Owners for nghttp2 objects: every session, option set and callback table the project holds is
// one of these, so no early return can leak one.
#pragma once

#include <nghttp2/nghttp2.h>

#include <memory>

#include "common/util/event_ptr.hpp"

namespace proxyd::worker::h2 {

using SessionPtr = std::unique_ptr<nghttp2_session, CDeleter<&nghttp2_session_del>>;
using OptionPtr = std::unique_ptr<nghttp2_option, CDeleter<&nghttp2_option_del>>;
using CallbacksPtr =
    std::unique_ptr<nghttp2_session_callbacks, CDeleter<&nghttp2_session_callbacks_del>>;

}  // namespace proxyd::worker::h2
