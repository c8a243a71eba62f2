// Seed scenarios "json" (64 KiB), "mir" (256 KiB) and "vm" (2 MiB): each iteration mallocs a
// block, writes one byte in every 4 KiB page, and frees it. This is the pattern that made the
// seed allocator lose to mimalloc: an allocator that returns the pages to the OS on free takes
// one soft fault per page per iteration. Only the steady state is timed (warm-up excluded);
// ns/iter and soft faults/iter are reported.
//
// Built three times with SEED_NAME / SEED_BYTES / SEED_ITERS_{FULL,QUICK,SMOKE} set by CMake.
#include "common.h"

int main(int argc, char** argv) {
  const bench::Args args = bench::parse_args(argc, argv);
  const long iters = args.pick(SEED_ITERS_FULL, SEED_ITERS_QUICK, SEED_ITERS_SMOKE);
  const long warmup = iters / 10 + 10;
  constexpr size_t kBytes = SEED_BYTES;
  constexpr size_t kPage = 4096;

  uint64_t sum = 0;
  auto one = [&](long i) {
    auto* p = static_cast<unsigned char*>(std::malloc(kBytes));
    if (!p) {
      std::fprintf(stderr, "%s: malloc(%zu) failed\n", SEED_NAME, kBytes);
      std::exit(1);
    }
    for (size_t off = 0; off < kBytes; off += kPage) p[off] = static_cast<unsigned char>(i + off / kPage);
    bench::escape(p);
    sum += p[kBytes - kPage] + p[0];
    std::free(p);
  };

  for (long i = 0; i < warmup; ++i) one(i);
  sum = 0;
  bench::Timer t;
  t.start();
  for (long i = 0; i < iters; ++i) one(i);
  t.stop();
  bench::report(SEED_NAME, t, iters, "ns/iter", sum);
  return 0;
}
