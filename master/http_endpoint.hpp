// An HTTP listener of the master (metrics, admin API), served by libevent's evhttp on a
// SO_REUSEPORT socket, so that a new binary can bind the same address while the old one still
// answers during an upgrade. Every method reaches the handler: it answers 405 itself, with the
// JSON or text body its API uses, instead of evhttp's HTML 501.
#pragma once

#include <event2/event.h>
#include <event2/http.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/config/types.hpp"

namespace proxyd::master {

class HttpEndpoint {
  public:
    using Handler = std::function<void(evhttp_request*)>;

    HttpEndpoint(event_base* base, std::string name, Handler handler);
    ~HttpEndpoint();
    // Serves `address` (rebinding only when it changed). False with `error` when it cannot be
    // bound; the previous socket then stays.
    bool listen(const config::SocketAddress& address, std::string& error);
    void close();
    bool open() const { return http_ != nullptr; }

  private:
    struct HttpFree {
        void operator()(evhttp* http) const { evhttp_free(http); }
    };
    static void on_request(evhttp_request* request, void* arg);

    event_base* base_;
    std::string name_;  // "[metrics]", "[admin]": for messages
    Handler handler_;
    std::unique_ptr<evhttp, HttpFree> http_;
    std::string bound_;
};

// The request's path (without the query), "" when it has none.
std::string_view request_path(evhttp_request* request);
// One reply with a body and its content type.
void send_reply(evhttp_request* request, int status, std::string_view content_type,
                std::string_view body);

}  // namespace proxyd::master
