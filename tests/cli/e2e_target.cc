// The process the end-to-end tests preload libhakmem into: it allocates and frees small
// blocks continuously (so its threads pass through the allocator's slow path and apply knob
// changes), and answers "knob NAME" lines on stdin with the value the library itself holds
// (hakmem_knob_get, looked up at run time so the program needs no link to libhakmem).
// Ends when stdin closes, so it never outlives the test that started it.
#include <dlfcn.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

namespace {

using KnobGet = int (*)(const char*, uint64_t*);

void churn() {
  void* blocks[64];
  for (int round = 0; round < 8; round++) {
    for (int i = 0; i < 64; i++) {
      blocks[i] = malloc(16 + static_cast<size_t>(i % 8) * 16);
      if (blocks[i]) memset(blocks[i], i, 16);
    }
    for (int i = 0; i < 64; i++) free(blocks[i]);
  }
  // A larger block now and then so more than one tier has figures.
  void* p = malloc(8192);
  if (p) memset(p, 1, 8192);
  free(p);
}

}  // namespace

int main() {
  const KnobGet knob_get = reinterpret_cast<KnobGet>(dlsym(RTLD_DEFAULT, "hakmem_knob_get"));
  // Whose malloc this process runs: the tests need libhakmem's, not just its C API.
  Dl_info where{};
  const bool ours = dladdr(reinterpret_cast<void*>(dlsym(RTLD_DEFAULT, "malloc")), &where) && where.dli_fname &&
                    strstr(where.dli_fname, "libhakmem") != nullptr;
  setvbuf(stdout, nullptr, _IOLBF, 0);
  printf("ready %d %s %s\n", static_cast<int>(getpid()), knob_get ? "hakmem" : "no-hakmem",
         ours ? "hakmem-malloc" : "other-malloc");
  char line[256];
  size_t used = 0;
  for (;;) {
    churn();
    pollfd p{0, POLLIN, 0};
    if (poll(&p, 1, 2) <= 0) continue;
    const ssize_t n = read(0, line + used, sizeof line - 1 - used);
    if (n <= 0) return 0;
    used += static_cast<size_t>(n);
    line[used] = 0;
    char* nl;
    while ((nl = strchr(line, '\n')) != nullptr) {
      *nl = 0;
      if (strncmp(line, "knob ", 5) == 0) {
        uint64_t v = 0;
        const int rc = knob_get ? knob_get(line + 5, &v) : -1;
        if (rc == 0) printf("knob %s %llu\n", line + 5, static_cast<unsigned long long>(v));
        else printf("knob %s error %d\n", line + 5, rc);
      }
      const size_t rest = used - static_cast<size_t>(nl + 1 - line);
      memmove(line, nl + 1, rest);
      used = rest;
      line[used] = 0;
    }
    if (used == sizeof line - 1) used = 0;  // an over-long line: drop it
  }
}
