// The master process: owns the listening sockets, the shared memory and the control socket;
// forks and supervises workers; never touches client traffic.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/config/types.hpp"
#include "common/shm/worker_stats.hpp"
#include "common/util/event_ptr.hpp"
#include "common/util/unique_fd.hpp"
#include "master/control_server.hpp"

namespace proxyd::master {

struct WorkerProcess {
    int slot = 0;
    pid_t pid = 0;
    int generation = 1;
    bool ready = false;
    bool draining = false;
    double started_at = 0;  // unix time, for status
    std::chrono::steady_clock::time_point started;
    std::size_t stats_slot = 0;
    UniqueFd channel;  // socketpair end: commands out, "ready" in
    EventPtr channel_event;
};

// Crash-loop protection per slot: the first death is replaced at once, repeated quick deaths
// wait longer each time (capped).
struct SlotState {
    class Master* master = nullptr;
    int slot = 0;
    int quick_crashes = 0;
    EventPtr respawn_timer;
};

class Master {
  public:
    Master(config::Config config);
    ~Master();
    // Runs until stopped; returns the process exit status.
    int run();

  private:
    bool open_listeners(std::string& error);
    bool open_control_socket(std::string& error);
    bool setup_signals(std::string& error);
    bool spawn_worker(int slot);
    [[noreturn]] void become_worker(int slot, int channel_fd, std::size_t stats_slot);
    std::size_t allocate_stats_slot();

    static void on_signal(evutil_socket_t fd, short, void* arg);
    static void on_worker_channel(evutil_socket_t fd, short, void* arg);
    static void on_respawn_timer(evutil_socket_t, short, void* arg);
    static void on_stop_deadline(evutil_socket_t, short, void* arg);
    void reap_children();
    void on_worker_exit(pid_t pid, int status);
    void schedule_respawn(int slot, std::chrono::steady_clock::duration lived);

    void handle_control(const nlohmann::json& request, ControlConnection& from);
    nlohmann::json status_json() const;
    void begin_stop(bool fast);
    void finish_stop();
    void send_to_workers(const char* command);

    config::Config config_;
    EventBasePtr base_;
    std::vector<std::vector<UniqueFd>> listeners_;  // [slot][listen address]
    shm::SharedStats stats_;
    std::vector<bool> stats_slot_used_;
    std::unique_ptr<ControlServer> control_;
    UniqueFd signal_fd_;
    EventPtr signal_event_;
    EventPtr stop_deadline_;
    std::vector<WorkerProcess> workers_;
    std::vector<SlotState> slots_;
    int generation_ = 1;
    bool stopping_ = false;
    int exit_status_ = 0;
};

}  // namespace proxyd::master
