// Tiny tier slow paths: magazine refill from the heap's slabs, flush back to them, frees
// from other threads (pushed onto the slab's MPSC stack, the owner told once through its
// ready list), and the thread-exit hand-back. The fast paths are inline in malloc.cc.
#include <errno.h>

#include "arena.h"
#include "control.h"
#include "heap.h"
#include "os.h"

namespace hakmem {

using proto::Tier;
using proto::ThreadCounter;

namespace {

void avail_push(Heap* h, PageDesc* pg) {
  PageDesc*& head = h->tiny_avail[pg->cls];
  pg->prev = nullptr;
  pg->next = head;
  if (head) head->prev = pg;
  head = pg;
  pg->in_avail = 1;
}

void avail_unlink(Heap* h, PageDesc* pg) {
  if (pg->prev) pg->prev->next = pg->next; else h->tiny_avail[pg->cls] = pg->next;
  if (pg->next) pg->next->prev = pg->prev;
  pg->next = pg->prev = nullptr;
  pg->in_avail = 0;
}

bool page_exhausted(const PageDesc* pg) {
  return pg->free == nullptr && pg->carved + pg->block_size > kPageSize;
}

// An empty slab goes back to the arena unless it is the only one its class has left
// (keeping one avoids a page round trip per refill in malloc/free ping-pong).
void page_maybe_release(Heap* h, PageDesc* pg, bool force) {
  if (pg->used != 0) return;
  if (!force && h->tiny_avail[pg->cls] == pg && pg->next == nullptr) return;
  if (pg->in_avail) avail_unlink(h, pg);
  arena_page_release(pg);
}

PageDesc* page_new(Heap* h, uint32_t c) {
  PageDesc* pg = arena_page_alloc(h->shard, h->knob_tiny_prewarm, proto::Tier::Tiny);
  if (!pg) return nullptr;
  page_set_block_size(pg, kTinyClassSize[c]);
  pg->cls = static_cast<uint8_t>(c);
  pg->cls_x8 = static_cast<uint8_t>(c * 8);
  pg->kind = kPageTiny;
  pg->owner = h;
  avail_push(h, pg);
  return pg;
}

// Returns a chain of blocks to their slabs (all owned by h).
void return_chain(Heap* h, Block* b) {
  while (b) {
    Block* next = b->next;
    PageDesc* pg = page_desc_of(b);
    b->next = pg->free;
    pg->free = b;
    pg->used--;
    if (!pg->in_avail) avail_push(h, pg);
    page_maybe_release(h, pg, false);
    b = next;
  }
}

// Moves every block that other threads freed into our slabs back to the slabs' free lists.
void drain_ready(Heap* h) {
  PageDesc* pg = h->ready.take_all();
  while (pg) {
    // Read the link before draining: once the stack is empty a remote free may requeue pg.
    PageDesc* next = pg->ready_next;
    // The chain is spliced in front of the free list whole, with one write: its tail and
    // length come with it, so no block's line is read back from the core that freed it.
    const auto chain = pg->remote.take_all();
    if (chain.head) {
      chain.tail->next = pg->free;
      pg->free = chain.head;
      pg->used -= chain.n;
    }
    if (!pg->in_avail) avail_push(h, pg);
    page_maybe_release(h, pg, false);
    pg = next;
  }
}

// Fresh blocks carved per refill, at most (32 KiB: 2048 blocks of 16 B, 32 of 1 KiB).
constexpr size_t kTinyCarveBytes = 32 * 1024;

// Adaptive capacity, in blocks of each class for `bytes` of them (16 to `most` blocks): a
// table, so that the full-magazine free divides nothing.
struct CapTable {
  uint32_t v[kTinyClasses];
  constexpr explicit CapTable(size_t bytes, size_t most = 4096) : v{} {
    for (uint32_t c = 0; c < kTinyClasses; c++) {
      const size_t m = bytes / kTinyClassSize[c];
      v[c] = m < 16 ? 16 : (m > most ? static_cast<uint32_t>(most) : static_cast<uint32_t>(m));
    }
  }
};
constexpr CapTable kMissCap(32 * 1024), kMaxCap(128 * 1024), kBoostCap(512 * 1024, 16384);
// Misses (an empty magazine) double it up to 32 KiB of blocks per class: a refill's worth
// is then 16 KiB, plenty to amortise one. Frees that find it full double it further, up to
// the ceiling, 128 KiB: a magazine that holds a program's whole working set of a class
// (thousands of live small strings) spares it a flush and a refill per object. A thread
// that only allocates (a producer whose blocks other threads free) misses on every refill
// but never overflows, so it stays at the lower bound; with one ceiling of 128 KiB such a
// thread kept up to two idle slabs per class (xmalloc: 48 slabs, peak RSS 5.8 MiB against
// 5.0).
//
// A thread whose frees overflowed the magazine at its ceiling and that then misses, coming
// back for the blocks, is building and freeing a structure bigger than the ceiling round
// after round (a request's tree, a compiler's function). Such a miss raises the ceiling
// so that the last round fits, up to 512 KiB and 16,384 blocks (raise_ceiling): past the
// ceiling, every free went to the slabs one by one and half the round was flushed back
// from the magazine, and each round then cost 1.3-1.7 times mimalloc's. A bigger round
// gets the base ceiling back: a magazine hands its blocks out in the reverse order of
// their frees, which for a round freed in scattered order wanders over all of it, and
// beyond about half this machine's 1 MiB L2 that cost more than refilling slab by slab
// (12,000 x 64 B: 12.5 ns a pair against 11.1); and a bigger magazine only makes the flush
// of a teardown bigger. A single teardown followed by nothing never raises it, and
// heap_trim_idle lowers it again once the thread stops using the class, so what a sleeping
// thread's magazine can hold grows only for a round it repeated.
uint32_t tiny_miss_cap(uint32_t c) { return kMissCap.v[c]; }
uint32_t tiny_max_cap(const Heap* h, uint32_t c) { return h->tiny_ceiling[c]; }
// The last round took a magazine at the ceiling and tiny_direct frees past it: the ceiling
// becomes the smallest doubling of the base one that holds such a round. A round too big
// for kBoostCap gets the base ceiling back, so that its teardown's flush stays small.
void raise_ceiling(Heap* h, uint32_t c) {
  const uint64_t round = uint64_t{h->tiny_ceiling[c]} + h->tiny_direct[c];
  h->tiny_ceiling[c] = ceiling_for_round(round, kMaxCap.v[c], kBoostCap.v[c]);
}

// Whether a full magazine of class c sends frees to the slabs rather than growing: it is in
// a teardown's bypass (capacity 0), fixed by tiny.cap, or at its ceiling.
bool magazine_at_ceiling(const Heap* h, const Magazine& m, uint32_t c) {
  return m.cap == 0 || h->knob_tiny_cap || m.cap >= tiny_max_cap(h, c);
}

}  // namespace

uint32_t tiny_base_ceiling(uint32_t c) { return kMaxCap.v[c]; }

uint32_t tiny_cap_for(const Heap* h, uint32_t c) {
  if (h->knob_tiny_cap) return h->knob_tiny_cap;
  uint32_t m = kMaxCap.v[c];
  return m < 16 ? m : 16;  // adaptive: start small, grow on misses and full frees
}

void* tiny_malloc_slow(Heap* h, uint32_t c) {
  if (h == &g_empty_heap) {
    h = heap_get_slow();
    if (!h) return nullptr;
  }
  Magazine& m = h->tiny[c];
  heap_tick(h);  // every refill is a slow path anyway: a chance to see knob changes
  if (!m.head) {
    thread_count(&h->ctl, Tier::Tiny, ThreadCounter::Misses, 1);
    // Frees past the magazine's ceiling since the last miss, and now a miss: a round bigger
    // than the ceiling (see kBoostCap).
    if (m.cap == 0) h->tiny_direct[c] += h->delay_pos;  // see bypass_start
    if (h->tiny_direct[c] != 0 && !h->knob_tiny_cap) {
      raise_ceiling(h, c);
      if (m.cap > tiny_max_cap(h, c)) m.set_cap(tiny_max_cap(h, c));  // empty: nothing to flush
    }
    h->tiny_direct[c] = 0;
    tiny_drain_delayed(h);
    // The refill ends a teardown's bypass (tiny_free_full): the capacity comes back as it
    // was, the knob's or the ceiling, so that a slab's whole free list fits in one step.
    if (m.cap == 0) m.set_cap(h->knob_tiny_cap ? h->knob_tiny_cap : tiny_max_cap(h, c));
    // Adaptive capacity: a class that misses again gets a bigger magazine.
    if (!h->knob_tiny_cap && m.cap < tiny_miss_cap(c)) m.set_cap(doubled(m.cap, tiny_miss_cap(c)));
    uint32_t want = h->knob_tiny_prewarm ? m.cap : (m.cap + 1) / 2;
    if (want == 0) want = 1;
    // Blocks already free are taken up to `want`; fresh ones are carved only up to
    // kTinyCarveBytes per refill (unless tiny.prewarm asks for full magazines): a thread
    // that only allocates misses on every refill, and fresh blocks carved ahead of need sit
    // touched and idle.
    const uint32_t carve = refill_carve(h->tiny_refilled, c, kTinyCarveBytes, kTinyClassSize[c]);
    const uint32_t carve_want = h->knob_tiny_prewarm || want < carve ? want : carve;
    drain_ready(h);
    uint32_t got = 0;
    while (got < want) {
      PageDesc* pg = h->tiny_avail[c];
      if (!pg) {
        pg = page_new(h, c);
        if (!pg) break;
      }
      // An empty magazine takes a slab's whole free list in one step when it fits: the
      // blocks already carry their free cookies, so nothing is touched per block (this is
      // the common refill after other threads freed a slab's blocks).
      if (m.count() == 0 && pg->free) {
        uint32_t len = pg->nblocks - pg->used;  // every carved block not out is on `free`
        if (len <= m.cap) {
          m.head = pg->free;
          m.set_count(len);
          pg->free = nullptr;
          pg->used += len;
          got += len;
        }
      }
      page_take_blocks(pg, m, want, got, carve_want);
      if (page_exhausted(pg)) avail_unlink(h, pg);
      else if (got >= carve_want && !pg->free) break;  // enough fresh blocks for now
    }
    if (!m.head) {
      errno = ENOMEM;
      return nullptr;
    }
  }
  Block* b = m.pop();
  slot_add(h->ctl.slot->tiny_class_allocs[c], 1);
  return b;
}

void tiny_flush(Heap* h, uint32_t c, uint32_t keep) {
  uint32_t n;
  Block* chain = h->tiny[c].split_after(keep, &n);
  return_chain(h, chain);
}

void tiny_flush_idle(Heap* h, uint32_t c) {
  tiny_flush(h, c, 0);
  h->tiny_ceiling[c] = kMaxCap.v[c];
  Magazine& m = h->tiny[c];
  if (!h->knob_tiny_cap && m.cap > kMaxCap.v[c]) m.set_cap(kMaxCap.v[c]);
}

void tiny_free_slow(Heap* h, void* p, PageDesc* pg) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (pg->kind == kPagePool) return pool_free(h, p, pg);
  if (pg->kind != kPageTiny || !page_block_ok(pg, a)) {
    // A block start of a page that went back to the arena once all its blocks were freed
    // (its layout stays until the page is lent again): a second free of one of them.
    if (pg->kind == kPageFree && page_block_ok(pg, a)) control_report_double_free("free", p);
    else control_report_invalid_free("free", p);
    return;
  }
  Block* b = static_cast<Block*>(p);
  if (b->cookie == block_cookie(b)) {
    control_report_double_free("free", p);
    return;
  }
  uint32_t c = pg->cls;
  if (pg->owner != h) {
    // Another thread's slab (or ours, seen from the empty heap after teardown).
    if (h != &g_empty_heap) thread_count(&h->ctl, Tier::Tiny, ThreadCounter::RemoteFrees, 1);
    slot_add(h->ctl.slot->tiny_class_frees[c], 1);
    b->cookie = block_cookie(b);
    Heap* owner = pg->owner;
    if (pg->remote.push(b)) owner->ready.push(pg);
    return;
  }
  Magazine& m = h->tiny[c];
  if (m.full()) return tiny_free_full(h, b, pg, m);
  m.push(b);
  slot_add(h->ctl.slot->tiny_class_frees[c], 1);
}

