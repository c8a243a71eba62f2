// Page and run allocation from 4 MiB chunks, and the decay policy that returns cold memory.
#include "arena.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include "bits.h"
#include "control.h"
#include "heap.h"
#include "lock.h"
#include "mpsc.h"
#include "os.h"

namespace hakmem {

using proto::GlobalCounter;
using proto::Tier;

GlobalPageMap g_pagemap;

namespace {

// Bundle chunks per arena: 4 x 2048 x 4 MiB = 32 GiB of bundle runs; a bundle request
// beyond that is served as a whale.
inline constexpr uint32_t kBundleIndex = 2048;

// A bundle run freed by a thread of another shard, waiting in its arena's remote stack:
// the link sits in the block's first word.
struct RemoteRun {
  RemoteRun* next;
};
// A remote stack's bytes passing a multiple of this has the freeing thread see whether the
// decay thread is due (arena_bundle_free_remote).
inline constexpr uint64_t kRemoteStartStep = 1u << 20;

struct alignas(64) Arena {
  SmallChunk* small;      // every small chunk of the arena, highest address first
  SmallChunk* small_free; // where the search for a free page starts: every chunk before it is full
  uint32_t small_with_free;  // chunks with a free page: 0 = no search (a growing heap maps at once)
  // Every bundle chunk of the arena, in address order, and the longest free run of each:
  // finding a chunk a run fits in reads this byte array, not one header per chunk. (Every
  // header sits at page offset 0, the same L1 set and 1/64 of L2, so a search that touched
  // hundreds of them missed on each: 11 % of the time of a bundle-heavy trace.)
  uint32_t nbundle;
  uint8_t bundle_max[kBundleIndex];
  BundleChunk* bundle[kBundleIndex];
  // Runs freed by threads of other shards (arena_bundle_free_remote), and their bytes: on
  // a line of their own, so that pushing them never touches the lock or the chunk index.
  alignas(64) MpscStack<RemoteRun, &RemoteRun::next> remote;
  std::atomic<uint64_t> remote_bytes;
};
constinit Arena g_arena[kShards]{};

// The arena's lock, in the fork lock table (heap.h).
Mutex& lock_of(const Arena& a) { return g_fork_locks.arena[&a - g_arena]; }

std::atomic<uint64_t> g_last_decay_ns{0};

// Bytes of a small page that count as cached (free but resident).
size_t page_cached(const PageDesc* pg) {
  return pg->kind == kPageFree && !pg->purged ? kPageSize : 0;
}
// Bytes of a bundle half that count as cached: free units that were handed out since the
// half's last purge (a unit never handed out was never touched: mapped, not resident).
size_t half_cached(const BundleChunk* ch, int h) { return size_t{ch->half_cached[h]} * kUnitSize; }

// A new chunk, THP-hinted when thp.enable asks for it (before any page is touched).
void* chunk_map(Tier tier, MapKind kind) {
  const bool huge = knob(proto::Knob::ThpEnable) != 0;
  int err = 0;
  void* p = os_map(kChunkSize, kChunkSize, false, &err);
  if (!p) {
    // Out of address space or memory: cached whales are the memory we can give up here
    // (the arena lock is held, so the arenas themselves are not trimmed).
    whale_decay(os_now_ns(), true);
    p = os_map(kChunkSize, kChunkSize, false, &err);
    if (!p) return nullptr;
  }
  if (huge) {
    os_hugepage(p, kChunkSize);
    control_add(tier, GlobalCounter::Madvises, 1);
  }
  control_add(tier, GlobalCounter::OsMaps, 1);
  control_add(tier, GlobalCounter::MappedBytes, static_cast<int64_t>(kChunkSize));
  control_add(tier, GlobalCounter::CacheMisses, 1);
  g_pagemap.set(reinterpret_cast<uintptr_t>(p), kind);
  return p;
}

void chunk_unmap(Tier tier, void* p) {
  g_pagemap.set(reinterpret_cast<uintptr_t>(p), kMapNone);
  os_unmap(p, kChunkSize);
  control_add(tier, GlobalCounter::OsUnmaps, 1);
  control_add(tier, GlobalCounter::MappedBytes, -static_cast<int64_t>(kChunkSize));
}

// Small-chunk page bookkeeping is counted under the pool tier (tiny slabs and pool pages
// share these chunks); the tiny tier's own figures are its per-class counts.
constexpr Tier kSmallTier = Tier::Pool;

// Chunks are searched first-fit from the highest address (small ones kept in this list in
// descending order, bundle ones in Arena::bundle in ascending order, walked from the end).
// The kernel places new mappings below old ones, so that is the oldest first: new pages and
// runs pack into the oldest chunks, the resident free memory that frees leave behind is
// reused before an untouched page of a newer chunk is faulted in, and the newest chunks
// drain and decay. (From the lowest address, the newest chunk came first: mixed took 40,767
// faults and 163.9 MiB at its peak, now 40,421 and 163.1.)
void chunk_list_insert(SmallChunk*& head, SmallChunk* ch) {
  SmallChunk* prev = nullptr;
  for (SmallChunk* c = head; c && c > ch; c = c->next) prev = c;
  ch->prev = prev;
  ch->next = prev ? prev->next : head;
  if (ch->next) ch->next->prev = ch;
  if (prev) prev->next = ch; else head = ch;
}

SmallChunk* small_chunk_new(uint32_t shard) {
  // Always a fresh mapping, never a chunk of a cached whale (see bundle_chunk_new): a
  // program that needs a few more pages would hold all 4 MiB resident (bigblock: +3.8 MiB
  // peak RSS).
  void* p = chunk_map(kSmallTier, kMapSmall);
  if (!p) return nullptr;
  SmallChunk* ch = static_cast<SmallChunk*>(p);
  // Fresh anonymous memory is zero: only non-zero fields need writing.
  ch->map_kind = kMapSmall;
  ch->arena = static_cast<uint8_t>(shard);
  ch->free_mask = ~uint64_t{1};
  for (uint32_t i = 0; i < kPagesPerChunk; i++) ch->pages[i].purged = 1;  // never touched
  Arena& a = g_arena[shard];
  chunk_list_insert(a.small, ch);
  if (!a.small_free || ch > a.small_free) a.small_free = ch;
  a.small_with_free++;
  return ch;
}

void small_chunk_unlink(Arena& a, SmallChunk* ch) {
  if (a.small_free == ch) a.small_free = ch->next;
  if (ch->free_mask) a.small_with_free--;
  if (ch->prev) ch->prev->next = ch->next; else a.small = ch->next;
  if (ch->next) ch->next->prev = ch->prev;
}

// Index of ch in its arena's bundle array (present by pre-condition): binary search.
uint32_t bundle_index_of(const Arena& a, const BundleChunk* ch) {
  uint32_t lo = 0, hi = a.nbundle;
  while (hi - lo > 1) {
    uint32_t mid = (lo + hi) / 2;
    if (a.bundle[mid] <= ch) lo = mid; else hi = mid;
  }
  return lo;
}

BundleChunk* bundle_chunk_new(uint32_t shard) {
  Arena& a = g_arena[shard];
  if (a.nbundle == kBundleIndex) return nullptr;
  // Chunks are huge-page aligned but not THP-hinted unless thp.enable=1 (chunk_map):
  // measured, MADV_HUGEPAGE made the first touch of fresh memory stall in compaction
  // (defrag=madvise) and bloated RSS for sparse use, while reuse from the caches already
  // avoids the faults it would save.
  // Cross-tier reuse first: the first chunk of a cached whale mapping is resident already,
  // so runs carved from it do not fault again (mixed: 44.1 k -> 41.1 k faults, peak RSS
  // 177 -> 165 MiB). It is not zero: its header is cleared here.
  uint64_t freed_ns = 0;
  void* p = whale_cache_take_chunk(&freed_ns);
  const bool resident = p != nullptr;
  if (resident) {
    memset(p, 0, sizeof(BundleChunk));
    control_add(Tier::Bundle, GlobalCounter::MappedBytes, static_cast<int64_t>(kChunkSize));
    g_pagemap.set(reinterpret_cast<uintptr_t>(p), kMapBundle);
  } else if ((p = chunk_map(Tier::Bundle, kMapBundle)) == nullptr) {
    return nullptr;
  }
  BundleChunk* ch = static_cast<BundleChunk*>(p);
  ch->map_kind = kMapBundle;
  ch->arena = static_cast<uint8_t>(shard);
  ch->free_units = kUnitsPerChunk - 1;
  ch->half_free[0] = kUnitsPerHalf - 1;
  ch->half_free[1] = kUnitsPerHalf;
  // Neither half counts as cached until a run is carved from it (fresh memory is not resident).
  for (auto& w : ch->free_bits) w = ~uint64_t{0};
  ch->free_bits[0] &= ~uint64_t{1};
  ch->state[0] = kUnitHead;
  if (resident) {
    // Every free unit is resident: cached, and returned by decay like any other free half,
    // as old as the whale it was.
    for (auto& w : ch->touched_bits) w = ~uint64_t{0};
    ch->touched_bits[0] &= ~uint64_t{1};
    ch->half_backed[0] = ch->half_backed[1] = 1;
    ch->half_cached[0] = ch->half_free[0];
    ch->half_cached[1] = ch->half_free[1];
    ch->half_free_since[0] = ch->half_free_since[1] = freed_ns;
    control_add(Tier::Bundle, GlobalCounter::CachedBytes, static_cast<int64_t>(half_cached(ch, 0) + half_cached(ch, 1)));
  }
  uint32_t i = 0;
  while (i < a.nbundle && a.bundle[i] < ch) i++;
  memmove(&a.bundle[i + 1], &a.bundle[i], (a.nbundle - i) * sizeof(a.bundle[0]));
  memmove(&a.bundle_max[i + 1], &a.bundle_max[i], a.nbundle - i);
  a.bundle[i] = ch;
  a.bundle_max[i] = static_cast<uint8_t>(kUnitsPerChunk - 1);
  a.nbundle++;
  return ch;
}

void bundle_chunk_remove(Arena& a, uint32_t i) {
  a.nbundle--;
  memmove(&a.bundle[i], &a.bundle[i + 1], (a.nbundle - i) * sizeof(a.bundle[0]));
  memmove(&a.bundle_max[i], &a.bundle_max[i + 1], a.nbundle - i);
}

// First unit >= from whose bit equals `want`, or kUnitsPerChunk.
uint32_t bit_find(const uint64_t* bits, uint32_t from, bool want) {
  return hakmem::bit_find(bits, kUnitsPerChunk, from, want);
}

// First fit of n free units starting on a multiple of `align` units (a power of two, at
// most a half), preferring runs that do not straddle the two huge pages; -1 when none.
int32_t bundle_find_run(const BundleChunk* ch, uint32_t n, uint32_t align) {
  uint32_t u = bit_find(ch->free_bits, 1, true);
  int32_t straddling = -1;
  while (u + n <= kUnitsPerChunk) {
    uint32_t end = bit_find(ch->free_bits, u, false);
    const uint32_t s = (u + align - 1) & ~(align - 1);  // the run's first aligned start
    if (s + n <= end) {
      // Inside the run [s, end): a start that keeps [s, s+n) within one half if possible
      // (the half boundary is aligned for any alignment up to a half).
      if (s + n <= kUnitsPerHalf || s >= kUnitsPerHalf) return static_cast<int32_t>(s);
      if (end >= kUnitsPerHalf + n) return static_cast<int32_t>(kUnitsPerHalf);
      if (straddling < 0) straddling = static_cast<int32_t>(s);
    }
    if (end >= kUnitsPerChunk) break;
    u = bit_find(ch->free_bits, end, true);
  }
  return straddling;
}

// The longest run of free units of ch (the header unit is never free). A word at a time:
// walking the runs one by one took half of a bundle malloc+free in a chunk fragmented by
// frees in scattered order.
uint32_t longest_free_run(const BundleChunk* ch) { return longest_ones(ch->free_bits, kUnitsPerChunk); }

// The index entry of ch is the longest run of its free units, which a request of more
// units skips. Kept up to date under the arena lock, without a full scan on most changes: a
// free only merges runs (the entry can only grow, to the run around it), and a take only
// shortens the run it takes from (the entry changes only if that run was a longest one).

// The free run [*a, *b) around the free unit u.
void free_run_around(const BundleChunk* ch, uint32_t u, uint32_t* a, uint32_t* b) {
  *a = bit_find_back(ch->free_bits, u, false);
  *b = bit_find(ch->free_bits, u, false);
}

// After units were freed into the free run around u.
void bundle_index_freed(Arena& a, const BundleChunk* ch, uint32_t u) {
  uint32_t lo, hi;
  free_run_around(ch, u, &lo, &hi);
  uint8_t& max = a.bundle_max[bundle_index_of(a, ch)];
  if (hi - lo > max) max = static_cast<uint8_t>(hi - lo);
}

// After units were taken from a free run `run` units long; i is ch's index.
void bundle_index_taken(Arena& a, uint32_t i, const BundleChunk* ch, uint32_t run) {
  if (run >= a.bundle_max[i]) a.bundle_max[i] = static_cast<uint8_t>(longest_free_run(ch));
}

// Moves `delta` units of half-accounting for the run [u, u+n) (delta -1 = taking, +1 = freeing).
void bundle_account(BundleChunk* ch, uint32_t u, uint32_t n, int delta, uint64_t now) {
  size_t before = half_cached(ch, 0) + half_cached(ch, 1);
  for (int h = 0; h < 2; h++) {
    uint32_t lo = h * kUnitsPerHalf, hi = lo + kUnitsPerHalf;
    uint32_t a = u > lo ? u : lo, b = u + n < hi ? u + n : hi;
    if (a >= b) continue;
    uint32_t k = b - a;
    if (delta < 0) {
      ch->half_free[h] = static_cast<uint16_t>(ch->half_free[h] - k);
      ch->half_cached[h] = static_cast<uint16_t>(ch->half_cached[h] - bits_count_range(ch->touched_bits, a, k));
      bits_set_range(ch->touched_bits, a, k, true);
      ch->half_backed[h] = 1;
      ch->half_free_since[h] = 0;
    } else {
      ch->half_free[h] = static_cast<uint16_t>(ch->half_free[h] + k);
      ch->half_cached[h] = static_cast<uint16_t>(ch->half_cached[h] + k);  // handed out: touched
      uint32_t all = h == 0 ? kUnitsPerHalf - 1 : kUnitsPerHalf;
      if (ch->half_free[h] == all) ch->half_free_since[h] = now;
    }
  }
  ch->free_units = static_cast<uint16_t>(ch->free_units + delta * static_cast<int>(n));
  size_t after = half_cached(ch, 0) + half_cached(ch, 1);
  control_add(Tier::Bundle, GlobalCounter::CachedBytes,
              static_cast<int64_t>(after) - static_cast<int64_t>(before));
}

uint64_t decay_ns(proto::Knob k) { return knob(k) * 1000000ull; }

}  // namespace

namespace {
// Moves a page's worth of mapped bytes between the small arena (pool) and tiny.
void page_lend(Tier user, int64_t sign) {
  if (user == kSmallTier) return;
  control_add(user, GlobalCounter::MappedBytes, sign * static_cast<int64_t>(kPageSize));
  control_add(kSmallTier, GlobalCounter::MappedBytes, -sign * static_cast<int64_t>(kPageSize));
}
}  // namespace

namespace {
// Takes the lowest free page of ch (keeping the upper pages of a chunk cold so decay can
// return them). Pre-condition: the arena lock is held and ch has a free page.
PageDesc* page_take(Arena& a, SmallChunk* ch, bool prewarm, Tier user) {
  uint32_t i = static_cast<uint32_t>(__builtin_ctzll(ch->free_mask));
  ch->free_mask &= ~(uint64_t{1} << i);
  if (ch->free_mask == 0) a.small_with_free--;
  ch->empty_since_ns = 0;
  PageDesc* pg = &ch->pages[i];
  size_t before = page_cached(pg);
  bool was_purged = pg->purged;
  memset(static_cast<void*>(pg), 0, sizeof(*pg));
  control_add(kSmallTier, GlobalCounter::CachedBytes, -static_cast<int64_t>(before));
  page_lend(user, +1);
  if (prewarm && was_purged) {
    os_populate(page_start(pg), kPageSize);
    control_add(kSmallTier, GlobalCounter::Madvises, 1);
  }
  return pg;
}
}  // namespace

// The shard's own chunks first, then a free page of any other shard, and only when no arena
// has one a fresh chunk for the shard: with thread churn, heaps of every shard come and go,
// and a page one shard's threads freed must not sit resident and idle while another shard
// faults in a new chunk (larson grew to 8 chunks for 2 chunks' worth of pages).
PageDesc* arena_page_alloc(uint32_t shard, bool prewarm, Tier user) {
  for (uint32_t k = 0; k <= kShards; k++) {
    const bool last = k == kShards;  // back to the own shard: check again, then map
    Arena& a = g_arena[(shard + k) % kShards];
    LockGuard g(lock_of(a));
    // From the hint on (a heap growing page by page would otherwise walk every full chunk,
    // one header miss each, for every page).
    SmallChunk* ch = nullptr;
    if (a.small_with_free) {
      ch = a.small_free;
      while (ch && ch->free_mask == 0) ch = ch->next;
      a.small_free = ch;
    }
    if (ch) {
      control_add(kSmallTier, GlobalCounter::CacheHits, 1);
      return page_take(a, ch, prewarm, user);
    }
    if (last) {
      ch = small_chunk_new(shard);
      return ch ? page_take(a, ch, prewarm, user) : nullptr;
    }
  }
  return nullptr;
}

void arena_page_release(PageDesc* pg) {
  SmallChunk* ch = small_chunk_of(pg);
  Arena& a = g_arena[ch->arena];
  uint64_t now = os_now_ns();
  bool immediate = knob(proto::Knob::BundleDecayMs) == 0;
  {
    LockGuard g(lock_of(a));
    uint32_t i = static_cast<uint32_t>(pg - ch->pages);
    if (pg->kind == kPageTiny) page_lend(Tier::Tiny, -1);
    pg->owner = nullptr;
    pg->kind = kPageFree;
    pg->free_since_ns = now;
    pg->purged = 0;
    if (immediate) {
      os_purge(page_start(pg), kPageSize);
      control_add(kSmallTier, GlobalCounter::Madvises, 1);
      pg->purged = 1;
    }
    control_add(kSmallTier, GlobalCounter::CachedBytes, static_cast<int64_t>(page_cached(pg)));
    if (ch->free_mask == 0) a.small_with_free++;
    ch->free_mask |= uint64_t{1} << i;
    if (!a.small_free || ch > a.small_free) a.small_free = ch;
    if (ch->free_mask == ~uint64_t{1}) ch->empty_since_ns = now;
  }
  decay_tick(now);
}

namespace {
// Marks the units [u, u+n) of ch free (the whole of a run, or the tail a shrink gives up)
// and accounts for them. Pre-condition: a's lock is held.
void units_give_back(Arena& a, BundleChunk* ch, uint32_t u, uint32_t n, uint64_t now) {
  for (uint32_t i = u; i < u + n; i++) ch->state[i] = kUnitFree;
  bits_set_range(ch->free_bits, u, n, true);
  bundle_account(ch, u, n, +1, now);
  bundle_index_freed(a, ch, u);
}

// Frees the run whose block is p (in use, or waiting in the remote stack) into its chunk.
// Returns its bytes. Pre-condition: a's lock is held.
size_t run_give_back(Arena& a, void* p, uint64_t now) {
  BundleChunk* ch = bundle_chunk_of(p);
  const uint32_t s = bundle_unit_of(p), n = ch->run[s];
  ch->run[s] = 0;
  units_give_back(a, ch, s, n, now);
  return size_t{n} * kUnitSize;
}

// Frees the runs other threads left in a's remote stack. Pre-condition: a's lock is held.
void remote_drain(Arena& a) {
  RemoteRun* r = a.remote.take_all();
  if (r == nullptr) return;
  const uint64_t now = os_now_ns();
  size_t bytes = 0;
  while (r) {
    RemoteRun* next = r->next;
    bytes += run_give_back(a, r, now);
    r = next;
  }
  a.remote_bytes.fetch_sub(bytes, std::memory_order_relaxed);
}

// Marks the run [s, s+units) of ch in use and returns its block: `coloured` places it at
// the unit's colour (runs of up to kColourUnits), else at the run start; *zero (when asked)
// says whether the run reads as zero. Pre-condition: the arena lock is held.
void* run_take(BundleChunk* ch, uint32_t s, uint32_t units, bool prewarm, bool coloured, bool* populate,
               bool* zero) {
  if (zero) *zero = bit_find(ch->touched_bits, s, true) >= s + units;  // no unit handed out yet
  *populate = prewarm && (!ch->half_backed[s / kUnitsPerHalf] ||
                          !ch->half_backed[(s + units - 1) / kUnitsPerHalf]);
  const size_t colour = coloured && units <= kColourUnits ? unit_colour(s) : 0;
  bits_set_range(ch->free_bits, s, units, false);
  ch->state[s] = static_cast<uint8_t>(head_state(kUnitHead, colour));
  ch->run[s] = static_cast<uint8_t>(units);
  for (uint32_t i = s + 1; i < s + units; i++) ch->state[i] = kUnitTail;
  bundle_account(ch, s, units, -1, 0);
  return reinterpret_cast<char*>(ch) + size_t{s} * kUnitSize + colour;
}
}  // namespace

// Like pages: the own shard, then any other, then a fresh chunk for the own shard; in each,
// the highest (oldest) chunk whose longest free run fits, and for an aligned run has an
// aligned start that fits (the index says only that the longest run is long enough). See
// chunk_list_insert for why the oldest: a round of 64 blocks of 64 KiB that had spilled
// into a second chunk faulted 612 pages in again the next round from the lowest; realloc's
// workload 4,203 -> 3,928 faults, peak RSS 17.7 -> 16.6 MiB.
void* arena_bundle_alloc(uint32_t shard, uint32_t units, bool prewarm, bool coloured, bool* zero,
                         uint32_t align_units) {
  void* p = nullptr;
  bool populate = false;
  for (uint32_t k = 0; k <= kShards && !p; k++) {
    const bool last = k == kShards;
    Arena& a = g_arena[(shard + k) % kShards];
    LockGuard g(lock_of(a));
    remote_drain(a);
    BundleChunk* ch = nullptr;
    uint32_t i = a.nbundle;
    int32_t found = -1;
    while (i-- > 0) {
      if (a.bundle_max[i] >= units && (found = bundle_find_run(a.bundle[i], units, align_units)) >= 0) {
        ch = a.bundle[i];
        break;
      }
    }
    if (ch) {
      control_add(Tier::Bundle, GlobalCounter::CacheHits, 1);
    } else if (last) {
      ch = bundle_chunk_new(shard);
      if (!ch) return nullptr;
      i = bundle_index_of(a, ch);
      found = bundle_find_run(ch, units, align_units);  // a new chunk is free but unit 0
    } else {
      continue;
    }
    const uint32_t s = static_cast<uint32_t>(found);
    uint32_t lo, hi;
    free_run_around(ch, s, &lo, &hi);
    p = run_take(ch, s, units, prewarm, coloured, &populate, zero);
    bundle_index_taken(a, i, ch, hi - lo);
  }
  if (populate) {
    os_populate(reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(p) & ~(kUnitSize - 1)), size_t{units} * kUnitSize);
    control_add(Tier::Bundle, GlobalCounter::Madvises, 1);
  }
  return p;
}

