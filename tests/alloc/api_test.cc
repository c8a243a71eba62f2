// The C API edge matrix, run with hakmem as the process allocator: zero and huge sizes,
// overflow, errno, every alignment from 1 B to 1 MiB, realloc across every tier boundary,
// malloc_usable_size, first allocation of every size class in a fresh thread, and the
// reports of invalid and double frees.
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <sys/resource.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "alloc_test_util.h"

using namespace hakmem_test;

namespace {

// Sizes that the compiler must not see (it would warn about, or fold, the impossible calls).
volatile size_t g_max = SIZE_MAX;

// Sizes at and around every tier and class boundary.
const size_t kBoundarySizes[] = {0,      1,      8,       15,      16,      17,       100,
                                 1023,   1024,   1025,    4096,    32767,   32768,    32769,
                                 65536,  200000, 1048575, 1048576, 1048577, 2097152,  5000000};

TEST(AllocApi, RunsOnHakmem) {
  for (const char* s : {"malloc", "free", "calloc", "realloc", "posix_memalign", "malloc_usable_size"})
    EXPECT_TRUE(resolves_to_hakmem(s)) << s;
}

TEST(AllocApi, ZeroSizeGivesAUniqueFreeableBlock) {
  void* a = malloc(0);
  void* b = malloc(0);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a, b);
  EXPECT_GE(malloc_usable_size(a), 0u);
  free(a);
  free(b);
  void* c = calloc(0, 10);
  ASSERT_NE(c, nullptr);
  free(c);
}

TEST(AllocApi, FreeNullAndErrnoUntouchedByFree) {
  errno = 1234;
  free(nullptr);
  free(kept(malloc(100)));
  free(kept(malloc(3 << 20)));
  free(kept(malloc(300000)));
  // Pool blocks, enough to overflow the thread's magazine and empty whole pages, which go
  // back to the arena (and may be purged) from inside free.
  std::vector<void*> pool_blocks;
  for (int i = 0; i < 200; i++) pool_blocks.push_back(kept(malloc(3000)));
  for (void* p : pool_blocks) free(p);
  EXPECT_EQ(errno, 1234);
}

TEST(AllocApi, SuccessfulMallocKeepsErrno) {
  errno = 777;
  for (size_t n : kBoundarySizes) free(kept(malloc(n)));
  EXPECT_EQ(errno, 777);
}

