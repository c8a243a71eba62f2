// Linux implementation of os.h. Raw system calls only: no stdio, no malloc.
#include "os.h"

#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#if __has_include(<sys/single_threaded.h>)
#include <sys/single_threaded.h>
#define HK_HAVE_SINGLE_THREADED 1
#endif
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace hakmem {

size_t os_page_size() {
  static size_t page = 0;
  if (page == 0) {
    unsigned long p = getauxval(AT_PAGESZ);
    page = p ? p : 4096;
  }
  return page;
}

void* os_map(size_t size, size_t align, bool populate, int* err) {
  const size_t page = os_page_size();
  if (align < page) align = page;
  const int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | (populate ? MAP_POPULATE : 0);
  if (size + align < size) { *err = ENOMEM; return nullptr; }
  // Try the exact size first: the kernel often returns aligned addresses for large maps.
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, flags, -1, 0);
  if (p == MAP_FAILED) { *err = errno; return nullptr; }
  if ((reinterpret_cast<uintptr_t>(p) & (align - 1)) == 0) return p;
  munmap(p, size);
  // Over-map by `align` and trim both ends.
  const size_t over = size + align;
  p = mmap(nullptr, over, PROT_READ | PROT_WRITE, flags & ~MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) { *err = errno; return nullptr; }
  uintptr_t base = reinterpret_cast<uintptr_t>(p);
  uintptr_t aligned = (base + align - 1) & ~(uintptr_t)(align - 1);
  if (aligned > base) munmap(p, aligned - base);
  uintptr_t end = base + over, aend = aligned + size;
  if (end > aend) munmap(reinterpret_cast<void*>(aend), end - aend);
  if (populate) os_populate(reinterpret_cast<void*>(aligned), size);
  return reinterpret_cast<void*>(aligned);
}

int os_unmap(void* p, size_t size) { return munmap(p, size) == 0 ? 0 : errno; }

void* os_remap(void* p, size_t old_size, size_t new_size, size_t align, int* err) {
  int saved = errno;
  void* q = mremap(p, old_size, new_size, 0);
  if (q != MAP_FAILED) return q;
  // Reserve an aligned range, then move the mapping onto it (MREMAP_FIXED replaces the
  // reservation) and drop the reservation's slack on both sides.
  if (new_size + align < new_size) { *err = ENOMEM; errno = saved; return nullptr; }
  const size_t over = new_size + align;
  void* r = mmap(nullptr, over, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (r == MAP_FAILED) { *err = errno; errno = saved; return nullptr; }
  uintptr_t base = reinterpret_cast<uintptr_t>(r);
  uintptr_t aligned = (base + align - 1) & ~(uintptr_t)(align - 1);
  q = mremap(p, old_size, new_size, MREMAP_MAYMOVE | MREMAP_FIXED, reinterpret_cast<void*>(aligned));
  if (q == MAP_FAILED) {
    *err = errno;
    munmap(r, over);
    errno = saved;
    return nullptr;
  }
  if (aligned > base) munmap(r, aligned - base);
  uintptr_t end = base + over, aend = aligned + new_size;
  if (end > aend) munmap(reinterpret_cast<void*>(aend), end - aend);
  errno = saved;
  return q;
}

int os_replace_private(void* p, size_t size) {
  int* const err = os_errno();  // a fork child's first check calls this: see os_errno
  const int saved = *err;
  void* r = mmap(p, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
                 -1, 0);
  int e = r == MAP_FAILED ? *err : 0;
  *err = saved;
  return e;
}
int os_purge(void* p, size_t size) { return madvise(p, size, MADV_DONTNEED) == 0 ? 0 : errno; }

int os_purge_lazy(void* p, size_t size) {
  if (madvise(p, size, MADV_FREE) == 0) return 0;
  return os_purge(p, size);
}

int os_hugepage(void* p, size_t size) { return madvise(p, size, MADV_HUGEPAGE) == 0 ? 0 : errno; }

int os_populate(void* p, size_t size) {
  static bool no_populate_write = false;
  if (!no_populate_write) {
    if (madvise(p, size, MADV_POPULATE_WRITE) == 0) return 0;
    if (errno != EINVAL) return errno;
    no_populate_write = true;  // kernel older than 5.14
  }
  const size_t page = os_page_size();
  volatile char* c = static_cast<volatile char*>(p);
  for (size_t off = 0; off < size; off += page) c[off] = c[off];
  return 0;
}

uint64_t os_now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

uint64_t os_realtime_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

uint64_t os_boot_ticks() {
  timespec ts;
  clock_gettime(CLOCK_BOOTTIME, &ts);
  uint64_t hz = getauxval(AT_CLKTCK);
  if (hz == 0 || hz > 1000000000ull) hz = 100;
  return static_cast<uint64_t>(ts.tv_sec) * hz + static_cast<uint64_t>(ts.tv_nsec) / (1000000000ull / hz);
}

uint32_t os_tid() { return static_cast<uint32_t>(syscall(SYS_gettid)); }
// getpid, not syscall(SYS_getpid): libc keeps it beside fork, on text a fork child has
// already run, where syscall's page would be one more page fault in every child.
int32_t os_pid() { return static_cast<int32_t>(getpid()); }
constinit thread_local int* t_errno_loc __attribute__((tls_model("initial-exec"))) = nullptr;
int* os_errno_slow() { return t_errno_loc = &errno; }
uint32_t os_uid() { return static_cast<uint32_t>(getuid()); }
bool os_secure() { return getauxval(AT_SECURE) != 0; }
#ifdef HK_HAVE_SINGLE_THREADED
bool os_single_threaded() { return __libc_single_threaded != 0; }
#else
bool os_single_threaded() { return false; }
#endif

uint64_t os_minor_faults() {
  rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return static_cast<uint64_t>(ru.ru_minflt);
}

void os_write_stderr(const char* buf, size_t len) {
  int saved = errno;
  while (len > 0) {
    ssize_t n = write(2, buf, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    buf += n;
    len -= static_cast<size_t>(n);
  }
  errno = saved;
}

void os_abort() {
  // abort() may take stdio locks; raise SIGABRT directly, then make sure we die.
  syscall(SYS_tgkill, os_pid(), os_tid(), SIGABRT);
  _exit(134);
}

ssize_t os_read_file(const char* path, char* buf, size_t cap) {
  if (cap == 0) return -EINVAL;
  int saved = errno;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) { int e = errno; errno = saved; return -e; }
  size_t got = 0;
  while (got + 1 < cap) {
    ssize_t n = read(fd, buf + got, cap - 1 - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      close(fd);
      errno = saved;
      return -e;
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  buf[got] = 0;
  close(fd);
  errno = saved;
  return static_cast<ssize_t>(got);
}

int os_shm_create(const char* path, size_t size, void** out) {
  int saved = errno;
  int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0 && errno == EEXIST) {
    // A stale segment of a dead process that had our pid: ours to replace if we own it.
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == getuid()) {
      unlink(path);
      fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    }
  }
  if (fd < 0) { int e = errno; errno = saved; return e; }
  // The umask cannot widen 0600, but make the mode explicit in case it narrowed it.
  fchmod(fd, 0600);
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int e = errno;
    close(fd);
    unlink(path);
    errno = saved;
    return e;
  }
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int e = errno;
  close(fd);
  if (p == MAP_FAILED) {
    unlink(path);
    errno = saved;
    return e;
  }
  *out = p;
  errno = saved;
  return 0;
}

