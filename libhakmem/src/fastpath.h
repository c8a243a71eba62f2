// The malloc and free fast paths, inline so that malloc.cc (the C API) and new_delete.cc
// (operator new/delete) both get them without a call. Budget: a table load, a magazine
// pop/push with its count, the free-block cookie, one thread-local counter store, and one
// unlikely branch each to a noinline slow path; no lock, no atomic RMW, no syscall.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "chunk.h"
#include "heap.h"
#include "pagemap.h"

#define HK_LIKELY(x) __builtin_expect(!!(x), 1)
#define HK_UNLIKELY(x) __builtin_expect(!!(x), 0)

namespace hakmem {

// Slow paths (malloc.cc).
void* whale_path(size_t n, size_t align, bool zero);
void* malloc_mid(Heap* h, size_t n);
void* tiny_slow(Heap* h, uint32_t c);
void free_slow(void* p, MapKind kind);
void pool_free_local(Heap* h, void* p, PageDesc* pg);
void* tick_and_return(Heap* h, void* b);

__attribute__((always_inline)) inline void* malloc_inline(size_t n) {
  Heap* h = t_heap;
  if (HK_LIKELY(n <= kTinyMax)) {
    uint32_t c = tiny_class_of(n);
    Magazine& m = h->tiny[c];
    Block* b = m.head;
    if (HK_LIKELY(b != nullptr)) {
      Block* next = b->next;
      m.head = next;
      m.count--;
      b->cookie = 0;
      // The next malloc of this class reads next->next: start fetching its line now, so a
      // run of mallocs does not chase one cache miss after another.
      __builtin_prefetch(next);
      // The per-class count doubles as the countdown to the periodic check (control_poll,
      // decay): every kTickOps allocations of a class, without a counter of its own.
      std::atomic<uint64_t>& cnt = h->ctl.slot->tiny_class_allocs[c];
      uint64_t v = cnt.load(std::memory_order_relaxed) + 1;
      cnt.store(v, std::memory_order_relaxed);
      if (HK_UNLIKELY((v & (kTickOps - 1)) == 0)) return tick_and_return(h, b);
      return b;
    }
    return tiny_slow(h, c);
  }
  return malloc_mid(h, n);  // a tail call: the fast path needs no stack frame
}

__attribute__((always_inline)) inline void free_inline(void* p) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  MapKind kind = g_pagemap.get(a);
  if (HK_LIKELY(kind == kMapSmall)) {
    PageDesc* pg = page_desc_of(p);
    Heap* h = t_heap;
    if (HK_LIKELY(pg->owner == h && page_block_ok(pg, a))) {
      Block* b = static_cast<Block*>(p);
      uint32_t c = pg->cls;
      Magazine& m = h->tiny[c];
      if (HK_LIKELY(b->cookie != block_cookie(b) && m.count < m.cap)) {
        b->next = m.head;
        b->cookie = block_cookie(b);
        m.head = b;
        m.count++;
        slot_add(h->ctl.slot->tiny_class_frees[c], 1);
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
