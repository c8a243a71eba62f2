// The two kinds of 4 MiB chunks and their in-place headers. A chunk is aligned to its size,
// so the header of any pointer inside it is `p & ~kChunkMask` once the page map says the
// chunk is ours.
//
// Small chunk: 64 pages of 64 KiB; page 0 holds the header, pages 1..63 become tiny slabs
// (owned by one thread heap) or pool pages (shared by a shard).
// Bundle chunk: 256 units of 16 KiB; unit 0 holds the header, runs of 3..64 units are
// bundle blocks. The chunk's two 2 MiB halves (huge-page aligned) are purged as whole huge
// pages once they have been entirely free for bundle.decay_ms.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <atomic>

#include "magazine.h"
#include "mpsc.h"
#include "pagemap.h"
#include "sizeclass.h"

namespace hakmem {

struct Heap;

inline constexpr size_t kPageShift = 16;
inline constexpr size_t kPageSize = size_t{1} << kPageShift;
inline constexpr uint32_t kPagesPerChunk = kChunkSize / kPageSize;  // 64

enum PageKind : uint8_t { kPageFree = 0, kPageTiny = 1, kPagePool = 2 };

// Per 64 KiB page of a small chunk, 128 bytes so that finding it is a shift. The fields read
// by the free fast path come first, in one cache line.
struct alignas(128) PageDesc {
  Heap* owner;                   // tiny: the owning heap (never changes while blocks are out)
  uint32_t block_size;           // bytes per block
  uint32_t inv;                  // block_div(block_size).inv
  uint32_t nblocks;              // blocks carved so far (bump allocation); valid blocks < it
  uint8_t shift;                 // block_div(block_size).shift
  uint8_t kind;                  // PageKind
  uint8_t cls;                   // tiny or pool class
  uint8_t shard;                 // pool: the shard whose lock guards this page
  uint8_t in_avail;              // on its owner's list of pages with free blocks
  uint8_t cls_x8;                // tiny: cls * 8, which the free fast path indexes with
  uint32_t carved;               // bytes carved (nblocks * block_size)
  uint32_t used;                 // blocks handed out (including ones sitting in magazines)
  uint32_t capacity;             // blocks that fit in the page
  Block* free;                   // local free list (tiny: owner only; pool: shard lock)
  PageDesc* next;                // avail list
  PageDesc* prev;
  // Second cache line: what other threads write, away from the fields the owner's fast
  // paths read, so cross-thread frees do not bounce the owner's line.
  alignas(64) TailedMpscStack<Block, &Block::next> remote;  // tiny: blocks freed by other threads
  PageDesc* ready_next;          // tiny: link on the owner heap's ready list (MPSC)
  uint64_t free_since_ns;        // kPageFree: when it was released (for decay)
  uint8_t purged;                // kPageFree: pages returned to the OS (not backed)
};

struct SmallChunk {
  uint8_t map_kind;              // kMapSmall (mirrors the page map, for asserts)
  uint8_t arena;                 // arena whose lock guards free_mask and page states
  uint64_t free_mask;            // bit i: page i is free; bit 0 (the header) never
  SmallChunk* next;              // arena list
  SmallChunk* prev;
  uint64_t empty_since_ns;       // all pages free since (0 = in use)
  PageDesc pages[kPagesPerChunk];
};
static_assert(sizeof(SmallChunk) <= kPageSize, "small chunk header must fit page 0");
static_assert(sizeof(PageDesc) == 128, "page descriptors are found with a shift");

inline constexpr uint32_t kUnitsPerChunk = kChunkSize / kUnitSize;  // 256
inline constexpr uint32_t kUnitsPerHalf = kUnitsPerChunk / 2;
// An aligned run (arena_bundle_alloc) starts on a multiple of at most a half, and one of
// kBundleMaxUnits fits after the first such start of either half.
static_assert(kBundleMaxAlign / kUnitSize <= kUnitsPerHalf &&
              kBundleMaxAlign / kUnitSize + kBundleMaxUnits <= kUnitsPerHalf);

// kUnitCached: the head of a run sitting in a thread's bundle bin (in use for the arena,
// free for the program); written only by the thread that holds the run.
enum UnitState : uint8_t { kUnitFree = 0, kUnitHead = 1, kUnitTail = 2, kUnitCached = 3 };

// A head unit's state byte also holds its block's colour (sizeclass.h): bits 2..7 are the
// colour in 64-byte lines, so the byte is `state | colour >> 4`. A pointer p heads a run
// in use exactly when state[unit of p] == head_state(kUnitHead, p & (kUnitSize - 1)) and
// that offset is a multiple of 64: one load and compare on the free path.
inline uint32_t head_state(UnitState st, uintptr_t colour) { return st | static_cast<uint32_t>(colour >> 4); }
inline uint32_t unit_kind(uint8_t s) { return s & 3u; }
// Colour of a block heading at unit s: page-offset line 2, 3, 4 or 5, varied by position so
// that blocks walked side by side (a copy, a merge) do not alias 4 KiB apart either. None
// of the allocator's hot lines is on those: the heap's hot fields start at 1 KiB (heap.h),
// a chunk's state and run bytes at 2 KiB (below), the tiny gate malloc reads is line 1 of
// an 8-line group (control.h). Measured (json, a 64 KiB block walked page by page): 61 ->
// 48 ns/iter median, and 55 at worst against 77; colours in the upper half of the page did
// as well on json but needed more room per run (mixed: +3 k page faults, not +1.8 k).
inline size_t unit_colour(uint32_t s) { return 128 + size_t{(s * 11u) & 3u} * 64; }
static_assert(128 + 3 * 64 <= kColourMax);

// The first cache line of a chunk sits at page offset 0, the L1 set that the first line of
// every page-aligned block maps to: a program touching big blocks page by page evicts it
// every iteration. So line 0 holds only what the arena lock guards (slow paths), and the
// fields the free fast path reads (arena, state, run) start at 2 KiB, clear of the lines
// block colours put page walks on.
struct BundleChunk {
  uint8_t map_kind;              // kMapBundle
  uint16_t free_units;           // units free in the chunk
  uint16_t half_free[2];         // free units per 2 MiB half
  uint16_t half_cached[2];       // free units per half that were handed out since its last purge
  uint8_t half_backed[2];        // the half may hold resident pages (0 after a purge)
  uint64_t half_free_since[2];   // when the half became entirely free
  alignas(2048) uint8_t arena;     // fixed at creation; read by the free fast path
  uint8_t state[kUnitsPerChunk];  // UnitState
  uint8_t run[kUnitsPerChunk];    // head unit: run length in units
  uint64_t free_bits[kUnitsPerChunk / 64];  // bit u: unit u is free
  uint64_t touched_bits[kUnitsPerChunk / 64];  // bit u: unit u was handed out since its half's last purge
};
static_assert(sizeof(BundleChunk) <= kUnitSize, "bundle chunk header must fit unit 0");
// The free fast path reads run[u] as state[u + kUnitsPerChunk].
static_assert(offsetof(BundleChunk, run) == offsetof(BundleChunk, state) + kUnitsPerChunk);

inline SmallChunk* small_chunk_of(const void* p) {
  return reinterpret_cast<SmallChunk*>(reinterpret_cast<uintptr_t>(p) & ~kChunkMask);
}
inline PageDesc* page_desc_of(const void* p) {
  // pages[(a >> kPageShift) % kPagesPerChunk], with the index scaled by one shift and mask
  // (this is on the free fast path).
  constexpr unsigned kDescShift = 7;
  static_assert(sizeof(PageDesc) == size_t{1} << kDescShift);
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  const uintptr_t off = (a >> (kPageShift - kDescShift)) & ((kPagesPerChunk - 1) << kDescShift);
  return reinterpret_cast<PageDesc*>(reinterpret_cast<char*>(small_chunk_of(p)->pages) + off);
}
inline char* page_start(const PageDesc* pg) {
  uintptr_t chunk = reinterpret_cast<uintptr_t>(pg) & ~kChunkMask;
  size_t idx = static_cast<size_t>(pg - reinterpret_cast<const SmallChunk*>(chunk)->pages);
  return reinterpret_cast<char*>(chunk + idx * kPageSize);
}
inline BundleChunk* bundle_chunk_of(const void* p) {
  return reinterpret_cast<BundleChunk*>(reinterpret_cast<uintptr_t>(p) & ~kChunkMask);
}

// Checks that p is the start of a carved block of the page (no division).
inline bool page_block_ok(const PageDesc* pg, uintptr_t a) {
  uint32_t off = static_cast<uint32_t>(a & (kPageSize - 1));
  return block_index(off, pg->inv, pg->shift) < pg->nblocks;
}
// Sets the block geometry of a page being (re)used for one size class.
inline void page_set_block_size(PageDesc* pg, uint32_t bs) {
  BlockDiv d = block_div(bs);
  pg->block_size = bs;
  pg->inv = d.inv;
  pg->shift = d.shift;
  pg->capacity = static_cast<uint32_t>(kPageSize / bs);
}

inline uint32_t bundle_unit_of(const void* p) {
  return static_cast<uint32_t>((reinterpret_cast<uintptr_t>(p) & kChunkMask) >> kUnitShift);
}

// Puts the free block b, handed out from pg, back on pg's free list with its free cookie
// (block_cookie(b), which a caller that has just checked it passes in). The caller holds
// whatever guards the page, as below.
inline void page_free_push(PageDesc* pg, Block* b, uintptr_t cookie) {
  b->cookie = cookie;
  b->next = pg->free;
  pg->free = b;
  pg->used--;
}
inline void page_free_push(PageDesc* pg, Block* b) { page_free_push(pg, b, block_cookie(b)); }

// Moves blocks of the page into the magazine until `got` reaches `want`: first its free list,
// then fresh blocks carved from its end, but carving only while `got` is below `carve_want`
// (<= want). The caller holds whatever guards the page (its owner thread for tiny, the shard
// lock for pool).
inline void page_take_blocks(PageDesc* pg, Magazine& m, uint32_t want, uint32_t& got, uint32_t carve_want) {
  while (got < want && pg->free) {
    Block* b = pg->free;
    pg->free = b->next;
    pg->used++;
    m.push(b);
    got++;
  }
  if (got >= carve_want) return;
  // Fresh blocks: pushed from the highest down, so that the magazine (a stack) hands them
  // out in address order, and a program that walks its blocks in the order it made them
  // reads memory forwards. Pushed upwards, they came out backwards: bench_walk, 4 M blocks
  // walked in allocation order, 2.59 -> 1.47 ns per 16 B block and 5.91 -> 3.93 per 48 B
  // (mimalloc 1.53 and 3.79, glibc 2.37 and 4.70; medians of 7 alternating processes).
  const uint32_t room = (kPageSize - pg->carved) / pg->block_size;
  const uint32_t k = carve_want - got < room ? carve_want - got : room;
  char* first = page_start(pg) + pg->carved;
  for (uint32_t i = k; i-- > 0;) m.push(reinterpret_cast<Block*>(first + size_t{i} * pg->block_size));
  pg->carved += k * pg->block_size;
  pg->nblocks += k;
  pg->used += k;
  got += k;
}

// Units of the bundle run p heads, or 0 when p is not the block of a run in use.
inline uint32_t bundle_run_units(const void* p) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p), off = a & (kUnitSize - 1);
  if (off & 63) return 0;
  const BundleChunk* ch = bundle_chunk_of(p);
  uint32_t u = static_cast<uint32_t>((a & kChunkMask) >> kUnitShift);
  if (u == 0 || ch->state[u] != head_state(kUnitHead, off)) return 0;
  return ch->run[u];
}
// Units of a run that holds n bytes from the block p on, p keeping its place (its colour,
// or its lack of one): what realloc grows or shrinks a bundle block to in place.
inline uint32_t bundle_units_keeping_colour(const void* p, size_t n) {
  const bool coloured = (reinterpret_cast<uintptr_t>(p) & (kUnitSize - 1)) != 0;
  return bundle_units_uncoloured(coloured ? n + kColourMax : n);
}
// Usable bytes of the block p of a run of `units`: the run less the largest colour for a
// coloured block (whatever its own colour), so that a request size always gets the same
// usable size, as with any other allocator; the whole run for an uncoloured one.
inline size_t bundle_block_bytes(const void* p, uint32_t units) {
  return (size_t{units} << kUnitShift) - ((reinterpret_cast<uintptr_t>(p) & (kUnitSize - 1)) ? kColourMax : 0);
}

}  // namespace hakmem
