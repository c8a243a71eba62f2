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

namespace {


}  // namespace

uint32_t bundle_bin_cap(uint32_t units) { return units <= 8 ? 8 : (units <= 32 ? 4 : 2); }

size_t bundle_usable(const void* p, bool* ok) {
  uint32_t u = bundle_run_units(p);
  *ok = u != 0;
  return size_t{u} * kUnitSize;
}

void* bundle_malloc_slow(Heap* h, uint32_t units) {
  if (h == &g_empty_heap) {
    h = heap_get_slow();
    if (!h) return nullptr;
  }
  Magazine& m = h->bundle[units - kBundleMinUnits];
  Block* b;
  if (m.head) {
    b = m.pop();
    h->bundle_bytes -= size_t{units} * kUnitSize;
  } else {
    thread_count(&h->ctl, Tier::Bundle, ThreadCounter::Misses, 1);
    b = static_cast<Block*>(arena_bundle_alloc(h->shard, units, h->knob_bundle_prewarm));
    if (!b) {
      errno = ENOMEM;
      return nullptr;
    }
    b->cookie = 0;  // a run freed earlier may still carry its free-block cookie
  }
  thread_count(&h->ctl, Tier::Bundle, ThreadCounter::Allocs, 1);
  thread_count(&h->ctl, Tier::Bundle, ThreadCounter::AllocBytes, size_t{units} * kUnitSize);
  return b;
}

void bundle_free(Heap* h, void* p) {
  uint32_t units = bundle_run_units(p);
  if (units == 0) {
    // A unit-aligned pointer to a free run is a double free; anything else is not ours.
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    const BundleChunk* ch = bundle_chunk_of(p);
    uint32_t u = static_cast<uint32_t>((a & kChunkMask) >> kUnitShift);
    if ((a & (kUnitSize - 1)) == 0 && u != 0 && ch->state[u] == kUnitFree)
      control_report_double_free("free", p);
    else
      control_report_invalid_free("free", p);
    return;
  }
  Block* b = static_cast<Block*>(p);
  if (b->cookie == block_cookie(b)) {
    control_report_double_free("free", p);
    return;
  }
  const size_t bytes = size_t{units} * kUnitSize;
  if (h != &g_empty_heap) {
    thread_count(&h->ctl, Tier::Bundle, ThreadCounter::Frees, 1);
    thread_count(&h->ctl, Tier::Bundle, ThreadCounter::FreeBytes, bytes);
    if (bundle_chunk_of(p)->arena != h->shard)
      thread_count(&h->ctl, Tier::Bundle, ThreadCounter::RemoteFrees, 1);
    Magazine& m = h->bundle[units - kBundleMinUnits];
    if (m.cap == 0) m.cap = bundle_bin_cap(units);
    if (!m.full() && h->bundle_bytes + bytes <= kBundleCacheBytes) {
      m.push(b);
      h->bundle_bytes += bytes;
      return;
    }
  }
  arena_bundle_free(p);
  decay_thread_maybe_start();
}

void bundle_flush_all(Heap* h) {
  for (uint32_t i = 0; i < kBundleBins; i++) {
    uint32_t n;
    Block* b = h->bundle[i].split_after(0, &n);
    while (b) {
      Block* next = b->next;
      arena_bundle_free(b);
      b = next;
    }
  }
  h->bundle_bytes = 0;
}

}  // namespace hakmem
