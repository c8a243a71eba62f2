// The knob table as C++ data, plus the one parser and formatter of knob values.
// Header-only, constexpr, no allocation, no exceptions: libhakmem uses it inside malloc,
// hakmemd and hakctl use the very same code, so all three accept and refuse the same input.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace hakmem::proto {

enum class KnobType : uint8_t { Bool, Uint, Size, Millis };
enum class KnobMode : uint8_t { Live, Restart };

enum class Knob : uint32_t {
#define HAKMEM_KNOB(ID, NAME, TYPE, DEF, MIN, MAX, MODE, ENV, HELP) ID,
#include "hakmem/proto/knobs.def"
#undef HAKMEM_KNOB
  Count
};

inline constexpr size_t kKnobCount = static_cast<size_t>(Knob::Count);
// Room in the shm knob block; appending knobs up to this needs no layout change.
inline constexpr size_t kKnobSlots = 32;
static_assert(kKnobCount <= kKnobSlots, "knob block is full: raise kKnobSlots and kLayoutVersion");

struct KnobInfo {
  Knob id;
  const char* name;  // dotted name, "tiny.cap"
  KnobType type;
  uint64_t def;      // default
  uint64_t min;      // inclusive
  uint64_t max;      // inclusive
  KnobMode mode;
  const char* env;   // "HAKMEM_TINY_CAP"
  const char* help;
};

inline constexpr KnobInfo kKnobs[kKnobCount] = {
#define HAKMEM_KNOB(ID, NAME, TYPE, DEF, MIN, MAX, MODE, ENV, HELP) \
  {Knob::ID, NAME, KnobType::TYPE, DEF, MIN, MAX, KnobMode::MODE, ENV, HELP},
#include "hakmem/proto/knobs.def"
#undef HAKMEM_KNOB
};

constexpr bool knob_table_valid() {
  for (size_t i = 0; i < kKnobCount; i++) {
    const KnobInfo& k = kKnobs[i];
    if (static_cast<size_t>(k.id) != i) return false;
    if (!(k.min <= k.def && k.def <= k.max)) return false;
    if (k.type == KnobType::Bool && k.max > 1) return false;
  }
  return true;
}
static_assert(knob_table_valid(), "knobs.def: a default lies outside its range");

constexpr const KnobInfo& knob_info(Knob k) { return kKnobs[static_cast<size_t>(k)]; }

namespace detail {
constexpr bool str_eq(const char* a, const char* b) {
  while (*a && *a == *b) { a++; b++; }
  return *a == *b;
}
constexpr char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
constexpr bool str_ieq(const char* a, const char* b) {
  while (*a && lower(*a) == lower(*b)) { a++; b++; }
  return lower(*a) == lower(*b);
}
}  // namespace detail

// Finds a knob by dotted name; nullptr when unknown.
constexpr const KnobInfo* knob_find(const char* name) {
  for (const KnobInfo& k : kKnobs)
    if (detail::str_eq(k.name, name)) return &k;
  return nullptr;
}

enum class ParseError : uint8_t { Ok, Empty, Syntax, Overflow, OutOfRange };

