// Multi-threaded stress with hakmem as the process allocator: cross-thread frees with
// content cookies across all tiers, thread churn, fork while other threads allocate, and
// bounded memory for producer/consumer frees. Short (seconds) and deterministic per seed.
#include <malloc.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <thread>
#include <vector>

#include "alloc_test_util.h"

using namespace hakmem_test;

namespace {

struct Rng {
  uint64_t s;
  uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
};

// Mostly small, sometimes pool, bundle and whale sizes.
size_t pick_size(Rng& r) {
  uint64_t x = r.next() % 1000;
  if (x < 700) return 1 + r.next() % 256;
  if (x < 900) return 257 + r.next() % 4000;
  if (x < 970) return 4096 + r.next() % 60000;
  if (x < 997) return 65536 + r.next() % 900000;
  return (1 << 20) + r.next() % (3 << 20);
}

// A block carries its own size in its first word, so one atomic pointer hands it over.
uint32_t seed_of(const void* p, size_t n) {
  return static_cast<uint32_t>(reinterpret_cast<uintptr_t>(p) >> 4) ^ static_cast<uint32_t>(n);
}
void stamp(void* p, size_t n) {
  memcpy(p, &n, sizeof n);
  unsigned char* c = static_cast<unsigned char*>(p) + sizeof n;
  size_t body = n - sizeof n < 4096 ? n - sizeof n : 4096;
  fill_pattern(c, body, seed_of(p, n));
  if (n > 4096 + sizeof n) static_cast<unsigned char*>(p)[n - 1] = static_cast<unsigned char>(seed_of(p, n));
}
// Returns the block's size, or 0 when its contents were damaged.
size_t verify(const void* p) {
  size_t n;
  memcpy(&n, p, sizeof n);
  if (n < 16 || n > (5u << 20)) return 0;
  const unsigned char* c = static_cast<const unsigned char*>(p) + sizeof n;
  size_t body = n - sizeof n < 4096 ? n - sizeof n : 4096;
  if (!check_pattern(c, body, seed_of(p, n))) return 0;
  if (n > 4096 + sizeof n && static_cast<const unsigned char*>(p)[n - 1] != static_cast<unsigned char>(seed_of(p, n))) return 0;
  return n;
}

// Four threads malloc blocks of sizes from `pick`, stamp them and swap them into random
// slots (slot_count of them); the previous occupant, often another thread's block, is checked, sometimes
// reallocated, and freed. Every block keeps its contents.
template <typename Pick>
void swap_blocks_across_threads(Pick pick, int ops, int slot_count) {
  constexpr int kThreads = 4;
  const int kOps = ops, kSlots = slot_count;
  std::vector<std::atomic<void*>> slots(kSlots);
  std::atomic<long> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      Rng r{0x9e3779b97f4a7c15ull * (t + 1)};
      for (int i = 0; i < kOps; i++) {
        size_t n = pick(r) + 16;
        void* p = malloc(n);
        if (!p || malloc_usable_size(p) < n) {
          bad++;
          continue;
        }
        stamp(p, n);
        // Swap with a random slot: the previous occupant (often another thread's block) is
        // checked and freed here, sometimes after a realloc that must keep its contents.
        void* old = slots[r.next() % kSlots].exchange(p);
        if (!old) continue;
        size_t on = verify(old);
        if (on == 0) {
          bad++;
          continue;
        }
        if (r.next() % 8 == 0) {
          size_t nn = pick(r) + 16;
          void* q = realloc(old, nn);
          if (!q) {
            bad++;
            continue;
          }
          size_t keep = nn < on ? nn : on;
          // The moved prefix is intact: the size word and the start of the pattern.
          size_t got;
          memcpy(&got, q, sizeof got);
          size_t body = keep - sizeof on < 4096 ? keep - sizeof on : 4096;
          if (got != on || !check_pattern(static_cast<unsigned char*>(q) + sizeof on, body, seed_of(old, on))) bad++;
          old = q;
        }
        free(old);
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& s : slots) {
    void* p = s.load();
    if (!p) continue;
    if (verify(p) == 0) bad++;
    free(p);
  }
  EXPECT_EQ(bad.load(), 0);
}

TEST(AllocStress, CrossThreadFreesWithContentCookiesAcrossAllTiers) {
  swap_blocks_across_threads(pick_size, 60000, 4096);
}

// The same with bundle sizes only, and a decay every few milliseconds: runs freed by threads
// of other shards are pushed onto their arenas' remote stacks while their owners take them
// into their bins, realloc grows runs in place, and the decay drains the stacks, all at once.
TEST(AllocStress, BundleRunsSwappedAcrossThreadsKeepContents) {
  const uint64_t decay = get_knob("bundle.decay_ms");
  set_knob("bundle.decay_ms", 8);
  swap_blocks_across_threads([](Rng& r) { return size_t{33000} + r.next() % 500000; }, 6000, 256);
  set_knob("bundle.decay_ms", decay);
}

// Round after round, a thread builds a structure far bigger than its magazines and tears
// it down in scattered order (the bypass, whose frees finish late), while another thread
// frees the other half of it, remotely, at the same time. Every block keeps its contents
// while it is live, and no block is handed out twice: live blocks never overlap.
TEST(AllocStress, TeardownsRacingRemoteFreesKeepContents) {
  constexpr int kRounds = 6;
  constexpr size_t kBlocks = 60000;
  std::atomic<long> bad{0};
  std::vector<void*> remote;
  std::atomic<int> phase{0};  // odd: `remote` is the other thread's to verify and free
  std::thread other([&] {
    for (int round = 0; round < kRounds; round++) {
      while (phase.load(std::memory_order_acquire) != 2 * round + 1) std::this_thread::yield();
      for (void* p : remote) {
        if (verify(p) == 0) bad++;
        free(p);
      }
      phase.store(2 * round + 2, std::memory_order_release);
    }
  });
  Rng r{12345};
  for (int round = 0; round < kRounds; round++) {
    std::vector<void*> v(kBlocks);
    for (auto& p : v) {
      const size_t n = 96 + r.next() % 100;  // 7 classes: over twice each magazine's ceiling
      p = malloc(n);
      if (!p) {
        bad++;
        continue;
      }
      stamp(p, n);
    }
    // Overlapping live blocks would have damaged each other's patterns.
    for (void* p : v) {
      if (p && verify(p) == 0) bad++;
    }
    remote.clear();
    std::vector<void*> local;
    for (size_t i = 0; i < kBlocks; i++) (i % 2 ? remote : local).push_back(v[i]);
    phase.store(2 * round + 1, std::memory_order_release);
    for (size_t i = 0; i < local.size(); i++) {
      void* p = local[(i * 7919) % local.size()];
      if (!p) continue;
      if (verify(p) == 0) bad++;
      free(p);
    }
    while (phase.load(std::memory_order_acquire) != 2 * round + 2) std::this_thread::yield();
  }
  other.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST(AllocStress, ThreadChurnWithBlocksOutlivingTheirThreads) {
  constexpr int kRounds = 40, kPerRound = 8, kBlocks = 300;
  std::vector<void*> survivors;
  std::atomic<long> bad{0};
  for (int round = 0; round < kRounds; round++) {
    std::vector<std::vector<void*>> kept(kPerRound);
    std::vector<std::thread> threads;
    for (int t = 0; t < kPerRound; t++) {
      threads.emplace_back([&, t, round] {
        Rng r{static_cast<uint64_t>(round * 131 + t + 1)};
        std::vector<void*> mine;
        for (int i = 0; i < kBlocks; i++) {
          size_t n = pick_size(r) % 5000 + 1;
          char* p = static_cast<char*>(malloc(n));
          if (!p) { bad++; continue; }
          memset(p, t + 1, n);
          p[0] = static_cast<char>(n & 0x7f);
          mine.push_back(p);
        }
        // Free half here; the rest outlives the thread and is freed by the main thread.
        for (size_t i = 0; i < mine.size(); i += 2) free(mine[i]);
        for (size_t i = 1; i < mine.size(); i += 2) kept[t].push_back(mine[i]);
      });
    }
    for (auto& t : threads) t.join();
    for (auto& v : kept)
      for (void* p : v) free(p);
  }
  EXPECT_EQ(bad.load(), 0);
}

TEST(AllocStress, ForkWhileOtherThreadsAllocate) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; t++) {
    threads.emplace_back([&, t] {
      Rng r{static_cast<uint64_t>(t + 77)};
      std::vector<void*> v(64, nullptr);
      while (!stop.load(std::memory_order_relaxed)) {
        size_t i = r.next() % v.size();
        free(v[i]);
        v[i] = malloc(pick_size(r));
      }
      for (void* p : v) free(p);
    });
  }
  for (int k = 0; k < 20; k++) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // The child allocates at once, in every tier, from the thread that forked.
      Rng r{static_cast<uint64_t>(k + 1)};
      for (int i = 0; i < 2000; i++) {
        size_t n = pick_size(r);
        void* p = malloc(n);
        if (!p) _exit(2);
        memset(p, 1, n < 8192 ? n : 8192);
        free(p);
      }
      std::thread t([] {
        void* p = malloc(100);
        free(p);
      });
      t.join();
      _exit(0);
    }
    int st = 0;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    ASSERT_TRUE(WIFEXITED(st)) << "child died with signal " << (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    EXPECT_EQ(WEXITSTATUS(st), 0);
  }
  stop = true;
  for (auto& t : threads) t.join();
}

