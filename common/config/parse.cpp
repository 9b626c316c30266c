// Entry points: TOML syntax first (one error, toml++ stops there), then every section read with all
// of its errors collected, then the whole-config checks; errors come out in file order.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <system_error>
#include <tuple>

#include "common/config/load.hpp"
#include "common/config/reader.hpp"
#include "common/config/secret_file.hpp"
#include "common/config/text.hpp"
#include "common/config/units.hpp"
#include "common/config/validate.hpp"

namespace proxyd::config {

namespace {

using detail::Reader;

constexpr std::string_view kTopKeys[] = {"server",  "upstreams",   "routes", "tls",
                                         "auth",    "rate_limits", "cache",  "compression",
                                         "metrics", "admin",       "log"};
constexpr std::string_view kAdminKeys[] = {"listen", "token_file"};
constexpr std::string_view kMetricsKeys[] = {"listen", "path"};
constexpr std::string_view kLogKeys[] = {"level", "format", "error_log", "access_log"};
constexpr std::string_view kLevels[] = {"trace", "debug", "info", "warn", "error"};
constexpr std::string_view kFormats[] = {"json", "text"};

// Bigger than any sane config; stops `-c /dev/zero` from eating memory.
constexpr std::size_t kMaxFileSize = 16 * 1024 * 1024;

LogLevel to_level(std::string_view name) {
    if (name == "trace") return LogLevel::Trace;
    if (name == "debug") return LogLevel::Debug;
    if (name == "warn") return LogLevel::Warn;
    if (name == "error") return LogLevel::Error;
    return LogLevel::Info;
}

void parse_log(Reader& r, const toml::node& node, LogSection& out) {
    const toml::table* log = r.table(node, "log");
    if (log == nullptr) return;
    r.check_keys(*log, "in [log]", kLogKeys);
    if (const toml::node* n = log->get("level")) {
        if (const auto level = r.choice(*n, "level", kLevels)) out.level = to_level(*level);
    }
    if (const toml::node* n = log->get("format")) {
        if (const auto format = r.choice(*n, "format", kFormats)) {
            out.format = *format == "text" ? LogFormat::Text : LogFormat::Json;
        }
    }
    if (const toml::node* n = log->get("error_log")) {
        // "" would silently lose every error message; stderr must be asked for as "-".
        if (auto path = r.nonempty_string(*n, "error_log")) out.error_log = std::move(*path);
    }
    r.read(*log, "access_log", out.access_log);
}

void parse_address(Reader& r, const toml::table& table, std::string_view where, SocketAddress& out);

void parse_metrics(Reader& r, const toml::node& node, MetricsSection& out) {
    const toml::table* metrics = r.table(node, "metrics");
    if (metrics == nullptr) return;
    out.enabled = true;
    r.check_keys(*metrics, "in [metrics]", kMetricsKeys);
    parse_address(r, *metrics, "in [metrics]", out.listen);
    if (const toml::node* n = metrics->get("path")) {
        if (auto path = r.nonempty_string(*n, "path")) {
            if (path->front() != '/' || path->find_first_of("?# ") != std::string::npos) {
                r.error(*n, "\"path\" must start with \"/\" and hold no query, got " +
                                detail::quote(*path));
            } else if (*path == "/healthz" || *path == "/readyz") {
                r.error(*n, "\"path\" " + detail::quote(*path) +
                                " is taken by the health endpoint of the same name");
            } else {
                out.path = std::move(*path);
            }
        }
    }
}

// One "host:port" string of `table` (required), for the master's own listeners.
void parse_address(Reader& r, const toml::table& table, std::string_view where,
                   SocketAddress& out) {
    if (!r.require(table, "listen", where)) return;
    const toml::node& listen = *table.get("listen");
    if (auto text = r.nonempty_string(listen, "listen")) {
        std::string error;
        if (!parse_socket_address(*text, out, error)) r.error(listen, error);
        out.loc = detail::loc_of(listen);
    }
}

void parse_admin(Reader& r, const toml::node& node, AdminSection& out) {
    const toml::table* admin = r.table(node, "admin");
    if (admin == nullptr) return;
    out.enabled = true;
    r.check_keys(*admin, "in [admin]", kAdminKeys);
    parse_address(r, *admin, "in [admin]", out.listen);
    if (!r.require(*admin, "token_file", "in [admin]")) return;
    const toml::node& node_file = *admin->get("token_file");
    auto path = r.nonempty_string(node_file, "token_file");
    if (!path) return;
    out.token_file = detail::resolve_config_path(r.file(), *path);
    std::string error;
    if (!detail::read_secret_file(out.token_file, out.token, error)) {
        r.error(node_file,
                "cannot read \"token_file\" " + detail::quote(out.token_file) + ": " + error);
    } else if (out.token.size() < 16) {
        // A short token can be guessed over the network: refuse it rather than be "secured".
        r.error(node_file, "the admin token in " + detail::quote(out.token_file) +
                               " is shorter than 16 characters");
        out.token.clear();
    }
}

void parse_document(Reader& r, const toml::table& root, Config& config) {
    r.check_keys(root, "at the top level", kTopKeys);
    if (const toml::node* server = root.get("server")) {
        detail::parse_server(r, *server, config.server);
    } else {
        r.error(SourceLoc{}, "missing required table [server] (with \"listen\")");
    }
    if (const toml::node* n = root.get("upstreams"))
        detail::parse_upstreams(r, *n, config.upstreams);
    if (const toml::node* n = root.get("routes")) detail::parse_routes(r, *n, config.routes);
    if (const toml::node* n = root.get("tls")) detail::parse_tls(r, *n, config.tls);
    if (const toml::node* n = root.get("auth")) detail::parse_auth(r, *n, config.jwt);
    if (const toml::node* n = root.get("rate_limits")) {
        detail::parse_rate_limits(r, *n, config.rate_limits);
    }
    if (const toml::node* n = root.get("cache")) detail::parse_cache(r, *n, config.cache);
    if (const toml::node* n = root.get("compression")) {
        detail::parse_compression(r, *n, config.compression);
    }
    if (const toml::node* n = root.get("metrics")) parse_metrics(r, *n, config.metrics);
    if (const toml::node* n = root.get("admin")) parse_admin(r, *n, config.admin);
    if (const toml::node* n = root.get("log")) parse_log(r, *n, config.log);
}

LoadResult finish(Config config, std::vector<ConfigError> errors) {
    std::stable_sort(errors.begin(), errors.end(), [](const ConfigError& a, const ConfigError& b) {
        return std::tie(a.line, a.column) < std::tie(b.line, b.column);
    });
    LoadResult result;
    if (errors.empty()) result.config = std::move(config);
    result.errors = std::move(errors);
    return result;
}

LoadResult load(std::string_view text, const std::string& source_name,
                const std::function<void(toml::table&)>* edit) {
    toml::table root;
    try {
        root = toml::parse(text, std::string_view(source_name));
    } catch (const toml::parse_error& e) {
        const auto& begin = e.source().begin;
        Config empty;  // a named object: GCC 12 -O3 misreads a temporary here (maybe-uninitialized)
        return finish(std::move(empty),
                      {ConfigError{source_name, static_cast<int>(begin.line),
                                   static_cast<int>(begin.column), std::string(e.description())}});
    }
    if (edit != nullptr) (*edit)(root);
    Config config;
    config.file = source_name;
    Reader reader(source_name);
    parse_document(reader, root, config);
    detail::validate(config, reader.errors());
    return finish(std::move(config), std::move(reader.errors()));
}

LoadResult single_error(const std::string& file, std::string message) {
    LoadResult result;
    result.errors.push_back(ConfigError{file, 0, 0, std::move(message)});
    return result;
}

}  // namespace

std::optional<std::string> read_config_text(const std::string& path, std::string& error) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        error = std::generic_category().message(errno);
        return std::nullopt;
    }
    std::string data;
    char buf[65536];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) error = std::generic_category().message(errno);
        if (n <= 0) break;
        data.append(buf, static_cast<std::size_t>(n));
        if (data.size() > kMaxFileSize) {
            error = "file is larger than " + std::to_string(kMaxFileSize >> 20) + " MiB";
            break;
        }
    }
    ::close(fd);
    if (!error.empty()) return std::nullopt;
    return data;
}

LoadResult load_string(std::string_view toml_text, const std::string& source_name) {
    try {
        return load(toml_text, source_name, nullptr);
    } catch (const std::exception& e) {
        // Only allocation failure can get here; callers are promised a result, not a throw.
        return single_error(source_name, std::string("internal error: ") + e.what());
    }
}

namespace detail {

LoadResult load_edited(std::string_view text, const std::string& source_name,
                       const std::function<void(toml::table&)>& edit) {
    try {
        return load(text, source_name, &edit);
    } catch (const std::exception& e) {
        return single_error(source_name, std::string("internal error: ") + e.what());
    }
}

}  // namespace detail

LoadResult load_file(const std::string& path) {
    try {
        std::string error;
        const auto text = read_config_text(path, error);
        if (!text) return single_error(path, "cannot read: " + error);
        return load_string(*text, path);
    } catch (const std::exception& e) {
        return single_error(path, std::string("internal error: ") + e.what());
    }
}

}  // namespace proxyd::config
