// Knobs have a measurable effect on the allocator, changed live through the C API (found
// with dlsym so the same test runs linked and preloaded); and the whale cache reuses pages
// rather than faulting them in again. Asserts counts, never time.
#include <dlfcn.h>
#include <malloc.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "hakmem.h"

#include "alloc_test_util.h"

namespace {

using hakmem_test::kept;
using hakmem_test::set_knob;
using hakmem_test::stats;

// Writes every page through a volatile pointer (a memset before free may be dropped).
void touch(void* p, size_t n) {
  volatile char* c = static_cast<volatile char*>(p);
  for (size_t o = 0; o < n; o += 4096) c[o] = 1;
}

// A page the kernel migrated meanwhile (compaction) takes one minor fault on its next touch:
// "no refault" means at most a handful of those, against one per page otherwise.
constexpr long kStrayFaults = 8;

long minor_faults() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}

long minor_faults_thread() {
  rusage ru{};
  getrusage(RUSAGE_THREAD, &ru);
  return ru.ru_minflt;
}

// Expects the whale allocations made since `before` to have reused cached mappings: no new
// mapping (nor mremap), and `hits` more cache hits.
void expect_whale_reuse(const hakmem_stats& before, uint64_t hits) {
  const hakmem_stats now = stats();
  EXPECT_EQ(now.tier[HAKMEM_TIER_WHALE].os_maps, before.tier[HAKMEM_TIER_WHALE].os_maps);
  EXPECT_EQ(now.tier[HAKMEM_TIER_WHALE].cache_hits, before.tier[HAKMEM_TIER_WHALE].cache_hits + hits);
}

// Tiny misses (magazine refills) of 2 x 512 allocations of one class in a fresh thread.
uint64_t tiny_misses_in_fresh_thread(size_t size = 96) {
  uint64_t before = stats().tier[HAKMEM_TIER_TINY].misses;
  std::thread t([size] {
    std::vector<void*> v(512);
    for (int round = 0; round < 2; round++) {
      for (auto& p : v) p = kept(malloc(size));
      for (void* p : v) free(p);
    }
  });
  t.join();
  return stats().tier[HAKMEM_TIER_TINY].misses - before;
}

TEST(AllocKnobs, TinyCapBoundsTheMagazine) {
  set_knob("tiny.cap", 4);
  uint64_t capped = tiny_misses_in_fresh_thread();
  set_knob("tiny.cap", 0);
  uint64_t adaptive = tiny_misses_in_fresh_thread();
  // A 4-block magazine refills 2 blocks at a time: at least 512 refills for 1024 mallocs.
  EXPECT_GE(capped, 500u);
  // The adaptive magazine grows to hold the whole working set after a few refills.
  EXPECT_LT(adaptive, 64u);
}

// Frees that find a thread's magazine full grow it past the ceiling misses alone reach
// (32 KiB of blocks per class): a working set of 1500 blocks of 64 B (94 KiB), allocated
// and freed round after round, then fits, and the later rounds need no refill at all.
TEST(AllocKnobs, LocalFreesGrowTheMagazineToHoldTheWorkingSet) {
  uint64_t late_misses = 0;
  std::thread t([&late_misses] {
    std::vector<void*> v(1500);
    for (int round = 0; round < 8; round++) {
      const uint64_t before = stats().tier[HAKMEM_TIER_TINY].misses;
      for (auto& p : v) p = kept(malloc(64));
      for (void* p : v) free(p);
      if (round >= 4) late_misses += stats().tier[HAKMEM_TIER_TINY].misses - before;
    }
  });
  t.join();
  EXPECT_EQ(late_misses, 0u);
}

// One round of a working set: v.size() mallocs of `size` bytes, then frees in scattered
// order. Returns the misses of `tier` it took.
uint64_t round_misses(std::vector<void*>& v, size_t size, int tier) {
  const uint64_t before = stats().tier[tier].misses;
  for (auto& p : v) p = kept(malloc(size));
  for (size_t i = 0; i < v.size(); i++) free(v[(i * 7919) % v.size()]);
  return stats().tier[tier].misses - before;
}