TEST(AllocStress, ProducerConsumerFreesDoNotGrowMemoryWithoutBound) {
  // One thread allocates, another frees: every tiny and pool block is freed remotely.
  constexpr int kBatch = 1000, kBatches = 1500;
  std::atomic<void**> handoff{nullptr};
  std::atomic<bool> done{false};
  long start = rss_kib();
  long peak = start;
  std::thread consumer([&] {
    for (;;) {
      void** batch = handoff.exchange(nullptr);
      if (!batch) {
        if (done.load()) break;
        std::this_thread::yield();
        continue;
      }
      for (int i = 0; i < kBatch; i++) free(batch[i]);
      free(batch);
    }
  });
  Rng r{99};
  for (int b = 0; b < kBatches; b++) {
    void** batch = static_cast<void**>(malloc(sizeof(void*) * kBatch));
    for (int i = 0; i < kBatch; i++) {
      size_t n = 8 + r.next() % 3000;
      batch[i] = malloc(n);
      memset(batch[i], 1, n < 64 ? n : 64);
    }
    while (handoff.load() != nullptr) std::this_thread::yield();
    handoff.store(batch);
    if (b % 100 == 0) {
      long now = rss_kib();
      if (now > peak) peak = now;
    }
  }
  while (handoff.load() != nullptr) std::this_thread::yield();
  done = true;
  consumer.join();
  // 1.5 M blocks (~2.3 GB) went through; at most two batches (~3 MB) are live at a time.
  EXPECT_LT(peak - start, 64 * 1024) << "RSS grew from " << start << " to " << peak << " KiB";
}

