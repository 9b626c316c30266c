#include "master/control_server.hpp"

#include <event2/buffer.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <string>

#include "common/control/protocol.hpp"

namespace proxyd::master {

ControlConnection::~ControlConnection() {
    bufferevent_free(bev_);
}

void ControlConnection::reply(const nlohmann::json& message) {
    std::string frame = control::encode_frame(message);
    bufferevent_write(bev_, frame.data(), frame.size());
}

ControlServer::ControlServer(event_base* base, UniqueFd listener, Handler handler)
    : base_(base), listener_(std::move(listener)), handler_(std::move(handler)) {
    accept_event_.reset(event_new(base_, listener_.get(), EV_READ | EV_PERSIST, on_accept, this));
    event_add(accept_event_.get(), nullptr);
}

ControlServer::~ControlServer() = default;

void ControlServer::on_accept(evutil_socket_t fd, short, void* arg) {
    auto* self = static_cast<ControlServer*>(arg);
    int client = ::accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (client < 0) return;
    bufferevent* bev = bufferevent_socket_new(self->base_, client, BEV_OPT_CLOSE_ON_FREE);
    auto connection = std::make_unique<ControlConnection>(*self, bev, self->next_id_++);
    bufferevent_setcb(bev, on_read, nullptr, on_event, connection.get());
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    self->connections_.push_back(std::move(connection));
}

void ControlServer::on_read(bufferevent* bev, void* arg) {
    auto* connection = static_cast<ControlConnection*>(arg);
    evbuffer* input = bufferevent_get_input(bev);
    for (;;) {
        std::size_t len = evbuffer_get_length(input);
        auto* data = reinterpret_cast<const char*>(evbuffer_pullup(input, -1));
        nlohmann::json request;
        std::size_t consumed = 0;
        std::string error;
        auto status = control::decode_frame(std::string_view(data ? data : "", len), request,
                                            consumed, error);
        if (status == control::DecodeStatus::Incomplete) return;
        if (status == control::DecodeStatus::Error) {
            connection->reply(control::make_reply(false, error));
            return;
        }
        evbuffer_drain(input, consumed);
        connection->server().handler_(request, *connection);
    }
}

void ControlServer::on_event(bufferevent*, short what, void* arg) {
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        auto* connection = static_cast<ControlConnection*>(arg);
        connection->server().close_connection(connection);
    }
}

bool ControlServer::reply(std::uint64_t id, const nlohmann::json& message) {
    for (auto& connection : connections_) {
        if (connection->id() == id) {
            connection->reply(message);
            return true;
        }
    }
    return false;
}

void ControlServer::stop_listening() {
    accept_event_.reset();
    listener_.reset();
}

void ControlServer::close_connection(ControlConnection* connection) {
    connections_.remove_if([&](const auto& c) { return c.get() == connection; });
}

}  // namespace proxyd::master