// Ten rounds: the misses of the second, and of the last four.
struct TenRounds {
  uint64_t second = 0, last_four = 0;
};
TenRounds ten_rounds(std::vector<void*>& v, size_t size, int tier) {
  TenRounds r;
  for (int round = 0; round < 10; round++) {
    const uint64_t misses = round_misses(v, size, tier);
    if (round == 1) r.second = misses;
    if (round >= 6) r.last_four += misses;
  }
  return r;
}

// Runs the calling thread's idle check twice with its magazines untouched in between:
// bundle.decay_ms 40 makes it due every 10 ms, and each refill of a fresh tiny class runs
// it.
void let_the_idle_check_run_twice() {
  set_knob("bundle.decay_ms", 40);
  for (size_t size : {300, 400, 500}) {
    std::this_thread::sleep_for(std::chrono::milliseconds(15));
    free(kept(malloc(size)));
  }
  set_knob("bundle.decay_ms", 1000);
}

// Rounds bigger than the ceiling (128 KiB of blocks; here 6000 blocks of 64 B, 375 KiB)
// raise it: the miss that follows frees which overflowed the magazine raises it to hold
// the round, so the later rounds need no refill at all. Without that, each round
// overflowed 2048 blocks to the slabs and refilled them (a refill at most every 2048
// mallocs).
TEST(AllocKnobs, RoundsBiggerThanTheCeilingRaiseIt) {
  TenRounds r;
  std::thread t([&] {
    std::vector<void*> v(6000);
    r = ten_rounds(v, 64, HAKMEM_TIER_TINY);
  });
  t.join();
  EXPECT_GE(r.second, 2u);  // the second round still overflows and refills
  EXPECT_EQ(r.last_four, 0u);
}

// The raised ceiling lasts while the thread uses the class. Once the magazine has not moved
// for a quarter of bundle.decay_ms, heap_trim_idle flushes it and lowers the ceiling again,
// so a second round after that refills once more.
TEST(AllocKnobs, AnIdleClassGoesBackToTheBaseCeiling) {
  uint64_t busy = 0, after_idle = 0;
  std::thread t([&] {
    std::vector<void*> v(6000);
    for (int round = 0; round < 8; round++) round_misses(v, 64, HAKMEM_TIER_TINY);
    // A refill of another class runs the periodic check; without a pause the 64 B magazine
    // moved in between (the check is not due yet), and it keeps its ceiling.
    free(kept(malloc(200)));
    busy = round_misses(v, 64, HAKMEM_TIER_TINY);
    let_the_idle_check_run_twice();
    round_misses(v, 64, HAKMEM_TIER_TINY);  // refills the flushed magazine
    after_idle = round_misses(v, 64, HAKMEM_TIER_TINY);
  });
  t.join();
  EXPECT_EQ(busy, 0u);
  EXPECT_GE(after_idle, 2u);
}

// The pool tier the same way: a round of 200 blocks of 4 KiB (800 KiB) is more than a pool
// magazine's 32 blocks. The miss after a round that flushed raises the ceiling to hold the
// round (up to 1 MiB), and the later rounds need no refill; an idle class goes back to the
// base ceiling.
TEST(AllocKnobs, PoolRoundsBiggerThanTheCeilingRaiseIt) {
  TenRounds r;
  uint64_t after_idle = 0;
  std::thread t([&] {
    std::vector<void*> v(200);
    r = ten_rounds(v, 4096, HAKMEM_TIER_POOL);
    let_the_idle_check_run_twice();
    round_misses(v, 4096, HAKMEM_TIER_POOL);
    after_idle = round_misses(v, 4096, HAKMEM_TIER_POOL);
  });
  t.join();
  EXPECT_GE(r.second, 2u);  // the second round still flushes and refills
  EXPECT_EQ(r.last_four, 0u);
  EXPECT_GE(after_idle, 2u);
}

