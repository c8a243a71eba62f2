// The site path (site.h): rule routing and byte sampling into the segment's site table.
//
// Routing. A rule's tier takes the allocation when the size fits that tier, rounded up to the
// tier's smallest size if needed (a 100-byte request routed to bundle gets a 32 KiB+ run);
// a size above the tier's largest is served as usual. "system" means memory straight from
// the OS: a fresh mapping of its own per block (the whale mapping path, which hakmem's free()
// recognises), never carved from a shared slab or run, never taken from or given to the
// whale cache: free() unmaps it at once. It cannot mean glibc's malloc: under
// LD_PRELOAD its blocks would come back to our free(). cap=N sets the magazine capacity of
// the size class the site's allocations use (tiny and pool; for the allocating thread, until
// the next tiny.cap change). prewarm=on faults the block's pages in before it is returned;
// prewarm=off keeps the tier's own prewarm knob from doing so for the site's allocations.
//
// Sampling (like tcmalloc's): each thread counts bytes down from a random period
// (exponential, mean kSiteSampleMean); the allocation that crosses zero is sampled and stands
// for max(period, n) bytes and max(1, period / n) allocations. The site table is open
// addressing on the address; an empty entry is claimed with one CAS; a full probe window
// counts the sample as dropped.
#include "site.h"

#include <errno.h>
#include <string.h>

#include "alloc.h"
#include "control_internal.h"
#include "hakmem/proto/site_rules.h"
#include "heap.h"
#include "os.h"
#include "site_rules.h"
#include "sizeclass.h"

