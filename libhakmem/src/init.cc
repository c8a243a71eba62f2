// Process and thread lifecycle: the one-time process initialisation (reentrancy-safe: it
// may run inside the very first malloc, called from libc's own start-up), heap attach and
// adoption, the thread-exit hand-back, fork handling, and the periodic slow-path tick.
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "arena.h"
#include "control.h"
#include "heap.h"
#include "lock.h"
#include "os.h"

namespace hakmem {

constinit ForkLocks g_fork_locks{};

constinit Heap g_empty_heap{};
constinit thread_local Heap* t_heap __attribute__((tls_model("initial-exec"))) = &g_empty_heap;
uintptr_t g_cookie_secret = 0x5a5a5a5a5a5a5a5aull;

namespace {

// 0 = not started, 1 = in progress (g_init_tid), 2 = done.
HAKMEM_START_DATA std::atomic<int> g_init_state{0};
HAKMEM_START_DATA std::atomic<uint32_t> g_init_tid{0};
pthread_key_t g_heap_key;

// Heap registry: heaps are carved from mappings made here and never unmapped. Under
// g_fork_locks.heaps.
Heap* g_all_heaps;
Heap* g_abandoned;
uint32_t g_heap_count;
char* g_meta_cur;
char* g_meta_end;

void thread_exit(void* arg);
void fork_prepare();
void fork_parent();
void fork_child();

Heap* heap_new_locked() {
  constexpr size_t kMetaBlock = 1u << 20;
  // Page slots: each heap's first (cold) line takes the page-offset-0 set (heap.h).
  static_assert(sizeof(Heap) <= 4096, "a heap fits a page slot");
  constexpr size_t sz = 4096;
  if (!g_meta_cur || g_meta_cur + sz > g_meta_end) {
    int err = 0;
    void* p = os_map(kMetaBlock, 4096, false, &err);
    if (!p) return nullptr;
    g_meta_cur = static_cast<char*>(p);
    g_meta_end = g_meta_cur + kMetaBlock;
  }
  Heap* h = reinterpret_cast<Heap*>(g_meta_cur);
  g_meta_cur += sz;
  h->index = g_heap_count++;
  h->shard = static_cast<uint8_t>(h->index % kShards);
  h->next_all = g_all_heaps;
  g_all_heaps = h;
  return h;
}

bool process_init() {
  int st = g_init_state.load(std::memory_order_acquire);
  if (st == 2) return true;
  uint32_t me = os_tid();
  if (st == 1 && g_init_tid.load(std::memory_order_relaxed) == me) return false;  // re-entered
  int expected = 0;
  if (g_init_state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
    g_init_tid.store(me, std::memory_order_relaxed);
    g_cookie_secret = os_random_seed() | 1;
    control_init(kTinyClassSize, kTinyClasses);
    g_empty_heap.ctl.slot = control_discard_slot();
    pthread_key_create(&g_heap_key, thread_exit);
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    g_init_state.store(2, std::memory_order_release);
    return true;
  }
  if (g_init_tid.load(std::memory_order_relaxed) == me) return false;
  while (g_init_state.load(std::memory_order_acquire) != 2) os_yield();
  return true;
}

// At load, before main: the segment is published and the environment's knobs are read
// whether or not anything allocates first, so hakmemd lists the process from its start
// (an allocation from an earlier constructor may have done this already).
__attribute__((constructor)) static void process_init_at_load() { process_init(); }

void thread_exit(void* arg) {
  Heap* h = static_cast<Heap*>(arg);
  if (!h || h == &g_empty_heap) return;
  // From here on this thread allocates and frees through the empty heap (frees go back to
  // their slabs remotely; a later malloc attaches a heap again and re-arms this destructor).
  t_heap = &g_empty_heap;
  tiny_heap_release(h);
  for (uint32_t c = 0; c < kPoolClasses; c++) pool_flush(h, c, 0);
  bundle_flush_all(h);
  control_thread_detach(&h->ctl);
  h->ctl.slot = control_discard_slot();
  h->live = 0;
  LockGuard g(g_fork_locks.heaps);
  h->next_abandoned = g_abandoned;
  g_abandoned = h;
}

// Whether fork_prepare took every lock, for fork_parent and fork_child.
bool g_fork_locked = false;

// Calls f on every lock of the fork lock table, in its lock order.
template <class F>
void each_fork_lock(F f) {
  f(g_fork_locks.heaps);
  for (auto& row : g_fork_locks.pool)
    for (Mutex& m : row) f(m);
  for (Mutex& m : g_fork_locks.arena) f(m);
  for (Mutex& m : g_fork_locks.whale) f(m);
}

void fork_prepare() {
  if (g_fork_locked) g_fork_locked = false;  // not written when unchanged: see below
  if (g_init_state.load(std::memory_order_acquire) != 2) return;
  // A process that never had a second thread has no other thread that could hold one of
  // our locks or be halfway through a change: nothing to take, and nothing to reset in the
  // child. Taking them wrote the pages that hold them just before the fork, so the
  // parent's unlocks and the child's resets copied each of them (a page fault apiece, in
  // both processes): a shell running a command substitution paid them for every command.
  // Any page written around a fork costs that, hence the flag's conditional store (and
  // the locks' table of two pages, heap.h).
  if (os_single_threaded()) return;
  each_fork_lock([](Mutex& m) { m.lock(); });
  g_fork_locked = true;
}

void fork_parent() {
  if (!g_fork_locked) return;
  each_fork_lock([](Mutex& m) { m.unlock(); });
}

void fork_child() {
  if (g_init_state.load(std::memory_order_acquire) != 2) return;
  if (g_fork_locked) each_fork_lock([](Mutex& m) { m.reset(); });
  decay_thread_atfork_child();
  // Heaps of the parent's other threads stay as they were (their owners do not exist
  // here; like glibc's per-thread caches, their cached blocks are not reclaimed).
  Heap* h = t_heap;
  control_atfork_child(h != &g_empty_heap ? &h->ctl : nullptr);
}

}  // namespace

bool process_ready() { return g_init_state.load(std::memory_order_acquire) == 2; }

void heap_refresh_knobs(Heap* h) {
  uint32_t cap = static_cast<uint32_t>(knob(proto::Knob::TinyCap));
  h->knob_tiny_prewarm = knob(proto::Knob::TinyPrewarm) != 0;
  h->knob_pool_prewarm = knob(proto::Knob::PoolPrewarm) != 0;
  h->knob_bundle_prewarm = knob(proto::Knob::BundlePrewarm) != 0;
  h->knob_abort_on_error = knob(proto::Knob::AbortOnError) != 0;
  if (cap != h->knob_tiny_cap || h->tiny[0].cap == 0) {
    tiny_drain_delayed(h);  // before a magazine in bypass gets a capacity again
    h->knob_tiny_cap = cap;
    for (uint32_t c = 0; c < kTinyClasses; c++) {
      uint32_t nc = tiny_cap_for(h, c);
      // A smaller capacity takes effect at once: the excess goes back to the slabs.
      if (h->tiny[c].count() > nc) tiny_flush(h, c, nc);
      h->tiny[c].set_cap(nc);
      h->tiny_direct[c] = 0;  // a new capacity (or a new thread) starts the count afresh
      h->tiny_ceiling[c] = tiny_base_ceiling(c);
    }
  }
}

void heap_poll(Heap* h) {
  if (control_poll(&h->ctl)) {
    heap_refresh_knobs(h);
    whale_apply_knobs();
  }
}

namespace {

// A magazine whose head has not moved for a quarter of the decay time (bundle.decay_ms,
// which also ages the small pages) is a class this thread no longer uses: its blocks go
// back to their slabs, whose pages then decay as usual. After frees in an order unlike the
// allocation order, nearly every slab holds one of a full magazine's blocks, and none could
// empty and decay until the thread freed more of that class (60 MiB of 200-byte blocks
// freed in a scattered order kept 33 MiB resident). The one false positive, a malloc/free
// pair that puts back the very block it took, costs a refill per check.
void heap_trim_idle(Heap* h, uint64_t now) {
  if (h == &g_empty_heap || now - h->idle_check_ns < knob(proto::Knob::BundleDecayMs) * (1000000ull / 4)) return;
  h->idle_check_ns = now;
  tiny_drain_delayed(h);
  for (uint32_t c = 0; c < kTinyClasses; c++) {
    if (h->tiny[c].head && h->tiny[c].head == h->tiny_seen[c]) tiny_flush_idle(h, c);
    h->tiny_seen[c] = h->tiny[c].head;
  }
  for (uint32_t c = 0; c < kPoolClasses; c++) {
    if (h->pool[c].head && h->pool[c].head == h->pool_seen[c]) pool_flush_idle(h, c);
    h->pool_seen[c] = h->pool[c].head;
  }
}

}  // namespace

void heap_tick(Heap* h) {
  heap_poll(h);
  const uint64_t now = os_now_ns();
  heap_trim_idle(h, now);
  decay_tick(now);
  decay_thread_maybe_start();
}

Heap* heap_get_slow() {
  Heap* h = t_heap;
  if (h != &g_empty_heap) return h;
  if (!process_init()) return nullptr;
  {
    LockGuard g(g_fork_locks.heaps);
    h = g_abandoned;
    if (h) g_abandoned = h->next_abandoned;
    else h = heap_new_locked();
  }
  if (!h) return nullptr;
  h->next_abandoned = nullptr;
  h->live = 1;
  h->ctl.slot = control_discard_slot();
  control_thread_attach(&h->ctl);
  for (uint32_t c = 0; c < kPoolClasses; c++) {
    h->pool[c].set_cap(pool_cap(c));
    h->pool_ceiling[c] = pool_cap(c);
    h->pool_spilled[c] = 0;
  }
  // A new thread's first use of a class carves a page's worth, in an adopted heap too.
  h->tiny_refilled = 0;
  h->pool_refilled = 0;
  h->bundle_limit = kBundleCacheBytes;
  h->knob_tiny_cap = UINT32_MAX;  // forces every magazine capacity to be set
  heap_refresh_knobs(h);
  // An adopted heap first takes back what other threads freed into its slabs.
  tiny_heap_adopt(h);
  pthread_setspecific(g_heap_key, h);
  t_heap = h;
  control_thread_started();  // with the heap in place, as at any periodic check
  return h;
}

}  // namespace hakmem

