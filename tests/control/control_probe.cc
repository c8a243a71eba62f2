// A real program for the end-to-end tests, run with libhakmem preloaded. It finds its own
// segment the way hakmemd does (path from uid + pid, validate_segment), runs a sequence of
// steps given on the command line, and prints what each step changed as "key value" lines
// for control_e2e_test to assert on. It does not link libhakmem; the C API is reached with
// dlsym, as a program that merely tolerates hakmem would.
//
// Steps (each one argument, words separated by spaces):
//   header                      segment header fields and file mode
//   knobs                       knob values in effect (C API) and in the block
//   hold SIZE N                 N mallocs of SIZE kept (touching every page)
//   release                     frees everything held
//   churn SIZE N                N times malloc(SIZE), touch every page, free
//   write KNOB VALUE            as hakmemd does: value, then generation++; then allocates
//                               until the process has applied the generation
//   quietwrite KNOB VALUE [wake] the same write, then no allocation at all: waits up to 3 s
//                               for the process to apply it; "quiet_applied_ms" (or -1).
//                               With "wake", wakes the knob futex word as hakmemd does
//   garbage                     writes 0xdeadbeef.. into every knob value (daemon-style)
//   set KNOB VALUE              hakmem_knob_set() through the C API
//   badfree                     free() of a pointer hakmem never returned
//   usable SIZE                 malloc_usable_size of a fresh block
//   mallinfo                    mallinfo2() fields; malloc_info() to stdout; malloc_stats()
//   fork SIZE N                 the child checks its own segment and allocates N x SIZE,
//                               reporting as "child.*"; the parent reports its own deltas
//   spawn [STEP [A [B]]]        fork + exec of this probe (preloaded too) running the one
//                               step "STEP A B" (default "late"), as a shell runs a command;
//                               its lines come back as "spawn.*"
//   late                        allocates until this process's segment exists (5 s at
//                               most): "late.ms_until_segment", then the header's fields
//   bigidle MIB                 a block of MIB MiB, then one of 2 MiB (the first check
//                               after the first block's mapping), and no other allocation:
//                               whether this process's segment existed before and after
//                               ("bigidle.segment_before", ".segment_after")
//   threadidle                  one malloc, then a thread that makes one malloc and ends,
//                               and no other allocation: whether this process's segment
//                               existed before the thread and after the join
//                               ("threadidle.segment_before", ".segment_after")
//   latechurn T N               T threads at a time, each N mallocs of 48 B kept and then
//                               freed, started and joined again and again until this
//                               process's segment exists and twice more, the main thread
//                               making 3000 malloc/free pairs of 48 B each round (a thread
//                               that lives through the publication and seldom checks),
//                               then 5000 more pairs (a check is due every 4096):
//                               "latechurn.mallocs" (all of these), ".tiny_allocs" (the
//                               segment's), ".threads_live"
//   forkexec                    fork, and exec /bin/true without the preload in the child
//   threads N                   N threads alive at once, each allocating; slot figures
//   sleep MS                    sleeps, allocating nothing (what hakmem's own thread did)
//   thp                         of the blocks held, how many lie in a mapping with the
//                               MADV_HUGEPAGE flag ("hg" in /proc/self/smaps): s<step>.thp_held,
//                               s<step>.held; s<step>.anon_huge_kib: their mappings' AnonHugePages
//   tasks N                     no allocation: waits up to 3 s for the process to have N
//                               threads (/proc/self/status); "s<step>.tasks" (the count at
//                               the end) and "s<step>.tasks_ms" (when it matched, or -1)
//   storm N                     4 threads allocate in every tier while the main thread
//                               writes N knob values (some garbage) daemon-style; then
//                               each thread must apply the last generation
// After every counting step the deltas of all counters are printed as
// "s<step>.<tier>.<counter> <delta>" plus "s<step>.malloc_faults" and "s<step>.touch_faults".
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hakmem/proto/snapshot.h"
#include "harness.h"