void arena_bundle_free(void* p) {
  BundleChunk* ch = bundle_chunk_of(p);
  Arena& a = g_arena[ch->arena];
  uint64_t now = os_now_ns();
  {
    LockGuard g(lock_of(a));
    remote_drain(a);
    run_give_back(a, p, now);
  }
  decay_tick(now);
}

bool arena_bundle_remote_waiting(uint32_t shard) { return !g_arena[shard].remote.empty(); }

void arena_bundle_adopt_remote(Heap* h) {
  Arena& a = g_arena[h->shard];
  // One exchange takes the whole stack, so a drain under the lock may run meanwhile: each
  // takes runs the other does not see.
  RemoteRun* r = a.remote.take_all();
  if (r == nullptr) return;
  RemoteRun* rest = nullptr;
  size_t bytes = 0;
  while (r) {
    RemoteRun* next = r->next;
    const uint32_t units = bundle_chunk_of(r)->run[bundle_unit_of(r)];
    bytes += size_t{units} * kUnitSize;
    if (!bundle_bin_push(h, r, units)) {
      r->next = rest;
      rest = r;
    }
    r = next;
  }
  a.remote_bytes.fetch_sub(bytes, std::memory_order_relaxed);
  if (rest == nullptr) return;
  const uint64_t now = os_now_ns();
  LockGuard g(lock_of(a));
  for (r = rest; r; r = rest) {
    rest = r->next;
    run_give_back(a, r, now);
  }
}

