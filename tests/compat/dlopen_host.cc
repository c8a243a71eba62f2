// compat: dlopen()s dlopen_plugin (path in argv[1]) several times; blocks cross the library
// boundary in both directions across all size tiers, then the plugin is unloaded.
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s PLUGIN.so\n", argv[0]);
    return 2;
  }
  const size_t sizes[] = {1, 24, 100, 1000, 5000, 40000, 300000, 3 << 20};
  unsigned long long total = 0;
  for (int round = 0; round < 5; round++) {
    void* h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) {
      fprintf(stderr, "dlopen: %s\n", dlerror());
      return 1;
    }
    auto make = reinterpret_cast<char* (*)(size_t, char)>(dlsym(h, "plugin_make"));
    auto consume = reinterpret_cast<size_t (*)(char*)>(dlsym(h, "plugin_consume"));
    auto kept = reinterpret_cast<size_t (*)()>(dlsym(h, "plugin_kept"));
    if (!make || !consume || !kept) {
      fprintf(stderr, "dlsym: %s\n", dlerror());
      return 1;
    }
    for (int i = 0; i < 200; i++) {
      for (size_t s : sizes) {
        // Plugin allocates, host checks and frees.
        char* p = make(s, static_cast<char>('a' + i % 26));
        if (p == nullptr || strlen(p) != s || p[s / 2] != 'a' + i % 26) {
          fprintf(stderr, "plugin block of %zu bytes is wrong\n", s);
          return 1;
        }
        free(p);
        // Host allocates, plugin frees.
        char* q = static_cast<char*>(malloc(s + 1));
        if (q == nullptr) return 1;
        memset(q, 'z', s);
        q[s] = 0;
        total += consume(q);
      }
    }
    total += kept();
    if (dlclose(h) != 0) {
      fprintf(stderr, "dlclose: %s\n", dlerror());
      return 1;
    }
  }
  printf("dlopen rounds 5 bytes %llu\n", total);
  return 0;
}
