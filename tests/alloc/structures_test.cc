// Unit tests of the allocator's data structures on their own (size classes, page map,
// magazine, MPSC stack). They do not use hakmem as the process allocator, so they also run
// under ASan/UBSan and TSan.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "bits.h"
#include "magazine.h"
#include "mpsc.h"
#include "pagemap.h"
#include "sizeclass.h"

namespace hakmem {
uintptr_t g_cookie_secret = 0x1234567887654321ull;
}

using namespace hakmem;

TEST(SizeClass, TinyClassesCoverEverySizeMonotonicallyAndAligned) {
  uint32_t prev = 0;
  for (size_t n = 0; n <= kTinyMax; n++) {
    uint32_t c = tiny_class_of(n);
    ASSERT_LT(c, kTinyClasses);
    EXPECT_GE(kTinyClassSize[c], n) << n;
    EXPECT_GE(c, prev) << n;
    if (c > 0) {
      EXPECT_LT(kTinyClassSize[c - 1], n) << "class not the smallest fit for " << n;
    }
    EXPECT_EQ(kTinyClassSize[c] % 16, 0u);
    prev = c;
  }
  EXPECT_EQ(tiny_class_of(kTinyMax), kTinyClasses - 1);
}

TEST(SizeClass, PoolClassesAreTightAndAligned) {
  uint32_t prev = 0;
  for (size_t n = kTinyMax + 1; n <= kPoolMax; n++) {
    uint32_t c = pool_class_of(n);
    ASSERT_LT(c, kPoolClasses) << n;
    uint32_t sz = pool_class_size(c);
    EXPECT_GE(sz, n);
    if (c > 0) {
      EXPECT_LT(pool_class_size(c - 1), n);
    }
    // At most 25 % internal fragmentation.
    EXPECT_LE(sz - n, sz / 4 + 1) << n;
    EXPECT_EQ(sz % 256, 0u);
    EXPECT_GE(c, prev);
    prev = c;
  }
}

// A block of up to 256 KiB sits up to kColourMax bytes into its run (its cache colour), so
// its run has room for that too; longer runs are never coloured and need only the block.
TEST(SizeClass, BundleUnits) {
  EXPECT_EQ(bundle_units_of(kPoolMax + 1), kBundleMinUnits);
  EXPECT_EQ(bundle_units_of(kBundleMax), kBundleMaxUnits);
  EXPECT_EQ(bundle_units_of(kBundleMax), 64u);
  EXPECT_EQ(bundle_units_of(64 * 1024 - kColourMax), 4u);
  EXPECT_EQ(bundle_units_of(64 * 1024 - kColourMax + 1), 5u);
  EXPECT_EQ(bundle_units_of(64 * 1024), 5u);
  EXPECT_EQ(bundle_units_of(256 * 1024), 17u);
  EXPECT_EQ(bundle_units_of(17 * kUnitSize - kColourMax), 17u);
  EXPECT_EQ(bundle_units_of(17 * kUnitSize - kColourMax + 1), 18u);  // uncoloured from here
  EXPECT_EQ(bundle_units_of(512 * 1024), 32u);
  EXPECT_EQ(bundle_units_uncoloured(64 * 1024), 4u);
  EXPECT_EQ(bundle_units_uncoloured(64 * 1024 + 1), 5u);
  // Every request of a bin fits every run of it, coloured or not.
  for (size_t n = kPoolMax + 1; n <= kBundleMax; n += 61) {
    const uint32_t u = bundle_units_of(n);
    const size_t usable = u * kUnitSize - (u <= kColourUnits ? kColourMax : 0);
    ASSERT_GE(usable, n) << n;
  }
}

TEST(SizeClass, BlockIndexRecognisesExactlyTheBlockStartsOfAPage) {
  std::vector<uint32_t> sizes(kTinyClassSize, kTinyClassSize + kTinyClasses);
  for (uint32_t c = 0; c < kPoolClasses; c++) sizes.push_back(pool_class_size(c));
  for (uint32_t d : sizes) {
    BlockDiv bd = block_div(d);
    for (uint32_t off = 0; off < 65536; off++) {
      uint32_t q = block_index(off, bd.inv, bd.shift);
      if (off % d == 0) {
        ASSERT_EQ(q, off / d) << d << " " << off;
      } else {
        ASSERT_GE(q, 65536u) << d << " " << off;  // never below any page's block count
      }
    }
  }
}

