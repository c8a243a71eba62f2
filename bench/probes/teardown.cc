// teardown: a big structure of small blocks built and then freed whole, the way a program
// drops a hash table or a tree (perl freeing a hash, a service dropping a cache). Not part
// of bench/run's comparison.
//   [LD_PRELOAD=lib] build/bench/bench_teardown COUNT ORDER [SECONDS]
// COUNT blocks of 8-108 B (deterministic sizes) are malloc'd and written once; then freed
// in ORDER: "alloc" (allocation order), "reverse", or "scattered" (a fixed pseudo-random
// permutation, as a hash table's buckets give). Prints ns per malloc and per free, the RSS
// right after the frees, and after SECONDS (default 3) in which the program keeps doing
// small malloc/free pairs of another size (its allocator's periodic work runs).
#include <time.h>

#include <chrono>

#include "common.h"

namespace {

double ns_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr, "usage: %s COUNT alloc|reverse|scattered [SECONDS]\n", argv[0]);
    return 2;
  }
  const long n = std::atol(argv[1]);
  const char* order = argv[2];
  const double seconds = argc == 4 ? std::atof(argv[3]) : 3.0;
  // The pointer array and the permutation come from mmap-sized callocs before the clock.
  auto** v = n >= 1 ? static_cast<void**>(std::calloc(static_cast<size_t>(n), sizeof(void*))) : nullptr;
  auto* perm = n >= 1 ? static_cast<long*>(std::calloc(static_cast<size_t>(n), sizeof(long))) : nullptr;
  bench::Rng rng(7);
  if (n < 1 || seconds < 0 || !v || !perm || !bench::free_order(perm, n, order, rng)) {
    std::fprintf(stderr, "teardown: COUNT >= 1; ORDER alloc, reverse or scattered; SECONDS >= 0\n");
    return 2;
  }
  const long base = bench::rss_mib();
  auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < n; i++) {
    const size_t size = 8 + rng.next() % 101;
    v[i] = std::malloc(size);
    if (!v[i]) return 1;
    *static_cast<char*>(v[i]) = static_cast<char>(i);
  }
  const double alloc_ns = ns_since(t0) / static_cast<double>(n);
  const long full = bench::rss_mib();
  t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < n; i++) std::free(v[perm[i]]);
  const double free_ns = ns_since(t0) / static_cast<double>(n);
  const long after = bench::rss_mib();
  t0 = std::chrono::steady_clock::now();
  while (ns_since(t0) < seconds * 1e9) {
    for (int i = 0; i < 20000; i++) {
      void* volatile q = std::malloc(200);
      std::free(q);
    }
    struct timespec ts{0, 5000000};
    nanosleep(&ts, nullptr);
  }
  std::printf("teardown %ld blocks, %s order: malloc %.1f ns, free %.1f ns; rss %ld MiB before, %ld built, "
              "%ld after the frees, %ld %.1f s later\n",
              n, order, alloc_ns, free_ns, base, full, after, bench::rss_mib(), seconds);
  std::free(v);
  std::free(perm);
  return 0;
}