TEST(AllocApi, HugeRequestsFailWithEnomem) {
  for (size_t n : {size_t{g_max}, g_max / 2, (size_t{1} << 62), (size_t{1} << 50)}) {
    errno = 0;
    EXPECT_EQ(malloc(n), nullptr) << n;
    EXPECT_EQ(errno, ENOMEM) << n;
  }
  errno = 0;
  EXPECT_EQ(calloc(1, g_max), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  void* p = nullptr;
  EXPECT_EQ(posix_memalign(&p, 64, g_max / 2), ENOMEM);
  EXPECT_EQ(p, nullptr);
}

TEST(AllocApi, CallocOverflowIsCaught) {
  errno = 0;
  EXPECT_EQ(calloc(g_max / 2, 3), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  errno = 0;
  EXPECT_EQ(calloc(g_max >> 31, size_t{1} << 33), nullptr);
  EXPECT_EQ(errno, ENOMEM);
}

TEST(AllocApi, CallocZeroesReusedMemoryInEveryTier) {
  for (size_t n : kBoundarySizes) {
    if (n == 0) continue;
    // Dirty blocks of this size first so calloc must really clear reused memory.
    for (int i = 0; i < 4; i++) {
      void* d = malloc(n);
      memset(d, 0xAB, n);
      free(d);
    }
    unsigned char* p = static_cast<unsigned char*>(calloc(1, n));
    ASSERT_NE(p, nullptr);
    for (size_t i = 0; i < n; i++) ASSERT_EQ(p[i], 0) << n << " at " << i;
    free(p);
  }
}

// calloc of bundle sizes does not clear memory that reads as zero already: a run never
// handed out since it was mapped or purged. Clearing it would fault in every page of a
// table the program may fill only sparsely. 16 blocks of 1 MiB need at least four fresh
// chunks; clearing them would cost 256 faults each.
TEST(AllocApi, CallocLeavesFreshBundleMemoryUntouched) {
  long faults = -1;
  std::vector<unsigned char*> blocks;
  std::thread t([&] {
    rusage r0{}, r1{};
    getrusage(RUSAGE_THREAD, &r0);
    for (int i = 0; i < 16; i++) blocks.push_back(static_cast<unsigned char*>(calloc(1, 1 << 20)));
    getrusage(RUSAGE_THREAD, &r1);
    faults = r1.ru_minflt - r0.ru_minflt;
  });
  t.join();
  EXPECT_LT(faults, 4 * 256) << "calloc cleared memory that was zero already";
  for (unsigned char* p : blocks) {
    ASSERT_NE(p, nullptr);
    for (size_t i = 0; i < (1 << 20); i += 509) ASSERT_EQ(p[i], 0) << i;
    memset(p, 0xCD, 1 << 20);
  }
  for (unsigned char* p : blocks) free(p);
  // Reused runs (the thread's bin, or units handed out before) are cleared.
  for (int i = 0; i < 16; i++) {
    auto* p = static_cast<unsigned char*>(calloc(1, 1 << 20));
    ASSERT_NE(p, nullptr);
    for (size_t j = 0; j < (1 << 20); j++) ASSERT_EQ(p[j], 0) << i << " at " << j;
    blocks[i] = p;
  }
  for (unsigned char* p : blocks) free(p);
}

TEST(AllocApi, ReallocarrayOverflowLeavesTheBlockAlone) {
  char* p = static_cast<char*>(malloc(64));
  strcpy(p, "keep me");
  errno = 0;
  void* (*volatile ra)(void*, size_t, size_t) = reallocarray;  // opaque: p survives a failed call
  EXPECT_EQ(ra(p, g_max / 4, 8), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  EXPECT_STREQ(p, "keep me");
  char* q = static_cast<char*>(ra(p, 100, 10));
  ASSERT_NE(q, nullptr);
  EXPECT_STREQ(q, "keep me");
  EXPECT_GE(malloc_usable_size(q), 1000u);
  free(q);
}

TEST(AllocApi, ReallocAcrossEveryTierBoundaryKeepsContents) {
  // Grow through every boundary size, then shrink back down, checking the contents each step.
  void* p = malloc(1);
  size_t have = 1;
  fill_pattern(p, have, 7);
  auto step = [&](size_t n) {
    void* q = realloc(p, n);
    ASSERT_NE(q, nullptr) << n;
    size_t keep = n < have ? n : have;
    ASSERT_TRUE(check_pattern(q, keep, 7)) << have << " -> " << n;
    p = q;
    have = n;
    fill_pattern(p, have, 7);
    ASSERT_GE(malloc_usable_size(p), n);
  };
  for (size_t n : kBoundarySizes)
    if (n) step(n);
  for (size_t i = sizeof kBoundarySizes / sizeof kBoundarySizes[0]; i-- > 0;)
    if (kBoundarySizes[i]) step(kBoundarySizes[i]);
  free(p);
}

TEST(AllocApi, ReallocGrowsBundleRunsWithoutTouchingNeighbours) {
  // Neighbouring runs (often adjacent in the chunk): growing one, in place or not, leaves
  // the other intact, and the grown block keeps its contents.
  std::vector<void*> blocks;
  for (int i = 0; i < 8; i++) {
    void* b = malloc(40000);
    fill_pattern(b, 40000, 100 + i);
    blocks.push_back(b);
  }
  for (int i = 0; i < 8; i += 2) {
    void* g = realloc(blocks[i], 40000 + 16384 * (i + 1));
    ASSERT_NE(g, nullptr);
    ASSERT_TRUE(check_pattern(g, 40000, 100 + i));
    memset(static_cast<char*>(g) + 40000, 0x77, 16384 * (i + 1));  // use the new tail
    blocks[i] = g;
  }
  for (int i = 1; i < 8; i += 2) EXPECT_TRUE(check_pattern(blocks[i], 40000, 100 + i)) << i;
  // Free the odd ones: the even ones can now grow in place into the gap.
  for (int i = 1; i < 8; i += 2) free(blocks[i]);
  for (int i = 0; i < 8; i += 2) {
    size_t n = 40000 + 16384 * (i + 1);
    void* g = realloc(blocks[i], n + 30000);
    ASSERT_NE(g, nullptr);
    ASSERT_TRUE(check_pattern(g, 40000, 100 + i));
    EXPECT_GE(malloc_usable_size(g), n + 30000);
    free(g);
  }
}

TEST(AllocApi, ReallocGrowthBySmallStepsMovesTheBlockRarely) {
  // A buffer appended to piece by piece (steps of 1/16 of its size) from 100 B to 32 KiB,
  // through the tiny and pool classes, whose blocks cannot grow in place: moved to exactly
  // the size asked, it would move at nearly every class boundary (four per doubling, about
  // 35 moves); with room to grow by half after each move, about 13.
  size_t have = 100;
  void* p = malloc(have);
  ASSERT_NE(p, nullptr);
  fill_pattern(p, have, 9);
  int moves = 0;
  while (have < 32768) {
    const size_t n = have + have / 16;
    void* q = realloc(p, n);
    ASSERT_NE(q, nullptr) << n;
    ASSERT_TRUE(check_pattern(q, have, 9)) << have << " -> " << n;
    if (q != p) moves++;
    p = q;
    have = n;
    fill_pattern(p, have, 9);
  }
  EXPECT_LE(moves, 16);
  EXPECT_GE(moves, 8);  // a move gives room for half again, not more
  free(p);

  // One big step is not a buffer grown piecemeal: it gets its size's class, no room.
  void* a = malloc(10000);
  ASSERT_NE(a, nullptr);
  void* b = realloc(a, 20000);
  ASSERT_NE(b, nullptr);
  EXPECT_GE(malloc_usable_size(b), 20000u);
  EXPECT_LT(malloc_usable_size(b), 25000u);
  // A small step past the block's usable size: room for half of it again.
  const size_t u = malloc_usable_size(b);
  void* c = realloc(b, u + 1);
  ASSERT_NE(c, nullptr);
  EXPECT_GE(malloc_usable_size(c), u + u / 2);
  free(c);
}

TEST(AllocApi, ReallocShrinksBundleRunsInPlace) {
  // An uncoloured run (over 17 units) and a coloured one, each shrunk below half to a
  // bundle size: same pointer and colour, contents kept, the usable size cut to the units
  // needed, and the units given back counted as cached bundle memory (free, resident until
  // decay). A shrink to half or more stays as it is (room a growth gave a buffer).
  for (size_t from : {size_t{600} << 10, size_t{200} << 10}) {
    void* r = malloc(from);
    ASSERT_NE(r, nullptr);
    const size_t whole = malloc_usable_size(r);
    const uintptr_t r_addr = reinterpret_cast<uintptr_t>(r);
    void* r2 = realloc(r, whole / 2 + 1);
    ASSERT_EQ(reinterpret_cast<uintptr_t>(r2), r_addr);
    EXPECT_EQ(malloc_usable_size(r2), whole);
    free(r2);
    const size_t to = from / 3 + 1000;
    auto* p = static_cast<unsigned char*>(malloc(from));
    ASSERT_NE(p, nullptr);
    fill_pattern(p, from, 21);
    const size_t before = malloc_usable_size(p);
    const uint64_t cached0 = stats().tier[HAKMEM_TIER_BUNDLE].cached_bytes;
    void* q = realloc(p, to);
    ASSERT_EQ(q, p) << from;
    EXPECT_TRUE(check_pattern(q, to, 21)) << from;
    const size_t after = malloc_usable_size(q);
    EXPECT_GE(after, to);
    EXPECT_LT(after, to + (16u << 10) + 320) << from;
    EXPECT_GE(stats().tier[HAKMEM_TIER_BUNDLE].cached_bytes, cached0 + (before - after) - (16u << 10));
    free(q);
  }
}

TEST(AllocApi, ReallocNullAndZero) {
  void* p = realloc(nullptr, 50);
  ASSERT_NE(p, nullptr);
  EXPECT_GE(malloc_usable_size(p), 50u);
  EXPECT_EQ(realloc(p, 0), nullptr);  // glibc semantics: frees and returns NULL
  errno = 0;
  void* (*volatile realloc_fn)(void*, size_t) = realloc;  // opaque to the compiler's checks
  EXPECT_EQ(realloc_fn(nullptr, g_max), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  void* q = malloc(100);
  errno = 0;
  EXPECT_EQ(realloc_fn(q, g_max - 10), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  free(q);  // still ours after a failed realloc
}

TEST(AllocApi, UsableSizeCoversTheRequest) {
  for (size_t n = 1; n < 70000; n = n * 5 / 4 + 1) {
    void* p = malloc(n);
    ASSERT_GE(malloc_usable_size(p), n) << n;
    memset(p, 1, malloc_usable_size(p));  // the whole usable size is writable
    free(p);
  }
  for (size_t n : kBoundarySizes) {
    void* p = malloc(n);
    EXPECT_GE(malloc_usable_size(p), n) << n;
    free(p);
  }
  EXPECT_EQ(malloc_usable_size(nullptr), 0u);
}

TEST(AllocApi, EveryAlignmentFromOneByteToOneMebibyte) {
  ASSERT_NE(&free_aligned_sized, nullptr);
  const size_t sizes[] = {1, 24, 100, 1000, 5000, 40000, 300000, 1100000, 3000000};
  for (size_t a = 1; a <= (size_t{1} << 20); a <<= 1) {
    for (size_t n : sizes) {
      SCOPED_TRACE(testing::Message() << "align " << a << " size " << n);
      void* p = nullptr;
      if (a >= sizeof(void*)) {
        ASSERT_EQ(posix_memalign(&p, a, n), 0);
        EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % a, 0u);
        EXPECT_GE(malloc_usable_size(p), n);
        memset(p, 0x5c, n);
        free(p);
      }
      p = aligned_alloc(a, n);
      ASSERT_NE(p, nullptr);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % a, 0u);
      memset(p, 0x5c, n);
      free_aligned_sized(p, a, n);
      p = memalign(a, n);
      ASSERT_NE(p, nullptr);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % a, 0u);
      void* q = realloc(p, n * 2);  // an aligned block reallocates like any other
      ASSERT_NE(q, nullptr);
      free(q);
    }
  }
}

TEST(AllocApi, BadAlignmentsAreRefused) {
  void* p = reinterpret_cast<void*>(0x1);
  EXPECT_EQ(posix_memalign(&p, 3, 10), EINVAL);
  EXPECT_EQ(posix_memalign(&p, 0, 10), EINVAL);
  EXPECT_EQ(posix_memalign(&p, 4, 10), EINVAL);  // not a multiple of sizeof(void*)
  EXPECT_EQ(posix_memalign(&p, 24, 10), EINVAL);
  EXPECT_EQ(p, reinterpret_cast<void*>(0x1));   // untouched on failure
  errno = 0;
  EXPECT_EQ(aligned_alloc(3, 10), nullptr);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(aligned_alloc(0, 10), nullptr);
  EXPECT_EQ(errno, EINVAL);
  // memalign rounds a non-power-of-two alignment up, as glibc does.
  void* m = memalign(48, 10);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(m) % 64, 0u);
  free(m);
}

TEST(AllocApi, VallocAndPvalloc) {
  long page = sysconf(_SC_PAGESIZE);
  void* v = valloc(10);
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(v) % page, 0u);
  free(v);
  void* pv = pvalloc(page + 1);
  ASSERT_NE(pv, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(pv) % page, 0u);
  EXPECT_GE(malloc_usable_size(pv), 2u * page);
  free(pv);
  void* p0 = pvalloc(0);
  ASSERT_NE(p0, nullptr);
  EXPECT_GE(malloc_usable_size(p0), static_cast<size_t>(page));
  free(p0);
}

