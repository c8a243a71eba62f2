// walk: COUNT blocks of SIZE bytes malloc'd and written in turn, then read back in the order
// they were made, PASSES times: a program walking a list, an array of pointers or a tree it
// built in order. The walk's speed is the blocks' placement: fresh blocks handed out in
// address order let the hardware prefetchers run ahead of it. Not part of bench/run's
// comparison.
//   [LD_PRELOAD=lib] build/bench/bench_walk COUNT SIZE [PASSES]
// Prints ns per block for the mallocs (with the first touch of their pages) and for one read
// of a block in the walk.
#include "common.h"

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr, "usage: %s COUNT SIZE [PASSES]\n", argv[0]);
    return 2;
  }
  const long n = std::atol(argv[1]);
  const long size = std::atol(argv[2]);
  const long passes = argc == 4 ? std::atol(argv[3]) : 5;
  auto** v = n >= 1 ? static_cast<unsigned char**>(std::calloc(static_cast<size_t>(n), sizeof(void*))) : nullptr;
  if (n < 1 || size < 1 || passes < 1 || !v) {
    std::fprintf(stderr, "walk: COUNT, SIZE and PASSES >= 1\n");
    return 2;
  }
  uint64_t t0 = bench::now_ns();
  for (long i = 0; i < n; i++) {
    v[i] = static_cast<unsigned char*>(std::malloc(static_cast<size_t>(size)));
    if (!v[i]) return 1;
    std::memset(v[i], static_cast<int>(i), static_cast<size_t>(size));
  }
  const double alloc_ns = static_cast<double>(bench::now_ns() - t0) / static_cast<double>(n);
  uint64_t sum = 0;
  t0 = bench::now_ns();
  for (long p = 0; p < passes; p++)
    for (long i = 0; i < n; i++) sum += v[i][size / 2];
  const double walk_ns = static_cast<double>(bench::now_ns() - t0) / static_cast<double>(n * passes);
  for (long i = 0; i < n; i++) std::free(v[i]);
  std::free(v);
  std::printf("walk %ld x %ld B: malloc %.2f ns, walk %.2f ns per block (checksum %llu)\n", n, size, alloc_ns,
              walk_ns, static_cast<unsigned long long>(sum));
  return 0;
}
