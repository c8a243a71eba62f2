// Exported C entry points and the fast paths. Budget: the tiny malloc and free fast paths
// are a table load, a magazine pop/push and one thread-local counter store, with one
// unlikely branch each to a noinline slow path; no lock, no atomic RMW, no syscall.
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "arena.h"
#include "control.h"
#include "fastpath.h"
#include "heap.h"
#include "os.h"
#include "site.h"

#define HK_EXPORT extern "C" __attribute__((visibility("default")))

namespace hakmem {

namespace {
constexpr size_t kMaxRequest = PTRDIFF_MAX;
}  // namespace

namespace {

// Counts an allocation of a mid tier; every 1024 of them run the periodic check, so a
// thread looping on pool or bundle sizes also sees knob changes promptly. Returns p.
__attribute__((always_inline)) inline void* count_alloc(Heap* h, proto::Tier t, size_t bytes, void* p) {
  thread_count(&h->ctl, t, proto::ThreadCounter::AllocBytes, bytes);
  std::atomic<uint64_t>& allocs = h->ctl.slot->tier[static_cast<size_t>(t)][static_cast<size_t>(proto::ThreadCounter::Allocs)];
  if (HK_UNLIKELY(slot_inc_due<1024>(allocs))) return tick_and_return(h, p);
  return p;
}

}  // namespace

__attribute__((noinline, cold)) void* whale_path(size_t n, size_t align, bool zero) noexcept {
  int* const err = os_errno();
  const int saved = *err;
  Heap* h = t_heap;
  if (h == &g_empty_heap) h = heap_get_slow();  // may stay null: re-entrant init
  else heap_poll(h);  // whale operations are rare and slow: each one may see knob changes
  bool fresh = false;
  void* p = whale_malloc(h, n, align, &fresh);
  if (p) {
    *err = saved;
    if (zero && !fresh) memset(p, 0, n);
  }
  return p;
}

// The mid tiers' misses and everything bigger: the empty heap (attach one first), a
// magazine or bin to refill, a whale.
__attribute__((noinline)) void* malloc_mid_miss(Heap* h, size_t n) {
  if (HK_UNLIKELY(h == &g_empty_heap)) {
    h = heap_get_slow();
    if (!h) return whale_path(n, 0, false);
    return malloc_mid(h, n);
  }
  int* const err = os_errno();
  const int saved = *err;
  void* p;
  if (n <= kPoolMax) {
    p = pool_malloc_slow(h, pool_class_of(n));
  } else if (n <= kBundleMax) {
    p = bundle_malloc_slow(h, bundle_units_of(n));
    // The arenas' bundle chunks are at their bound (or the OS refused a chunk): a mapping
    // of its own still serves the request, and errno is as the caller left it unless that
    // fails too.
    if (!p) {
      *err = saved;
      return whale_path(n, 0, false);
    }
  } else {
    if (n > kMaxRequest) {
      errno = ENOMEM;
      return nullptr;
    }
    return whale_path(n, 0, false);
  }
  if (p) *err = saved;
  return p;
}

// Pool and bundle hits. No stack frame: the misses and the periodic check are tail calls
// (a frame's pushes could land on the page offsets a program's loop is writing, and a load
// that aliases a pending store 4 KiB away waits for it).
__attribute__((noinline)) void* malloc_mid(Heap* h, size_t n) noexcept {
  if (n <= kPoolMax) {
    uint32_t c = pool_class_of(n);
    Magazine& m = h->pool[c];
    if (HK_LIKELY(m.head != nullptr)) return count_alloc(h, proto::Tier::Pool, pool_class_size(c), m.pop());
  } else if (n <= kBundleMax) {
    uint32_t u = bundle_units_of(n);
    if (HK_LIKELY(h->bundle_count[u - kBundleMinUnits] != 0)) {
      void* p = bundle_bin_pop(h, u - kBundleMinUnits);
      return count_alloc(h, proto::Tier::Bundle, bundle_block_bytes(p, u), p);
    }
  }
  return malloc_mid_miss(h, n);
}

__attribute__((noinline)) void* tiny_slow(Heap* h, uint32_t c) noexcept {
  int* const err = os_errno();
  const int saved = *err;
  void* p = tiny_malloc_slow(h, c);
  if (p) {
    *err = saved;
  } else if (!process_ready() || t_heap == &g_empty_heap) {
    // Re-entrant call during initialisation: serve it from a mapping of its own.
    p = whale_path(kTinyClassSize[c], 0, false);
  }
  return p;
}

__attribute__((noinline)) void free_slow(void* p, MapKind kind) noexcept {
  int* const err = os_errno();
  const int saved = *err;
  Heap* h = t_heap;
  // A thread that only frees (a consumer of another thread's blocks) gets a heap like one
  // that allocates: its frees are cached and counted in its own slot, not lost.
  if (h == &g_empty_heap && (kind == kMapSmall || kind == kMapBundle || kind == kMapWhaleHead) &&
      process_ready()) {
    if (Heap* attached = heap_get_slow()) h = attached;
  }
  switch (kind) {
    case kMapSmall:
      tiny_free_slow(h, p, page_desc_of(p));
      break;
    case kMapBundle:
      bundle_free(h, p);
      break;
    case kMapWhaleHead:
      whale_free(h, p, "free");
      break;
    default:
      control_report_invalid_free("free", p);
      break;
  }
  *err = saved;
}

__attribute__((noinline)) void* tick_and_return(Heap* h, void* b) noexcept {
  heap_tick(h);
  return b;
}

namespace {

// Usable size of a block we own; 0 with *ok = false otherwise.
size_t usable_size(const void* p, bool* ok) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  *ok = false;
  switch (g_pagemap.get(a)) {
    case kMapSmall: {
      const PageDesc* pg = page_desc_of(p);
      if ((pg->kind != kPageTiny && pg->kind != kPagePool) || !page_block_ok(pg, a)) return 0;
      *ok = true;
      return pg->block_size;
    }
    case kMapBundle:
      return bundle_usable(p, ok);
    case kMapWhaleHead:
      return whale_usable(p, ok);
    default:
      return 0;
  }
}

bool pow2(size_t a) { return a != 0 && (a & (a - 1)) == 0; }

// calloc of a bundle size. A run none of whose units was handed out since it was mapped or
// purged reads as zero already: clearing it would fault in every page of it, pages a
// program that callocs a table and fills it sparsely never touches (git status: 129
// faults in memset). A run from the thread's bin was in use: bundle_malloc_slow says so,
// and that one is cleared.
__attribute__((noinline)) void* bundle_calloc(size_t n) {
  bool zero = false;
  int* const err = os_errno();
  const int saved = *err;
  void* p = bundle_malloc_slow(t_heap, bundle_units_of(n), true, &zero);
  *err = saved;
  if (!p) return whale_path(n, 0, true);  // as malloc_mid_miss: a mapping of its own
  if (!zero) memset(p, 0, n);
  return p;
}

}  // namespace

