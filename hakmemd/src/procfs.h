// What the daemon learns about a process from /proc and kill(2): liveness, start time
// (to tell a reused pid apart), page faults and resident size. Every function tolerates a
// process that vanishes between two reads (it reports "unknown", never throws).
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include <optional>

namespace hakmemd {

enum class Liveness { Alive, Dead, Unknown };

// kill(pid, 0): ESRCH means dead; EPERM still means the pid exists.
Liveness proc_liveness(pid_t pid);

struct ProcStat {
  uint64_t start_time_ticks = 0;  // field 22, clock ticks after boot
  uint64_t minflt = 0;            // field 10
  uint64_t majflt = 0;            // field 12
  uint64_t threads = 0;           // field 20
};

// Parses /proc/<pid>/stat (the comm field may hold spaces and parentheses).
std::optional<ProcStat> proc_stat(pid_t pid);
// Parses the text of a /proc/<pid>/stat file; exposed for the unit tests.
std::optional<ProcStat> proc_stat_parse(const char* text, size_t len);
// Resident bytes from /proc/<pid>/statm.
std::optional<uint64_t> proc_rss_bytes(pid_t pid);
// Seconds since boot, from /proc/uptime.
double proc_uptime_s();
// Seconds a process with this start time has been running (0 when unknown).
double proc_age_s(uint64_t start_time_ticks, double uptime_s);

}  // namespace hakmemd
