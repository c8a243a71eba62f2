// Size-class math of the three class-based tiers, constexpr and allocation-free so it is
// unit-tested on its own. Invariants (checked by static_asserts and tests):
//  - every tiny and pool class size is a multiple of 16 (malloc's 16-byte alignment);
//  - class_size(class_of(n)) >= n and class_of is monotonic;
//  - consecutive classes differ by at most 25 %, bounding internal fragmentation.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace hakmem {

// --- tiny: 16 B .. 1 KiB, slabs of 64 KiB owned by a thread ---
inline constexpr size_t kTinyMax = 1024;
inline constexpr uint32_t kTinyClasses = 20;
inline constexpr uint32_t kTinyClassSize[kTinyClasses] = {
    16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024};

namespace detail {
// Entries are class * 8: the fast paths index 16-byte magazines and 8-byte counters with
// it through an address scale, without a shift of their own.
struct TinyLut {
  uint8_t cls_x8[kTinyMax / 16 + 1];
};
static_assert((kTinyClasses - 1) * 8 <= 255, "class * 8 fits the table's bytes");
constexpr TinyLut make_tiny_lut() {
  TinyLut t{};
  uint32_t c = 0;
  for (size_t i = 0; i <= kTinyMax / 16; i++) {
    size_t n = i * 16;
    while (kTinyClassSize[c] < n) c++;
    t.cls_x8[i] = static_cast<uint8_t>(c * 8);
  }
  return t;
}
inline constexpr TinyLut kTinyLut = make_tiny_lut();
}  // namespace detail

// Pre-condition: n <= kTinyMax. One table load.
inline uint32_t tiny_class_x8(size_t n) { return detail::kTinyLut.cls_x8[(n + 15) >> 4]; }
inline uint32_t tiny_class_of(size_t n) { return tiny_class_x8(n) >> 3; }

// --- pool: 1 KiB .. 32 KiB, four classes per power of two, 64 KiB pages shared by shard ---
inline constexpr size_t kPoolMax = 32 * 1024;
inline constexpr uint32_t kPoolClasses = 20;
// Pre-condition: kTinyMax < n <= kPoolMax.
inline constexpr uint32_t pool_class_of(size_t n) {
  size_t m = n - 1;
  uint32_t e = 63u - static_cast<uint32_t>(__builtin_clzll(m));  // floor(log2(n-1)), 10..14
  return (e - 10) * 4 + static_cast<uint32_t>((m >> (e - 2)) & 3);
}
inline constexpr uint32_t pool_class_size(uint32_t c) {
  return (4u + c % 4 + 1) << (10 + c / 4 - 2);
}

// --- bundle: 32 KiB .. 1 MiB, runs of 16 KiB units inside THP-aligned 4 MiB chunks ---
inline constexpr size_t kBundleMax = 1024 * 1024;
inline constexpr size_t kUnitShift = 14;
inline constexpr size_t kUnitSize = size_t{1} << kUnitShift;
// Aligned requests of bundle sizes get a run that starts on a multiple of the alignment (up
// to this one, 64 units: such starts exist in both halves of a chunk); above it, a whale.
inline constexpr size_t kBundleMaxAlign = size_t{1} << 20;
// Cache colour: a bundle block starts a few lines (a multiple of 64 bytes, at most
// kColourMax) into its run, so that a program walking it page by page writes the same
// line of every page, and that line is not the page-offset-0 one. Page offset 0 is the L1
// set of every page-aligned structure (the kernel's and the program's as much as ours): a
// page walk there ran 47-50 ns/iter against 31-35 on other sets, with glibc too (whose
// blocks start 16 bytes past a chunk header, so its json walk is never on line 0).
inline constexpr size_t kColourMax = 320;
// Only runs of up to 17 units (blocks up to 256 KiB, 64 pages) are coloured. Past that a
// page walk's lines overflow the L1 set many times over wherever they are, and the room for
// a colour would cost the common power-of-two sizes a unit each (a 1 MiB block 65 units,
// which no longer pack two to a 2 MiB half: mixed took 1.8 k more page faults).
inline constexpr uint32_t kColourUnits = 17;
// Run length for a block that must start on its run (aligned requests: colour 0).
inline constexpr uint32_t bundle_units_uncoloured(size_t n) {
  return static_cast<uint32_t>((n + kUnitSize - 1) >> kUnitShift);
}
// Run length in units for a block of n bytes (kPoolMax < n <= kBundleMax): runs of up to
// kColourUnits have room for any colour; longer ones have none and are never coloured. So
// the run length alone says whether a run is coloured, and any run of a bin fits every
// request that maps to that bin.
inline constexpr uint32_t bundle_units_of(size_t n) {
  const uint32_t u = bundle_units_uncoloured(n + kColourMax);
  if (u <= kColourUnits) return u;
  const uint32_t v = bundle_units_uncoloured(n);
  return v > kColourUnits ? v : kColourUnits + 1;
}
inline constexpr uint32_t kBundleMinUnits = bundle_units_uncoloured(kPoolMax + 1);  // 3
inline constexpr uint32_t kBundleMaxUnits = bundle_units_of(kBundleMax);            // 64
inline constexpr uint32_t kBundleBins = kBundleMaxUnits - kBundleMinUnits + 1;

// Block-start check without a division (Granlund-Montgomery divisibility test). With
// d = odd * 2^shift and inv = odd^-1 mod 2^32, block_index(off) = rotr32(off * inv, shift)
// equals off / d when d divides off, and exceeds (2^32 - 1) / d (>= 2^16 for d <= 2^16)
// otherwise. So `block_index(off) < blocks` says "off is the start of one of the first
// `blocks` blocks" in a multiply, a rotate and a compare.
struct BlockDiv {
  uint32_t inv;
  uint8_t shift;
};
inline constexpr BlockDiv block_div(uint32_t d) {
  uint8_t k = 0;
  while ((d & 1) == 0) {
    d >>= 1;
    k++;
  }
  uint32_t x = d;  // Newton's iteration: each step doubles the correct low bits (3 -> 48)
  for (int i = 0; i < 4; i++) x *= 2 - d * x;
  return BlockDiv{x, k};
}
inline constexpr uint32_t block_index(uint32_t off, uint32_t inv, uint32_t shift) {
  uint32_t x = off * inv;
  return shift ? (x >> shift) | (x << (32 - shift)) : x;
}

static_assert(pool_class_size(0) == 1280 && pool_class_size(kPoolClasses - 1) == kPoolMax);
static_assert(pool_class_of(kTinyMax + 1) == 0 && pool_class_of(kPoolMax) == kPoolClasses - 1);
static_assert(kBundleMinUnits == 3 && kBundleMaxUnits == 64 && bundle_units_of(kPoolMax + 1) == 3);
static_assert(bundle_units_of(kColourUnits * kUnitSize - kColourMax) == kColourUnits &&
              bundle_units_of(kColourUnits * kUnitSize - kColourMax + 1) == kColourUnits + 1 &&
              bundle_units_of((kColourUnits + 1) * kUnitSize) == kColourUnits + 1);

}  // namespace hakmem
