#include "procfs.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

}  // namespace

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
  return st;
}

std::optional<ProcStat> proc_stat(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  ssize_t n = read_small(path, buf, sizeof buf);
  if (n <= 0) return std::nullopt;
  return proc_stat_parse(buf, static_cast<size_t>(n));
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
