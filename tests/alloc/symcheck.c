/* Symbol coverage: run with LD_PRELOAD=<libhakmem>; every allocation entry point the process
 * resolves must come from the preloaded library, whatever libc and libstdc++ export.
 * Prints each symbol that does not and exits 1; also makes one real call through each. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char* const kSymbols[] = {
    "malloc", "free", "calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc",
    "memalign", "valloc", "pvalloc", "malloc_usable_size", "free_sized", "free_aligned_sized",
    "cfree", "mallopt", "malloc_trim", "mallinfo", "mallinfo2", "malloc_stats", "malloc_info",
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
  if (!bad) printf("all %zu symbols resolve to %s\n", sizeof kSymbols / sizeof kSymbols[0], base);
  return bad;
}
