// Site rules on the allocation path (issue 9): with site.rules on, malloc/calloc/realloc(NULL)
// and operator new hand their caller's return address here. The site path samples by bytes
// into the segment's site table and applies the compiled rules (site_rules.h).
//
// Off (the default) costs one relaxed load of the site.rules knob and a predicted branch in
// the exported entry points; nothing else runs. On, every allocation takes this out-of-line
// path: a rule lookup (O(1), skipped when there are no rules) and a per-thread byte
// countdown; only a sample (mean every kSiteSampleMean bytes) touches shared memory.
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

}  // namespace hakmem
