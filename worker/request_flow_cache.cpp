// The request flow's cache phases (routes with `cache = {...}`): the lookup before going upstream
// (a fresh hit, a stale copy, or a wait while another request fills the key), serving a stored
// response (304 for a matching conditional request), and storing an upstream response while it
// streams to the client.
//
// The store is shared by every worker (common/shm/cache_store.hpp); what its blobs hold is this
// file's business: an object is the stored head (worker/cache_policy.hpp) followed by the body.
// A response that varies is stored under its variant key (the request's values of the Vary
// headers appended), with a small marker object under the plain key that names the Vary headers.
// The fill mark (the stampede lock) is always taken on the plain key.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <ctime>

#include "common/http/cache_key.hpp"
#include "worker/cache_policy.hpp"
#include "worker/request_flow.hpp"
#include "worker/worker.hpp"

namespace proxyd::worker {
namespace {

// Flags stored with an object.
constexpr std::uint32_t kVaryMarker = 1;  // the object is the list of Vary header names

// How long a fill mark holds other requests for the key back, at most: nginx's
// proxy_cache_lock_timeout is 5 s as well. After it they go upstream without storing.
constexpr std::int64_t kFillWaitMs = 5'000;
// A mark outlives the wait so that a slow filler is not joined by the waiters' own fills.
constexpr std::int64_t kFillMarkMs = 30'000;
constexpr timeval kFillPoll{0, 10'000};

constexpr std::size_t kMaxStoredHead = shm::CacheStore::kHeadAllowance;
constexpr std::size_t kHitWritePiece = 64 * 1024;

std::int64_t unix_now() {
    return static_cast<std::int64_t>(std::time(nullptr));
}

void append_age(std::string& out, std::int64_t now_ms, std::int64_t stored_ms) {
    out += "Age: ";
    out += std::to_string(std::max<std::int64_t>(0, now_ms - stored_ms) / 1000);
    out += "\r\n";
}

}  // namespace

// ---- lookup -----------------------------------------------------------------------------------

// While the request head is still in place: whether the request may use the cache, its key, and
// a copy of its header lines for Vary and the conditional headers.
void RequestFlow::prepare_cache(const http::Request& request) {
    auto& ex = *exchange_;
    if (!ex.route->has_cache || !worker_.cache()) return;
    if (ex.websocket || cache_bypass(request, ex.route->cache.authorization) != CacheBypass::None) {
        ex.cache_label = "BYPASS";
        return;
    }
    ex.cache_on = true;
    // Most hits are not conditional: they then skip parsing the kept head again.
    ex.cache_conditional = !http::find_header(request, "if-none-match").empty() ||
                           !http::find_header(request, "if-modified-since").empty();
    http::append_cache_key(ex.cache_key, request.method, request.host, request.path, request.query);
    ex.cache_request_head += "GET / HTTP/1.1\r\n";
    for (std::size_t i = 0; i < request.header_count; ++i) {
        append_header(ex.cache_request_head, request.headers[i].name, request.headers[i].value);
    }
    ex.cache_request_head += "\r\n";
}

// True when the request is answered from the cache or waits for another request's fill; false
// when it goes upstream (labelled MISS, holding the fill mark if it could take it).
bool RequestFlow::answer_from_cache() {
    auto& ex = *exchange_;
    auto& store = *worker_.cache();
    const std::int64_t now = shm::cache_now_ms();
    const auto& policy = ex.route->cache;
    const shm::CacheFound found = look_up_cached(now);
    if (found.hit) ex.cache_stored_ms = found.times.stored_ms;
    if (found.hit && now < found.times.fresh_until_ms) {
        serve_cached(shm::CacheResult::Hit, now);
        return true;
    }
    if (found.hit) {
        ex.cache_stale = now < found.times.fresh_until_ms + policy.stale_if_error.count();
        if (now < found.times.fresh_until_ms + policy.stale_while_revalidate.count()) {
            // One request refreshes; the others get the stale copy at once.
            if (found.filling || !store.try_begin_fill(ex.cache_key, now, kFillMarkMs)) {
                serve_cached(shm::CacheResult::Stale, now);
                return true;
            }
            ex.cache_fill = true;
        }
    } else {
        ex.cache_stale = false;
        evbuffer_drain(ex.cache_object.get(), evbuffer_get_length(ex.cache_object.get()));
    }
    if (!ex.cache_fill) {
        // A wait that ended without an object (the filler's response was not storable, or it
        // took too long) goes upstream unmarked: waiters do not queue behind each other.
        if (ex.cache_wait_until_ms != 0 && (!found.filling || now >= ex.cache_wait_until_ms)) {
            ex.cache_waited = true;
        }
        if (!ex.cache_waited) {
            if (found.filling || !store.try_begin_fill(ex.cache_key, now, kFillMarkMs)) {
                wait_for_fill(now);
                return true;
            }
            ex.cache_fill = true;
        }
    }
    ex.cache_label = "MISS";
    return false;
}

// The object for this request into ex.cache_object, through the Vary marker when there is one.
// `filling` is the plain key's mark either way.
shm::CacheFound RequestFlow::look_up_cached(std::int64_t now_ms) {
    auto& ex = *exchange_;
    auto& store = *worker_.cache();
    evbuffer* object = ex.cache_object.get();
    evbuffer_drain(object, evbuffer_get_length(object));
    auto sink = [object](const char* data, std::size_t size) { evbuffer_add(object, data, size); };
    shm::CacheFound found = store.lookup(ex.cache_key, now_ms, sink);
    if (!found.hit || !(found.flags & kVaryMarker)) return found;
    std::string& vary = worker_.scratch();
    vary.resize(evbuffer_get_length(object));
    evbuffer_remove(object, vary.data(), vary.size());
    const http::Request* request = kept_request_head();
    if (!request) {
        found.hit = false;
        return found;
    }
    ex.cache_variant_key.assign(ex.cache_key);
    http::append_vary_suffix(ex.cache_variant_key, vary, *request);
    shm::CacheFound variant = store.lookup(ex.cache_variant_key, now_ms, sink);
    variant.filling = found.filling;
    return variant;
}

// The request's header lines kept by prepare_cache, parsed again (null only if they were cut
// short, which prepare_cache never does). The views last until the next call.
const http::Request* RequestFlow::kept_request_head() {
    const std::string& head = exchange_->cache_request_head;
    http::Request& request = worker_.cache_request();
    const http::RequestLimits limits{head.size() + 1, head.size() + 1};
    if (http::parse_request(head.data(), head.size(), limits, request) != http::ParseStatus::Done) {
        return nullptr;
    }
    return &request;
}

void RequestFlow::wait_for_fill(std::int64_t now_ms) {
    auto& ex = *exchange_;
    if (ex.cache_wait_until_ms == 0) ex.cache_wait_until_ms = now_ms + kFillWaitMs;
    if (!cache_timer_) cache_timer_.reset(evtimer_new(worker_.base(), on_cache_timer, this));
    event_add(cache_timer_.get(), &kFillPoll);
}

void RequestFlow::on_cache_timer(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<RequestFlow*>(arg);
    if (!self->exchange_) return;
    if (!self->answer_from_cache()) self->go_upstream();
}

// ---- answers from the cache -------------------------------------------------------------------

// ex.cache_object holds the object: its head goes to the client (304 when the request's
// conditions hold), then its body.
void RequestFlow::serve_cached(shm::CacheResult result, std::int64_t now_ms) {
    auto& ex = *exchange_;
    evbuffer* object = ex.cache_object.get();
    const std::size_t size = evbuffer_get_length(object);
    const std::size_t window = std::min(size, kMaxStoredHead);
    auto* data =
        reinterpret_cast<const char*>(evbuffer_pullup(object, static_cast<ev_ssize_t>(window)));
    http::Response& response = worker_.scratch_response();
    if (http::parse_response(data, window, kMaxStoredHead, ex.is_head, response) !=
        http::ParseStatus::Done) {
        // Cannot happen for what this file stored; answered like an upstream that sent garbage.
        ex.cache_on = ex.cache_stale = false;
        fail(Failure::UpstreamFailed, "unreadable cache object");
        return;
    }
    const std::size_t body = size - response.head_length;
    if (response.body != http::BodyKind::None) {
        response.body = http::BodyKind::ContentLength;
        response.content_length = body;
    }
    ex.cache_label = result == shm::CacheResult::Stale ? "STALE" : "HIT";
    ex.status = response.status;
    ClientResponseInfo info;
    info.keep_alive = ex.request_done;
    info.request_id = ex.request_id;
    const http::Request* request = nullptr;
    const bool conditional = ex.cache_conditional &&
                             (response.status == 200 || response.status == 203) &&
                             (request = kept_request_head()) != nullptr &&
                             is_not_modified(*request, http::find_header(response, "etag"),
                                             http::find_header(response, "last-modified"));
    if (conditional) {
        append_not_modified_lines(response, ex.access_headers);
        append_encoding_vary(response, ex.access_headers);
        append_cache_lines(now_ms);
        info.extra_lines = ex.access_headers;
        ex.status = 304;
        client_->send_bodiless(304, info);
        ex.response_started = true;
        evbuffer_drain(object, size);
        if (!flush_client()) return;
        finish();
        return;
    }
    append_cache_lines(now_ms);
    info.extra_lines = ex.access_headers;
    info.replace_cors = ex.replace_cors;
    client_->send_response_head(encode_head(response), info);
    ex.response_started = true;
    evbuffer_drain(object, response.head_length);  // `response` is invalid from here on
    if (!ex.is_head) {
        // In pieces, each written before the next is queued: one write of more than 64 KiB
        // costs the kernel more per byte than the same bytes in 64 KiB writes (128 KiB hits on
        // loopback: 37-41 against 27-29 µs of system time per response).
        for (std::size_t left = body; left > 0;) {
            const std::size_t piece = std::min(left, kHitWritePiece);
            deliver_body(object, piece);
            left -= piece;
            if (left > 0 && !flush_client()) return;
        }
    }
    evbuffer_drain(object, evbuffer_get_length(object));
    end_body();
    if (!flush_client()) return;
    finish();
}

// The upstream failed (or answered 500/502/503/504) and a stale copy within stale_if_error is
// at hand: the client gets it instead. The caller has let go of the upstream.
bool RequestFlow::serve_stale_on_error(int status) {
    auto& ex = *exchange_;
    if (!ex.cache_stale || ex.response_started) return false;
    if (status != 0 && status != 500 && (status < 502 || status > 504)) return false;
    ex.cache_stale = false;
    end_cache_fill();
    serve_cached(shm::CacheResult::Stale, shm::cache_now_ms());
    return true;
}

// X-Cache (and Age for a stored answer) on the response head, once; the result is counted here,
// where it is final (a MISS may still become STALE when the upstream fails).
void RequestFlow::append_cache_lines(std::int64_t now_ms) {
    auto& ex = *exchange_;
    if (!ex.cache_label) return;
    const std::string_view label = ex.cache_label;
    ex.cache_label = nullptr;
    ex.access_headers += "X-Cache: ";
    ex.access_headers += label;
    ex.access_headers += "\r\n";
    shm::CacheResult result = shm::CacheResult::Miss;
    if (label == "HIT" || label == "STALE") {
        append_age(ex.access_headers, now_ms, ex.cache_stored_ms);
        result = label == "HIT" ? shm::CacheResult::Hit : shm::CacheResult::Stale;
    } else if (label == "BYPASS") {
        result = shm::CacheResult::Bypass;
    }
    worker_.cache()->count(result);
}

// ---- storing ----------------------------------------------------------------------------------

// An upstream response head for a request that holds the fill mark: store it if the rules allow
// (worker/cache_policy.hpp), else let waiting requests go upstream themselves.
void RequestFlow::begin_cache_fill(const http::Response& response) {
    auto& ex = *exchange_;
    append_cache_lines(0);
    if (!ex.cache_fill) return;
    const Storability storability =
        evaluate_response(response, ex.route->cache.ttl.count(), unix_now());
    const std::size_t max_object = worker_.cache()->max_object_size();
    const bool fits =
        response.body != http::BodyKind::ContentLength || response.content_length <= max_object;
    if (!storability.store || !fits) {
        end_cache_fill();
        return;
    }
    ex.cache_storing = true;
    ex.cache_stored_ms = shm::cache_now_ms();
    ex.cache_fresh_ms = storability.fresh_ms;
    ex.cache_vary.assign(storability.vary);
    ex.cache_blob.clear();
    build_stored_head(response, ex.cache_blob);
    if (ex.cache_blob.size() > kMaxStoredHead) {
        end_cache_fill();
        return;
    }
    if (ex.is_head) {
        // A HEAD answer's Content-Length describes the GET body: kept for HEAD hits.
        const std::string_view length = http::find_header(response, "content-length");
        if (!length.empty()) {
            ex.cache_blob.resize(ex.cache_blob.size() - 2);
            append_header(ex.cache_blob, "Content-Length", length);
            ex.cache_blob += "\r\n";
        }
    }
    ex.cache_head_size = ex.cache_blob.size();
    ex.cache_variant_key.clear();
}

// The body bytes about to go to the client, copied for the store; past max_object_size the
// response is not stored.
void RequestFlow::copy_for_store(evbuffer* in, std::size_t n) {
    auto& ex = *exchange_;
    const std::size_t old_size = ex.cache_blob.size();
    if (old_size - ex.cache_head_size + n > worker_.cache()->max_object_size()) {
        end_cache_fill();
        return;
    }
    ex.cache_blob.resize(old_size + n);
    evbuffer_copyout(in, ex.cache_blob.data() + old_size, n);
}

// The response ended complete: into the store, where every worker finds it.
void RequestFlow::commit_cache_store() {
    auto& ex = *exchange_;
    if (!ex.cache_storing) return;
    ex.cache_storing = false;
    auto& store = *worker_.cache();
    const auto& policy = ex.route->cache;
    shm::CacheTimes times;
    times.stored_ms = ex.cache_stored_ms;
    times.fresh_until_ms = ex.cache_stored_ms + ex.cache_fresh_ms;
    times.usable_until_ms = times.fresh_until_ms + std::max(policy.stale_while_revalidate.count(),
                                                            policy.stale_if_error.count());
    const std::string_view blob[] = {ex.cache_blob};
    if (ex.cache_vary.empty()) {
        store.store(ex.cache_key, 0, times, blob);
    } else {
        if (const http::Request* request = kept_request_head()) {
            ex.cache_variant_key.assign(ex.cache_key);
            http::append_vary_suffix(ex.cache_variant_key, ex.cache_vary, *request);
            store.store(ex.cache_variant_key, 0, times, blob);
            // The marker last: storing it clears the fill mark, and waiters then find both.
            const std::string_view marker[] = {ex.cache_vary};
            store.store(ex.cache_key, kVaryMarker, times, marker);
        } else {
            store.end_fill(ex.cache_key);
        }
    }
    ex.cache_fill = false;  // store() cleared the mark, stored or not
}

// Nothing will be stored: the mark goes, so waiting requests stop waiting.
void RequestFlow::end_cache_fill() {
    auto& ex = *exchange_;
    ex.cache_storing = false;
    if (!ex.cache_fill) return;
    ex.cache_fill = false;
    worker_.cache()->end_fill(ex.cache_key);
}

}  // namespace proxyd::worker