TEST(AllocApi, SizedFreesAndCfree) {
  ASSERT_NE(&free_sized, nullptr);
  ASSERT_NE(&free_aligned_sized, nullptr);
  ASSERT_NE(&cfree, nullptr);
  for (size_t n : kBoundarySizes) {
    void* p = malloc(n);
    free_sized(p, n);
    void* q = malloc(n);
    cfree(q);
  }
}

TEST(AllocApi, MalloptAndTrim) {
  EXPECT_EQ(mallopt(M_ARENA_MAX, 2), 1);
  EXPECT_EQ(mallopt(M_MMAP_THRESHOLD, 1 << 20), 1);
  EXPECT_EQ(mallopt(12345, 1), 0);
  std::vector<void*> v;
  for (int i = 0; i < 64; i++) v.push_back(malloc(200000));
  for (void* p : v) free(p);
  free(kept(malloc(8 << 20)));
  EXPECT_EQ(malloc_trim(0), 1);  // there was cached memory to give back
  void* after = malloc(200000);  // and everything still works
  ASSERT_NE(after, nullptr);
  memset(after, 1, 200000);
  free(after);
}

TEST(AllocApi, FirstAllocationOfEverySizeClassInAFreshThread) {
  std::vector<size_t> sizes;
  for (size_t n = 16; n <= 1024; n += 16) sizes.push_back(n);          // every tiny class
  for (size_t n = 1280; n <= 32768; n += 256) sizes.push_back(n);      // every pool class
  for (size_t u = 3; u <= 64; u++) sizes.push_back(u * 16384);         // every bundle run
  for (size_t n : {size_t{1048577}, size_t{3} << 20, size_t{17} << 20}) sizes.push_back(n);
  for (size_t n : sizes) {
    bool ok = false;
    std::thread t([n, &ok] {
      unsigned char* p = static_cast<unsigned char*>(malloc(n));
      if (!p) return;
      memset(p, 0xEE, n);
      ok = malloc_usable_size(p) >= n && p[n - 1] == 0xEE;
      free(p);
      void* q = calloc(1, n);
      ok = ok && q && static_cast<unsigned char*>(q)[n / 2] == 0;
      free(q);
    });
    t.join();
    EXPECT_TRUE(ok) << n;
  }
}