void* hk_malloc(size_t n) { return malloc_inline(n); }
void hk_free(void* p) { free_inline(p); }

// Pre-condition: align is a power of two. Each tier gives alignment for free in some cases:
// tiny/pool blocks sit at multiples of their size from a 64 KiB page start, bundle blocks at
// a multiple of 64 (their colour) or, uncoloured, on a run start that is a multiple of the
// alignment (up to kBundleMaxAlign); beyond that a whale mapping places the block where
// asked. A whale per aligned request was a mapping, and its page faults, per call:
// posix_memalign(64 KiB, 64 KiB) with 2,000 live took 24.9 us a call (glibc 13.7).
void* hk_aligned(size_t align, size_t n) {
  if (align <= 16) return malloc_inline(n);
  if (n > kMaxRequest) {
    errno = ENOMEM;
    return nullptr;
  }
  if (n == 0) n = 1;
  if (n <= kTinyMax && align <= kTinyMax) {
    for (uint32_t c = tiny_class_of(n); c < kTinyClasses; c++)
      if (kTinyClassSize[c] % align == 0) return malloc_inline(kTinyClassSize[c]);
  }
  if (n <= kPoolMax && align <= kPoolMax) {
    uint32_t c = n <= kTinyMax ? 0 : pool_class_of(n);
    for (; c < kPoolClasses; c++)
      if (pool_class_size(c) % align == 0) return malloc_inline(pool_class_size(c));
  }
  if (n <= kBundleMax && align <= kBundleMaxAlign) {
    size_t m = n < kPoolMax + 1 ? kPoolMax + 1 : n;
    if (align <= 64) return malloc_inline(m);
    int saved = errno;
    const uint32_t align_units = align <= kUnitSize ? 1 : static_cast<uint32_t>(align / kUnitSize);
    if (void* p = bundle_malloc_slow(t_heap, bundle_units_uncoloured(m), false, nullptr, align_units)) {
      errno = saved;
      return p;
    }
    errno = saved;  // no run (chunk index full, no memory): a whale mapping, as below
  }
  Heap* h = t_heap;
  if (h == &g_empty_heap) heap_get_slow();
  // Up to 64, a coloured whale block is aligned enough (whale.cc).
  return whale_path(n, align <= 64 ? align : (align < 4096 ? 4096 : align), false);
}

}  // namespace hakmem

using namespace hakmem;

HK_EXPORT void* malloc(size_t n) noexcept { return malloc_entry(n); }

HK_EXPORT void free(void* p) noexcept { free_inline(p); }

HK_EXPORT void cfree(void* p) noexcept { free_inline(p); }

