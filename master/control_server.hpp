// The master's end of the control socket: accepts proxyctl connections, decodes framed JSON
// requests and hands each to a handler, which answers at once or keeps the connection to answer
// later (a stop is answered by the master exiting).
#pragma once

#include <event2/bufferevent.h>

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <nlohmann/json.hpp>

#include "common/util/event_ptr.hpp"
#include "common/util/unique_fd.hpp"

namespace proxyd::master {

class ControlServer;

class ControlConnection {
  public:
    ControlConnection(ControlServer& server, bufferevent* bev, std::uint64_t id)
        : server_(server), bev_(bev), id_(id) {}
    ~ControlConnection();
    void reply(const nlohmann::json& message);
    bufferevent* bev() const { return bev_; }
    ControlServer& server() { return server_; }
    // Requests answered later (reload, upgrade) keep the id: the connection may be gone by then.
    std::uint64_t id() const { return id_; }

  private:
    ControlServer& server_;
    bufferevent* bev_;
    std::uint64_t id_;
};

class ControlServer {
  public:
    // The handler gets every request; it must reply through the connection (now or later).
    using Handler = std::function<void(const nlohmann::json& request, ControlConnection& from)>;

    ControlServer(event_base* base, UniqueFd listener, Handler handler);
    ~ControlServer();
    int fd() const { return listener_.get(); }
    void close_connection(ControlConnection* connection);
    // Answers a request taken earlier; false if that client has gone.
    bool reply(std::uint64_t id, const nlohmann::json& message);
    // After an upgrade the path belongs to the new master: stop accepting, keep open connections.
    void stop_listening();

  private:
    static void on_accept(evutil_socket_t fd, short, void* arg);
    static void on_read(bufferevent* bev, void* arg);
    static void on_event(bufferevent* bev, short what, void* arg);

    event_base* base_;
    UniqueFd listener_;
    EventPtr accept_event_;
    Handler handler_;
    std::list<std::unique_ptr<ControlConnection>> connections_;
    std::uint64_t next_id_ = 1;
};

}  // namespace proxyd::master