// Parses a value for knob `k`.
//   Bool:   0 1 true false on off yes no (any case)
//   Uint:   decimal or 0x hex
//   Size:   like Uint, with an optional K/M/G/T suffix (powers of 1024, optional trailing B/iB)
//   Millis: like Uint, with an optional ms/s/m suffix
// On OutOfRange *out holds the parsed value so the caller can print it with the range.
constexpr ParseError knob_parse(const KnobInfo& k, const char* s, uint64_t* out) {
  if (s == nullptr || *s == 0) return ParseError::Empty;
  if (k.type == KnobType::Bool) {
    const char* const yes[] = {"1", "true", "on", "yes"};
    const char* const no[] = {"0", "false", "off", "no"};
    for (const char* y : yes) if (detail::str_ieq(s, y)) { *out = 1; return ParseError::Ok; }
    for (const char* n : no) if (detail::str_ieq(s, n)) { *out = 0; return ParseError::Ok; }
    return ParseError::Syntax;
  }
  const char* p = s;
  uint64_t v = 0;
  bool any = false;
  if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
    p += 2;
    for (;; p++) {
      char c = *p;
      unsigned d;
      if (c >= '0' && c <= '9') d = static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') d = static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') d = static_cast<unsigned>(c - 'A' + 10);
      else break;
      if (v > (UINT64_MAX >> 4)) return ParseError::Overflow;
      v = (v << 4) | d;
      any = true;
    }
  } else {
    for (; *p >= '0' && *p <= '9'; p++) {
      uint64_t d = static_cast<uint64_t>(*p - '0');
      if (v > (UINT64_MAX - d) / 10) return ParseError::Overflow;
      v = v * 10 + d;
      any = true;
    }
  }
  if (!any) return ParseError::Syntax;
  uint64_t mul = 1;
  if (*p != 0) {
    if (k.type == KnobType::Size) {
      switch (detail::lower(*p)) {
        case 'k': mul = 1ull << 10; break;
        case 'm': mul = 1ull << 20; break;
        case 'g': mul = 1ull << 30; break;
        case 't': mul = 1ull << 40; break;
        case 'b': mul = 1; break;
        default: return ParseError::Syntax;
      }
      const bool was_b = detail::lower(*p) == 'b';
      p++;
      if (!was_b) {
        if (detail::lower(*p) == 'i') p++;
        if (detail::lower(*p) == 'b') p++;
      }
      if (*p != 0) return ParseError::Syntax;
    } else if (k.type == KnobType::Millis) {
      if (detail::str_ieq(p, "ms")) mul = 1;
      else if (detail::str_ieq(p, "s")) mul = 1000;
      else if (detail::str_ieq(p, "m") || detail::str_ieq(p, "min")) mul = 60000;
      else return ParseError::Syntax;
    } else {
      return ParseError::Syntax;
    }
  }
  if (mul != 1 && v > UINT64_MAX / mul) return ParseError::Overflow;
  v *= mul;
  *out = v;
  if (v < k.min || v > k.max) return ParseError::OutOfRange;
  return ParseError::Ok;
}

// Clamps a value read from untrusted memory (the shm knob block) into the knob's range.
constexpr uint64_t knob_clamp(const KnobInfo& k, uint64_t v) {
  return v < k.min ? k.min : (v > k.max ? k.max : v);
}

// Formats v for knob k into buf (NUL-terminated, truncated to cap). Sizes that are exact
// multiples print with a suffix ("1G", "64K"), booleans as 0/1, millis as plain numbers.
// Returns the length written (excluding NUL). No allocation.
inline size_t knob_format(const KnobInfo& k, uint64_t v, char* buf, size_t cap) {
  if (cap == 0) return 0;
  char tmp[24];
  size_t n = 0;
  const char* suffix = "";
  if (k.type == KnobType::Size && v != 0) {
    const char* const sfx[] = {"T", "G", "M", "K"};
    const unsigned shifts[] = {40, 30, 20, 10};
    for (int i = 0; i < 4; i++) {
      if ((v & ((1ull << shifts[i]) - 1)) == 0) { v >>= shifts[i]; suffix = sfx[i]; break; }
    }
  }
  do { tmp[n++] = static_cast<char>('0' + v % 10); v /= 10; } while (v);
  size_t o = 0;
  while (n && o + 1 < cap) buf[o++] = tmp[--n];
  for (const char* s = suffix; *s && o + 1 < cap; s++) buf[o++] = *s;
  buf[o] = 0;
  return o;
}

// Human text for a parse error, without the range (callers add "must be MIN..MAX").
constexpr const char* parse_error_text(ParseError e) {
  switch (e) {
    case ParseError::Ok: return "ok";
    case ParseError::Empty: return "empty value";
    case ParseError::Syntax: return "not a valid value";
    case ParseError::Overflow: return "value too large";
    case ParseError::OutOfRange: return "out of range";
  }
  return "invalid";
}

constexpr const char* knob_type_name(KnobType t) {
  switch (t) {
    case KnobType::Bool: return "bool";
    case KnobType::Uint: return "uint";
    case KnobType::Size: return "size";
    case KnobType::Millis: return "ms";
  }
  return "?";
}

}  // namespace hakmem::proto