// A thread that only allocates (another thread frees its blocks) misses on every refill but
// never overflows, so its magazine stays at the lower ceiling: a refill brings it at most
// 32 KiB of blocks (a slab's whole free list only when that fits), so 24 MiB of 64 B blocks
// take at least 768 refills. With the 128 KiB ceiling for misses too, such a thread took up
// to a slab's worth per class at each refill and held it idle (xmalloc, 2 producers over 12
// classes: peak RSS 5.8 MiB against 5.0 MiB).
TEST(AllocKnobs, AThreadWhoseBlocksOthersFreeRefillsInSmallSteps) {
  constexpr int kBatch = 128, kSlots = 8, kBatches = 3072;  // 393216 blocks of 64 B: 24 MiB
  static void* ring[kSlots][kBatch];
  int produced = 0, consumed = 0;
  std::mutex mu;
  std::condition_variable cv;
  uint64_t misses = 0;
  std::thread consumer([&] {
    for (int n = 0; n < kBatches; n++) {
      std::unique_lock<std::mutex> lk(mu);
      cv.wait(lk, [&] { return consumed < produced; });
      void** b = ring[consumed % kSlots];
      lk.unlock();
      for (int i = 0; i < kBatch; i++) free(b[i]);
      lk.lock();
      consumed++;
      cv.notify_all();
    }
  });
  std::thread producer([&] {
    const uint64_t before = stats().tier[HAKMEM_TIER_TINY].misses;
    for (int n = 0; n < kBatches; n++) {
      std::unique_lock<std::mutex> lk(mu);
      cv.wait(lk, [&] { return produced - consumed < kSlots; });
      void** b = ring[produced % kSlots];
      lk.unlock();
      for (int i = 0; i < kBatch; i++) b[i] = kept(malloc(64));
      lk.lock();
      produced++;
      cv.notify_all();
    }
    misses = stats().tier[HAKMEM_TIER_TINY].misses - before;
  });
  producer.join();
  consumer.join();
  EXPECT_GE(misses, 768u);
}

// tiny.prewarm refills whole magazines, fresh blocks included (a refill otherwise takes half
// a magazine and carves at most 32 KiB: 32 blocks of 1 KiB).
TEST(AllocKnobs, TinyPrewarmRefillsWholeMagazines) {
  set_knob("tiny.cap", 64);
  set_knob("tiny.prewarm", 1);
  uint64_t warm = tiny_misses_in_fresh_thread(1024);
  set_knob("tiny.prewarm", 0);
  uint64_t cold = tiny_misses_in_fresh_thread(1024);
  set_knob("tiny.cap", 0);
  // 1024 mallocs: refills of 64 blocks against refills of 32.
  EXPECT_GE(cold, 24u) << "warm " << warm << " cold " << cold;
  EXPECT_LE(warm * 3, cold * 2) << "warm " << warm << " cold " << cold;
}

// Page faults of a new thread's first malloc(n) (its heap attached first), and of the
// mallocs after it up to the one that refills the class a second time: the first refill of
// a class carves what one 4 KiB page holds (one block at least), so the malloc after those
// blocks is the second refill.
struct RefillFaults {
  long first = -1;
  long second = -1;
};
RefillFaults faults_of_the_first_two_refills(size_t n) {
  RefillFaults f;
  std::thread t([&f, n] {
    void* first = kept(malloc(16));  // attaches the thread's heap first
    const size_t page_blocks = n >= 4096 ? 1 : 4096 / n;
    std::vector<void*> held;
    held.reserve(page_blocks + 1);
    long f0 = minor_faults_thread();
    held.push_back(kept(malloc(n)));
    long f1 = minor_faults_thread();
    for (size_t i = 0; i < page_blocks; i++) held.push_back(kept(malloc(n)));
    long f2 = minor_faults_thread();
    f.first = f1 - f0;
    f.second = f2 - f1;
    for (void* p : held) free(p);
    free(first);
  });
  t.join();
  return f;
}