using namespace hakmem::proto;

namespace {

Segment* g_seg = nullptr;
char g_path[4096];
constexpr size_t kMaxHeld = 1 << 16;
void* g_held[kMaxHeld];
size_t g_held_n = 0;
Snapshot g_before, g_after;

[[noreturn]] void die(const char* what) {
  fprintf(stderr, "control_probe: %s\n", what);
  exit(2);
}

uint64_t minflt() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<uint64_t>(ru.ru_minflt);
}

void open_segment() {
  const char* dir = getenv(kShmDirEnv);
  if (!dir || !*dir) dir = kDefaultShmDir;
  if (!segment_path(dir, getuid(), getpid(), g_path, sizeof g_path)) die("path too long");
  int fd = open(g_path, O_RDWR | O_NOFOLLOW);
  if (fd < 0) return;  // no segment: steps that need one fail loudly
  struct stat st;
  if (fstat(fd, &st) != 0) die("fstat");
  void* m = mmap(nullptr, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (m == MAP_FAILED) die("mmap");
  if (validate_segment(m, st.st_size) != SegmentCheck::Ok) die("segment does not validate");
  g_seg = static_cast<Segment*>(m);
}

Segment& seg() {
  if (!g_seg) die("no segment found for this process");
  return *g_seg;
}

void touch(void* p, size_t size) {
  volatile char* c = static_cast<volatile char*>(p);
  for (size_t o = 0; o < size; o += 4096) c[o] = 1;
  if (size) c[size - 1] = 1;
}

template <typename F>
F api(const char* name) {
  void* f = dlsym(RTLD_DEFAULT, name);
  if (!f) die("libhakmem's C API not found (is it preloaded?)");
  return reinterpret_cast<F>(f);
}

void print_deltas(int step, uint64_t malloc_faults, uint64_t touch_faults) {
  for (size_t t = 0; t < kTierCount; t++) {
    const TierSnapshot& a = g_before.tier[t];
    const TierSnapshot& b = g_after.tier[t];
    for (size_t c = 0; c < kThreadCounterCount; c++)
      printf("s%d.%s.%s %lld\n", step, kTierNames[t], kThreadCounters[c].name,
             static_cast<long long>(b.thread[c] - a.thread[c]));
    for (size_t c = 0; c < kGlobalCounterCount; c++)
      printf("s%d.%s.%s %lld\n", step, kTierNames[t], kGlobalCounters[c].name,
             static_cast<long long>(b.global[c] - a.global[c]));
    printf("s%d.%s.live %lld\n", step, kTierNames[t],
           static_cast<long long>(b.live_bytes()) - static_cast<long long>(a.live_bytes()));
    printf("s%d.%s.hits %lld\n", step, kTierNames[t],
           static_cast<long long>(b.hits()) - static_cast<long long>(a.hits()));
  }
  printf("s%d.malloc_faults %llu\ns%d.touch_faults %llu\n", step,
         static_cast<unsigned long long>(malloc_faults), step, static_cast<unsigned long long>(touch_faults));
}

// Allocates in every tier until this process has applied knob generation `gen` (each
// thread applies on a slow path, which the mixed sizes reach quickly). Bounded: not a
// timing loop, a count of operations.
bool wait_applied(uint64_t gen) {
  static const size_t sizes[] = {24, 200, 4096, 20000, 100000, 2u << 20};
  for (int i = 0; i < 200000; i++) {
    if (seg().knobs.applied_generation.load(std::memory_order_acquire) >= gen) return true;
    // Through a volatile: the compiler may not elide the pair.
    void* volatile p = malloc(sizes[i % 6]);
    free(p);
  }
  return seg().knobs.applied_generation.load(std::memory_order_acquire) >= gen;
}

void daemon_write(size_t index, uint64_t value) {
  seg().knobs.value[index].store(value, std::memory_order_relaxed);
  uint64_t gen = seg().knobs.generation.fetch_add(1, std::memory_order_release) + 1;
  printf("applied %d\n", wait_applied(gen) ? 1 : 0);
}

// Waits up to 3 s, allocating nothing, until done() holds; the milliseconds it took, or -1.
template <typename F>
long wait_ms(F done) {
  timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < 300; i++) {
    if (done()) {
      clock_gettime(CLOCK_MONOTONIC, &t1);
      return (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    }
    usleep(10000);
  }
  return -1;
}

// The mappings of /proc/self/smaps: range, MADV_HUGEPAGE flag, AnonHugePages.
struct Vma {
  uintptr_t lo, hi;
  bool hg;
  long anon_huge_kib;
};

size_t read_vmas(Vma* out, size_t max) {
  FILE* f = fopen("/proc/self/smaps", "r");
  if (!f) die("/proc/self/smaps");
  char line[512];
  size_t n = 0;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    long kib;
    if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
      if (n == max) break;
      out[n++] = {lo, hi, false, 0};
    } else if (n && sscanf(line, "AnonHugePages: %ld kB", &kib) == 1) {
      out[n - 1].anon_huge_kib = kib;
    } else if (n && !strncmp(line, "VmFlags:", 8)) {
      out[n - 1].hg = strstr(line, " hg") != nullptr;
    }
  }
  fclose(f);
  return n;
}

