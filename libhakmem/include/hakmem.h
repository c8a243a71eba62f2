/* hakmem: the public C API of libhakmem for programs that link it (or find it with dlsym
 * when preloaded). malloc and friends need no header: they are the standard ones.
 *
 * Knobs are named as in `hakctl knobs` ("tiny.cap", "whale.cache_bytes", ...) and take the
 * same values and ranges as HAKMEM_* variables and `hakctl set`; the same code validates
 * all three. Stats are the figures `hakctl stats` shows for this process.
 *
 * Every function is safe to call from any thread, never allocates, and works with or
 * without the shared-memory segment (HAKMEM_SHM=0). */
#ifndef HAKMEM_H
#define HAKMEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define HAKMEM_API __attribute__((visibility("default")))
#else
#define HAKMEM_API
#endif

/* Return codes of the knob functions. */
#define HAKMEM_OK 0
#define HAKMEM_EUNKNOWN 1     /* no knob of that name */
#define HAKMEM_EINVAL 2       /* value not parseable for the knob's type, or a null argument */
#define HAKMEM_ERANGE 3       /* value outside the knob's range (the error text names it) */
#define HAKMEM_ERESTART 4     /* knob only takes effect at start (set it with its HAKMEM_* variable) */

/* The library version, "MAJOR.MINOR.PATCH". */
HAKMEM_API const char* hakmem_version(void);

/* Short text for a return code above. */
HAKMEM_API const char* hakmem_strerror(int code);

/* Number of knobs, and the dotted name of knob i (NULL past the end): for listing. */
HAKMEM_API unsigned hakmem_knob_count(void);
HAKMEM_API const char* hakmem_knob_name(unsigned i);

/* The value in effect in this process (sizes in bytes, durations in ms, booleans 0/1). */
HAKMEM_API int hakmem_knob_get(const char* name, uint64_t* value);

/* Sets a live knob from text ("64", "1G", "500ms", "on"), like `hakctl set name=value`.
 * On failure returns a code above and, when err is not NULL, writes a one-line reason
 * naming the allowed range into err (NUL-terminated, truncated to err_cap). The new value
 * reaches every thread at its next slow path and shows in the segment's knob block. */
HAKMEM_API int hakmem_knob_set(const char* name, const char* value, char* err, size_t err_cap);
/* Same with a number (range-checked, never clamped). */
HAKMEM_API int hakmem_knob_set_u64(const char* name, uint64_t value, char* err, size_t err_cap);

/* Tier indices of hakmem_stats.tier[]. */
enum hakmem_tier { HAKMEM_TIER_TINY = 0, HAKMEM_TIER_POOL = 1, HAKMEM_TIER_BUNDLE = 2, HAKMEM_TIER_WHALE = 3 };
#define HAKMEM_TIER_COUNT 4

struct hakmem_tier_stats {
  uint64_t allocs;         /* allocations served by the tier */
  uint64_t frees;          /* frees returned to the tier */
  uint64_t hits;           /* allocations served by the thread cache without a refill */
  uint64_t misses;         /* allocations that needed a refill */
  uint64_t remote_frees;   /* frees of blocks owned by another thread (tiny) or shard (pool, bundle) */
  uint64_t alloc_bytes;    /* usable bytes handed out */
  uint64_t free_bytes;     /* usable bytes given back */
  uint64_t live_bytes;     /* alloc_bytes - free_bytes */
  uint64_t cached_bytes;   /* free memory kept for reuse without an OS call */
  uint64_t mapped_bytes;   /* memory currently mapped from the OS */
  uint64_t os_maps;        /* mmap and mremap calls */
  uint64_t os_unmaps;      /* munmap calls */
  uint64_t madvises;       /* madvise calls */
  uint64_t cache_hits;     /* allocations served from the tier's cache of free spans */
  uint64_t cache_misses;   /* allocations that needed new memory from the OS */
};

struct hakmem_stats {
  struct hakmem_tier_stats tier[HAKMEM_TIER_COUNT];
  uint64_t minor_faults;        /* soft page faults of the process so far */
  uint64_t invalid_frees;       /* free() of pointers hakmem does not own */
  uint64_t double_frees;
  uint64_t threads_live;        /* threads holding a counter slot */
  uint64_t thread_slots_used;
  uint64_t threads_unslotted;   /* threads whose counters are not published (slots full) */
  uint64_t knob_generation;     /* knob block generation, and the last one applied */
  uint64_t knob_applied_generation;
  int shared;                   /* 1 when the segment is in shared memory (hakmemd sees it) */
  char segment_path[256];       /* its path, "" when not shared */
};

/* Fills *out with a snapshot of this process's figures. `size` is sizeof(struct
 * hakmem_stats) as the caller compiled it (fields are only ever appended). Returns
 * HAKMEM_OK or HAKMEM_EINVAL. */
HAKMEM_API int hakmem_stats_get(struct hakmem_stats* out, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* HAKMEM_H */
