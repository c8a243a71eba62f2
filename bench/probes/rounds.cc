// rounds: a structure of COUNT blocks of SIZE bytes built and freed whole, round after
// round, the way a service builds a request's tree or a compiler a function's nodes. Not
// part of bench/run's comparison.
//   [LD_PRELOAD=lib] build/bench/bench_rounds COUNT SIZE ROUNDS alloc|reverse|scattered [ALIGN]
// Each round mallocs COUNT blocks (each written once) and then frees them all in ORDER:
// allocation order, reverse, or a fixed pseudo-random permutation. With ALIGN the blocks come
// from posix_memalign(ALIGN) (buffers for O_DIRECT, DMA or SIMD). Prints ns per malloc and
// per free over every round but the first, and the peak RSS.
#include <chrono>

#include "common.h"

int main(int argc, char** argv) {
  if (argc != 5 && argc != 6) {
    std::fprintf(stderr, "usage: %s COUNT SIZE ROUNDS alloc|reverse|scattered [ALIGN]\n", argv[0]);
    return 2;
  }
  const long n = std::atol(argv[1]);
  const long size = std::atol(argv[2]);
  const long rounds = std::atol(argv[3]);
  const char* order = argv[4];
  const long align = argc == 6 ? std::atol(argv[5]) : 0;
  auto** v = n >= 1 ? static_cast<void**>(std::calloc(static_cast<size_t>(n), sizeof(void*))) : nullptr;
  auto* perm = n >= 1 ? static_cast<long*>(std::calloc(static_cast<size_t>(n), sizeof(long))) : nullptr;
  bench::Rng rng(11);
  const bool align_ok = align == 0 || (align >= static_cast<long>(sizeof(void*)) && (align & (align - 1)) == 0);
  if (n < 1 || size < 1 || rounds < 2 || !align_ok || !v || !perm || !bench::free_order(perm, n, order, rng)) {
    std::fprintf(stderr,
                 "rounds: COUNT, SIZE >= 1; ROUNDS >= 2; ORDER alloc, reverse or scattered; ALIGN a power of two\n");
    return 2;
  }
  using Clock = std::chrono::steady_clock;
  double alloc_ns = 0, free_ns = 0;
  for (long r = 0; r < rounds; r++) {
    const auto t0 = Clock::now();
    for (long i = 0; i < n; i++) {
      if (align == 0) v[i] = std::malloc(static_cast<size_t>(size));
      else if (posix_memalign(&v[i], static_cast<size_t>(align), static_cast<size_t>(size)) != 0) v[i] = nullptr;
      if (!v[i]) return 1;
      *static_cast<volatile char*>(v[i]) = static_cast<char>(i);
    }
    const auto t1 = Clock::now();
    for (long i = 0; i < n; i++) std::free(v[perm[i]]);
    const auto t2 = Clock::now();
    if (r > 0) {  // the first round also maps and faults in the memory
      alloc_ns += std::chrono::duration<double, std::nano>(t1 - t0).count();
      free_ns += std::chrono::duration<double, std::nano>(t2 - t1).count();
    }
  }
  const double ops = static_cast<double>(n) * static_cast<double>(rounds - 1);
  std::printf("rounds %ld x %ld B%s%ld, %s order: malloc %.2f ns, free %.2f ns, pair %.2f ns; peak rss %.1f MiB\n",
              n, size, align ? " aligned to " : "", align, order, alloc_ns / ops, free_ns / ops,
              (alloc_ns + free_ns) / ops, static_cast<double>(bench::peak_rss_kib()) / 1024);
  std::free(v);
  std::free(perm);
  return 0;
}