// A thread's first malloc of a class carves one page's worth of fresh blocks (many classes
// are used once by a thread, and each block carved ahead of need is a page fault), and a
// later refill carves at most 32 KiB: a thread that only allocates (its blocks freed by
// others) must not keep ~64 KiB per class touched and idle. With tiny.cap=128 a refill of
// the 768 B class wants 64 blocks (48 KiB, 12 pages); the first carves 5 (one page), the
// second 42 (32 KiB, 8 pages). bundle.decay_ms=0 purges freed pages at once, so every page
// carved here is faulted in and counted.
TEST(AllocKnobs, AFirstRefillCarvesAPageAndALaterOneAtMost32KiBOfFreshBlocks) {
  const uint64_t decay_ms = hakmem_test::get_knob("bundle.decay_ms");
  set_knob("bundle.decay_ms", 0);
  set_knob("tiny.cap", 128);
  const RefillFaults f = faults_of_the_first_two_refills(768);
  set_knob("tiny.cap", 0);
  set_knob("bundle.decay_ms", decay_ms);
  EXPECT_GE(f.first, 1) << "the first refill carved no fresh memory: the check below proves nothing";
  EXPECT_LE(f.first, 2) << "a first refill carved more than a page of fresh blocks";
  EXPECT_GE(f.second, 6) << "the second refill carved no fresh memory: the check below proves nothing";
  EXPECT_LE(f.second, 10) << "a refill carved more than 32 KiB of fresh blocks";
}

// The pool tier likewise: the first 6000 B malloc (the 6 KiB class, which no other test here
// uses, so its blocks are all fresh) carves one block, one page written (its first line, as
// a carved block's is; a new page's descriptor may take one more); the second refill wants
// 11 blocks but carves 2 (16 KiB), 2 pages.
TEST(AllocKnobs, APoolRefillCarvesAtMost16KiBOfFreshBlocks) {
  const RefillFaults f = faults_of_the_first_two_refills(6000);
  EXPECT_GE(f.first, 1) << "the first refill carved no fresh memory";
  EXPECT_LE(f.first, 2) << "the first refill carved more than one block";
  EXPECT_GE(f.second, 1) << "the second refill carved no fresh memory: the check below proves nothing";
  EXPECT_LE(f.second, 4) << "a refill carved more than 16 KiB of fresh blocks";
}

TEST(AllocKnobs, WhalePrewarmMeansNoFaultsOnFirstTouch) {
  set_knob("whale.cache_bytes", 0);  // every block below is a new mapping
  auto touch_faults = [](size_t n) {
    char* p = static_cast<char*>(kept(malloc(n)));
    long f0 = minor_faults();
    touch(p, n);
    long f = minor_faults() - f0;
    free(p);
    return f;
  };
  set_knob("whale.prewarm", 1);
  long warm = touch_faults(9 << 20);
  set_knob("whale.prewarm", 0);
  long cold = touch_faults(9 << 20);
  set_knob("whale.cache_bytes", 1ull << 30);
  EXPECT_LE(warm, kStrayFaults);
  EXPECT_GE(cold, 4);  // at least one fault per 2 MiB huge page, 2304 without THP
}

TEST(AllocKnobs, WhaleCacheKeepsFreedMappingsForReuseAndZeroDisablesIt) {
  set_knob("whale.cache_bytes", 1ull << 30);
  set_knob("whale.decay_ms", 600000);
  hakmem_stats s0 = stats();
  void* p = kept(malloc(6 << 20));
  touch(p, 6 << 20);
  free(p);
  hakmem_stats s1 = stats();
  EXPECT_GE(s1.tier[HAKMEM_TIER_WHALE].cached_bytes, 6u << 20);
  void* q = kept(malloc(6 << 20));  // reuse: no new mapping, no fault
  long f0 = minor_faults();
  touch(q, 6 << 20);
  EXPECT_LE(minor_faults() - f0, kStrayFaults);
  expect_whale_reuse(s1, 1);
  free(q);
  set_knob("whale.cache_bytes", 0);
  void* r = kept(malloc(7 << 20));
  free(r);
  hakmem_stats s3 = stats();
  // With no cache the free unmaps at once; and the cap also evicted what was cached.
  EXPECT_EQ(s3.tier[HAKMEM_TIER_WHALE].cached_bytes, 0u);
  EXPECT_EQ(s3.tier[HAKMEM_TIER_WHALE].mapped_bytes, s0.tier[HAKMEM_TIER_WHALE].mapped_bytes);
  set_knob("whale.cache_bytes", 1ull << 30);
  set_knob("whale.decay_ms", 1000);
}

