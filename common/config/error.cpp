#include "common/config/load.hpp"

namespace proxyd::config {

std::string ConfigError::format() const {
    std::string out = file;
    if (line > 0) {
        out += ':' + std::to_string(line) + ':' + std::to_string(column);
    }
    out += ": ";
    out += message;
    return out;
}

}  // namespace proxyd::config
