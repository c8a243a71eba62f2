// The site-rules test program: two distinct allocating functions, exported (built with
// -rdynamic) so hakmemd can name them. Driven over stdin, one command per line:
//   a N SIZE   alloc_alpha: N allocations of SIZE bytes (each freed after the next)
//   b N SIZE   alloc_beta: the same from another call site
//   n N SIZE   new_gamma: N operator new[] of SIZE bytes
//   l N SIZE   align_delta: N posix_memalign(64) of SIZE bytes
//   r N SIZE   grow_epsilon: N blocks grown by realloc from 16 bytes to SIZE (doubling)
//   k N SIZE   hold_zeta: N blocks of SIZE live at once (first byte written), then all freed
//   h N SIZE   hold_eta: the same from another function
//   z N SIZE   alloc_zeta's first call site (malloc): N allocations of SIZE bytes
//   c N SIZE   alloc_zeta's second call site (calloc): the same
//   q          exit
// Replies "ok" after each command, and "ready PID" at start.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <string>

extern "C" __attribute__((noinline, used, visibility("default"))) void alloc_alpha(long n, size_t size) {
  void* prev = nullptr;
  for (long i = 0; i < n; i++) {
    void* p = malloc(size);
    if (!p) abort();
    static_cast<volatile char*>(p)[0] = 1;
    free(prev);
    prev = p;
  }
  free(prev);
}

extern "C" __attribute__((noinline, used, visibility("default"))) void alloc_beta(long n, size_t size) {
  void* prev = nullptr;
  for (long i = 0; i < n; i++) {
    void* p = malloc(size);
    if (!p) abort();
    static_cast<volatile char*>(p)[size - 1] = 2;
    free(prev);
    prev = p;
  }
  free(prev);
}

extern "C" __attribute__((noinline, used, visibility("default"))) void new_gamma(long n, size_t size) {
  char* prev = nullptr;
  for (long i = 0; i < n; i++) {
    char* p = new char[size];
    static_cast<volatile char*>(p)[0] = 3;
    delete[] prev;
    prev = p;
  }
  delete[] prev;
}

extern "C" __attribute__((noinline, used, visibility("default"))) void align_delta(long n, size_t size) {
  for (long i = 0; i < n; i++) {
    void* p = nullptr;
    if (posix_memalign(&p, 64, size) != 0) abort();
    static_cast<volatile char*>(p)[0] = 4;
    free(p);
  }
}

extern "C" __attribute__((noinline, used, visibility("default"))) void grow_epsilon(long n, size_t size) {
  for (long i = 0; i < n; i++) {
    char* p = static_cast<char*>(malloc(16));
    for (size_t s = 32; p && s <= size; s *= 2) p = static_cast<char*>(realloc(p, s));
    if (!p) abort();
    static_cast<volatile char*>(p)[0] = 5;
    free(p);
  }
}

// Inlined into each caller, so that the malloc call sites are inside hold_zeta and hold_eta.
__attribute__((always_inline)) inline void hold(long n, size_t size, char tag) {
  void** v = static_cast<void**>(calloc(static_cast<size_t>(n), sizeof(void*)));
  if (!v) abort();
  for (long i = 0; i < n; i++) v[i] = malloc(size);
  for (long i = 0; i < n; i++) {
    if (!v[i]) abort();
    static_cast<volatile char*>(v[i])[0] = tag;
  }
  for (long i = 0; i < n; i++) free(v[i]);
  free(v);
}

extern "C" __attribute__((noinline, used, visibility("default"))) void hold_zeta(long n, size_t size) { hold(n, size, 6); }
extern "C" __attribute__((noinline, used, visibility("default"))) void hold_eta(long n, size_t size) { hold(n, size, 7); }

// One function, two call sites (malloc and calloc cannot be merged into one call): a rule
// naming the function must cover each of them as it gets sampled.
extern "C" __attribute__((noinline, used, visibility("default"))) void alloc_zeta(int second, long n, size_t size) {
  void* prev = nullptr;
  for (long i = 0; i < n; i++) {
    void* p = second ? calloc(1, size) : malloc(size);
    if (!p) abort();
    static_cast<volatile char*>(p)[0] = 6;
    free(prev);
    prev = p;
  }
  free(prev);
}

int main() {
  setvbuf(stdout, nullptr, _IOLBF, 0);
  printf("ready %d\n", static_cast<int>(getpid()));
  char line[256];
  while (fgets(line, sizeof line, stdin)) {
    char cmd = 0;
    long n = 0;
    unsigned long size = 0;
    if (sscanf(line, " %c %ld %lu", &cmd, &n, &size) < 1) continue;
    if (cmd == 'q') break;
    if (cmd == 'a') alloc_alpha(n, size);
    else if (cmd == 'b') alloc_beta(n, size);
    else if (cmd == 'n') new_gamma(n, size);
    else if (cmd == 'l') align_delta(n, size);
    else if (cmd == 'r') grow_epsilon(n, size);
    else if (cmd == 'k') hold_zeta(n, size);
    else if (cmd == 'h') hold_eta(n, size);
    else if (cmd == 'z') alloc_zeta(0, n, size);
    else if (cmd == 'c') alloc_zeta(1, n, size);
    printf("ok\n");
  }
  return 0;
}
