// daemon_target: a program the integration tests run with libhakmem preloaded. It allocates
// on command so a test can watch the figures hakmemd reports move, and see a knob change its
// behaviour. Commands on stdin, one per line; it answers "ok" on stdout after each:
//   hold N SIZE    allocate N blocks of SIZE bytes, touch them, keep them
//   release        free every held block
//   churn N SIZE   N times: allocate SIZE, touch each 4 KiB page, free
//   tick           10000 small malloc/free pairs (runs the allocator's periodic knob check)
//   fork           fork a child that creates its own segment (its first periodic checks do),
//                  then waits to be killed; answers "ok CHILD_PID"
//   exec PROG ARG.. exec PROG (found on PATH) without LD_PRELOAD: a program without hakmem
//   reexec         exec this program again, environment kept (hakmem again); the new image
//                  says "ready PID" like the first one
//   quit
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <string>
#include <vector>

static void tick() {
  for (int i = 0; i < 10000; i++) {
    void* volatile p = malloc(32);
    free(p);
  }
}

// The fork child: runs the allocator's periodic check until its own segment file exists
// (libhakmem creates it there, not in fork), then sleeps. Dies with its parent.
[[noreturn]] static void fork_child() {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  const char* dir = getenv("HAKMEM_SHM_DIR");
  char path[512];
  snprintf(path, sizeof path, "%s/hakmem.%u.%d", dir && *dir ? dir : "/dev/shm", static_cast<unsigned>(getuid()),
           static_cast<int>(getpid()));
  for (int i = 0; i < 3000 && access(path, F_OK) != 0; i++) {
    tick();
    usleep(10000);
  }
  for (;;) pause();
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
    } else if (!strcmp(cmd, "fork")) {
      fflush(stdout);
      pid_t child = fork();
      if (child == 0) fork_child();
      printf("ok %d\n", static_cast<int>(child));
      continue;
    } else if (!strcmp(cmd, "exec")) {
      std::vector<std::string> words;
      for (char* w = strtok(line + strlen("exec"), " \n"); w; w = strtok(nullptr, " \n")) words.push_back(w);
      std::vector<char*> argv;
      for (auto& w : words) argv.push_back(w.data());
      argv.push_back(nullptr);
      unsetenv("LD_PRELOAD");
      if (!words.empty()) execvp(argv[0], argv.data());
      printf("exec failed\n");
      continue;
    } else if (!strcmp(cmd, "reexec")) {
      execl("/proc/self/exe", "daemon_target", static_cast<char*>(nullptr));
      printf("exec failed\n");
      continue;
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
