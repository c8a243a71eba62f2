// Helpers for tests that run with hakmem as the process allocator (linked or preloaded).
#pragma once

#include <dlfcn.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "hakmem.h"

extern "C" {
// Not in every libc (glibc 2.36 has none of them): weak, so a test binary that is not linked
// with hakmem still links, and binds them to the preloaded hakmem at run time.
__attribute__((weak)) void free_sized(void* p, size_t size);
__attribute__((weak)) void free_aligned_sized(void* p, size_t align, size_t size);
__attribute__((weak)) void cfree(void* p);
}

namespace hakmem_test {

// The compiler may drop a malloc/free pair whose pointer is never observed: blocks that
// exist only to exercise the allocator go through kept().
inline void* volatile g_sink;
inline void* kept(void* p) {
  g_sink = p;
  return p;
}

// Resident set size of this process in KiB (/proc/self/statm).
inline long rss_kib() {
  FILE* f = fopen("/proc/self/statm", "r");
  long pages = 0, rss = 0;
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
    fclose(f);
  }
  return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

// Sets a knob live through hakmem's C API, found with dlsym so that the same test runs
// linked and preloaded.
inline void set_knob(const char* name, uint64_t v) {
  using SetFn = int (*)(const char*, uint64_t, char*, size_t);
  auto set = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "hakmem_knob_set_u64"));
  ASSERT_NE(set, nullptr);
  char err[200] = "";
  ASSERT_EQ(set(name, v, err, sizeof err), 0) << err;
}

// Reads a knob through hakmem's C API (0 when it cannot).
inline uint64_t get_knob(const char* name) {
  using GetFn = int (*)(const char*, uint64_t*);
  auto get = reinterpret_cast<GetFn>(dlsym(RTLD_DEFAULT, "hakmem_knob_get"));
  uint64_t v = 0;
  if (get) get(name, &v);
  return v;
}

// hakmem's statistics (hakmem_stats_get, found with dlsym: the binary may only preload hakmem).
inline hakmem_stats stats() {
  using GetFn = int (*)(hakmem_stats*, size_t);
  // Looked up once: dlsym itself may allocate, which would show in the figures.
  static const GetFn get = reinterpret_cast<GetFn>(dlsym(RTLD_DEFAULT, "hakmem_stats_get"));
  hakmem_stats s{};
  EXPECT_NE(get, nullptr) << "hakmem_stats_get not found: hakmem is not the allocator";
  if (get) get(&s, sizeof s);
  return s;
}

// Runs fn with fd 2 redirected to a temporary file and returns what was written to it.
template <typename Fn>
std::string capture_stderr(Fn fn) {
  char path[] = "/tmp/hakmem_alloc_test_XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return "<mkstemp failed>";
  unlink(path);
  fflush(stderr);
  int saved = dup(2);
  dup2(fd, 2);
  fn();
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  std::string out;
  char buf[4096];
  lseek(fd, 0, SEEK_SET);
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

inline std::string hex(const void* p) {
  char b[32];
  snprintf(b, sizeof b, "0x%lx", static_cast<unsigned long>(reinterpret_cast<uintptr_t>(p)));
  return b;
}

// Fills a block with a pattern derived from its address and a seed; check_pattern verifies.
inline void fill_pattern(void* p, size_t n, uint32_t seed) {
  unsigned char* c = static_cast<unsigned char*>(p);
  for (size_t i = 0; i < n; i++) c[i] = static_cast<unsigned char>((i * 31 + seed) ^ (i >> 8));
}
inline bool check_pattern(const void* p, size_t n, uint32_t seed) {
  const unsigned char* c = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; i++)
    if (c[i] != static_cast<unsigned char>((i * 31 + seed) ^ (i >> 8))) return false;
  return true;
}

// True when `sym` resolves to the hakmem library (so the test really exercises hakmem).
bool resolves_to_hakmem(const char* sym);

// A thread that runs what it is given, after a malloc of its own (it has a heap from the
// start): post(fn) hands fn over, wait() returns once it has run; run(fn) does both. fn
// must outlive the wait.
class Worker {
 public:
  Worker() : t_([this] { loop(); }) {}
  ~Worker() {
    {
      std::lock_guard<std::mutex> g(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    t_.join();
  }
  void post(const std::function<void()>& fn) {
    std::lock_guard<std::mutex> g(mu_);
    task_ = &fn;
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock<std::mutex> g(mu_);
    cv_.wait(g, [&] { return task_ == nullptr; });
  }
  void run(const std::function<void()>& fn) {
    post(fn);
    wait();
  }

 private:
  void loop() {
    free(kept(malloc(16)));
    std::unique_lock<std::mutex> g(mu_);
    for (;;) {
      cv_.wait(g, [&] { return quit_ || task_ != nullptr; });
      if (task_ == nullptr) return;
      const std::function<void()>* fn = task_;
      g.unlock();  // the poster may go on meanwhile
      (*fn)();
      g.lock();
      task_ = nullptr;
      cv_.notify_all();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  const std::function<void()>* task_ = nullptr;
  bool quit_ = false;
  std::thread t_;
};

// A thread whose frees of the calling thread's bundle runs (and pool pages) are remote: its
// heap is on another arena shard than the caller's (heaps take the shards in turn). Threads
// are started one after another, each kept alive so that the next has a heap of its own,
// until one frees a probe run as a remote free. found() is false if none did in 8.
class OtherShardThread {
 public:
  OtherShardThread() {
    for (int i = 0; i < 8 && !chosen_; i++) {
      auto w = std::make_unique<Worker>();
      void* probe = malloc(100000);
      const uint64_t before = stats().tier[HAKMEM_TIER_BUNDLE].remote_frees;
      w->run([&] { free(probe); });
      if (stats().tier[HAKMEM_TIER_BUNDLE].remote_frees != before) chosen_ = w.get();
      started_.push_back(std::move(w));
    }
  }
  bool found() const { return chosen_ != nullptr; }
  void post(const std::function<void()>& fn) { chosen_->post(fn); }
  void wait() { chosen_->wait(); }
  void run(const std::function<void()>& fn) { chosen_->run(fn); }

 private:
  Worker* chosen_ = nullptr;
  std::vector<std::unique_ptr<Worker>> started_;
};

}  // namespace hakmem_test
