// Discovery: which processes run libhakmem right now, found by their segments in one folder.
//
// A file enters the registry only after every check passes: name hakmem.<uid>.<pid>, a regular
// file owned by that uid, not group/world-writable, at least sizeof(Segment), validate_segment()
// Ok, header pid/uid equal to the name, process alive with the start time the header records.
// Hostile or broken files are skipped and logged once per (file, reason); a file of a dead
// process (or of an earlier process with a reused pid) is stale and gets unlinked.
//
// So is the file of a process that exec'd a program without hakmem: it keeps its pid and start
// time and never ran hakmem's exit code, but exec dropped its mapping of the segment. Every
// process running hakmem maps its own segment before setting `ready` (a fork child creates and
// maps a new file of its own; its inherited view of the parent's is no concern of the
// parent's entry), so a registered segment that its pid no longer maps is left over. scan()
// looks at /proc/<pid>/maps only when the program image in /proc/<pid>/stat differs from the
// one last seen mapping it (an exec changes it), and drops the entry once the segment has
// stayed unmapped for `unmapped_grace`: a program that exec'd into hakmem replaces the file
// itself within that time. A process whose maps it cannot read (another user's, without
// CAP_SYS_PTRACE) is never dropped this way.
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

// A config site rule naming a bare function (`site=build_json`), followed in one process by
// sites.cc: the function's call sites are known only as the process samples them, so the
// daemon installs each one, under one rule id, as it appears in the site table.
struct FollowedRule {
  std::string exe;                 // the config entry's exe pattern
  std::string rule;                // its rule text, as in the config
  std::string function;            // the site: the function's name
  uint32_t id = 0;                 // its rule id in the RuleBlock; 0 until a call site is installed
  std::vector<uint64_t> installed; // call sites written into rule slots
  std::vector<uint64_t> waiting;   // call sites found but not installed for want of a free slot
  std::string reason;              // why nothing is installed yet (rules_list shows it)
  bool full_logged = false;        // "rule table full" was logged (once until a site fits again)
};

struct ProcessEntry {
  pid_t pid = 0;
  uid_t uid = 0;
  uint64_t start_time_ticks = 0;
  std::string name;      // file name in the segment folder
  dev_t dev = 0;
  ino_t ino = 0;
  std::string exe;       // /proc/<pid>/exe at registration ("" when unreadable)
  std::string cmdline;   // /proc/<pid>/cmdline at registration, arguments joined by spaces
  std::string lib_version;
  SegmentMap map;
  uint64_t knob_set_mask = 0;  // knobs this daemon has written (get's "source": "set")
  bool faulted = false;        // the file shrank under the mapping: dropped at the next scan
  ProcStat last_stat;          // /proc/<pid>/stat as still_alive() last read it (saves a re-read)
  bool has_last_stat = false;
  ProcImage mapped_image;      // the program image whose maps last showed the segment
  bool has_mapped_image = false;
  bool unmapped = false;       // maps showed no segment at the last look, first at unmapped_since
  std::chrono::steady_clock::time_point unmapped_since;
  std::vector<FollowedRule> followed_rules;   // config rules naming a function (sites.cc)
  std::vector<uint64_t> followed_sites_seen;  // sampled sites (sorted) they were last matched against
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
  // How long a registered segment must stay unmapped by its process before scan() removes it
  // as left behind by an exec (tests shorten it).
  std::chrono::milliseconds unmapped_grace{1000};

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
  // True when e's process exec'd away from its segment (see the file comment).
  bool left_by_exec(ProcessEntry& e, std::chrono::steady_clock::time_point now);
  bool unlink_if_same(const std::string& name, dev_t dev, ino_t ino);

  std::string dir_;
  std::map<pid_t, std::unique_ptr<ProcessEntry>> entries_;
  std::map<std::string, std::chrono::steady_clock::time_point> pending_;  // name -> first seen
  // name -> "inode:reason" last logged, so each hostile file is reported once.
  std::map<std::string, std::string> rejected_;
};

}  // namespace hakmemd
