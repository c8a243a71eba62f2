// Summing a segment into per-tier figures: the only place that interprets raw counters.
// Used by libhakmem (malloc_stats, HAKMEM_STATS, the C API) and by hakmemd alike.
// Header-only, no allocation; safe on a segment that is being written concurrently
// (figures may be a few operations apart, never torn within one 64-bit counter).
#pragma once

#include <stdint.h>

#include "hakmem/proto/segment.h"

namespace hakmem::proto {

struct TierSnapshot {
  uint64_t thread[kThreadCounterCount];  // summed ThreadCounter values
  uint64_t global[kGlobalCounterCount];  // GlobalCounter values

  uint64_t get(ThreadCounter c) const { return thread[static_cast<size_t>(c)]; }
  uint64_t get(GlobalCounter c) const { return global[static_cast<size_t>(c)]; }
  uint64_t allocs() const { return get(ThreadCounter::Allocs); }
  uint64_t frees() const { return get(ThreadCounter::Frees); }
  uint64_t misses() const { return get(ThreadCounter::Misses); }
  // Served by the thread cache without a refill.
  uint64_t hits() const { return allocs() > misses() ? allocs() - misses() : 0; }
  // Bytes handed out and not yet freed. Frees from other threads may briefly run ahead
  // of allocations in a concurrent read; clamp at zero rather than wrap.
  uint64_t live_bytes() const {
    uint64_t a = get(ThreadCounter::AllocBytes), f = get(ThreadCounter::FreeBytes);
    return a > f ? a - f : 0;
  }
  uint64_t live_objects() const { return allocs() > frees() ? allocs() - frees() : 0; }
};

struct Snapshot {
  TierSnapshot tier[kTierCount];
  uint32_t tiny_class_count;
  uint32_t tiny_class_size[kMaxTinyClasses];
  uint64_t tiny_class_allocs[kMaxTinyClasses];
  uint64_t tiny_class_frees[kMaxTinyClasses];
  uint64_t invalid_frees;
  uint64_t double_frees;
  uint32_t threads_live;
  uint32_t thread_slots_used;
  uint64_t threads_unslotted;
  uint64_t knob[kKnobSlots];    // clamped values
  uint64_t knob_generation;
  uint64_t knob_applied_generation;
  uint64_t knob_env_mask;
};

inline void snapshot(const Segment& seg, Snapshot* out) {
  constexpr auto rlx = std::memory_order_relaxed;
  *out = Snapshot{};
  uint32_t classes = seg.header.tiny_class_count;
  if (classes > kMaxTinyClasses) classes = kMaxTinyClasses;
  out->tiny_class_count = classes;
  for (uint32_t c = 0; c < classes; c++) out->tiny_class_size[c] = seg.header.tiny_class_size[c];

  uint32_t hwm = seg.global.thread_slots_hwm.load(std::memory_order_acquire);
  if (hwm > kThreadSlots) hwm = kThreadSlots;
  out->thread_slots_used = hwm;
  for (uint32_t i = 0; i < hwm; i++) {
    const ThreadSlot& s = seg.threads[i];
    for (size_t t = 0; t < kTierCount; t++)
      for (size_t c = 0; c < kThreadCounterCount; c++) out->tier[t].thread[c] += s.tier[t][c].load(rlx);
    for (uint32_t c = 0; c < classes; c++) {
      out->tiny_class_allocs[c] += s.tiny_class_allocs[c].load(rlx);
      out->tiny_class_frees[c] += s.tiny_class_frees[c].load(rlx);
    }
  }
  // Tiny totals come from the per-class counts (see ThreadSlot).
  TierSnapshot& tiny = out->tier[static_cast<size_t>(Tier::Tiny)];
  uint64_t allocs = 0, frees = 0, abytes = 0, fbytes = 0;
  for (uint32_t c = 0; c < classes; c++) {
    allocs += out->tiny_class_allocs[c];
    frees += out->tiny_class_frees[c];
    abytes += out->tiny_class_allocs[c] * out->tiny_class_size[c];
    fbytes += out->tiny_class_frees[c] * out->tiny_class_size[c];
  }
  tiny.thread[static_cast<size_t>(ThreadCounter::Allocs)] = allocs;
  tiny.thread[static_cast<size_t>(ThreadCounter::Frees)] = frees;
  tiny.thread[static_cast<size_t>(ThreadCounter::AllocBytes)] = abytes;
  tiny.thread[static_cast<size_t>(ThreadCounter::FreeBytes)] = fbytes;

  for (size_t t = 0; t < kTierCount; t++)
    for (size_t c = 0; c < kGlobalCounterCount; c++) out->tier[t].global[c] = seg.global.tier[t][c].load(rlx);
  TierSnapshot& whale = out->tier[static_cast<size_t>(Tier::Whale)];
  whale.global[static_cast<size_t>(GlobalCounter::CachedBytes)] += whale_shard_sum(seg.global, kWhaleShardCached);
  whale.global[static_cast<size_t>(GlobalCounter::CacheHits)] += whale_shard_sum(seg.global, kWhaleShardHits);
  out->invalid_frees = seg.global.invalid_frees.load(rlx);
  out->double_frees = seg.global.double_frees.load(rlx);
  out->threads_live = seg.global.threads_live.load(rlx);
  out->threads_unslotted = seg.global.threads_unslotted.load(rlx);

  out->knob_generation = seg.knobs.generation.load(std::memory_order_acquire);
  out->knob_applied_generation = seg.knobs.applied_generation.load(rlx);
  out->knob_env_mask = seg.knobs.env_mask.load(rlx);
  for (size_t k = 0; k < kKnobCount; k++) out->knob[k] = knob_clamp(kKnobs[k], seg.knobs.value[k].load(rlx));
}

}  // namespace hakmem::proto
