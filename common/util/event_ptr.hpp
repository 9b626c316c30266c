// RAII owners for libevent objects: one owner each, borrowers take raw pointers.
#pragma once

#include <event2/buffer.h>
#include <event2/event.h>

#include <memory>

namespace proxyd {

template <auto Fn>
struct CDeleter {
    void operator()(auto* p) const noexcept { Fn(p); }
};

using EventBasePtr = std::unique_ptr<event_base, CDeleter<&event_base_free>>;
using EventPtr = std::unique_ptr<event, CDeleter<&event_free>>;
using EvbufferPtr = std::unique_ptr<evbuffer, CDeleter<&evbuffer_free>>;

inline EvbufferPtr make_evbuffer() {
    return EvbufferPtr(evbuffer_new());
}

}  // namespace proxyd
