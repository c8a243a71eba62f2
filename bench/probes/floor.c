// floor: the fastest allocator a single-threaded workload could have, as a yardstick for
// what is left to win, not an allocator to use. Preload it into a single-threaded benchmark
// (`LD_PRELOAD=build/bench/libbench_floor.so build/bench/bench_cfrac`) next to the real
// allocators: the gap between hakmem and it bounds what any change to hakmem's code paths
// can still gain there. It has no locks (one thread only), no checks (a bad or double free
// corrupts it), no statistics and never returns memory: each block carries a 16-byte
// header naming its class, small requests come from exact 16-byte classes and larger ones
// from power-of-two classes, each class a LIFO list, fresh blocks cut from 64 MiB mappings.
// Its placement is naive (no colouring, headers between blocks), so on workloads that walk
// big blocks page by page it can be slower than a real allocator: there it is no bound.
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#define EXPORT __attribute__((visibility("default")))

typedef struct Free {
  struct Free* next;
} Free;

enum { kSmallMax = 1024, kAlignedTag = 255 };

// Tags 1..64: 16-byte classes up to kSmallMax; 100 + k: blocks of 2^k bytes.
static Free* g_small[kSmallMax / 16 + 1];
static Free* g_big[64];
static char* g_cur;
static char* g_end;

static void* carve(size_t bytes) {
  if ((size_t)(g_end - g_cur) < bytes) {
    size_t len = bytes > ((size_t)64 << 20) ? bytes : ((size_t)64 << 20);
    void* m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    g_cur = (char*)m;
    g_end = g_cur + len;
  }
  void* p = g_cur;
  g_cur += bytes;
  return p;
}

static Free** list_of(uint64_t tag) { return tag < 100 ? &g_small[tag] : &g_big[tag - 100]; }

static size_t usable_of(uint64_t tag) { return tag < 100 ? (size_t)tag * 16 : (size_t)1 << (tag - 100); }

EXPORT void* malloc(size_t n) {
  if (n > ((size_t)1 << 46)) {
    errno = ENOMEM;
    return NULL;
  }
  uint64_t tag;
  if (n <= kSmallMax) {
    tag = n ? (n + 15) / 16 : 1;
  } else {
    tag = 100 + (64 - (uint64_t)__builtin_clzll(n - 1));
  }
  Free** l = list_of(tag);
  Free* b = *l;
  if (b) {
    *l = b->next;
    return b;
  }
  char* p = carve(16 + usable_of(tag));
  if (!p) {
    errno = ENOMEM;
    return NULL;
  }
  *(uint64_t*)p = tag;
  return p + 16;
}

EXPORT void free(void* p) {
  if (!p) return;
  uint64_t tag = *(uint64_t*)((char*)p - 16);
  if (tag == kAlignedTag) {
    free(*(void**)((char*)p - 8));
    return;
  }
  Free** l = list_of(tag);
  ((Free*)p)->next = *l;
  *l = (Free*)p;
}

EXPORT size_t malloc_usable_size(void* p) {
  if (!p) return 0;
  uint64_t tag = *(uint64_t*)((char*)p - 16);
  if (tag == kAlignedTag) {
    char* base = *(char**)((char*)p - 8);
    return malloc_usable_size(base) - (size_t)((char*)p - base);
  }
  return usable_of(tag);
}

EXPORT void* calloc(size_t a, size_t b) {
  size_t n;
  if (__builtin_mul_overflow(a, b, &n)) {
    errno = ENOMEM;
    return NULL;
  }
  void* p = malloc(n);
  if (p) memset(p, 0, n);
  return p;
}

EXPORT void* realloc(void* p, size_t n) {
  if (!p) return malloc(n);
  size_t have = malloc_usable_size(p);
  if (n <= have) return p;
  void* q = malloc(n);
  if (!q) return NULL;
  memcpy(q, p, have);
  free(p);
  return q;
}

// Aligned blocks: an ordinary block big enough to hold one at the alignment, with a header
// of its own (the aligned tag and the ordinary block) just below it.
EXPORT int posix_memalign(void** out, size_t align, size_t n) {
  if (align < sizeof(void*) || (align & (align - 1))) return EINVAL;
  if (align <= 16) {
    void* p = malloc(n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
  }
  if (n > ((size_t)1 << 46) || align > ((size_t)1 << 40)) return ENOMEM;
  char* base = malloc(n + align + 16);
  if (!base) return ENOMEM;
  char* p = (char*)(((uintptr_t)base + 16 + align - 1) & ~(uintptr_t)(align - 1));
  *(uint64_t*)(p - 16) = kAlignedTag;
  *(char**)(p - 8) = base;
  *out = p;
  return 0;
}

EXPORT void* aligned_alloc(size_t align, size_t n) {
  void* p;
  int err = posix_memalign(&p, align < sizeof(void*) ? sizeof(void*) : align, n);
  if (err) {
    errno = err;
    return NULL;
  }
  return p;
}

EXPORT void* memalign(size_t align, size_t n) { return aligned_alloc(align, n); }

EXPORT void* valloc(size_t n) { return aligned_alloc(4096, n); }

EXPORT void* pvalloc(size_t n) { return aligned_alloc(4096, (n + 4095) & ~(size_t)4095); }
