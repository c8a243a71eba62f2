// The protocol of PROTOCOL.md: one request line in, one reply line out. Transport-free so the
// unit tests drive it directly; server.cc feeds it lines from the socket.
//
// Every request is answered: malformed JSON, non-objects, unknown commands and fields of the
// wrong type get an error reply, and any exception thrown while handling is caught here.
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <functional>
#include <vector>

#include <nlohmann/json.hpp>

#include "registry.h"

namespace hakmemd {

using ojson = nlohmann::ordered_json;

// The client as SO_PEERCRED reports it.
struct Peer {
  uid_t uid = 0;
  pid_t pid = 0;
};

// A `set` with wait_ms: the reply is held until every target has applied its new generation
// (or the deadline passes). The server polls it from a timer so other clients keep going.
struct ApplyWait {
  struct Target {
    pid_t pid;
    uint64_t start_time_ticks;
    uint64_t generation;
    bool done = false;
    bool applied = false;
    double apply_ms = 0;
  };
  ojson id;
  ojson changes;
  std::vector<Target> targets;
  std::chrono::steady_clock::time_point start;
  std::chrono::steady_clock::time_point deadline;
  uint64_t start_unix_ns = 0;
};

struct Outcome {
  std::string reply;                 // the reply line ('\n'-terminated) unless `wait` is set
  std::unique_ptr<ApplyWait> wait;
  bool close = false;                // close the connection after the reply
};

class Handler {
 public:
  explicit Handler(Registry& reg);

  Outcome handle(std::string_view line, const Peer& peer);
  // Advances a pending wait; true (with *reply set) once it is complete.
  bool poll(ApplyWait& w, std::string* reply);

  static std::string error_line(const ojson& id, const char* code, const std::string& message);
  static std::string ok_line(const ojson& id, ojson result);

  // Figures of one process as `stats` reports them (also used by tests).
  ojson stats_json(ProcessEntry& e, const hakmem::proto::Snapshot& s, double uptime_s);

 private:
  ojson cmd_hello(const ojson& req, const Peer& peer);
  ojson cmd_ps(const ojson& req, const Peer& peer);
  ojson cmd_stats(const ojson& req, const Peer& peer);
  ojson cmd_get(const ojson& req, const Peer& peer);
  ojson cmd_set(const ojson& req, const Peer& peer, std::unique_ptr<ApplyWait>* wait);
  ojson cmd_knobs(const ojson& req, const Peer& peer);

  // The processes a request addresses: one pid (errors if absent, foreign or dead) or all
  // visible live ones.
  std::vector<ProcessEntry*> targets(const ojson& req, const Peer& peer, bool pid_required_or_all);
  void for_each_snapshot(const ojson& req, const Peer& peer,
                         const std::function<void(ProcessEntry&, const hakmem::proto::Snapshot&)>& fn);

  Registry& reg_;
};

}  // namespace hakmemd
