#include "worker/stream.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstring>

#include "common/util/timeval.hpp"

namespace proxyd::worker {

namespace {

// One TLS record's worth: SSL_write makes a record per call, so writing less wastes records and
// system calls, and more is split by OpenSSL anyway.
constexpr std::size_t kTlsWriteChunk = 16 * 1024;

}  // namespace

void Stream::open(event_base* base, UniqueFd fd, event_callback_fn on_read,
                  event_callback_fn on_write, event_callback_fn on_timer, void* arg) {
    int raw = fd.get();
    fd_ = std::move(fd);
    if (!in_) in_ = make_evbuffer();
    if (!out_) out_ = make_evbuffer();
    base_ = base;
    read_event_.reset(event_new(base, raw, EV_READ | EV_PERSIST, on_read, arg));
    write_event_.reset();  // made when first needed (see ensure_write_event)
    timer_.reset(evtimer_new(base, on_timer, arg));
    owner_read_ = on_read;
    owner_write_ = on_write;
    owner_arg_ = arg;
    read_enabled_ = false;
    write_armed_ = false;
    read_registered_ = false;
    write_registered_ = false;
    nodelay_deferred_ = false;
    written_ = false;
}

void Stream::start_tls(tls::SslPtr ssl, bool client_side) {
    ssl_ = std::move(ssl);
    client_side_ = client_side;
    handshaking_ = true;
    // A client waits for its connect to finish (writability) before the first flight; a server
    // waits for the ClientHello.
    handshake_wants_read_ = !client_side;
    handshake_wants_write_ = client_side;
    read_wants_write_ = write_wants_read_ = tls_failed_ = close_notify_sent_ = false;
    tls_error_.clear();
    read_registered_ = write_registered_ = false;
    read_event_.reset(event_new(base_, fd_.get(), EV_READ | EV_PERSIST, on_tls_read, this));
    write_event_.reset();
    update_events();
}

// Most connections never wait to write (every write is taken whole), so the write event is
// allocated on the first wait: an idle keep-alive connection then holds two events, not three.
bool Stream::ensure_write_event() {
    if (write_event_) return true;
    if (!fd_) return false;
    write_event_.reset(
        ssl_ ? event_new(base_, fd_.get(), EV_WRITE | EV_PERSIST, on_tls_write, this)
             : event_new(base_, fd_.get(), EV_WRITE | EV_PERSIST, owner_write_, owner_arg_));
    return write_event_ != nullptr;
}

void Stream::close() {
    if (ssl_ && !handshaking_ && !tls_failed_ && !close_notify_sent_) {
        // close_notify, best effort: the socket is closed right after whatever happens.
        SSL_shutdown(ssl_.get());
        ERR_clear_error();
    }
    read_event_.reset();
    write_event_.reset();
    timer_.reset();
    ssl_.reset();
    fd_.reset();
    read_enabled_ = false;
    write_armed_ = false;
    read_registered_ = false;
    write_registered_ = false;
    handshaking_ = false;
}

void Stream::update_events() {
    bool want_read = read_enabled_;
    bool want_write = write_armed_;
    if (ssl_) {
        if (tls_failed_) {
            want_read = want_write = false;
        } else if (handshaking_) {
            want_read = handshake_wants_read_;
            want_write = handshake_wants_write_;
        } else {
            want_read = want_read || write_wants_read_;
            want_write = want_write || read_wants_write_;
        }
    }
    if (want_read != read_registered_ && read_event_) {
        if (want_read) {
            event_add(read_event_.get(), nullptr);
        } else {
            event_del(read_event_.get());
        }
        read_registered_ = want_read;
    }
    if (want_write != write_registered_) {
        if (!want_write) {
            if (write_event_) event_del(write_event_.get());
            write_registered_ = false;
        } else if (ensure_write_event()) {
            event_add(write_event_.get(), nullptr);
            write_registered_ = true;
        }
    }
}

Stream::ReadResult Stream::read(std::size_t max_bytes, std::size_t* bytes_read) {
    return ssl_ ? read_tls(max_bytes, bytes_read) : read_plain(max_bytes, bytes_read);
}

Stream::ReadResult Stream::read_plain(std::size_t max_bytes, std::size_t* bytes_read) {
    evbuffer_iovec vec[2];
    int n_vec = evbuffer_reserve_space(in_.get(), static_cast<ev_ssize_t>(max_bytes), vec, 2);
    if (n_vec <= 0) return ReadResult::Error;
    iovec iov[2];
    for (int i = 0; i < n_vec; ++i) iov[i] = {vec[i].iov_base, vec[i].iov_len};
    ssize_t n;
    do n = ::readv(fd_.get(), iov, n_vec);
    while (n < 0 && errno == EINTR);
    if (n <= 0) {
        evbuffer_commit_space(in_.get(), vec, 0);
        if (n == 0) return ReadResult::Eof;
        return errno == EAGAIN || errno == EWOULDBLOCK ? ReadResult::WouldBlock : ReadResult::Error;
    }
    std::size_t left = static_cast<std::size_t>(n);
    for (int i = 0; i < n_vec; ++i) {
        std::size_t used = left < vec[i].iov_len ? left : vec[i].iov_len;
        vec[i].iov_len = used;
        left -= used;
    }
    evbuffer_commit_space(in_.get(), vec, n_vec);
    if (bytes_read) *bytes_read = static_cast<std::size_t>(n);
    return ReadResult::Data;
}

Stream::ReadResult Stream::read_tls(std::size_t max_bytes, std::size_t* bytes_read) {
    if (tls_failed_) return ReadResult::Error;
    if (handshaking_) return ReadResult::WouldBlock;
    evbuffer_iovec vec[2];
    int n_vec = evbuffer_reserve_space(in_.get(), static_cast<ev_ssize_t>(max_bytes), vec, 2);
    if (n_vec <= 0) return ReadResult::Error;
    std::size_t total = 0;
    int used = 0;
    ReadResult result = ReadResult::Data;
    for (int i = 0; i < n_vec; ++i) {
        std::size_t got = 0;
        ERR_clear_error();
        errno = 0;
        int rc = SSL_read_ex(ssl_.get(), vec[i].iov_base, vec[i].iov_len, &got);
        if (rc == 1) {
            const bool filled = got == vec[i].iov_len;
            vec[i].iov_len = got;
            total += got;
            used = i + 1;
            // A short read emptied what OpenSSL had: another SSL_read now would only cost a
            // read() that fails with EAGAIN. More input raises the (level-triggered) event.
            if (!filled) break;
            continue;
        }
        int error = SSL_get_error(ssl_.get(), rc);
        if (error == SSL_ERROR_WANT_READ) {
            result = ReadResult::WouldBlock;
        } else if (error == SSL_ERROR_WANT_WRITE) {
            read_wants_write_ = true;
            update_events();
            result = ReadResult::WouldBlock;
        } else if (error == SSL_ERROR_ZERO_RETURN) {
            result = ReadResult::Eof;
        } else {
            fail_tls(error);
            result = ReadResult::Error;
        }
        break;
    }
    evbuffer_commit_space(in_.get(), vec, used);
    if (total == 0) return result;
    if (bytes_read) *bytes_read = total;
    // Records OpenSSL already holds raise no epoll event: come back for them.
    if (read_enabled_ && SSL_has_pending(ssl_.get())) activate_read();
    return ReadResult::Data;
}

bool Stream::flush() {
    if (ssl_) return flush_tls();
    while (evbuffer_get_length(out_.get()) > 0) {
        if (nodelay_deferred_) set_nodelay_before_second_write();
        int n = evbuffer_write(out_.get(), fd_.get());
        if (n > 0) {
            written_ = true;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_write_armed(true);
            return true;
        }
        return false;
    }
    set_write_armed(false);
    return true;
}

bool Stream::flush_tls() {
    if (tls_failed_) return false;
    // Owners write only after their first callback, which comes when the handshake is done.
    if (handshaking_) return true;
    write_wants_read_ = false;
    while (std::size_t length = evbuffer_get_length(out_.get())) {
        std::size_t chunk = length < kTlsWriteChunk ? length : kTlsWriteChunk;
        const unsigned char* data = evbuffer_pullup(out_.get(), static_cast<ev_ssize_t>(chunk));
        std::size_t written = 0;
        ERR_clear_error();
        errno = 0;
        int rc = SSL_write_ex(ssl_.get(), data, chunk, &written);
        if (rc == 1) {
            evbuffer_drain(out_.get(), written);
            continue;
        }
        int error = SSL_get_error(ssl_.get(), rc);
        if (error == SSL_ERROR_WANT_WRITE) {
            set_write_armed(true);
            return true;
        }
        if (error == SSL_ERROR_WANT_READ) {
            write_wants_read_ = true;
            update_events();
            return true;
        }
        fail_tls(error);
        return false;
    }
    set_write_armed(false);
    return true;
}

void set_tcp_nodelay(int fd) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void Stream::set_nodelay_before_second_write() {
    if (!written_) return;
    set_tcp_nodelay(fd_.get());
    nodelay_deferred_ = false;
}

bool Stream::receive_queue_empty() const {
    char byte;
    return ::recv(fd_.get(), &byte, 1, MSG_PEEK | MSG_DONTWAIT) <= 0;
}

void Stream::shutdown_write() {
    if (ssl_ && !handshaking_ && !tls_failed_ && !close_notify_sent_) {
        SSL_shutdown(ssl_.get());
        ERR_clear_error();
        close_notify_sent_ = true;
    }
    ::shutdown(fd_.get(), SHUT_WR);
}

void Stream::fail_tls(int ssl_error) {
    tls_failed_ = true;
    if (ssl_error == SSL_ERROR_SYSCALL) {
        tls_error_ = errno != 0 ? std::strerror(errno) : "connection closed";
    } else {
        tls_error_ = tls::last_error();
        if (tls_error_.empty()) tls_error_ = "TLS error " + std::to_string(ssl_error);
    }
    ERR_clear_error();
    update_events();
}

void Stream::drive_handshake() {
    ERR_clear_error();
    errno = 0;
    int rc = SSL_do_handshake(ssl_.get());
    if (rc == 1) {
        handshaking_ = false;
        handshake_wants_read_ = handshake_wants_write_ = false;
        update_events();
        if (client_side_) {
            owner_write_(fd_.get(), EV_WRITE, owner_arg_);  // "connected"
        } else if (read_enabled_) {
            owner_read_(fd_.get(), EV_READ, owner_arg_);
        }
        return;
    }
    int error = SSL_get_error(ssl_.get(), rc);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
        handshake_wants_read_ = error == SSL_ERROR_WANT_READ;
        handshake_wants_write_ = error == SSL_ERROR_WANT_WRITE;
        update_events();
        return;
    }
    handshaking_ = false;
    fail_tls(error);
    // The owner learns of it the way it learns of any I/O failure.
    if (client_side_) {
        owner_write_(fd_.get(), EV_WRITE, owner_arg_);
    } else {
        owner_read_(fd_.get(), EV_READ, owner_arg_);
    }
}