int os_dir_each(const char* dir, bool (*fn)(const char* name, void* arg), void* arg) {
  int saved = errno;
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) { int e = errno; errno = saved; return e; }
  alignas(8) char buf[4096];
  bool more = true;
  while (more) {
    long n = syscall(SYS_getdents64, fd, buf, sizeof buf);
    if (n <= 0) break;
    for (long off = 0; off < n && more;) {
      // struct linux_dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name.
      unsigned short reclen;
      memcpy(&reclen, buf + off + 16, sizeof reclen);
      more = fn(buf + off + 19, arg);
      off += reclen;
    }
  }
  close(fd);
  errno = saved;
  return 0;
}

bool os_pid_exists(int32_t pid) {
  int saved = errno;
  bool gone = kill(pid, 0) != 0 && errno == ESRCH;
  errno = saved;
  return !gone;
}

int32_t os_ppid() { return static_cast<int32_t>(syscall(SYS_getppid)); }

bool os_file_exists(const char* path) {
  int saved = errno;
  bool ok = access(path, F_OK) == 0;
  errno = saved;
  return ok;
}

bool os_stamp_if_older(const char* path, uint64_t age_ns) {
  int saved = errno;
  struct stat st;
  if (lstat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == getuid()) {
    const int64_t stamp = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    if (static_cast<int64_t>(os_realtime_ns()) - stamp < static_cast<int64_t>(age_ns)) {
      errno = saved;
      return false;
    }
  }
  int fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd >= 0) {
    futimens(fd, nullptr);
    close(fd);
  }
  errno = saved;
  return true;
}

int os_shm_unlink(const char* path) {
  int saved = errno;
  int r = unlink(path) == 0 ? 0 : errno;
  errno = saved;
  return r;
}

void os_futex_wait(const void* addr, uint32_t expected) {
  int saved = errno;
  syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
  errno = saved;
}

void os_futex_wait_shared_ns(const void* addr, uint32_t expected, uint64_t ns) {
  int saved = errno;
  timespec ts{static_cast<time_t>(ns / 1000000000ull), static_cast<long>(ns % 1000000000ull)};
  syscall(SYS_futex, addr, FUTEX_WAIT, expected, &ts, nullptr, 0);
  errno = saved;
}

void os_futex_wake_shared(const void* addr, int n) {
  int saved = errno;
  syscall(SYS_futex, addr, FUTEX_WAKE, n, nullptr, nullptr, 0);
  errno = saved;
}

void os_futex_wake(const void* addr, int n) {
  int saved = errno;
  syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, n, nullptr, nullptr, 0);
  errno = saved;
}

void os_yield() { sched_yield(); }

int os_syscall2(long nr, long a, long b) { return static_cast<int>(syscall(nr, a, b)); }

void os_sleep_ns(uint64_t ns) {
  int saved = errno;
  timespec ts{static_cast<time_t>(ns / 1000000000ull), static_cast<long>(ns % 1000000000ull)};
  nanosleep(&ts, nullptr);
  errno = saved;
}

uint64_t os_random_seed() {
  uint64_t r[2] = {0, 0};
  const void* at = reinterpret_cast<const void*>(getauxval(AT_RANDOM));
  if (at) memcpy(r, at, sizeof(r));
  uint64_t x = r[0] ^ (r[1] * 0x9e3779b97f4a7c15ull) ^ os_now_ns();
  // splitmix64 finaliser: every input bit affects every output bit.
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace hakmem