namespace hakmem {

constinit thread_local SiteThread t_site __attribute__((tls_model("initial-exec"))) = {0, 0, 0};

using proto::RuleTier;
using proto::Tier;

namespace {

constexpr uint32_t kProbe = 32;  // site-table entries tried before a sample is dropped

uint64_t next_random(SiteThread& t) {
  // xorshift64*: plenty for sampling intervals.
  t.rng ^= t.rng >> 12;
  t.rng ^= t.rng << 25;
  t.rng ^= t.rng >> 27;
  return t.rng * 0x2545F4914F6CDD1Dull;
}

// An exponential draw with mean kSiteSampleMean without libm: -ln(u) from log2 by the
// exponent plus a quadratic fit of the mantissa (error < 1 %, ample for a sampling period).
uint64_t next_period(SiteThread& t) {
  uint64_t x = (next_random(t) >> 11) | 1;  // uniform in [1, 2^53)
  int e = 63 - __builtin_clzll(x);
  double m = static_cast<double>(x) / static_cast<double>(uint64_t{1} << e) - 1.0;  // [0, 1)
  double lg = e + m * (1.3466 - 0.3466 * m);
  double draw = (53.0 - lg) * 0.69314718055994531 * static_cast<double>(kSiteSampleMean);
  if (draw < 1.0) draw = 1.0;
  if (draw > 64.0 * kSiteSampleMean) draw = 64.0 * kSiteSampleMean;
  return static_cast<uint64_t>(draw);
}

Tier default_tier(size_t n) {
  if (n <= kTinyMax) return Tier::Tiny;
  if (n <= kPoolMax) return Tier::Pool;
  if (n <= kBundleMax) return Tier::Bundle;
  return Tier::Whale;
}

void record_sample(uint64_t site, size_t n, uint64_t period, Tier tier) {
  proto::Segment* s = control_segment_ptr();
  const uint64_t weight_bytes = period > n ? period : n;
  const uint64_t weight_count = n != 0 && period > n ? period / n : 1;
  const uint32_t h = static_cast<uint32_t>((site * 0x9E3779B97F4A7C15ull) >> 32);
  for (uint32_t i = 0; i < kProbe; i++) {
    proto::SiteEntry& e = s->sites[(h + i) % proto::kSiteSlots];
    uint64_t a = e.addr.load(std::memory_order_relaxed);
    if (a == 0) {
      uint64_t expected = 0;
      if (e.addr.compare_exchange_strong(expected, site, std::memory_order_relaxed)) a = site;
      else a = expected;
    }
    if (a != site) continue;
    e.samples.fetch_add(1, std::memory_order_relaxed);
    e.bytes.fetch_add(weight_bytes, std::memory_order_relaxed);
    e.hist[proto::site_hist_bucket(n)].fetch_add(weight_count, std::memory_order_relaxed);
    e.last_tier.store(static_cast<uint32_t>(tier), std::memory_order_relaxed);
    return;
  }
  s->rules.sites_dropped.fetch_add(1, std::memory_order_relaxed);
}

Heap* attached_heap() {
  Heap* h = t_heap;
  if (h == &g_empty_heap) h = heap_get_slow();
  return h;
}

// Pages wholly inside [p, p + n) faulted in now.
void prefault(void* p, size_t n) {
  const uintptr_t page = os_page_size();
  uintptr_t a = (reinterpret_cast<uintptr_t>(p) + page - 1) & ~(page - 1);
  uintptr_t b = (reinterpret_cast<uintptr_t>(p) + n) & ~(page - 1);
  if (b > a) os_populate(reinterpret_cast<void*>(a), b - a);
}

void apply_cap(size_t n, uint32_t cap) {
  Heap* h = attached_heap();
  if (!h || n > kPoolMax) return;
  if (n <= kTinyMax) {
    uint32_t c = tiny_class_of(n);
    if (h->tiny[c].cap == cap) return;
    tiny_drain_delayed(h);  // the magazine may be in a teardown's bypass
    if (h->tiny[c].count() > cap) tiny_flush(h, c, cap);
    h->tiny[c].set_cap(cap);
    h->tiny_direct[c] = 0;  // counts from the new capacity (and out of a bypass)
  } else {
    uint32_t c = pool_class_of(n);
    if (h->pool[c].cap == cap) return;
    if (h->pool[c].count() > cap) pool_flush(h, c, cap);
    h->pool[c].set_cap(cap);
  }
}

// A rule's prewarm=off over the tier's own prewarm knob, for one allocation: the heap's copy
// of the knob reads 0 meanwhile, then the knob's current value again (a refresh that ran in
// between is not undone).
class PrewarmOff {
 public:
  PrewarmOff(int32_t rule, uint8_t* copy, proto::Knob k) : copy_(rule == 0 ? copy : nullptr), k_(k) {
    if (copy_) *copy_ = 0;
  }
  ~PrewarmOff() {
    if (copy_) *copy_ = knob(k_) != 0;
  }
  PrewarmOff(const PrewarmOff&) = delete;
  PrewarmOff& operator=(const PrewarmOff&) = delete;

