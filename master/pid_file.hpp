// The pid file always holds the current master's pid: written whole under a temporary name and
// renamed into place, removed only by the master whose pid it holds.
#pragma once

#include <sys/types.h>

#include <string>

namespace proxyd::master {

bool write_pid_file(const std::string& path, pid_t pid, std::string& error);
void remove_pid_file(const std::string& path, pid_t pid);

}  // namespace proxyd::master
