// idle_threads: what a burst of frees leaves resident when the threads that freed then go
// idle (a thread pool between requests). Not part of bench/run's comparison.
//   [LD_PRELOAD=lib] build/bench/bench_idle_threads THREADS BYTES COUNT SECONDS
// Each of THREADS threads mallocs COUNT blocks of BYTES, writes them, frees them, and sleeps;
// the main thread prints the RSS before, right after the last free, and SECONDS later.
#include <pthread.h>
#include <unistd.h>

#include <atomic>

#include "common.h"

namespace {

std::atomic<int> g_done{0};
size_t g_bytes;
long g_count;

void* worker(void*) {
  auto** p = static_cast<void**>(std::calloc(static_cast<size_t>(g_count), sizeof(void*)));
  if (!p) std::exit(1);
  for (long i = 0; i < g_count; i++) {
    p[i] = std::malloc(g_bytes);
    if (!p[i]) std::exit(1);
    std::memset(p[i], 1, g_bytes);
  }
  for (long i = 0; i < g_count; i++) std::free(p[i]);
  std::free(p);
  g_done.fetch_add(1);
  for (;;) pause();  // idle for good: the process ends from main
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s THREADS BYTES COUNT SECONDS\n", argv[0]);
    return 2;
  }
  const int threads = std::atoi(argv[1]);
  g_bytes = static_cast<size_t>(std::atol(argv[2]));
  g_count = std::atol(argv[3]);
  const int seconds = std::atoi(argv[4]);
  if (threads < 1 || threads > 1024 || g_bytes < 1 || g_count < 1 || seconds < 0) {
    std::fprintf(stderr, "idle_threads: THREADS 1..1024, BYTES and COUNT >= 1, SECONDS >= 0\n");
    return 2;
  }
  const long base = bench::rss_mib();
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  for (int i = 0; i < threads; i++) {
    pthread_t t;
    if (pthread_create(&t, &attr, worker, nullptr) != 0) return 1;
  }
  while (g_done.load() < threads) usleep(1000);
  const long after = bench::rss_mib();
  sleep(static_cast<unsigned>(seconds));
  std::printf("idle_threads %d x %ld x %zu B: rss %ld MiB before, %ld MiB after the frees, %ld MiB %d s later\n",
              threads, g_count, g_bytes, base, after, bench::rss_mib(), seconds);
  std::fflush(stdout);
  _exit(0);
}