 private:
  uint8_t* copy_;
  proto::Knob k_;
};

// Serves n bytes as the rule says; nullptr with *handled = false when the rule's tier cannot
// take this size (the caller then allocates as usual).
void* route(size_t n, const SiteAction& a, bool zero, Tier* tier, bool* handled) {
  *handled = true;
  size_t m = n == 0 ? 1 : n;
  switch (static_cast<RuleTier>(a.tier)) {
    case RuleTier::Tiny:  // handled by the caller: the usual path is the tiny tier already
    case RuleTier::Pool:
      if (m > kPoolMax) break;
      *tier = Tier::Pool;
      if (m <= kTinyMax) m = kTinyMax + 1;
      if (a.cap) apply_cap(m, a.cap);
      {
        Heap* h = attached_heap();
        PrewarmOff off(a.prewarm, h ? &h->knob_pool_prewarm : nullptr, proto::Knob::PoolPrewarm);
        void* p = hk_malloc(m);
        if (p && zero) memset(p, 0, n);
        return p;
      }
    case RuleTier::Bundle:
      if (m > kBundleMax) break;
      *tier = Tier::Bundle;
      if (m <= kPoolMax) m = kPoolMax + 1;
      {
        Heap* h = attached_heap();
        PrewarmOff off(a.prewarm, h ? &h->knob_bundle_prewarm : nullptr, proto::Knob::BundlePrewarm);
        void* p = hk_malloc(m);
        if (p && zero) memset(p, 0, n);
        if (p && a.prewarm == 1) prefault(p, m);
        return p;
      }
    case RuleTier::Whale:
    case RuleTier::System: {
      *tier = Tier::Whale;
      Heap* h = attached_heap();
      int saved = errno;
      bool fresh = false;
      void* p = whale_malloc(h, m, 0, &fresh, a.tier == static_cast<int32_t>(RuleTier::System), a.prewarm);
      if (!p) return nullptr;
      errno = saved;
      if (zero && !fresh) memset(p, 0, n);
      if (fresh && a.prewarm == 1) prefault(p, m);
      return p;
    }
    case RuleTier::None:
      break;
  }
  *handled = false;
  return nullptr;
}

// The per-thread byte countdown: the allocation that crosses zero is recorded for `site`.
void sample(uint64_t site, size_t n, Tier tier) {
  SiteThread& t = t_site;
  if (__builtin_expect(t.period == 0, 0)) {
    t.rng = os_random_seed() ^ (uint64_t{os_tid()} << 32) ^ reinterpret_cast<uintptr_t>(&t);
    if (t.rng == 0) t.rng = 0x9E3779B97F4A7C15ull;
    t.period = next_period(t);
    t.left = static_cast<int64_t>(t.period);
  }
  t.left -= static_cast<int64_t>(n);
  if (t.left <= 0) {
    record_sample(site, n, t.period, tier);
    t.period = next_period(t);
    t.left = static_cast<int64_t>(t.period);
  }
}

}  // namespace

void* site_malloc(size_t n, void* ra, bool zero) noexcept {
  const uint64_t site = reinterpret_cast<uint64_t>(ra);
  proto::Segment* seg = control_segment_ptr();
  site_rules_refresh(seg->rules);
  Tier tier = default_tier(n);
  void* p = nullptr;
  bool served = false;
  SiteAction a;
  int32_t rule_prewarm = -1;  // a matching rule's prewarm, for a block its tier does not serve
  if (site_rules_count() != 0 && site_rules_lookup(site, n, &a)) {
    seg->rules.rule_hits.fetch_add(1, std::memory_order_relaxed);
    rule_prewarm = a.prewarm;
    if (a.tier == static_cast<int32_t>(RuleTier::None) || a.tier == static_cast<int32_t>(RuleTier::Tiny)) {
      if (a.cap) apply_cap(n == 0 ? 1 : n, a.cap);
    } else {
      p = route(n, a, zero, &tier, &served);
      if (served && !p) return nullptr;  // out of memory; errno set by the tier
    }
  }
  if (!served) {
    if (n > kBundleMax && (zero || rule_prewarm >= 0)) {
      // A whale: a fresh mapping is zero already (large calloc), and the rule's prewarm
      // goes to whale_malloc.
      Heap* h = attached_heap();
      int saved = errno;
      bool fresh = false;
      p = whale_malloc(h, n, 0, &fresh, false, rule_prewarm);
      if (!p) return nullptr;
      errno = saved;
      if (zero && !fresh) memset(p, 0, n);
    } else {
      Heap* h = rule_prewarm == 0 ? attached_heap() : nullptr;
      uint8_t* copy = nullptr;
      proto::Knob k = proto::Knob::TinyPrewarm;
      if (h && n <= kTinyMax) copy = &h->knob_tiny_prewarm;
      else if (h && n <= kPoolMax) copy = &h->knob_pool_prewarm, k = proto::Knob::PoolPrewarm;
      else if (h) copy = &h->knob_bundle_prewarm, k = proto::Knob::BundlePrewarm;
      PrewarmOff off(rule_prewarm, copy, k);
      p = hk_malloc(n);
      if (p && zero) memset(p, 0, n);
    }
    if (!p) return nullptr;
  }
  sample(site, n, tier);
  return p;
}

void site_note(size_t n, void* ra) { sample(reinterpret_cast<uint64_t>(ra), n, default_tier(n)); }

}  // namespace hakmem
