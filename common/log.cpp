#include "common/log.hpp"

#include <spdlog/async.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <memory>

namespace proxyd::log {
namespace {

std::shared_ptr<spdlog::logger> g_access;

spdlog::level::level_enum to_spdlog(config::LogLevel level) {
    switch (level) {
        case config::LogLevel::Trace:
            return spdlog::level::trace;
        case config::LogLevel::Debug:
            return spdlog::level::debug;
        case config::LogLevel::Info:
            return spdlog::level::info;
        case config::LogLevel::Warn:
            return spdlog::level::warn;
        case config::LogLevel::Error:
            return spdlog::level::err;
    }
    return spdlog::level::info;
}

// "%*" in a pattern: the message escaped for a JSON string, so JSON logs stay parseable whatever
// a message contains (paths, header values).
class JsonPayloadFlag final : public spdlog::custom_flag_formatter {
  public:
    void format(const spdlog::details::log_msg& msg, const std::tm&,
                spdlog::memory_buf_t& dest) override {
        std::string escaped;
        append_json_escaped(escaped, std::string_view(msg.payload.data(), msg.payload.size()));
        dest.append(escaped.data(), escaped.data() + escaped.size());
    }
    std::unique_ptr<custom_flag_formatter> clone() const override {
        return std::make_unique<JsonPayloadFlag>();
    }
};

std::unique_ptr<spdlog::formatter> make_error_formatter(config::LogFormat format,
                                                        const std::string& role) {
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    if (format == config::LogFormat::Json) {
        formatter->add_flag<JsonPayloadFlag>('*');
        formatter->set_pattern(
            R"({"time":"%Y-%m-%dT%H:%M:%S.%e%z","level":"%l","pid":%P,"role":")" + role +
            R"(","msg":"%*"})");
    } else {
        formatter->set_pattern("%Y-%m-%d %H:%M:%S.%e [%l] [" + role + " %P] %v");
    }
    return formatter;
}

spdlog::sink_ptr make_sink(const std::string& path, bool stderr_for_dash) {
    if (path == "-") {
        if (stderr_for_dash) return std::make_shared<spdlog::sinks::stderr_sink_mt>();
        return std::make_shared<spdlog::sinks::stdout_sink_mt>();
    }
    return std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, /*truncate=*/false);
}

}  // namespace

bool setup_error_log(const config::LogSection& section, const std::string& role,
                     std::string& error) {
    try {
        auto logger =
            std::make_shared<spdlog::logger>("proxyd", make_sink(section.error_log, true));
        logger->set_formatter(make_error_formatter(section.format, role));
        logger->set_level(to_spdlog(section.level));
        logger->flush_on(spdlog::level::trace);
        spdlog::set_default_logger(std::move(logger));
        return true;
    } catch (const spdlog::spdlog_ex& e) {
        error = e.what();
        return false;
    }
}

bool setup_access_log(const config::LogSection& section, std::string& error) {
    if (g_access) {
        g_access->flush();
        g_access.reset();
    }
    if (section.access_log.empty()) return true;
    try {
        if (!spdlog::thread_pool()) spdlog::init_thread_pool(16384, 1);
        g_access = std::make_shared<spdlog::async_logger>(
            "access", make_sink(section.access_log, false), spdlog::thread_pool(),
            spdlog::async_overflow_policy::overrun_oldest);
        g_access->set_pattern("%v");
        g_access->set_level(spdlog::level::info);
        g_access->flush_on(spdlog::level::info);
        return true;
    } catch (const spdlog::spdlog_ex& e) {
        error = e.what();
        return false;
    }
}

spdlog::logger* access_logger() {
    return g_access.get();
}

void shutdown() {
    if (g_access) g_access->flush();
    g_access.reset();
    spdlog::shutdown();
}

void append_json_escaped(std::string& out, std::string_view text) {
    static constexpr char kHex[] = "0123456789abcdef";
    for (unsigned char c : text) {
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\r':
                out += "\\r";
                break;
            case '\t':
                out += "\\t";
                break;
            default:
                if (c < 0x20 || c == 0x7f) {
                    out += "\\u00";
                    out += kHex[c >> 4];
                    out += kHex[c & 15];
                } else {
                    out += static_cast<char>(c);
                }
        }
    }
}

}  // namespace proxyd::log
