// Whale tier (above 1 MiB): one mapping per block, aligned to the page-map chunk so the
// map can vouch for it. Freed mappings stay mapped and resident in a cache (whale.cache_bytes)
// and are reused without a page fault; mappings unused for whale.decay_ms are unmapped,
// which returns whole huge pages. Nothing on the reuse path calls madvise.
//
// Layout: [header page][colour][user data ...]: the user pointer is 4 KiB and a colour (or
// the alignment) past the chunk-aligned mapping start, and its header, at the end of the
// header page, is found from the pointer alone. The colour puts the block's first byte on
// page-offset line 2, 3, 4 or 5, as for bundle blocks (chunk.h): a program that walks a
// page-aligned block page by page writes every line of one L1 set, set 0, which holds the
// first line of every page-aligned structure, its own and ours. Measured on vm (a 2 MiB
// block written one byte per page, 15 alternating processes): 2,367 -> 2,165 ns/iter,
// glibc 2,143 (its block starts on line 10); with a fixed colour, twice, 2,400 -> 2,214
// and 2,768 -> 2,450 (glibc 2,235 and 2,589). No
// MADV_HUGEPAGE unless thp.enable=1: measured, it made first touches stall in compaction
// and kept sparse blocks 2 MiB-resident.
#include <errno.h>
#include <string.h>

#include "arena.h"
#include "control.h"
#include "heap.h"
#include "lock.h"
#include "os.h"