// A request larger than anything cached grows the largest cached mapping (mremap): its pages
// are reused as they are and only the extension faults in.
TEST(AllocWhale, ALargerRequestGrowsACachedMappingInsteadOfFaultingAllOfIt) {
  set_knob("whale.cache_bytes", 1ull << 30);
  set_knob("whale.decay_ms", 600000);
  malloc_trim(0);  // an empty cache: the 8 MiB block below is the only candidate
  void* p = kept(malloc(8 << 20));
  touch(p, 8 << 20);
  free(p);
  hakmem_stats s1 = stats();
  void* q = kept(malloc(16 << 20));
  ASSERT_NE(q, nullptr);
  long f0 = minor_faults();
  touch(q, 16 << 20);
  long faults = minor_faults() - f0;
  EXPECT_LE(faults, (8 << 20) / 4096 + kStrayFaults) << "only the 8 MiB extension is new memory";
  hakmem_stats s2 = stats();
  EXPECT_EQ(s2.tier[HAKMEM_TIER_WHALE].cache_hits, s1.tier[HAKMEM_TIER_WHALE].cache_hits + 1);
  EXPECT_EQ(s2.tier[HAKMEM_TIER_WHALE].cached_bytes, 0u);
  free(q);
  set_knob("whale.decay_ms", 1000);
}

// Empties the whale cache, then leaves exactly one resident mapping of `bytes` in it (kept
// for 10 minutes: restore whale.decay_ms afterwards). Returns the figures at that point.
hakmem_stats cache_one_whale(size_t bytes) {
  set_knob("whale.cache_bytes", 1ull << 30);
  set_knob("whale.decay_ms", 600000);
  malloc_trim(0);
  void* p = kept(malloc(bytes));
  touch(p, bytes);
  free(p);
  return stats();
}

// A cached mapping far too big for a request is split: the request keeps the chunks it needs
// and the rest stays cached, resident, for the next one. Nothing is unmapped.
TEST(AllocWhale, AFarTooBigCachedMappingIsSplitNotUnmapped) {
  hakmem_stats s1 = cache_one_whale(32 << 20);
  void* a = kept(malloc(2 << 20));   // takes the 32 MiB mapping and splits it
  void* b = kept(malloc(20 << 20));  // served by the split-off rest
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  long f0 = minor_faults();
  touch(a, 2 << 20);
  touch(b, 20 << 20);
  EXPECT_LE(minor_faults() - f0, kStrayFaults);
  expect_whale_reuse(s1, 2);
  EXPECT_EQ(stats().tier[HAKMEM_TIER_WHALE].os_unmaps, s1.tier[HAKMEM_TIER_WHALE].os_unmaps);
  // Both halves are whole blocks of their own: freeing them caches them again.
  free(a);
  free(b);
  hakmem_stats s3 = stats();
  EXPECT_GE(s3.tier[HAKMEM_TIER_WHALE].cached_bytes, s1.tier[HAKMEM_TIER_WHALE].cached_bytes);
  set_knob("whale.decay_ms", 1000);
}

// A cached mapping up to 9 times too big is handed out whole, not split: after a 4 MiB block
// has used a cached 16 MiB mapping, a 16 MiB request still finds it whole, with no new
// mapping and no page faults. (Split at 2 x, the 16 MiB request had to grow an 8 MiB piece
// while the other 8 MiB sat cached: 2048 faults.)
TEST(AllocWhale, AMappingUpToNineTimesTooBigIsHandedOutWhole) {
  hakmem_stats s1 = cache_one_whale(16 << 20);
  void* a = kept(malloc(4 << 20));
  ASSERT_NE(a, nullptr);
  touch(a, 4 << 20);
  free(a);
  long f0 = minor_faults();
  void* b = kept(malloc(16 << 20));
  ASSERT_NE(b, nullptr);
  touch(b, 16 << 20);
  EXPECT_LE(minor_faults() - f0, kStrayFaults);
  expect_whale_reuse(s1, 2);
  free(b);
  set_knob("whale.decay_ms", 1000);
}