// Buffers this thread allocates and a thread of another shard checks and frees, while this
// one allocates the next round (a queue of requests): the runs go back through the remote
// stack of this thread's arena and are reused, so the bundle tier maps no more than the
// rounds in flight need (without the reuse, 300 rounds of 64 runs would map 2.3 GB), and
// every block keeps its contents.
TEST(AllocStress, BundleRunsFreedByAnotherShardComeBackForReuse) {
  OtherShardThread other;
  ASSERT_TRUE(other.found()) << "no thread on another shard";
  constexpr int kRounds = 300, kPerRound = 64;
  constexpr size_t kEdge = 256;  // bytes checked at each end of a block
  Rng r{7};
  const uint64_t mapped0 = stats().tier[HAKMEM_TIER_BUNDLE].mapped_bytes;
  uint64_t peak = mapped0;
  std::vector<void*> cur, prev;
  std::vector<size_t> cur_n, prev_n;
  std::atomic<int> bad{0};
  const std::function<void()> consume = [&] {
    for (size_t i = 0; i < prev.size(); i++) {
      const size_t n = prev_n[i];
      auto* c = static_cast<unsigned char*>(prev[i]);
      if (!check_pattern(c, kEdge, static_cast<uint32_t>(n)) ||
          !check_pattern(c + n - kEdge, kEdge, static_cast<uint32_t>(n) + 1))
        bad++;
      free(prev[i]);
    }
  };
  for (int round = 0; round <= kRounds; round++) {
    cur.clear();
    cur_n.clear();
    if (round < kRounds) {
      for (int i = 0; i < kPerRound; i++) {
        const size_t n = 40000 + r.next() % 160000;  // 40-200 KB: bundle runs
        auto* c = static_cast<unsigned char*>(malloc(n));
        ASSERT_NE(c, nullptr);
        fill_pattern(c, kEdge, static_cast<uint32_t>(n));
        fill_pattern(c + n - kEdge, kEdge, static_cast<uint32_t>(n) + 1);
        cur.push_back(c);
        cur_n.push_back(n);
      }
    }
    other.wait();  // the previous round is freed
    const uint64_t mapped = stats().tier[HAKMEM_TIER_BUNDLE].mapped_bytes;
    if (mapped > peak) peak = mapped;
    prev.swap(cur);
    prev_n.swap(cur_n);
    other.post(consume);
  }
  other.wait();
  EXPECT_EQ(bad.load(), 0) << "blocks whose contents changed";
  // Two rounds in flight, 2 x 64 x 200 KB = 25 MiB, and the chunks' slack.
  EXPECT_LT(peak - mapped0, uint64_t{48} << 20) << "bundle mapped bytes grew from " << mapped0 << " to " << peak;
}

}  // namespace
