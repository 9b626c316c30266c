// The master's side of TLS: it reads certificates and keys (workers never do), builds the
// contexts each generation of workers is forked with, owns the session-ticket keys every worker
// shares, and turns renewed certificate files into a new generation once they validate.
#include <spdlog/spdlog.h>

#include <ctime>

#include "common/config/secret_file.hpp"
#include "common/util/timeval.hpp"
#include "master/master.hpp"

namespace proxyd::master {

namespace {

constexpr auto kCertificateRetry = std::chrono::seconds(1);

std::int64_t unix_seconds() {
    return static_cast<std::int64_t>(std::time(nullptr));
}

}  // namespace

bool Master::build_tls(const config::Config& config, TlsState& out, std::string& error) {
    out.server.reset();
    if (config.tls.enabled) {
        out.server = tls::ServerTls::create(config.tls, &*ticket_keys_, unix_seconds(), error);
        if (!out.server) return false;
    }
    out.client = tls::ClientTls::create(config, error);
    return out.client != nullptr;
}

void Master::start_tls_services() {
    if (ticket_keys_->count.load(std::memory_order_relaxed) == 0 && !shm::rotate(*ticket_keys_)) {
        spdlog::error("tls: no random bytes for session-ticket keys; tickets are not issued");
    }
    // The schedule is kept across generations unless its period changes: frequent reloads (or
    // DNS changes) must not postpone rotation forever.
    const bool rotating = config_.tls.enabled && config_.tls.session_tickets;
    const auto period = rotating ? config_.tls.session_ticket_rotation : config::Millis{0};
    if (period != ticket_rotation_period_) {
        ticket_rotation_timer_.reset();
        ticket_rotation_period_ = period;
        if (rotating) {
            ticket_rotation_timer_.reset(
                event_new(base_.get(), -1, EV_PERSIST, on_ticket_rotation, this));
            timeval tv = to_timeval(period);
            event_add(ticket_rotation_timer_.get(), &tv);
        }
    }
    if (!config_.tls.enabled || !config_.tls.watch) {
        certificate_watcher_.reset();
        return;
    }
    if (!certificate_watcher_) {
        certificate_watcher_ =
            std::make_unique<CertificateWatcher>(base_.get(), [this] { reload_certificates(0); });
    }
    std::vector<std::string> paths;
    for (const auto& certificate : source_config_.tls.certificates) {
        paths.push_back(certificate.cert_file);
        paths.push_back(certificate.key_file);
    }
    std::string error;
    if (!certificate_watcher_->watch(paths, error)) {
        spdlog::error("tls: cannot watch the certificate files ({}); renewals need a reload",
                      error);
    }
}

void Master::on_ticket_rotation(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<Master*>(arg);
    if (shm::rotate(*self->ticket_keys_)) {
        spdlog::info("tls: session-ticket keys rotated");
    } else {
        spdlog::error("tls: session-ticket key rotation failed: no random bytes");
    }
}

// Re-reads every certificate and key file (watch = true, or `proxyctl reload-tls`). Changed pairs
// that validate go to a new generation (the running one is untouched: its connections keep their
// certificates); a pair that does not validate keeps the certificate in use, and the reason is
// logged and shown in status.
void Master::reload_certificates(std::uint64_t requester) {
    if (stopping_ || upgrade_) {
        return answer(requester, false, "reload-tls refused: the master is stopping or upgrading");
    }
    if (!config_.tls.enabled) {
        return answer(requester, false, "reload-tls: the config has no [tls] section");
    }
    if (transition_ && requester != 0) {
        return answer(requester, false,
                      "reload-tls refused: a reload, scaling or upgrade is in progress");
    }
    if (transition_) {
        // One generation at a time; look again once this one is done.
        if (!certificate_retry_timer_) {
            certificate_retry_timer_.reset(evtimer_new(
                base_.get(),
                [](evutil_socket_t, short, void* arg) {
                    static_cast<Master*>(arg)->reload_certificates(0);
                },
                this));
        }
        timeval retry = to_timeval(kCertificateRetry);
        event_add(certificate_retry_timer_.get(), &retry);
        return;
    }
    config::Config next = source_config_;
    bool changed = false;
    nlohmann::json refused = nlohmann::json::array();
    for (auto& certificate : next.tls.certificates) {
        std::string cert_pem, key_pem, error;
        if (!config::detail::read_secret_file(certificate.cert_file, cert_pem, error,
                                              config::detail::kMaxPemBundleFile)) {
            error = "cannot read " + certificate.cert_file + ": " + error;
        } else if (!config::detail::read_secret_file(certificate.key_file, key_pem, error)) {
            error = "cannot read " + certificate.key_file + ": " + error;
        }
        if (error.empty() && cert_pem == certificate.cert_pem && key_pem == certificate.key_pem) {
            certificate_errors_.erase(certificate.cert_file);
            continue;  // unchanged
        }
        if (error.empty()) {
            tls::load_certificate(cert_pem, key_pem, unix_seconds(), error);
        }
        if (!error.empty()) {
            if (certificate_errors_[certificate.cert_file] != error) {
                spdlog::error("tls: keeping the current certificate for {}: {}",
                              certificate.cert_file, error);
            }
            certificate_errors_[certificate.cert_file] = error;
            refused.push_back(certificate.cert_file + ": " + error);
            continue;
        }
        spdlog::info("tls: {} changed and is valid; starting workers with it",
                     certificate.cert_file);
        certificate_errors_.erase(certificate.cert_file);
        certificate.cert_pem = std::move(cert_pem);
        certificate.key_pem = std::move(key_pem);
        changed = true;
    }
    if (changed) {
        return start_generation(std::move(next), resolutions_, "reload-tls", requester);
    }
    if (refused.empty()) return answer(requester, true, "reload-tls: certificates unchanged");
    answer(requester, false,
           "reload-tls: " + std::to_string(refused.size()) +
               " certificate(s) refused, the current ones stay; still serving generation " +
               std::to_string(generation_),
           {{"errors", refused}});
}

nlohmann::json Master::tls_json() const {
    nlohmann::json certificates = nlohmann::json::array();
    if (tls_.server) {
        for (const auto& summary : tls_.server->certificates()) {
            nlohmann::json entry = {
                {"cert", summary.cert_file},      {"names", summary.names},
                {"key_type", summary.key_type},   {"subject", summary.subject},
                {"not_after", summary.not_after}, {"expires", tls::format_utc(summary.not_after)}};
            if (auto it = certificate_errors_.find(summary.cert_file);
                it != certificate_errors_.end()) {
                entry["error"] = it->second;
            }
            certificates.push_back(std::move(entry));
        }
    }
    return {{"certificates", certificates},
            {"ticket_key_rotations", ticket_keys_->rotations.load(std::memory_order_relaxed)}};
}

}  // namespace proxyd::master