namespace hakmem {

using proto::GlobalCounter;
using proto::Tier;
using proto::ThreadCounter;

namespace {

constexpr size_t kWhaleHeader = 4096;
// The header sits at the end of its page, not at its start: page offset 0 is the L1 set of
// every page's first line, which a program walking a whale page by page evicts each time,
// and the header is read on every free and reuse.
constexpr size_t kWhaleHeaderOff = kWhaleHeader - 128;
constexpr uint32_t kWhaleShards = proto::kWhaleCacheShards;  // by log2 of the usable size

struct alignas(64) WhaleHeader {
  uintptr_t check;       // g_cookie_secret ^ user pointer ^ 1 while in use, ^ 2 while cached
  void* base;            // mapping start
  char* user;            // the pointer handed out
  size_t map_len;        // mapping length
  size_t usable;         // bytes from the user pointer to the end of the mapping
  uint64_t freed_ns;     // when it entered the cache
  WhaleHeader* next;     // cache list (most recently freed first)
  WhaleHeader* prev;
  uint8_t system;        // a site rule's tier=system block: never cached, unmapped at free
  uint8_t shrunk_tail;   // cached: the chunks a realloc shrink split off a live block, which
                         // that block takes back when it is freed (join_next)
};

struct alignas(64) WhaleShard {
  WhaleHeader* head;     // most recent
  WhaleHeader* tail;     // oldest
  // Changed only under the lock (a load and a store, no read-modify-write) and published
  // to the segment's whale_shard figures with it; read without the lock by the cap checks.
  std::atomic<size_t> cached;  // bytes of the mappings in the list
  std::atomic<uint64_t> hits;  // allocations served from the list
};
static_assert(sizeof(WhaleHeader) <= kWhaleHeader - kWhaleHeaderOff);
constinit WhaleShard g_whale[kWhaleShards]{};

// The shard's lock, in the fork lock table (heap.h).
Mutex& lock_of(const WhaleShard& s) { return g_fork_locks.whale[&s - g_whale]; }
// Bytes mapped for whales, in use or cached; changed only where the OS is called. In use:
// this less the shards' cached bytes. So the reuse path (a cached mapping handed out, or
// one freed into the cache) moves no shared counter: every read-modify-write there is a
// locked instruction, which waits for the stores the program made to the block first.
std::atomic<size_t> g_whale_mapped{0};

void mapped_add(int64_t delta) {
  g_whale_mapped.fetch_add(static_cast<size_t>(delta), std::memory_order_relaxed);
  control_add(Tier::Whale, GlobalCounter::MappedBytes, delta);
}

size_t cached_total() {
  size_t sum = 0;
  for (const WhaleShard& s : g_whale) sum += s.cached.load(std::memory_order_relaxed);
  return sum;
}

// Under the shard's lock: publishes the shard's figures.
void shard_publish(WhaleShard& s) {
  auto& fig = control_segment_ptr()->global.whale_shard[&s - g_whale];
  fig[proto::kWhaleShardCached].store(s.cached.load(std::memory_order_relaxed), std::memory_order_relaxed);
  fig[proto::kWhaleShardHits].store(s.hits.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

// Under the figure's shard lock.
template <typename T>
void shard_add(std::atomic<T>& figure, int64_t delta) {
  figure.store(figure.load(std::memory_order_relaxed) + static_cast<T>(delta), std::memory_order_relaxed);
}

// The cache holds at most whale.cache_bytes, and at most as much as is in use (but at
// least 64 MiB): freed whales of a program whose big blocks come and go stay hot, while a
// program that shrank does not keep its old peak resident. `leaving`: a mapping being freed,
// still counted in use.
// `cached`: cached_total(), read by the caller.
size_t cache_cap(size_t cached, size_t leaving) {
  size_t knob_cap = knob(proto::Knob::WhaleCacheBytes);
  const size_t mapped = g_whale_mapped.load(std::memory_order_relaxed);
  const size_t used = cached + leaving;
  size_t live = mapped > used ? mapped - used : 0;  // loads a moment apart: an estimate
  size_t cap = live > (size_t{64} << 20) ? live : (size_t{64} << 20);
  cap = 4 * cap;
  return cap < knob_cap ? cap : knob_cap;
}
size_t cache_cap() { return cache_cap(cached_total(), 0); }

uintptr_t live_check(const void* user) { return g_cookie_secret ^ reinterpret_cast<uintptr_t>(user) ^ 1; }
uintptr_t cached_check(const void* user) { return g_cookie_secret ^ reinterpret_cast<uintptr_t>(user) ^ 2; }

char* user_of(WhaleHeader* w) { return w->user; }

// The colour of a block whose mapping starts at `base`: a bundle unit's colour (chunk.h)
// taken by the mapping's chunk index, so it varies by position as theirs does.
size_t whale_colour(uintptr_t base) { return unit_colour(static_cast<uint32_t>(base >> kChunkShift)); }

// A plain mapping's user pointer is one header page and at most a colour past the mapping
// start (not placed for an alignment): it may grow in place, or give its first chunk to an
// arena. Its usable size leaves room for the largest colour whatever its own, so that it
// depends on the mapping's length alone: every block of a request size has the same one.
bool plain_lead(size_t lead) { return lead <= kWhaleHeader + kColourMax; }
bool plain(const WhaleHeader* w) { return plain_lead(static_cast<size_t>(w->user - static_cast<char*>(w->base))); }
// The mapping length for at least `need` usable bytes with the user pointer `lead` past its
// start, and the usable bytes of such a mapping `len` long.
size_t len_for(size_t lead, size_t need) {
  constexpr size_t kPage = 4096;
  return plain_lead(lead) ? kPage + ((need + kColourMax + kPage - 1) & ~(kPage - 1))
                          : lead + ((need + kPage - 1) & ~(kPage - 1));
}
size_t usable_for(size_t lead, size_t len) { return len - (plain_lead(lead) ? kWhaleHeader + kColourMax : lead); }

// Makes [start, end) (chunk-aligned start, a header page and more) a cached whale of its
// own, coloured, freed at `freed_ns`; its first page becomes the header page.
void cache_tail(uintptr_t start, uintptr_t end, uint64_t freed_ns, bool shrunk = false);
// In the mapping's first page when the user pointer is inside its first chunk, else in the
// page just below the (chunk-aligned) user pointer; at kWhaleHeaderOff in that page.
WhaleHeader* header_of(const void* p) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p), o = a & kChunkMask;
  return reinterpret_cast<WhaleHeader*>((o ? a - o : a - kWhaleHeader) + kWhaleHeaderOff);
}

uint32_t shard_of(size_t usable) {
  uint32_t lg = 63u - static_cast<uint32_t>(__builtin_clzll(usable));
  uint32_t s = lg > 20 ? lg - 20 : 0;
  return s < kWhaleShards ? s : kWhaleShards - 1;
}

// Links a cached entry as its shard's most recent. It belongs to the cache from then on.
void list_push(WhaleHeader* w) {
  WhaleShard& s = g_whale[shard_of(w->usable)];
  LockGuard g(lock_of(s));
  w->prev = nullptr;
  w->next = s.head;
  if (s.head) s.head->prev = w; else s.tail = w;
  s.head = w;
  shard_add(s.cached, static_cast<int64_t>(w->map_len));
  shard_publish(s);
}

// Under the shard's lock. `hit`: the entry serves an allocation.
void list_unlink(WhaleShard& s, WhaleHeader* w, bool hit = false) {
  if (w->prev) w->prev->next = w->next; else s.head = w->next;
  if (w->next) w->next->prev = w->prev; else s.tail = w->prev;
  w->next = w->prev = nullptr;
  shard_add(s.cached, -static_cast<int64_t>(w->map_len));
  if (hit) shard_add(s.hits, 1);
  shard_publish(s);
}

void unmap_whale(WhaleHeader* w) {
  void* base = w->base;
  size_t len = w->map_len;
  g_pagemap.clear_range(reinterpret_cast<uintptr_t>(base), len);
  os_unmap(base, len);
  control_add(Tier::Whale, GlobalCounter::OsUnmaps, 1);
  mapped_add(-static_cast<int64_t>(len));
}

// Unmaps cached entries (oldest first) of one shard while `pred` says so. The unmaps run
// after the lock is dropped.
template <typename Pred>
size_t evict(WhaleShard& s, Pred pred) {
  WhaleHeader* victims = nullptr;
  size_t bytes = 0;
  {
    LockGuard g(lock_of(s));
    while (s.tail && pred(s.tail)) {
      WhaleHeader* w = s.tail;
      list_unlink(s, w);
      w->check = 0;
      bytes += w->map_len;
      w->next = victims;
      victims = w;
    }
  }
  while (victims) {
    WhaleHeader* n = victims->next;
    unmap_whale(victims);
    victims = n;
  }
  return bytes;
}

// Splits a detached mapping that is far too big for `usable`: it keeps the chunks it needs
// and the rest, from the next chunk boundary, becomes a cached whale of its own (its first
// page the new header page). Nothing is unmapped, so a later request reuses those pages
// without a fault. No split when less than a chunk would be left over.
void split_tail(WhaleHeader* w, size_t usable, bool shrunk = false) {
  const uintptr_t base = reinterpret_cast<uintptr_t>(w->base), end = base + w->map_len;
  const size_t lead = static_cast<size_t>(w->user - static_cast<char*>(w->base));
  const uintptr_t split = (base + len_for(lead, usable) + kChunkMask) & ~kChunkMask;
  if (split + kChunkSize > end) return;
  w->map_len = split - base;
  w->usable = usable_for(lead, w->map_len);
  cache_tail(split, end, os_now_ns(), shrunk);
}

void cache_tail(uintptr_t start, uintptr_t end, uint64_t freed_ns, bool shrunk) {
  char* user = reinterpret_cast<char*>(start + kWhaleHeader + whale_colour(start));
  WhaleHeader* t = header_of(user);
  t->base = reinterpret_cast<void*>(start);
  t->user = user;
  t->map_len = end - start;
  t->usable = usable_for(kWhaleHeader, t->map_len);
  t->check = cached_check(user);
  t->system = 0;
  t->shrunk_tail = shrunk;
  t->freed_ns = freed_ns;
  g_pagemap.set(start, kMapWhaleHead);
  list_push(t);
}

// Grows a detached plain mapping so that at least `need` bytes follow the user pointer,
// keeping its pages: os_remap moves them with their page tables, so only the extension is
// new memory. Returns the header at its new place, or nullptr with the mapping unchanged.
WhaleHeader* grow(WhaleHeader* w, size_t need) {
  char* base = static_cast<char*>(w->base);
  const size_t lead = static_cast<size_t>(w->user - base);
  const size_t old_len = w->map_len, new_len = len_for(lead, need);
  int err = 0;
  // The old range leaves the page map before the move: once moved, another thread may map
  // memory of its own there at once, and a later clear would wipe its entries.
  g_pagemap.clear_range(reinterpret_cast<uintptr_t>(base), old_len);
  char* q = static_cast<char*>(os_remap(base, old_len, new_len, kChunkSize, &err));
  if (!q) {
    g_pagemap.set_range(reinterpret_cast<uintptr_t>(base), old_len, kMapWhaleHead, kMapWhaleTail);
    return nullptr;
  }
  g_pagemap.set_range(reinterpret_cast<uintptr_t>(q), new_len, kMapWhaleHead, kMapWhaleTail);
  WhaleHeader* nw = header_of(q + lead);  // the header moved with its page
  nw->base = q;
  nw->user = q + lead;
  nw->map_len = new_len;
  nw->usable = usable_for(lead, new_len);
  control_add(Tier::Whale, GlobalCounter::OsMaps, 1);
  mapped_add(static_cast<int64_t>(new_len - old_len));
  return nw;
}

// Detaches the largest cached plain mapping of the shards at or below `top` (the one that
// saves the most page faults when grown), or nullptr; *shard: the shard it came from.
WhaleHeader* take_largest(uint32_t top, uint32_t* shard) {
  for (uint32_t si = top + 1; si-- > 0;) {
    WhaleShard& s = g_whale[si];
    LockGuard g(lock_of(s));
    WhaleHeader* best = nullptr;
    for (WhaleHeader* w = s.head; w; w = w->next)
      if (plain(w) && (!best || w->usable > best->usable))
        best = w;
    if (best) {
      list_unlink(s, best);
      *shard = si;
      return best;
    }
  }
  return nullptr;
}

// Places the block of a detached mapping for a request aligned to at most a page: a colour
// past the header page, or on the page after it. Its header stays where it is (the lead
// stays below a chunk) and its usable size stays or grows. A mapping whose block is a chunk
// or more past its start (aligned to 4 MiB or more) keeps it there, aligned enough.
void place(WhaleHeader* w, bool coloured) {
  const uintptr_t base = reinterpret_cast<uintptr_t>(w->base);
  if (reinterpret_cast<uintptr_t>(w->user) - base >= kChunkSize) return;
  const size_t lead = kWhaleHeader + (coloured ? whale_colour(base) : 0);
  w->user = reinterpret_cast<char*>(base + lead);
  w->usable = usable_for(lead, w->map_len);
}

// Places the block of a detached mapping for a request aligned to more than a page and less
// than a chunk: `align` past its (chunk-aligned) start, inside its first chunk, so that its
// header stays where it is. Pre-condition: usable_for(align, w->map_len) is enough.
void place_aligned(WhaleHeader* w, size_t align) {
  w->user = static_cast<char*>(w->base) + align;
  w->usable = usable_for(align, w->map_len);
}

// A freed whale takes back the cached tail a realloc shrink split off it (the whale that
// starts where it ends, marked shrunk_tail), so that the pieces of one mapping do not stay
// apart: a program that shrinks a big block, frees it and asks for the big size again would
// otherwise grow a tail (new memory) while the freed pieces pile up in the cache (a loop
// of malloc(100 MiB), shrink to 30, free: peak RSS 268 MB instead of 104). The surplus a
// reuse splits off stays apart, as before: joining those too made bigblock take 14.9 k
// faults instead of 12.3 k (big joined mappings handed out whole to smaller requests). The
// neighbour is found in the lists, under their locks, not read through the page map: an
// entry another thread has just evicted may be unmapped at any moment. Pre-condition: w is
// the live whale being freed, plain, not a system one. True when it took one.
bool join_next(WhaleHeader* w) {
  const uintptr_t end = reinterpret_cast<uintptr_t>(w->base) + w->map_len;
  if (g_pagemap.get(end) != kMapWhaleHead) return false;
  WhaleHeader* t = nullptr;
  for (uint32_t si = 0; si < kWhaleShards && !t; si++) {
    WhaleShard& s = g_whale[si];
    LockGuard g(lock_of(s));
    for (WhaleHeader* c = s.head; c; c = c->next) {
      if (reinterpret_cast<uintptr_t>(c->base) == end && c->shrunk_tail && plain(c)) {
        list_unlink(s, c);
        t = c;
        break;
      }
    }
  }
  if (!t) return false;
  t->check = 0;
  g_pagemap.set(end, kMapWhaleTail);
  w->map_len += t->map_len;
  w->usable = usable_for(static_cast<size_t>(w->user - static_cast<char*>(w->base)), w->map_len);
  return true;
}

void enforce_cap() {
  size_t cap = cache_cap();
  for (uint32_t i = kWhaleShards; i-- > 0 && cached_total() > cap;) {
    evict(g_whale[i], [cap](WhaleHeader*) { return cached_total() > cap; });
  }
}

}  // namespace

void* whale_malloc(Heap* h, size_t n, size_t align, bool* fresh, bool system, int prewarm_rule) {
  *fresh = false;
  if (n > (size_t{1} << 46) || align > (size_t{1} << 40)) {
    errno = ENOMEM;
    return nullptr;
  }
  const size_t page = 4096;
  size_t usable = (n + page - 1) & ~(page - 1);
  if (usable == 0) usable = page;
  bool counted = h && h != &g_empty_heap;
  // Blocks are coloured (see the top of this file) unless aligned beyond a cache line.
  const bool coloured = align <= 64;
  // Reuse: the smallest cached mapping of the request's shard that is large enough, else
  // the most recent one of a larger shard (split when more than 9 times too big), else the
  // largest smaller one, grown (mremap); its block then placed as the request's alignment
  // wants (place, place_aligned). Reused pages stay resident: no page fault, no syscall but
  // the mremap of a growth. A mapping starts on a chunk, so any alignment below a chunk is
  // a matter of where in its first chunk the block goes: posix_memalign(2 MiB, 2 MiB), 50
  // live and freed 20 times over, mapped and faulted in every block, 15.5 us a call.
  // `at`: where an aligned block goes (0: a plain one, placed by place()).
  const size_t at = align > page ? align : 0;
  if (align < kChunkSize && !system && knob(proto::Knob::WhaleCacheBytes) > 0) {
    // The usable size a cached mapping would have once placed for this request. A plain
    // placement's depends on the length alone (len_for), whatever the mapping's last one
    // was; a block a chunk or more past its start stays there (place), and is no use to an
    // aligned request (its header and page-map head would have to move).
    auto fit = [at](const WhaleHeader* w) -> size_t {
      if (static_cast<size_t>(w->user - static_cast<char*>(w->base)) >= kChunkSize) return at ? 0 : w->usable;
      if (!at) return usable_for(kWhaleHeader, w->map_len);
      return w->map_len > at ? usable_for(at, w->map_len) : 0;
    };
    WhaleHeader* hit = nullptr;
    size_t hit_fit = 0;
    for (uint32_t si = shard_of(usable); si < kWhaleShards && !hit; si++) {
      WhaleShard& s = g_whale[si];
      LockGuard g(lock_of(s));
      for (WhaleHeader* w = s.head; w; w = w->next) {
        const size_t f = fit(w);
        if (f < n) continue;
        if (!hit || f < hit_fit) hit = w, hit_fit = f;
        if (si != shard_of(usable) || f - n <= usable / 4) break;
      }
      if (hit) list_unlink(s, hit, true);
    }
    // Growing is for plain blocks (an aligned one's placement would have to move).
    if (!hit && !at) {
      // Nothing large enough: grow the largest smaller one. Its pages are reused as they
      // are and only the extension faults in, instead of every page of a new mapping.
      uint32_t from = 0;
      hit = take_largest(shard_of(usable), &from);
      // Unless another thread cached a large enough one since the scan: that one is taken
      // whole (grown to the request, it would shrink).
      if (hit && hit->usable < n) {
        WhaleHeader* g = grow(hit, usable);
        if (!g) {
          // No address space to grow into: let the mapping go rather than cache it again.
          hit->check = 0;
          unmap_whale(hit);
        }
        hit = g;
      }
      if (hit) {
        WhaleShard& s = g_whale[from];
        LockGuard g(lock_of(s));
        shard_add(s.hits, 1);
        shard_publish(s);
      }
    }
    if (hit) {
      // A mapping more than 9 times too big leaves its surplus chunks in the cache. Below
      // that it is handed out whole: split pieces never join again, so a later big request
      // would have to grow a piece (faulting the rest in again) while the pieces sit cached.
      // Measured against splitting at 2 x: bigblock 26.3 k -> 12.0 k faults and 186 -> 130 MiB
      // peak RSS; mixed 44.6 k -> 42.9 k faults and 180 -> 173 MiB.
      if (at) place_aligned(hit, at);
      else place(hit, coloured);
      if (hit->usable > 9 * usable) split_tail(hit, usable);  // the tail is cached anew
      hit->check = live_check(user_of(hit));
      if (counted) {
        thread_count(&h->ctl, Tier::Whale, ThreadCounter::Allocs, 1);
        thread_count(&h->ctl, Tier::Whale, ThreadCounter::AllocBytes, hit->usable);
      }
      return user_of(hit);
    }
  }
  // Miss: a new mapping, chunk-aligned so the page map covers it alone. A plain mapping has
  // room for the largest colour; a coloured block's own depends on where the mapping lands.
  size_t lead = align > page ? align : page;  // user pointer offset from the base
  size_t len = len_for(lead, n);
  int err = 0;
  bool prewarm = prewarm_rule >= 0 ? prewarm_rule != 0 : knob(proto::Knob::WhalePrewarm) != 0;
  // With thp.enable the hint must come before any page is touched: then populate.
  const bool thp = knob(proto::Knob::ThpEnable) != 0;
  char* base = static_cast<char*>(os_map(len, kChunkSize, prewarm && !thp, &err));
  if (!base) {
    // Give back everything cached (whales, free arena memory) and try once more: a process
    // near its memory limit must not fail while we sit on freed memory.
    uint64_t now = os_now_ns();
    whale_decay(now, true);
    arena_decay(now, true);
    base = static_cast<char*>(os_map(len, kChunkSize, prewarm && !thp, &err));
  }
  if (!base) {
    errno = ENOMEM;
    return nullptr;
  }
  if (thp) {
    os_hugepage(base, len);
    control_add(Tier::Whale, GlobalCounter::Madvises, 1);
    if (prewarm) os_populate(base, len);
  }
  if (coloured) lead += whale_colour(reinterpret_cast<uintptr_t>(base));
  char* user = base + lead;
  WhaleHeader* w = header_of(user);
  w->base = base;
  w->user = user;
  w->map_len = len;
  w->usable = usable_for(lead, len);
  w->next = w->prev = nullptr;
  w->system = system ? 1 : 0;
  w->check = live_check(user);
  // The chunk holding the user pointer is the head; every other chunk is a tail.
  uintptr_t b = reinterpret_cast<uintptr_t>(base);
  g_pagemap.set_range(b, len, kMapWhaleTail, kMapWhaleTail);
  g_pagemap.set(reinterpret_cast<uintptr_t>(user), kMapWhaleHead);
  control_add(Tier::Whale, GlobalCounter::OsMaps, 1);
  mapped_add(static_cast<int64_t>(len));
  control_add(Tier::Whale, GlobalCounter::CacheMisses, 1);
  if (counted) {
    thread_count(&h->ctl, Tier::Whale, ThreadCounter::Misses, 1);
    thread_count(&h->ctl, Tier::Whale, ThreadCounter::Allocs, 1);
    thread_count(&h->ctl, Tier::Whale, ThreadCounter::AllocBytes, w->usable);
  }
  *fresh = true;
  return user;
}

// The header a pointer in a whale-head chunk would have, where reading it is safe: for a
// pointer inside the chunk the mapping starts at the chunk (the lead is below 4 MiB), so the
// chunk start is ours; a chunk-aligned user pointer (alignment >= 4 MiB) has its header in
// the lead just below, which is ours too. nullptr when p cannot be a whale pointer.
static WhaleHeader* whale_lookup(const void* p) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if ((a & 63) != 0 || (a & 4095) > kColourMax) return nullptr;
  return header_of(p);
}

