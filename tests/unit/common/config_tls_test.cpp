// The TLS parts of the config: [tls] (listeners, certificates read and validated, handshake
// settings) and the TLS keys of upstream servers (tls, sni, verify, ca_file). Certificates come
// from tests/data/tls (see its README).
#include <doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "common/config/load.hpp"
#include "common/config/units.hpp"
#include "tests/unit/test_files.hpp"

using namespace proxyd::config;
using namespace std::chrono_literals;

namespace {

using proxyd::testing::slurp;
std::string data(const std::string& name) {
    return proxyd::testing::tls_data(name);
}

// A temporary directory holding the config and the files it names, removed at the end.
struct ConfigDir : proxyd::testing::TempDir {
    ConfigDir() : proxyd::testing::TempDir("proxyd-config-tls") {}
    std::string copy(const std::string& name) { return copy_tls(name); }
    LoadResult load(std::string_view text) {
        if (!text.empty() && text.front() == '\n') text.remove_prefix(1);
        return load_string(text, path + "/test.toml");
    }
    // Every error as "LINE:COLUMN: message\n", the directory written as "DIR".
    std::string errors(const std::string& text) {
        const LoadResult result = load(text);
        CHECK_FALSE(result.config.has_value());
        std::string out;
        for (const ConfigError& e : result.errors) {
            std::string line =
                e.format().substr(path.size() + 1 + std::string_view("test.toml:").size());
            for (auto at = line.find(path); at != std::string::npos; at = line.find(path)) {
                line.replace(at, path.size(), "DIR");
            }
            out += line + "\n";
        }
        return out;
    }
};

// Lines 1-4; what is appended starts on line 5.
const std::string kBase = R"([server]
listen = ["127.0.0.1:8080"]
[upstreams.app]
servers = [{ address = "127.0.0.1:1" }]
)";

// Lines 5-7: a valid [tls] head; what is appended starts on line 8.
std::string tls_head() {
    return kBase + "[tls]\nlisten = [\"127.0.0.1:8443\"]\ncertificates = [ { cert = \"" +
           data("a.test.crt") + "\", key = \"" + data("a.test.key") + "\" } ]\n";
}

}  // namespace

