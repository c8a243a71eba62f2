// Prometheus text exposition (format 0.0.4) of every registered process: per-tier families
// labelled {pid, exe, tier}, per-process families labelled {pid, exe}. Family names come from
// counters.def: thread counters and global counts become `hakmem_<name>_total` counters,
// byte levels (`*_bytes`) become gauges.
#pragma once

#include <string>

#include "registry.h"

namespace hakmemd {

std::string metrics_render(Registry& reg);
// Escapes a label value (backslash, double quote, newline).
std::string metrics_escape(const std::string& v);

}  // namespace hakmemd
