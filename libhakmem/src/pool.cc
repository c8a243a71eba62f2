// Pool tier (1 KiB .. 32 KiB): 64 KiB pages carved into one class each, shared by all the
// threads of a shard under a per-(shard, class) lock padded to a cache line. A small
// per-thread bin per class in front (Heap::pool) makes the common malloc/free pair
// lock-free; bins refill and flush in batches.
#include <errno.h>

#include "arena.h"
#include "control.h"
#include "fastpath.h"
#include "heap.h"
#include "lock.h"

namespace hakmem {

using proto::Tier;
using proto::ThreadCounter;

namespace {

struct alignas(64) PoolShard {
  PageDesc* avail;  // pages of this shard and class with free or uncarved blocks
};
constinit PoolShard g_pool[kShards][kPoolClasses]{};

// The shard's lock, in the fork lock table (heap.h).
Mutex& lock_of(const PoolShard& s) { return (&g_fork_locks.pool[0][0])[&s - &g_pool[0][0]]; }

void avail_push(PoolShard& s, PageDesc* pg) {
  pg->prev = nullptr;
  pg->next = s.avail;
  if (s.avail) s.avail->prev = pg;
  s.avail = pg;
  pg->in_avail = 1;
}

void avail_unlink(PoolShard& s, PageDesc* pg) {
  if (pg->prev) pg->prev->next = pg->next; else s.avail = pg->next;
  if (pg->next) pg->next->prev = pg->prev;
  pg->next = pg->prev = nullptr;
  pg->in_avail = 0;
}

// Fresh blocks carved per refill, at most (one block at least).
constexpr uint32_t kPoolCarveBytes = 16 * 1024;

}  // namespace

// A thread's magazine of a pool class holds 128 KiB of blocks (4 to 32). A full one at its
// ceiling flushes half to the pages, under the shard lock, and a refill takes half back: a
// lock and a walk every 16 blocks of 4 KiB. A thread that builds and frees more than that
// round after round (each round's frees flush, then its mallocs refill) gets its ceiling
// raised at the refill to hold the round, up to 1 MiB of blocks (4 to 1024): rounds of 200
// blocks of 4 KiB took 23.8 ns a malloc+free pair, 10.8 with the whole round cached
// (tcmalloc 10.2, mimalloc 24.7). A bigger round gets the base ceiling back: a magazine
// hands its blocks out in the reverse order of their frees, which wanders over the whole
// round, and 1 MiB magazines made 8000 x 2 KiB rounds slower (32.9 -> 46.5 ns), as in the
// tiny tier. heap_trim_idle lowers the ceiling again once the class goes unused.
uint32_t pool_cap(uint32_t c) {
  uint32_t n = static_cast<uint32_t>((128 * 1024) / pool_class_size(c));
  return n < 4 ? 4 : (n > 32 ? 32 : n);
}

namespace {

uint32_t pool_boost_cap(uint32_t c) {
  uint32_t n = static_cast<uint32_t>((1024 * 1024) / pool_class_size(c));
  return n < 4 ? 4 : (n > 1024 ? 1024 : n);
}

// The last round took a magazine at the ceiling and pool_spilled blocks past it: the
// ceiling becomes the smallest doubling of the base one that holds such a round. A round
// too big for pool_boost_cap gets the base ceiling back.
void raise_ceiling(Heap* h, uint32_t c) {
  const uint64_t round = uint64_t{h->pool_ceiling[c]} + h->pool_spilled[c];
  const uint32_t ceiling = ceiling_for_round(round, pool_cap(c), pool_boost_cap(c));
  h->pool_ceiling[c] = ceiling;
  Magazine& m = h->pool[c];  // empty: lowering its capacity flushes nothing
  if (m.cap > ceiling) m.set_cap(ceiling);
}

}  // namespace

void pool_flush_idle(Heap* h, uint32_t c) {
  pool_flush(h, c, 0);
  h->pool_ceiling[c] = pool_cap(c);
  if (h->pool[c].cap > pool_cap(c)) h->pool[c].set_cap(pool_cap(c));
}

void* pool_malloc_slow(Heap* h, uint32_t c) {
  if (h == &g_empty_heap) {
    h = heap_get_slow();
    if (!h) return nullptr;
  }
  Magazine& m = h->pool[c];
  if (!m.head) {
    thread_count(&h->ctl, Tier::Pool, ThreadCounter::Misses, 1);
    if (h->pool_spilled[c] != 0) {
      raise_ceiling(h, c);
      h->pool_spilled[c] = 0;
    }
    if (m.cap == 0) m.set_cap(pool_cap(c));
    uint32_t want = (m.cap + 1) / 2;
    const uint32_t bs = pool_class_size(c);
    // Fresh blocks: at most 16 KiB of them per refill (one at least), unless pool.prewarm
    // asks for full magazines. Each carved block's first line is written, so every block
    // carved ahead of need is a page fault the program may never need: the first 4 KiB
    // malloc carved 16 blocks, 16 pages (git status: 103 of its 403 faults).
    const uint32_t carve = refill_carve(h->pool_refilled, c, kPoolCarveBytes, bs);
    const uint32_t carve_want = h->knob_pool_prewarm || want < carve ? want : carve;
    PoolShard& s = g_pool[h->shard][c];
    LockGuard g(lock_of(s));
    uint32_t got = 0;
    while (got < want) {
      PageDesc* pg = s.avail;
      if (!pg) {
        pg = arena_page_alloc(h->shard, h->knob_pool_prewarm, proto::Tier::Pool);
        if (!pg) break;
        page_set_block_size(pg, bs);
        pg->cls = static_cast<uint8_t>(c);
        pg->shard = h->shard;
        pg->kind = kPagePool;
        avail_push(s, pg);
      }
      page_take_blocks(pg, m, want, got, carve_want);
      if (!pg->free && pg->carved + bs > kPageSize) avail_unlink(s, pg);
      else if (got >= carve_want && !pg->free) break;  // enough fresh blocks for now
    }
    if (!m.head) {
      errno = ENOMEM;
      return nullptr;
    }
  }
  Block* b = m.pop();
  thread_count(&h->ctl, Tier::Pool, ThreadCounter::Allocs, 1);
  thread_count(&h->ctl, Tier::Pool, ThreadCounter::AllocBytes, pool_class_size(c));
  return b;
}

void pool_flush(Heap* h, uint32_t c, uint32_t keep) {
  uint32_t n;
  Block* b = h->pool[c].split_after(keep, &n);
  PoolShard* locked = nullptr;
  while (b) {
    Block* next = b->next;
    PageDesc* pg = page_desc_of(b);
    PoolShard* s = &g_pool[pg->shard][c];
    if (s != locked) {
      if (locked) lock_of(*locked).unlock();
      lock_of(*s).lock();
      locked = s;
    }
    b->next = pg->free;
    pg->free = b;
    pg->used--;
    if (!pg->in_avail) avail_push(*s, pg);
    // An empty page goes back to the arena unless it is the shard's last one.
    if (pg->used == 0 && !(s->avail == pg && pg->next == nullptr)) {
      avail_unlink(*s, pg);
      arena_page_release(pg);
    }
    b = next;
  }
  if (locked) lock_of(*locked).unlock();
}

namespace {

// A freed block into the thread's magazine of its class, counted. Pre-condition: room.
void cache_push(Heap* h, Block* b, const PageDesc* pg) {
  h->pool[pg->cls].push(b);
  thread_count(&h->ctl, Tier::Pool, ThreadCounter::Frees, 1);
  thread_count(&h->ctl, Tier::Pool, ThreadCounter::FreeBytes, pg->block_size);
  if (pg->shard != h->shard) thread_count(&h->ctl, Tier::Pool, ThreadCounter::RemoteFrees, 1);
}

}  // namespace

// free() of a pool block. The common case, room in the thread's magazine, is a push and two
// counts: none of free_slow's errno save, heap attach or tier dispatch. Everything else (an
// interior or foreign pointer, a double free, a full magazine, the empty heap, whose pool
// magazines have no capacity) goes the general way.
__attribute__((noinline)) void pool_free_local(Heap* h, void* p, PageDesc* pg) noexcept {
  Block* b = static_cast<Block*>(p);
  const Magazine& m = h->pool[pg->cls];
  if (HK_LIKELY(page_block_ok(pg, reinterpret_cast<uintptr_t>(p)) && b->cookie != block_cookie(b) &&
                m.room != 0))
    return cache_push(h, b, pg);
  free_slow(p, kMapSmall);
}

void pool_free(Heap* h, void* p, PageDesc* pg) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (!page_block_ok(pg, a)) {
    control_report_invalid_free("free", p);
    return;
  }
  Block* b = static_cast<Block*>(p);
  if (b->cookie == block_cookie(b)) {
    control_report_double_free("free", p);
    return;
  }
  if (h == &g_empty_heap) {
    // No thread cache (before attach or after teardown): straight back to the page.
    PoolShard& s = g_pool[pg->shard][pg->cls];
    LockGuard g(lock_of(s));
    page_free_push(pg, b);
    if (!pg->in_avail) avail_push(s, pg);
    return;
  }
  uint32_t c = pg->cls;
  Magazine& m = h->pool[c];
  if (m.cap == 0) m.set_cap(pool_cap(c));
  if (m.full()) {
    if (m.cap < h->pool_ceiling[c]) {
      m.set_cap(doubled(m.cap, h->pool_ceiling[c]));  // see pool_cap
    } else {
      const uint32_t keep = m.cap / 2;
      h->pool_spilled[c] += m.count() - keep;
      pool_flush(h, c, keep);
      // Pages may have gone back to the arena; a thread that only frees never ticks, so the
      // decay thread must return them (it starts once 8 MiB are cached).
      decay_thread_maybe_start();
    }
  }
  cache_push(h, b, pg);
}

}  // namespace hakmem
