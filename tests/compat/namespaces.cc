// compat: a program that frees a burst of memory and then asks the kernel for what only a
// single-threaded process may do. "unshare": unshare(CLONE_VM), which needs no privilege,
// and unshare(CLONE_NEWUSER); "setns": setns into its own mount namespace (root only; both
// runs get EPERM otherwise). Under hakmem the freed burst starts the decay thread, which
// would make these calls fail with EINVAL; the output (each call's result, the thread count
// after a second burst) must match the plain run.
// Run preloaded, it also checks that the decay thread was running before the calls, so
// the comparison is not won by a thread that never started.
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <string>

#include "harness.h"

namespace {

void burst() {
  void* p[64];
  for (auto& q : p) {
    q = malloc(256 * 1024);
    if (!q) exit(2);
    memset(q, 1, 256 * 1024);
  }
  for (auto* q : p) free(q);
}

const char* result(int rc) { return rc == 0 ? "ok" : strerrorname_np(errno); }

}  // namespace

int main(int argc, char** argv) {
  const bool setns_mode = argc > 1 && !strcmp(argv[1], "setns");
  burst();
  const char* preload = getenv("LD_PRELOAD");
  if (preload && strstr(preload, "hakmem") && harness::threads_now() < 2) {
    fprintf(stderr, "namespaces: the decay thread did not start (threads %d)\n", harness::threads_now());
    return 3;
  }
  if (setns_mode) {
    const int fd = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 2;
    printf("setns(mnt, CLONE_NEWNS): %s\n", result(setns(fd, CLONE_NEWNS)));
    close(fd);
  } else {
    printf("unshare(CLONE_VM): %s\n", result(unshare(CLONE_VM)));
    printf("unshare(CLONE_NEWUSER): %s\n", result(unshare(CLONE_NEWUSER)));
  }
  // A second burst must not bring the thread back.
  burst();
  printf("threads after: %d\n", harness::threads_now());
  return 0;
}
