// Private seams between the control-plane files (control.cc, env.cc, segment.cc, stats.cc,
// api.cc). The allocator uses control.h only; nothing here is for it.
//
// Same pre-conditions as control.h: no allocation, no locks malloc could hold, safe before
// main, in fork children and during exit.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <atomic>

#include "control.h"
#include "lock.h"
#include "hakmem/proto/knobs.h"
#include "hakmem/proto/segment.h"

namespace hakmem {

// ---- env.cc -------------------------------------------------------------------------
// Value of environment variable `name`, or nullptr (also under AT_SECURE: a setuid
// program must not be steered by its caller's environment). Uses `environ` when libc has
// set it up, else a copy of /proc/self/environ read once into a static buffer.
const char* control_env_get(const char* name);
// Fills values[] with each knob's default, overridden by a valid HAKMEM_* variable; an
// invalid one prints one warning naming the allowed range and keeps the default.
// Returns the mask of knobs set from the environment (bit = knob index).
uint64_t control_env_load(uint64_t values[proto::kKnobSlots]);
// Parses one knob value exactly as env and the C API do; on failure writes a one-line
// reason that names the allowed range into err (may be null). `source` prefixes the text
// ("HAKMEM_TINY_CAP=abc" or "tiny.cap=abc").
proto::ParseError control_knob_parse(const proto::KnobInfo& k, const char* text, uint64_t* out,
                                     char* err, size_t err_cap);
// Resets the cached /proc/self/environ copy (tests only).
void control_env_reset_for_test();

// ---- segment.cc ---------------------------------------------------------------------
// control_segment_ptr(): control.h.
// True when the segment in use is a file in the shm dir that hakmemd can read.
bool control_segment_is_shared();
// Its path (empty when not shared).
const char* control_segment_path();
// Creates and publishes the segment (or falls back to the local one): header, tiny class
// sizes, knob block from g_knob and env_mask, `ready` last. `shared` = shm.enable.
void control_segment_open(bool shared, const uint32_t* tiny_class_sizes, uint32_t tiny_class_count,
                          uint64_t env_mask, uint64_t generation);
// In a fork child: stop sharing the parent's segment and count into the local stand-in;
// the child's own file is created later by control_segment_publish_pending().
void control_segment_reopen_in_child();
// How long a pending process (a fork child, a program a hakmem process started) counts into
// its stand-in before it creates its file: from its first periodic check to the first one
// at least this much later.
inline constexpr uint64_t kChildPublishDelayNs = 100'000'000;
// A pending process that has mapped this much more than it had when it became pending
// creates its file at its next check without waiting out kChildPublishDelayNs: it holds
// memory an operator wants to see, and creating the file is then a small part of what its
// own first touches cost. A service started from a preloaded shell or supervisor, or a
// forked worker that sets up and then waits for work, would otherwise stay out of
// `hakctl ps` until it allocated again.
inline constexpr int64_t kPublishGrowthBytes = int64_t{16} << 20;
// A pending process that starts a second thread creates its file at that thread's first
// allocation (control_thread_started), without the delay: a shell's short commands seldom
// start threads, and a program that does is a service setting up its workers (and then
// perhaps waiting for work, unlisted until it allocated again) or a parallel tool whose
// thread creation costs more than the file.
// Creates the pending file segment (once, and not before kChildPublishDelayNs have passed
// since the first call unless the process mapped kPublishGrowthBytes meanwhile, or
// `at_once`), copying what the stand-in counted so far.
void control_segment_publish_pending(bool at_once = false);
// Copies the counters of one thread slot (not its owner) into another.
void copy_slot_counts(proto::ThreadSlot& to, const proto::ThreadSlot& from);
// Unlinks the file if this process created it (exit, tests).
void control_segment_close();

// ---- stats.cc ----------------------------------------------------------------------
// A byte gauge (mapped, cached) read from the segment. Gauges move by signed deltas; an
// accounting slip or a torn concurrent read can leave one "below zero" (a huge unsigned
// value): show 0 rather than exabytes.
inline uint64_t stats_gauge(uint64_t v) { return static_cast<int64_t>(v) < 0 ? 0 : v; }
// At exit, before the segment file goes: the HAKMEM_STATS=1 summary when stats.print is
// on. Called from segment.cc's destructor, which also keeps stats.o in static links.
void stats_at_exit();

// ---- control.cc ---------------------------------------------------------------------
// Applies a knob value written by this process (the C API): value then generation++ in
// the segment, and g_knob at once.
void control_knob_store(proto::Knob k, uint64_t value);
// Forgets reported addresses (tests only).
void control_reset_reports_for_test();

}  // namespace hakmem
