// Site rules on the allocation path (issue 9): with site.rules on, malloc/calloc/realloc
// and operator new hand their caller's return address here (the aligned entry points only
// sample). The site path samples by bytes into the segment's site table and applies the
// compiled rules (site_rules.h).
//
// Off (the default) costs malloc and operator new nothing for tiny sizes: their size test
// compares with the tiny gate, which is 0 while site.rules is on (control.h). Other sizes
// and the other entry points test the knob itself: one relaxed load and a predicted branch.
// On, malloc and operator new first try the common case inline (fastpath.h): no rule for
// the call site and no sample due, which costs a per-thread byte countdown and a few loads
// to see that the rules have not changed and that no rule's site shares the call site's
// home slot (site_rules_none_for). Everything else takes site_malloc, out of line: the rule
// lookup (O(1)) and, for the allocation that ends the countdown (mean every
// kSiteSampleMean bytes), a sample written to shared memory.
//
// Measured (bench_micro, 32 B malloc+free pair, 2-core shared box): site.rules=0 6.0-6.9 ns;
// site.rules=1 7.6-8.5 ns (12.7-17.0 when every call went out of line); with 8 rules in
// force for other call sites 8.2 ns (13.1 out of line). Command: LD_PRELOAD=libhakmem.so
// bench_micro --benchmark_filter='HakmemPair32'
#pragma once

#include <stddef.h>

#include "control.h"

namespace hakmem {

inline constexpr uint64_t kSiteSampleMean = 512 * 1024;

// A thread's sampling countdown (site.cc).
struct SiteThread {
  int64_t left;     // bytes until the next sample (never negative between allocations)
  uint64_t period;  // the period `left` started from; 0 = not initialised
  uint64_t rng;
};
extern constinit thread_local SiteThread t_site __attribute__((tls_model("initial-exec")));

__attribute__((always_inline)) inline bool site_enabled() {
  return __builtin_expect(knob(proto::Knob::SiteRules) != 0, 0);
}

// Allocates n bytes (zeroed when `zero`) for the call site `ra`, honouring its rules.
void* site_malloc(size_t n, void* ra, bool zero) noexcept;
// Samples an allocation made elsewhere (the aligned entry points: rules do not route them,
// as a rule's tier may not honour the alignment) into the site table.
void site_note(size_t n, void* ra);

}  // namespace hakmem
