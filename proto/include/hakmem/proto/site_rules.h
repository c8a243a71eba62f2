// Site rules in the segment's RuleBlock: the one definition of what a valid rule is and of
// the seq protocol that writes and reads it. hakmemd writes rules with rule_write() after
// rule_check() accepted them; libhakmem reads them with rule_read() and applies rule_check()
// again (the block is shared memory: anything may be in it), ignoring what fails.
//
// Header-only, no allocation: libhakmem includes it inside malloc.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <atomic>

#include "hakmem/proto/segment.h"

namespace hakmem::proto {

inline constexpr uint32_t kRuleCapMax = 1024;  // same bound as tiny.cap
// RuleTier names, index = tier value (None is "-").
inline constexpr const char* kRuleTierNames[] = {"tiny", "pool", "bundle", "whale", "system"};
inline constexpr int32_t kRuleTierMax = static_cast<int32_t>(RuleTier::System);

// A rule's fields as plain values.
struct RuleValue {
  uint32_t id = 0;
  uint64_t site = 0;
  uint64_t min_size = 0;
  uint64_t max_size = 0;  // 0 = no upper bound
  int32_t tier = static_cast<int32_t>(RuleTier::None);
  uint32_t cap = 0;       // 0 = unchanged
  int32_t prewarm = -1;   // -1 unchanged, 0 off, 1 on
};

enum class RuleCheck { Ok, Empty, Busy, Torn, BadId, BadSite, BadTier, BadRange, BadCap, BadPrewarm, NoAction };

constexpr const char* rule_check_text(RuleCheck c) {
  switch (c) {
    case RuleCheck::Ok: return "ok";
    case RuleCheck::Empty: return "empty slot";
    case RuleCheck::Busy: return "being written (odd seq)";
    case RuleCheck::Torn: return "changed while being read";
    case RuleCheck::BadId: return "rule id must be > 0";
    case RuleCheck::BadSite: return "site address must not be 0";
    case RuleCheck::BadTier: return "tier must be tiny, pool, bundle, whale or system";
    case RuleCheck::BadRange: return "size range: min must not exceed max";
    case RuleCheck::BadCap: return "cap must be 0..1024";
    case RuleCheck::BadPrewarm: return "prewarm must be -1, 0 or 1";
    case RuleCheck::NoAction: return "a rule needs an action: tier, cap or prewarm";
  }
  return "?";
}

constexpr RuleCheck rule_check(const RuleValue& v) {
  if (v.id == 0) return RuleCheck::BadId;
  if (v.site == 0) return RuleCheck::BadSite;
  if (v.tier < static_cast<int32_t>(RuleTier::None) || v.tier > kRuleTierMax) return RuleCheck::BadTier;
  if (v.max_size != 0 && v.min_size > v.max_size) return RuleCheck::BadRange;
  if (v.cap > kRuleCapMax) return RuleCheck::BadCap;
  if (v.prewarm < -1 || v.prewarm > 1) return RuleCheck::BadPrewarm;
  if (v.tier == static_cast<int32_t>(RuleTier::None) && v.cap == 0 && v.prewarm == -1) return RuleCheck::NoAction;
  return RuleCheck::Ok;
}

// Reader side of the seq protocol: Ok with *out filled, Empty/Busy/Torn, or what
// rule_check() finds wrong.
inline RuleCheck rule_read(const SiteRule& r, RuleValue* out) {
  const uint32_t s1 = r.seq.load(std::memory_order_acquire);
  if (s1 == 0) return RuleCheck::Empty;
  if (s1 & 1) return RuleCheck::Busy;
  RuleValue v;
  v.id = __atomic_load_n(&r.id, __ATOMIC_RELAXED);
  v.site = __atomic_load_n(&r.site, __ATOMIC_RELAXED);
  v.min_size = __atomic_load_n(&r.min_size, __ATOMIC_RELAXED);
  v.max_size = __atomic_load_n(&r.max_size, __ATOMIC_RELAXED);
  v.tier = __atomic_load_n(&r.tier, __ATOMIC_RELAXED);
  v.cap = __atomic_load_n(&r.cap, __ATOMIC_RELAXED);
  v.prewarm = __atomic_load_n(&r.prewarm, __ATOMIC_RELAXED);
  std::atomic_thread_fence(std::memory_order_acquire);
  if (r.seq.load(std::memory_order_relaxed) != s1) return RuleCheck::Torn;
  *out = v;
  return rule_check(v);
}

// Writer side (hakmemd): seq odd, fields, seq even. `v` == nullptr empties the slot.
// The caller bumps RuleBlock::generation (release) after its last write.
inline void rule_write(SiteRule& r, const RuleValue* v) {
  uint32_t s = r.seq.load(std::memory_order_relaxed);
  r.seq.store(s | 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  const RuleValue z{};
  const RuleValue& w = v ? *v : z;
  __atomic_store_n(&r.id, w.id, __ATOMIC_RELAXED);
  __atomic_store_n(&r.site, w.site, __ATOMIC_RELAXED);
  __atomic_store_n(&r.min_size, w.min_size, __ATOMIC_RELAXED);
  __atomic_store_n(&r.max_size, w.max_size, __ATOMIC_RELAXED);
  __atomic_store_n(&r.tier, w.tier, __ATOMIC_RELAXED);
  __atomic_store_n(&r.cap, w.cap, __ATOMIC_RELAXED);
  __atomic_store_n(&r.prewarm, w.prewarm, __ATOMIC_RELAXED);
  __atomic_store_n(&r.reserved, 0u, __ATOMIC_RELAXED);
  // An emptied slot goes back to 0; a written one to the next even value (never 0).
  uint32_t next = (s | 1) + 1;
  if (next == 0) next = 2;
  r.seq.store(v ? next : 0, std::memory_order_release);
}

// SiteEntry::hist bucket of an allocation size: [0] <= 16 B, [b] <= 16 << b, [15] > 256 KiB.
constexpr size_t site_hist_bucket(uint64_t size) {
  if (size <= 16) return 0;
  const size_t lg = 64 - static_cast<size_t>(__builtin_clzll(size - 1));  // ceil(log2(size))
  const size_t b = lg - 4;
  return b < kSiteHistBuckets ? b : kSiteHistBuckets - 1;
}

}  // namespace hakmem::proto