namespace {

// A push that made pg new to the avail list, or empty.
__attribute__((noinline)) void slab_pushed_rare(Heap* h, PageDesc* pg) {
  if (!pg->in_avail) avail_push(h, pg);
  if (pg->used == 0) {
    page_maybe_release(h, pg, false);
    // A thread that only frees never ticks: the decay thread must return the pages that
    // empty here (it starts once 8 MiB are cached). Nothing is half-done at this point,
    // should starting it allocate.
    decay_thread_maybe_start();
  }
}

// A free past a full magazine at its ceiling, finished: the double-free check and the push
// onto the block's slab.
__attribute__((always_inline)) inline void free_to_slab(Heap* h, Block* b, PageDesc* pg) {
  // The cookie is computed once: the secret is not loaded again after the counter's store,
  // which might alias it (two instructions fewer per teardown free).
  const uintptr_t cookie = block_cookie(b);
  if (__builtin_expect(b->cookie == cookie, 0)) return control_report_double_free("free", b);
  slot_add(h->ctl.slot->tiny_class_frees[pg->cls], 1);
  page_free_push(pg, b, cookie);
  if (__builtin_expect(!pg->in_avail || pg->used == 0, 0)) slab_pushed_rare(h, pg);
}

// Puts a bypass free, whose line was just requested, in the ring, and finishes the one it
// replaces (see tiny_free_full).
__attribute__((always_inline)) inline void free_delayed(Heap* h, Block* b, PageDesc* pg) {
  Heap::Delayed& d = h->delay[h->delay_pos++ % kDelaySlots];
  const Heap::Delayed old = d;
  d = {b, pg};
  if (old.b) free_to_slab(h, old.b, old.pg);
}

// Starts a teardown's bypass. Once the thread has freed a whole magazine's worth more than
// it allocated since its last refill, it is tearing something down: the magazine goes back
// to the slabs too, and stays out of the way (capacity 0) until the next refill. Kept, its
// blocks would sit one in nearly every slab of a structure freed in scattered order, and no
// slab could empty while the thread sleeps (heap_trim_idle needs the thread to run).
// The bypass frees are not counted one by one: tiny_direct[c] becomes its count less the
// ring's position, and the refill that ends the bypass adds the position back (an
// overcount when several classes are torn down at once, which only errs towards the base
// ceiling).
void bypass_start(Heap* h, uint32_t c) {
  tiny_flush(h, c, 0);
  h->tiny[c].set_cap(0);
  h->tiny_direct[c] -= h->delay_pos;
  decay_thread_maybe_start();
}

// A full magazine below its ceiling grows (see tiny_miss_cap).
__attribute__((noinline)) void grow_and_push(Heap* h, Block* b, uint32_t c) {
  if (b->cookie == block_cookie(b)) return control_report_double_free("free", b);
  slot_add(h->ctl.slot->tiny_class_frees[c], 1);
  Magazine& m = h->tiny[c];
  m.set_cap(doubled(m.cap, tiny_max_cap(h, c)));
  m.push(b);
}

// tiny_free_full past the bypass: a magazine to grow, or one at its ceiling, whose frees go
// to the slabs and are counted (tiny_direct): a whole magazine's worth of them starts the
// bypass, and the next refill reads the size of the round from the count (raise_ceiling).
// Such a free is checked at once, not delayed as in the bypass: this magazine still holds
// blocks that mallocs take without a refill, and a second free of one of them must be
// seen before a malloc hands it out again (the delayed check would then find it live and
// put it on its slab's free list).
__attribute__((noinline)) void free_full_decide(Heap* h, Block* b, PageDesc* pg, const Magazine& m) {
  const uint32_t c = pg->cls;
  if (!magazine_at_ceiling(h, m, c)) return grow_and_push(h, b, c);
  free_to_slab(h, b, pg);
  if (++h->tiny_direct[c] >= m.cap && m.cap != 0) bypass_start(h, c);
}

}  // namespace

