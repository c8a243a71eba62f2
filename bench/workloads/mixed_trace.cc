// "mixed": a synthetic trace of a service mixing every tier — mostly small objects, a share of
// 1-32 KiB buffers, some 32 KiB-1 MiB and a rare multi-MiB block — with random lifetimes
// around a steady live set of ~4000 blocks. Each block is written once per 4 KiB page (at
// least once). Reports ns per trace event (an allocation or a free).
#include "common.h"

namespace {

size_t draw_size(bench::Rng& rng) {
  const uint64_t r = rng.next() % 1000;
  if (r < 600) return rng.range(8, 128);
  if (r < 850) return rng.range(129, 1024);
  if (r < 979) return rng.log_range(1025, 32 << 10);
  if (r < 999) return rng.log_range(32 << 10, 1 << 20);
  return rng.log_range(1 << 20, 8 << 20);
}

}  // namespace

int main(int argc, char** argv) {
  const bench::Args args = bench::parse_args(argc, argv);
  const long events = args.pick(2000000, 700000, 20000);
  constexpr long kTarget = 4000;
  constexpr long kCap = 8192;
  constexpr size_t kPage = 4096;

  struct Live {
    unsigned char* p;
    size_t size;
  };
  auto* live = static_cast<Live*>(std::malloc(sizeof(Live) * kCap));
  if (!live) return 1;
  long n = 0;
  bench::Rng rng(31337);
  uint64_t sum = 0;

  bench::Timer t;
  t.start();
  for (long e = 0; e < events; ++e) {
    // Allocation is likelier below the target live count and rarer above it.
    const bool alloc = n == 0 || (n < kCap && static_cast<long>(rng.next() % (2 * kTarget)) >= n);
    if (alloc) {
      const size_t size = draw_size(rng);
      auto* p = static_cast<unsigned char*>(std::malloc(size));
      if (!p) return 1;
      for (size_t off = 0; off < size; off += kPage) p[off] = static_cast<unsigned char>(e);
      p[size - 1] = static_cast<unsigned char>(size);
      live[n++] = Live{p, size};
    } else {
      const long i = static_cast<long>(rng.next() % n);
      if (live[i].p[live[i].size - 1] != static_cast<unsigned char>(live[i].size)) {
        std::fprintf(stderr, "mixed: block corrupted\n");
        return 1;
      }
      sum += live[i].p[0];
      std::free(live[i].p);
      live[i] = live[--n];
    }
  }
  t.stop();
  for (long i = 0; i < n; ++i) std::free(live[i].p);
  std::free(live);
  bench::report("mixed", t, events, "ns/event", sum);
  return 0;
}
