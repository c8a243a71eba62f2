// Stress: knob changes at a high rate under load. A writer thread plays hakmemd against
// this process's own segment, flipping tiny.cap (and the decay knobs) every millisecond,
// while workers allocate and free with cross-thread frees. Afterwards: the counters agree
// with the objects the test holds (allocs - frees == live objects), the last generation
// gets applied, and RSS stayed bounded. Needs hakmem (its segment); without a preload it
// runs the same load and skips the segment checks.
//   stress_knobs [--seconds S] [--threads N]
#include <atomic>
#include <thread>
#include <vector>

#include "harness.h"

namespace hp = hakmem::proto;

namespace {

std::atomic<bool> g_stop{false};
std::atomic<void*> g_mailbox[64];

void worker(unsigned id) {
  harness::Rng r(id * 31 + 5);
  void* held[256] = {};
  size_t sizes[256] = {};
  while (!g_stop.load(std::memory_order_relaxed)) {
    for (int i = 0; i < 512; i++) {
      size_t k = r.below(256);
      if (held[k]) {
        HARNESS_CHECK(harness::cookie_ok(held[k], sizes[k], id), "block %p overwritten", held[k]);
        if (r.below(4) == 0) {
          // Hand it to another thread through a mailbox; free what was there.
          void* old = g_mailbox[r.below(64)].exchange(held[k]);
          free(old);
        } else {
          free(held[k]);
        }
      }
      // Mostly tiny (the knob under test), some of every other tier.
      sizes[k] = r.below(10) < 8 ? 1 + r.below(1024) : harness::random_size(r, 2u << 20);
      held[k] = malloc(sizes[k]);
      HARNESS_CHECK(held[k] != nullptr, "malloc(%zu) failed", sizes[k]);
      harness::cookie_fill(held[k], sizes[k], id);
    }
  }
  for (size_t k = 0; k < 256; k++) free(held[k]);
}

}  // namespace

int main(int argc, char** argv) {
  harness::require_hakmem_if_expected();
  double seconds = harness::arg_num(argc, argv, "--seconds", 10);
  unsigned threads = static_cast<unsigned>(harness::arg_num(argc, argv, "--threads", 4));
  harness::OwnSegment seg;
  bool have_seg = harness::hakmem_active() && seg.open_own();
  HARNESS_CHECK(!harness::hakmem_active() || have_seg, "hakmem is the allocator but its segment is missing");

  // Objects the main thread holds across the run: the counters must account for them.
  constexpr int kHeld = 5000;
  std::vector<void*> held;
  held.reserve(kHeld);
  int64_t live0 = have_seg ? harness::live_objects(seg.snap()) : 0;
  for (int i = 0; i < kHeld; i++) held.push_back(malloc(1 + static_cast<size_t>(i) % 3000));
  int64_t live1 = have_seg ? harness::live_objects(seg.snap()) : 0;
  if (have_seg) {
    printf("stress_knobs: live objects %lld -> %lld after %d mallocs\n", static_cast<long long>(live0),
           static_cast<long long>(live1), kHeld);
    HARNESS_CHECK(live1 - live0 == kHeld, "%d mallocs moved allocs-frees by %lld", kHeld,
                  static_cast<long long>(live1 - live0));
  }

  size_t rss0 = harness::rss_bytes(), rss_max = rss0;
  std::vector<std::thread> ts;
  for (unsigned i = 0; i < threads; i++) ts.emplace_back(worker, i + 1);
  const uint64_t caps[] = {0, 1, 1024, 8, 64, 2, 512, 0, 33};
  uint64_t writes = 0;
  double t0 = harness::now_s();
  while (harness::now_s() - t0 < seconds) {
    if (have_seg) {
      seg.set_knob(hp::Knob::TinyCap, caps[writes % (sizeof caps / sizeof caps[0])]);
      if (writes % 16 == 0) seg.set_knob(hp::Knob::BundleDecayMs, writes % 32 ? 0 : 1000);
      if (writes % 16 == 8) seg.set_knob(hp::Knob::WhaleDecayMs, writes % 32 == 8 ? 0 : 1000);
    }
    writes++;
    usleep(1000);
    if (writes % 64 == 0) {
      size_t rss = harness::rss_bytes();
      if (rss > rss_max) rss_max = rss;
    }
  }
  g_stop = true;
  for (auto& t : ts) t.join();
  for (auto& m : g_mailbox) free(m.exchange(nullptr));
  printf("stress_knobs: %llu knob writes, %u threads, rss start %zu MiB max %zu MiB\n",
         static_cast<unsigned long long>(writes), threads, rss0 >> 20, rss_max >> 20);
  // Workers hold at most 256 blocks of <= 2 MiB each, the mailboxes 64 more.
  size_t bound = (threads * 256 + 64) * (2u << 20) + (128u << 20);
  HARNESS_CHECK(rss_max <= rss0 + bound, "RSS reached %zu MiB (bound %zu MiB)", rss_max >> 20, (rss0 + bound) >> 20);

  if (have_seg) {
    // Everything the workers allocated is freed; only our held objects remain.
    int64_t live2 = harness::live_objects(seg.snap());
    printf("stress_knobs: live objects after the run %lld (expected %lld)\n", static_cast<long long>(live2),
           static_cast<long long>(live1));
    // std::thread bookkeeping and glibc's per-thread TLS vectors may stay allocated: a few per thread.
    int64_t slack = 4 * static_cast<int64_t>(threads) + 8;
    HARNESS_CHECK(live2 >= live1 - slack && live2 <= live1 + slack,
                  "allocs - frees is %lld after the workers freed everything, expected %lld (+-%lld)",
                  static_cast<long long>(live2), static_cast<long long>(live1), static_cast<long long>(slack));
    // The last write must be applied by a thread that keeps allocating.
    uint64_t gen = seg.seg->knobs.generation.load(std::memory_order_acquire);
    double t1 = harness::now_s();
    while (seg.seg->knobs.applied_generation.load(std::memory_order_acquire) < gen && harness::now_s() - t1 < 10) {
      for (int i = 0; i < 1000; i++) {
        void* volatile p = malloc(1 + static_cast<size_t>(i) % 1024);  // volatile: not elided
        free(p);
      }
      usleep(1000);
    }
    uint64_t applied = seg.seg->knobs.applied_generation.load(std::memory_order_acquire);
    HARNESS_CHECK(applied >= gen, "knob generation %llu never applied (applied %llu)",
                  static_cast<unsigned long long>(gen), static_cast<unsigned long long>(applied));
  }
  for (void* p : held) free(p);
  if (have_seg) {
    int64_t live3 = harness::live_objects(seg.snap());
    HARNESS_CHECK(live3 - live0 <= 4 * static_cast<int64_t>(threads) + 8 && live3 - live0 >= -8,
                  "allocs - frees ends at %lld, started at %lld", static_cast<long long>(live3),
                  static_cast<long long>(live0));
  }
  return 0;
}