// Fresh tiny and pool blocks come in address order: a program that walks its objects in the
// order it made them (a list, a tree built in order, an array of pointers) then reads
// memory forwards, which the hardware prefetchers follow. Counted over 512 mallocs of one
// size in a new thread: blocks that sit one class size after the block before. A thread
// may adopt a heap whose slabs hold blocks freed in any order, and a slab ends now and
// then, so most, not all, pairs must be such steps; handed out backwards, none were.
TEST(AllocApi, FreshBlocksOfAClassComeInAddressOrder) {
  for (size_t n : {size_t{48}, size_t{208}, size_t{1000}, size_t{3000}}) {
    std::vector<uintptr_t> v(512);
    size_t step = 0;  // the class size
    std::thread t([n, &v, &step] {
      for (auto& a : v) a = reinterpret_cast<uintptr_t>(hakmem_test::kept(malloc(n)));
      step = malloc_usable_size(reinterpret_cast<void*>(v[0]));
      for (uintptr_t a : v) free(reinterpret_cast<void*>(a));
    });
    t.join();
    size_t forward = 0, backward = 0;
    for (size_t i = 1; i < v.size(); i++) {
      forward += v[i] == v[i - 1] + step;
      backward += v[i] + step == v[i - 1];
    }
    EXPECT_GE(forward, v.size() * 3 / 4) << n << " B (class " << step << " B): " << forward << " steps forwards, "
                                         << backward << " backwards";
  }
}