// unshare(2) of CLONE_NEWUSER, CLONE_VM, CLONE_SIGHAND or CLONE_THREAD, and setns(2) into a
// user or mount namespace, fail with EINVAL in a multi-threaded process (a mount namespace
// wants the filesystem context unshared, and threads share it). A program that is
// single-threaded must not see them fail because hakmem's decay thread is running: the
// thread is retired first (and never started again here), then the call goes to the
// kernel. A joined thread leaves the thread group a moment after pthread_join returns, so
// an EINVAL right after a retire is retried for up to 100 ms.
namespace {

int single_threaded_syscall(long nr, long a, long b, bool needs_one_thread) {
  const bool retired = needs_one_thread && hakmem::decay_thread_retire();
  for (int i = 0;; i++) {
    const int r = hakmem::os_syscall2(nr, a, b);
    if (r == 0 || errno != EINVAL || !retired || i == 100) return r;
    hakmem::os_sleep_ns(1000000);
  }
}

constexpr int kOneThreadUnshare = CLONE_NEWUSER | CLONE_VM | CLONE_SIGHAND | CLONE_THREAD;

}  // namespace

extern "C" __attribute__((visibility("default"))) int unshare(int flags) noexcept {
  return single_threaded_syscall(SYS_unshare, flags, 0, (flags & kOneThreadUnshare) != 0);
}

// nstype 0 accepts any namespace, a user or mount one among them.
extern "C" __attribute__((visibility("default"))) int setns(int fd, int nstype) noexcept {
  return single_threaded_syscall(SYS_setns, fd, nstype, nstype == 0 || (nstype & (CLONE_NEWUSER | CLONE_NEWNS)) != 0);
}
