#include "procfs.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <unistd.h>

namespace hakmemd {
namespace {

// Reads a small /proc file into buf (NUL-terminated); returns the length or -1.
ssize_t read_small(const char* path, char* buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  size_t n = 0;
  while (n + 1 < cap) {
    ssize_t r = read(fd, buf + n, cap - 1 - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    n += static_cast<size_t>(r);
  }
  close(fd);
  buf[n] = 0;
  return static_cast<ssize_t>(n);
}

// What proc_maps_* look for: the segment file, by device and inode, or by inode and name.
struct MapTarget {
  uint64_t major, minor, ino;
  const char* name;
  size_t name_len;
};

MapTarget map_target(dev_t dev, ino_t ino, const char* name) {
  return MapTarget{major(dev), minor(dev), static_cast<uint64_t>(ino), name, strlen(name)};
}

// Parses a number in `base` at p (stops at the first non-digit); false when there is none.
bool parse_num(const char*& p, const char* end, unsigned base, uint64_t* out) {
  uint64_t v = 0;
  const char* start = p;
  for (; p < end; p++) {
    unsigned d;
    if (*p >= '0' && *p <= '9') d = static_cast<unsigned>(*p - '0');
    else if (base == 16 && *p >= 'a' && *p <= 'f') d = static_cast<unsigned>(*p - 'a' + 10);
    else break;
    v = v * base + d;
  }
  *out = v;
  return p != start;
}

// One maps line, "start-end perms offset major:minor inode   path", without its newline.
bool map_line_matches(const char* p, const char* end, const MapTarget& t) {
  for (int field = 0; field < 3; field++) {  // range, perms, offset
    while (p < end && *p != ' ') p++;
    while (p < end && *p == ' ') p++;
  }
  uint64_t maj, min, ino;
  if (!parse_num(p, end, 16, &maj) || p >= end || *p++ != ':' || !parse_num(p, end, 16, &min)) return false;
  while (p < end && *p == ' ') p++;
  if (!parse_num(p, end, 10, &ino) || ino != t.ino) return false;
  if (maj == t.major && min == t.minor) return true;
  while (p < end && *p == ' ') p++;
  const char* base = end;
  while (base > p && base[-1] != '/') base--;
  return static_cast<size_t>(end - base) == t.name_len && memcmp(base, t.name, t.name_len) == 0;
}

}  // namespace

MapCheck proc_maps_parse(const char* text, size_t len, dev_t dev, ino_t ino, const char* name) {
  if (len == 0) return MapCheck::Unknown;
  const MapTarget t = map_target(dev, ino, name);
  const char* end = text + len;
  for (const char* p = text; p < end;) {
    const char* nl = static_cast<const char*>(memchr(p, '\n', static_cast<size_t>(end - p)));
    const char* eol = nl ? nl : end;
    if (map_line_matches(p, eol, t)) return MapCheck::Mapped;
    p = eol + 1;
  }
  return MapCheck::NotMapped;
}

MapCheck proc_maps_file(pid_t pid, dev_t dev, ino_t ino, const char* name) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/maps", static_cast<int>(pid));
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return MapCheck::Unknown;
  const MapTarget t = map_target(dev, ino, name);
  // Streamed: a large process has megabytes of maps, and the first match ends the read.
  char buf[16384];
  size_t len = 0, total = 0;
  bool skipping = false;  // inside a line longer than buf (no path is): ignore it
  MapCheck result = MapCheck::NotMapped;
  for (;;) {
    ssize_t r = read(fd, buf + len, sizeof buf - len);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      result = MapCheck::Unknown;
      break;
    }
    if (r == 0) {
      if (len > 0 && !skipping && map_line_matches(buf, buf + len, t)) result = MapCheck::Mapped;
      break;
    }
    total += static_cast<size_t>(r);
    len += static_cast<size_t>(r);
    size_t start = 0;
    bool found = false;
    while (const char* nl = static_cast<const char*>(memchr(buf + start, '\n', len - start))) {
      const size_t eol = static_cast<size_t>(nl - buf);
      if (!skipping && map_line_matches(buf + start, nl, t)) {
        found = true;
        break;
      }
      skipping = false;
      start = eol + 1;
    }
    if (found) {
      result = MapCheck::Mapped;
      break;
    }
    if (start == 0 && len == sizeof buf) {
      skipping = true;
      len = 0;
    } else {
      memmove(buf, buf + start, len - start);
      len -= start;
    }
  }
  close(fd);
  return total == 0 ? MapCheck::Unknown : result;
}

