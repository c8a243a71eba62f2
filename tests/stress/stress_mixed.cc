// Stress: threads x cross-thread frees x random sizes across all four tiers, every block
// carrying a content cookie that is checked before it is freed (by whichever thread frees
// it). Also realloc (contents kept), calloc (zeroed), aligned allocation and
// malloc_usable_size. Runs for --seconds (a bound on the run, never an assertion).
//   stress_mixed [--threads N] [--seconds S] [--max-mib M] [--seed X]
#include <malloc.h>
#include <pthread.h>

#include <atomic>
#include <thread>
#include <vector>

#include "harness.h"

using harness::Rng;

namespace {

struct Block {
  void* p;
  size_t size;
  uint64_t tag;
};

// Exchange slots: a thread parks a block here and takes whatever was parked before, so a
// large share of frees happen on a thread that did not allocate the block. A parked block
// is described by a small heap "envelope" that itself crosses threads.
constexpr size_t kSlots = 256;
std::atomic<Block*> g_exchange[kSlots];
std::atomic<bool> g_stop{false};
std::atomic<uint64_t> g_ops{0}, g_remote{0}, g_bytes_max{0};

void check_and_free(const Block& b) {
  if (!harness::cookie_ok(b.p, b.size, b.tag)) harness::fail("cookie of a %zu-byte block at %p was overwritten", b.size, b.p);
  free(b.p);
}

void* alloc_block(Rng& r, size_t size, uint64_t tag) {
  void* p = nullptr;
  switch (r.below(8)) {
    case 0: {
      p = calloc(1, size);
      HARNESS_CHECK(p != nullptr, "calloc(%zu) failed", size);
      const uint8_t* b = static_cast<const uint8_t*>(p);
      harness::cookie_positions(size, [&](size_t i) {
        if (b[i] != 0) harness::fail("calloc(%zu) block %p not zeroed at %zu", size, p, i);
      });
      break;
    }
    case 1: {
      size_t align = size_t{16} << r.below(9);  // 16 B .. 4 KiB
      if (posix_memalign(&p, align, size) != 0) harness::fail("posix_memalign(%zu, %zu) failed", align, size);
      HARNESS_CHECK(reinterpret_cast<uintptr_t>(p) % align == 0, "posix_memalign(%zu) returned %p", align, p);
      break;
    }
    default:
      p = malloc(size);
      HARNESS_CHECK(p != nullptr, "malloc(%zu) failed", size);
  }
  HARNESS_CHECK(malloc_usable_size(p) >= size, "malloc_usable_size(%p)=%zu < %zu", p, malloc_usable_size(p), size);
  harness::cookie_fill(p, size, tag);
  return p;
}

void worker(unsigned id, size_t max_size) {
  Rng r(id * 7919 + 17);
  std::vector<Block> mine;
  mine.reserve(1024);
  size_t live = 0;
  const size_t live_cap = 48u << 20;  // per thread: keeps RSS bounded
  uint64_t tag = static_cast<uint64_t>(id) << 40;
  uint64_t ops = 0, remote = 0;
  while (!g_stop.load(std::memory_order_relaxed)) {
    for (int i = 0; i < 256; i++, ops++) {
      uint64_t op = r.below(100);
      if (op < 45 && mine.size() < 1000 && live < live_cap) {
        size_t s = harness::random_size(r, max_size);
        Block b{nullptr, s, ++tag};
        b.p = alloc_block(r, s, b.tag);
        mine.push_back(b);
        live += s;
      } else if (op < 75 && !mine.empty()) {
        size_t k = r.below(mine.size());
        live -= mine[k].size;
        check_and_free(mine[k]);
        mine[k] = mine.back();
        mine.pop_back();
      } else if (op < 85 && !mine.empty()) {
        // realloc keeps the old contents up to the smaller size.
        size_t k = r.below(mine.size());
        Block& b = mine[k];
        if (!harness::cookie_ok(b.p, b.size, b.tag)) harness::fail("cookie broken before realloc of %p", b.p);
        uint8_t first = *static_cast<uint8_t*>(b.p);
        size_t ns = harness::random_size(r, max_size);
        void* q = realloc(b.p, ns);
        HARNESS_CHECK(q != nullptr, "realloc(%p, %zu) failed", b.p, ns);
        HARNESS_CHECK(*static_cast<uint8_t*>(q) == first, "realloc(%zu -> %zu) lost the first byte", b.size, ns);
        live = live - b.size + ns;
        b = Block{q, ns, ++tag};
        harness::cookie_fill(q, ns, b.tag);
      } else if (!mine.empty()) {
        // Park one of ours, free whatever someone else parked.
        size_t k = r.below(mine.size());
        Block* env = new Block(mine[k]);
        live -= mine[k].size;
        mine[k] = mine.back();
        mine.pop_back();
        Block* got = g_exchange[r.below(kSlots)].exchange(env, std::memory_order_acq_rel);
        if (got != nullptr) {
          check_and_free(*got);
          delete got;
          remote++;
        }
      }
    }
  }
  for (const Block& b : mine) check_and_free(b);
  g_ops.fetch_add(ops);
  g_remote.fetch_add(remote);
}

}  // namespace

int main(int argc, char** argv) {
  harness::require_hakmem_if_expected();
  unsigned threads = static_cast<unsigned>(harness::arg_num(argc, argv, "--threads", 8));
  double seconds = harness::arg_num(argc, argv, "--seconds", 10);
  size_t max_size = static_cast<size_t>(harness::arg_num(argc, argv, "--max-mib", 4) * (1u << 20));
  size_t rss0 = harness::rss_bytes();
  std::vector<std::thread> ts;
  for (unsigned i = 0; i < threads; i++) ts.emplace_back(worker, i + 1, max_size);
  double t0 = harness::now_s();
  size_t rss_max = 0;
  while (harness::now_s() - t0 < seconds) {
    usleep(50 * 1000);
    size_t rss = harness::rss_bytes();
    if (rss > rss_max) rss_max = rss;
  }
  g_stop = true;
  for (auto& t : ts) t.join();
  for (auto& slot : g_exchange) {
    if (Block* b = slot.exchange(nullptr)) {
      check_and_free(*b);
      delete b;
    }
  }
  size_t rss_end = harness::rss_bytes();
  printf("stress_mixed: threads %u ops %llu remote_frees %llu rss start %zu MiB max %zu MiB end %zu MiB\n", threads,
         static_cast<unsigned long long>(g_ops.load()), static_cast<unsigned long long>(g_remote.load()), rss0 >> 20,
         rss_max >> 20, rss_end >> 20);
  // Each thread holds at most 48 MiB plus one block; the exchange holds at most 256 blocks.
  size_t bound = threads * (48u << 20) + (kSlots + threads) * max_size + (256u << 20);
  HARNESS_CHECK(rss_max <= rss0 + bound, "RSS reached %zu MiB, bound %zu MiB", rss_max >> 20, (rss0 + bound) >> 20);
  return 0;
}
