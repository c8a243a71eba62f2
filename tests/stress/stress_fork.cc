// Stress: fork() while other threads allocate and free across all tiers (so the allocator
// may be inside a lock or half-way through a refill at the moment of the fork). Each child
// allocates in every tier, starts a thread that allocates too, frees everything and exits
// with exit() (atexit handlers and static destructors run); every few forks the child
// exec()s this program again (`--exec-child`), which inherits the preload. A deadlocked
// child is killed by its own alarm() and reported.
//   stress_fork [--seconds S] [--threads N]
#include <sys/wait.h>

#include <atomic>
#include <thread>
#include <vector>

#include "harness.h"

namespace {

std::atomic<bool> g_stop{false};

void churn(unsigned id) {
  harness::Rng r(id);
  void* held[64] = {};
  size_t sizes[64] = {};
  while (!g_stop.load(std::memory_order_relaxed)) {
    size_t k = r.below(64);
    if (held[k]) {
      HARNESS_CHECK(harness::cookie_ok(held[k], sizes[k], k), "parent block %p overwritten", held[k]);
      free(held[k]);
    }
    sizes[k] = harness::random_size(r, 3u << 20);
    held[k] = malloc(sizes[k]);
    HARNESS_CHECK(held[k] != nullptr, "malloc(%zu) failed", sizes[k]);
    harness::cookie_fill(held[k], sizes[k], k);
  }
  for (size_t k = 0; k < 64; k++) free(held[k]);
}

// What a child does: every tier, a thread, cross-thread frees, then a clean exit.
int child_work(uint64_t seed) {
  harness::Rng r(seed);
  const size_t sizes[] = {16, 200, 1000, 4000, 20000, 100000, 700000, 3u << 20};
  void* blocks[8];
  for (int i = 0; i < 8; i++) {
    blocks[i] = malloc(sizes[i]);
    if (blocks[i] == nullptr) return 3;
    harness::cookie_fill(blocks[i], sizes[i], seed);
  }
  std::thread t([&] {
    for (int i = 0; i < 8; i++) {
      if (!harness::cookie_ok(blocks[i], sizes[i], seed)) _exit(4);
      free(blocks[i]);  // freed by a thread that did not allocate it
    }
    std::vector<std::vector<char>> v;
    for (int i = 0; i < 200; i++) v.emplace_back(harness::random_size(r, 1u << 20), 'x');
  });
  t.join();
  char* s = strdup("child");
  if (s == nullptr || strcmp(s, "child") != 0) return 5;
  free(s);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && strcmp(argv[1], "--exec-child") == 0) {
    alarm(20);
    harness::require_hakmem_if_expected();
    return child_work(77);
  }
  harness::require_hakmem_if_expected();
  double seconds = harness::arg_num(argc, argv, "--seconds", 10);
  unsigned threads = static_cast<unsigned>(harness::arg_num(argc, argv, "--threads", 3));
  std::vector<std::thread> ts;
  for (unsigned i = 0; i < threads; i++) ts.emplace_back(churn, i + 1);
  double t0 = harness::now_s();
  unsigned forks = 0, execs = 0;
  while (harness::now_s() - t0 < seconds) {
    bool do_exec = forks % 5 == 4;
    pid_t pid = fork();
    HARNESS_CHECK(pid >= 0, "fork failed: %s", strerror(errno));
    if (pid == 0) {
      alarm(20);  // a deadlock in the child ends as SIGALRM, which the parent reports
      if (do_exec) {
        execl("/proc/self/exe", argv[0], "--exec-child", static_cast<char*>(nullptr));
        _exit(6);
      }
      exit(child_work(forks));
    }
    int status = 0;
    HARNESS_CHECK(waitpid(pid, &status, 0) == pid, "waitpid failed");
    if (WIFSIGNALED(status))
      harness::fail("child %u (%s) died of signal %d%s", forks, do_exec ? "exec" : "fork", WTERMSIG(status),
                    WTERMSIG(status) == SIGALRM ? " (deadlocked for 20 s)" : "");
    HARNESS_CHECK(WEXITSTATUS(status) == 0, "child %u (%s) exited %d", forks, do_exec ? "exec" : "fork",
                  WEXITSTATUS(status));
    forks++;
    execs += do_exec;
  }
  g_stop = true;
  for (auto& t : ts) t.join();
  printf("stress_fork: %u forks (%u of them exec'd) while %u threads allocated\n", forks, execs, threads);
  HARNESS_CHECK(forks > 0, "no fork completed");
  return 0;
}
