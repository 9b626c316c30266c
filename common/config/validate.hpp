// Internal to config/: the checks that need the whole Config at once (references between sections,
// duplicates across entries), run after every section has been read.
#pragma once

#include <vector>

#include "common/config/load.hpp"
#include "common/config/types.hpp"

namespace proxyd::config::detail {

// Appends one error per problem (FILE is config.file) and sets Route::upstream_index for every
// route whose upstream exists. Expects Config::upstreams sorted by name.
void validate(Config& config, std::vector<ConfigError>& errors);

}  // namespace proxyd::config::detail
