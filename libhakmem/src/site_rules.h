// The process's compiled site rules: the segment's RuleBlock, validated, turned into a small
// open-addressing hash of return address -> action. Compiled when the rule generation moves
// (site_rules_refresh, called on the site path only); looked up in O(1) on every allocation
// the site path sees. Readers never block: the table is a seqlock, a reader that races a
// compile just misses the rules for that one allocation.
//
// No allocation, no locks malloc could hold; safe before main and in fork children.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "hakmem/proto/segment.h"

namespace hakmem {

struct SiteAction {
  uint32_t id;      // rule id (for hit accounting and tests)
  int32_t tier;     // proto::RuleTier
  uint32_t cap;     // 0 = unchanged
  int32_t prewarm;  // -1 unchanged, 0 off, 1 on
};

// Rebuilds the table from `rb` when its generation (or the block itself, after fork)
// changed since the last compile. Returns quickly otherwise (one acquire load). If another
// thread is compiling, returns at once and the old table stays in use.
void site_rules_refresh(proto::RuleBlock& rb);
// Unconditional compile (tests): returns the number of valid rules; *rejected = malformed.
uint32_t site_rules_compile(const proto::RuleBlock& rb, uint32_t* rejected);
// The first rule (lowest slot) for `site` whose size range holds `size`.
bool site_rules_lookup(uint64_t site, uint64_t size, SiteAction* out);
// Number of valid rules in the table (0: the lookup is skipped altogether).
uint32_t site_rules_count();

// For the inline check below (site_rules.cc): the block and generation compiled last, the
// table's seqlock (odd while a compile rewrites it), and one bit per table slot that is the
// home slot (the first probed) of some rule's site.
inline constexpr uint32_t kRuleTableBits = 7;
extern std::atomic<const proto::RuleBlock*> g_compiled_block;
extern std::atomic<uint64_t> g_compiled_gen;
extern std::atomic<uint32_t> g_rule_seq;
extern std::atomic<uint64_t> g_rule_homes[2];
inline uint32_t rule_home(uint64_t site) {
  return static_cast<uint32_t>((site * 0x9E3779B97F4A7C15ull) >> (64 - kRuleTableBits));
}
// True when no rule can apply to `site`: the table is current for `rb` (no compile due) and
// no rule's site has the home slot `site` has. False when that is not certain (a compile
// due or running, or a rule sharing the home slot): the caller then takes site_malloc, which
// compiles and looks up. No rules at all is the common case; a handful of rules leaves most
// call sites' home slots free (128 slots).
inline bool site_rules_none_for(const proto::RuleBlock& rb, uint64_t site) {
  if (rb.generation.load(std::memory_order_acquire) != g_compiled_gen.load(std::memory_order_relaxed) ||
      &rb != g_compiled_block.load(std::memory_order_relaxed))
    return false;
  const uint32_t s1 = g_rule_seq.load(std::memory_order_acquire);
  const uint32_t h = rule_home(site);
  const uint64_t homes = g_rule_homes[h >> 6].load(std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_acquire);
  return (s1 & 1) == 0 && g_rule_seq.load(std::memory_order_relaxed) == s1 && ((homes >> (h & 63)) & 1) == 0;
}

}  // namespace hakmem
