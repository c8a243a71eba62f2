/* A C program linked against libhakmem (not preloaded): proves hakmem.h is plain C and
 * gives the AT_SECURE test a binary that can run setuid (ld.so ignores LD_PRELOAD there). */
#include <hakmem.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
  void* volatile p = malloc(100);  /* volatile: the pair must not be elided */
  free(p);
  for (unsigned i = 0; i < hakmem_knob_count(); i++) {
    uint64_t v = 0;
    if (hakmem_knob_get(hakmem_knob_name(i), &v) != HAKMEM_OK) return 1;
    printf("knob.%s %llu\n", hakmem_knob_name(i), (unsigned long long)v);
  }
  struct hakmem_stats s;
  if (hakmem_stats_get(&s, sizeof s) != HAKMEM_OK) return 1;
  printf("shared %d\npath %s\nversion %s\n", s.shared, s.segment_path, hakmem_version());
  return 0;
}