bool arena_bundle_free_remote(void* p, uint32_t units) {
  BundleChunk* ch = bundle_chunk_of(p);
  Arena& a = g_arena[ch->arena];
  const uintptr_t off = reinterpret_cast<uintptr_t>(p) & (kUnitSize - 1);
  ch->state[bundle_unit_of(p)] = static_cast<uint8_t>(head_state(kUnitCached, off));
  const size_t bytes = size_t{units} * kUnitSize;
  const uint64_t before = a.remote_bytes.fetch_add(bytes, std::memory_order_relaxed);
  a.remote.push(static_cast<RemoteRun*>(p));
  decay_tick(os_now_ns());
  return (before + bytes) / kRemoteStartStep != before / kRemoteStartStep;
}

bool arena_bundle_grow(void* p, uint32_t units) {
  BundleChunk* ch = bundle_chunk_of(p);
  Arena& a = g_arena[ch->arena];
  LockGuard g(lock_of(a));
  remote_drain(a);  // a neighbour freed by another thread is free for the growth
  uint32_t s = static_cast<uint32_t>((reinterpret_cast<uintptr_t>(p) & kChunkMask) >> kUnitShift);
  uint32_t n = ch->run[s];
  if (unit_kind(ch->state[s]) != kUnitHead || n >= units || s + units > kUnitsPerChunk) return false;
  // The extension [s+n, s+units) must be free: the first non-free unit from s+n. The free
  // run it comes from starts at s+n, as unit s+n-1 is the block's.
  const uint32_t run_end = bit_find(ch->free_bits, s + n, false);
  if (run_end < s + units) return false;
  bits_set_range(ch->free_bits, s + n, units - n, false);
  for (uint32_t i = s + n; i < s + units; i++) ch->state[i] = kUnitTail;
  ch->run[s] = static_cast<uint8_t>(units);
  bundle_account(ch, s + n, units - n, -1, 0);
  bundle_index_taken(a, bundle_index_of(a, ch), ch, run_end - (s + n));
  return true;
}

