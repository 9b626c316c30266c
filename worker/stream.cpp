#include "worker/stream.hpp"

#include <sys/uio.h>

#include <cerrno>

#include "common/util/timeval.hpp"

namespace proxyd::worker {

void Stream::open(event_base* base, UniqueFd fd, event_callback_fn on_read,
                  event_callback_fn on_write, event_callback_fn on_timer, void* arg) {
    int raw = fd.get();
    fd_ = std::move(fd);
    if (!in_) in_ = make_evbuffer();
    if (!out_) out_ = make_evbuffer();
    read_event_.reset(event_new(base, raw, EV_READ | EV_PERSIST, on_read, arg));
    write_event_.reset(event_new(base, raw, EV_WRITE | EV_PERSIST, on_write, arg));
    timer_.reset(evtimer_new(base, on_timer, arg));
    read_enabled_ = false;
    write_armed_ = false;
}

void Stream::close() {
    read_event_.reset();
    write_event_.reset();
    timer_.reset();
    fd_.reset();
    read_enabled_ = false;
    write_armed_ = false;
}

Stream::ReadResult Stream::read(std::size_t max_bytes, std::size_t* bytes_read) {
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

bool Stream::flush() {
    while (evbuffer_get_length(out_.get()) > 0) {
        int n = evbuffer_write(out_.get(), fd_.get());
        if (n > 0) continue;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!write_armed_) {
                event_add(write_event_.get(), nullptr);
                write_armed_ = true;
            }
            return true;
        }
        return false;
    }
    if (write_armed_) {
        event_del(write_event_.get());
        write_armed_ = false;
    }
    return true;
}

void Stream::wait_writable() {
    if (!write_armed_) {
        event_add(write_event_.get(), nullptr);
        write_armed_ = true;
    }
}

void Stream::activate_read() {
    event_active(read_event_.get(), EV_READ, 1);
}

void Stream::enable_read(bool on) {
    if (on == read_enabled_) return;
    if (on) {
        event_add(read_event_.get(), nullptr);
    } else {
        event_del(read_event_.get());
    }
    read_enabled_ = on;
}

void Stream::arm_timer(std::chrono::milliseconds timeout) {
    timeval tv = to_timeval(timeout);
    event_add(timer_.get(), &tv);
}

void Stream::cancel_timer() {
    if (timer_) event_del(timer_.get());
}

}  // namespace proxyd::worker
