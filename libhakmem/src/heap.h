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
#include "magazine.h"
#include "mpsc.h"
#include "sizeclass.h"

namespace hakmem {

inline constexpr uint32_t kShards = 4;          // pool/arena lock shards
// Tiny allocations of one class between two periodic checks (a power of two). At a few ns
// per operation a thread in a hot loop reaches the check well within a millisecond.
inline constexpr uint64_t kTickOps = 4096;
inline constexpr size_t kBundleCacheBytes = 2u << 20;  // per-thread bundle cache bound

struct Heap {
  Magazine tiny[kTinyClasses];   // hot: the tiny fast path touches only these, tick and ctl
  ThreadCtl ctl;
  Magazine pool[kPoolClasses];
  Magazine bundle[kBundleBins];  // index: units - kBundleMinUnits
  size_t bundle_bytes;           // bytes cached in `bundle`
  PageDesc* tiny_avail[kTinyClasses];  // owned slabs with free or uncarved blocks
  MpscStack<PageDesc, &PageDesc::ready_next> ready;  // owned slabs with remote frees
  uint32_t index;                // creation order; picks the shard
  uint8_t shard;
  uint8_t live;                  // owned by a running thread (0 = abandoned / empty heap)
  // Knob values cached by heap_refresh_knobs().
  uint32_t knob_tiny_cap;
  uint8_t knob_tiny_prewarm;
  uint8_t knob_pool_prewarm;
  uint8_t knob_bundle_prewarm;
  Heap* next_all;                // registry of every heap ever made
  Heap* next_abandoned;
};

extern Heap g_empty_heap __attribute__((visibility("hidden")));
extern constinit thread_local Heap* t_heap __attribute__((tls_model("initial-exec")));

// Slow-path helpers (init.cc).
// Returns the calling thread's heap, attaching one (and initialising the process) first if
// needed. nullptr only for a re-entrant call made while this thread initialises hakmem.
Heap* heap_get_slow();
// The periodic check: control_poll, knob refresh, decay. Resets the countdown.
void heap_tick(Heap* h);
void heap_refresh_knobs(Heap* h);
bool process_ready();

// Tiny tier (tiny.cc).
void* tiny_malloc_slow(Heap* h, uint32_t c);
void tiny_free_slow(Heap* h, void* p, PageDesc* pg);
void tiny_flush(Heap* h, uint32_t c, uint32_t keep);
void tiny_heap_release(Heap* h);
void tiny_heap_adopt(Heap* h);
uint32_t tiny_cap_for(const Heap* h, uint32_t c);

// Pool tier (pool.cc).
void* pool_malloc_slow(Heap* h, uint32_t c);
void pool_free(Heap* h, void* p, PageDesc* pg);
void pool_flush(Heap* h, uint32_t c, uint32_t keep);
uint32_t pool_cap(uint32_t c);
void pool_lock_all();
void pool_unlock_all();
void pool_reset_locks();

// Bundle tier (bundle.cc).
void* bundle_malloc_slow(Heap* h, uint32_t units);
void bundle_free(Heap* h, void* p);
void bundle_flush_all(Heap* h);
size_t bundle_usable(const void* p, bool* ok);
uint32_t bundle_bin_cap(uint32_t units);

// Whale tier (whale.cc). `align` is a power of two; *fresh says the memory is zero.
void* whale_malloc(Heap* h, size_t n, size_t align, bool* fresh);
void whale_free(Heap* h, void* p, const char* what);
size_t whale_usable(const void* p, bool* ok);
bool whale_trim();
void whale_decay(uint64_t now, bool force);
// Applies a lowered whale.cache_bytes / whale.decay_ms to the cache at once (no lock held).
void whale_apply_knobs();
void whale_lock_all();
void whale_unlock_all();
void whale_reset_locks();

}  // namespace hakmem