void Stream::on_tls_read(evutil_socket_t fd, short, void* arg) {
    auto* self = static_cast<Stream*>(arg);
    if (self->handshaking_) {
        self->drive_handshake();
    } else if (self->write_wants_read_) {
        self->write_wants_read_ = false;
        self->update_events();
        self->owner_write_(fd, EV_WRITE, self->owner_arg_);
    } else {
        self->owner_read_(fd, EV_READ, self->owner_arg_);
    }
}

void Stream::on_tls_write(evutil_socket_t fd, short, void* arg) {
    auto* self = static_cast<Stream*>(arg);
    if (self->handshaking_) {
        self->drive_handshake();
    } else if (self->read_wants_write_) {
        self->read_wants_write_ = false;
        self->update_events();
        self->owner_read_(fd, EV_READ, self->owner_arg_);
    } else {
        self->owner_write_(fd, EV_WRITE, self->owner_arg_);
    }
}

void Stream::set_write_armed(bool on) {
    if (write_armed_ == on) return;
    write_armed_ = on;
    update_events();
}

void Stream::wait_writable() {
    // A TLS client's handshake already waits for the connect, and reports through the same
    // callback when it is done.
    if (ssl_ && handshaking_) return;
    set_write_armed(true);
}

void Stream::activate_read() {
    event_active(read_event_.get(), EV_READ, 1);
}

void Stream::enable_read(bool on) {
    if (on == read_enabled_) return;
    read_enabled_ = on;
    update_events();
    if (on && ssl_ && !handshaking_ && SSL_has_pending(ssl_.get())) activate_read();
}

bool Stream::still_usable_when_idle() {
    char byte;
    ssize_t n = ::recv(fd_.get(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return !ssl_ || !SSL_has_pending(ssl_.get());
    if (n <= 0 || !ssl_) return false;
    // TLS: a session ticket or a key update is not a response; see whether it was only that.
    std::size_t before = evbuffer_get_length(in_.get());
    ReadResult result = read_tls(4096, nullptr);
    return result == ReadResult::WouldBlock && evbuffer_get_length(in_.get()) == before;
}

void Stream::arm_timer(std::chrono::milliseconds timeout) {
    timeval tv = to_timeval(timeout);
    event_add(timer_.get(), &tv);
}

void Stream::cancel_timer() {
    if (timer_) event_del(timer_.get());
}

}  // namespace proxyd::worker
