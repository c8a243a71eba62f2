/* An outside program linked against an installed libhakmem. It proves its allocations are
 * served by hakmem: the library's own counters move by exactly what it allocates. */
#include <hakmem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t pool_allocs(void) {
  struct hakmem_stats s;
  if (hakmem_stats_get(&s, sizeof s) != HAKMEM_OK) {
    fprintf(stderr, "hakmem_stats_get failed\n");
    exit(1);
  }
  return s.tier[HAKMEM_TIER_POOL].allocs;
}

int main(void) {
  enum { N = 100, SIZE = 8192 };
  void* blocks[N];
  uint64_t before = pool_allocs();
  for (int i = 0; i < N; i++) {
    blocks[i] = malloc(SIZE);
    if (!blocks[i]) return 1;
    memset(blocks[i], i, SIZE);
  }
  uint64_t after = pool_allocs();
  for (int i = 0; i < N; i++) free(blocks[i]);
  if (after - before != N) {
    fprintf(stderr, "FAIL: pool allocs moved by %llu, expected %d: malloc is not hakmem's\n",
            (unsigned long long)(after - before), N);
    return 1;
  }
  printf("consumer: hakmem %s served %d allocations\n", hakmem_version(), N);
  return 0;
}
