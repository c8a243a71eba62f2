// Arenas hand out 64 KiB pages (from small chunks) and bundle runs (from bundle chunks),
// and return cold memory to the OS by decay. There are kShards arenas, each behind its own
// padded lock, so no lock is global; a chunk belongs to one arena for life. Its frees take
// that arena's lock, except a bundle run freed by a thread of another shard, which waits in
// the arena's lock-free remote stack (arena_bundle_free_remote).
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "chunk.h"
#include "hakmem/proto/segment.h"

namespace hakmem {

// A free page of a small chunk of arena `shard`, mapping a new chunk when none is left.
// The caller sets its kind and fields. `prewarm` faults the page in if it is not backed.
// `user` (Tiny or Pool) is the tier the page is carved for: small chunks count as pool's
// mapped bytes, and a page in tiny's use moves to tiny's until it is released.
// nullptr when the OS refuses memory.
PageDesc* arena_page_alloc(uint32_t shard, bool prewarm, proto::Tier user);
// Gives an empty page back to its chunk's arena (any thread).
void arena_page_release(PageDesc* pg);

// A run of `units` 16 KiB units (3..64) from a bundle chunk of arena `shard`; returns its
// block, at the run's colour when `coloured` and the run is short enough (sizeclass.h),
// else at the run start.
// *zero (when given) tells whether the run's memory is known to read as zero: none of its
// units was handed out since it was mapped or last purged.
// `align_units` (a power of two, at most kBundleMaxAlign / kUnitSize): the run starts on a
// unit index that is a multiple of it, so an uncoloured block is aligned to that many units
// (chunks are 4 MiB-aligned).
void* arena_bundle_alloc(uint32_t shard, uint32_t units, bool prewarm, bool coloured, bool* zero = nullptr,
                         uint32_t align_units = 1);
// Frees a run (pre-condition: p is the block of a run in use).
void arena_bundle_free(void* p);
// Frees a run of `units` from a thread of another shard (pre-condition as above): the run
// waits, marked cached so that a second free is caught, in its arena's lock-free remote
// stack until the arena's next allocation, free or decay frees it under the lock it takes
// anyway. The freeing thread takes no lock and touches neither the lock's line nor the
// chunk index, which a producer's arena keeps in its own cache. Returns true when the
// caller should call decay_thread_maybe_start: the stack has grown by another MiB. (Asking
// on every such free read the process-wide cached-bytes counters, whose line the
// producer's arena then had to fetch back for its next update.)
bool arena_bundle_free_remote(void* p, uint32_t units);
// Whether runs wait in the remote stack of arena `shard` (a plain load).
bool arena_bundle_remote_waiting(uint32_t shard);
// Takes the runs waiting in the remote stack of h's arena into h's bins, and frees those
// that do not fit under the arena's lock (h's thread: a producer taking back what its
// consumers freed, as cached runs its next mallocs take without a lock).
void arena_bundle_adopt_remote(Heap* h);
// Grows the run p heads to `units` in place when the units after it are free (realloc).
// Returns false, changing nothing, when they are not. Pre-condition: p heads a run in use
// of fewer units.
bool arena_bundle_grow(void* p, uint32_t units);
// Shrinks the run p heads to `units` in place: the units after them go back to the arena
// (free, resident until they decay). Returns false, changing nothing, when the run is not
// longer. Pre-condition: p heads a run in use, and units >= kBundleMinUnits.
bool arena_bundle_shrink(void* p, uint32_t units);

// Returns memory free for longer than bundle.decay_ms to the OS (whole pages, whole huge
// pages for bundles, whole chunks when empty). Rate-limited unless `force`, which also
// ignores the age (malloc_trim). Returns the bytes given back.
size_t arena_decay(uint64_t now, bool force);
// Runs the arena and whale decay if enough time has passed since the last run.
void decay_tick(uint64_t now);
// Starts (once per process, again in a fork child) the thread that runs decay_tick while
// the program itself is idle, so RSS falls back within the decay time even when nothing
// calls malloc after a burst of frees. Pre-condition: the caller holds no hakmem lock
// (thread creation may allocate through us).
void decay_thread_maybe_start();
// Stops the thread for good, for a program that is about to ask the kernel for something
// only a single-threaded process may do (unshare or setns into a user namespace, ...): wakes
// it, joins it, and no thread is started again in this process. Memory decay then runs from
// the allocation slow paths only. True when a running thread was stopped.
bool decay_thread_retire();
void decay_thread_atfork_child();

}  // namespace hakmem
