// The effective configuration as JSON, shaped like the TOML file (same sections and keys,
// durations as "5s" strings), for `GET /api/v1/config`. Secrets are never included: key and
// token material is left out, only the files they come from are named.
#pragma once

#include <nlohmann/json.hpp>

#include "common/config/types.hpp"

namespace proxyd::config {

nlohmann::json to_json(const Config& config);

}  // namespace proxyd::config
