// Bit maps of a bundle chunk's units (arena.cc): bit u is unit u, least significant bit of
// word 0 first. Word-at-a-time helpers; the map is `nbits` long, a multiple of 64.
#pragma once

#include <stdint.h>

namespace hakmem {

// First bit >= from whose value equals `want`, or nbits.
inline uint32_t bit_find(const uint64_t* bits, uint32_t nbits, uint32_t from, bool want) {
  while (from < nbits) {
    uint64_t w = bits[from >> 6];
    if (!want) w = ~w;
    w &= ~uint64_t{0} << (from & 63);
    if (w) return (from & ~63u) + static_cast<uint32_t>(__builtin_ctzll(w));
    from = (from & ~63u) + 64;
  }
  return nbits;
}

// One past the last bit below `from` whose value equals `want`, or 0: where the run of
// !want bits that ends at `from` starts.
inline uint32_t bit_find_back(const uint64_t* bits, uint32_t from, bool want) {
  while (from > 0) {
    const uint32_t w = (from - 1) >> 6;
    uint64_t x = bits[w];
    if (!want) x = ~x;
    const uint32_t below = from - w * 64;  // bits [0, below) of word w lie below `from`
    if (below < 64) x &= (uint64_t{1} << below) - 1;
    if (x) return w * 64 + 64 - static_cast<uint32_t>(__builtin_clzll(x));
    from = w * 64;
  }
  return 0;
}

// The bits of word w (0-based) that fall in [u, u + n), as a mask.
inline uint64_t range_mask(uint32_t w, uint32_t u, uint32_t n) {
  const uint32_t lo = u > w * 64 ? u - w * 64 : 0, hi = u + n < (w + 1) * 64 ? u + n - w * 64 : 64;
  if (lo >= hi) return 0;
  const uint64_t below_hi = hi == 64 ? ~uint64_t{0} : (uint64_t{1} << hi) - 1;
  return below_hi & (~uint64_t{0} << lo);
}

inline void bits_set_range(uint64_t* bits, uint32_t u, uint32_t n, bool v) {
  if (n == 0) return;
  for (uint32_t w = u >> 6; w <= (u + n - 1) >> 6; w++) {
    const uint64_t m = range_mask(w, u, n);
    bits[w] = v ? bits[w] | m : bits[w] & ~m;
  }
}

// Population count without the POPCNT instruction (the library targets baseline x86-64,
// where __builtin_popcountll is a call into libgcc).
inline uint32_t popcount64(uint64_t x) {
  x = x - ((x >> 1) & 0x5555555555555555ull);
  x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
  x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
  return static_cast<uint32_t>((x * 0x0101010101010101ull) >> 56);
}

inline uint32_t bits_count_range(const uint64_t* bits, uint32_t u, uint32_t n) {
  uint32_t c = 0;
  if (n == 0) return 0;
  for (uint32_t w = u >> 6; w <= (u + n - 1) >> 6; w++) c += popcount64(bits[w] & range_mask(w, u, n));
  return c;
}

// The longest run of ones inside one word that is not all ones: the greedy sum of powers of
// two over the masks of positions that start a run of at least 1, 2, 4, ... 32 ones.
inline uint32_t longest_ones_in_word(uint64_t x) {
  uint64_t starts[6];  // starts[j]: bit i set when bits i .. i + 2^j - 1 are all set
  starts[0] = x;
  for (uint32_t j = 1; j < 6; j++) starts[j] = starts[j - 1] & (starts[j - 1] >> (1u << (j - 1)));
  uint32_t k = 0;
  uint64_t at = ~uint64_t{0};  // positions that start a run of at least k ones
  for (uint32_t j = 6; j-- > 0;) {
    const uint64_t t = at & (starts[j] >> k);
    if (t) {
      at = t;
      k += 1u << j;
    }
  }
  return k;
}

// The longest run of ones in the map: runs inside a word, and runs that carry across words.
inline uint32_t longest_ones(const uint64_t* bits, uint32_t nbits) {
  uint32_t best = 0, carry = 0;  // carry: the ones at the top of the words so far
  for (uint32_t w = 0; w < nbits / 64; w++) {
    const uint64_t x = bits[w];
    if (x == ~uint64_t{0}) {
      carry += 64;
      continue;
    }
    const uint32_t low = static_cast<uint32_t>(__builtin_ctzll(~x));
    if (carry + low > best) best = carry + low;
    const uint32_t inside = longest_ones_in_word(x);
    if (inside > best) best = inside;
    carry = static_cast<uint32_t>(__builtin_clzll(~x));
  }
  return carry > best ? carry : best;
}

}  // namespace hakmem