TEST(PageMap, EntriesAndBounds) {
  auto map = std::make_unique<PageMap<36>>();  // 16 Ki entries, zero-initialised
  const uintptr_t base = uintptr_t{5} << kChunkShift;
  EXPECT_EQ(map->get(base), kMapNone);
  map->set_range(base, 3 * kChunkSize - 100, kMapWhaleHead, kMapWhaleTail);
  EXPECT_EQ(map->get(base), kMapWhaleHead);
  EXPECT_EQ(map->get(base + kChunkSize + 5), kMapWhaleTail);
  EXPECT_EQ(map->get(base + 3 * kChunkSize - 101), kMapWhaleTail);
  EXPECT_EQ(map->get(base + 3 * kChunkSize), kMapNone);
  EXPECT_EQ(map->get(base - 1), kMapNone);
  // Beyond the mapped address bits: never ours, never out of bounds.
  EXPECT_EQ(map->get(uintptr_t{1} << 40), kMapNone);
  EXPECT_EQ(map->get(~uintptr_t{0}), kMapNone);
  map->clear_range(base, 3 * kChunkSize);
  EXPECT_EQ(map->get(base + kChunkSize), kMapNone);
}

TEST(Magazine, LifoCountCookieAndSplit) {
  alignas(16) static Block blocks[10];
  Magazine m;
  m.set_cap(8);
  for (int i = 0; i < 8; i++) m.push(&blocks[i]);
  EXPECT_TRUE(m.full());
  EXPECT_EQ(blocks[3].cookie, block_cookie(&blocks[3]));
  uint32_t n = 0;
  Block* chain = m.split_after(3, &n);
  EXPECT_EQ(n, 5u);
  EXPECT_EQ(m.count(), 3u);
  int len = 0;
  for (Block* b = chain; b; b = b->next) len++;
  EXPECT_EQ(len, 5);
  EXPECT_EQ(chain, &blocks[4]);  // the older blocks leave
  Block* b = m.pop();
  EXPECT_EQ(b, &blocks[7]);
  EXPECT_EQ(b->cookie, 0u);
  EXPECT_EQ(m.count(), 2u);
  chain = m.split_after(0, &n);
  EXPECT_EQ(n, 2u);
  EXPECT_EQ(m.head, nullptr);
  EXPECT_EQ(m.count(), 0u);
}

// The magazine keeps its room (capacity less count): a capacity change keeps the count, and
// a refill of a capacity-0 magazine (one block pushed past the capacity, popped at once)
// leaves it as it was.
TEST(Magazine, RoomFollowsCapacityAndCount) {
  alignas(16) static Block blocks[4];
  Magazine m;
  EXPECT_TRUE(m.full());  // capacity 0, as in the empty heap: every free takes the slow path
  m.push(&blocks[0]);
  EXPECT_EQ(m.count(), 1u);
  EXPECT_TRUE(m.full());
  EXPECT_EQ(m.pop(), &blocks[0]);
  EXPECT_EQ(m.count(), 0u);
  EXPECT_EQ(m.room, 0u);
  m.set_cap(2);
  m.push(&blocks[1]);
  m.push(&blocks[2]);
  EXPECT_TRUE(m.full());
  m.set_cap(4);
  EXPECT_EQ(m.count(), 2u);
  EXPECT_EQ(m.room, 2u);
  EXPECT_FALSE(m.full());
  m.set_count(1);  // as a refill that took a slab's list records it
  EXPECT_EQ(m.room, 3u);
}

struct Node {
  Node* next;
  int producer;
  int seq;
};

// Starts `producers` threads, each pushing its share of `nodes` (producer and sequence
// number set) onto `stack`; counts the pushes that found the stack empty, and the
// producers that are done.
template <typename Stack>
std::vector<std::thread> start_producers(Stack& stack, std::vector<Node>& nodes, int producers,
                                         std::atomic<int>& notifications, std::atomic<int>& done) {
  const int per_producer = static_cast<int>(nodes.size()) / producers;
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; p++) {
    threads.emplace_back([&stack, &nodes, &notifications, &done, p, per_producer] {
      for (int i = 0; i < per_producer; i++) {
        Node* n = &nodes[p * per_producer + i];
        n->producer = p;
        n->seq = i;
        if (stack.push(n)) notifications.fetch_add(1);
      }
      done.fetch_add(1);
    });
  }
  return threads;
}

TEST(MpscStack, ManyProducersOneConsumerLoseNothingAndNotifyOncePerDrain) {
  constexpr int kProducers = 4, kPerProducer = 20000;
  MpscStack<Node, &Node::next> stack;
  std::vector<Node> nodes(kProducers * kPerProducer);
  std::atomic<int> notifications{0}, done{0};
  std::vector<std::thread> threads = start_producers(stack, nodes, kProducers, notifications, done);
  std::vector<int> last(kProducers, kPerProducer);
  int got = 0, drains = 0;
  while (got < kProducers * kPerProducer) {
    Node* n = stack.take_all();
    if (!n) {
      if (done.load() == kProducers && stack.empty()) break;
      std::this_thread::yield();
      continue;
    }
    drains++;
    for (; n; n = n->next) {
      // Within one drain a producer's nodes come newest first.
      if (n->seq >= last[n->producer]) ADD_FAILURE() << "order";
      last[n->producer] = n->seq;
      got++;
    }
    for (auto& l : last) l = kPerProducer;
  }
  for (auto& t : threads) t.join();
  Node* rest = stack.take_all();
  if (rest) drains++;
  for (; rest; rest = rest->next) got++;
  EXPECT_EQ(got, kProducers * kPerProducer);
  // Every non-empty drain was announced by exactly one push that found the stack empty.
  EXPECT_EQ(notifications.load(), drains);
}