HK_EXPORT void free_sized(void* p, size_t) noexcept { free_inline(p); }

HK_EXPORT void free_aligned_sized(void* p, size_t, size_t) noexcept { free_inline(p); }

HK_EXPORT void* calloc(size_t n, size_t size) noexcept {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total) || total > kMaxRequest) {
    errno = ENOMEM;
    return nullptr;
  }
  if (site_enabled()) {
    void* ra = __builtin_return_address(0);
    if (site_path_needed(total, ra)) return site_malloc(total, ra, true);
  }
  if (total > kBundleMax) {
    if (t_heap == &g_empty_heap) heap_get_slow();
    return whale_path(total, 0, true);
  }
  if (total > kPoolMax) return bundle_calloc(total);
  void* p = malloc_inline(total);
  if (p) memset(p, 0, total);
  return p;
}

HK_EXPORT void* realloc(void* p, size_t n) noexcept {
  if (!p) return malloc_entry(n);
  if (n == 0) {
    // glibc frees and returns NULL.
    free_inline(p);
    return nullptr;
  }
  bool ok;
  size_t usable = usable_size(p, &ok);
  if (!ok) {
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    if (g_pagemap.get(a) == kMapWhaleHead) whale_free(t_heap, p, "realloc");  // reports
    else control_report_invalid_free("realloc", p);
    errno = EINVAL;
    return nullptr;
  }
  if (n <= usable) {
    // Stay in place when the block fits and would not waste more than half of itself (a
    // buffer growing into the room a growth gave it comes here too, as does one growing
    // inside a cached whale bigger than its first request).
    if (n >= usable / 2 || usable <= 64) return p;
    // Below half, a whale that stays a whale gives the chunks it no longer needs back in
    // place, without a copy (to the whale cache, and from there to the OS by its policy).
    if (n > kBundleMax && g_pagemap.get(reinterpret_cast<uintptr_t>(p)) == kMapWhaleHead &&
        whale_realloc_shrink(t_heap, p, n))
      return p;
    // Below half, a bundle block that stays a bundle block gives back the units it no
    // longer needs, in place (keeping its colour, or its lack of one), instead of moving.
    if (n > kPoolMax && g_pagemap.get(reinterpret_cast<uintptr_t>(p)) == kMapBundle) {
      const uint32_t units = bundle_units_keeping_colour(p, n);
      if (arena_bundle_shrink(p, units)) {
        Heap* h = t_heap;
        if (h != &g_empty_heap)
          thread_count(&h->ctl, proto::Tier::Bundle, proto::ThreadCounter::FreeBytes, usable - bundle_block_bytes(p, units));
        return p;
      }
    }
  }
  // A bundle run grows in place into free units that follow it: no copy at all.
  if (n > usable && n <= kBundleMax && g_pagemap.get(reinterpret_cast<uintptr_t>(p)) == kMapBundle) {
    // The block keeps its colour (or its lack of one); a coloured run stays within
    // kColourUnits, so that every run of a bin fits every request of that bin.
    const bool coloured = (reinterpret_cast<uintptr_t>(p) & (kUnitSize - 1)) != 0;
    const uint32_t units = bundle_units_keeping_colour(p, n);
    Heap* h = t_heap;
    if ((!coloured || units <= kColourUnits) && arena_bundle_grow(p, units)) {
      if (h != &g_empty_heap) {
        thread_count(&h->ctl, proto::Tier::Bundle, proto::ThreadCounter::AllocBytes, bundle_block_bytes(p, units) - usable);
      }
      return p;
    }
  }
  // A whale grows by moving its mapping (mremap), not by copying it.
  if (n > usable && n > kBundleMax && g_pagemap.get(reinterpret_cast<uintptr_t>(p)) == kMapWhaleHead) {
    if (void* q = whale_realloc_grow(t_heap, p, n)) return q;
  }
  // A growth by a small step (a quarter of the block at most) is a buffer grown piece by
  // piece: a string builder, a reader appending chunks, a vector without a capacity policy.
  // Moved to exactly n it would move again at the next class boundary, every 1/16 to 1/4 of
  // its size, and the copies would add up to many times its final size. It gets room to
  // grow by half instead (as growable arrays do), so they add up to about twice its final
  // size; a whale needs none (mremap above), and the room stops at the bundle tier's top.
  // bench_realloc (64 buffers grown by steps of up to 1/8 to 256 B-1 MiB): 310 -> 217 ns per
  // realloc, peak RSS 17.0 -> 17.5 MiB (mimalloc 386 ns, 17.7 MiB; room for a quarter:
  // 246 ns, 16.6 MiB).
  size_t want = n;
  if (n > usable && n - usable <= usable / 4) {
    const size_t grown = usable + usable / 2;
    want = grown <= kBundleMax ? grown : (n <= kBundleMax ? kBundleMax : n);
  }
  // Near a memory limit the room may be what does not fit: the request itself still might,
  // and errno then stays as the caller left it.
  const int saved = want != n ? errno : 0;
  void* q = malloc_entry(want);
  if (!q && want != n && (q = malloc_entry(n)) != nullptr) errno = saved;
  if (!q) return nullptr;
  memcpy(q, p, n < usable ? n : usable);
  free_inline(p);
  return q;
}

