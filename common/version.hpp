// The project version. It is set in one place, meson.build's project(), and compiled into
// version.cpp alone, so building another version recompiles one file.
#pragma once

namespace proxyd {

extern const char* const kVersion;

}  // namespace proxyd
