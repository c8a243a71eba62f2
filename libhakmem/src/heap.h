// The thread heap: everything a thread caches so that its common operations need no lock.
// One per live thread; reached through a single initial-exec TLS pointer that starts at
// g_empty_heap (all magazines empty, capacity 0), so the fast paths never ask whether the
// thread is initialised: the empty heap simply misses and the slow path attaches a heap.
//
// Heaps are never freed. At thread exit a heap gives back what it can and is parked on the
// abandoned list with the slabs that still have blocks out; the next new thread adopts it
// (draining the frees other threads made meanwhile), which bounds memory under thread churn.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "chunk.h"
#include "control.h"
#include "lock.h"
#include "magazine.h"
#include "mpsc.h"
#include "sizeclass.h"

namespace hakmem {

inline constexpr uint32_t kShards = 4;          // pool/arena lock shards

// The locks fork() holds (init.cc, fork_prepare), each over memory a thread could leave
// half-changed. They sit in this one table rather than in the structs they guard: taking
// them writes their pages just before the fork, and the parent's unlocks and the child's
// resets then copy each page (a page fault apiece on both sides, 2-3 us on a VM). Spread
// over the shards' structs they took nine pages, here two. Lock order: heaps, pool,
// arena, whale (init.cc, each_fork_lock; a pool refill takes its arena's lock inside its
// own). The layout differs: the arena and whale locks come before the pool's, so that the
// first page holds them with shards 0 and 1's pool locks, and a fork child whose first
// pool malloc takes a page from its arena writes one page of this table, not both.
struct alignas(4096) ForkLocks {
  Mutex heaps;                             // init.cc: the heap list, the abandoned heaps
  Mutex arena[kShards];                    // arena.cc: an arena's chunks
  Mutex whale[proto::kWhaleCacheShards];   // whale.cc: a cache shard's list
  Mutex pool[kShards][kPoolClasses];       // pool.cc: a shard's pages of one class
};
extern ForkLocks g_fork_locks;

// Tiny allocations of one class between two periodic checks (a power of two). At a few ns
// per operation a thread in a hot loop reaches the check well within a millisecond.
inline constexpr uint64_t kTickOps = 4096;
inline constexpr size_t kBundleCacheBytes = 2u << 20;  // per-thread bundle cache bound
// Frees of a teardown's bypass finished this many frees late (tiny_free_full), so that
// their blocks' lines arrive meanwhile. Bounds what they keep: that many blocks' pages.
inline constexpr uint32_t kDelaySlots = 8;

// Per-thread bundle bins: a short stack of run pointers per run length, kept in the heap, so
// that caching a run never touches the run's own memory (whose first line shares the L1 set
// of every page a program walks). Capacity by run length: 8 runs up to 128 KiB, 4 up to
// 512 KiB, 2 above. The table gives each bin its capacity and its offset in one flat array.
inline constexpr uint32_t bundle_bin_cap(uint32_t units) { return units <= 8 ? 8 : (units <= 32 ? 4 : 2); }
struct BundleBinTable {
  uint16_t off[kBundleBins];
  uint8_t cap[kBundleBins];
  uint32_t total;
};
inline constexpr BundleBinTable make_bundle_bin_table() {
  BundleBinTable t{};
  for (uint32_t i = 0; i < kBundleBins; i++) {
    t.off[i] = static_cast<uint16_t>(t.total);
    t.cap[i] = static_cast<uint8_t>(bundle_bin_cap(i + kBundleMinUnits));
    t.total += t.cap[i];
  }
  return t;
}
inline constexpr BundleBinTable kBundleBinTable = make_bundle_bin_table();

struct Heap {
  // Cold fields first: a heap starts on a page boundary, the L1 set that the first line of
  // every page-aligned block maps to, which a program walking big blocks page by page evicts
  // each time. Nothing on a fast path may live in that line, nor in the lines a bundle
  // block's colour puts a page walk on (sizeclass.h, chunk.h): the hot fields start at 1 KiB.
  Heap* next_all;                // registry of every heap ever made
  Heap* next_abandoned;
  uint32_t index;                // creation order; picks the shard
  uint8_t live;                  // owned by a running thread (0 = abandoned / empty heap)
  // Bypass frees waiting for their block's line (tiny_free_full): a ring of blocks and their
  // slabs, filled in turn, null where empty. Only a teardown touches them, so they sit in
  // the cold first KiB, at 512, clear of the colour lines.
  struct Delayed {
    Block* b;
    PageDesc* pg;
  };
  alignas(512) Delayed delay[kDelaySlots];
  uint32_t delay_pos;
  // Each pool class's ceiling, and the blocks its full magazine flushed since its last
  // refill (pool.cc). Slow paths only: they too sit in the cold first KiB.
  uint32_t pool_ceiling[kPoolClasses];
  uint32_t pool_spilled[kPoolClasses];
  // Bit c: the heap has refilled tiny (pool) class c before (see refill_carve).
  uint32_t tiny_refilled;
  uint32_t pool_refilled;
  alignas(1024) Magazine tiny[kTinyClasses];  // hot: the tiny fast path touches only these, tick and ctl
  ThreadCtl ctl;
  Magazine pool[kPoolClasses];
  // Bundle bins (index: units - kBundleMinUnits); see kBundleBinTable. A cached run's head
  // unit is marked kUnitCached in its chunk, which is how a second free of it is seen.
  uint8_t bundle_count[kBundleBins];
  uint8_t shard;                 // pool/arena shard; next to the bins, which the bundle free reads with it
  size_t bundle_bytes;           // bytes cached in the bins
  size_t bundle_limit;           // bound on bundle_bytes: kBundleCacheBytes, 0 for the empty heap
  void* bundle_slot[kBundleBinTable.total];
  PageDesc* tiny_avail[kTinyClasses];  // owned slabs with free or uncarved blocks
  MpscStack<PageDesc, &PageDesc::ready_next> ready;  // owned slabs with remote frees
  // Knob values cached by heap_refresh_knobs().
  uint32_t knob_tiny_cap;
  uint8_t knob_tiny_prewarm;
  uint8_t knob_pool_prewarm;
  uint8_t knob_bundle_prewarm;
  uint8_t knob_abort_on_error;   // debug.abort_on_error: bypass frees are not delayed
  // Frees per class that found the magazine at its ceiling since its last refill.
  uint32_t tiny_direct[kTinyClasses];
  // The capacity up to which frees grow each class's magazine (tiny.cc, kBoostCap): a
  // thread that comes back for blocks after its frees overflowed it raises it.
  uint32_t tiny_ceiling[kTinyClasses];
  // heap_trim_idle: when the magazines were last looked at, and the head each had then.
  uint64_t idle_check_ns;
  Block* tiny_seen[kTinyClasses];
  Block* pool_seen[kPoolClasses];
};

// Fresh blocks a refill of class c (bit c of `refilled`, the heap's tiny_refilled or
// pool_refilled) may carve: `budget` bytes of them, one block at least, but on the heap's
// first refill of the class only what one 4 KiB page holds. Each carved block's first line
// is written, so a block carved ahead of need is a page fault the program may never need,
// and many classes are used once or a few times by a thread (a command's start-up, a fork
// child before it execs): the first 5,000-byte malloc carved 3 blocks over 4 pages, the
// first 1 KiB malloc 16 over 4. A class used again gets the whole budget from its second
// refill on.
inline uint32_t refill_carve(uint32_t& refilled, uint32_t c, size_t budget, size_t block_size) {
  const uint32_t bit = 1u << c;
  const size_t bytes = refilled & bit ? budget : 4096;
  refilled |= bit;
  return bytes <= block_size ? 1 : static_cast<uint32_t>(bytes / block_size);
}

// Caches the run whose block is p (`units` long, in use, held by this thread) in its bin.
// False when the bin is full or the heap's bound would be passed (the empty heap's is 0).
inline bool bundle_bin_push(Heap* h, void* p, uint32_t units) {
  const uintptr_t off = reinterpret_cast<uintptr_t>(p) & (kUnitSize - 1);
  const uint32_t i = units - kBundleMinUnits;
  const uint32_t n = h->bundle_count[i];
  const size_t bytes = size_t{units} * kUnitSize;
  if (n >= kBundleBinTable.cap[i] || h->bundle_bytes + bytes > h->bundle_limit) return false;
  h->bundle_slot[kBundleBinTable.off[i] + n] = p;
  h->bundle_count[i] = static_cast<uint8_t>(n + 1);
  h->bundle_bytes += bytes;
  bundle_chunk_of(p)->state[bundle_unit_of(p)] = static_cast<uint8_t>(head_state(kUnitCached, off));
  return true;
}

// The block of the most recently cached run of bin i. Pre-condition: bundle_count[i] > 0.
inline void* bundle_bin_top(const Heap* h, uint32_t i) {
  return h->bundle_slot[kBundleBinTable.off[i] + h->bundle_count[i] - 1u];
}

// Takes the most recently cached run of bin i. Pre-condition: bundle_count[i] > 0.
inline void* bundle_bin_pop(Heap* h, uint32_t i) {
  const uint32_t n = h->bundle_count[i] - 1u;
  void* p = h->bundle_slot[kBundleBinTable.off[i] + n];
  h->bundle_count[i] = static_cast<uint8_t>(n);
  h->bundle_bytes -= size_t{i + kBundleMinUnits} * kUnitSize;
  const uintptr_t off = reinterpret_cast<uintptr_t>(p) & (kUnitSize - 1);
  bundle_chunk_of(p)->state[bundle_unit_of(p)] = static_cast<uint8_t>(head_state(kUnitHead, off));
  return p;
}

// The fast paths' view of class c: they carry c * 8 (tiny_class_x8, PageDesc::cls_x8), so
// that the 16-byte magazine and the 8-byte counter of the class are reached through an
// address scale, without a shift of their own.
static_assert(sizeof(Magazine) == 16, "tiny_mag scales class * 8 by 2");
inline Magazine& tiny_mag(Heap* h, uint32_t c_x8) {
  return *reinterpret_cast<Magazine*>(reinterpret_cast<char*>(h->tiny) + 2 * size_t{c_x8});
}
template <class T>
inline T& at_x8(T* per_class, uint32_t c_x8) {
  static_assert(sizeof(T) == 8, "at_x8 indexes 8-byte entries");
  return *reinterpret_cast<T*>(reinterpret_cast<char*>(per_class) + c_x8);
}

extern Heap g_empty_heap __attribute__((visibility("hidden")));
extern constinit thread_local Heap* t_heap __attribute__((tls_model("initial-exec")));

// Slow-path helpers (init.cc).
// Returns the calling thread's heap, attaching one (and initialising the process) first if
// needed. nullptr only for a re-entrant call made while this thread initialises hakmem.
Heap* heap_get_slow();
// The periodic check: control_poll, knob refresh, decay. Resets the countdown.
void heap_tick(Heap* h);
// The knob part of heap_tick alone (no clock read, no decay): for whale mallocs, whose free
// runs the decay check anyway.
void heap_poll(Heap* h);
void heap_refresh_knobs(Heap* h);
bool process_ready();

// Tiny tier (tiny.cc).
void* tiny_malloc_slow(Heap* h, uint32_t c);
void tiny_free_slow(Heap* h, void* p, PageDesc* pg);
// A local free of a valid tiny block of a slab h owns, whose magazine m is full: the free
// fast path's tail call, made before the block's cookie is read (it checks that itself).
void tiny_free_full(Heap* h, Block* b, PageDesc* pg, const Magazine& m) noexcept;
void tiny_flush(Heap* h, uint32_t c, uint32_t keep);
// heap_trim_idle's flush of a magazine the thread stopped using: its blocks go back to the
// slabs and its ceiling back to the base one.
void tiny_flush_idle(Heap* h, uint32_t c);
// Finishes the bypass frees still waiting (tiny_free_full). Called before anything that
// gives a magazine in bypass a capacity again, and wherever cached blocks go back.
void tiny_drain_delayed(Heap* h);
void tiny_heap_release(Heap* h);
void tiny_heap_adopt(Heap* h);
uint32_t tiny_cap_for(const Heap* h, uint32_t c);
// The ceiling of class c's magazine before any round raised it.
uint32_t tiny_base_ceiling(uint32_t c);

// Pool tier (pool.cc).
void* pool_malloc_slow(Heap* h, uint32_t c);
void pool_free(Heap* h, void* p, PageDesc* pg);
void pool_flush(Heap* h, uint32_t c, uint32_t keep);
// heap_trim_idle's flush of a pool magazine the thread stopped using: its blocks go back to
// their pages and its ceiling back to the base one.
void pool_flush_idle(Heap* h, uint32_t c);
uint32_t pool_cap(uint32_t c);

// Bundle tier (bundle.cc).
// `coloured`: the block starts at its run's colour (sizeclass.h); false for aligned requests,
// whose run starts on a multiple of `align_units` units (arena_bundle_alloc).
void* bundle_malloc_slow(Heap* h, uint32_t units, bool coloured = true, bool* zero = nullptr,
                         uint32_t align_units = 1);
void bundle_free(Heap* h, void* p);
void bundle_flush_all(Heap* h);
size_t bundle_usable(const void* p, bool* ok);

// Whale tier (whale.cc). `align` is a power of two; *fresh says the memory is zero.
// `system`: a mapping of its own, straight from the OS and back to it at free (never cached).
// `prewarm_rule`: a site rule's prewarm (0 off, 1 on) over the whale.prewarm knob; -1 = knob.
void* whale_malloc(Heap* h, size_t n, size_t align, bool* fresh, bool system = false, int prewarm_rule = -1);
void whale_free(Heap* h, void* p, const char* what);
// realloc of a live whale to n bytes (n > its usable size) by growing its mapping: no copy,
// no refault of its pages. Returns the (possibly moved) pointer, or nullptr when it cannot
// (the block is unchanged and the caller copies).
void* whale_realloc_grow(Heap* h, void* p, size_t n);
// realloc of a live whale to n bytes (n < its usable size) in place: the whole chunks past
// what n needs become a cached whale of their own (reused without a fault, joined to the
// block again when it is freed, returned to the OS by the cache's policy), nothing is
// copied. False, changing nothing, when less than a chunk would come free, or for an
// aligned or a system block. realloc asks only below half of the block (malloc.cc).
bool whale_realloc_shrink(Heap* h, void* p, size_t n);
size_t whale_usable(const void* p, bool* ok);
bool whale_trim();
void whale_decay(uint64_t now, bool force);
// Cross-tier reuse: the first chunk of the smallest cached whale mapping of at least a
// chunk, for an arena that would otherwise map a new one. Its pages are resident (and not
// zero); it leaves the page map and the whale figures; the rest of the mapping stays cached
// as a whale of its own when it can serve one, else is unmapped. *freed_ns: when the
// mapping was freed (its age goes with it). nullptr when none.
void* whale_cache_take_chunk(uint64_t* freed_ns);
// Applies a lowered whale.cache_bytes / whale.decay_ms to the cache at once (no lock held).
void whale_apply_knobs();

}  // namespace hakmem