HK_EXPORT void* reallocarray(void* p, size_t n, size_t size) noexcept {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total)) {
    errno = ENOMEM;
    return nullptr;
  }
  return realloc(p, total);
}

namespace {
// An aligned allocation for the caller `ra`, sampled into the site table when site rules
// are on. always_inline: `ra` is the exported function's return address.
__attribute__((always_inline)) inline void* aligned_for(size_t align, size_t n, void* ra) {
  void* p = hk_aligned(align, n);
  if (p && site_enabled()) site_note(n, ra);
  return p;
}
}  // namespace

HK_EXPORT int posix_memalign(void** out, size_t align, size_t n) noexcept {
  if (!pow2(align) || align % sizeof(void*) != 0) return EINVAL;
  int saved = errno;
  void* p = aligned_for(align, n, __builtin_return_address(0));
  if (!p) {
    errno = saved;
    return ENOMEM;
  }
  *out = p;
  return 0;
}

HK_EXPORT void* aligned_alloc(size_t align, size_t n) noexcept {
  if (!pow2(align)) {
    errno = EINVAL;
    return nullptr;
  }
  return aligned_for(align, n, __builtin_return_address(0));
}

HK_EXPORT void* memalign(size_t align, size_t n) noexcept {
  // glibc rounds a non-power-of-two alignment up to the next power of two.
  if (align > (size_t{1} << 62)) {
    errno = EINVAL;
    return nullptr;
  }
  size_t a = 1;
  while (a < align) a <<= 1;
  return aligned_for(a, n, __builtin_return_address(0));
}

HK_EXPORT void* valloc(size_t n) noexcept {
  return aligned_for(os_page_size(), n, __builtin_return_address(0));
}

HK_EXPORT void* pvalloc(size_t n) noexcept {
  size_t page = os_page_size();
  if (n > kMaxRequest) {
    errno = ENOMEM;
    return nullptr;
  }
  size_t r = n == 0 ? page : (n + page - 1) & ~(page - 1);
  return aligned_for(page, r, __builtin_return_address(0));
}

HK_EXPORT size_t malloc_usable_size(void* p) noexcept {
  if (!p) return 0;
  bool ok;
  size_t n = usable_size(p, &ok);
  if (!ok) control_report_invalid_free("malloc_usable_size", p);
  return n;
}

HK_EXPORT int mallopt(int param, int) noexcept {
  // glibc's parameters are accepted (hakmem's own knobs replace them); unknown ones fail.
  switch (param) {
    case M_MXFAST: case M_TRIM_THRESHOLD: case M_TOP_PAD: case M_MMAP_THRESHOLD:
    case M_MMAP_MAX: case M_CHECK_ACTION: case M_PERTURB: case M_ARENA_TEST: case M_ARENA_MAX:
      return 1;
    default:
      return 0;
  }
}

HK_EXPORT int malloc_trim(size_t) noexcept {
  int saved = errno;
  Heap* h = t_heap;
  if (h != &g_empty_heap) {
    tiny_drain_delayed(h);
    for (uint32_t c = 0; c < kTinyClasses; c++) tiny_flush(h, c, 0);
    for (uint32_t c = 0; c < kPoolClasses; c++) pool_flush(h, c, 0);
    bundle_flush_all(h);
  }
  size_t released = arena_decay(os_now_ns(), true);
  bool whales = whale_trim();
  errno = saved;
  return released > 0 || whales ? 1 : 0;
}

// glibc's own names for its allocator, which it exports too. A program or library that calls
// them to reach "the real malloc" (allocation tracers, some language runtimes) would
// otherwise get glibc's heap, and the plain free() of such a block would be an invalid free
// here, the block lost. mimalloc, jemalloc and tcmalloc export the same aliases.
// copy(): the alias carries the target's attributes (glibc declares malloc with its own).
#define HK_ALIAS(name, target) HK_EXPORT decltype(target) name __attribute__((alias(#target), copy(target)))
HK_ALIAS(__libc_malloc, malloc);
HK_ALIAS(__libc_free, free);
HK_ALIAS(__libc_calloc, calloc);
HK_ALIAS(__libc_realloc, realloc);
HK_ALIAS(__libc_memalign, memalign);
HK_ALIAS(__libc_valloc, valloc);
HK_ALIAS(__libc_pvalloc, pvalloc);
#undef HK_ALIAS
