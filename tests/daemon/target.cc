// daemon_target: a program the integration tests run with libhakmem preloaded. It allocates
// on command so a test can watch the figures hakmemd reports move, and see a knob change its
// behaviour. Commands on stdin, one per line; it answers "ok" on stdout after each:
//   hold N SIZE    allocate N blocks of SIZE bytes, touch them, keep them
//   release        free every held block
//   churn N SIZE   N times: allocate SIZE, touch each 4 KiB page, free
//   tick           10000 small malloc/free pairs (runs the allocator's periodic knob check)
//   quit
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vector>

static void tick() {
  for (int i = 0; i < 10000; i++) {
    void* volatile p = malloc(32);
    free(p);
  }
}

int main() {
  setvbuf(stdout, nullptr, _IOLBF, 0);
  std::vector<void*> held;
  held.reserve(100000);
  printf("ready %d\n", getpid());
  char line[256];
  while (fgets(line, sizeof line, stdin)) {
    char cmd[32] = {};
    unsigned long n = 0, size = 0;
    sscanf(line, "%31s %lu %lu", cmd, &n, &size);
    if (!strcmp(cmd, "hold")) {
      for (unsigned long i = 0; i < n; i++) {
        char* p = static_cast<char*>(malloc(size));
        if (!p) return 3;
        memset(p, 1, size);
        held.push_back(p);
      }
    } else if (!strcmp(cmd, "release")) {
      for (void* p : held) free(p);
      held.clear();
    } else if (!strcmp(cmd, "churn")) {
      tick();
      for (unsigned long i = 0; i < n; i++) {
        char* p = static_cast<char*>(malloc(size));
        if (!p) return 3;
        for (unsigned long o = 0; o < size; o += 4096) p[o] = 1;
        free(p);
      }
    } else if (!strcmp(cmd, "tick")) {
      tick();
    } else if (!strcmp(cmd, "quit")) {
      break;
    } else {
      printf("unknown command\n");
      continue;
    }
    printf("ok\n");
  }
  return 0;
}
