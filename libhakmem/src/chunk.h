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
  uint32_t carved;               // bytes carved (nblocks * block_size)
  uint32_t used;                 // blocks handed out (including ones sitting in magazines)
  uint32_t capacity;             // blocks that fit in the page
  Block* free;                   // local free list (tiny: owner only; pool: shard lock)
  PageDesc* next;                // avail list
  PageDesc* prev;
  // Second cache line: what other threads write, away from the fields the owner's fast
  // paths read, so cross-thread frees do not bounce the owner's line.
  alignas(64) MpscStack<Block, &Block::next> remote;  // tiny: blocks freed by other threads
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

// kUnitCached: the head of a run sitting in a thread's bundle bin (in use for the arena,
// free for the program); written only by the thread that holds the run.
enum UnitState : uint8_t { kUnitFree = 0, kUnitHead = 1, kUnitTail = 2, kUnitCached = 3 };

// The first cache line of a chunk sits at page offset 0, the L1 set that the first line of
// every page-aligned block maps to: a program touching big blocks page by page evicts it
// every iteration. So line 0 holds only what the arena lock guards (slow paths), and the
// fields the free fast path reads (arena, state, run) start on the next line.
struct BundleChunk {
  uint8_t map_kind;              // kMapBundle
  uint16_t free_units;           // units free in the chunk
  uint16_t half_free[2];         // free units per 2 MiB half
  uint16_t half_cached[2];       // free units per half that were handed out since its last purge
  uint8_t half_backed[2];        // the half may hold resident pages (0 after a purge)
  uint64_t half_free_since[2];   // when the half became entirely free
  alignas(64) uint8_t arena;     // fixed at creation; read by the free fast path
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
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  return &small_chunk_of(p)->pages[(a >> kPageShift) & (kPagesPerChunk - 1)];
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
  char* base = page_start(pg);
  while (got < carve_want && pg->carved + pg->block_size <= kPageSize) {
    Block* b = reinterpret_cast<Block*>(base + pg->carved);
    pg->carved += pg->block_size;
    pg->nblocks++;
    pg->used++;
    m.push(b);
    got++;
  }
}

// Units of the bundle run p heads, or 0 when p is not the head of a run in use.
inline uint32_t bundle_run_units(const void* p) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (a & (kUnitSize - 1)) return 0;
  const BundleChunk* ch = bundle_chunk_of(p);
  uint32_t u = static_cast<uint32_t>((a & kChunkMask) >> kUnitShift);
  if (u == 0 || ch->state[u] != kUnitHead) return 0;
  return ch->run[u];
}

}  // namespace hakmem