// realloc grows a whale by moving its mapping: the contents come along without a copy and
// without faulting the old pages in again.
TEST(AllocWhale, ReallocGrowsAWhaleWithoutRefaultingItsPages) {
  const size_t old_n = 8 << 20, new_n = 24 << 20;
  auto* p = static_cast<unsigned char*>(kept(malloc(old_n)));
  for (size_t o = 0; o < old_n; o += 4096) p[o] = static_cast<unsigned char>(o >> 12);
  hakmem_stats s1 = stats();
  auto* q = static_cast<unsigned char*>(kept(realloc(p, new_n)));
  ASSERT_NE(q, nullptr);
  long f0 = minor_faults();
  size_t wrong = 0;
  for (size_t o = 0; o < old_n; o += 4096) wrong += q[o] != static_cast<unsigned char>(o >> 12);
  EXPECT_EQ(wrong, 0u);
  EXPECT_LE(minor_faults() - f0, kStrayFaults) << "the old pages moved with the mapping";
  EXPECT_GE(malloc_usable_size(q), new_n);
  touch(q, new_n);
  hakmem_stats s2 = stats();
  EXPECT_EQ(s2.tier[HAKMEM_TIER_WHALE].allocs, s1.tier[HAKMEM_TIER_WHALE].allocs);
  EXPECT_GE(s2.tier[HAKMEM_TIER_WHALE].live_bytes, new_n);
  free(q);
}

// realloc shrinks a whale below half of itself in place: the chunks it no longer needs
// become a cached whale of their own (served to the next big request without a fault,
// returned to the OS by the cache's policy), and nothing is copied. From half up it stays
// whole, as before. Freed, the block takes its cached pieces back, so the whole mapping
// serves the next big request.
TEST(AllocWhale, ReallocShrinksAWhaleInPlaceAndFreeJoinsThePiecesAgain) {
  const size_t old_n = 64 << 20, half_up = 40 << 20, mid_n = 28 << 20, small_n = 12 << 20;
  auto* p = static_cast<unsigned char*>(kept(malloc(old_n)));
  ASSERT_NE(p, nullptr);
  for (size_t o = 0; o < old_n; o += 4096) p[o] = static_cast<unsigned char>(o >> 12);
  const size_t whole = malloc_usable_size(p);
  auto* q = static_cast<unsigned char*>(realloc(p, half_up));
  ASSERT_EQ(q, p) << "half or more: in place";
  EXPECT_EQ(malloc_usable_size(q), whole) << "and whole";
  hakmem_stats s1 = stats();
  q = static_cast<unsigned char*>(realloc(q, mid_n));
  ASSERT_EQ(q, p) << "shrunk in place";
  EXPECT_GE(malloc_usable_size(q), mid_n);
  EXPECT_LT(malloc_usable_size(q), mid_n + (8u << 20));
  hakmem_stats s2 = stats();
  EXPECT_GE(s2.tier[HAKMEM_TIER_WHALE].cached_bytes, s1.tier[HAKMEM_TIER_WHALE].cached_bytes + (28u << 20));
  EXPECT_EQ(s2.tier[HAKMEM_TIER_WHALE].mapped_bytes, s1.tier[HAKMEM_TIER_WHALE].mapped_bytes)
      << "the tail stays mapped, cached";
  q = static_cast<unsigned char*>(realloc(q, small_n));
  ASSERT_EQ(q, p);
  EXPECT_LT(malloc_usable_size(q), small_n + (8u << 20));
  size_t wrong = 0;
  for (size_t o = 0; o < small_n; o += 4096) wrong += q[o] != static_cast<unsigned char>(o >> 12);
  EXPECT_EQ(wrong, 0u);
  // Freed, the block and its two cached tails are one mapping again: a request for nearly
  // all of it is served from the cache, with no new memory and no page fault.
  free(q);
  hakmem_stats s3 = stats();
  auto* r = static_cast<unsigned char*>(kept(malloc(old_n - (1 << 20))));
  ASSERT_NE(r, nullptr);
  long f0 = minor_faults();
  touch(r, old_n - (1 << 20));
  EXPECT_LE(minor_faults() - f0, kStrayFaults);
  EXPECT_EQ(stats().tier[HAKMEM_TIER_WHALE].mapped_bytes, s3.tier[HAKMEM_TIER_WHALE].mapped_bytes);
  free(r);
}