TEST(AllocApi, InvalidFreeIsReportedWithTheAddressAndTheProcessContinues) {
  static char not_heap[64];
  int on_stack = 0;
  void* inner = malloc(256);
  char* interior = static_cast<char*>(inner) + 16;
  void* mid = malloc(3000);  // a pool block: its free has a fast route of its own
  char* mid_interior = static_cast<char*>(mid) + 16;
  void* big = malloc(4 << 20);
  char* big_interior = static_cast<char*>(big) + 8192;
  void (*volatile free_fn)(void*) = free;  // the compiler rightly warns about these calls
  std::string err = capture_stderr([&] {
    free_fn(&not_heap[16]);
    free_fn(&on_stack);
    free_fn(interior);
    free_fn(mid_interior);
    free_fn(big_interior);
    free_fn(reinterpret_cast<void*>(uintptr_t{0xdead} << 48));  // non-canonical
  });
  EXPECT_NE(err.find(hex(&not_heap[16])), std::string::npos) << err;
  EXPECT_NE(err.find(hex(&on_stack)), std::string::npos) << err;
  EXPECT_NE(err.find(hex(interior)), std::string::npos) << err;
  EXPECT_NE(err.find(hex(mid_interior)), std::string::npos) << err;
  EXPECT_NE(err.find(hex(big_interior)), std::string::npos) << err;
  EXPECT_NE(err.find("invalid"), std::string::npos) << err;
  // The real blocks are intact and still free normally.
  memset(inner, 3, 256);
  memset(mid, 4, 3000);
  free(inner);
  free(mid);
  free(big);
  void* again = malloc(256);
  ASSERT_NE(again, nullptr);
  free(again);
}

// Caching a freed bundle or whale block keeps its bookkeeping off the block: the thread
// bin and the whale header live elsewhere, so the block's lines are not written on the
// free/reuse round trip (a program walking its pages then finds them as it left them).
TEST(AllocApi, BundleAndWhaleReuseLeavesTheBlockUntouched) {
  for (size_t n : {size_t{64} << 10, size_t{256} << 10, size_t{1} << 20, size_t{2} << 20}) {
    auto* p = static_cast<unsigned char*>(malloc(n));
    ASSERT_NE(p, nullptr);
    memset(p, 0xA5, n);
    free(p);
    auto* q = static_cast<unsigned char*>(malloc(n));
    ASSERT_EQ(q, p) << n << ": the freed block is reused at once";
    size_t changed = 0;
    for (size_t i = 0; i < n; i++) changed += q[i] != 0xA5;
    EXPECT_EQ(changed, 0u) << n;
    free(q);
  }
}

// Mallocs `count` blocks of n bytes, all live at once, and checks that each starts on
// page-offset line 2, 3, 4 or 5, that not all on the same one, that they share one usable
// size of at least n, and that each holds what was written to all of it. Returns them.
std::vector<void*> expect_coloured_blocks(size_t n, int count) {
  std::vector<void*> blocks;
  std::vector<bool> colours(64);
  size_t usable = 0;
  for (int i = 0; i < count; i++) {
    void* p = malloc(n);
    if (!p) {
      ADD_FAILURE() << "malloc failed";
      break;
    }
    const uintptr_t off = reinterpret_cast<uintptr_t>(p) & 4095;
    EXPECT_EQ(off % 64, 0u);
    EXPECT_GE(off, 128u);
    EXPECT_LE(off, 320u);
    colours[off / 64] = true;
    if (i == 0) usable = malloc_usable_size(p);
    EXPECT_EQ(malloc_usable_size(p), usable) << "the usable size depends on the request alone";
    EXPECT_GE(usable, n);
    fill_pattern(p, usable, i);
    blocks.push_back(p);
  }
  EXPECT_GE(std::count(colours.begin(), colours.end(), true), 2) << "colours vary with position";
  for (size_t i = 0; i < blocks.size(); i++) EXPECT_TRUE(check_pattern(blocks[i], usable, static_cast<int>(i)));
  return blocks;
}

// Frees the page start below a coloured block of n bytes, which is not a block: the free
// is reported as invalid with its address, and the block keeps its contents and is freed
// and reused as usual.
void expect_page_start_free_reported(size_t n) {
  auto* p = static_cast<char*>(malloc(n));
  ASSERT_NE(p, nullptr);
  fill_pattern(p, n, 5);
  char* page = p - (reinterpret_cast<uintptr_t>(p) & 4095);
  ASSERT_NE(page, p);
  void (*volatile free_fn)(void*) = free;
  std::string err = capture_stderr([&] { free_fn(page); });
  EXPECT_NE(err.find("invalid"), std::string::npos) << err;
  EXPECT_NE(err.find(hex(page)), std::string::npos) << err;
  EXPECT_TRUE(check_pattern(p, n, 5));
  const uintptr_t where = reinterpret_cast<uintptr_t>(p);
  free(p);
  void* q = malloc(n);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(q), where) << "the block went back to its cache as usual";
  free(q);
}

