// The allocator's control plane (control.h): knob values, thread slots, the knob
// generation poll, error reports and fork. Segment file handling lives in segment.cc,
// environment parsing in env.cc.
#include "control.h"

#include <atomic>

#include "control_internal.h"
#include "fmt.h"
#include "lock.h"
#include "os.h"

namespace hakmem {

using proto::Knob;
using proto::Segment;
using proto::ThreadSlot;

// Defaults straight from the table, constant-initialised: valid before control_init runs.
// 512-aligned so that the line of site.rules (knobs 8..15), which every malloc above the
// tiny sizes reads, is the second line of an 8-line group, never one of the lines bundle
// colours use (chunk.h).
alignas(512) std::atomic<uint64_t> g_knob[proto::kKnobSlots] = {
#define HAKMEM_KNOB(ID, NAME, TYPE, DEF, MIN, MAX, MODE, ENV, HELP) DEF,
#include "hakmem/proto/knobs.def"
#undef HAKMEM_KNOB
};
static_assert(static_cast<size_t>(Knob::SiteRules) / 8 == 1, "site.rules is on the second line of g_knob");
HAKMEM_START_DATA TinyGate g_tiny_gate = {{}, 0};  // closed (every malloc on the general path) until control_init

namespace {

// Written by threads that are not attached yet (and by the allocator's static empty
// heap); nobody reads it. Concurrent writers may lose updates there, which is fine.
constinit ThreadSlot g_discard{};
// Shared by every thread that found the segment's slots all taken: counted in
// threads_unslotted, not published.
constinit ThreadSlot g_overflow{};

// 0 = not started, 1 = running, 2 = done.
HAKMEM_START_DATA std::atomic<int> g_init_state{0};
// Generation whose values are in g_knob (a thread attaching after a daemon write that no
// thread has polled yet must not skip it).
HAKMEM_START_DATA std::atomic<uint64_t> g_applied_generation{0};

inline void cpu_relax() { __builtin_ia32_pause(); }

// The largest tiny class size, from control_init.
HAKMEM_START_DATA std::atomic<size_t> g_tiny_max{0};

// After any store to g_knob: values derived from knobs.
void knobs_derive() {
  const size_t open = g_tiny_max.load(std::memory_order_relaxed) + 1;
  g_tiny_gate.end.store(knob(Knob::SiteRules) ? 0 : open, std::memory_order_relaxed);
}

// Serialises reload_knobs: two threads applying at once (the decay thread and an
// allocating thread, or two allocating threads) could otherwise finish in the wrong order,
// the slower one storing an older generation's values over a newer one's while the
// segment says the newer one is applied.
Mutex g_reload_lock;

// Applies the block's newest generation (never older than the one the caller noticed),
// once: a caller that finds it applied meanwhile returns false at once.
bool reload_knobs(Segment* s) {
  LockGuard g(g_reload_lock);
  // Read before the values: they are at least as new as this generation (writers store
  // the values, then bump it with release).
  const uint64_t generation = s->knobs.generation.load(std::memory_order_acquire);
  if (generation == g_applied_generation.load(std::memory_order_relaxed)) return false;
  for (size_t i = 0; i < proto::kKnobCount; i++) {
    const proto::KnobInfo& k = proto::kKnobs[i];
    // Restart-only knobs were consumed at start; a value appearing in the block later
    // (a stray write, garbage) must not change what this process believes it did.
    if (k.mode != proto::KnobMode::Live) continue;
    const uint64_t raw = s->knobs.value[i].load(std::memory_order_relaxed);
    g_knob[i].store(proto::knob_clamp(k, raw), std::memory_order_relaxed);
  }
  knobs_derive();
  g_applied_generation.store(generation, std::memory_order_release);
  // Several threads may apply concurrently; the published figure only moves forward.
  uint64_t cur = s->knobs.applied_generation.load(std::memory_order_relaxed);
  while (cur < generation &&
         !s->knobs.applied_generation.compare_exchange_weak(cur, generation, std::memory_order_relaxed)) {
  }
  s->knobs.applied_unix_ns.store(os_realtime_ns(), std::memory_order_relaxed);
  return true;
}

ThreadSlot* own_slot(const ThreadCtl* ctl) {
  if (ctl->slot_index >= proto::kThreadSlots) return &g_overflow;
  return &control_segment_ptr()->threads[ctl->slot_index];
}

void retarget(ThreadCtl* ctl) {
  ctl->slot = knob(Knob::StatsEnable) ? own_slot(ctl) : &g_discard;
}

// A thread whose slot pointer still points into the segment it counted in before the
// current one (a pending process published its file, which replaced the stand-in) carries
// its counts into its slot of the current one. Only the thread writes its slot, so the old
// slot holds every count, the new one the copy made at publication: without this, what it
// counted between the copy and its next check was lost (allocations made then and freed
// later drove the live figures below zero). Until that check (or its exit) the file shows
// what the thread had counted at the copy. Not at attach: a fork child's old slot is in the
// parent's mapping, which the child has replaced with zero pages.
void carry_over(ThreadCtl* ctl) {
  ThreadSlot* from = ctl->slot;
  if (from == &g_discard || from == &g_overflow || ctl->slot_index >= proto::kThreadSlots) return;
  ThreadSlot* to = &control_segment_ptr()->threads[ctl->slot_index];
  if (from != to) copy_slot_counts(*to, *from);
}

// ---- error reports ----
// Each address is reported once; a program that keeps freeing garbage gets at most
// kMaxReports lines, then one line saying the rest are only counted.
constexpr size_t kReportedAddrs = 64;
constexpr uint32_t kMaxReports = 32;
std::atomic<uintptr_t> g_reported[kReportedAddrs];
std::atomic<uint32_t> g_report_lines{0};

// True when `a` was not reported before (or the table is full: the line budget bounds it).
bool first_report(uintptr_t a) {
  if (a == 0) return true;
  for (auto& slot : g_reported) {
    uintptr_t v = slot.load(std::memory_order_acquire);
    if (v == a) return false;
    if (v == 0) {
      uintptr_t expected = 0;
      if (slot.compare_exchange_strong(expected, a, std::memory_order_acq_rel)) return true;
      if (expected == a) return false;
    }
  }
  return true;
}

void report(const char* what, const void* p, const char* text, std::atomic<uint64_t>& counter) {
  counter.fetch_add(1, std::memory_order_relaxed);
  const bool abort_now = knob(Knob::AbortOnError) != 0;
  const bool first = first_report(reinterpret_cast<uintptr_t>(p));
  if (first || abort_now) {
    const uint32_t n = g_report_lines.fetch_add(1, std::memory_order_relaxed);
    char line[256];
    FmtBuf b(line, sizeof line);
    if (n < kMaxReports || abort_now) {
      b.str("hakmem: ").str(what).str("(): ").str(text);
      b.hex(reinterpret_cast<uintptr_t>(p));
      if (text[0] == 'i') b.str(": not allocated by hakmem");
      if (abort_now) b.str(" (aborting: debug.abort_on_error=1)");
      b.ch('\n').write_stderr();
    } else if (n == kMaxReports) {
      b.str("hakmem: more invalid/double frees; no longer reported, still counted\n").write_stderr();
    }
  }
  if (abort_now) os_abort();
}

}  // namespace

void control_init(const uint32_t* tiny_class_sizes, uint32_t tiny_class_count) {
  if (g_init_state.load(std::memory_order_acquire) == 2) return;
  int expected = 0;
  if (!g_init_state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
    // Another thread is initialising; it takes microseconds and never blocks on us.
    while (g_init_state.load(std::memory_order_acquire) != 2) cpu_relax();
    return;
  }
  uint64_t values[proto::kKnobSlots];
  const uint64_t env_mask = control_env_load(values);
  for (size_t i = 0; i < proto::kKnobSlots; i++) g_knob[i].store(values[i], std::memory_order_relaxed);
  g_tiny_max.store(tiny_class_count ? tiny_class_sizes[tiny_class_count - 1] : 0, std::memory_order_relaxed);
  knobs_derive();
  control_segment_open(knob(Knob::ShmEnable) != 0, tiny_class_sizes, tiny_class_count, env_mask, 0);
  g_applied_generation.store(0, std::memory_order_release);
  g_init_state.store(2, std::memory_order_release);
}

ThreadSlot* control_discard_slot() { return &g_discard; }

void control_thread_attach(ThreadCtl* ctl, uint32_t tid) {
  LockGuard g(g_seg_state.slots_lock);
  Segment* s = control_segment_ptr();
  uint32_t idx = UINT32_MAX;
  for (uint32_t i = 0; i < proto::kThreadSlots; i++) {
    std::atomic<uint32_t>& owner = s->threads[i].owner_tid;
    uint32_t expected = 0;
    if (owner.load(std::memory_order_relaxed) == 0 &&
        owner.compare_exchange_strong(expected, tid, std::memory_order_acq_rel)) {
      idx = i;
      break;
    }
  }
  if (idx != UINT32_MAX) {
    uint32_t hwm = s->global.thread_slots_hwm.load(std::memory_order_relaxed);
    while (hwm < idx + 1 &&
           !s->global.thread_slots_hwm.compare_exchange_weak(hwm, idx + 1, std::memory_order_release)) {
    }
    s->global.threads_live.fetch_add(1, std::memory_order_relaxed);
  } else {
    s->global.threads_unslotted.fetch_add(1, std::memory_order_relaxed);
  }
  ctl->slot_index = idx;
  const uint64_t gen = s->knobs.generation.load(std::memory_order_acquire);
  if (gen != g_applied_generation.load(std::memory_order_acquire)) reload_knobs(s);
  ctl->seen_generation = gen;
  retarget(ctl);
}

void control_thread_started() {
  if (__builtin_expect(!g_seg_state.pending.load(std::memory_order_relaxed), 1)) return;
  // The process's first thread (a started program's main thread, a fork child's one
  // thread) has the pid as its thread id: it waits for the delay or the growth as before.
  if (os_tid() == static_cast<uint32_t>(os_pid())) return;
  control_segment_publish_pending(true);
}

void control_thread_detach(ThreadCtl* ctl) {
  LockGuard g(g_seg_state.slots_lock);
  carry_over(ctl);
  // Later frees of this thread (other TLS destructors) count into the discard slot.
  ctl->slot = &g_discard;
  if (ctl->slot_index < proto::kThreadSlots) {
    Segment* s = control_segment_ptr();
    s->threads[ctl->slot_index].owner_tid.store(0, std::memory_order_release);
    s->global.threads_live.fetch_sub(1, std::memory_order_relaxed);
  }
  ctl->slot_index = UINT32_MAX;
}

bool control_poll(ThreadCtl* ctl) {
  // A fork child creates its own segment here, on its first periodic check.
  if (__builtin_expect(g_seg_state.pending.load(std::memory_order_relaxed), 0)) control_segment_publish_pending();
  Segment* s = control_segment_ptr();
  const uint64_t gen = s->knobs.generation.load(std::memory_order_acquire);
  if (__builtin_expect(gen == ctl->seen_generation, 1)) return false;
  reload_knobs(s);
  ctl->seen_generation = gen;
  carry_over(ctl);
  retarget(ctl);
  return true;
}

bool control_poll_process() {
  // A fork child publishes its segment from an allocating thread's check; until then the
  // segment in use is the parent's copy, whose generation is not the child's business.
  if (g_seg_state.pending.load(std::memory_order_relaxed)) return false;
  Segment* s = control_segment_ptr();
  const uint64_t gen = s->knobs.generation.load(std::memory_order_acquire);
  if (gen == g_applied_generation.load(std::memory_order_acquire)) return false;
  return reload_knobs(s);
}

void control_add(proto::Tier tier, proto::GlobalCounter c, int64_t delta) {
  control_segment_ptr()->global.tier[static_cast<size_t>(tier)][static_cast<size_t>(c)].fetch_add(
      static_cast<uint64_t>(delta), std::memory_order_relaxed);
}

void control_report_invalid_free(const char* what, const void* p) {
  report(what, p, "invalid pointer ", control_segment_ptr()->global.invalid_frees);
}

void control_report_double_free(const char* what, const void* p) {
  report(what, p, "double free of ", control_segment_ptr()->global.double_frees);
}

void control_atfork_child(ThreadCtl* surviving_thread) {
  g_reload_lock.reset();
  g_seg_state.slots_lock.reset();
  control_segment_reopen_in_child();
  // Stored only when it changes (the stand-in carries the parent's knob block, whose
  // generation the parent has applied): each .bss page the child writes is a copy-on-write
  // fault in every fork child.
  const uint64_t gen = control_segment_ptr()->knobs.generation.load(std::memory_order_acquire);
  if (g_applied_generation.load(std::memory_order_relaxed) != gen)
    g_applied_generation.store(gen, std::memory_order_release);
  if (surviving_thread) {
    surviving_thread->slot_index = UINT32_MAX;
    // A fork child's one thread has the child's pid as its thread id: getpid, on the page
    // of libc fork has run, rather than gettid on another (a page fault in every child).
    control_thread_attach(surviving_thread, static_cast<uint32_t>(os_pid()));
  }
}

const Segment& control_segment() { return *control_segment_ptr(); }

void control_knob_store(Knob k, uint64_t value) {
  const size_t i = static_cast<size_t>(k);
  Segment* s = control_segment_ptr();
  g_knob[i].store(value, std::memory_order_relaxed);
  knobs_derive();
  s->knobs.value[i].store(value, std::memory_order_relaxed);
  s->knobs.generation.fetch_add(1, std::memory_order_release);
}

void control_reset_reports_for_test() {
  for (auto& slot : g_reported) slot.store(0, std::memory_order_relaxed);
  g_report_lines.store(0, std::memory_order_relaxed);
}

}  // namespace hakmem
