// The daemon process: configuration, the registry kept fresh by inotify and a periodic scan,
// the socket and metrics listeners, signals (TERM/INT stop, HUP reloads), config defaults for
// newly seen processes. Everything runs on one Asio thread.
#pragma once

#include <memory>

#include "config.h"

namespace hakmemd {

class Daemon {
 public:
  explicit Daemon(Overrides ov);
  ~Daemon();
  // Runs until SIGTERM/SIGINT; returns the process exit code (non-zero when startup failed).
  int run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Applies spdlog's level by name ("info", "debug", ...).
void set_log_level(const std::string& level);

}  // namespace hakmemd