// Bundle blocks up to 256 KiB start on page-offset line 2, 3, 4 or 5 of their run, not on
// line 0 (the L1 set of every page-aligned structure), varied by position; larger ones start
// on their run. The usable size depends on the request alone. Aligned requests still get
// their alignment, and the run start is not a block: freeing it is reported, harms nothing.
TEST(AllocApi, BundleBlocksAreCacheColouredOffTheFirstLineOfAPage) {
  for (size_t n : {size_t{300000}, size_t{1} << 20}) {
    void* p = malloc(n);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) & 4095, 0u) << n << ": longer runs are not coloured";
    EXPECT_GE(malloc_usable_size(p), n);
    memset(p, 1, n);
    free(p);
  }
  for (size_t n : {size_t{40000}, size_t{64} << 10, size_t{100000}, size_t{256} << 10}) {
    SCOPED_TRACE(n);
    for (void* p : expect_coloured_blocks(n, 16)) free(p);
  }
  for (size_t align : {size_t{128}, size_t{4096}, size_t{16384}}) {
    for (size_t n : {size_t{40000}, size_t{64} << 10}) {
      void* p = nullptr;
      ASSERT_EQ(posix_memalign(&p, align, n), 0);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % align, 0u) << align << " " << n;
      EXPECT_GE(malloc_usable_size(p), n);
      memset(p, 9, malloc_usable_size(p));
      // Counted rather than read from stderr: a report is printed once per address, and
      // these blocks may reuse one another's runs.
      const uint64_t before = stats().double_frees;
      capture_stderr([&] {
        free(p);
        free(p);
      });
      EXPECT_EQ(stats().double_frees, before + 1) << align << " " << n;
    }
  }
  expect_page_start_free_reported(64 << 10);
}

// Whale blocks start on page-offset line 2, 3, 4 or 5 past their header page as well,
// varied by mapping; new mappings for one request size have one usable size (a cached one
// may be handed out whole, bigger). A cached coloured whale serves aligned requests
// aligned.
TEST(AllocApi, WhaleBlocksAreCacheColouredAndAlignedRequestsStayAligned) {
  for (size_t n : {size_t{2} << 20, size_t{3} << 20, (size_t{10} << 20) + 5}) {
    SCOPED_TRACE(n);
    malloc_trim(0);  // nothing cached: every block below is a new mapping
    // Freed, they are cached; an aligned request that takes one gets its block re-placed.
    for (void* p : expect_coloured_blocks(n, 6)) free(p);
    for (size_t align : {size_t{64}, size_t{128}, size_t{4096}, size_t{1} << 20}) {
      void* p = nullptr;
      ASSERT_EQ(posix_memalign(&p, align, n), 0) << align;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % align, 0u) << align << " " << n;
      EXPECT_GE(malloc_usable_size(p), n);
      memset(p, 3, n);
      free(p);
    }
  }
  // The page start below a coloured block is not a block: its free is reported and harms
  // nothing.
  expect_page_start_free_reported(3 << 20);
}

// Page faults the calling thread takes in f.
template <typename F>
long faults_of(F f) {
  rusage r0{}, r1{};
  getrusage(RUSAGE_THREAD, &r0);
  f();
  getrusage(RUSAGE_THREAD, &r1);
  return r1.ru_minflt - r0.ru_minflt;
}

// `count` blocks of n bytes aligned to `align`, each filled with its own byte, checked for
// alignment and for overlap (every block still holds its byte after all are written), then
// freed.
void aligned_round(size_t align, size_t n, int count) {
  std::vector<unsigned char*> blocks;
  for (int i = 0; i < count; i++) {
    void* p = nullptr;
    ASSERT_EQ(posix_memalign(&p, align, n), 0);
    ASSERT_EQ(reinterpret_cast<uintptr_t>(p) % align, 0u) << align << " " << n;
    ASSERT_GE(malloc_usable_size(p), n);
    memset(p, i + 1, n);
    blocks.push_back(static_cast<unsigned char*>(p));
  }
  for (int i = 0; i < count; i++)
    for (size_t k = 0; k < n; k += 4093) ASSERT_EQ(blocks[i][k], static_cast<unsigned char>(i + 1)) << i;
  for (unsigned char* p : blocks) free(p);
}

