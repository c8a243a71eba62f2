// spawn: a program that starts short commands COUNT times, as a shell running a script or a
// build tool running its steps does. Each command is this program again (posix_spawn, the
// environment passed on, so a preloaded allocator is preloaded into it too): it mallocs and
// frees a few blocks of each tier's sizes and exits. What the allocator costs a command is
// in it: loading and initialising it, what it does at exit, the pages it writes. Not part of
// bench/run's comparison (it measures the process more than the allocator).
//   [LD_PRELOAD=lib] build/bench/bench_spawn COUNT [PROGRAM [ARG...]]
// With PROGRAM, the command is that program instead (/bin/true: no C++ runtime to load, so
// the allocator's share shows more). Prints us per command (spawn to reaped, the median),
// the commands' CPU time per command, and their page faults per command.
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "common.h"

extern char** environ;

namespace {

// The command: a few blocks of the sizes a short program's start-up asks for.
int command() {
  static const size_t kSizes[] = {24, 100, 600, 2000, 5000, 40000};
  void* held[sizeof kSizes / sizeof kSizes[0]];
  size_t i = 0;
  for (size_t n : kSizes) {
    held[i] = std::malloc(n);
    if (!held[i]) return 1;
    std::memset(held[i], 1, 16);
    bench::escape(held[i]);
    i++;
  }
  while (i > 0) std::free(held[--i]);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--command") == 0) return command();
  const long n = argc >= 2 ? std::atol(argv[1]) : 0;
  if (n < 1) {
    std::fprintf(stderr, "usage: %s COUNT (>= 1) [PROGRAM [ARG...]]\n", argv[0]);
    return 2;
  }
  char self[4096];
  const ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) return 1;
  self[len] = 0;
  char* own[] = {self, const_cast<char*>("--command"), nullptr};
  char* const* args = argc > 2 ? argv + 2 : own;
  std::vector<double> us;
  us.reserve(static_cast<size_t>(n));
  rusage kids0{}, kids1{};
  getrusage(RUSAGE_CHILDREN, &kids0);
  for (long i = 0; i < n; i++) {
    const uint64_t t0 = bench::now_ns();
    pid_t pid;
    if (posix_spawn(&pid, args[0], nullptr, nullptr, args, environ) != 0) return 1;
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
    us.push_back(static_cast<double>(bench::now_ns() - t0) / 1000);
  }
  getrusage(RUSAGE_CHILDREN, &kids1);
  std::sort(us.begin(), us.end());
  const double dn = static_cast<double>(n);
  const double cpu_us = (static_cast<double>(kids1.ru_utime.tv_sec - kids0.ru_utime.tv_sec) +
                         static_cast<double>(kids1.ru_stime.tv_sec - kids0.ru_stime.tv_sec)) * 1e6 +
                        static_cast<double>(kids1.ru_utime.tv_usec - kids0.ru_utime.tv_usec) +
                        static_cast<double>(kids1.ru_stime.tv_usec - kids0.ru_stime.tv_usec);
  std::printf("spawn x %ld: %.1f us per command (median), %.1f us CPU, %.1f page faults\n", n,
              us[us.size() / 2], cpu_us / dn, static_cast<double>(kids1.ru_minflt - kids0.ru_minflt) / dn);
  return 0;
}
