// Shared scaffolding of the workload programs: deterministic PRNG, scale parsing, timing,
// fault counting and the one result line the runner parses.
//
// Every workload uses plain malloc/free/new/delete so any allocator can be preloaded, and
// prints a checksum that depends only on the computation (never on addresses or thread
// interleaving): the runner compares it across allocators so a wrong result shows.
#pragma once

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace bench {

// splitmix64-seeded xoshiro256**: fast, good enough, and identical on every run.
class Rng {
 public:
  explicit Rng(uint64_t seed) {
    for (auto& w : s_) {
      seed += 0x9e3779b97f4a7c15ull;
      uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      w = z ^ (z >> 31);
    }
  }
  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  // Uniform in [lo, hi] (inclusive); the modulo bias is irrelevant at these ranges.
  uint64_t range(uint64_t lo, uint64_t hi) { return lo + next() % (hi - lo + 1); }
  // Log-uniform in [lo, hi]: as many blocks in 64K..128K as in 16M..32M.
  uint64_t log_range(uint64_t lo, uint64_t hi) {
    const int lo_bits = 63 - __builtin_clzll(lo);
    const int hi_bits = 63 - __builtin_clzll(hi);
    const int bits = static_cast<int>(range(lo_bits, hi_bits));
    const uint64_t base = 1ull << bits;
    uint64_t v = base + next() % base;
    if (v < lo) v = lo;
    if (v > hi) v = hi;
    return v;
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

// The order in which a probe frees n blocks: "alloc" (0 .. n-1), "reverse", or
// "scattered", a fixed pseudo-random permutation drawn from rng. False for another name.
inline bool free_order(long* perm, long n, const char* order, Rng& rng) {
  const bool reverse = !std::strcmp(order, "reverse"), scattered = !std::strcmp(order, "scattered");
  if (!reverse && !scattered && std::strcmp(order, "alloc")) return false;
  for (long i = 0; i < n; i++) perm[i] = reverse ? n - 1 - i : i;
  if (scattered) {
    for (long i = n - 1; i > 0; i--) {
      const long j = static_cast<long>(rng.next() % static_cast<uint64_t>(i + 1));
      const long t = perm[i];
      perm[i] = perm[j];
      perm[j] = t;
    }
  }
  return true;
}

// Scale of a run: full (the comparison), quick (a third or less), smoke (ctest: seconds).
enum class Scale { Smoke, Quick, Full };

struct Args {
  Scale scale = Scale::Full;
  int threads = 0;  // 0: the workload's own default
  // Picks n for the current scale.
  long pick(long full, long quick, long smoke) const {
    return scale == Scale::Full ? full : scale == Scale::Quick ? quick : smoke;
  }
  int threads_or(int dflt) const { return threads ? threads : dflt; }
};

inline Args parse_args(int argc, char** argv, const char* usage_extra = "") {
  Args a;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) {
      a.scale = Scale::Quick;
    } else if (!std::strcmp(argv[i], "--smoke")) {
      a.scale = Scale::Smoke;
    } else if (!std::strcmp(argv[i], "--full")) {
      a.scale = Scale::Full;
    } else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) {
      a.threads = std::atoi(argv[++i]);
      if (a.threads < 1 || a.threads > 256) {
        std::fprintf(stderr, "--threads must be 1..256\n");
        std::exit(2);
      }
    } else {
      std::fprintf(stderr, "usage: %s [--quick|--smoke|--full] [--threads N]%s\n", argv[0], usage_extra);
      std::exit(2);
    }
  }
  return a;
}

inline uint64_t now_ns(clockid_t clock = CLOCK_MONOTONIC) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// Soft (minor) page faults of the whole process so far, all threads included.
inline long minor_faults() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}

// Resident set size now, in MiB (/proc/self/statm), for the probes.
inline long rss_mib() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  long pages = 0, rss = 0;
  if (f) {
    if (std::fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
    std::fclose(f);
  }
  return rss * sysconf(_SC_PAGESIZE) >> 20;
}

// Peak resident set of this process in KiB (VmHWM). The runner cannot take it from wait4:
// a child's ru_maxrss also counts the parent's RSS from before exec. Read with plain
// syscalls into a stack buffer so measuring does not allocate.
inline long peak_rss_kib() {
  char buf[8192];
  const int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  const ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = '\0';
  const char* p = std::strstr(buf, "VmHWM:");
  return p ? std::strtol(p + 6, nullptr, 10) : -1;
}

// Brackets the timed (steady-state) part of a workload.
class Timer {
 public:
  void start() {
    faults0_ = minor_faults();
    cpu0_ = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    t0_ = now_ns();
  }
  void stop() {
    t1_ = now_ns();
    cpu1_ = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    faults1_ = minor_faults();
  }
  // Wall time: the figure compared. CPU time (all threads, user+sys) shows how much of it
  // was waiting (locks, a busy machine) rather than working.
  uint64_t ns() const { return t1_ - t0_; }
  uint64_t cpu_ns() const { return cpu1_ - cpu0_; }
  long faults() const { return faults1_ - faults0_; }

 private:
  uint64_t t0_ = 0, t1_ = 0, cpu0_ = 0, cpu1_ = 0;
  long faults0_ = 0, faults1_ = 0;
};

// Makes the compiler believe p's memory is read and written: without it GCC may elide a
// malloc/free pair whose block never escapes.
inline void escape(void* p) { asm volatile("" : : "g"(p) : "memory"); }

// The one line the runner parses: "hakmem-bench key=value ...".
//   value / unit : the workload's time metric (ns per iteration, per object or per op)
//   ops          : iterations measured;  time_ns / cpu_ns: wall / CPU time of the timed part
//   faults       : minor faults in the timed part
//   peak_rss_kib : VmHWM at the end (after the timed part, before exit)
//   checksum     : allocator-independent result of the computation
inline void report(const char* name, const Timer& t, long ops, const char* unit, uint64_t checksum) {
  const double per_op = ops > 0 ? static_cast<double>(t.ns()) / static_cast<double>(ops) : 0.0;
  std::printf("hakmem-bench name=%s value=%.3f unit=%s ops=%ld time_ns=%" PRIu64 " cpu_ns=%" PRIu64
              " faults=%ld faults_per_op=%.4f peak_rss_kib=%ld checksum=%016" PRIx64 "\n",
              name, per_op, unit, ops, t.ns(), t.cpu_ns(), t.faults(),
              ops > 0 ? static_cast<double>(t.faults()) / static_cast<double>(ops) : 0.0, peak_rss_kib(),
              checksum);
  std::fflush(stdout);
}

// Order-independent mixing of per-thread results into one checksum.
inline uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h;
}

}  // namespace bench
