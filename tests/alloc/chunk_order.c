/* Arenas take pages and runs from their oldest chunks first: run preloaded, in a process of
 * its own (the arenas start empty). Round 0 mallocs 64 blocks of 64 KiB, more than one
 * 4 MiB bundle chunk holds, so the last ones go to a second chunk, which the kernel maps
 * below the first; all are freed. Round 1 mallocs them again: the runs freed in the first,
 * resident chunk serve it, where taking the lowest chunk first carved the second chunk's
 * untouched units and faulted them in (about 600 faults). Then the same with 60,000 tiny
 * blocks of 100 B, about one and a half small chunks of slabs: their emptied pages go back
 * to the arena, and the second round's slabs come from the first chunk's pages, not from
 * the untouched half of the second (about 350 faults).
 * Prints the faults of each second round and "oldest chunks first" when both stay small. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static long faults(void) {
  struct rusage r;
  getrusage(RUSAGE_SELF, &r);
  return r.ru_minflt;
}

/* Faults of the second of two rounds of `count` blocks of `size`, each written whole. */
static long second_round_faults(int count, size_t size, int* bad) {
  static void* v[60000];
  long f = 0;
  for (int round = 0; round < 2; round++) {
    long f0 = faults();
    for (int i = 0; i < count; i++) {
      v[i] = malloc(size);
      if (!v[i]) {
        *bad = 1;
        return -1;
      }
      memset(v[i], i + 1, size);
    }
    for (int i = 0; i < count; i++) free(v[i]);
    f = faults() - f0;
  }
  return f;
}

int main(void) {
  int bad = 0;
  long bundle = second_round_faults(64, 65536, &bad);
  long tiny = second_round_faults(60000, 100, &bad);
  printf("second round faults: bundle %ld, tiny %ld\n", bundle, tiny);
  if (!bad && bundle < 64 && tiny < 64) printf("oldest chunks first\n");
  return 0;
}
