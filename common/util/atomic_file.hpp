// Replacing a file so that a crash or a reader at any moment sees either the old content or the
// new one, never a part: written to a temporary file beside it, synced, renamed over it.
#pragma once

#include <string>
#include <string_view>

namespace proxyd {

// The file keeps its permission bits when it exists; a new one gets `new_mode`.
bool write_file_atomically(const std::string& path, std::string_view data, std::string& error,
                           unsigned new_mode = 0644);

}  // namespace proxyd
