// Files for unit tests: the repository's test data, and temporary directories that a config and
// the files it names are written into (removed when the test case ends).
#pragma once

#include <doctest.h>
#include <stdlib.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace proxyd::testing {

inline std::string repo_file(const std::string& relative) {
    return std::string(PROXYD_SOURCE_DIR) + "/" + relative;
}

// tests/data/tls/NAME (see its README).
inline std::string tls_data(const std::string& name) {
    return repo_file("tests/data/tls/" + name);
}

inline std::string slurp(const std::string& path) {
    std::ifstream in(path);
    std::stringstream out;
    out << in.rdbuf();
    return out.str();
}

class TempDir {
  public:
    explicit TempDir(const std::string& prefix = "proxyd-test",
                     const std::string& parent = "/tmp") {
        std::string pattern = parent + "/" + prefix + "-XXXXXX";
        REQUIRE(::mkdtemp(pattern.data()) != nullptr);
        path = pattern;
    }
    ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    std::string file(const std::string& name) const { return path + "/" + name; }
    std::string write(const std::string& name, const std::string& content) {
        std::ofstream(file(name)) << content;
        return file(name);
    }
    // A copy of tests/data/tls/NAME in the directory, so relative paths can be tested.
    std::string copy_tls(const std::string& name) { return write(name, slurp(tls_data(name))); }

    std::string path;
};

}  // namespace proxyd::testing
