// A runtime change of an upstream's servers (admin API) applied to a worker's own server list.
// Requests in flight hold positions in that list, so it only ever grows: a server that is gone
// is retired in place (never picked again, its pooled connections closed), a new one is
// appended, and one that stays keeps its position and takes the new weight, limits and drain.
#pragma once

#include <vector>

#include "common/config/types.hpp"

namespace proxyd::worker {

// `current` becomes `incoming` as described above. A server counts as the same one when its id,
// address and TLS settings are unchanged; a retired one that comes back is revived in place.
void merge_servers(std::vector<config::UpstreamServer>& current,
                   std::vector<config::UpstreamServer> incoming);

}  // namespace proxyd::worker
