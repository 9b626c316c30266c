// The name/value list nghttp2 sends as one response or trailer block, built from the owner's
// headers with what HTTP/2 forbids taken out: connection-specific fields (Connection, Keep-Alive,
// Proxy-Connection, Transfer-Encoding, Upgrade, TE; RFC 9113 8.2.2) and pseudo-headers other than
// the :status the block starts with. An HTTP/1 upstream's head can thus be handed over as it is:
// one such field would make browsers fail the whole stream. Names need not be lower case:
// nghttp2 lower-cases them when it copies the list at submission.
//
// The list points into the headers it was built from and into this object: submit it before
// either changes.
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <vector>

#include "worker/h2/types.hpp"

namespace proxyd::worker::h2 {

class HeaderBlock {
  public:
    // A response head: ":status" then `headers`.
    void build_response(int status, const std::vector<Header>& headers);
    // A trailer block: `headers` only.
    void build_trailers(const std::vector<Header>& headers);

    const nghttp2_nv* data() const { return fields_.data(); }
    std::size_t size() const { return fields_.size(); }

  private:
    void add_fields(const std::vector<Header>& headers);

    std::vector<nghttp2_nv> fields_;
    char status_[4] = {};
};

}  // namespace proxyd::worker::h2
