// Discovery: which processes run libhakmem right now, found by their segments in one folder.
//
// A file enters the registry only after every check passes: name hakmem.<uid>.<pid>, a regular
// file owned by that uid, not group/world-writable, at least sizeof(Segment), validate_segment()
// Ok, header pid/uid equal to the name, process alive with the start time the header records.
// Hostile or broken files are skipped and logged once per (file, reason); a file of a dead
// process (or of an earlier process with a reused pid) is stale and gets unlinked.
//
// Not thread-safe: the daemon's single I/O thread owns it. Entries are only removed by
// scan()/remove_*(), never while a request handler holds pointers into the registry.
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "hakmem/proto/snapshot.h"
#include "knob_ops.h"
#include "procfs.h"
#include "segment_map.h"

namespace hakmemd {

struct ProcessEntry {
  pid_t pid = 0;
  uid_t uid = 0;
  uint64_t start_time_ticks = 0;
  std::string name;      // file name in the segment folder
  dev_t dev = 0;
  ino_t ino = 0;
  std::string exe;       // copied from the header at registration (bounded)
  std::string cmdline;
  std::string lib_version;
  SegmentMap map;
  uint64_t knob_set_mask = 0;  // knobs this daemon has written (get's "source": "set")
  bool faulted = false;        // the file shrank under the mapping: dropped at the next scan
  ProcStat last_stat;          // /proc/<pid>/stat as still_alive() last read it (saves a re-read)
  bool has_last_stat = false;
};

// Parses "hakmem.<uid>.<pid>"; false for any other name.
bool parse_segment_name(const std::string& name, uid_t* uid, pid_t* pid);

class Registry {
 public:
  explicit Registry(std::string dir);
  ~Registry();

  const std::string& dir() const { return dir_; }

  // Full pass: opens new segments, retries not-ready ones, drops vanished, dead and stale ones.
  void scan();
  // inotify hints: a name appeared (or was written) / went away.
  void on_created(const std::string& name);
  void on_deleted(const std::string& name);
  // Segments seen but not ready yet (retried sooner than the periodic scan).
  // True while some not-ready segment was first seen recently (a process mid-start);
  // older ones are left to the periodic scan so a segment that never turns ready costs little.
  bool has_pending() const;
  void retry_pending();

  // Called once per newly registered process (config defaults hook in here).
  std::function<void(ProcessEntry&)> on_new;

  ProcessEntry* find(pid_t pid);
  // Entries sorted by pid, skipping faulted ones.
  std::vector<ProcessEntry*> list();
  size_t size() const { return entries_.size(); }

  // True when the process still exists and is the one the segment belongs to (not a reused
  // pid). A false result drops the entry (and unlinks its file when stale) at the next scan.
  bool still_alive(ProcessEntry& e);

  // Reads the segment into *out under a SIGBUS guard; false if the segment faulted.
  bool read_snapshot(ProcessEntry& e, hakmem::proto::Snapshot* out);
  // Reads the knob generations; false if the segment faulted.
  bool read_generations(ProcessEntry& e, uint64_t* generation, uint64_t* applied, uint64_t* applied_ns);
  // Writes the values (each clamped by the table already), then bumps the generation once with
  // release ordering. `old_values` receives the previous (clamped) values in the same order.
  bool write_knobs(ProcessEntry& e, const std::vector<KnobValue>& values, std::vector<uint64_t>* old_values,
                   uint64_t* new_generation);

 private:
  enum class OpenResult { Registered, NotReady, Rejected, Stale, Ignored };
  OpenResult try_open(const std::string& name);
  void reject(const std::string& name, ino_t ino, const std::string& reason);
  void remove_entry(pid_t pid, const char* why, bool unlink_file);
  bool unlink_if_same(const std::string& name, dev_t dev, ino_t ino);

  std::string dir_;
  std::map<pid_t, std::unique_ptr<ProcessEntry>> entries_;
  std::map<std::string, std::chrono::steady_clock::time_point> pending_;  // name -> first seen
  // name -> "inode:reason" last logged, so each hostile file is reported once.
  std::map<std::string, std::string> rejected_;
};

}  // namespace hakmemd