Liveness proc_liveness(pid_t pid) {
  if (pid <= 0) return Liveness::Dead;
  if (kill(pid, 0) == 0) return Liveness::Alive;
  if (errno == ESRCH) return Liveness::Dead;
  if (errno == EPERM) return Liveness::Alive;
  return Liveness::Unknown;
}

std::optional<ProcStat> proc_stat_parse(const char* text, size_t len) {
  // The comm field (2) is "(...)" and may contain anything; fields resume after the last ')'.
  const char* end = text + len;
  const char* rp = nullptr;
  for (const char* p = text; p < end; p++)
    if (*p == ')') rp = p;
  if (!rp) return std::nullopt;
  const char* p = rp + 1;
  uint64_t field[64] = {};
  int idx = 3;  // the next field is number 3 (state)
  while (p < end && idx < 64) {
    while (p < end && *p == ' ') p++;
    if (p >= end || *p == '\n') break;
    const char* tok = p;
    while (p < end && *p != ' ' && *p != '\n') p++;
    if (idx > 3) {
      uint64_t v = 0;
      bool neg = false;
      const char* q = tok;
      if (*q == '-') { neg = true; q++; }
      for (; q < p && *q >= '0' && *q <= '9'; q++) v = v * 10 + static_cast<uint64_t>(*q - '0');
      field[idx] = neg ? 0 : v;
    }
    idx++;
  }
  if (idx <= 22) return std::nullopt;
  ProcStat st;
  st.minflt = field[10];
  st.majflt = field[12];
  st.threads = field[20];
  st.start_time_ticks = field[22];
  // Fields a kernel does not print (45-51 before 3.5) stay 0: a constant, like no access.
  st.image = ProcImage{field[26], field[27], field[28], field[45], field[46],
                       field[47], field[48], field[49], field[50], field[51]};
  return st;
}

std::optional<ProcStat> proc_stat(pid_t pid) {
  char path[64], buf[2048];
  snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  ssize_t n = read_small(path, buf, sizeof buf);
  if (n <= 0) return std::nullopt;
  return proc_stat_parse(buf, static_cast<size_t>(n));
}

std::string argv0_path(const char* cmdline, size_t len) {
  if (len == 0 || cmdline[0] != '/') return std::string();
  return std::string(cmdline, strnlen(cmdline, len));
}

std::string proc_exe(pid_t pid) {
  char path[64], buf[4096];
  snprintf(path, sizeof path, "/proc/%d/exe", static_cast<int>(pid));
  ssize_t n = readlink(path, buf, sizeof buf);
  if (n > 0) return std::string(buf, static_cast<size_t>(n));
  if (errno != EACCES && errno != EPERM) return std::string();
  snprintf(path, sizeof path, "/proc/%d/cmdline", static_cast<int>(pid));
  n = read_small(path, buf, sizeof buf);
  return n > 0 ? argv0_path(buf, static_cast<size_t>(n)) : std::string();
}

std::string proc_cmdline(pid_t pid, size_t cap) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/cmdline", static_cast<int>(pid));
  std::string buf(cap + 1, '\0');
  ssize_t n = read_small(path, buf.data(), buf.size());
  if (n <= 0) return std::string();
  buf.resize(static_cast<size_t>(n));
  // Arguments are NUL-separated, the last one NUL-terminated.
  while (!buf.empty() && buf.back() == '\0') buf.pop_back();
  for (char& c : buf)
    if (c == '\0') c = ' ';
  return buf;
}

std::optional<uint64_t> proc_rss_bytes(pid_t pid) {
  char path[64], buf[256];
  snprintf(path, sizeof path, "/proc/%d/statm", static_cast<int>(pid));
  if (read_small(path, buf, sizeof buf) <= 0) return std::nullopt;
  unsigned long long size = 0, resident = 0;
  if (sscanf(buf, "%llu %llu", &size, &resident) != 2) return std::nullopt;
  return static_cast<uint64_t>(resident) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

double proc_uptime_s() {
  char buf[128];
  if (read_small("/proc/uptime", buf, sizeof buf) <= 0) return 0;
  return strtod(buf, nullptr);
}

double proc_age_s(uint64_t start_time_ticks, double uptime_s) {
  static const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  double age = uptime_s - static_cast<double>(start_time_ticks) / hz;
  return age > 0 ? age : 0;
}

}  // namespace hakmemd
