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
struct TinyLut {
  uint8_t cls[kTinyMax / 16 + 1];
};
constexpr TinyLut make_tiny_lut() {
  TinyLut t{};
  uint32_t c = 0;
  for (size_t i = 0; i <= kTinyMax / 16; i++) {
    size_t n = i * 16;
    while (kTinyClassSize[c] < n) c++;
    t.cls[i] = static_cast<uint8_t>(c);
  }
  return t;
}
inline constexpr TinyLut kTinyLut = make_tiny_lut();
}  // namespace detail

// Pre-condition: n <= kTinyMax. One table load.
inline uint32_t tiny_class_of(size_t n) { return detail::kTinyLut.cls[(n + 15) >> 4]; }

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
inline constexpr uint32_t kBundleMinUnits = static_cast<uint32_t>((kPoolMax + kUnitSize) / kUnitSize);  // 3
inline constexpr uint32_t kBundleMaxUnits = static_cast<uint32_t>(kBundleMax / kUnitSize);            // 64
inline constexpr uint32_t kBundleBins = kBundleMaxUnits - kBundleMinUnits + 1;
// Pre-condition: kPoolMax < n <= kBundleMax. Returns the run length in units.
inline constexpr uint32_t bundle_units_of(size_t n) {
  return static_cast<uint32_t>((n + kUnitSize - 1) >> kUnitShift);
}

// ceil(2^32 / d): (off * magic) >> 32 == off / d exactly for off < 2^16 and d <= 2^16
// (the error term off * (magic * d - 2^32) stays below 2^32). Used to check that a pointer
// is the start of a block without a division on the free path.
inline constexpr uint32_t div_magic(uint32_t d) {
  return static_cast<uint32_t>(((uint64_t{1} << 32) + d - 1) / d);
}
inline constexpr uint32_t div_by_magic(uint32_t off, uint32_t magic) {
  return static_cast<uint32_t>((static_cast<uint64_t>(off) * magic) >> 32);
}

static_assert(pool_class_size(0) == 1280 && pool_class_size(kPoolClasses - 1) == kPoolMax);
static_assert(pool_class_of(kTinyMax + 1) == 0 && pool_class_of(kPoolMax) == kPoolClasses - 1);
static_assert(kBundleMinUnits == 3 && kBundleMaxUnits == 64);

}  // namespace hakmem