TEST_CASE("tls: every key is read; files are resolved against the config and loaded") {
    ConfigDir dir;
    dir.copy("a.test.crt");
    dir.copy("a.test.key");
    const LoadResult result = dir.load(kBase + R"([tls]
listen = ["127.0.0.1:8443", "[::1]:8443"]
certificates = [
  { cert = "a.test.crt", key = "a.test.key" },
  { cert = ")" + data("b.test.crt") + R"(", key = ")" +
                                       data("b.test.key") + R"(" },
]
alpn = ["h2", "http/1.1"]
session_tickets = false
session_ticket_rotation = "30m"
hsts = "max-age=31536000; includeSubDomains; preload"
min_version = "1.3"
ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE+AESGCM:!aNULL:@STRENGTH"
watch = true
)");
    for (const ConfigError& e : result.errors) INFO(e.format());
    REQUIRE(result.config.has_value());
    const TlsSection& tls = result.config->tls;
    CHECK(tls.enabled);
    CHECK(tls.loc.line == 5);
    REQUIRE(tls.listen.size() == 2);
    CHECK(tls.listen[0].text == "127.0.0.1:8443");
    CHECK(tls.listen[1].text == "[::1]:8443");
    CHECK(tls.listen[1].loc.line == 6);
    CHECK(tls.listen[1].loc.column == 29);
    REQUIRE(tls.certificates.size() == 2);
    const TlsCertificate& a = tls.certificates[0];
    CHECK(a.cert_file == dir.path + "/a.test.crt");
    CHECK(a.key_file == dir.path + "/a.test.key");
    CHECK(a.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    CHECK(a.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    CHECK(a.loc.line == 8);
    CHECK(a.loc.column == 3);
    CHECK(tls.certificates[1].cert_file == data("b.test.crt"));
    CHECK(tls.certificates[1].loc.line == 9);
    CHECK(tls.alpn == std::vector<std::string>{"h2", "http/1.1"});
    CHECK_FALSE(tls.session_tickets);
    CHECK(tls.session_ticket_rotation == 30min);
    CHECK(tls.hsts == "max-age=31536000; includeSubDomains; preload");
    CHECK(tls.min_version == 13);
    CHECK(tls.ciphers == "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE+AESGCM:!aNULL:@STRENGTH");
    CHECK(tls.watch);
}

TEST_CASE("tls: defaults, and no [tls] means no TLS") {
    ConfigDir dir;
    const LoadResult result = dir.load(tls_head());
    for (const ConfigError& e : result.errors) INFO(e.format());
    REQUIRE(result.config.has_value());
    const TlsSection& tls = result.config->tls;
    CHECK(tls.enabled);
    CHECK(tls.alpn == std::vector<std::string>{"http/1.1"});
    CHECK(tls.session_tickets);
    CHECK(tls.session_ticket_rotation == 1h);
    CHECK(tls.hsts.empty());
    CHECK(tls.min_version == 12);
    CHECK(tls.ciphers.empty());
    CHECK_FALSE(tls.watch);

    const LoadResult plain = dir.load(kBase);
    REQUIRE(plain.config.has_value());
    CHECK_FALSE(plain.config->tls.enabled);
    CHECK(plain.config->tls.listen.empty());
}

TEST_CASE("tls: a bad value of every key is reported at its place") {
    ConfigDir dir;
    CHECK(dir.errors(tls_head() + R"(alpn = ["h2", "http/2", "h2"]
session_tickets = "yes"
session_ticket_rotation = "30s"
hsts = "max-age=1y"
min_version = "1.1"
ciphers = "HIGH:ECDHE-RSA-AES128-GCM-SHA265:TLS_AES_128_GCM_SHA256"
watch = 1
sesion_tickets = true
)") == "8:15: unknown ALPN protocol \"http/2\"; expected \"h2\" or \"http/1.1\"\n"
       "8:25: duplicate ALPN protocol \"h2\"\n"
       "9:19: expected a boolean for \"session_tickets\", got string\n"
       "10:27: \"session_ticket_rotation\" must be at least \"1m\"\n"
       "11:8: \"hsts\" value \"max-age=1y\" is not a Strict-Transport-Security value: "
       "max-age must be a whole number of seconds, got \"1y\" (e.g. \"max-age=31536000; "
       "includeSubDomains\")\n"
       "12:15: min_version \"1.1\": TLS below 1.2 is not supported; use \"1.2\" or \"1.3\"\n"
       "13:11: \"ciphers\": \"ECDHE-RSA-AES128-GCM-SHA265\" matches no cipher this OpenSSL "
       "supports\n"
       "13:11: \"ciphers\": \"TLS_AES_128_GCM_SHA256\" is a TLS 1.3 cipher suite; \"ciphers\" "
       "is the TLS 1.2 list (TLS 1.3 suites are not configurable)\n"
       "14:9: expected a boolean for \"watch\", got integer\n"
       "15:1: unknown key \"sesion_tickets\" in [tls]; did you mean \"session_tickets\"?\n");
}

TEST_CASE("tls: more value rules") {
    ConfigDir dir;
    const auto one = [&](const std::string& line) { return dir.errors(tls_head() + line); };
    CHECK(one("alpn = []\n") ==
          "8:8: \"alpn\" must list at least one protocol: \"h2\", \"http/1.1\"\n");
    CHECK(dir.load(tls_head() + "alpn = [\"h2\"]\n").config->tls.alpn ==
          std::vector<std::string>{"h2"});
    CHECK(one("alpn = [\"http/1.0\"]\n") ==
          "8:9: unknown ALPN protocol \"http/1.0\"; expected \"h2\" or \"http/1.1\"; did you "
          "mean \"http/1.1\"?\n");
    CHECK(one("session_ticket_rotation = \"0s\"\n") ==
          "8:27: \"session_ticket_rotation\" must be greater than 0\n");
    CHECK(one("session_ticket_rotation = 60\n") ==
          "8:27: \"session_ticket_rotation\": duration needs a unit, e.g. \"60s\"\n");
    CHECK(one("session_ticket_rotation = \"85h\"\n") ==
          "8:27: \"session_ticket_rotation\" must be at most \"84h\": a ticket stays valid for "
          "two periods, and TLS 1.3 allows at most 7 days\n");
    CHECK(one("hsts = \"\"\n") ==
          "8:8: \"hsts\" must not be empty; leave it out to send no Strict-Transport-Security\n");
    const auto hsts = [&](const std::string& value) { return one("hsts = \"" + value + "\"\n"); };
    const std::string hsts_tail = " (e.g. \"max-age=31536000; includeSubDomains\")\n";
    CHECK(hsts("includeSubDomains") ==
          "8:8: \"hsts\" value \"includeSubDomains\" is not a Strict-Transport-Security "
          "value: it must start with \"max-age=SECONDS\"" +
              hsts_tail);
    CHECK(hsts("max-age=60; includeSubdomain") ==
          "8:8: \"hsts\" value \"max-age=60; includeSubdomain\" is not a "
          "Strict-Transport-Security value: unknown directive \"includeSubdomain\"; expected "
          "\"includeSubDomains\" or \"preload\"; did you mean \"includeSubDomains\"?" +
              hsts_tail);
    CHECK(hsts("max-age=60; preload; preload").find("value: \"preload\" is repeated (") !=
          std::string::npos);
    CHECK(hsts("max-age=60;").find("value: empty directive (a stray \";\") (") !=
          std::string::npos);
    CHECK(hsts("max-age=12345678901").find("value: max-age 12345678901 is too large (") !=
          std::string::npos);
    CHECK(one("min_version = \"1.0\"\n") ==
          "8:15: min_version \"1.0\": TLS below 1.2 is not supported; use \"1.2\" or \"1.3\"\n");
    CHECK(one("min_version = \"1.4\"\n") ==
          "8:15: unknown min_version \"1.4\"; expected one of: 1.2, 1.3\n");
    CHECK(one("min_version = 1.2\n") ==
          "8:15: expected a string (\"1.2\" or \"1.3\") for \"min_version\", got float\n");
    CHECK(one("ciphers = \"\"\n") == "8:11: \"ciphers\" must not be empty\n");
    CHECK(one("ciphers = \"!aNULL:!eNULL\"\n") ==
          "8:11: \"ciphers\": OpenSSL selects no cipher from \"!aNULL:!eNULL\"\n");

    // Accepted forms.
    for (const char* ok : {"hsts = \"max-age=0\"\n", "hsts = \"Max-Age=600 ;INCLUDESUBDOMAINS\"\n",
                           "ciphers = \"HIGH, !aNULL\"\n", "session_ticket_rotation = \"1m\"\n",
                           "session_ticket_rotation = \"84h\"\n", "alpn = [\"http/1.1\"]\n"}) {
        const LoadResult result = dir.load(tls_head() + ok);
        INFO(ok);
        for (const ConfigError& e : result.errors) INFO(e.format());
        CHECK(result.errors.empty());
    }
}

TEST_CASE("tls: listen and certificates are required; entries are checked") {
    ConfigDir dir;
    CHECK(dir.errors(kBase + "[tls]\nalpn = [\"http/1.1\"]\n") ==
          "5:1: missing required key \"listen\" in [tls]\n"
          "5:1: missing required key \"certificates\" in [tls]\n");
    CHECK(dir.errors(kBase + "[tls]\nlisten = []\ncertificates = []\n") ==
          "6:10: \"listen\" needs at least one address, e.g. [\"0.0.0.0:8080\"]\n"
          "7:16: \"certificates\" must list at least one { cert = \"...\", key = \"...\" }\n");
    CHECK(dir.errors(kBase + R"([tls]
listen = ["127.0.0.1"]
certificates = [ "a.crt", { cert = "", crt = "x" } ]
)") == "6:11: \"listen\": address \"127.0.0.1\" needs a port, e.g. \"127.0.0.1:8080\"\n"
       "7:18: expected a table like { cert = \"site.crt\", key = \"site.key\" } for "
       "\"certificates\", got string\n"
       "7:27: missing required key \"key\" in a [tls] certificate\n"
       "7:36: \"cert\" must not be empty\n"
       "7:40: unknown key \"crt\" in a [tls] certificate; did you mean \"cert\"?\n");
    CHECK(dir.errors("tls = 1\n" + kBase) == "1:7: expected a table for \"tls\", got integer\n");
}

TEST_CASE("tls: certificate files that cannot be read, or do not make a valid pair") {
    ConfigDir dir;
    dir.copy("a.test.crt");
    dir.copy("b.test.key");
    dir.write("empty.crt", "");
    dir.write("junk.crt", "not a certificate\n");
    dir.write("big.crt", std::string(5 * 1024 * 1024, 'x'));
    const std::string errors = dir.errors(kBase + R"([tls]
listen = ["127.0.0.1:8443"]
certificates = [
  { cert = "missing.crt", key = "missing.key" },
  { cert = "a.test.crt", key = "b.test.key" },
  { cert = "empty.crt", key = "b.test.key" },
  { cert = "junk.crt", key = "b.test.key" },
  { cert = "b.test.key", key = "b.test.key" },
  { cert = "big.crt", key = "/" },
]
)");
    CHECK(errors ==
          "8:12: cannot read \"cert\" \"DIR/missing.crt\": No such file or directory\n"
          "8:33: cannot read \"key\" \"DIR/missing.key\": No such file or directory\n"
          "9:3: certificate \"DIR/a.test.crt\": certificate does not match its key\n"
          "10:12: cannot read \"cert\" \"DIR/empty.crt\": the file is empty\n"
          "11:3: certificate \"DIR/junk.crt\": no PEM certificate found\n"
          "12:3: certificate \"DIR/b.test.key\": no PEM certificate found\n"
          "13:12: cannot read \"cert\" \"DIR/big.crt\": larger than 4 MiB; is this the right "
          "file?\n"
          "13:29: cannot read \"key\" \"/\": not a regular file\n");
    // Key material never shows in a message.
    const std::string key = slurp(data("b.test.key"));
    const std::string key_line = key.substr(key.find('\n') + 1, 40);
    CHECK(errors.find(key_line) == std::string::npos);
}

TEST_CASE("tls: a TLS port may not also be a plain port, nor listed twice") {
    ConfigDir dir;
    const std::string cert = "certificates = [ { cert = \"" + data("a.test.crt") + "\", key = \"" +
                             data("a.test.key") + "\" } ]\n";
    CHECK(dir.errors(R"([server]
listen = ["127.0.0.1:8080", "0.0.0.0:9000", "[::]:7000"]
[tls]
listen = ["127.0.0.1:8080", "127.0.0.1:8443", "*:8443", "10.0.0.1:9000", "0.0.0.0:7000"]
)" + cert) ==
          "4:11: [tls] listen address \"127.0.0.1:8080\" clashes with [server] listen "
          "address \"127.0.0.1:8080\" (line 2, column 11); one port cannot serve both "
          "plain HTTP and TLS\n"
          "4:57: [tls] listen address \"10.0.0.1:9000\" clashes with [server] listen "
          "address \"0.0.0.0:9000\" (line 2, column 29); one port cannot serve both plain "
          "HTTP and TLS\n");
    // Only an exact repeat is a duplicate (as for [server] listen); "*:8443" above binds
    // 0.0.0.0 and is not one.
    CHECK(dir.errors(R"([server]
listen = ["127.0.0.1:8080"]
[tls]
listen = ["0.0.0.0:8443", "*:8443"]
)" + cert) == "4:27: duplicate listen address \"*:8443\"\n");
}

TEST_CASE("upstream servers over TLS: tls, sni, verify, ca_file") {
    ConfigDir dir;
    dir.copy("ca.crt");
    // A bundle beyond the 64 KiB that key files are held to.
    std::string bundle;
    while (bundle.size() < 100 * 1024) bundle += slurp(data("ca.crt"));
    dir.write("bundle.pem", bundle);
    const LoadResult result = dir.load(R"([server]
listen = ["127.0.0.1:8080"]
[upstreams.app]
servers = [
  { address = "127.0.0.1:1", tls = true, sni = "api.internal", ca_file = "ca.crt" },
  { address = "127.0.0.1:2", tls = true, verify = false },
  { address = "api.internal:443", tls = true, ca_file = "bundle.pem" },
  { address = "127.0.0.1:3", tls = false },
  { address = "127.0.0.1:4" },
]
)");
    for (const ConfigError& e : result.errors) INFO(e.format());
    REQUIRE(result.config.has_value());
    const auto& servers = result.config->upstreams[0].servers;
    REQUIRE(servers.size() == 5);
    CHECK(servers[0].tls);
    CHECK(servers[0].sni == "api.internal");
    CHECK(servers[0].verify);
    CHECK(servers[0].ca_file == dir.path + "/ca.crt");
    CHECK(servers[0].ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    CHECK(servers[1].tls);
    CHECK_FALSE(servers[1].verify);
    CHECK(servers[1].ca_file.empty());
    CHECK(servers[1].ca_pem.empty());
    CHECK(servers[2].tls);
    CHECK(servers[2].sni.empty());  // the worker uses the host name
    CHECK(servers[2].ca_pem.size() > 64 * 1024);
    CHECK_FALSE(servers[3].tls);
    CHECK_FALSE(servers[4].tls);
    CHECK(servers[4].verify);
}

TEST_CASE("upstream servers over TLS: every mistake is reported at its place") {
    ConfigDir dir;
    dir.write("not-pem.txt", "hello\n");
    CHECK(dir.errors(R"([server]
listen = ["127.0.0.1:8080"]
[upstreams.app]
servers = [
  { address = "127.0.0.1:1", sni = "a.test", verify = true },
  { address = "127.0.0.1:2", tls = false, ca_file = "ca.pem" },
  { address = "127.0.0.1:3", tls = true, ca_file = "missing.pem" },
  { address = "127.0.0.1:4", tls = true, ca_file = "not-pem.txt" },
  { address = "127.0.0.1:5", tls = true, sni = "10.0.0.1" },
  { address = "127.0.0.1:6", tls = true, sni = "a_b.test" },
  { address = "127.0.0.1:7", tls = true, sni = "" },
  { address = "127.0.0.1:8", tls = true, verify = false, ca_file = "not-pem.txt" },
  { address = "127.0.0.1:9", tls = "yes", sni = "a.test" },
  { address = "127.0.0.1:10", tls = true, verfy = false },
]
)") == "5:36: \"sni\" only applies to a server with tls = true\n"
       "5:55: \"verify\" only applies to a server with tls = true\n"
       "6:53: \"ca_file\" only applies to a server with tls = true\n"
       "7:52: cannot read \"ca_file\" \"DIR/missing.pem\": No such file or directory\n"
       "8:52: \"ca_file\" \"DIR/not-pem.txt\" is not a PEM CA bundle: no PEM certificate found\n"
       "9:48: \"sni\" must be a host name, not an IP address, got \"10.0.0.1\"\n"
       "10:48: \"sni\": invalid host name \"a_b.test\": \"_\" is not allowed (use letters, "
       "digits, \"-\" and \".\")\n"
       "11:48: \"sni\" must not be empty\n"
       "12:68: \"ca_file\" \"DIR/not-pem.txt\" is not a PEM CA bundle: no PEM certificate "
       "found\n"
       "13:36: expected a boolean for \"tls\", got string\n"
       "14:43: unknown key \"verfy\" in a server of [upstreams.app]; did you mean "
       "\"verify\"?\n");
}

TEST_CASE("config tls: server.user and server.group are resolved when the config is loaded") {
    ConfigDir dir;
    // [server] is already open in kBase: insert the keys after its listen line.
    auto with = [](const std::string& keys) {
        std::string text = kBase;
        text.insert(text.find("[upstreams.app]"), keys);
        return text;
    };
    auto ok = dir.load(with("user = \"root\"\ngroup = \"root\"\n"));
    const std::string first_error = ok.errors.empty() ? "" : ok.errors[0].format();
    REQUIRE_MESSAGE(ok.config.has_value(), first_error);
    CHECK(ok.config->server.user == "root");
    CHECK(ok.config->server.uid == 0);
    CHECK(ok.config->server.gid == 0);
    auto nobody = dir.load(with("user = \"nobody\"\n"));
    REQUIRE(nobody.config.has_value());
    CHECK(nobody.config->server.uid != 0);  // and gid is nobody's own group
    CHECK(dir.errors(with("user = \"no-such-user-here\"\n")) ==
          "3:8: unknown user \"no-such-user-here\"\n");
    CHECK(dir.errors(with("user = \"root\"\ngroup = \"no-such-group-here\"\n")) ==
          "4:9: unknown group \"no-such-group-here\"\n");
    CHECK(dir.errors(with("group = \"root\"\n")) == "3:9: \"group\" needs \"user\"\n");
}

TEST_CASE("config to_json: durations in the largest unit that divides them") {
    using proxyd::config::format_duration;
    using proxyd::config::Millis;
    CHECK(format_duration(Millis{250}) == "250ms");
    CHECK(format_duration(Millis{5000}) == "5s");
    CHECK(format_duration(Millis{90'000}) == "90s");
    CHECK(format_duration(Millis{120'000}) == "2m");
    CHECK(format_duration(Millis{3'600'000}) == "1h");
    CHECK(format_duration(Millis{0}) == "0s");
}