bool arena_bundle_shrink(void* p, uint32_t units) {
  BundleChunk* ch = bundle_chunk_of(p);
  Arena& a = g_arena[ch->arena];
  const uint64_t now = os_now_ns();
  {
    LockGuard g(lock_of(a));
    const uint32_t s = bundle_unit_of(p), n = ch->run[s];
    if (unit_kind(ch->state[s]) != kUnitHead || units >= n) return false;
    ch->run[s] = static_cast<uint8_t>(units);
    units_give_back(a, ch, s + units, n - units, now);
  }
  decay_tick(now);  // as a free of those units would
  return true;
}

size_t arena_decay(uint64_t now, bool force) {
  size_t released = 0;
  const uint64_t age = force ? 0 : decay_ns(proto::Knob::BundleDecayMs);
  for (uint32_t s = 0; s < kShards; s++) {
    Arena& a = g_arena[s];
    if (force) lock_of(a).lock();
    else if (!lock_of(a).try_lock()) continue;
    remote_drain(a);  // so that a shard whose own threads went quiet still gives them back
    // Small chunks: purge pages free for long enough; unmap chunks empty for long enough,
    // keeping one per arena so a steady workload does not map and unmap in a loop.
    for (SmallChunk* ch = a.small, *next; ch; ch = next) {
      next = ch->next;
      if (ch->free_mask == ~uint64_t{1} && now - ch->empty_since_ns >= age &&
          (force || a.small != ch || ch->next)) {
        size_t cached = 0;
        for (uint32_t i = 1; i < kPagesPerChunk; i++) cached += page_cached(&ch->pages[i]);
        control_add(kSmallTier, GlobalCounter::CachedBytes, -static_cast<int64_t>(cached));
        small_chunk_unlink(a, ch);
        chunk_unmap(kSmallTier, ch);
        released += cached;
        continue;
      }
      uint64_t m = ch->free_mask;
      while (m) {
        uint32_t i = static_cast<uint32_t>(__builtin_ctzll(m));
        m &= m - 1;
        PageDesc* pg = &ch->pages[i];
        if (!pg->purged && now - pg->free_since_ns >= age) {
          os_purge(page_start(pg), kPageSize);
          pg->purged = 1;
          control_add(kSmallTier, GlobalCounter::Madvises, 1);
          control_add(kSmallTier, GlobalCounter::CachedBytes, -static_cast<int64_t>(kPageSize));
          released += kPageSize;
        }
      }
    }
    // Bundle chunks: a half entirely free for long enough goes back as a whole huge page.
    for (uint32_t i = a.nbundle; i-- > 0;) {
      BundleChunk* ch = a.bundle[i];
      if (ch->free_units == kUnitsPerChunk - 1 && now - ch->half_free_since[0] >= age &&
          now - ch->half_free_since[1] >= age && (force || a.nbundle > 1)) {
        size_t cached = half_cached(ch, 0) + half_cached(ch, 1);
        control_add(Tier::Bundle, GlobalCounter::CachedBytes, -static_cast<int64_t>(cached));
        bundle_chunk_remove(a, i);
        chunk_unmap(Tier::Bundle, ch);
        released += cached;
        continue;
      }
      for (int h = 0; h < 2; h++) {
        uint32_t all = h == 0 ? kUnitsPerHalf - 1 : kUnitsPerHalf;
        if (!ch->half_backed[h] || ch->half_free[h] != all) continue;
        if (now - ch->half_free_since[h] < age) continue;
        // The header shares the first huge page: that half gives back everything after it.
        if (h == 0) os_purge(reinterpret_cast<char*>(ch) + kUnitSize, kChunkSize / 2 - kUnitSize);
        else os_purge(reinterpret_cast<char*>(ch) + kChunkSize / 2, kChunkSize / 2);
        size_t cached = half_cached(ch, h);
        ch->half_backed[h] = 0;
        ch->half_cached[h] = 0;
        bits_set_range(ch->touched_bits, h * kUnitsPerHalf, kUnitsPerHalf, false);
        control_add(Tier::Bundle, GlobalCounter::Madvises, 1);
        control_add(Tier::Bundle, GlobalCounter::CachedBytes, -static_cast<int64_t>(cached));
        released += cached;
      }
    }
    lock_of(a).unlock();
  }
  return released;
}

