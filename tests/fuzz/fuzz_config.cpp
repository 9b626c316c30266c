// libFuzzer target: proxyd::config::load_string on the input as TOML. It must never crash or
// throw, and its result must keep its promises (common/config/load.hpp): a config only without
// errors, every error with a message and a sane place. "internal error: ..." is load_string's
// catch-all for an exception; under libFuzzer an allocation failure is reported by the malloc
// limit instead, so reaching it means some other exception escaped the parser: a bug.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/config/load.hpp"
#include "tests/fuzz/fuzz_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(bytes), size);
    const proxyd::config::LoadResult result = proxyd::config::load_string(text, "fuzz.toml");
    if (result.config) FUZZ_CHECK(result.errors.empty());
    if (!result.config) FUZZ_CHECK(!result.errors.empty());
    for (const proxyd::config::ConfigError& e : result.errors) {
        FUZZ_CHECK(!e.message.empty());
        FUZZ_CHECK(e.message.rfind("internal error:", 0) != 0);
        FUZZ_CHECK(e.line >= 0 && e.column >= 0);
        FUZZ_CHECK(e.file == "fuzz.toml");
        const std::string line = e.format();
        FUZZ_CHECK(line.rfind("fuzz.toml", 0) == 0);
    }
    return 0;
}
