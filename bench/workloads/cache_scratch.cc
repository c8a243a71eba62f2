// "cache-scratch": passive false sharing, in the spirit of Hoard's cache-scratch. The main
// thread allocates one small object per worker back to back (likely on one cache line) and
// hands them out; each worker frees its object and then repeatedly allocates a small object,
// writes it many times and frees it. An allocator that gives a worker memory on a line that
// another core writes makes every write a coherence miss. Reports ns per allocate+write+free.
#include <thread>
#include <vector>

#include "common.h"

int main(int argc, char** argv) {
  const bench::Args args = bench::parse_args(argc, argv);
  const int threads = args.threads_or(2);
  const long iterations = args.pick(40000, 15000, 500);
  constexpr int kReps = 200;  // writes per object
  constexpr size_t kSize = 8;

  std::vector<char*> initial(threads);
  for (auto& p : initial) {
    p = static_cast<char*>(std::malloc(kSize));
    if (!p) std::abort();
    std::memset(p, 0, kSize);
  }

  std::vector<uint64_t> sums(threads, 0);
  bench::Timer timer;
  timer.start();
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) {
    pool.emplace_back([&, i] {
      std::free(initial[i]);
      uint64_t sum = 0;
      for (long it = 0; it < iterations; ++it) {
        auto* p = static_cast<volatile char*>(std::malloc(kSize));
        if (!p) std::abort();
        for (size_t b = 0; b < kSize; ++b) p[b] = 0;
        for (int r = 0; r < kReps; ++r)
          for (size_t b = 0; b < kSize; ++b) p[b] = static_cast<char>(p[b] + 1 + i);
        sum += static_cast<unsigned char>(p[kSize - 1]);
        std::free(const_cast<char*>(p));
      }
      sums[i] = sum;
    });
  }
  for (auto& t : pool) t.join();
  timer.stop();

  uint64_t sum = 0;
  for (uint64_t s : sums) sum += s;
  bench::report("cache-scratch", timer, iterations * threads, "ns/obj", sum);
  return 0;
}
