// The malloc and free fast paths, inline so that malloc.cc (the C API) and new_delete.cc
// (operator new/delete) both get them without a call. Budget: a table load, a magazine
// pop/push with its room, the free-block cookie, one thread-local counter store, and one
// unlikely branch each to a noinline slow path; no lock, no atomic RMW, no syscall.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "chunk.h"
#include "heap.h"
#include "pagemap.h"
#include "site.h"
#include "site_rules.h"

#define HK_LIKELY(x) __builtin_expect(!!(x), 1)
#define HK_UNLIKELY(x) __builtin_expect(!!(x), 0)

namespace hakmem {

// Slow paths (malloc.cc). noexcept, like everything in libhakmem: operator new and delete
// (new_delete.cc, the one file built with exceptions) can then reach them by a tail jump,
// without the frame and the saved registers a call that might throw needs there.
void* whale_path(size_t n, size_t align, bool zero) noexcept;
void* malloc_mid(Heap* h, size_t n) noexcept;
void* tiny_slow(Heap* h, uint32_t c) noexcept;
void free_slow(void* p, MapKind kind) noexcept;
void pool_free_local(Heap* h, void* p, PageDesc* pg) noexcept;
void* tick_and_return(Heap* h, void* b) noexcept;

// The tiny fast path's hit: takes the head of m, the magazine of class c8 / 8, which is not
// empty. Never null.
__attribute__((always_inline)) inline void* tiny_take(Heap* h, Magazine& m, uint32_t c8) {
  Block* b = m.head;
  Block* next = b->next;
  m.head = next;
  m.room++;
  b->cookie = 0;
  // The next malloc of this class reads next->next: start fetching its line now, so a run
  // of mallocs does not chase one cache miss after another. Not when the magazine is now
  // empty: null is never mapped, so its prefetch misses the TLB and walks the page table
  // for nothing every time (a malloc+free ping-pong did it on every call, cfrac whenever
  // a magazine ran dry); the block just taken, whose line is here already, stands in for
  // it, through a conditional move rather than a branch.
  __builtin_prefetch(next != nullptr ? static_cast<void*>(next) : static_cast<void*>(b));
  // The per-class count doubles as the countdown to the periodic check (control_poll,
  // decay): every kTickOps allocations of a class, without a counter of its own.
  if (HK_UNLIKELY(slot_inc_due<kTickOps>(at_x8(h->ctl.slot->tiny_class_allocs, c8)))) return tick_and_return(h, b);
  return b;
}

// Pre-condition: n <= kTinyMax.
__attribute__((always_inline)) inline void* malloc_tiny(Heap* h, size_t n) {
  const uint32_t c8 = tiny_class_x8(n);
  Magazine& m = tiny_mag(h, c8);
  if (HK_LIKELY(m.head != nullptr)) return tiny_take(h, m, c8);
  return tiny_slow(h, c8 >> 3);
}

// malloc without the site path: for hakmem's own callers (the site path among them).
__attribute__((always_inline)) inline void* malloc_inline(size_t n) {
  Heap* h = t_heap;
  if (HK_LIKELY(n <= kTinyMax)) return malloc_tiny(h, n);
  return malloc_mid(h, n);  // a tail call: the fast path needs no stack frame
}

// With site.rules on, whether an allocation of n bytes for the call site `ra` needs
// site_malloc: a rule may apply (or a compile is due), or it ends the thread's sampling
// countdown. The common case, no rule for the site and no sample due, counts the bytes down
// here, inline and without a stack frame, and the caller allocates as usual.
__attribute__((always_inline)) inline bool site_path_needed(size_t n, void* ra) {
  SiteThread& t = t_site;
  if (HK_LIKELY(static_cast<uint64_t>(t.left) > n &&
                site_rules_none_for(control_segment_ptr()->rules, reinterpret_cast<uint64_t>(ra)))) {
    t.left -= static_cast<int64_t>(n);
    return false;
  }
  return true;
}

// The exported malloc and operator new. The gate's one compare is both the size test and
// the site.rules test (control.h). always_inline: the return address is the caller's.
__attribute__((always_inline)) inline void* malloc_entry(size_t n) {
  if (HK_LIKELY(n < g_tiny_gate.end.load(std::memory_order_relaxed))) return malloc_tiny(t_heap, n);
  if (site_enabled()) {
    void* ra = __builtin_return_address(0);
    if (site_path_needed(n, ra)) return site_malloc(n, ra, false);
  }
  return malloc_inline(n);
}

__attribute__((always_inline)) inline void free_inline(void* p) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  MapKind kind = g_pagemap.get(a);
  if (HK_LIKELY(kind == kMapSmall)) {
    PageDesc* pg = page_desc_of(p);
    Heap* h = t_heap;
    if (HK_LIKELY(pg->owner == h && page_block_ok(pg, a))) {
      Block* b = static_cast<Block*>(p);
      const uint32_t c8 = pg->cls_x8;
      Magazine& m = tiny_mag(h, c8);
      const uintptr_t cookie = block_cookie(b);
      const uint32_t room = m.room;
      // A full magazine is tested before the cookie is read: in a teardown the block is
      // cold, and tiny_free_full may finish the free later rather than wait for its line.
      if (HK_UNLIKELY(room == 0)) return tiny_free_full(h, b, pg, m);
      if (HK_LIKELY(b->cookie != cookie)) {
        b->next = m.head;
        b->cookie = cookie;
        m.head = b;
        // Last, after the head's load: storing it first (one subtract from memory) made the
        // malloc+free pair 0.4 ns slower, though it is two instructions fewer.
        m.room = room - 1;
        slot_add(at_x8(h->ctl.slot->tiny_class_frees, c8), 1);
        return;
      }
    } else if (pg->kind == kPagePool) {
      return pool_free_local(h, p, pg);  // a tail call, as the bundle path below needs none
    }
  } else if (kind == kMapBundle) {
    // The bundle bin push: the JSON/MIR-sized ping-pong stays off the arena lock, never
    // touches the run's own memory, and (like malloc_mid) needs no stack frame.
    uintptr_t off = a & (kUnitSize - 1);
    if (HK_LIKELY((off & 63) == 0)) {
      BundleChunk* ch = bundle_chunk_of(p);
      Heap* h = t_heap;
      uint8_t* st = &ch->state[(a & kChunkMask) >> kUnitShift];
      if (HK_LIKELY(*st == head_state(kUnitHead, off) && ch->arena == h->shard)) {
        const uint32_t units = st[kUnitsPerChunk];  // run[u]: run follows state
        // Unit 0 (the header) has run 0: the bound check keeps it out.
        if (HK_LIKELY(units - kBundleMinUnits < kBundleBins && bundle_bin_push(h, p, units))) {
          thread_count(&h->ctl, proto::Tier::Bundle, proto::ThreadCounter::Frees, 1);
          thread_count(&h->ctl, proto::Tier::Bundle, proto::ThreadCounter::FreeBytes, bundle_block_bytes(p, units));
          return;
        }
      }
    }
  } else if (HK_UNLIKELY(p == nullptr)) {
    return;
  }
  free_slow(p, kind);
}

}  // namespace hakmem
