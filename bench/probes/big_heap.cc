// big_heap: what transparent huge pages buy and cost a program with a big heap. Not part of
// bench/run's comparison (its first touch depends on the kernel's compaction more than on the
// allocator); README's THP table comes from it:
//   LD_PRELOAD=build/libhakmem/libhakmem.so [HAKMEM_THP=1] build/bench/bench_big_heap [MiB]
// Phases: malloc a block of MiB (default 1024) and memset it (the first touch); 10 M reads
// at dependent random offsets in it (each address needs the previous load: TLB misses are
// not hidden); 8 M mallocs of 40 B linked in a random order, then one walk along the links.
#include <vector>

#include "common.h"

namespace {

struct Node {
  Node* next;
  uint64_t v[4];
};

double ms_since(uint64_t t0) { return static_cast<double>(bench::now_ns() - t0) / 1e6; }

}  // namespace

int main(int argc, char** argv) {
  const long mib = argc > 1 ? std::atol(argv[1]) : 1024;
  if (mib < 8 || mib > (1 << 20)) {
    std::fprintf(stderr, "usage: %s [MiB, 8..1048576; default 1024]\n", argv[0]);
    return 2;
  }
  const size_t bytes = static_cast<size_t>(mib) << 20;
  uint64_t t = bench::now_ns();
  auto* a = static_cast<uint64_t*>(std::malloc(bytes));
  if (!a) {
    std::fprintf(stderr, "big_heap: malloc(%zu) failed\n", bytes);
    return 1;
  }
  std::memset(a, 1, bytes);
  const double fill_ms = ms_since(t);

  const size_t words = bytes / 8;
  constexpr long kReads = 10000000;
  uint64_t x = 88172645463325252ull, sum = 0;
  t = bench::now_ns();
  for (long i = 0; i < kReads; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    sum += a[(x ^ sum) % words];
  }
  const double read_ns = static_cast<double>(bench::now_ns() - t) / kReads;

  constexpr size_t kNodes = 8000000;
  std::vector<Node*> v(kNodes);
  t = bench::now_ns();
  for (auto& n : v) {
    n = static_cast<Node*>(std::malloc(sizeof(Node)));
    if (!n) return 1;
  }
  const double malloc_ms = ms_since(t);
  for (size_t i = kNodes - 1; i > 0; i--) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::swap(v[i], v[x % (i + 1)]);
  }
  for (size_t i = 0; i + 1 < kNodes; i++) v[i]->next = v[i + 1];
  v[kNodes - 1]->next = nullptr;
  t = bench::now_ns();
  for (Node* p = v[0]; p; p = p->next) sum += p->v[0] = reinterpret_cast<uintptr_t>(p);
  const double walk_ns = static_cast<double>(bench::now_ns() - t) / kNodes;

  std::printf("big_heap %ld MiB: first touch %.0f ms, dependent random reads %.1f ns, "
              "%zu mallocs of %zu B %.0f ms, random walk %.1f ns/node (checksum %llx)\n",
              mib, fill_ms, read_ns, kNodes, sizeof(Node), malloc_ms, walk_ns,
              static_cast<unsigned long long>(sum & 0xffff));
  for (Node* n : v) std::free(n);
  std::free(a);
  return 0;
}
