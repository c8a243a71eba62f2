// The process's shared-memory segment: creation, header, fork, removal at exit.
//
// Invariant: control_segment_ptr() is never null. Until the segment exists, and whenever
// shm is off or its creation failed, a process-local Segment in .bss stands in, so
// counters, mallinfo and the C API work the same either way (only hakmemd cannot see it).
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <atomic>

#include "control_internal.h"
#include "fmt.h"
#include "os.h"

#ifndef HAKMEM_VERSION
#define HAKMEM_VERSION "unknown"
#endif

namespace hakmem {

using proto::Segment;

namespace {
// .bss: costs address space only until a page is touched.
constinit Segment g_local{};
}  // namespace

// One line that a fork child writes (control.h).
constinit SegmentState g_seg_state{&g_local, nullptr, 0, 0, false, false, false, {}};

namespace {

// Set by the first control_segment_open; a second one (tests) starts from zero.
HAKMEM_START_DATA bool g_opened = false;
// Who created the file: a fork child (or a clone without atfork handlers) must not
// unlink its parent's segment.
HAKMEM_START_DATA int32_t g_owner_pid = 0;
char g_path[4096];

void copy_str(char* dst, size_t cap, const char* src) {
  size_t i = 0;
  for (; src[i] && i + 1 < cap; i++) dst[i] = src[i];
  dst[i] = 0;
}

// Nothing here reads /proc: hakmemd reads the executable, command line and start time there
// (proto/segment.h), where three reads cost each process about 50 us of its start.
void fill_header(Segment* s, const uint32_t* tiny_class_sizes, uint32_t tiny_class_count) {
  proto::SegmentHeader& h = s->header;
  h.magic = proto::kMagic;
  h.layout_version = proto::kLayoutVersion;
  h.header_size = sizeof(proto::SegmentHeader);
  h.segment_size = sizeof(Segment);
  h.pid = os_pid();
  h.uid = os_uid();
  h.created_boot_ticks = os_boot_ticks();
  h.created_unix_ns = os_realtime_ns();
  copy_str(h.lib_version, sizeof h.lib_version, HAKMEM_VERSION);
  if (tiny_class_count > proto::kMaxTinyClasses) tiny_class_count = proto::kMaxTinyClasses;
  if (tiny_class_sizes != s->header.tiny_class_size) {
    for (uint32_t c = 0; c < tiny_class_count; c++) h.tiny_class_size[c] = tiny_class_sizes[c];
  }
  h.tiny_class_count = tiny_class_count;
}

void fill_knobs(Segment* s, uint64_t env_mask, uint64_t generation) {
  proto::KnobBlock& k = s->knobs;
  for (size_t i = 0; i < proto::kKnobSlots; i++)
    k.value[i].store(g_knob[i].load(std::memory_order_relaxed), std::memory_order_relaxed);
  k.env_mask.store(env_mask, std::memory_order_relaxed);
  k.applied_generation.store(generation, std::memory_order_relaxed);
  k.applied_unix_ns.store(os_realtime_ns(), std::memory_order_relaxed);
  k.generation.store(generation, std::memory_order_release);
}

// Zeroes everything a process writes at run time (the parent's figures must not show up
// as the child's when the local stand-in is inherited through fork). Only what was used
// is written, so a fork child does not fault in the whole 400 KiB stand-in.
void clear_runtime(Segment* s) {
  uint32_t hwm = s->global.thread_slots_hwm.load(std::memory_order_relaxed);
  if (hwm > proto::kThreadSlots) hwm = proto::kThreadSlots;
  memset(static_cast<void*>(s->threads), 0, hwm * sizeof(proto::ThreadSlot));
  memset(static_cast<void*>(&s->global), 0, sizeof s->global);
  memset(static_cast<void*>(&s->rules), 0, sizeof s->rules);
  for (proto::SiteEntry& e : s->sites)
    if (e.addr.load(std::memory_order_relaxed) != 0) memset(static_cast<void*>(&e), 0, sizeof e);
}

// Frees every thread slot (counts stay): in a fork child only the forking thread lives on,
// and it attaches again.
void release_slots(Segment* s) {
  uint32_t hwm = s->global.thread_slots_hwm.load(std::memory_order_relaxed);
  if (hwm > proto::kThreadSlots) hwm = proto::kThreadSlots;
  for (uint32_t i = 0; i < hwm; i++) s->threads[i].owner_tid.store(0, std::memory_order_relaxed);
  s->global.threads_live.store(0, std::memory_order_relaxed);
}

// Segments of our uid whose process is gone: killed, or ended with _exit() (a fork child
// does) and so never ran the destructor that unlinks. hakmemd removes them too, but a host
// without the daemon must not collect them forever: new segments sweep the folder, one a
// second at most (sweep_due).
struct ReapCtx {
  const char* dir;
  char prefix[48];  // "hakmem.<uid>."
  size_t prefix_len;
  int32_t self;
};

bool reap_one(const char* name, void* arg) {
  auto* ctx = static_cast<ReapCtx*>(arg);
  if (strncmp(name, ctx->prefix, ctx->prefix_len) != 0) return true;
  int64_t pid = 0;
  const char* p = name + ctx->prefix_len;
  if (*p == 0) return true;
  for (; *p; p++) {
    if (*p < '0' || *p > '9' || pid > INT32_MAX / 10) return true;  // not ours: leave it
    pid = pid * 10 + (*p - '0');
  }
  if (pid <= 0 || pid == ctx->self || os_pid_exists(static_cast<int32_t>(pid))) return true;
  char path[sizeof g_path];
  FmtBuf b(path, sizeof path);
  b.str(ctx->dir).ch('/').str(name);
  if (b.size() + 1 < sizeof path) os_shm_unlink(path);
  return true;
}

// Whether this new segment sweeps the folder: at most once a second per user. A sweep reads
// every entry and asks the kernel about each pid: with 300 live processes' segments there,
// it added 150-250 us to every process start. The time of the last sweep is the mtime of
// a file of ours, ".hakmem-sweep.<uid>" (hakmemd lists only "hakmem.*"); one another user
// made, or anything but a regular file, does not count, so it cannot stop our sweeps.
bool sweep_due(const char* dir) {
  constexpr uint64_t kSweepEveryNs = 1'000'000'000;
  char path[sizeof g_path];
  FmtBuf b(path, sizeof path);
  b.str(dir).str("/.hakmem-sweep.").u64(os_uid());
  return b.size() + 1 >= sizeof path || os_stamp_if_older(path, kSweepEveryNs);
}

void reap_stale(const char* dir) {
  if (!sweep_due(dir)) return;
  ReapCtx ctx{dir, {}, 0, os_pid()};
  FmtBuf b(ctx.prefix, sizeof ctx.prefix);
  b.str(proto::kSegmentPrefix).u64(os_uid()).ch('.');
  ctx.prefix_len = b.size();
  os_dir_each(dir, reap_one, &ctx);
}

// The folder segments go in: HAKMEM_SHM_DIR or the default. A relative dir would name
// another file once the program changes directory, and the removal at exit would miss (or
// hit the wrong) segment: it is ignored, with a warning when `warn`.
const char* shm_dir(bool warn) {
  const char* dir = control_env_get(proto::kShmDirEnv);
  if (dir != nullptr && *dir != 0 && *dir != '/') {
    if (warn) {
      char line[512];
      FmtBuf b(line, sizeof line);
      b.str("hakmem: ignoring ").str(proto::kShmDirEnv).str(": not an absolute path; using ")
          .str(proto::kDefaultShmDir).ch('\n');
      b.write_stderr();
    }
    dir = nullptr;
  }
  return dir == nullptr || *dir == 0 ? proto::kDefaultShmDir : dir;
}

// Whether the parent runs hakmem and has published a segment: a shell, a build tool or a
// service starting a command. Such a process is published as a fork child is (see
// control_segment_publish_pending).
bool parent_publishes() {
  char path[sizeof g_path];
  return proto::segment_path(shm_dir(false), os_uid(), os_ppid(), path, sizeof path) && os_file_exists(path);
}

// Creates and maps the segment file (all zero); nullptr after a one-line warning.
Segment* create_file() {
  const char* dir = shm_dir(true);
  char path[sizeof g_path];
  void* mem = nullptr;
  int err = 0;
  if (!proto::segment_path(dir, os_uid(), os_pid(), path, sizeof path)) {
    err = ENAMETOOLONG;
  } else {
    err = os_shm_create(path, sizeof(Segment), &mem);
  }
  if (err != 0) {
    char line[512];
    FmtBuf b(line, sizeof line);
    b.str("hakmem: cannot create the stats segment in ").str(dir).str(" (errno ").i64(err)
        .str("); running without it (hakmemd will not see this process)\n");
    b.write_stderr();
    return nullptr;
  }
  copy_str(g_path, sizeof g_path, path);
  g_owner_pid = os_pid();
  reap_stale(dir);
  return static_cast<Segment*>(mem);
}

// The bytes the process has mapped, all tiers (a gauge of deltas, modulo 2^64).
uint64_t mapped_bytes(const Segment& s) {
  uint64_t n = 0;
  for (size_t t = 0; t < proto::kTierCount; t++)
    n += s.global.tier[t][static_cast<size_t>(proto::GlobalCounter::MappedBytes)].load(std::memory_order_relaxed);
  return n;
}

void copy_u64(std::atomic<uint64_t>& to, const std::atomic<uint64_t>& from) {
  to.store(from.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

}  // namespace

void copy_slot_counts(proto::ThreadSlot& d, const proto::ThreadSlot& f) {
  for (size_t t = 0; t < proto::kTierCount; t++)
    for (size_t c = 0; c < proto::kThreadCounterCount; c++) copy_u64(d.tier[t][c], f.tier[t][c]);
  for (size_t c = 0; c < proto::kMaxTinyClasses; c++) {
    copy_u64(d.tiny_class_allocs[c], f.tiny_class_allocs[c]);
    copy_u64(d.tiny_class_frees[c], f.tiny_class_frees[c]);
  }
}

namespace {

// Everything counted so far in the local stand-in, into a fresh file segment: the
// process-wide block and the thread slots, owners included, so every attached thread's
// slot_index stays valid in the new segment.
void copy_runtime(Segment* to, const Segment& from) {
  for (size_t t = 0; t < proto::kTierCount; t++)
    for (size_t c = 0; c < proto::kGlobalCounterCount; c++) copy_u64(to->global.tier[t][c], from.global.tier[t][c]);
  copy_u64(to->global.invalid_frees, from.global.invalid_frees);
  copy_u64(to->global.double_frees, from.global.double_frees);
  copy_u64(to->global.threads_unslotted, from.global.threads_unslotted);
  for (size_t s = 0; s < proto::kWhaleCacheShards; s++)
    for (size_t f = 0; f < proto::kWhaleShardFigures; f++) copy_u64(to->global.whale_shard[s][f], from.global.whale_shard[s][f]);
  to->global.threads_live.store(from.global.threads_live.load(std::memory_order_relaxed), std::memory_order_relaxed);
  uint32_t hwm = from.global.thread_slots_hwm.load(std::memory_order_acquire);
  if (hwm > proto::kThreadSlots) hwm = proto::kThreadSlots;
  for (uint32_t i = 0; i < hwm; i++) {
    proto::ThreadSlot& d = to->threads[i];
    const proto::ThreadSlot& f = from.threads[i];
    d.owner_tid.store(f.owner_tid.load(std::memory_order_relaxed), std::memory_order_relaxed);
    copy_slot_counts(d, f);
  }
  to->global.thread_slots_hwm.store(hwm, std::memory_order_release);
}

// Fills a segment's header and knob block and marks it ready (last, release).
void publish(Segment* s, const uint32_t* sizes, uint32_t count, uint64_t env_mask, uint64_t generation) {
  fill_header(s, sizes, count);
  fill_knobs(s, env_mask, generation);
  // Readers trust nothing above until they see ready == 1.
  s->header.ready.store(1, std::memory_order_release);
}

// A fork child's stand-in: the parent's header (the same classes) and knob block, with the
// child's pid. The header gets its creation time when the child publishes a file of its
// own (fill_header).
void publish_inherited(Segment* s, const Segment& parent) {
  proto::SegmentHeader& h = s->header;
  if (s != &parent) {
    memcpy(static_cast<void*>(&h), &parent.header, sizeof h);
    memcpy(static_cast<void*>(&s->knobs), &parent.knobs, sizeof s->knobs);
  }
  h.pid = os_pid();
  h.ready.store(1, std::memory_order_release);
}

// A fork child's view of its parent's segment, kept until the child publishes: nothing
// writes into it (control_segment_reopen_in_child). The shared mapping is replaced with
// private zero pages rather than unmapped: a stale pointer into it then writes harmless
// memory.
void drop_parent_view() {
  if (g_seg_state.parent.load(std::memory_order_relaxed) == nullptr) return;
  if (Segment* parent = g_seg_state.parent.exchange(nullptr, std::memory_order_acq_rel))
    os_replace_private(parent, sizeof(Segment));
}

}  // namespace

bool control_segment_is_shared() { return g_seg_state.shared; }
const char* control_segment_path() { return g_seg_state.shared ? g_path : ""; }

void control_segment_open(bool shared, const uint32_t* tiny_class_sizes, uint32_t tiny_class_count,
                          uint64_t env_mask, uint64_t generation) {
  const bool again = g_opened;  // tests open more than once: start from zero then
  g_opened = true;
  g_seg_state.shared = false;
  if (again) g_path[0] = 0;  // zero until a file was made: a page of its own
  g_seg_state.pending.store(false, std::memory_order_relaxed);
  // A process its parent started while running hakmem counts in the stand-in first, as a
  // fork child does: the shell's or build tool's commands that exit within
  // kChildPublishDelayNs never create a file.
  const bool later = shared && !again && parent_publishes();
  Segment* s = shared && !later ? create_file() : nullptr;
  if (s == nullptr) {
    s = &g_local;
    if (again) clear_runtime(s);
  } else {
    g_seg_state.shared = true;
    // Process-wide counts taken before the segment existed (the allocator's first maps).
    if (!again) copy_runtime(s, g_local);
  }
  publish(s, tiny_class_sizes, tiny_class_count, env_mask, generation);
  if (s == &g_local) g_seg_state.local_served = true;
  g_seg_state.seg.store(s, std::memory_order_release);
  if (later) {
    g_seg_state.publish_after_ns.store(0, std::memory_order_relaxed);
    g_seg_state.mapped_at_pending.store(mapped_bytes(*s), std::memory_order_relaxed);
    g_seg_state.pending.store(true, std::memory_order_relaxed);
  }
}

void control_segment_reopen_in_child() {
  Segment* old = g_seg_state.seg.load(std::memory_order_acquire);
  const bool was_shared = g_seg_state.shared;

  // The child counts into a local stand-in first. Its own file appears at its first
  // periodic check (control_poll): a child that only execs never creates one, so
  // fork+exec of a program without hakmem leaves nothing behind in the shm dir.
  // g_path keeps the parent's path (not written: it has a page of its own to copy): it is
  // not read while g_seg_state.shared is false, and the child's own file overwrites it.
  g_seg_state.shared = false;
  // The child inherits its parent's memory, so it inherits the figures that describe it:
  // mapped and cached bytes, and the per-thread counts whose difference is the live bytes
  // (zeroing them made the child's gauges run below zero as it freed inherited blocks).
  // Only slot ownership starts over: the parent's other threads do not exist here.
  // The stand-in is g_local when it never served as a live segment (a parent that created
  // its file at its start): its rules, site entries and slots are still zero, and the
  // global figures it counted before that file existed are overwritten by the copy. Else
  // it is a fresh mapping, zero and untouched: clearing g_local first read all 512 site
  // entries (96 KiB) and wrote the rest, 36 page faults in every child (fork+waitpid of a
  // child that mallocs once: 409 us, glibc 221), and the mapping, its system call and its
  // unmapping at exit, cost 7-14 us of a 220 us fork+waitpid.
  Segment* local = &g_local;
  if (old != &g_local) {
    if (g_seg_state.local_served) {
      int err = 0;
      if (void* m = os_map(sizeof(Segment), 0, false, &err)) local = static_cast<Segment*>(m);
      else clear_runtime(&g_local);
    }
    copy_runtime(local, *old);
  }
  if (local == &g_local) g_seg_state.local_served = true;  // on the line the child writes anyway
  release_slots(local);
  publish_inherited(local, *old);
  g_seg_state.seg.store(local, std::memory_order_release);
  g_seg_state.publish_after_ns.store(0, std::memory_order_relaxed);
  g_seg_state.mapped_at_pending.store(mapped_bytes(*local), std::memory_order_relaxed);
  // The child never writes into its parent's segment: nothing points into it any more but
  // the slot pointers of heaps whose threads did not survive the fork, and those never run.
  // Still, the shared mapping is replaced with private zero pages (not unmapped: such a
  // stale pointer then writes into harmless memory) when the child publishes rather than
  // here: a child that execs or exits before (a shell's, a service's command) is spared
  // the system call.
  if (was_shared && old != &g_local) g_seg_state.parent.store(old, std::memory_order_relaxed);
  const bool parent_mapped = g_seg_state.parent.load(std::memory_order_relaxed) != nullptr;
  g_seg_state.pending.store(knob(proto::Knob::ShmEnable) != 0 || parent_mapped, std::memory_order_relaxed);
}

void control_segment_publish_pending(bool at_once) {
  // A fork child, and a process whose parent runs hakmem with a segment (a shell's or a
  // build tool's command, control_segment_open), publishes once it has lived a while: its
  // first check starts the clock, the first one kChildPublishDelayNs later creates the file.
  // Most such processes exec or exit well within that, and creating the file (shm_open,
  // ftruncate, mmap, its first-written pages, a sweep of the folder for dead processes'
  // files, the unlink at exit) costs each of them tens of microseconds of a half-millisecond
  // life. One that lives longer appears in `hakctl ps` a moment later, at its first slow
  // path after the delay; one that maps kPublishGrowthBytes of its own at its next check,
  // delay or not; one that starts a second thread at that thread's first allocation. A
  // fork child drops its view of its parent's segment (control_segment_reopen_in_child)
  // then too, not at its first check: replacing that mapping cost every child that
  // allocates and exits within the delay 12 us of a 250 us fork+waitpid.
  if (knob(proto::Knob::ShmEnable) == 0) {
    drop_parent_view();
    g_seg_state.pending.store(false, std::memory_order_relaxed);
    return;
  }
  const uint64_t grown = mapped_bytes(*g_seg_state.seg.load(std::memory_order_acquire)) -
                        g_seg_state.mapped_at_pending.load(std::memory_order_relaxed);
  if (!at_once && static_cast<int64_t>(grown) < kPublishGrowthBytes) {
    const uint64_t now = os_now_ns();
    uint64_t after = g_seg_state.publish_after_ns.load(std::memory_order_relaxed);
    if (after == 0) {
      g_seg_state.publish_after_ns.store(now + kChildPublishDelayNs, std::memory_order_relaxed);
      return;
    }
    if (now < after) return;
  }
  bool expected = true;
  if (!g_seg_state.pending.compare_exchange_strong(expected, false, std::memory_order_acq_rel)) return;
  drop_parent_view();
  Segment* s = create_file();
  if (s == nullptr) return;  // warned; stays local
  // Threads attaching or detaching meanwhile would change the stand-in's slots after the
  // copy. What threads count in the stand-in after it, each carries over itself
  // (control.cc, carry_over).
  LockGuard g(g_seg_state.slots_lock);
  const Segment& local = *g_seg_state.seg.load(std::memory_order_acquire);  // g_local, or a fork child's
  copy_runtime(s, local);
  // One generation past the local one: every thread's next control_poll sees a change,
  // reloads and re-targets its slot pointer into the new segment.
  publish(s, local.header.tiny_class_size, local.header.tiny_class_count,
          local.knobs.env_mask.load(std::memory_order_relaxed),
          local.knobs.generation.load(std::memory_order_acquire) + 1);
  g_seg_state.shared = true;
  g_seg_state.seg.store(s, std::memory_order_release);
}

void control_segment_close() {
  if (g_seg_state.shared && g_owner_pid == os_pid() && g_path[0]) {
    os_shm_unlink(g_path);
    g_path[0] = 0;
    g_seg_state.shared = false;
  }
}

// At exit (and dlclose): print the HAKMEM_STATS summary, then remove the file so hakmemd
// stops listing the process. The mapping stays: destructors running after this one may
// still allocate and count. A destructor, not atexit(): registering with atexit can
// allocate.
__attribute__((destructor)) static void control_segment_at_exit() {
  stats_at_exit();
  control_segment_close();
}

}  // namespace hakmem
