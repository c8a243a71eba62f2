// Compiled site rules (site_rules.h). The table has twice as many slots as the RuleBlock, so
// linear probing stays short; several rules may share a site (different size ranges), probed
// in slot order, which makes the lowest RuleBlock slot win.
#include "site_rules.h"

#include <atomic>

#include "hakmem/proto/site_rules.h"
#include "os.h"

namespace hakmem {

namespace {

constexpr uint32_t kTableSlots = 1u << kRuleTableBits;
static_assert(kTableSlots >= 2 * proto::kRuleSlots, "keep the load factor at or below one half");
static_assert(kTableSlots == 64 * (sizeof g_rule_homes / sizeof g_rule_homes[0]), "a home bit per slot");

struct Compiled {
  std::atomic<uint64_t> site;    // 0 = empty
  std::atomic<uint64_t> min_size;
  std::atomic<uint64_t> max_size;  // UINT64_MAX when unbounded
  std::atomic<uint64_t> action;  // id:32 | cap:16 | (prewarm+1):8 | (tier+1):8
};

Compiled g_table[kTableSlots];
std::atomic<uint32_t> g_count{0};
// Pid of the process whose thread compiles, 0 when none: a fork child inherits the value of a
// parent caught mid-compile and takes the lock over instead of never compiling again.
std::atomic<int32_t> g_compiling{0};

uint64_t pack(const proto::RuleValue& v) {
  return (uint64_t{v.id} << 32) | (uint64_t{v.cap & 0xffff} << 16) |
         (uint64_t{static_cast<uint8_t>(v.prewarm + 1)} << 8) | static_cast<uint8_t>(v.tier + 1);
}

SiteAction unpack(uint64_t a) {
  SiteAction s;
  s.id = static_cast<uint32_t>(a >> 32);
  s.cap = static_cast<uint32_t>((a >> 16) & 0xffff);
  s.prewarm = static_cast<int32_t>((a >> 8) & 0xff) - 1;
  s.tier = static_cast<int32_t>(a & 0xff) - 1;
  return s;
}

}  // namespace

std::atomic<uint32_t> g_rule_seq{0};
std::atomic<uint64_t> g_rule_homes[2];
std::atomic<uint64_t> g_compiled_gen{UINT64_MAX};
std::atomic<const proto::RuleBlock*> g_compiled_block{nullptr};

uint32_t site_rules_compile(const proto::RuleBlock& rb, uint32_t* rejected) {
  uint32_t s = g_rule_seq.load(std::memory_order_relaxed);
  g_rule_seq.store(s + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  for (auto& e : g_table) e.site.store(0, std::memory_order_relaxed);
  uint32_t n = 0, bad = 0;
  uint64_t homes[2] = {0, 0};
  for (const proto::SiteRule& r : rb.rules) {
    proto::RuleValue v;
    proto::RuleCheck c = proto::rule_read(r, &v);
    // A rule caught mid-write is read again once; a writer holds it odd for nanoseconds.
    if (c == proto::RuleCheck::Busy || c == proto::RuleCheck::Torn) c = proto::rule_read(r, &v);
    if (c == proto::RuleCheck::Empty) continue;
    if (c != proto::RuleCheck::Ok) {
      bad++;
      continue;
    }
    const uint32_t h = rule_home(v.site);
    homes[h >> 6] |= uint64_t{1} << (h & 63);
    for (uint32_t i = 0; i < kTableSlots; i++) {
      Compiled& e = g_table[(h + i) & (kTableSlots - 1)];
      if (e.site.load(std::memory_order_relaxed) != 0) continue;
      e.min_size.store(v.min_size, std::memory_order_relaxed);
      e.max_size.store(v.max_size ? v.max_size : UINT64_MAX, std::memory_order_relaxed);
      e.action.store(pack(v), std::memory_order_relaxed);
      e.site.store(v.site, std::memory_order_relaxed);
      n++;
      break;
    }
  }
  g_count.store(n, std::memory_order_relaxed);
  g_rule_homes[0].store(homes[0], std::memory_order_relaxed);
  g_rule_homes[1].store(homes[1], std::memory_order_relaxed);
  g_rule_seq.store(s + 2, std::memory_order_release);
  if (rejected) *rejected = bad;
  return n;
}

void site_rules_refresh(proto::RuleBlock& rb) {
  const uint64_t gen = rb.generation.load(std::memory_order_acquire);
  if (__builtin_expect(gen == g_compiled_gen.load(std::memory_order_relaxed) &&
                           &rb == g_compiled_block.load(std::memory_order_relaxed), 1))
    return;
  const int32_t me = os_pid();
  int32_t holder = 0;
  if (!g_compiling.compare_exchange_strong(holder, me, std::memory_order_acquire)) {
    if (holder == me || !g_compiling.compare_exchange_strong(holder, me, std::memory_order_acquire)) return;
  }
  uint32_t rejected = 0;
  const uint32_t n = site_rules_compile(rb, &rejected);
  g_compiled_gen.store(gen, std::memory_order_relaxed);
  g_compiled_block.store(&rb, std::memory_order_relaxed);
  rb.rules_active.store(n, std::memory_order_relaxed);
  rb.rules_rejected.store(rejected, std::memory_order_relaxed);
  rb.applied_generation.store(gen, std::memory_order_release);
  g_compiling.store(0, std::memory_order_release);
}

bool site_rules_lookup(uint64_t site, uint64_t size, SiteAction* out) {
  const uint32_t s1 = g_rule_seq.load(std::memory_order_acquire);
  if (s1 & 1) return false;
  bool found = false;
  uint64_t action = 0;
  for (uint32_t i = 0, h = rule_home(site); i < kTableSlots; i++) {
    const Compiled& e = g_table[(h + i) & (kTableSlots - 1)];
    const uint64_t a = e.site.load(std::memory_order_relaxed);
    if (a == 0) break;
    if (a == site && size >= e.min_size.load(std::memory_order_relaxed) &&
        size <= e.max_size.load(std::memory_order_relaxed)) {
      action = e.action.load(std::memory_order_relaxed);
      found = true;
      break;
    }
  }
  std::atomic_thread_fence(std::memory_order_acquire);
  if (g_rule_seq.load(std::memory_order_relaxed) != s1) return false;
  if (found) *out = unpack(action);
  return found;
}

uint32_t site_rules_count() { return g_count.load(std::memory_order_relaxed); }

}  // namespace hakmem