void decay_tick(uint64_t now) {
  // At most every 1/8 of the shorter decay time (and at least every 100 ms): the scan is
  // cheap, but not free.
  uint64_t b = decay_ns(proto::Knob::BundleDecayMs), w = decay_ns(proto::Knob::WhaleDecayMs);
  uint64_t period = (b < w ? b : w) / 8;
  if (period > 100000000ull) period = 100000000ull;
  uint64_t last = g_last_decay_ns.load(std::memory_order_relaxed);
  if (now - last < period) return;
  if (!g_last_decay_ns.compare_exchange_strong(last, now, std::memory_order_relaxed)) return;
  arena_decay(now, false);
  whale_decay(now, false);
}

namespace {

// 0 = not started, 1 = starting or running, 2 = retired: the program asked the kernel for
// something only a single-threaded process may do (decay_thread_retire), and this process
// starts no thread of ours again; 3 = stopped by decay.thread=0: the thread left its loop
// and its handle waits for the next start (or a retire) to join it.
std::atomic<int> g_decay_thread{0};
std::atomic<const void*> g_decay_word{nullptr};  // the futex word the thread waits on
std::atomic<bool> g_decay_running{false};   // g_decay_handle is a live, joinable thread
pthread_t g_decay_handle;
Mutex g_decay_lock;                         // orders a start against a retire

void* decay_thread_main(void*) {
  while (g_decay_thread.load(std::memory_order_acquire) == 1) {
    uint64_t b = knob(proto::Knob::BundleDecayMs), w = knob(proto::Knob::WhaleDecayMs);
    uint64_t ms = (b < w ? b : w) / 4;
    if (ms < 10) ms = 10;
    if (ms > 1000) ms = 1000;
    // The wait ends early when a knob writer wakes the segment's knob word (hakmemd does
    // after every write: the write is applied at once) or when the thread is retired.
    const proto::KnobBlock& kb = control_segment().knobs;
    const void* word = proto::knob_wake_word(kb);
    g_decay_word.store(word, std::memory_order_release);
    const uint32_t seen = static_cast<uint32_t>(kb.generation.load(std::memory_order_acquire));
    if (g_decay_thread.load(std::memory_order_acquire) != 1) break;
    // Applies a write made before `seen` was read; a later one ends the wait at once, and
    // the next round applies it.
    if (control_poll_process()) whale_apply_knobs();
    if (!knob(proto::Knob::DecayThread)) {
      // Switched off: the process is left with its own threads only, and decay goes on
      // from the allocation paths. A retire racing with this has set 2 and joins us.
      int running = 1;
      g_decay_thread.compare_exchange_strong(running, 3, std::memory_order_acq_rel);
      break;
    }
    decay_tick(os_now_ns());
    os_futex_wait_shared_ns(word, seen, ms * 1000000ull);
  }
  return nullptr;
}

}  // namespace

