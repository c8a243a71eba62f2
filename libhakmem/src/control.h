// The allocator's view of its control plane: knob values, per-thread counter slots, the
// shared-memory segment and error reporting. This is the seam between the allocator
// (tiny/pool/bundle/whale, malloc.cc, ...) and the control side (control.cc, segment.cc,
// env.cc, stats.cc, api.cc). Neither side reaches into the other's files.
//
// Pre-conditions for every function here: may run before main, inside malloc, in a fork
// child and during exit; none of them calls malloc or takes a lock that malloc holds.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <atomic>

#include "hakmem/proto/segment.h"
#include "lock.h"
#include "os.h"

namespace hakmem {

// For small variables every process reads and then writes at its start: in .data, which
// (2 KiB) sits on one page the dynamic loader writes anyway (relocations, the zeroed tail
// before .bss). In .bss each such page took two faults, the zero page for the read, then its copy
// for the write, a few microseconds of every command a shell runs.
#define HAKMEM_START_DATA __attribute__((section(".data")))

// Process-local knob values: the allocator's source of truth, always within the knob's
// range. Written by control_init (defaults + environment) and control_poll (segment);
// read with relaxed loads on slow paths, or cached per thread and refreshed when
// control_poll returns true.
extern std::atomic<uint64_t> g_knob[proto::kKnobSlots] __attribute__((visibility("hidden")));
inline uint64_t knob(proto::Knob k) {
  return g_knob[static_cast<size_t>(k)].load(std::memory_order_relaxed);
}

// The exported malloc and operator new take the tiny fast path for sizes below `end`: the
// largest tiny class size + 1, or 0 while site.rules is on (and before control_init), when
// every call takes the general path, which tests site.rules. So one compare does the size
// test and the site.rules test. Every writer of g_knob updates it; a malloc that sees the
// two out of step still tests the knob itself on the general path. It sits on the second
// line of a 512-byte block, away from the page-offset lines that bundle colours put a
// program's page walks on (sizeclass.h).
struct alignas(512) TinyGate {
  uint8_t cold[64];
  std::atomic<size_t> end;
};
extern TinyGate g_tiny_gate __attribute__((visibility("hidden")));

// The segment in use, with the rest of what a fork child's handler writes (segment.cc,
// control.cc): on one line, since each page a child writes is a copy-on-write fault (2-3 us
// on a VM), and these sat on four pages.
struct alignas(128) SegmentState {
  // Never null (the process-local stand-in until/unless shm works). The site path reads it
  // on every allocation.
  std::atomic<proto::Segment*> seg;
  // A fork child's view of its parent's segment, until the child publishes (or finds
  // shm.enable off) and replaces it.
  std::atomic<proto::Segment*> parent;
  // When a pending segment may be created (0: its first check has not run).
  std::atomic<uint64_t> publish_after_ns;
  // The bytes mapped (all tiers) when the process became pending: what a fork child
  // inherited, or the few a started program mapped before its segment was opened.
  std::atomic<uint64_t> mapped_at_pending;
  // A fork child (or a process a hakmem process started) still has to create its file,
  // or a fork child still has its parent's segment mapped.
  std::atomic<bool> pending;
  bool shared;  // seg is this process's own file
  // g_local has served as the live segment (a stand-in, or without a file): its rules, site
  // entries and thread slots may hold counts; else only the global figures counted before
  // the segment existed, which a fork child's copy of its parent's overwrites. Sticky.
  bool local_served;
  // Serialises what moves thread slots between segments or changes their owners: a
  // thread's attach and detach, and the publication of a pending segment (whose copy of
  // the slots and of threads_live must not miss an attach or a detach that lands in the
  // stand-in after it).
  Mutex slots_lock;
};
static_assert(sizeof(SegmentState) == 128, "a fork child's handler writes one line of it");
extern SegmentState g_seg_state __attribute__((visibility("hidden")));
inline proto::Segment* control_segment_ptr() { return g_seg_state.seg.load(std::memory_order_acquire); }

// Called once by the allocator's process initialisation, before the first block is handed
// out. Parses HAKMEM_* from the environment (ignored under AT_SECURE), creates the segment
// unless shm.enable=0, records the tiny class sizes in it. Idempotent.
void control_init(const uint32_t* tiny_class_sizes, uint32_t tiny_class_count);

// Per-thread control state, embedded in the allocator's thread heap (zero-initialised).
struct ThreadCtl {
  proto::ThreadSlot* slot;    // where this thread's counters go; never null after attach
  uint64_t seen_generation;   // knob generation this thread last applied
  uint32_t slot_index;        // index in the segment, or UINT32_MAX for a process-local slot
};

// A slot nobody reads, for threads that must count somewhere before they are attached
// (and the static empty heap): the hot path never checks for null.
proto::ThreadSlot* control_discard_slot();

// Gives the thread a slot of its own in the segment (or a process-local one when the
// segment is off or full), owned by thread id `tid` (the calling thread's). Call from the
// thread's first slow path.
void control_thread_attach(ThreadCtl* ctl, uint32_t tid = os_tid());
// A thread's first slow path attached its heap (after control_thread_attach). In a pending
// process (control_internal.h), a thread other than the first publishes the segment now.
void control_thread_started();
// At thread exit: the slot keeps its counts and becomes free for the next thread.
void control_thread_detach(ThreadCtl* ctl);

// The slow-path tick (call from a countdown, not per operation). If the knob generation in
// the segment moved since ctl->seen_generation, reloads every knob (clamped) into g_knob,
// re-targets ctl->slot if stats.enable changed, publishes applied_generation, and returns
// true so the caller refreshes anything it cached from knobs. Cheap when nothing changed:
// one acquire load.
bool control_poll(ThreadCtl* ctl);

// The same for the process alone, from hakmem's own decay thread: a process that has gone
// quiet (a service between requests) otherwise applies a daemon's write only at some
// thread's next periodic check, which may be minutes away. Reloads g_knob and publishes
// applied_generation; each thread's cached values (magazine capacities, its stats slot)
// follow at that thread's next check, as after any poll. True when it reloaded.
bool control_poll_process();

// Process-wide counters (mapped bytes, OS calls, cache moves): relaxed fetch_add, for
// slow paths only.
void control_add(proto::Tier tier, proto::GlobalCounter c, int64_t delta);

// Per-thread counter helpers for the owning thread (a single writer; readers anywhere).
// No atomic read-modify-write: on x86-64 one add to memory without a lock prefix, which is
// what a relaxed load and store mean for a single writer, in one instruction instead of
// three (compilers do not merge atomic accesses); a reader sees the old or the new value,
// never a torn one. Elsewhere, and under TSan (which understands only the atomic form),
// the relaxed load and store.
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
#define HAKMEM_SLOT_ASM 1
#endif
inline void slot_add(std::atomic<uint64_t>& c, uint64_t d) {
#ifdef HAKMEM_SLOT_ASM
  __asm__ volatile("addq %1, %0" : "+m"(c) : "er"(d) : "cc");
#else
  c.store(c.load(std::memory_order_relaxed) + d, std::memory_order_relaxed);
#endif
}

// slot_add of 1 that also says whether the new value is a multiple of `period` (a power of
// two below 2^32): the count doubles as the countdown to a periodic check. On x86-64 the add
// and a test of the count's low half in memory, three instructions with the branch, where
// the load-add-store-test of the portable form takes five.
template <uint64_t period>
inline bool slot_inc_due(std::atomic<uint64_t>& c) {
  static_assert((period & (period - 1)) == 0 && period < (uint64_t{1} << 32));
#ifdef HAKMEM_SLOT_ASM
  bool due;
  __asm__ volatile("addq $1, %1\n\ttestl %2, %1" : "=@ccz"(due), "+m"(c) : "i"(period - 1));
  return due;
#else
  uint64_t v = c.load(std::memory_order_relaxed) + 1;
  c.store(v, std::memory_order_relaxed);
  return (v & (period - 1)) == 0;
#endif
}

inline void thread_count(ThreadCtl* ctl, proto::Tier t, proto::ThreadCounter c, uint64_t d) {
  slot_add(ctl->slot->tier[static_cast<size_t>(t)][static_cast<size_t>(c)], d);
}

// Errors found by the allocator. Reported once per address on stderr ("hakmem: free():
// invalid pointer 0x..."), counted in the segment, and abort() when debug.abort_on_error=1.
// `what` names the entry point ("free", "realloc", "malloc_usable_size").
void control_report_invalid_free(const char* what, const void* p);
void control_report_double_free(const char* what, const void* p);

// In the child after fork(): the parent's segment stays the parent's; the child gets a
// segment of its own (the parent's figures and knob values carried over, since it holds
// the parent's memory) and re-attaches the surviving thread's ctl.
void control_atfork_child(ThreadCtl* surviving_thread);

// The segment currently published (or the process-local stand-in when shm is off): what
// malloc_stats, malloc_info, mallinfo and the C API summarise with proto::snapshot().
const proto::Segment& control_segment();

}  // namespace hakmem
