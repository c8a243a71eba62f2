// fork: a program that forks a short-lived child COUNT times (a shell running commands, a
// build tool, a server's worker): the child mallocs and frees a few blocks and _exits, the
// parent waits. Everything an allocator does around a fork is in it: its atfork handlers,
// the pages they and the child write (each one a copy-on-write fault), the mappings the
// kernel copies. Not part of bench/run's comparison.
//   [LD_PRELOAD=lib] build/bench/bench_fork COUNT [THREADS [exec]]
// THREADS (default 0): threads that allocated and then wait, alive across every fork (a
// service's workers). "exec": the child execs /bin/true instead of allocating (a service
// or shell starting a command; the preload, if any, goes with it). Prints us per
// fork+waitpid, us in fork() itself, and page faults per fork in the parent and in the
// child.
#include <pthread.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

namespace {

pthread_barrier_t g_ready;

// A worker: allocates and frees across the tiers, keeps a block, then waits for good.
void* worker(void*) {
  for (int i = 0; i < 1000; i++) {
    void* p = std::malloc(static_cast<size_t>(16 + (i * 37) % 5000));
    bench::escape(p);
    std::free(p);
  }
  bench::escape(std::malloc(100));
  pthread_barrier_wait(&g_ready);
  for (;;) pause();
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  const long n = argc >= 2 ? std::atol(argv[1]) : 0;
  const long threads = argc >= 3 ? std::atol(argv[2]) : 0;
  const bool exec = argc >= 4 && std::strcmp(argv[3], "exec") == 0;
  if (n < 1 || threads < 0 || threads > 1024 || argc > 4 || (argc == 4 && !exec)) {
    std::fprintf(stderr, "usage: %s COUNT (>= 1) [THREADS (0..1024) [exec]]\n", argv[0]);
    return 2;
  }
  pthread_barrier_init(&g_ready, nullptr, static_cast<unsigned>(threads + 1));
  for (long i = 0; i < threads; i++) {
    pthread_t t;
    if (pthread_create(&t, nullptr, worker, nullptr) != 0) return 1;
    pthread_detach(t);
  }
  pthread_barrier_wait(&g_ready);
  // A small heap of every kind of block the parent might hold.
  void* keep[64];
  for (int i = 0; i < 64; i++) {
    keep[i] = std::malloc(static_cast<size_t>(16) << (i % 16));
    if (!keep[i]) return 1;
    std::memset(keep[i], i, 16);
  }
  rusage self0{}, self1{}, kids{};
  getrusage(RUSAGE_SELF, &self0);
  uint64_t in_fork = 0;
  const uint64_t t0 = bench::now_ns();
  for (long i = 0; i < n; i++) {
    const uint64_t f0 = bench::now_ns();
    const pid_t pid = fork();
    if (pid == 0) {
      if (exec) {
        execl("/bin/true", "true", static_cast<char*>(nullptr));
        _exit(127);
      }
      void* a = std::malloc(100);
      void* b = std::malloc(5000);
      bench::escape(a);
      bench::escape(b);
      std::free(b);
      std::free(a);
      _exit(0);
    }
    in_fork += bench::now_ns() - f0;
    if (pid < 0 || waitpid(pid, nullptr, 0) != pid) return 1;
  }
  const double total = static_cast<double>(bench::now_ns() - t0);
  getrusage(RUSAGE_SELF, &self1);
  getrusage(RUSAGE_CHILDREN, &kids);
  for (void* p : keep) std::free(p);
  const double dn = static_cast<double>(n);
  std::printf("fork x %ld (%ld threads%s): %.1f us per fork+waitpid, %.1f us in fork(); page faults per fork: parent %.1f, child %.1f\n",
              n, threads, exec ? ", exec" : "", total / dn / 1000, static_cast<double>(in_fork) / dn / 1000,
              static_cast<double>(self1.ru_minflt - self0.ru_minflt) / dn, static_cast<double>(kids.ru_minflt) / dn);
  return 0;
}
