// resolves_to_hakmem() for test binaries that do not include api_test.cc.
#include <dlfcn.h>
#include <string.h>

#include "alloc_test_util.h"

namespace hakmem_test {
bool resolves_to_hakmem(const char* sym) {
  void* f = dlsym(RTLD_DEFAULT, sym);
  Dl_info info{};
  if (!f || !dladdr(f, &info) || !info.dli_fname) return false;
  return strstr(info.dli_fname, "libhakmem") != nullptr;
}
}  // namespace hakmem_test