void print_thp(int step) {
  static Vma vmas[8192];
  const size_t n = read_vmas(vmas, 8192);
  static bool counted[8192];
  memset(counted, 0, sizeof counted);
  size_t thp = 0;
  long huge_kib = 0;
  for (size_t i = 0; i < g_held_n; i++) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(g_held[i]);
    for (size_t v = 0; v < n; v++) {
      if (a < vmas[v].lo || a >= vmas[v].hi) continue;
      thp += vmas[v].hg;
      if (!counted[v]) huge_kib += vmas[v].anon_huge_kib;
      counted[v] = true;
      break;
    }
  }
  printf("s%d.thp_held %zu\ns%d.held %zu\ns%d.anon_huge_kib %ld\n", step, thp, step, g_held_n, step, huge_kib);
}

void print_header() {
  const SegmentHeader& h = seg().header;
  struct stat st;
  if (lstat(g_path, &st) != 0) die("lstat");
  printf("path %s\nmode %o\nowner %u\nsize_ok %d\n", g_path, st.st_mode & 07777, st.st_uid,
         st.st_size >= static_cast<off_t>(sizeof(Segment)) ? 1 : 0);
  // Clock ticks after boot: when this process started (field 22 of /proc/self/stat), when its
  // segment was created, and now.
  unsigned long long start = 0;
  char stat[1024];
  if (FILE* f = fopen("/proc/self/stat", "r")) {
    size_t n = fread(stat, 1, sizeof stat - 1, f);
    fclose(f);
    stat[n] = 0;
    const char* p = strrchr(stat, ')');
    for (int field = 2; p && field < 22; field++) p = strchr(p + 1, ' ');
    if (p) start = strtoull(p + 1, nullptr, 10);
  }
  timespec boot;
  clock_gettime(CLOCK_BOOTTIME, &boot);
  const long hz = sysconf(_SC_CLK_TCK);
  printf("pid %d\nmy_pid %d\nuid %u\nlib_version %s\n", h.pid, getpid(), h.uid, h.lib_version);
  printf("start_ticks %llu\ncreated_ticks %llu\nnow_ticks %llu\n", start,
         static_cast<unsigned long long>(h.created_boot_ticks),
         static_cast<unsigned long long>(boot.tv_sec * hz + boot.tv_nsec / (1000000000 / hz)));
  printf("tiny_class_count %u\n", h.tiny_class_count);
  printf("threads_live %u\n", seg().global.threads_live.load());
}

