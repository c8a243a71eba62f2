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

// A LIFO of free blocks with a count and a capacity. Owned by one thread; no atomics.
struct Magazine {
  Block* head = nullptr;
  uint32_t count = 0;
  uint32_t cap = 0;

  bool full() const { return count >= cap; }
  // Pre-condition: the block is free and not on any list.
  void push(Block* b) {
    b->next = head;
    b->cookie = block_cookie(b);
    head = b;
    count++;
  }
  // Pre-condition: count > 0.
  Block* pop() {
    Block* b = head;
    head = b->next;
    count--;
    b->cookie = 0;
    return b;
  }
  // Detaches every block after the first `keep` (the older ones) and returns them as a
  // chain with its length in *n; the magazine keeps the `keep` most recent.
  Block* split_after(uint32_t keep, uint32_t* n) {
    *n = 0;
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
    count = keep;
    return chain;
  }
};

}  // namespace hakmem
