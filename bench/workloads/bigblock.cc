// "big-block churn": a few live blocks of random size 64 KiB-32 MiB (log-uniform) replaced
// in a loop, each written once per 4 KiB page as a buffer being filled would be. An allocator
// that unmaps or MADV_DONTNEEDs freed blocks at once refaults every page of every new block;
// one that keeps recently freed memory mapped reuses it without faults. Reports ns per
// replacement and soft faults.
#include "common.h"

int main(int argc, char** argv) {
  const bench::Args args = bench::parse_args(argc, argv);
  const long iters = args.pick(500, 200, 30);
  const long warmup = 16;
  constexpr int kLive = 4;
  constexpr size_t kPage = 4096;

  unsigned char* block[kLive] = {};
  size_t size[kLive] = {};
  bench::Rng rng(2024);
  uint64_t sum = 0;

  auto replace = [&](long i) {
    const int s = static_cast<int>(rng.next() % kLive);
    if (block[s]) {
      sum += block[s][0] + block[s][size[s] - 1];
      std::free(block[s]);
    }
    size[s] = rng.log_range(64 << 10, 32 << 20);
    block[s] = static_cast<unsigned char*>(std::malloc(size[s]));
    if (!block[s]) {
      std::fprintf(stderr, "bigblock: malloc(%zu) failed\n", size[s]);
      std::exit(1);
    }
    for (size_t off = 0; off < size[s]; off += kPage) block[s][off] = static_cast<unsigned char>(i);
    block[s][size[s] - 1] = static_cast<unsigned char>(i >> 8);
  };

  for (long i = 0; i < warmup; ++i) replace(i);
  sum = 0;
  bench::Timer t;
  t.start();
  for (long i = 0; i < iters; ++i) replace(i);
  t.stop();
  for (auto* b : block) std::free(b);
  bench::report("bigblock", t, iters, "ns/iter", sum);
  return 0;
}
