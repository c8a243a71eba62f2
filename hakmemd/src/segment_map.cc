#include "segment_map.h"

#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <unistd.h>

#include <utility>

namespace hakmemd {
namespace {

// The range the current thread is accessing. Plain thread_locals: the handler runs
// synchronously on the faulting thread, so there is no race with the guard's setup.
thread_local const char* t_guard_base = nullptr;
thread_local size_t t_guard_len = 0;
thread_local volatile sig_atomic_t t_guard_faulted = 0;

void on_sigbus(int sig, siginfo_t* info, void*) {
  const char* addr = static_cast<const char*>(info->si_addr);
  if (t_guard_base && addr >= t_guard_base && addr < t_guard_base + t_guard_len) {
    const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    void* at = reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(addr) & ~(page - 1));
    // A private zero page over the hole lets the faulting load/store complete.
    if (mmap(at, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED) {
      t_guard_faulted = 1;
      return;
    }
  }
  // Not ours: die the way we would have without a handler.
  signal(sig, SIG_DFL);
}

}  // namespace

void bus_guard_install() {
  static bool done = false;
  if (done) return;
  done = true;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, nullptr);
}

BusGuard::BusGuard(const void* base, size_t len) {
  t_guard_faulted = 0;
  t_guard_len = len;
  t_guard_base = static_cast<const char*>(base);
}

BusGuard::~BusGuard() {
  t_guard_base = nullptr;
  t_guard_len = 0;
}

bool BusGuard::faulted() const { return t_guard_faulted != 0; }

SegmentMap::~SegmentMap() { unmap(); }

SegmentMap::SegmentMap(SegmentMap&& o) noexcept
    : base_(std::exchange(o.base_, nullptr)), len_(std::exchange(o.len_, 0)),
      file_size_(std::exchange(o.file_size_, 0)) {}

SegmentMap& SegmentMap::operator=(SegmentMap&& o) noexcept {
  if (this != &o) {
    unmap();
    base_ = std::exchange(o.base_, nullptr);
    len_ = std::exchange(o.len_, 0);
    file_size_ = std::exchange(o.file_size_, 0);
  }
  return *this;
}

bool SegmentMap::map(int fd, size_t file_size) {
  unmap();
  const size_t len = sizeof(hakmem::proto::Segment);
  if (file_size < len) return false;
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return false;
  base_ = p;
  len_ = len;
  file_size_ = file_size;
  return true;
}

void SegmentMap::drop_pages() {
  static const bool off = getenv("HAKMEMD_NO_DROP") != nullptr;
  if (base_ && !off) madvise(base_, len_, MADV_DONTNEED);
}

void SegmentMap::unmap() {
  if (base_) munmap(base_, len_);
  base_ = nullptr;
  len_ = 0;
  file_size_ = 0;
}

}  // namespace hakmemd
