// Fault scenarios, one per invocation, run as a child by fault_driver (which checks how it
// ended and what it printed). Each scenario prints the addresses it abuses on stdout
// ("addr 0x...") so the driver can look for them in the allocator's report on stderr.
//   fault_child double-free SIZE | invalid-free KIND | garbage-knobs ITER |
//   knob-flip KNOB|all ITER | whale-evict ITER | oom | ok
#include <errno.h>
#include <malloc.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <new>
#include <thread>
#include <vector>

#include "harness.h"

namespace hp = hakmem::proto;

namespace {

// Hides a pointer's origin from the optimiser, so a deliberate double or invalid free is
// neither folded away nor warned about: these faults are the point of the test.
template <typename T>
T* launder(T* p) {
  asm volatile("" : "+r"(p));
  return p;
}
// Sizes hidden the same way (malloc(SIZE_MAX) is deliberate too).
size_t opaque(size_t v) {
  asm volatile("" : "+r"(v));
  return v;
}

void print_addr(const void* p) {
  printf("addr %p\n", p);
  fflush(stdout);
}

// After an abused free, the allocator must still hand out distinct, writable blocks of
// that size: a double free that put a block twice on a free list shows up here as the
// same address returned twice, or as a cookie overwritten by a later allocation.
void check_still_sound(size_t size) {
  constexpr int kN = 64;
  void* p[kN];
  for (int i = 0; i < kN; i++) {
    p[i] = malloc(size);
    HARNESS_CHECK(p[i] != nullptr, "malloc(%zu) failed after the fault", size);
    harness::cookie_fill(p[i], size, static_cast<uint64_t>(i));
  }
  for (int i = 0; i < kN; i++) {
    for (int j = 0; j < i; j++)
      HARNESS_CHECK(p[i] != p[j], "malloc(%zu) returned %p twice: a free list is corrupt", size, p[i]);
  }
  for (int i = 0; i < kN; i++) {
    HARNESS_CHECK(harness::cookie_ok(p[i], size, static_cast<uint64_t>(i)), "block %p overwritten", p[i]);
    free(p[i]);
  }
}

int double_free(size_t size) {
  // A neighbour allocated before and after, so a corrupt free list would hand them out.
  void* before = malloc(size);
  char* p = static_cast<char*>(malloc(size));
  void* after = malloc(size);
  HARNESS_CHECK(p && before && after, "malloc(%zu) failed", size);
  memset(p, 0x5a, size);
  print_addr(p);
  char* again = launder(p);
  free(p);
  free(again);  // the fault
  check_still_sound(size);
  free(before);
  free(after);
  check_still_sound(size);
  printf("survived\n");
  return 0;
}

int invalid_free(const char* kind) {
  static char global_buffer[256];
  char stack_buffer[256];
  memset(stack_buffer, 1, sizeof stack_buffer);
  void* target = nullptr;
  void* keep = nullptr;
  size_t check_size = 64;
  if (strcmp(kind, "stack") == 0) {
    target = stack_buffer + 16;
  } else if (strcmp(kind, "global") == 0) {
    target = global_buffer + 32;
  } else if (strcmp(kind, "interior") == 0) {
    // A pointer into the middle of a live pool-sized block: freeing it must not free the block.
    keep = malloc(8192);
    HARNESS_CHECK(keep != nullptr, "malloc failed");
    harness::cookie_fill(keep, 8192, 1);
    target = static_cast<char*>(keep) + 4096 + 16;
    check_size = 8192;
  } else if (strcmp(kind, "mmap") == 0) {
    // Memory hakmem never handed out: a private mapping of our own.
    void* m = mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    HARNESS_CHECK(m != MAP_FAILED, "mmap failed");
    target = static_cast<char*>(m) + 64;
    check_size = 100000;
  } else if (strcmp(kind, "wild") == 0) {
    target = reinterpret_cast<void*>(uintptr_t{0x10000000000} + 0x40);  // unmapped
  } else {
    harness::fail("unknown invalid-free kind %s", kind);
  }
  print_addr(target);
  free(launder(target));
  if (keep) {
    HARNESS_CHECK(harness::cookie_ok(keep, 8192, 1), "the block around the interior pointer was damaged");
    free(keep);
  }
  check_still_sound(check_size);
  check_still_sound(32);
  printf("survived\n");
  return 0;
}

// Hostile knob and rule values written into our own segment, generation bumped each time,
// while two threads allocate and free across the tiers: the allocator must clamp or ignore
// them, never crash or corrupt.
int garbage_knobs(int iterations) {
  harness::OwnSegment seg;
  if (!harness::hakmem_active()) {
    printf("survived: no hakmem segment to write into (not preloaded)\n");
    return 0;
  }
  HARNESS_CHECK(seg.open_own(), "hakmem is the allocator but its segment is missing");
  std::atomic<bool> stop{false};
  auto work = [&](unsigned id) {
    harness::Rng r(id);
    void* held[128] = {};
    size_t sizes[128] = {};
    while (!stop.load(std::memory_order_relaxed)) {
      size_t k = r.below(128);
      if (held[k]) {
        HARNESS_CHECK(harness::cookie_ok(held[k], sizes[k], id), "block %p overwritten under garbage knobs", held[k]);
        free(held[k]);
      }
      sizes[k] = harness::random_size(r, 4u << 20);
      held[k] = malloc(sizes[k]);
      HARNESS_CHECK(held[k] != nullptr, "malloc(%zu) failed under garbage knobs", sizes[k]);
      harness::cookie_fill(held[k], sizes[k], id);
    }
    for (void* p : held) free(p);
  };
  std::thread a(work, 1), b(work, 2);
  harness::Rng r(99);
  const uint64_t nasty[] = {0, 1, 2, UINT64_MAX, UINT64_MAX - 1, 1ull << 63, 0xdeadbeefdeadbeefull, 1025, 4096};
  for (int it = 0; it < iterations; it++) {
    for (size_t k = 0; k < hp::kKnobSlots; k++) {
      uint64_t v = r.below(2) ? nasty[r.below(sizeof nasty / sizeof nasty[0])] : r.next();
      // Leave abort_on_error alone: turning it on is legitimate and would end the test.
      if (k == static_cast<size_t>(hp::Knob::AbortOnError)) v = 0;
      seg.seg->knobs.value[k].store(v, std::memory_order_relaxed);
    }
    // Generations that go backwards, jump, or wrap.
    uint64_t g = seg.seg->knobs.generation.load();
    seg.seg->knobs.generation.store(r.below(4) == 0 ? r.next() : g + 1 + r.below(3), std::memory_order_release);
    // Rules: random bytes, odd (in-flight) and even sequence numbers, out-of-range tiers.
    hp::SiteRule& rule = seg.seg->rules.rules[r.below(hp::kRuleSlots)];
    rule.id = static_cast<uint32_t>(r.next());
    rule.site = r.below(2) ? r.next() : reinterpret_cast<uintptr_t>(&garbage_knobs);
    rule.min_size = r.below(2) ? r.next() : r.below(1 << 20);
    rule.max_size = r.next();
    rule.tier = static_cast<int32_t>(r.below(3) == 0 ? r.next() : r.below(7)) - 1;
    rule.cap = static_cast<uint32_t>(r.next());
    rule.prewarm = static_cast<int32_t>(r.next());
    rule.seq.store(static_cast<uint32_t>(r.next()), std::memory_order_release);
    seg.seg->rules.generation.store(r.next(), std::memory_order_release);
    if (it % 50 == 0) usleep(1000);
  }
  stop = true;
  a.join();
  b.join();
  check_still_sound(24);
  check_still_sound(3000);
  check_still_sound(200000);
  check_still_sound(3u << 20);
  printf("survived %d rounds of garbage\n", iterations);
  return 0;
}

// One knob (or every live knob, "all") flipped between its extremes every few microseconds
// from a third thread, as hakmemd writes them (value, then generation + 1), while three
// threads allocate across all tiers and free each other's blocks. Targets the per-thread
// copies of knobs (magazine capacities, whale cache and decay, stats slot) changing under
// running allocations.
int knob_flip(const char* name, int iterations) {
  harness::OwnSegment seg;
  if (!harness::hakmem_active()) {
    printf("survived: no hakmem segment to write into (not preloaded)\n");
    return 0;
  }
  HARNESS_CHECK(seg.open_own(), "hakmem is the allocator but its segment is missing");
  const bool all = strcmp(name, "all") == 0;
  const hp::KnobInfo* only = all ? nullptr : hp::knob_find(name);
  HARNESS_CHECK(all || only != nullptr, "unknown knob %s", name);
  constexpr unsigned kThreads = 3;
  constexpr size_t kMail = 256;
  // Blocks handed to the next thread, which frees them: remote frees on every tier.
  static std::atomic<void*> mail[kThreads][kMail];
  std::atomic<bool> stop{false};
  auto work = [&](unsigned id) {
    harness::Rng r(id + 7);
    void* held[64] = {};
    size_t sizes[64] = {};
    while (!stop.load(std::memory_order_relaxed)) {
      size_t k = r.below(64);
      if (held[k]) {
        HARNESS_CHECK(harness::cookie_ok(held[k], sizes[k], id), "block %p overwritten under knob flips", held[k]);
        if (r.below(4) == 0) {
          // Pass it on (the receiver only frees it); a displaced one is freed here.
          void* old = mail[(id + 1) % kThreads][r.below(kMail)].exchange(held[k], std::memory_order_acq_rel);
          free(old);
        } else {
          free(held[k]);
        }
      }
      sizes[k] = r.below(8) ? 1 + r.below(1024) : harness::random_size(r, 3u << 20);
      held[k] = malloc(sizes[k]);
      HARNESS_CHECK(held[k] != nullptr, "malloc(%zu) failed under knob flips", sizes[k]);
      harness::cookie_fill(held[k], std::min<size_t>(sizes[k], 256), id);
      sizes[k] = std::min<size_t>(sizes[k], 256);
      free(mail[id][r.below(kMail)].exchange(nullptr, std::memory_order_acq_rel));
    }
    for (void* p : held) free(p);
  };
  std::thread t[kThreads];
  for (unsigned i = 0; i < kThreads; i++) t[i] = std::thread(work, i);
  harness::Rng r(5);
  for (int it = 0; it < iterations; it++) {
    for (size_t i = 0; i < hp::kKnobCount; i++) {
      const hp::KnobInfo& k = hp::kKnobs[i];
      if (k.mode != hp::KnobMode::Live || (only && &k != only)) continue;
      if (static_cast<hp::Knob>(i) == hp::Knob::AbortOnError) continue;
      uint64_t v = (it & 1) ? k.max : k.min;
      if (all && r.below(2)) v = r.below(3) == 0 ? k.def : (r.below(2) ? 1 : k.max - 1);
      seg.seg->knobs.value[i].store(v, std::memory_order_relaxed);
    }
    seg.seg->knobs.generation.fetch_add(1, std::memory_order_release);
    for (int spin = 0; spin < 200; spin++) asm volatile("" ::: "memory");
    if (it % 64 == 0) usleep(50);
  }
  stop = true;
  for (auto& th : t) th.join();
  for (auto& row : mail)
    for (auto& p : row) free(p.exchange(nullptr));
  check_still_sound(24);
  check_still_sound(3000);
  check_still_sound(200000);
  check_still_sound(3u << 20);
  printf("survived %d flips of %s\n", iterations, name);
  return 0;
}

// Whale frees racing with evictions of the whale cache (malloc_trim, as the decay thread or
// a lowered whale.cache_bytes does). A freed whale is visible to evictors from the moment
// its shard lock is released; the free must not touch its header after that (an evictor
// may have unmapped it). All threads share one CPU, so a freer is often preempted right
// inside that window (by a woken evictor or a busy thread). Before the fix of whale_free
// (it read the header's map_len after the unlock), 50000 rounds crashed 6 runs out of 6.
int whale_evict(int iterations) {
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(sched_getcpu() >= 0 ? sched_getcpu() : 0, &one);
  sched_setaffinity(0, sizeof one, &one);  // best effort: inherited by the threads below
  std::atomic<bool> stop{false};
  constexpr int kBatch = 32;
  // Batches: a full cache makes each eviction hold its shard lock long enough that the
  // freers queue behind it and hand over the lock with a futex wake (a syscall) right in the
  // window after their own unlock.
  auto freer = [&](unsigned id) {
    char* held[kBatch];
    for (int i = 0; i < iterations; i++) {
      for (int k = 0; k < kBatch; k++) {
        size_t n = (1u << 20) + 1 + ((id * kBatch + k) << 12);
        held[k] = static_cast<char*>(malloc(n));
        HARNESS_CHECK(held[k] != nullptr, "malloc(%zu) failed", n);
        held[k][0] = static_cast<char>(i);
      }
      for (char* p : held) free(p);
    }
  };
  auto evictor = [&]() {
    while (!stop.load(std::memory_order_relaxed)) malloc_trim(0);
  };
  constexpr unsigned kPairs = 4;
  std::thread f[kPairs], e[kPairs];
  for (unsigned i = 0; i < kPairs; i++) {
    f[i] = std::thread(freer, i);
    e[i] = std::thread(evictor);
  }
  // Busy threads on the same CPU: the freers and evictors get preempted at arbitrary points.
  auto spinner = [&]() {
    while (!stop.load(std::memory_order_relaxed)) asm volatile("pause");
  };
  std::thread busy[2];
  for (auto& t : busy) t = std::thread(spinner);
  for (auto& t : f) t.join();
  stop = true;
  for (auto& t : e) t.join();
  for (auto& t : busy) t.join();
  check_still_sound(3u << 20);
  printf("survived %u whale frees racing evictions\n", kPairs * kBatch * static_cast<unsigned>(iterations));
  return 0;
}

// Out of memory under a low address-space limit (what `ulimit -v` sets).
int oom() {
  struct rlimit rl{};
  // Current size of the address space + 512 MiB of room.
  unsigned long vm_pages = 0;
  {
    FILE* f = fopen("/proc/self/statm", "r");
    HARNESS_CHECK(f && fscanf(f, "%lu", &vm_pages) == 1, "statm");
    fclose(f);
  }
  rl.rlim_cur = rl.rlim_max = vm_pages * 4096 + (512u << 20);
  HARNESS_CHECK(setrlimit(RLIMIT_AS, &rl) == 0, "setrlimit: %s", strerror(errno));

  auto expect_null = [](void* p, const char* what) {
    int e = errno;
    HARNESS_CHECK(p == nullptr, "%s succeeded under a 512 MiB limit", what);
    HARNESS_CHECK(e == ENOMEM, "%s: errno %d (%s), expected ENOMEM", what, e, strerror(e));
  };
  errno = 0;
  expect_null(malloc(size_t{1} << 30), "malloc(1 GiB)");
  errno = 0;
  expect_null(malloc(opaque(SIZE_MAX)), "malloc(SIZE_MAX)");
  errno = 0;
  expect_null(malloc(opaque(SIZE_MAX - 4096)), "malloc(SIZE_MAX - 4096)");
  errno = 0;
  expect_null(calloc(opaque(SIZE_MAX / 2), 4), "calloc overflowing");
  errno = 0;
  expect_null(calloc(1 << 20, 1 << 12), "calloc(4 GiB)");
  void* al = nullptr;
  HARNESS_CHECK(posix_memalign(&al, 4096, size_t{1} << 30) == ENOMEM, "posix_memalign(1 GiB) did not return ENOMEM");
  errno = 0;
  expect_null(aligned_alloc(64, size_t{1} << 31), "aligned_alloc(2 GiB)");

  // realloc that cannot grow leaves the block intact.
  char* small = static_cast<char*>(malloc(100));
  HARNESS_CHECK(small != nullptr, "malloc(100) failed after big failures");
  memset(small, 'k', 100);
  char* still_ours = launder(small);  // a failed realloc leaves the block alone
  errno = 0;
  expect_null(realloc(small, size_t{1} << 30), "realloc(100 -> 1 GiB)");
  small = still_ours;
  for (int i = 0; i < 100; i++) HARNESS_CHECK(small[i] == 'k', "failed realloc damaged the block");
  free(small);

  bool threw = false;
  try {
    void* volatile p = ::operator new(size_t{1} << 30);
    ::operator delete(p);
  } catch (const std::bad_alloc&) {
    threw = true;
  }
  HARNESS_CHECK(threw, "operator new(1 GiB) did not throw bad_alloc");
  HARNESS_CHECK(::operator new(size_t{1} << 30, std::nothrow) == nullptr, "nothrow new(1 GiB) did not return null");
  threw = false;
  try {
    auto* v = new std::vector<char>(size_t{1} << 30);
    delete v;
  } catch (const std::bad_alloc&) {
    threw = true;
  }
  HARNESS_CHECK(threw, "std::vector<char>(1 GiB) did not throw bad_alloc");

  // Small blocks of every tier still work after the big failures, without freeing anything.
  std::vector<void*> keep;
  keep.reserve(4000);
  for (int i = 0; i < 3000; i++) {
    void* p = malloc(16 + static_cast<size_t>(i % 64) * 8);
    HARNESS_CHECK(p != nullptr, "small malloc %d failed after big failures", i);
    keep.push_back(p);
  }
  for (size_t s : {2000u, 20000u, 200000u, 2u << 20}) {
    void* p = malloc(s);
    HARNESS_CHECK(p != nullptr, "malloc(%zu) failed after big failures", s);
    memset(p, 1, s);
    keep.push_back(p);
  }
  for (void* p : keep) free(p);

  // Exhaust the limit with 1 MiB blocks, then free and recover.
  std::vector<void*> big;
  big.reserve(1024);
  errno = 0;
  for (;;) {
    void* p = malloc(1u << 20);
    if (p == nullptr) break;
    static_cast<char*>(p)[0] = 1;
    big.push_back(p);
    HARNESS_CHECK(big.size() < 1024, "1 GiB allocated under a 512 MiB limit");
  }
  HARNESS_CHECK(errno == ENOMEM, "exhaustion: errno %d, expected ENOMEM", errno);
  size_t got = big.size();
  for (void* p : big) free(p);
  big.clear();
  for (int i = 0; i < 1000; i++) {
    void* p = malloc(64);
    HARNESS_CHECK(p != nullptr, "malloc(64) failed after exhaustion and free");
    free(p);
  }
  void* again = malloc(64u << 20);
  HARNESS_CHECK(again != nullptr, "malloc(64 MiB) failed after freeing %zu MiB", got);
  free(again);
  printf("oom: NULL+ENOMEM, bad_alloc, recovery after %zu MiB exhausted\n", got);
  printf("survived\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: fault_child double-free SIZE | invalid-free KIND | garbage-knobs N | oom | ok\n");
    return 2;
  }
  harness::require_hakmem_if_expected();
  const char* what = argv[1];
  if (strcmp(what, "double-free") == 0 && argc == 3) return double_free(strtoull(argv[2], nullptr, 0));
  if (strcmp(what, "invalid-free") == 0 && argc == 3) return invalid_free(argv[2]);
  if (strcmp(what, "garbage-knobs") == 0 && argc == 3) return garbage_knobs(atoi(argv[2]));
  if (strcmp(what, "knob-flip") == 0 && argc == 4) return knob_flip(argv[2], atoi(argv[3]));
  if (strcmp(what, "whale-evict") == 0 && argc == 3) return whale_evict(atoi(argv[2]));
  if (strcmp(what, "oom") == 0) return oom();
  if (strcmp(what, "ok") == 0) {
    printf("survived\n");
    return 0;
  }
  fprintf(stderr, "unknown scenario %s\n", what);
  return 2;
}
