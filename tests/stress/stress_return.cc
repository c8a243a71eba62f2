// Stress: memory return. After a 1 GiB burst (bundle- and whale-sized blocks, every page
// touched) is freed, RSS must fall back near its baseline once the decay time
// (bundle.decay_ms / whale.decay_ms, set through the environment by ctest) has passed.
// The program keeps allocating a little while it waits, because a decaying allocator may
// return memory from its slow paths rather than from a timer. The wait is bounded
// (10 x decay + 5 s); the time it took is printed, not asserted.
//   stress_return [--burst-mib M] [--decay-ms D]
#include <vector>

#include "harness.h"

int main(int argc, char** argv) {
  harness::require_hakmem_if_expected();
  size_t burst = static_cast<size_t>(harness::arg_num(argc, argv, "--burst-mib", 1024)) << 20;
  double decay_s = harness::arg_num(argc, argv, "--decay-ms", 200) / 1000.0;
  // Reserved up front: a vector regrown during the burst would sit above the burst in a
  // brk heap and pin it there.
  std::vector<void*> blocks;
  blocks.reserve(burst / (128u << 10) + 16);
  for (int round = 0; round < 2; round++) {
    size_t rss0 = harness::rss_bytes();
    blocks.clear();
    size_t total = 0;
    for (int i = 0; total < burst; i++) {
      size_t s = (i % 2) ? (256u << 10) : (2u << 20);  // bundle, whale
      char* p = static_cast<char*>(malloc(s));
      HARNESS_CHECK(p != nullptr, "malloc(%zu) failed after %zu MiB", s, total >> 20);
      for (size_t o = 0; o < s; o += 4096) p[o] = static_cast<char>(o);
      blocks.push_back(p);
      total += s;
    }
    size_t rss_peak = harness::rss_bytes();
    HARNESS_CHECK(rss_peak >= rss0 + burst * 9 / 10, "the burst did not become resident (%zu -> %zu MiB)", rss0 >> 20,
                  rss_peak >> 20);
    for (void* p : blocks) free(p);
    double t0 = harness::now_s();
    size_t target = rss0 + burst / 10, rss = harness::rss_bytes();
    while (rss > target && harness::now_s() - t0 < 10 * decay_s + 5) {
      usleep(10 * 1000);
      for (size_t s : {64u, 4000u, 100000u, 3u << 20}) {
        void* volatile p = malloc(s);  // volatile: the compiler may not elide the pair
        free(p);
      }
      rss = harness::rss_bytes();
    }
    printf("stress_return: round %d: rss %zu MiB -> peak %zu MiB -> %zu MiB after %.2f s (decay %.2f s)\n", round,
           rss0 >> 20, rss_peak >> 20, rss >> 20, harness::now_s() - t0, decay_s);
    HARNESS_CHECK(rss <= target, "RSS stayed at %zu MiB, baseline %zu MiB, after %.1f s", rss >> 20, rss0 >> 20,
                  harness::now_s() - t0);
  }
  return 0;
}
