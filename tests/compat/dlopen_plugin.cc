// compat: the plugin that dlopen_host loads. It allocates blocks that the host frees and
// frees blocks that the host allocated, so a pointer crosses the dlopen boundary both ways.
#include <stdlib.h>
#include <string.h>

#include <string>
#include <vector>

namespace {
// Static state with a constructor and destructor: built when dlopen runs the plugin's
// initialisers, destroyed inside dlclose.
std::vector<std::string>* g_kept = new std::vector<std::string>();
struct Cleanup {
  ~Cleanup() { delete g_kept; }
} g_cleanup;
}  // namespace

extern "C" __attribute__((visibility("default"))) char* plugin_make(size_t n, char fill) {
  char* p = static_cast<char*>(malloc(n + 1));
  if (p == nullptr) return nullptr;
  memset(p, fill, n);
  p[n] = 0;
  g_kept->emplace_back(p, n < 100 ? n : 100);
  return p;
}

extern "C" __attribute__((visibility("default"))) size_t plugin_consume(char* p) {
  size_t n = strlen(p);
  free(p);
  return n;
}

extern "C" __attribute__((visibility("default"))) size_t plugin_kept() {
  size_t total = 0;
  for (const auto& s : *g_kept) total += s.size();
  return total;
}
