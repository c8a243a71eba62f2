// What the daemon learns about a process from /proc and kill(2): liveness, start time
// (to tell a reused pid apart), executable and command line, page faults and resident
// size. Every function tolerates a process that vanishes between two reads (it reports
// "unknown", never throws).
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include <optional>
#include <string>

namespace hakmemd {

enum class Liveness { Alive, Dead, Unknown };

// kill(pid, 0): ESRCH means dead; EPERM still means the pid exists.
Liveness proc_liveness(pid_t pid);

// Where exec(2) laid out the program: code, stack, data, brk, argv and environment
// (fields 26-28 and 45-51). A new program image gets new values (with ASLR all of them move;
// without it the binary and the argv/environment sizes differ), so an unchanged image means
// "no exec since". Only prctl(PR_SET_MM) changes them otherwise; callers treat any change as
// "look again", never as proof of an exec. Without ptrace read access the kernel shows
// constants here, and /proc/<pid>/maps is unreadable too.
struct ProcImage {
  uint64_t start_code = 0, end_code = 0, start_stack = 0;
  uint64_t start_data = 0, end_data = 0, start_brk = 0;
  uint64_t arg_start = 0, arg_end = 0, env_start = 0, env_end = 0;
  bool operator==(const ProcImage&) const = default;
};

struct ProcStat {
  uint64_t start_time_ticks = 0;  // field 22, clock ticks after boot
  uint64_t minflt = 0;            // field 10
  uint64_t majflt = 0;            // field 12
  uint64_t threads = 0;           // field 20
  ProcImage image;
};

// Parses /proc/<pid>/stat (the comm field may hold spaces and parentheses).
std::optional<ProcStat> proc_stat(pid_t pid);
// Parses the text of a /proc/<pid>/stat file; exposed for the unit tests.
std::optional<ProcStat> proc_stat_parse(const char* text, size_t len);
enum class MapCheck { Mapped, NotMapped, Unknown };
// Whether the process maps the file (dev, ino) named `name`, from /proc/<pid>/maps. A mapping
// matches by device and inode, or by inode and file name (overlayfs shows the upper layer's
// device in maps, not the one stat reports). Unknown when maps cannot be read (no ptrace
// read access: another user's process without CAP_SYS_PTRACE, a non-dumpable one; hidepid;
// the process is gone) or is empty (no address space: a zombie, or a leader thread that
// exited while others run). Reads until the first match; costs the target a read hold on
// its mmap lock, so callers keep it off per-request paths.
MapCheck proc_maps_file(pid_t pid, dev_t dev, ino_t ino, const char* name);
// The same over the text of a maps file; exposed for the unit tests.
MapCheck proc_maps_parse(const char* text, size_t len, dev_t dev, ino_t ino, const char* name);
// The executable, readlink(/proc/<pid>/exe). When that is refused (a process that made
// itself non-dumpable, or another user's, read without CAP_SYS_PTRACE): its argv[0] if that
// is an absolute path, the best name left for `ps` and the config's exe patterns. "" when
// neither is known (the process is gone).
std::string proc_exe(pid_t pid);
// argv[0] of a /proc/<pid>/cmdline text if it is an absolute path, else ""; exposed for the
// unit tests.
std::string argv0_path(const char* cmdline, size_t len);
// The command line, /proc/<pid>/cmdline with its arguments joined by spaces, at most
// `cap` bytes; "" when unreadable. Raw bytes: a program's arguments need not be UTF-8.
std::string proc_cmdline(pid_t pid, size_t cap = 4096);
// Resident bytes from /proc/<pid>/statm.
std::optional<uint64_t> proc_rss_bytes(pid_t pid);
// Seconds since boot, from /proc/uptime.
double proc_uptime_s();
// Seconds a process with this start time has been running (0 when unknown).
double proc_age_s(uint64_t start_time_ticks, double uptime_s);

}  // namespace hakmemd