// Aligned requests reuse freed memory like any other: an alignment of up to 1 MiB for a
// bundle size is a bundle run started on a multiple of it, and a cached whale serves any
// alignment below 4 MiB by where its block goes in the mapping's first chunk. Before, each
// such request mapped (and faulted in) a whale of its own: posix_memalign(64 KiB, 64 KiB)
// with 2,000 live took 25 us a call. The third round of each case takes its blocks from
// what the rounds before freed: a few faults at most, where new memory takes one per page
// written (the first round: at least half of its pages). The second round may still fault:
// a thread whose first round spilled into another shard's chunk starts its own shard's
// next chunk afresh.
TEST(AllocApi, AlignedRequestsReuseFreedMemory) {
  struct Case {
    size_t align, n;
    int count;
  };
  const Case cases[] = {{32 << 10, 64 << 10, 64}, {64 << 10, 64 << 10, 64}, {256 << 10, 100 << 10, 24},
                        {1 << 20, 1 << 20, 8},    {64 << 10, 1000, 300},    {2 << 20, 2 << 20, 6},
                        {1 << 20, 3 << 20, 3},    {8 << 10, 5 << 20, 2}};
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "align " << c.align << " size " << c.n);
    const long pages = c.count * static_cast<long>((c.n + 4095) / 4096);
    malloc_trim(0);
    long first = -1, third = -1;
    std::thread t([&] {
      first = faults_of([&] { aligned_round(c.align, c.n, c.count); });
      aligned_round(c.align, c.n, c.count);
      third = faults_of([&] { aligned_round(c.align, c.n, c.count); });
    });
    t.join();
    EXPECT_GE(first, pages / 2) << "the first round touched no new memory: the second proves nothing";
    EXPECT_LT(third, 32) << "aligned blocks were not reused (first round: " << first << " faults)";
  }
}

// A cached whale last placed for an alignment serves a plain request, and the reverse; the
// blocks stay aligned, coloured where plain, and whole. A whale mapping starts on a 4 MiB
// chunk and these blocks sit in its first one: the chunk tells the mapping.
TEST(AllocApi, CachedWhalesMoveBetweenAlignedAndPlainRequests) {
  malloc_trim(0);  // nothing cached: each request below can only reuse the one before
  const size_t n = 3 << 20;
  auto mapping = [](const void* x) { return reinterpret_cast<uintptr_t>(x) & ~((uintptr_t{4} << 20) - 1); };
  void* p = nullptr;
  ASSERT_EQ(posix_memalign(&p, 1 << 20, n), 0);
  memset(p, 1, n);
  free(p);
  void* q = malloc(n);  // the cached mapping, its block placed plain
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(mapping(q), mapping(p)) << "the cached whale was not reused";
  EXPECT_NE(reinterpret_cast<uintptr_t>(q) % 4096, 0u) << "a plain whale block is coloured";
  EXPECT_GE(malloc_usable_size(q), n);
  memset(q, 2, n);
  free(q);
  void* r = nullptr;
  ASSERT_EQ(posix_memalign(&r, 512 << 10, n), 0);  // and aligned again
  EXPECT_EQ(mapping(r), mapping(q)) << "the cached whale was not reused for an aligned request";
  EXPECT_EQ(reinterpret_cast<uintptr_t>(r) % (512 << 10), 0u);
  EXPECT_GE(malloc_usable_size(r), n);
  memset(r, 3, n);
  free(r);
  // A second free of a cached aligned block is a double free.
  ASSERT_EQ(posix_memalign(&p, 2 << 20, n), 0);
  free(p);
  std::string err = capture_stderr([&] { free(p); });
  EXPECT_NE(err.find("double free"), std::string::npos) << err;
}

TEST(AllocApi, DoubleFreeIsReportedInEveryTier) {
  for (size_t n : {size_t{48}, size_t{3000}, size_t{100000}, size_t{3} << 20}) {
    void* p = malloc(n);
    memset(p, 7, n);
    std::string err = capture_stderr([&] {
      free(p);
      free(p);
    });
    EXPECT_NE(err.find("double free"), std::string::npos) << n << ": " << err;
    EXPECT_NE(err.find(hex(p)), std::string::npos) << n << ": " << err;
    // The allocator still hands out distinct, usable blocks of that size.
    void* a = malloc(n);
    void* b = malloc(n);
    EXPECT_NE(a, b);
    memset(a, 1, n);
    memset(b, 2, n);
    EXPECT_EQ(static_cast<unsigned char*>(a)[n - 1], 1);
    free(a);
    free(b);
  }
}

// Frees that find the magazine full go straight back to their slab: a second free of such a
// block is still seen, and the slab then hands out every block once.
// Mallocs v.size() blocks of n bytes into v, none of them handed out twice, then frees them.
void expect_each_block_once(std::vector<void*>& v, size_t n) {
  std::set<void*> seen;
  for (auto& p : v) {
    p = malloc(n);
    ASSERT_TRUE(seen.insert(p).second) << p << " handed out twice";
    memset(p, 4, n);
  }
  for (void* p : v) free(p);
}

TEST(AllocApi, DoubleFreeIsReportedPastAFullMagazine) {
  constexpr size_t kN = 20000;  // 48-byte blocks: a magazine holds at most 2730
  std::vector<void*> v(kN);
  for (auto& p : v) {
    p = malloc(48);
    ASSERT_NE(p, nullptr);
    memset(p, 3, 48);
  }
  for (void* p : v) free(p);
  void* last = v.back();
  void (*volatile free_fn)(void*) = free;
  // The magazine is in a teardown's bypass, whose frees finish up to 8 frees late: the
  // next malloc of the class (a refill) finishes them first.
  std::string err = capture_stderr([&] {
    free_fn(last);
    free_fn(malloc(48));
  });
  EXPECT_NE(err.find("double free"), std::string::npos) << err;
  EXPECT_NE(err.find(hex(last)), std::string::npos) << err;
  expect_each_block_once(v, 48);
}

