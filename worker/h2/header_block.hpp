// The name/value list nghttp2 sends as one response or trailer block, built from the owner's
// headers with what HTTP/2 forbids taken out: a field name with upper case is lower-cased (a
// client must treat it as malformed), connection-specific fields (Connection, Keep-Alive,
// Proxy-Connection, Transfer-Encoding, Upgrade, TE) are dropped, and so are pseudo-headers other
// than the :status the block starts with. An HTTP/1 upstream's head can thus be handed over as it
// is: one such field would make browsers fail the whole stream.
//
// The list points into the headers it was built from and into this object: use it before either
// changes (nghttp2 copies it when it is submitted).
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <string>
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
    void add(const std::string& name, const std::string& value);

    std::vector<nghttp2_nv> fields_;
    std::vector<std::string> lowered_;  // names that needed lower-casing; reserved, never moved
    char status_[4] = {};
};

}  // namespace proxyd::worker::h2
