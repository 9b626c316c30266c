// A worker's stock of spare per-request objects (an Exchange, an Http1Request with its flow):
// taken when a request starts and given back when it ends, so their strings keep their capacity
// and a steady stream of requests allocates nothing.
//
// At most kMaxSpare are kept. Past that the oldest spare is freed, never the object just given
// back: a request's object is given back from inside its own call chain (the flow's last step
// tells the connection it is done), so it must stay valid until that chain has returned. Nothing
// takes an object from inside such a chain: a connection starts its next request from a later
// event.
#pragma once

#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

namespace proxyd::worker {

template <typename T>
class FreeList {
  public:
    static constexpr std::size_t kMaxSpare = 1024;

    // A spare object, or a new one built from `args`.
    template <typename... Args>
    std::unique_ptr<T> take(Args&... args) {
        if (spare_.empty()) return std::make_unique<T>(args...);
        std::unique_ptr<T> object = std::move(spare_.back());
        spare_.pop_back();
        return object;
    }

    // `object` has been reset by its owner.
    void give_back(std::unique_ptr<T> object) {
        if (spare_.size() < kMaxSpare) {
            spare_.push_back(std::move(object));
        } else {
            spare_.front().swap(object);  // the oldest spare leaves with `object`
        }
    }

  private:
    std::vector<std::unique_ptr<T>> spare_;
};

}  // namespace proxyd::worker
