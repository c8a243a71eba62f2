// Helpers shared by the stress and fault programs: a deterministic PRNG, content cookies,
// RSS, "is hakmem really the allocator here?", and a view of the process's own segment.
// The programs are plain executables: ctest preloads libhakmem into them, and run without
// a preload they exercise glibc, which is how the harnesses themselves are checked.
#pragma once

#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hakmem/proto/segment.h"
#include "hakmem/proto/snapshot.h"

namespace harness {

[[noreturn]] inline void fail(const char* fmt, ...) {
  fflush(stdout);
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "FAIL: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  fflush(stderr);
  _exit(1);
}

#define HARNESS_CHECK(cond, ...) \
  do {                           \
    if (!(cond)) ::harness::fail(__VA_ARGS__); \
  } while (0)

// splitmix64: fast, deterministic, good enough to pick sizes and victims.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9e3779b97f4a7c15ull + 1) {}
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  uint64_t below(uint64_t n) { return n ? next() % n : 0; }
};

// A size from all four tiers: mostly tiny, some pool, fewer bundle and whale blocks
// (up to max_size, a few MiB).
inline size_t random_size(Rng& r, size_t max_size = 4u << 20) {
  uint64_t p = r.below(1000);
  size_t s;
  if (p < 700) s = 1 + r.below(1024);                        // tiny
  else if (p < 900) s = 1025 + r.below(32 * 1024 - 1025);   // pool
  else if (p < 985) s = 32 * 1024 + r.below(1024 * 1024 - 32 * 1024);  // bundle
  else s = (1u << 20) + 1 + r.below(max_size - (1u << 20));  // whale
  return s < max_size ? s : max_size;
}

// Content cookies: a pattern derived from (block, size, tag) at the start, the end and at
// every 4 KiB in between, so a block handed out twice or overwritten by the allocator's
// free-list links is caught by whoever checks it next.
inline uint8_t cookie_byte(const void* p, size_t size, uint64_t tag, size_t off) {
  uint64_t x = reinterpret_cast<uintptr_t>(p) ^ (size * 0x9e3779b97f4a7c15ull) ^ tag ^ (off * 0xff51afd7ed558ccdull);
  x ^= x >> 29;
  return static_cast<uint8_t>(x ^ (x >> 8));
}
template <typename F>
inline void cookie_positions(size_t size, F f) {
  size_t head = size < 32 ? size : 32;
  for (size_t i = 0; i < head; i++) f(i);
  for (size_t i = 4096; i + 32 < size; i += 4096) f(i);
  for (size_t i = size > 64 ? size - 32 : head; i < size; i++) f(i);
}
inline void cookie_fill(void* p, size_t size, uint64_t tag) {
  uint8_t* b = static_cast<uint8_t*>(p);
  cookie_positions(size, [&](size_t i) { b[i] = cookie_byte(p, size, tag, i); });
}
inline bool cookie_ok(const void* p, size_t size, uint64_t tag) {
  const uint8_t* b = static_cast<const uint8_t*>(p);
  bool ok = true;
  cookie_positions(size, [&](size_t i) { ok = ok && b[i] == cookie_byte(p, size, tag, i); });
  return ok;
}

// Resident set size of this process in bytes.
inline size_t rss_bytes() {
  int fd = open("/proc/self/statm", O_RDONLY);
  if (fd < 0) return 0;
  char buf[128] = {};
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  unsigned long size = 0, resident = 0;
  if (sscanf(buf, "%lu %lu", &size, &resident) != 2) return 0;
  return resident * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

// Threads of this process ("Threads:" in /proc/self/status), -1 when unreadable.
inline int threads_now() {
  FILE* f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  int n = -1;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "Threads:", 8)) n = atoi(line + 8);
  fclose(f);
  return n;
}

// When HAKMEM_EXPECT=1 (set by ctest next to LD_PRELOAD), refuses to run unless this
// process's malloc really resolves into libhakmem: a preload the loader ignored, or a
// library that does not interpose malloc, would otherwise pass every test against glibc.
inline bool in_libhakmem(void* sym) {
  Dl_info info{};
  return sym != nullptr && dladdr(sym, &info) != 0 && info.dli_fname != nullptr &&
         strstr(info.dli_fname, "libhakmem") != nullptr;
}
inline void require_hakmem_if_expected() {
  const char* e = getenv("HAKMEM_EXPECT");
  if (e == nullptr || strcmp(e, "1") != 0) return;
  void* m = dlsym(RTLD_DEFAULT, "malloc");
  if (in_libhakmem(m)) return;
  const char* pre = getenv("LD_PRELOAD");
  Dl_info info{};
  if (m) dladdr(m, &info);
  fail("HAKMEM_EXPECT=1 but malloc resolves to %s, not libhakmem (LD_PRELOAD=%s)",
       info.dli_fname ? info.dli_fname : "?", pre ? pre : "(unset)");
}
inline bool hakmem_active() { return in_libhakmem(dlsym(RTLD_DEFAULT, "malloc")); }

// The process's own shared-memory segment, mapped read/write: the stress and fault tests
// play hakmemd (or a hostile writer) against themselves.
struct OwnSegment {
  hakmem::proto::Segment* seg = nullptr;
  size_t size = 0;
  char path[512] = {};

  // Opens <HAKMEM_SHM_DIR or /dev/shm>/hakmem.<uid>.<pid>; false when it does not exist or
  // does not validate (the reason is printed).
  bool open_own() {
    const char* dir = getenv(hakmem::proto::kShmDirEnv);
    if (dir == nullptr || *dir == 0) dir = hakmem::proto::kDefaultShmDir;
    if (!hakmem::proto::segment_path(dir, getuid(), getpid(), path, sizeof path)) return false;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      fprintf(stderr, "segment %s: %s\n", path, strerror(errno));
      return false;
    }
    struct stat st{};
    if (fstat(fd, &st) != 0) { close(fd); return false; }
    void* p = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return false;
    auto check = hakmem::proto::validate_segment(p, static_cast<size_t>(st.st_size));
    if (check != hakmem::proto::SegmentCheck::Ok) {
      fprintf(stderr, "segment %s: %s\n", path, hakmem::proto::segment_check_text(check));
      munmap(p, static_cast<size_t>(st.st_size));
      return false;
    }
    seg = static_cast<hakmem::proto::Segment*>(p);
    size = static_cast<size_t>(st.st_size);
    return true;
  }
  // Writes a knob the way hakmemd does: value first, then the generation (release).
  void set_knob(hakmem::proto::Knob k, uint64_t v) {
    seg->knobs.value[static_cast<size_t>(k)].store(v, std::memory_order_relaxed);
    seg->knobs.generation.fetch_add(1, std::memory_order_release);
  }
  hakmem::proto::Snapshot snap() const {
    hakmem::proto::Snapshot s;
    hakmem::proto::snapshot(*seg, &s);
    return s;
  }
  ~OwnSegment() {
    if (seg) munmap(seg, size);
  }
};

// allocs - frees summed over all tiers.
inline int64_t live_objects(const hakmem::proto::Snapshot& s) {
  int64_t n = 0;
  for (size_t t = 0; t < hakmem::proto::kTierCount; t++)
    n += static_cast<int64_t>(s.tier[t].allocs()) - static_cast<int64_t>(s.tier[t].frees());
  return n;
}

// Seconds of CLOCK_MONOTONIC, for bounding how long a loop runs (never asserted on).
inline double now_s() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// "--name value" from argv, or a default.
inline double arg_num(int argc, char** argv, const char* name, double def) {
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], name) == 0) return atof(argv[i + 1]);
  return def;
}

}  // namespace harness
