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

// The block last compiled, and its generation if that compile found no rules (else
// UINT64_MAX): what site_rules_quiet compares with.
extern std::atomic<const proto::RuleBlock*> g_compiled_block;
extern std::atomic<uint64_t> g_quiet_gen;
// True when the table is current for `rb` and empty: no rule can apply and no compile is
// due, so the site path only samples. One acquire load of the segment and two of ours.
inline bool site_rules_quiet(const proto::RuleBlock& rb) {
  return rb.generation.load(std::memory_order_acquire) == g_quiet_gen.load(std::memory_order_relaxed) &&
         &rb == g_compiled_block.load(std::memory_order_relaxed);
}

}  // namespace hakmem