void* whale_realloc_grow(Heap* h, void* p, size_t n) {
  bool ok;
  size_t old_usable = whale_usable(p, &ok);
  WhaleHeader* w = header_of(p);
  if (!ok || !plain(w) || n > (size_t{1} << 46)) return nullptr;
  WhaleHeader* g = grow(w, n);
  if (!g) return nullptr;
  g->check = live_check(user_of(g));  // the check covers the user pointer, which may have moved
  if (h && h != &g_empty_heap)
    thread_count(&h->ctl, Tier::Whale, ThreadCounter::AllocBytes, g->usable - old_usable);
  return user_of(g);
}

bool whale_realloc_shrink(Heap* h, void* p, size_t n) {
  bool ok;
  const size_t old_usable = whale_usable(p, &ok);
  WhaleHeader* w = header_of(p);
  if (!ok || !plain(w) || w->system || n >= old_usable) return false;
  const size_t old_len = w->map_len;
  split_tail(w, n, true);  // the tail's header page lies past n: bytes the caller gave up
  if (w->map_len == old_len) return false;
  if (h && h != &g_empty_heap)
    thread_count(&h->ctl, Tier::Whale, ThreadCounter::FreeBytes, old_usable - w->usable);
  // The tail is cached as a free of it would be: under the cache's bound and decay.
  const uint64_t now = os_now_ns();
  if (cached_total() > cache_cap()) enforce_cap();
  if (knob(proto::Knob::WhaleDecayMs) == 0) whale_decay(now, true);
  else decay_tick(now);
  decay_thread_maybe_start();
  return true;
}

