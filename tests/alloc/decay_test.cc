// RSS comes back near its baseline after a burst of frees, within the decay time: while the
// process keeps running (its slow paths drive the decay) and while it sits idle (hakmem's
// decay thread does). Sets bundle.decay_ms and whale.decay_ms to 100 ms through the live
// knob API first (found with dlsym, so the same test runs linked and preloaded), which also
// shows that live knob changes take effect. Last, decay.thread stops and restarts that thread
// while other threads free.
#include <dlfcn.h>
#include <malloc.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "alloc_test_util.h"
#include "harness.h"

namespace {

using hakmem_test::rss_kib;
using hakmem_test::set_knob;

// Keeps running (small allocations only) for up to 1.5 s, past the decay time, and expects
// the RSS to come within 16 MiB of `base` meanwhile.
void expect_rss_falls_back_while_running(long base, long full) {
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
  long after = full;
  while (std::chrono::steady_clock::now() < until) {
    for (int i = 0; i < 20000; i++) {
      void* volatile q = malloc(64);
      free(q);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    after = rss_kib();
    if (after - base < 16 * 1024) break;
  }
  EXPECT_LT(after - base, 16 * 1024) << "base " << base << " KiB, full " << full << " KiB, after " << after
                                     << " KiB";
}

TEST(AllocDecay, RssFallsBackAfterABurstOfFrees) {
  set_knob("bundle.decay_ms", 100);
  set_knob("whale.decay_ms", 100);
  // Warm up the allocator's own structures so the baseline includes them.
  for (int i = 0; i < 1000; i++) {
    void* volatile q = malloc(100);  // volatile: the compiler may drop a malloc/free pair
    free(q);
  }
  long base = rss_kib();
  std::vector<void*> v;
  // ~200 MiB across the tiers.
  for (int i = 0; i < 200000; i++) v.push_back(malloc(200));                  // tiny, 40 MiB
  for (int i = 0; i < 8000; i++) v.push_back(malloc(5000));                   // pool, 40 MiB
  for (int i = 0; i < 600; i++) v.push_back(malloc(100000));                  // bundle, 60 MiB
  for (int i = 0; i < 20; i++) v.push_back(malloc(3 << 20));                  // whale, 60 MiB
  for (void* p : v) memset(p, 1, malloc_usable_size(p));
  long full = rss_kib();
  ASSERT_GT(full - base, 150 * 1024);
  for (void* p : v) free(p);
  v.clear();
  expect_rss_falls_back_while_running(base, full);
}

// The same when the frees come in an order unlike the allocation order (a hash table or a
// tree torn down): every slab then sits under some block of the thread's full magazine, and
// a magazine its class no longer allocates from must go back to the slabs within the decay
// time, or none of them ever empties.
TEST(AllocDecay, RssFallsBackAfterFreesInAnyOrder) {
  set_knob("bundle.decay_ms", 100);
  for (int i = 0; i < 1000; i++) {
    void* volatile q = malloc(100);
    free(q);
  }
  long base = rss_kib();
  constexpr size_t kN = 300000;  // 200 B each: 60 MiB of tiny blocks
  std::vector<void*> v(kN);
  for (auto& p : v) {
    p = malloc(200);
    ASSERT_NE(p, nullptr);
    memset(p, 1, 200);
  }
  long full = rss_kib();
  ASSERT_GT(full - base, 50 * 1024);
  for (size_t i = 0; i < kN; i++) free(v[(i * 7919) % kN]);  // 7919 is prime: each once
  v.clear();
  v.shrink_to_fit();
  expect_rss_falls_back_while_running(base, full);
}

// Waits up to 3 s, allocating nothing, for the process to have n threads.
bool threads_become(int n) {
  for (int i = 0; i < 300 && harness::threads_now() != n; i++) usleep(10000);
  return harness::threads_now() == n;
}

// And when the thread that freed in scattered order then sleeps: no tick of its own can
// flush its magazines or start the decay thread. A tiny magazine that has taken a
// magazine's worth more frees than mallocs goes back to the slabs and stays empty; the
// pages that empty, tiny or pool, start hakmem's decay thread, which returns them.
void expect_rss_falls_back_when_the_thread_that_freed_sleeps(size_t size, size_t count) {
  set_knob("bundle.decay_ms", 100);
  // Whatever ran before may have started the decay thread: stop it, so that these frees
  // must start it again.
  set_knob("decay.thread", 0);
  ASSERT_TRUE(threads_become(1)) << "threads " << harness::threads_now() << " with decay.thread=0";
  set_knob("decay.thread", 1);
  long base = rss_kib();
  std::atomic<bool> freed{false}, leave{false};
  std::thread t([&] {
    std::vector<void*> v(count);
    for (auto& p : v) {
      p = malloc(size);
      memset(p, 1, size);
    }
    for (size_t i = 0; i < count; i++) free(v[(i * 7919) % count]);  // 7919: prime, coprime to count
    v.clear();
    v.shrink_to_fit();
    freed = true;
    while (!leave) usleep(1000);  // sleeps: no malloc, no free
  });
  while (!freed) usleep(1000);
  long after = rss_kib();
  const long full = after;
  for (int i = 0; i < 150 && after - base >= 16 * 1024; i++) {
    usleep(20000);
    after = rss_kib();
  }
  leave = true;
  t.join();
  EXPECT_LT(after - base, 16 * 1024) << size << " B: base " << base << " KiB, right after the frees " << full
                                     << " KiB, after " << after << " KiB";
}

TEST(AllocDecay, RssFallsBackWhenTheThreadThatFreedTinyBlocksSleeps) {
  expect_rss_falls_back_when_the_thread_that_freed_sleeps(200, 300000);  // 60 MiB
}

TEST(AllocDecay, RssFallsBackWhenTheThreadThatFreedPoolBlocksSleeps) {
  expect_rss_falls_back_when_the_thread_that_freed_sleeps(2000, 30000);  // 60 MiB
}

// And when another thread, on another arena shard, freed the runs: they wait in the remote
// stack of the arena they came from, whose owner sleeps. The bytes waiting there start the
// decay thread as cached bytes do, and its decay frees and then returns them.
TEST(AllocDecay, RssFallsBackWhenAnotherShardFreedTheRunsAndAllSleep) {
  set_knob("bundle.decay_ms", 100);
  set_knob("decay.thread", 0);
  ASSERT_TRUE(threads_become(1)) << "threads " << harness::threads_now() << " with decay.thread=0";
  set_knob("decay.thread", 1);
  hakmem_test::OtherShardThread other;
  ASSERT_TRUE(other.found()) << "no thread on another shard";
  const long base = rss_kib();
  std::vector<void*> v(300);
  for (auto& p : v) {
    p = malloc(200000);  // bundle, 60 MiB
    memset(p, 1, 200000);
  }
  other.run([&] {
    for (void* p : v) free(p);
  });
  const long full = rss_kib();
  long after = full;
  for (int i = 0; i < 150 && after - base >= 16 * 1024; i++) {
    usleep(20000);
    after = rss_kib();
  }
  EXPECT_LT(after - base, 16 * 1024) << "base " << base << " KiB, right after the frees " << full << " KiB, after "
                                     << after << " KiB";
}

// The same when the program goes idle after the frees: no allocation drives the decay, so
// hakmem's own decay thread must return the memory.
TEST(AllocDecay, RssFallsBackWhileTheProgramIsIdle) {
  set_knob("bundle.decay_ms", 100);
  set_knob("whale.decay_ms", 100);
  long base = rss_kib();
  std::vector<void*> v;
  for (int i = 0; i < 300; i++) v.push_back(malloc(200000));  // bundle, 60 MiB
  for (int i = 0; i < 16; i++) v.push_back(malloc(4 << 20));  // whale, 64 MiB
  for (void* p : v) memset(p, 1, malloc_usable_size(p));
  long full = rss_kib();
  ASSERT_GT(full - base, 100 * 1024);
  for (void* p : v) free(p);
  v.clear();
  v.shrink_to_fit();
  // No allocation from here on: only sleeping and reading /proc.
  long after = full;
  for (int i = 0; i < 100 && after - base >= 16 * 1024; i++) {
    usleep(20000);
    after = rss_kib();
  }
  EXPECT_LT(after - base, 16 * 1024) << "base " << base << " KiB, full " << full << " KiB, after " << after
                                     << " KiB";
}

// decay.thread switched on and off 200 times while two threads free bundle and whale
// blocks: every free may start the decay thread, every switch-off stops it, and a start
// joins a stopped one. Nothing hangs or crashes; afterwards off means no thread of ours,
// and on (with memory cached again) means exactly one.
TEST(AllocDecay, TheDecayThreadKnobTogglesUnderConcurrentFrees) {
  std::atomic<bool> stop{false};
  auto churn = [&stop] {
    while (!stop.load(std::memory_order_relaxed)) {
      void* p[40];
      for (auto& q : p) q = hakmem_test::kept(malloc(256 * 1024));
      for (void* q : p) free(q);
      free(hakmem_test::kept(malloc(4 << 20)));
    }
  };
  std::thread a(churn), b(churn);
  for (int i = 0; i < 200; i++) {
    set_knob("decay.thread", i % 2);
    usleep(1000);
  }
  stop = true;
  a.join();
  b.join();
  // The test is single-threaded again: one thread, plus the decay thread when it runs. It
  // sees a write within its period (250 ms at the default decay times).
  set_knob("decay.thread", 0);
  EXPECT_TRUE(threads_become(1)) << "threads " << harness::threads_now() << " with decay.thread=0";
  set_knob("decay.thread", 1);
  {  // 10 MiB cached again: the next periodic check starts the thread
    void* p[40];
    for (auto& q : p) q = hakmem_test::kept(malloc(256 * 1024));
    for (void* q : p) free(q);
  }
  EXPECT_TRUE(threads_become(2)) << "threads " << harness::threads_now() << " with decay.thread=1";
  set_knob("decay.thread", 0);
  EXPECT_TRUE(threads_become(1)) << "threads " << harness::threads_now() << " with decay.thread=0";
  set_knob("decay.thread", 1);
}

}  // namespace