// Pages are shared across the arena shards: small pages one thread freed (its heap still
// live, so the next thread gets a heap of its own and, in a fresh process, another shard)
// are taken by the next thread before any new 4 MiB chunk is mapped. With per-shard reuse
// only, the second thread faulted in fresh chunks while ~12 MiB of freed pages sat resident.
TEST(AllocArena, PagesFreedByOneThreadAreReusedByAnotherBeforeANewChunkIsMapped) {
  constexpr size_t kBlock = 1024, kBlocks = 12 * 1024;  // 12 MiB: three chunks' worth of slabs
  const uint64_t decay_ms = hakmem_test::get_knob("bundle.decay_ms");
  set_knob("bundle.decay_ms", 3600000);  // nothing may be returned to the OS in between
  std::mutex m;
  std::condition_variable cv;
  bool freed = false, done = false;
  // Allocates and touches 12 MiB of slabs, then frees it all: every slab becomes empty.
  auto fill_and_free = [] {
    std::vector<void*> v(kBlocks);
    for (auto& p : v) {
      p = malloc(kBlock);
      touch(p, kBlock);
    }
    for (void* p : v) free(p);
  };
  std::thread first([&] {
    fill_and_free();
    std::unique_lock<std::mutex> l(m);
    freed = true;
    cv.notify_all();
    cv.wait(l, [&] { return done; });  // stays alive: its heap is not handed on
  });
  {
    std::unique_lock<std::mutex> l(m);
    cv.wait(l, [&] { return freed; });
  }
  const hakmem_stats s0 = stats();
  const uint64_t cached0 = s0.tier[HAKMEM_TIER_POOL].cached_bytes;
  std::thread second(fill_and_free);
  second.join();
  const hakmem_stats s1 = stats();
  {
    std::lock_guard<std::mutex> l(m);
    done = true;
    cv.notify_all();
  }
  first.join();
  set_knob("bundle.decay_ms", decay_ms);
  EXPECT_GE(cached0, 8u << 20) << "the first thread's empty slabs should be free arena pages";
  EXPECT_EQ(s1.tier[HAKMEM_TIER_POOL].os_maps, s0.tier[HAKMEM_TIER_POOL].os_maps)
      << "a new small chunk was mapped while freed pages were available";
}

// Pages of [p, p + n) (p page-aligned) that are resident; -1 when part of it is not mapped.
long resident_pages(const void* p, size_t n) {
  std::vector<unsigned char> vec((n + 4095) / 4096);
  if (mincore(const_cast<void*>(p), n, vec.data()) != 0) return -1;
  long r = 0;
  for (unsigned char v : vec) r += v & 1;
  return r;
}

