// Bundle tier (32 KiB .. 1 MiB): runs of 16 KiB units in huge-page-aligned 4 MiB chunks. A
// per-thread bin per run length (bounded to kBundleCacheBytes per thread) serves the
// malloc/free ping-pong of one size without a lock and without touching the OS: the memory
// stays mapped and resident, so reuse costs no page fault. Cold runs go back to the arena,
// whose decay returns whole huge pages.
#include <errno.h>

#include "arena.h"
#include "control.h"
#include "heap.h"

namespace hakmem {

using proto::Tier;
using proto::ThreadCounter;

size_t bundle_usable(const void* p, bool* ok) {
  uint32_t u = bundle_run_units(p);
  *ok = u != 0;
  return u ? bundle_block_bytes(p, u) : 0;
}

void* bundle_malloc_slow(Heap* h, uint32_t units, bool coloured, bool* zero, uint32_t align_units) {
  if (h == &g_empty_heap) {
    h = heap_get_slow();
    if (!h) return nullptr;
  }
  void* p;
  if (zero) *zero = false;
  // A cached run keeps the block it was taken with: an aligned request takes it only when
  // that block is aligned enough (one an aligned request freed), else a new run.
  const uint32_t bin = units - kBundleMinUnits;
  const uintptr_t align_mask = size_t{align_units} * kUnitSize - 1;
  // Runs other threads freed back to this shard's arena come into the bins first: a
  // producer whose consumers free its buffers then takes them back without the arena's
  // search, and its next mallocs of those sizes without a lock.
  if (h->bundle_count[bin] == 0 && arena_bundle_remote_waiting(h->shard)) arena_bundle_adopt_remote(h);
  if (h->bundle_count[bin] &&
      (coloured || (reinterpret_cast<uintptr_t>(bundle_bin_top(h, bin)) & align_mask) == 0)) {
    p = bundle_bin_pop(h, bin);
  } else {
    thread_count(&h->ctl, Tier::Bundle, ThreadCounter::Misses, 1);
    p = arena_bundle_alloc(h->shard, units, h->knob_bundle_prewarm, coloured, zero, align_units);
    if (!p) {
      errno = ENOMEM;
      return nullptr;
    }
  }
  thread_count(&h->ctl, Tier::Bundle, ThreadCounter::Allocs, 1);
  thread_count(&h->ctl, Tier::Bundle, ThreadCounter::AllocBytes, bundle_block_bytes(p, units));
  return p;
}

void bundle_free(Heap* h, void* p) {
  uint32_t units = bundle_run_units(p);
  if (units == 0) {
    // A block of a cached run, or a pointer at a colour offset into a free unit, is a double
    // free; anything else is not ours.
    const uintptr_t off = reinterpret_cast<uintptr_t>(p) & (kUnitSize - 1);
    const BundleChunk* ch = bundle_chunk_of(p);
    uint32_t u = bundle_unit_of(p);
    if ((off & 63) == 0 && off <= kColourMax && u != 0 &&
        (ch->state[u] == kUnitFree || ch->state[u] == head_state(kUnitCached, off)))
      control_report_double_free("free", p);
    else
      control_report_invalid_free("free", p);
    return;
  }
  const size_t bytes = bundle_block_bytes(p, units);
  bool remote = false;
  if (h != &g_empty_heap) {
    thread_count(&h->ctl, Tier::Bundle, ThreadCounter::Frees, 1);
    thread_count(&h->ctl, Tier::Bundle, ThreadCounter::FreeBytes, bytes);
    remote = bundle_chunk_of(p)->arena != h->shard;
    if (remote) thread_count(&h->ctl, Tier::Bundle, ThreadCounter::RemoteFrees, 1);
    if (bundle_bin_push(h, p, units)) return;
  }
  // A thread that frees what another shard's thread allocated (a consumer of its buffers)
  // leaves the run in that arena's remote stack: taking the arena's lock for each one, as
  // its producer takes it for each malloc, had the two cores pass the lock's line and the
  // chunk index to and fro (a fifth of the time in the lock, a tenth in a shared counter).
  if (remote) {
    if (arena_bundle_free_remote(p, units)) decay_thread_maybe_start();
    return;
  }
  arena_bundle_free(p);
  decay_thread_maybe_start();
}

void bundle_flush_all(Heap* h) {
  for (uint32_t i = 0; i < kBundleBins; i++)
    while (h->bundle_count[i]) arena_bundle_free(bundle_bin_pop(h, i));
}

}  // namespace hakmem
