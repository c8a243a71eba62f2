// Site rules on the allocation path (issue 9): with site.rules on, malloc/calloc/realloc
// and operator new hand their caller's return address here (the aligned entry points only
// sample). The site path samples by bytes
// into the segment's site table and applies the compiled rules (site_rules.h).
//
// Off (the default) costs malloc and operator new nothing for tiny sizes: their size test
// compares with the tiny gate, which is 0 while site.rules is on (control.h). Other sizes
// and the other entry points test the knob itself: one relaxed load and a predicted branch. On, every allocation takes this out-of-line
// path: a rule lookup (O(1), skipped when there are no rules) and a per-thread byte
// countdown; only a sample (mean every kSiteSampleMean bytes) touches shared memory.
//
// Measured (bench/micro tiny 32 B malloc+free pair, CPU-time medians of 5, 2-core shared box):
// main without the hook 6.2-6.8 ns, with the hook and site.rules=0 6.2-6.6 ns (within noise),
// site.rules=1 12.8 ns. Command: LD_PRELOAD=libhakmem.so bench_micro
//   --benchmark_filter='BM_MallocFree/(16|64)$|BM_NewDelete32|HakmemPair32/site' --benchmark_repetitions=5
#pragma once

#include <stddef.h>

#include "control.h"

namespace hakmem {

inline constexpr uint64_t kSiteSampleMean = 512 * 1024;

__attribute__((always_inline)) inline bool site_enabled() {
  return __builtin_expect(knob(proto::Knob::SiteRules) != 0, 0);
}

// Allocates n bytes (zeroed when `zero`) for the call site `ra`, honouring its rules.
void* site_malloc(size_t n, void* ra, bool zero);
// Samples an allocation made elsewhere (the aligned entry points: rules do not route them,
// as a rule's tier may not honour the alignment) into the site table.
void site_note(size_t n, void* ra);

}  // namespace hakmem