// Cross-tier reuse: a bundle arena that needs a new chunk takes the first chunk of a cached
// whale mapping, whose pages are resident (runs carved from it do not fault), and the rest
// of the mapping stays mapped and resident, cached for the next whale. Freed, the chunk
// goes back to the OS as bundle memory does.
TEST(AllocArena, ANewBundleChunkIsTakenFromACachedWhaleBeforeOneIsMapped) {
  const uint64_t whale_decay = hakmem_test::get_knob("whale.decay_ms");
  const uint64_t bundle_decay = hakmem_test::get_knob("bundle.decay_ms");
  set_knob("whale.decay_ms", 3600000);
  set_knob("bundle.decay_ms", 3600000);
  constexpr size_t kWhale = 10 << 20, kRun = 1 << 20, kChunk = 4 << 20;
  auto* w = static_cast<char*>(malloc(kWhale));
  ASSERT_NE(w, nullptr);
  touch(w, kWhale);
  // The mapping: one header page below the block's page (the block starts a colour into
  // it), chunk-aligned.
  const uintptr_t base = (reinterpret_cast<uintptr_t>(w) & ~uintptr_t{4095}) - 4096;
  ASSERT_EQ(base % kChunk, 0u);
  // The end of the last page touch() writes (it writes w + k * 4 KiB).
  const uintptr_t touched_end = ((reinterpret_cast<uintptr_t>(w) + kWhale - 4096) & ~uintptr_t{4095}) + 4096;
  free(w);
  // Runs of 1 MiB fill whatever room the arenas have, then need new chunks: the first ones
  // come from cached whales, smallest first (earlier tests may have left some).
  std::vector<void*> blocks;
  char* inside = nullptr;
  for (int i = 0; i < 1024 && !inside; i++) {
    auto* p = static_cast<char*>(malloc(kRun));
    ASSERT_NE(p, nullptr);
    blocks.push_back(p);
    if (reinterpret_cast<uintptr_t>(p) - base < kChunk) inside = p;
  }
  ASSERT_NE(inside, nullptr) << "no bundle run was carved from the cached whale's first chunk";
  EXPECT_EQ(resident_pages(inside, kRun), static_cast<long>(kRun / 4096)) << "the run is resident before its first touch";
  const long before = minor_faults();
  touch(inside, kRun);
  EXPECT_LE(minor_faults() - before, kStrayFaults) << "touching the run faulted";
  const char* rest = reinterpret_cast<const char*>(base + kChunk);
  EXPECT_EQ(resident_pages(rest, touched_end - (base + kChunk)), static_cast<long>((touched_end - (base + kChunk)) / 4096))
      << "the rest of the mapping should stay mapped and resident";
  // Once free, the chunk goes back to the OS like any other bundle memory. malloc_trim
  // (which also empties this thread's bins, where the last frees may sit) returns it now.
  for (void* p : blocks) free(p);
  malloc_trim(0);
  EXPECT_LE(resident_pages(inside, kRun), 0) << "the freed run should have been returned to the OS";
  set_knob("whale.decay_ms", whale_decay);
  set_knob("bundle.decay_ms", bundle_decay);
}

// An arena indexes at most 2048 bundle chunks (8 GiB of runs); a thread whose arena is full
// still gets its bundle-sized blocks, as whales. The runs are never touched, so this maps
// address space, not memory (only each chunk's header page becomes resident).
TEST(AllocArena, BundleRequestsBeyondTheChunkIndexAreServedAsWhales) {
  constexpr size_t kRun = 1 << 20;  // 64 units: three runs per chunk
  std::vector<void*> blocks;
  const uint64_t whales0 = stats().tier[HAKMEM_TIER_WHALE].allocs;
  uint64_t whales = whales0;
  // Up to 4 arenas' worth of chunks (runs may come from any arena) plus headroom.
  for (size_t i = 0; i < 4 * 2048 * 3 + 64 && whales == whales0; i++) {
    void* p = malloc(kRun);
    ASSERT_NE(p, nullptr) << "allocation " << i << " failed";
    blocks.push_back(p);
    whales = stats().tier[HAKMEM_TIER_WHALE].allocs;
  }
  EXPECT_GT(whales, whales0) << "no bundle request overflowed to the whale tier";
  // The overflow block is a working whale: written, sized and freed like any other.
  void* last = blocks.back();
  memset(last, 0x5a, kRun);
  EXPECT_GE(malloc_usable_size(last), kRun);
  for (void* p : blocks) free(p);
  malloc_trim(0);
}

}  // namespace
