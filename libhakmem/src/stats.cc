// Human-facing figures: malloc_stats(), malloc_info(), mallinfo(), mallinfo2() and the
// HAKMEM_STATS=1 summary at exit. All from proto::snapshot() of the process's segment,
// formatted with FmtBuf into stack buffers: nothing here allocates, so it works at exit
// and in programs whose heap is in a bad state.
#include <limits.h>
#include <malloc.h>
#include <stdio.h>

#include "control_internal.h"
#include "fmt.h"
#include "hakmem.h"
#include "hakmem/proto/snapshot.h"
#include "os.h"

#ifndef HAKMEM_VERSION
#define HAKMEM_VERSION "unknown"
#endif

namespace hakmem {

using proto::GlobalCounter;
using proto::Snapshot;
using proto::ThreadCounter;
using proto::TierSnapshot;

namespace {

// Appends `text` right-aligned so that it ends at column `end` of the current line.
void rcol(FmtBuf& b, size_t line0, size_t end, const char* text) {
  size_t n = 0;
  while (text[n]) n++;
  if (line0 + end > b.size() + n) b.pad_to(line0 + end - n);
  else b.ch(' ');
  b.str(text);
}

void rcol_u64(FmtBuf& b, size_t line0, size_t end, uint64_t v) {
  char t[32];
  FmtBuf f(t, sizeof t);
  f.u64(v);
  rcol(b, line0, end, t);
}

void rcol_bytes(FmtBuf& b, size_t line0, size_t end, uint64_t v) {
  char t[32];
  FmtBuf f(t, sizeof t);
  f.bytes(v);
  rcol(b, line0, end, t);
}

// "97.5%" (one decimal), or "-" when nothing was allocated.
void rcol_pct(FmtBuf& b, size_t line0, size_t end, uint64_t part, uint64_t whole) {
  char t[32];
  FmtBuf f(t, sizeof t);
  if (whole == 0) {
    f.str("-");
  } else {
    const uint64_t permille = (part * 1000 + whole / 2) / whole;
    f.u64(permille / 10).ch('.').u64(permille % 10).ch('%');
  }
  rcol(b, line0, end, t);
}

void tier_line(FmtBuf& b, const char* name, const TierSnapshot& t) {
  const size_t l0 = b.size();
  b.str(name);
  rcol_u64(b, l0, 20, t.allocs());
  rcol_u64(b, l0, 32, t.frees());
  rcol_pct(b, l0, 40, t.hits(), t.allocs());
  rcol_u64(b, l0, 48, t.get(ThreadCounter::RemoteFrees));
  rcol_bytes(b, l0, 60, t.live_bytes());
  rcol_bytes(b, l0, 72, stats_gauge(t.get(GlobalCounter::CachedBytes)));
  rcol_bytes(b, l0, 84, stats_gauge(t.get(GlobalCounter::MappedBytes)));
  rcol_u64(b, l0, 92, t.get(GlobalCounter::OsMaps));
  rcol_u64(b, l0, 100, t.get(GlobalCounter::OsUnmaps));
  rcol_u64(b, l0, 108, t.get(GlobalCounter::Madvises));
  rcol_u64(b, l0, 118, t.get(GlobalCounter::CacheHits));
  rcol_u64(b, l0, 128, t.get(GlobalCounter::CacheMisses));
  b.ch('\n');
}

// The per-tier table shared by malloc_stats() and HAKMEM_STATS.
void format_summary(FmtBuf& b, const Snapshot& s) {
  b.str("hakmem ").str(HAKMEM_VERSION).str(": pid ").i64(os_pid());
  if (control_segment_is_shared()) b.str(", segment ").str(control_segment_path());
  else b.str(", no shared segment");
  b.ch('\n');
  const size_t l0 = b.size();
  b.str("tier");
  rcol(b, l0, 20, "allocs");
  rcol(b, l0, 32, "frees");
  rcol(b, l0, 40, "hit");
  rcol(b, l0, 48, "remote");
  rcol(b, l0, 60, "live");
  rcol(b, l0, 72, "cached");
  rcol(b, l0, 84, "mapped");
  rcol(b, l0, 92, "mmap");
  rcol(b, l0, 100, "munmap");
  rcol(b, l0, 108, "madvise");
  rcol(b, l0, 118, "cache_hit");
  rcol(b, l0, 128, "cache_miss");
  b.ch('\n');
  TierSnapshot total{};
  for (size_t t = 0; t < proto::kTierCount; t++) {
    tier_line(b, proto::kTierNames[t], s.tier[t]);
    for (size_t c = 0; c < proto::kThreadCounterCount; c++) total.thread[c] += s.tier[t].thread[c];
    for (size_t c = 0; c < proto::kGlobalCounterCount; c++) total.global[c] += s.tier[t].global[c];
  }
  tier_line(b, "total", total);
  b.str("soft page faults ").u64(os_minor_faults()).str(", threads live ").u64(s.threads_live)
      .str(" (slots used ").u64(s.thread_slots_used).str(", unpublished ").u64(s.threads_unslotted)
      .str("), invalid frees ").u64(s.invalid_frees).str(", double frees ").u64(s.double_frees)
      .ch('\n');
}

void print_summary() {
  Snapshot s;
  proto::snapshot(control_segment(), &s);
  char buf[4096];
  FmtBuf b(buf, sizeof buf);
  format_summary(b, s);
  b.write_stderr();
}

uint64_t sum_global(const Snapshot& s, GlobalCounter c, bool with_whale) {
  uint64_t v = 0;
  for (size_t t = 0; t < proto::kTierCount; t++)
    if (with_whale || t != static_cast<size_t>(proto::Tier::Whale)) v += stats_gauge(s.tier[t].get(c));
  return v;
}

uint64_t sum_live(const Snapshot& s) {
  uint64_t v = 0;
  for (const TierSnapshot& t : s.tier) v += t.live_bytes();
  return v;
}

struct MallinfoFigures {
  uint64_t arena, ordblks, hblks, hblkhd, uordblks, fordblks, keepcost;
};

// glibc's fields mapped onto hakmem's tiers: `arena` is memory mapped for the slab tiers,
// `hblk*` the whale tier (glibc's mmapped chunks), `uordblks` live bytes, `fordblks`
// bytes cached for reuse.
MallinfoFigures mallinfo_figures() {
  Snapshot s;
  proto::snapshot(control_segment(), &s);
  const TierSnapshot& whale = s.tier[static_cast<size_t>(proto::Tier::Whale)];
  MallinfoFigures m{};
  m.arena = sum_global(s, GlobalCounter::MappedBytes, false);
  m.hblks = whale.live_objects();
  m.hblkhd = stats_gauge(whale.get(GlobalCounter::MappedBytes));
  m.uordblks = sum_live(s);
  m.fordblks = sum_global(s, GlobalCounter::CachedBytes, true);
  return m;
}

int clamp_int(uint64_t v) { return v > static_cast<uint64_t>(INT_MAX) ? INT_MAX : static_cast<int>(v); }

void xml_tier(FmtBuf& b, size_t nr, const Snapshot& s) {
  const TierSnapshot& t = s.tier[nr];
  b.str("<heap nr=\"").u64(nr).str("\" name=\"").str(proto::kTierNames[nr]).str("\">\n<sizes>\n");
  if (nr == static_cast<size_t>(proto::Tier::Tiny)) {
    uint32_t from = 1;
    for (uint32_t c = 0; c < s.tiny_class_count; c++) {
      const uint64_t live = s.tiny_class_allocs[c] > s.tiny_class_frees[c]
                                ? s.tiny_class_allocs[c] - s.tiny_class_frees[c] : 0;
      b.str("  <size from=\"").u64(from).str("\" to=\"").u64(s.tiny_class_size[c]).str("\" total=\"")
          .u64(live * s.tiny_class_size[c]).str("\" count=\"").u64(live).str("\"/>\n");
      from = s.tiny_class_size[c] + 1;
    }
  }
  b.str("</sizes>\n");
  b.str("<total type=\"live\" count=\"").u64(t.live_objects()).str("\" size=\"").u64(t.live_bytes())
      .str("\"/>\n");
  b.str("<total type=\"cached\" size=\"").u64(stats_gauge(t.get(GlobalCounter::CachedBytes))).str("\"/>\n");
  b.str("<system type=\"current\" size=\"").u64(stats_gauge(t.get(GlobalCounter::MappedBytes))).str("\"/>\n");
  b.str("<counters allocs=\"").u64(t.allocs()).str("\" frees=\"").u64(t.frees()).str("\" hits=\"")
      .u64(t.hits()).str("\" misses=\"").u64(t.misses()).str("\" remote_frees=\"")
      .u64(t.get(ThreadCounter::RemoteFrees)).str("\" os_maps=\"").u64(t.get(GlobalCounter::OsMaps))
      .str("\" os_unmaps=\"").u64(t.get(GlobalCounter::OsUnmaps)).str("\" madvises=\"")
      .u64(t.get(GlobalCounter::Madvises)).str("\" cache_hits=\"").u64(t.get(GlobalCounter::CacheHits))
      .str("\" cache_misses=\"").u64(t.get(GlobalCounter::CacheMisses)).str("\"/>\n");
  b.str("</heap>\n");
}

// HAKMEM_STATS=1. Runs before the segment file is removed (destructor 200) so the
// summary can still name it.
__attribute__((destructor(300))) void stats_print_at_exit() {
  if (knob(proto::Knob::StatsPrint)) print_summary();
}

}  // namespace

}  // namespace hakmem

