// "realloc": buffers grown by realloc the way string builders and vectors without a
// capacity policy grow them — by small and by proportional steps, up to a random final size
// (256 B-1 MiB), then freed and started again. Only the appended bytes are written, so an
// allocator that grows in place pays nothing for the copy and one that moves pays it. The
// content is checked before each free. Reports ns per realloc.
#include "common.h"

namespace {

// Each buffer is filled with one byte derived from its id: appending is a memset (as cheap
// as the appends of a real builder), and a byte of another buffer shows up as a mismatch.
unsigned char pattern(uint64_t id) { return static_cast<unsigned char>(id * 131 + 7); }

}  // namespace

int main(int argc, char** argv) {
  const bench::Args args = bench::parse_args(argc, argv);
  const long steps = args.pick(300000, 100000, 5000);
  constexpr int kLive = 64;

  struct Buf {
    unsigned char* p = nullptr;
    size_t size = 0, target = 0;
    uint64_t id = 0;
  } bufs[kLive];
  bench::Rng rng(99);
  uint64_t next_id = 1, sum = 0;

  bench::Timer t;
  t.start();
  for (long i = 0; i < steps; ++i) {
    Buf& b = bufs[rng.next() % kLive];
    if (b.size >= b.target) {
      if (b.p) {
        for (size_t off = 0; off < b.size; off += 61)
          if (b.p[off] != pattern(b.id)) {
            std::fprintf(stderr, "realloc: content lost at offset %zu\n", off);
            return 1;
          }
        sum = bench::mix(sum, b.size);
        std::free(b.p);
      }
      b = Buf{nullptr, 0, rng.log_range(256, 1 << 20), next_id++};
    }
    const size_t grow = rng.range(1, b.size / 8 > 16 ? b.size / 8 : 16);
    auto* p = static_cast<unsigned char*>(std::realloc(b.p, b.size + grow));
    if (!p) {
      std::fprintf(stderr, "realloc: out of memory\n");
      return 1;
    }
    std::memset(p + b.size, pattern(b.id), grow);
    b.p = p;
    b.size += grow;
  }
  t.stop();
  for (auto& b : bufs) {
    sum = bench::mix(sum, b.size);
    std::free(b.p);
  }
  bench::report("realloc", t, steps, "ns/realloc", sum);
  return 0;
}
