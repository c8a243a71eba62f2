/* Symbol coverage: run with LD_PRELOAD=<libhakmem>; every allocation entry point the process
 * resolves must come from the preloaded library, whatever libc and libstdc++ export.
 * Prints each symbol that does not and exits 1; also makes one real call through each. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

/* glibc exports these but declares them in no header. */
void* __libc_malloc(size_t);
void __libc_free(void*);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);

static const char* const kSymbols[] = {
    "malloc", "free", "calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc",
    "memalign", "valloc", "pvalloc", "malloc_usable_size", "free_sized", "free_aligned_sized",
    "cfree", "mallopt", "malloc_trim", "mallinfo", "mallinfo2", "malloc_stats", "malloc_info",
    /* glibc's own names for its allocator, which it exports too */
    "__libc_malloc", "__libc_free", "__libc_calloc", "__libc_realloc", "__libc_memalign",
    "__libc_valloc", "__libc_pvalloc",
    /* operator new / delete, every variant (Itanium mangling, 64-bit size_t) */
    "_Znwm", "_Znam", "_ZnwmRKSt9nothrow_t", "_ZnamRKSt9nothrow_t", "_ZnwmSt11align_val_t",
    "_ZnamSt11align_val_t", "_ZnwmSt11align_val_tRKSt9nothrow_t", "_ZnamSt11align_val_tRKSt9nothrow_t",
    "_ZdlPv", "_ZdaPv", "_ZdlPvRKSt9nothrow_t", "_ZdaPvRKSt9nothrow_t", "_ZdlPvm", "_ZdaPvm",
    "_ZdlPvSt11align_val_t", "_ZdaPvSt11align_val_t", "_ZdlPvmSt11align_val_t", "_ZdaPvmSt11align_val_t",
    "_ZdlPvSt11align_val_tRKSt9nothrow_t", "_ZdaPvSt11align_val_tRKSt9nothrow_t",
};

int main(int argc, char** argv) {
  const char* want = argc > 1 ? argv[1] : "libhakmem";
  const char* base = strrchr(want, '/');
  base = base ? base + 1 : want;
  int bad = 0;
  for (size_t i = 0; i < sizeof kSymbols / sizeof kSymbols[0]; i++) {
    void* f = dlsym(RTLD_DEFAULT, kSymbols[i]);
    Dl_info info;
    memset(&info, 0, sizeof info);
    if (!f || !dladdr(f, &info) || !info.dli_fname || !strstr(info.dli_fname, base)) {
      printf("NOT FROM %s: %s (%s)\n", base, kSymbols[i], f && info.dli_fname ? info.dli_fname : "unresolved");
      bad = 1;
    }
  }
  /* And the calls the program itself makes bind there too. */
  void* p = malloc(10);
  void* q = realloc(p, 100000);
  void* r = calloc(10, 10);
  if (!q || !r || malloc_usable_size(q) < 100000) bad = 1;
  free(q);
  free(r);
  /* Blocks from glibc's names and from the plain ones are one heap: each frees through the
   * other (an invalid free would be reported on stderr, which the test rejects). */
  char* a = __libc_malloc(100);
  char* z = __libc_calloc(100, 100);
  char* m = __libc_memalign(4096, 5000);
  if (!a || !z || !m || ((uintptr_t)m & 4095) != 0 || malloc_usable_size(m) < 5000) bad = 1;
  for (int i = 0; z && i < 10000; i++) bad |= z[i] != 0;
  if (a) memcpy(a, "hakmem", 7);
  a = __libc_realloc(a, 50000);
  if (!a || strcmp(a, "hakmem") != 0) bad = 1;
  free(a);
  free(z);
  __libc_free(m);
  __libc_free(malloc(24));
  if (!bad) printf("all %zu symbols resolve to %s\n", sizeof kSymbols / sizeof kSymbols[0], base);
  return bad;
}