// A bundle run freed by a thread of another shard, past that thread's full bin, waits in its
// arena's remote stack until the arena frees it: a second free meanwhile is reported (the
// run is marked cached, not in use), and every run is handed out once afterwards.
TEST(AllocApi, DoubleFreeOfARunFreedByAnotherShardIsReported) {
  OtherShardThread other;
  ASSERT_TRUE(other.found()) << "no thread on another shard";
  constexpr size_t n = 100000;
  std::vector<void*> v(24);
  for (auto& p : v) {
    p = malloc(n);
    ASSERT_NE(p, nullptr);
    memset(p, 3, n);
  }
  void* last = v.back();
  std::string err;
  other.run([&] {
    for (void* p : v) free(p);  // 8 fill its bin of 100 KB runs, 16 go to the remote stack
    err = capture_stderr([&] { free(last); });
  });
  EXPECT_NE(err.find("double free"), std::string::npos) << err;
  EXPECT_NE(err.find(hex(last)), std::string::npos) << err;
  expect_each_block_once(v, n);
}

// A full magazine at its ceiling sends frees straight to the slabs while it still holds
// blocks that mallocs hand out. A second free of one of those blocks must be seen at that
// free: were its check put off, a malloc could hand the block out first, and the late
// check would then find a live block and put it on its slab's free list.
TEST(AllocApi, ASecondFreeOfABlockInAFullMagazineIsSeenBeforeItIsHandedOut) {
  std::string err;
  bool unique = true;
  std::thread t([&] {
    std::vector<void*> v(3000);  // 64 B: the magazine grows to its ceiling, 2048, and is full
    for (auto& p : v) p = malloc(64);
    for (void* p : v) free(p);
    void* twice = v[5];  // among the magazine's oldest blocks
    void (*volatile free_fn)(void*) = free;
    err = capture_stderr([&] { free_fn(twice); });
    std::set<void*> seen;
    for (auto& p : v) {  // the magazine's 2048, then refills (which finish delayed frees)
      p = malloc(64);
      unique = unique && seen.insert(p).second;
      memset(p, 4, 64);
    }
    for (void* p : v) free(p);
  });
  t.join();
  EXPECT_NE(err.find("double free"), std::string::npos) << err;
  EXPECT_TRUE(unique) << "a block was handed out twice";
}

// 80-byte blocks, enough for a teardown's bypass (a magazine holds at most 1638), and 8
// allocated after them. Returns one of the first that is freed late in the teardown and
// shares its 64 KiB slab with one of the 8: the slab stays the thread's (an emptied one
// goes back to the arena, where a second free of one of its blocks is seen at once).
void* teardown_block_on_a_live_slab(std::vector<void*>& v, std::vector<void*>& later) {
  v.resize(20000);
  later.resize(8);
  for (auto& p : v) p = malloc(80);
  for (auto& p : later) p = malloc(80);
  void* found = nullptr;
  for (size_t i = v.size() / 2; i < v.size() - 32; i++) {
    if ((reinterpret_cast<uintptr_t>(v[i]) >> 16) == (reinterpret_cast<uintptr_t>(later[0]) >> 16)) found = v[i];
  }
  return found;
}

// A teardown's bypass finishes each free 8 frees late (tiny_free_full). A second free of a
// block is still seen within 8 more frees, with no malloc in between, and nothing is lost
// or handed out twice.
TEST(AllocApi, ADoubleFreeInATeardownIsReportedWithinEightFrees) {
  std::vector<void*> v, later;
  void* twice = teardown_block_on_a_live_slab(v, later);
  ASSERT_NE(twice, nullptr) << "no block shares a slab with a later one";
  for (void* p : v) free(p);
  void (*volatile free_fn)(void*) = free;
  std::string err = capture_stderr([&] {
    free_fn(twice);
    for (void* p : later) free_fn(p);
  });
  EXPECT_NE(err.find("double free"), std::string::npos) << err;
  EXPECT_NE(err.find(hex(twice)), std::string::npos) << err;
  expect_each_block_once(v, 80);
}

// debug.abort_on_error stops at the faulty free itself, even in a teardown's bypass (whose
// frees otherwise finish late): a backtrace of the abort must show the caller at fault.
TEST(AllocApiDeathTest, AbortOnErrorAbortsAtTheDoubleFreeOfATeardown) {
  EXPECT_DEATH(
      {
        set_knob("debug.abort_on_error", 1);
        std::vector<void*> v;
        std::vector<void*> later;
        void* twice = teardown_block_on_a_live_slab(v, later);
        if (!twice) _exit(0);
        for (void* p : v) free(p);
        void (*volatile free_fn)(void*) = free;
        free_fn(twice);
        _exit(0);  // a report any later than the free itself would not abort
      },
      "double free.*aborting: debug.abort_on_error=1");
}

}  // namespace