using namespace hakmem;

extern "C" {

HAKMEM_API void malloc_stats(void) __THROW { print_summary(); }

HAKMEM_API int malloc_info(int options, FILE* fp) __THROW {
  if (options != 0 || fp == nullptr) return -1;
  Snapshot s;
  proto::snapshot(control_segment(), &s);
  char buf[8192];
  FmtBuf b(buf, sizeof buf);
  b.str("<malloc version=\"1\" allocator=\"hakmem\" lib_version=\"").str(HAKMEM_VERSION).str("\">\n");
  for (size_t t = 0; t < proto::kTierCount; t++) xml_tier(b, t, s);
  uint64_t live_count = 0;
  for (const TierSnapshot& t : s.tier) live_count += t.live_objects();
  const uint64_t mapped = sum_global(s, GlobalCounter::MappedBytes, true);
  b.str("<total type=\"live\" count=\"").u64(live_count).str("\" size=\"").u64(sum_live(s)).str("\"/>\n");
  b.str("<total type=\"cached\" size=\"").u64(sum_global(s, GlobalCounter::CachedBytes, true)).str("\"/>\n");
  b.str("<total type=\"mmap\" count=\"").u64(s.tier[static_cast<size_t>(proto::Tier::Whale)].live_objects())
      .str("\" size=\"").u64(stats_gauge(s.tier[static_cast<size_t>(proto::Tier::Whale)].get(GlobalCounter::MappedBytes)))
      .str("\"/>\n");
  b.str("<system type=\"current\" size=\"").u64(mapped).str("\"/>\n");
  b.str("<aspace type=\"total\" size=\"").u64(mapped).str("\"/>\n");
  b.str("<errors invalid_frees=\"").u64(s.invalid_frees).str("\" double_frees=\"").u64(s.double_frees)
      .str("\"/>\n");
  b.str("</malloc>\n");
  return fwrite(b.c_str(), 1, b.size(), fp) == b.size() ? 0 : -1;
}

HAKMEM_API struct mallinfo2 mallinfo2(void) __THROW {
  const MallinfoFigures f = mallinfo_figures();
  struct mallinfo2 m = {};
  m.arena = f.arena;
  m.hblks = f.hblks;
  m.hblkhd = f.hblkhd;
  m.uordblks = f.uordblks;
  m.fordblks = f.fordblks;
  m.keepcost = 0;
  return m;
}

HAKMEM_API struct mallinfo mallinfo(void) __THROW {
  const MallinfoFigures f = mallinfo_figures();
  struct mallinfo m = {};
  m.arena = clamp_int(f.arena);
  m.hblks = clamp_int(f.hblks);
  m.hblkhd = clamp_int(f.hblkhd);
  m.uordblks = clamp_int(f.uordblks);
  m.fordblks = clamp_int(f.fordblks);
  return m;
}

}  // extern "C"