namespace {

// The start itself, out of line: its frame (signal sets, thread attributes) would otherwise
// be set up on every call, and most calls return at the checks before it.
__attribute__((noinline)) void decay_thread_start(int state) {
  if (!g_decay_thread.compare_exchange_strong(state, 1, std::memory_order_acq_rel)) return;
  // Held across pthread_join and pthread_create, whose frees and allocations come back to
  // us: none of our paths takes this lock once the state is 1.
  LockGuard g(g_decay_lock);
  if (g_decay_thread.load(std::memory_order_relaxed) != 1) return;  // retired meanwhile
  int saved = errno;
  if (g_decay_running.load(std::memory_order_relaxed)) {
    // A thread stopped by the knob: it has left its loop, so the join is short.
    pthread_join(g_decay_handle, nullptr);
    g_decay_running.store(false, std::memory_order_relaxed);
  }
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  // The program's signals must never be delivered to our thread.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  if (pthread_create(&g_decay_handle, &attr, decay_thread_main, nullptr) == 0) {
    g_decay_running.store(true, std::memory_order_relaxed);
  }
  // Else (thread limits, seccomp): decay keeps running from slow paths only.
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  pthread_attr_destroy(&attr);
  errno = saved;
}

}  // namespace

void decay_thread_maybe_start() {
  int state = g_decay_thread.load(std::memory_order_relaxed);
  if (state == 1 || state == 2 || !knob(proto::Knob::DecayThread)) return;
  // Only once there is something worth returning: most short programs never get here, and
  // none does during its own start-up.
  const proto::Segment& seg = control_segment();
  uint64_t cached = 0;
  for (Tier t : {Tier::Pool, Tier::Bundle})
    cached += seg.global.tier[static_cast<size_t>(t)][static_cast<size_t>(GlobalCounter::CachedBytes)].load(
        std::memory_order_relaxed);
  cached += proto::whale_shard_sum(seg.global, proto::kWhaleShardCached);
  // Runs waiting in remote stacks are as good as cached: the next decay frees them.
  for (const Arena& a : g_arena) cached += a.remote_bytes.load(std::memory_order_relaxed);
  if (static_cast<int64_t>(cached) >= (int64_t{8} << 20)) decay_thread_start(state);
}