size_t whale_usable(const void* p, bool* ok) {
  WhaleHeader* w = whale_lookup(p);
  *ok = w && w->check == live_check(p);
  return *ok ? w->usable : 0;
}

void whale_free(Heap* h, void* p, const char* what) {
  bool ok;
  size_t usable = whale_usable(p, &ok);
  if (!ok) {
    WhaleHeader* w = whale_lookup(p);
    if (w && w->check == cached_check(p)) control_report_double_free(what, p);
    else control_report_invalid_free(what, p);
    return;
  }
  WhaleHeader* w = header_of(p);
  if (h && h != &g_empty_heap) {
    thread_count(&h->ctl, Tier::Whale, ThreadCounter::Frees, 1);
    thread_count(&h->ctl, Tier::Whale, ThreadCounter::FreeBytes, usable);
  }
  if (!w->system && plain(w))
    while (join_next(w)) {
    }
  // The shards' total, read once: the cap and the check after the push both use it (with
  // the other threads' changes meanwhile, the cap is an estimate either way).
  const size_t cached = cached_total(), len = w->map_len;
  size_t cap = cache_cap(cached, len);
  uint64_t now = os_now_ns();
  if (w->system || len > cap || knob(proto::Knob::WhaleDecayMs) == 0) {
    w->check = 0;
    unmap_whale(w);
    // A lowered whale.cache_bytes or whale.decay_ms also applies to what is cached already.
    if (cached > cap) enforce_cap();
    if (knob(proto::Knob::WhaleDecayMs) == 0) whale_decay(now, true);
    return;
  }
  w->check = cached_check(p);
  w->shrunk_tail = 0;
  w->freed_ns = now;
  // Once linked and unlocked, the entry belongs to the cache: another thread's eviction
  // (trim, decay, enforce_cap) or reuse may unmap or trim it at once, so its header must not
  // be read after the unlock. It is counted as cached under the shard lock, with the link.
  list_push(w);
  if (cached + len > cap) enforce_cap();
  decay_tick(now);
  decay_thread_maybe_start();
}