void print_knobs() {
  auto get = api<int (*)(const char*, uint64_t*)>("hakmem_knob_get");
  for (const KnobInfo& k : kKnobs) {
    uint64_t v = 0;
    if (get(k.name, &v) != 0) die("hakmem_knob_get failed");
    printf("knob.%s %llu\n", k.name, static_cast<unsigned long long>(v));
    if (g_seg)
      printf("block.%s %llu\n", k.name,
             static_cast<unsigned long long>(g_seg->knobs.value[static_cast<size_t>(k.id)].load()));
  }
  if (g_seg) {
    printf("env_mask %llu\ngeneration %llu\napplied_generation %llu\n",
           static_cast<unsigned long long>(g_seg->knobs.env_mask.load()),
           static_cast<unsigned long long>(g_seg->knobs.generation.load()),
           static_cast<unsigned long long>(g_seg->knobs.applied_generation.load()));
  }
}

// Runs in the fork child: its own segment, the parent's knob values, fresh counters.
// This process's segment path, as hakmemd derives it.
void own_segment_path(char* path, size_t cap) {
  const char* dir = getenv(kShmDirEnv);
  if (!dir || !*dir) dir = kDefaultShmDir;
  segment_path(dir, getuid(), getpid(), path, cap);
}

// Allocates until `path` exists (5 s at most); returns the milliseconds that took. A
// process published late (a fork child, a command a hakmem process started) creates its
// file at a periodic check kChildPublishDelayNs after its first one.
long ms_until_file(const char* path) {
  timespec t0{}, t1{};
  clock_gettime(CLOCK_MONOTONIC, &t0);
  long ms = 0;
  while (access(path, F_OK) != 0 && ms < 5000) {
    for (int j = 0; j < 64; j++) { void* volatile q = malloc(48); free(q); }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
  }
  return ms;
}

void fork_child(size_t size, size_t n, int fd) {
  char path[4096];
  own_segment_path(path, sizeof path);
  char out[4096];
  int len = 0;
  len += snprintf(out + len, sizeof out - len, "child.segment_at_fork %d\n", access(path, F_OK) == 0 ? 1 : 0);
  len += snprintf(out + len, sizeof out - len, "child.ms_until_segment %ld\n", ms_until_file(path));
  int sfd = open(path, O_RDONLY | O_NOFOLLOW);
  len += snprintf(out + len, sizeof out - len, "child.segment %d\n", sfd >= 0 ? 1 : 0);
  if (sfd >= 0) {
    void* m = mmap(nullptr, sizeof(Segment), PROT_READ, MAP_SHARED, sfd, 0);
    close(sfd);
    const Segment* s = static_cast<const Segment*>(m);
    Snapshot a, b;
    snapshot(*s, &a);
    for (size_t i = 0; i < n && i < kMaxHeld; i++) g_held[i] = malloc(size);
    snapshot(*s, &b);
    uint64_t allocs = 0, before = 0;
    for (size_t t = 0; t < kTierCount; t++) { allocs += b.tier[t].allocs(); before += a.tier[t].allocs(); }
    len += snprintf(out + len, sizeof out - len,
                    "child.valid %d\nchild.header_pid_ok %d\nchild.tiny_cap %llu\nchild.allocs_delta %llu\n"
                    "child.threads_live %u\n",
                    validate_segment(m, sizeof(Segment)) == SegmentCheck::Ok ? 1 : 0, s->header.pid == getpid() ? 1 : 0,
                    static_cast<unsigned long long>(s->knobs.value[static_cast<size_t>(Knob::TinyCap)].load()),
                    static_cast<unsigned long long>(allocs - before), s->global.threads_live.load());
    for (size_t i = 0; i < n && i < kMaxHeld; i++) free(g_held[i]);
  }
  if (write(fd, out, len) != len) _exit(3);
  len = snprintf(out, sizeof out, "child.pid %d\n", getpid());
  if (write(fd, out, len) != len) _exit(3);
  exit(0);  // normal exit: the child's segment is removed by its destructor
}