// The cross-thread free list: every chain taken names its oldest node and its length
// truly, under contention, so the owner can splice it without walking it. (At most 65535
// nodes may be on the stack at once; a slab holds at most 4096 blocks.)
TEST(TailedMpscStack, EveryChainTakenComesWithItsTailAndLength) {
  constexpr int kProducers = 4, kPerProducer = 16000;
  TailedMpscStack<Node, &Node::next> stack;
  std::vector<Node> nodes(kProducers * kPerProducer);
  std::atomic<int> notifications{0}, done{0};
  std::vector<std::thread> threads = start_producers(stack, nodes, kProducers, notifications, done);
  int got = 0, drains = 0, bad = 0;
  auto check = [&](const TailedMpscStack<Node, &Node::next>::Chain& c) {
    drains++;
    uint32_t len = 0;
    const Node* last = nullptr;
    for (const Node* n = c.head; n; n = n->next) {
      last = n;
      len++;
    }
    bad += last != c.tail || len != c.n;
    got += static_cast<int>(len);
  };
  for (;;) {
    const auto c = stack.take_all();
    if (c.head) {
      check(c);
      continue;
    }
    EXPECT_EQ(c.tail, nullptr);
    EXPECT_EQ(c.n, 0u);
    if (done.load() == kProducers) break;
    std::this_thread::yield();
  }
  for (auto& t : threads) t.join();
  const auto rest = stack.take_all();
  if (rest.head) check(rest);
  EXPECT_EQ(bad, 0) << "chains whose tail or length was wrong";
  EXPECT_EQ(got, kProducers * kPerProducer);
  EXPECT_EQ(notifications.load(), drains);
}

TEST(MpscStack, PushChain) {
  Node a{}, b{}, c{};
  MpscStack<Node, &Node::next> s;
  a.next = &b;
  EXPECT_TRUE(s.push_chain(&a, &b));
  EXPECT_FALSE(s.push(&c));
  Node* n = s.take_all();
  EXPECT_EQ(n, &c);
  EXPECT_EQ(n->next, &a);
  EXPECT_EQ(n->next->next, &b);
  EXPECT_EQ(n->next->next->next, nullptr);
  EXPECT_TRUE(s.empty());
}

// The unit maps of bundle chunks: the word-at-a-time helpers against a bit-by-bit reading,
// on maps from empty to full with runs of every length, across word boundaries too.
TEST(UnitBits, WordHelpersAgreeWithABitByBitReading) {
  constexpr uint32_t kBits = 256;
  uint64_t state = 0x9e3779b97f4a7c15ull;
  auto next = [&state] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  for (int round = 0; round < 20000; round++) {
    uint64_t bits[kBits / 64] = {};
    // Runs of random lengths, so that long runs and runs across words both occur.
    const uint32_t density = static_cast<uint32_t>(next() % 5);
    for (uint32_t u = 0; u < kBits;) {
      const uint32_t len = 1 + static_cast<uint32_t>(next() % (round % 3 == 0 ? 200 : 12));
      const bool one = next() % 5 < density;
      for (uint32_t i = u; i < u + len && i < kBits; i++)
        if (one) bits[i / 64] |= uint64_t{1} << (i % 64);
      u += len;
    }
    if (round == 0) for (auto& w : bits) w = ~uint64_t{0};
    auto bit = [&bits](uint32_t i) { return (bits[i / 64] >> (i % 64)) & 1; };
    uint32_t longest = 0, run = 0;
    for (uint32_t i = 0; i < kBits; i++) {
      run = bit(i) ? run + 1 : 0;
      if (run > longest) longest = run;
    }
    ASSERT_EQ(longest_ones(bits, kBits), longest) << "round " << round;
    const uint32_t u = static_cast<uint32_t>(next() % kBits);
    const uint32_t n = static_cast<uint32_t>(next() % (kBits - u + 1));
    uint32_t count = 0;
    for (uint32_t i = u; i < u + n; i++) count += static_cast<uint32_t>(bit(i));
    ASSERT_EQ(bits_count_range(bits, u, n), count) << "round " << round;
    for (bool want : {false, true}) {
      uint32_t first = u;
      while (first < kBits && bit(first) != want) first++;
      ASSERT_EQ(bit_find(bits, kBits, u, want), first) << "round " << round;
      uint32_t after_last = u;  // one past the last bit below u equal to want, or 0
      while (after_last > 0 && bit(after_last - 1) != want) after_last--;
      ASSERT_EQ(bit_find_back(bits, u, want), after_last) << "round " << round;
    }
  }
}