void* whale_cache_take_chunk(uint64_t* freed_ns) {
  WhaleHeader* w = nullptr;
  // The smallest mapping of at least a chunk, from the lowest shard that has one: the one
  // whose loss the whale tier feels least.
  for (uint32_t si = 0; si < kWhaleShards && !w; si++) {
    WhaleShard& s = g_whale[si];
    LockGuard g(lock_of(s));
    for (WhaleHeader* c = s.head; c; c = c->next)
      if (c->map_len >= kChunkSize && plain(c) && (!w || c->map_len < w->map_len))
        w = c;
    if (w) list_unlink(s, w);
  }
  if (!w) return nullptr;
  const uintptr_t base = reinterpret_cast<uintptr_t>(w->base);
  const size_t len = w->map_len, rest = len - kChunkSize;
  *freed_ns = w->freed_ns;
  w->check = 0;
  mapped_add(-static_cast<int64_t>(kChunkSize));
  const uintptr_t tail = base + kChunkSize;
  if (rest > kWhaleHeader + kColourMax + kBundleMax) {
    // Big enough for a whale: cached on its own, as old as the mapping it came from.
    cache_tail(tail, tail + rest, *freed_ns);
  } else if (rest > 0) {
    g_pagemap.clear_range(tail, rest);
    os_unmap(reinterpret_cast<void*>(tail), rest);
    control_add(Tier::Whale, GlobalCounter::OsUnmaps, 1);
    mapped_add(-static_cast<int64_t>(rest));
  }
  g_pagemap.set(base, kMapNone);
  return reinterpret_cast<void*>(base);
}

void whale_decay(uint64_t now, bool force) {
  uint64_t age = force ? 0 : knob(proto::Knob::WhaleDecayMs) * 1000000ull;
  for (auto& s : g_whale) evict(s, [now, age](WhaleHeader* w) { return now - w->freed_ns >= age; });
  enforce_cap();
}

bool whale_trim() {
  size_t before = cached_total();
  whale_decay(os_now_ns(), true);
  return before != 0;
}

void whale_apply_knobs() {
  if (cached_total() > cache_cap()) enforce_cap();
  if (knob(proto::Knob::WhaleDecayMs) == 0 && cached_total() > 0)
    whale_decay(os_now_ns(), true);
}

}  // namespace hakmem
