// A futex mutex padded to a cache line (Drepper's three-state lock). Used on slow paths
// only; no allocation, so it is safe inside malloc, and fork children reset it with
// reset() because a lock held by a thread that does not exist in the child never opens.
#pragma once

#include <stdint.h>

#include <atomic>

#include "os.h"

namespace hakmem {

class alignas(64) Mutex {
 public:
  void lock() {
    uint32_t c = 0;
    if (state_.compare_exchange_strong(c, 1, std::memory_order_acquire)) return;
    lock_slow();
  }
  bool try_lock() {
    uint32_t c = 0;
    return state_.compare_exchange_strong(c, 1, std::memory_order_acquire);
  }
  void unlock() {
    if (state_.exchange(0, std::memory_order_release) == 2) os_futex_wake(&state_, 1);
  }
  // Fork child only: the holder may have been another thread of the parent. A free lock is
  // not written: the write would copy its page (a page fault) in every child.
  void reset() {
    if (state_.load(std::memory_order_relaxed) != 0) state_.store(0, std::memory_order_relaxed);
  }

 private:
  __attribute__((noinline)) void lock_slow() {
    // A short spin first: critical sections here are a few hundred instructions.
    for (int i = 0; i < 64; i++) {
      uint32_t c = 0;
      if (state_.load(std::memory_order_relaxed) == 0 &&
          state_.compare_exchange_weak(c, 1, std::memory_order_acquire))
        return;
      __builtin_ia32_pause();
    }
    // 0 = free, 1 = locked, 2 = locked with (possible) waiters.
    uint32_t c = state_.exchange(2, std::memory_order_acquire);
    while (c != 0) {
      os_futex_wait(&state_, 2);
      c = state_.exchange(2, std::memory_order_acquire);
    }
  }
  std::atomic<uint32_t> state_{0};
};

class LockGuard {
 public:
  explicit LockGuard(Mutex& m) : m_(m) { m_.lock(); }
  ~LockGuard() { m_.unlock(); }
  LockGuard(const LockGuard&) = delete;
  LockGuard& operator=(const LockGuard&) = delete;

 private:
  Mutex& m_;
};

}  // namespace hakmem
