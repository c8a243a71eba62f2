// The per-tier counters add up across threads: what one thread allocates and another
// thread frees shows as allocs == frees, remote frees counted and live bytes back where
// they started, in every tier. The freeing thread never allocates (a pure consumer), the
// case a counter slot attached only on malloc would miss. Stats through the C API (dlsym,
// so the test runs linked and preloaded).
#include <dlfcn.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <gtest/gtest.h>

#include <pthread.h>
#include <vector>

#include "alloc_test_util.h"
#include "hakmem.h"

namespace {

using hakmem_test::stats;

// A plain pthread, not std::thread: std::thread allocates its state object in this thread
// and frees it in the new one, which would show as one more tiny free.
void* consume(void* arg) {
  for (void* p : *static_cast<std::vector<void*>*>(arg)) free(p);  // never calls malloc
  return nullptr;
}
void run_consumer(std::vector<void*>* blocks) {
  pthread_t t;
  ASSERT_EQ(pthread_create(&t, nullptr, consume, blocks), 0);
  ASSERT_EQ(pthread_join(t, nullptr), 0);
}

struct Case {
  int tier;
  size_t size;
  int n;
};

class ConsumerThreadFrees : public ::testing::TestWithParam<Case> {};

TEST_P(ConsumerThreadFrees, AreCountedAsFreesAndRemoteFrees) {
  const Case c = GetParam();
  std::vector<void*> blocks(c.n);
  stats();  // resolve the C API before counting
  std::vector<void*> none;
  run_consumer(&none);  // the process's first thread start allocates once for good
  const hakmem_stats before = stats();
  for (auto& p : blocks) {
    p = malloc(c.size);
    ASSERT_NE(p, nullptr);
    memset(p, 0x5a, c.size < 64 ? c.size : 64);
  }
  const hakmem_stats mid = stats();
  run_consumer(&blocks);
  const hakmem_stats after = stats();
  const hakmem_tier_stats& b = before.tier[c.tier];
  const hakmem_tier_stats& m = mid.tier[c.tier];
  const hakmem_tier_stats& a = after.tier[c.tier];
  EXPECT_EQ(m.allocs - b.allocs, static_cast<uint64_t>(c.n));
  EXPECT_EQ(a.frees - m.frees, static_cast<uint64_t>(c.n));
  // Whales have no owning thread: a free from any thread is the same operation. Tiny blocks
  // belong to the allocating thread's slabs: every free here is remote. Pool pages and bundle
  // chunks belong to a shard (heap index mod 4): the frees are remote when the consumer's
  // heap, new or adopted from an exited thread, is on another shard than this thread's, and
  // then all of them are.
  const uint64_t remote = a.remote_frees - m.remote_frees;
  if (c.tier == HAKMEM_TIER_TINY) {
    EXPECT_GE(remote, static_cast<uint64_t>(c.n));
  } else if (c.tier != HAKMEM_TIER_WHALE) {
    EXPECT_TRUE(remote == 0 || remote == static_cast<uint64_t>(c.n)) << remote << " of " << c.n;
  }
  EXPECT_EQ(a.live_bytes, b.live_bytes) << "live bytes must return to where they started";
}

// Tiny slabs are pages of the small chunks that pool shares: while carved for tiny they
// count as tiny's mapped bytes, so the tiny row never shows live bytes on nothing mapped.
TEST(TinyMapped, CoversTheLiveTinyBytesAndGoesBackWhenFreed) {
  stats();
  const hakmem_stats before = stats();
  std::vector<void*> blocks(20000);
  for (auto& p : blocks) {
    p = malloc(48);
    ASSERT_NE(p, nullptr);
    memset(p, 1, 48);
  }
  const hakmem_stats held = stats();
  const hakmem_tier_stats& t = held.tier[HAKMEM_TIER_TINY];
  EXPECT_GE(t.live_bytes - before.tier[HAKMEM_TIER_TINY].live_bytes, 20000u * 48);
  EXPECT_GE(t.mapped_bytes, t.live_bytes);
  // The class's slabs lent before may have had room (a refill carves at most 32 KiB; an
  // empty slab is kept per class): at most two slabs' worth of the new blocks came from them.
  EXPECT_GE(t.mapped_bytes - before.tier[HAKMEM_TIER_TINY].mapped_bytes, 20000u * 48 - (128u << 10));
  for (void* p : blocks) free(p);
  malloc_trim(0);  // empty slabs go back to the arena
  EXPECT_LT(stats().tier[HAKMEM_TIER_TINY].mapped_bytes, t.mapped_bytes);
}

// Bundle cached bytes are free units that were handed out, not whole 2 MiB halves: carving a
// run from a fresh half never raises the figure (its other units were never touched, so they
// are not resident), and freeing runs raises it by at most what was freed.
TEST(BundleCached, CountsOnlyUnitsThatWereHandedOut) {
  stats();
  // 84 MiB of 96 KiB runs use up whatever is cached and leave only scraps in each half.
  std::vector<void*> blocks(900);
  for (auto& p : blocks) {
    p = malloc(96 << 10);
    ASSERT_NE(p, nullptr);
    static_cast<char*>(p)[0] = 1;
  }
  const uint64_t c1 = stats().tier[HAKMEM_TIER_BUNDLE].cached_bytes;
  // A 1 MiB run fits no scrap: it starts a fresh half, whose other 60-odd units stay untouched.
  void* big = malloc(1 << 20);
  ASSERT_NE(big, nullptr);
  static_cast<char*>(big)[0] = 1;
  const uint64_t c2 = stats().tier[HAKMEM_TIER_BUNDLE].cached_bytes;
  EXPECT_LE(c2, c1) << "carving a fresh half counted its untouched units as cached";
  blocks.push_back(big);
  for (void* p : blocks) free(p);
  const uint64_t c3 = stats().tier[HAKMEM_TIER_BUNDLE].cached_bytes;
  EXPECT_GT(c3, c2);
  // Each 96 KiB block takes a 112 KiB run (room for its colour), the 1 MiB one 65 units.
  EXPECT_LE(c3 - c2, 900u * (112u << 10) + (65u << 14));
}

// Four threads reusing whales of nearby sizes at once (so that some requests grow a cached
// mapping, and another thread may cache a large enough one meanwhile): the figures still
// add up. Every whale allocation is a cache hit or a miss; with none left in use, the
// mapped bytes that came and went are the cached ones, and a trim leaves neither.
void* whale_churn(void* arg) {
  const size_t base = *static_cast<size_t*>(arg);
  for (int i = 0; i < 300; i++) {
    auto* p = static_cast<char*>(malloc(base + static_cast<size_t>(i % 3) * 4096));
    if (!p) return p;
    p[0] = 1;
    free(p);
  }
  return arg;
}

TEST(WhaleCache, FiguresAddUpWhenThreadsReuseAtOnce) {
  const hakmem_tier_stats before = stats().tier[HAKMEM_TIER_WHALE];
  size_t sizes[4] = {2u << 20, 3u << 20, 2u << 20, 5u << 20};
  pthread_t t[4];
  for (int i = 0; i < 4; i++) ASSERT_EQ(pthread_create(&t[i], nullptr, whale_churn, &sizes[i]), 0);
  for (auto& th : t) {
    void* r = nullptr;
    ASSERT_EQ(pthread_join(th, &r), 0);
    ASSERT_NE(r, nullptr) << "a whale malloc failed";
  }
  const hakmem_tier_stats after = stats().tier[HAKMEM_TIER_WHALE];
  EXPECT_EQ(after.allocs - before.allocs, 1200u);
  EXPECT_EQ((after.cache_hits - before.cache_hits) + (after.cache_misses - before.cache_misses), 1200u);
  EXPECT_GT(after.cache_hits - before.cache_hits, 1000u);
  EXPECT_EQ(after.live_bytes, before.live_bytes);
  EXPECT_EQ(static_cast<int64_t>(after.mapped_bytes - before.mapped_bytes),
            static_cast<int64_t>(after.cached_bytes - before.cached_bytes));
  malloc_trim(0);
  const hakmem_tier_stats trimmed = stats().tier[HAKMEM_TIER_WHALE];
  EXPECT_EQ(trimmed.cached_bytes, 0u);
  EXPECT_EQ(trimmed.mapped_bytes + after.cached_bytes, after.mapped_bytes);
}

std::string tier_name(const ::testing::TestParamInfo<Case>& info) {
  static const char* const kNames[] = {"tiny", "pool", "bundle", "whale"};
  return kNames[info.param.tier];
}

INSTANTIATE_TEST_SUITE_P(EveryTier, ConsumerThreadFrees,
                         ::testing::Values(Case{HAKMEM_TIER_TINY, 48, 1000}, Case{HAKMEM_TIER_POOL, 4000, 300},
                                           Case{HAKMEM_TIER_BUNDLE, 100000, 40},
                                           Case{HAKMEM_TIER_WHALE, 3 << 20, 4}),
                         tier_name);

}  // namespace
