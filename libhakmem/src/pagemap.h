// The address-space map: one byte per 4 MiB of the 47-bit user address space says whether
// hakmem owns that chunk and how to read it. Ownership of any pointer is one shift, one
// compare and one load; no header is ever read before the map says the memory is ours.
//
// The global map is 32 MiB of zero-initialised BSS: untouched parts cost no memory (reads of
// them hit the shared zero page), and it needs no initialisation, so free() works even
// before the first malloc.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <atomic>

namespace hakmem {

inline constexpr size_t kChunkShift = 22;
inline constexpr size_t kChunkSize = size_t{1} << kChunkShift;
inline constexpr uintptr_t kChunkMask = kChunkSize - 1;

// What a map entry says about its 4 MiB chunk.
enum MapKind : uint8_t {
  kMapNone = 0,       // not ours
  kMapSmall = 1,      // a small chunk: 64 KiB pages of tiny slabs and pool pages
  kMapBundle = 2,     // a bundle chunk: runs of 16 KiB units
  kMapWhaleHead = 3,  // holds the user pointer of a whale (header 4 KiB before it)
  kMapWhaleTail = 4,  // the rest of a whale mapping: never a valid pointer to free
};

template <unsigned AddrBits>
class PageMap {
 public:
  static constexpr size_t kEntries = size_t{1} << (AddrBits - kChunkShift);

  // kMapNone for any address outside the map (kernel half, garbage).
  MapKind get(uintptr_t a) const {
    size_t i = a >> kChunkShift;
    if (__builtin_expect(i >= kEntries, 0)) return kMapNone;
    return static_cast<MapKind>(e_[i].load(std::memory_order_relaxed));
  }
  // Marks [base, base+len) (base chunk-aligned). The first chunk gets `first`, the others
  // `rest`. Pre-condition: nothing else of ours overlaps these chunks.
  void set_range(uintptr_t base, size_t len, MapKind first, MapKind rest) {
    size_t i = base >> kChunkShift, end = (base + len + kChunkMask) >> kChunkShift;
    for (size_t k = i; k < end && k < kEntries; k++)
      e_[k].store(k == i ? first : rest, std::memory_order_relaxed);
  }
  void set(uintptr_t a, MapKind k) {
    size_t i = a >> kChunkShift;
    if (i < kEntries) e_[i].store(k, std::memory_order_relaxed);
  }
  void clear_range(uintptr_t base, size_t len) { set_range(base, len, kMapNone, kMapNone); }

 private:
  std::atomic<uint8_t> e_[kEntries];
};

using GlobalPageMap = PageMap<47>;
extern GlobalPageMap g_pagemap __attribute__((visibility("hidden")));

}  // namespace hakmem
