// A free block and the thread-local magazine that caches free blocks of one size class.
// Blocks link through their first word; the second word holds a cookie (secret ^ address)
// while the block is free anywhere inside hakmem, so a second free of the same block is
// seen with one load and compare. Allocation clears it. Blocks are at least 16 bytes.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace hakmem {

struct Block {
  Block* next;
  uintptr_t cookie;
};

// Process secret for free-block cookies (set once at init, before any block is freed).
extern uintptr_t g_cookie_secret __attribute__((visibility("hidden")));
inline uintptr_t block_cookie(const void* b) {
  return g_cookie_secret ^ reinterpret_cast<uintptr_t>(b);
}

// A capacity doubled, at most `ceiling`.
inline uint32_t doubled(uint32_t cap, uint32_t ceiling) { return cap * 2 > ceiling ? ceiling : cap * 2; }

// The ceiling for a thread that freed a round of `round` blocks past its magazine and came
// back for them (tiny.cc, pool.cc): the smallest doubling of `base` that holds the round, at
// most `most`; `base` for a round bigger than `most`.
inline uint32_t ceiling_for_round(uint64_t round, uint32_t base, uint32_t most) {
  if (round > most) return base;
  uint32_t ceiling = base;
  while (ceiling < round) ceiling *= 2;
  return ceiling < most ? ceiling : most;
}

// A LIFO of free blocks with a capacity. Owned by one thread; no atomics. It keeps the room
// left (capacity less count) rather than the count, so the free fast path tests one field
// against zero instead of comparing two. A refill may push one block past the capacity (a
// magazine of capacity 0 still hands out the block it was refilled with): room wraps and
// comes back at the pop, and count() stays right, modulo 2^32 like the fields.
struct Magazine {
  Block* head = nullptr;
  uint32_t room = 0;
  uint32_t cap = 0;

  uint32_t count() const { return cap - room; }
  bool full() const { return room == 0 || room > cap; }
  // Pre-condition: count() <= c (flush first when lowering).
  void set_cap(uint32_t c) {
    room = c - count();
    cap = c;
  }
  void set_count(uint32_t n) { room = cap - n; }
  // Pre-condition: the block is free and not on any list.
  void push(Block* b) {
    b->next = head;
    b->cookie = block_cookie(b);
    head = b;
    room--;
  }
  // Pre-condition: count() > 0.
  Block* pop() {
    Block* b = head;
    head = b->next;
    room++;
    b->cookie = 0;
    return b;
  }
  // Detaches every block after the first `keep` (the older ones) and returns them as a
  // chain with its length in *n; the magazine keeps the `keep` most recent.
  Block* split_after(uint32_t keep, uint32_t* n) {
    *n = 0;
    const uint32_t count = this->count();
    if (count <= keep) return nullptr;
    Block* chain;
    if (keep == 0) {
      chain = head;
      head = nullptr;
    } else {
      Block* cut = head;
      for (uint32_t i = 1; i < keep; i++) cut = cut->next;
      chain = cut->next;
      cut->next = nullptr;
    }
    *n = count - keep;
    set_count(keep);
    return chain;
  }
};

}  // namespace hakmem