// latechurn's threads: n mallocs of 48 B kept, then freed.
void* churn_thread(void* p) {
  const size_t n = reinterpret_cast<size_t>(p);
  void* volatile held[4096];
  for (size_t i = 0; i < n && i < 4096; i++) held[i] = malloc(48);
  for (size_t i = 0; i < n && i < 4096; i++) free(held[i]);
  return nullptr;
}

struct ThreadArg {
  size_t index;
  pthread_barrier_t* all_allocated;
  pthread_barrier_t* checked;
};

void* thread_main(void* p) {
  ThreadArg* a = static_cast<ThreadArg*>(p);
  void* volatile blocks[16];
  for (auto& b : blocks) b = malloc(64 + a->index);
  pthread_barrier_wait(a->all_allocated);
  pthread_barrier_wait(a->checked);
  for (auto& b : blocks) free(b);
  return nullptr;
}

std::atomic<bool> g_storm_done{false};
std::atomic<int> g_storm_failures{0};

void* storm_thread(void*) {
  static const size_t sizes[] = {16, 100, 700, 3000, 20000, 70000, 300000, 1500000};
  void* volatile keep[8] = {};
  uint64_t i = 0;
  while (!g_storm_done.load(std::memory_order_relaxed) || i % 4096 != 0) {
    const size_t k = i % 8;
    free(keep[k]);
    const size_t n = sizes[(i * 7 + k) % 8] + (i & 31);
    char* p = static_cast<char*>(malloc(n));
    if (!p) { g_storm_failures.fetch_add(1); break; }
    p[0] = 1;
    p[n - 1] = 2;
    keep[k] = p;
    i++;
  }
  for (auto& p : keep) free(p);
  // Keep allocating small blocks until this thread's slow path has seen the final
  // generation (bounded: a count, not a time).
  const uint64_t gen = seg().knobs.generation.load();
  for (int j = 0; j < 1000000 && seg().knobs.applied_generation.load() < gen; j++) {
    void* volatile q = malloc(32);
    free(q);
  }
  return nullptr;
}

const KnobInfo& knob_arg(const char* name) {
  const KnobInfo* k = knob_find(name);
  if (!k) die("unknown knob");
  return *k;
}

}  // namespace