void tiny_drain_delayed(Heap* h) {
  // Each slot is cleared before its free: free_to_slab may start the decay thread, whose
  // creation may allocate and so come back here.
  for (Heap::Delayed& d : h->delay) {
    if (Block* b = d.b) {
      d.b = nullptr;
      free_to_slab(h, b, d.pg);
    }
  }
}

void tiny_free_full(Heap* h, Block* b, PageDesc* pg, const Magazine& m) noexcept {
  // At its ceiling, a full magazine sends the block straight back onto its slab, as if the
  // magazine were not there: a free-heavy phase (a big structure torn down, a round bigger
  // than the ceiling) then costs one push per block, where flushing half the magazine
  // walked every block's line twice more (perl dropping a hash of a million strings took
  // half as long again as with glibc). In a teardown's bypass (capacity 0), the common case
  // and tested first, the block is cold (a structure freed in whatever order), and the
  // double-free check's load would hold every later instruction until its line arrives: a
  // few frees in flight at most. So the line is requested now and the free is finished
  // kDelaySlots frees later, by when it is here, and the misses of many frees overlap (a
  // million blocks freed in scattered order: 85 ns per free -> 48, medians of 5; in
  // allocation order the same 8 ns). The block waits on no list and cannot be handed out
  // meanwhile. A second free of it is seen once the first one finishes and the block
  // carries its cookie: at most kDelaySlots frees or one refill later, as anything that
  // gives the magazine a capacity again drains the ring first. Only the bypass delays: its
  // magazine is empty, where one at its ceiling still holds blocks that mallocs take
  // without a refill (free_full_decide). debug.abort_on_error wants the abort at the
  // faulty free, so it turns the delay off.
  if (__builtin_expect(m.cap == 0 && !h->knob_abort_on_error, 1)) {
    __builtin_prefetch(b, 1);
    return free_delayed(h, b, pg);
  }
  free_full_decide(h, b, pg, m);
}

void tiny_heap_release(Heap* h) {
  tiny_drain_delayed(h);
  for (uint32_t c = 0; c < kTinyClasses; c++) tiny_flush(h, c, 0);
  drain_ready(h);
  for (uint32_t c = 0; c < kTinyClasses; c++) {
    for (PageDesc* pg = h->tiny_avail[c], *next; pg; pg = next) {
      next = pg->next;
      page_maybe_release(h, pg, true);
    }
  }
}

void tiny_heap_adopt(Heap* h) { drain_ready(h); }

}  // namespace hakmem