bool decay_thread_retire() {
  LockGuard g(g_decay_lock);
  const int prev = g_decay_thread.exchange(2, std::memory_order_acq_rel);
  if ((prev != 1 && prev != 3) || !g_decay_running.load(std::memory_order_relaxed)) return false;
  // The thread may be between its state check and its wait: wake it until it is gone
  // (stopped by the knob, it is already leaving).
  int saved = errno;
  for (;;) {
    if (const void* w = g_decay_word.load(std::memory_order_acquire)) os_futex_wake_shared(w, 1 << 30);
    timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += 10 * 1000000;
    if (until.tv_nsec >= 1000000000) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000;
    }
    if (pthread_timedjoin_np(g_decay_handle, nullptr, &until) == 0) break;
  }
  errno = saved;
  g_decay_running.store(false, std::memory_order_relaxed);
  return true;
}

void decay_thread_atfork_child() {
  // The thread did not come along, and a fork in the middle of a start or a retire left
  // the lock as it was; a retired process stays retired.
  // Nothing is written that is already right: each write copies its page in the child.
  g_decay_lock.reset();
  if (g_decay_running.load(std::memory_order_relaxed)) g_decay_running.store(false, std::memory_order_relaxed);
  const int state = g_decay_thread.load(std::memory_order_relaxed);
  if (state == 1 || state == 3) g_decay_thread.store(0, std::memory_order_relaxed);
}

}  // namespace hakmem