int main(int argc, char** argv) {
  open_segment();
  printf("segment %d\n", g_seg ? 1 : 0);
  for (int step = 1; step < argc; step++) {
    char cmd[32] = {0}, a[64] = {0}, b[64] = {0}, c[16] = {0};
    sscanf(argv[step], "%31s %63s %63s %15s", cmd, a, b, c);
    if (!strcmp(cmd, "header")) { print_header(); continue; }
    if (!strcmp(cmd, "knobs")) { print_knobs(); continue; }
    if (!strcmp(cmd, "write")) {
      const KnobInfo& k = knob_arg(a);
      daemon_write(static_cast<size_t>(k.id), strtoull(b, nullptr, 0));
      continue;
    }
    if (!strcmp(cmd, "quietwrite")) {
      const KnobInfo& k = knob_arg(a);
      seg().knobs.value[static_cast<size_t>(k.id)].store(strtoull(b, nullptr, 0), std::memory_order_relaxed);
      const uint64_t gen = seg().knobs.generation.fetch_add(1, std::memory_order_release) + 1;
      if (!strcmp(c, "wake")) syscall(SYS_futex, knob_wake_word(seg().knobs), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
      const long ms = wait_ms([gen] { return seg().knobs.applied_generation.load(std::memory_order_acquire) >= gen; });
      printf("quiet_applied_ms %ld\n", ms);
      continue;
    }
    if (!strcmp(cmd, "thp")) { print_thp(step); continue; }
    if (!strcmp(cmd, "tasks")) {
      const int want = atoi(a);
      int n = 0;
      const long ms = wait_ms([want, &n] { return (n = harness::threads_now()) == want; });
      printf("s%d.tasks %d\ns%d.tasks_ms %ld\n", step, n, step, ms);
      continue;
    }
    if (!strcmp(cmd, "garbage")) {
      for (auto& v : seg().knobs.value) v.store(0xdeadbeefdeadbeefull, std::memory_order_relaxed);
      uint64_t gen = seg().knobs.generation.fetch_add(1, std::memory_order_release) + 1;
      printf("applied %d\n", wait_applied(gen) ? 1 : 0);
      continue;
    }
    if (!strcmp(cmd, "set")) {
      auto set = api<int (*)(const char*, const char*, char*, size_t)>("hakmem_knob_set");
      char err[256];
      int rc = set(a, b, err, sizeof err);
      printf("set_rc %d\nset_err %s\n", rc, err);
      continue;
    }
    if (!strcmp(cmd, "usable")) {
      void* volatile p = malloc(strtoull(a, nullptr, 0));
      printf("usable %zu\n", malloc_usable_size(p));
      free(p);
      continue;
    }
    if (!strcmp(cmd, "badfree")) {
      // A page hakmem never handed out: the allocator must report it, not crash.
      void* page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      fflush(stdout);
      // Through a volatile so the compiler does not refuse the deliberate misuse.
      void* volatile bad = static_cast<char*>(page) + 64;
      free(bad);
      printf("survived 1\n");
      continue;
    }
    if (!strcmp(cmd, "mallinfo")) {
      struct mallinfo2 mi = mallinfo2();
      printf("mi.arena %zu\nmi.uordblks %zu\nmi.fordblks %zu\nmi.hblkhd %zu\nmi.hblks %zu\n", mi.arena, mi.uordblks,
             mi.fordblks, mi.hblkhd, mi.hblks);
      fflush(stdout);
      malloc_info(0, stdout);
      malloc_stats();
      continue;
    }
    if (!strcmp(cmd, "fork")) {
      int pfd[2];
      if (pipe(pfd) != 0) die("pipe");
      fflush(stdout);
      Snapshot before, after;
      snapshot(seg(), &before);
      pid_t pid = fork();
      if (pid < 0) die("fork");
      if (pid == 0) {
        close(pfd[0]);
        fork_child(strtoull(a, nullptr, 0), strtoull(b, nullptr, 0), pfd[1]);
      }
      close(pfd[1]);
      char buf[4096];
      ssize_t got = 0, r;
      while ((r = read(pfd[0], buf + got, sizeof buf - 1 - got)) > 0) got += r;
      buf[got] = 0;
      close(pfd[0]);
      int status = 0;
      waitpid(pid, &status, 0);
      snapshot(seg(), &after);
      uint64_t d = 0;
      for (size_t t = 0; t < kTierCount; t++) d += after.tier[t].allocs() - before.tier[t].allocs();
      printf("%sparent.allocs_delta %llu\nparent.segment_ok %d\nchild.status %d\n", buf,
             static_cast<unsigned long long>(d), validate_segment(g_seg, sizeof(Segment)) == SegmentCheck::Ok ? 1 : 0,
             status);
      continue;
    }
    if (!strcmp(cmd, "spawn")) {
      int pfd[2];
      if (pipe(pfd) != 0) die("pipe");
      char child_step[160];
      snprintf(child_step, sizeof child_step, "%s %s %s", a[0] ? a : "late", b, c);
      fflush(stdout);
      pid_t pid = fork();
      if (pid < 0) die("fork");
      if (pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        execl(argv[0], argv[0], child_step, static_cast<char*>(nullptr));
        _exit(127);
      }
      close(pfd[1]);
      FILE* in = fdopen(pfd[0], "r");
      char line[4096];
      while (fgets(line, sizeof line, in)) printf("spawn.%s", line);
      fclose(in);
      int status = 0;
      waitpid(pid, &status, 0);
      printf("spawn.status %d\n", status);
      continue;
    }
    if (!strcmp(cmd, "late")) {
      char path[4096];
      own_segment_path(path, sizeof path);
      printf("late.ms_until_segment %ld\n", ms_until_file(path));
      open_segment();
      printf("late.segment %d\n", g_seg ? 1 : 0);
      if (g_seg) print_header();
      continue;
    }
    if (!strcmp(cmd, "bigidle")) {
      const size_t mib = strtoull(a, nullptr, 0);
      if (mib == 0 || mib > 1024) die("bigidle MIB: 1..1024");
      char path[4096];
      own_segment_path(path, sizeof path);
      const int before = access(path, F_OK) == 0;
      void* p = malloc(mib << 20);
      void* q = malloc(size_t{2} << 20);
      const int after = access(path, F_OK) == 0;
      if (!p || !q) die("bigidle: malloc failed");
      printf("bigidle.segment_before %d\nbigidle.segment_after %d\n", before, after);
      free(q);
      free(p);
      continue;
    }
    if (!strcmp(cmd, "threadidle")) {
      char path[4096];
      own_segment_path(path, sizeof path);
      void* volatile p = malloc(64);
      const int before = access(path, F_OK) == 0;
      pthread_t tid;
      if (pthread_create(&tid, nullptr, churn_thread, reinterpret_cast<void*>(size_t{1})) != 0) die("pthread_create");
      pthread_join(tid, nullptr);
      const int after = access(path, F_OK) == 0;
      printf("threadidle.segment_before %d\nthreadidle.segment_after %d\n", before, after);
      free(p);
      continue;
    }
    if (!strcmp(cmd, "latechurn")) {
      const size_t t = strtoull(a, nullptr, 0), n = strtoull(b, nullptr, 0);
      if (t == 0 || t > 64 || n == 0 || n > 4096) die("latechurn T N: 1..64 threads, 1..4096 mallocs");
      char path[4096];
      own_segment_path(path, sizeof path);
      uint64_t mallocs = 0;
      int after = 0;  // rounds since the segment appeared
      timespec t0{}, t1{};
      clock_gettime(CLOCK_MONOTONIC, &t0);
      for (long ms = 0; after < 2 && ms < 5000;) {
        pthread_t tids[64];
        for (size_t i = 0; i < t; i++)
          if (pthread_create(&tids[i], nullptr, churn_thread, reinterpret_cast<void*>(n)) != 0) die("pthread_create");
        for (int i = 0; i < 3000; i++) { void* volatile q = malloc(48); free(q); }
        for (size_t i = 0; i < t; i++) pthread_join(tids[i], nullptr);
        mallocs += t * n + 3000;
        if (after > 0 || access(path, F_OK) == 0) after++;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
      }
      // The main thread's counts since the publication reach its new slot at its next
      // check, due within 4096 allocations of a class.
      for (int i = 0; i < 5000; i++) { void* volatile q = malloc(48); free(q); }
      mallocs += 5000;
      open_segment();
      printf("latechurn.segment %d\nlatechurn.mallocs %llu\n", g_seg ? 1 : 0, static_cast<unsigned long long>(mallocs));
      if (g_seg) {
        Snapshot snap;
        snapshot(seg(), &snap);
        printf("latechurn.tiny_allocs %llu\nlatechurn.threads_live %u\n",
               static_cast<unsigned long long>(snap.tier[0].allocs()), snap.threads_live);
      }
      continue;
    }
    if (!strcmp(cmd, "forkexec")) {
      // The child execs a program with the preload removed, as a service spawning a
      // static or setuid helper would.
      fflush(stdout);
      pid_t pid = fork();
      if (pid == 0) {
        unsetenv("LD_PRELOAD");
        execl("/bin/true", "true", static_cast<char*>(nullptr));
        _exit(127);
      }
      int status = 0;
      waitpid(pid, &status, 0);
      printf("exec.status %d\n", status);
      continue;
    }
    if (!strcmp(cmd, "threads")) {
      const size_t n = strtoull(a, nullptr, 0);
      static pthread_t tids[1024];
      static ThreadArg args[1024];
      if (n > 1024) die("too many threads");
      pthread_barrier_t all_allocated, checked;
      pthread_barrier_init(&all_allocated, nullptr, static_cast<unsigned>(n + 1));
      pthread_barrier_init(&checked, nullptr, static_cast<unsigned>(n + 1));
      pthread_attr_t attr;
      pthread_attr_init(&attr);
      pthread_attr_setstacksize(&attr, 64 * 1024);
      const uint64_t unslotted0 = seg().global.threads_unslotted.load();
      for (size_t i = 0; i < n; i++) {
        args[i] = {i, &all_allocated, &checked};
        if (pthread_create(&tids[i], &attr, thread_main, &args[i]) != 0) die("pthread_create");
      }
      pthread_barrier_wait(&all_allocated);
      printf("threads.live_during %u\nthreads.hwm_during %u\nthreads.unslotted %llu\n",
             seg().global.threads_live.load(), seg().global.thread_slots_hwm.load(),
             static_cast<unsigned long long>(seg().global.threads_unslotted.load() - unslotted0));
      pthread_barrier_wait(&checked);
      for (size_t i = 0; i < n; i++) pthread_join(tids[i], nullptr);
      printf("threads.live_after %u\n", seg().global.threads_live.load());
      continue;
    }
    if (!strcmp(cmd, "storm")) {
      const size_t n = strtoull(a, nullptr, 0);
      pthread_t t[4];
      for (auto& x : t) pthread_create(&x, nullptr, storm_thread, nullptr);
      uint64_t x = 88172645463325252ull;  // xorshift: deterministic values
      for (size_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        const size_t k = x % kKnobCount;
        seg().knobs.value[k].store(i % 3 == 0 ? x : x % (kKnobs[k].max + 1), std::memory_order_relaxed);
        seg().knobs.generation.fetch_add(1, std::memory_order_release);
        for (int j = 0; j < 100; j++) { void* volatile q = malloc(48); free(q); }
      }
      g_storm_done.store(true);
      for (auto& th : t) pthread_join(th, nullptr);
      printf("storm.failures %d\nstorm.generation %llu\nstorm.applied %llu\n", g_storm_failures.load(),
             static_cast<unsigned long long>(seg().knobs.generation.load()),
             static_cast<unsigned long long>(seg().knobs.applied_generation.load()));
      continue;
    }
    // Counting steps.
    const size_t size = strtoull(a, nullptr, 0);
    const size_t n = strtoull(b, nullptr, 0);
    if (g_seg) snapshot(*g_seg, &g_before);
    uint64_t mf = 0, tf = 0, f0 = 0;
    if (!strcmp(cmd, "hold")) {
      if (g_held_n + n > kMaxHeld) die("too many held blocks");
      const size_t first = g_held_n;
      f0 = minflt();
      for (size_t i = 0; i < n; i++) g_held[g_held_n++] = malloc(size);
      mf = minflt() - f0;
      f0 = minflt();
      for (size_t i = first; i < g_held_n; i++) {
        if (!g_held[i]) die("malloc returned null");
        touch(g_held[i], size);
      }
      tf = minflt() - f0;
    } else if (!strcmp(cmd, "release")) {
      for (size_t i = 0; i < g_held_n; i++) free(g_held[i]);
      g_held_n = 0;
    } else if (!strcmp(cmd, "churn")) {
      for (size_t i = 0; i < n; i++) {
        f0 = minflt();
        void* p = malloc(size);
        mf += minflt() - f0;
        if (!p) die("malloc returned null");
        f0 = minflt();
        touch(p, size);
        tf += minflt() - f0;
        free(p);
      }
    } else if (!strcmp(cmd, "sleep")) {
      usleep(static_cast<useconds_t>(size) * 1000);
    } else {
      die("unknown step");
    }
    if (g_seg) {
      snapshot(*g_seg, &g_after);
      print_deltas(step, mf, tf);
    } else {
      printf("s%d.malloc_faults %llu\ns%d.touch_faults %llu\n", step, static_cast<unsigned long long>(mf), step,
             static_cast<unsigned long long>(tf));
    }
  }
  return 0;
}
