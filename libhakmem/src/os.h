// Platform layer: every system call libhakmem makes goes through here, so policy code
// (tiers, caches, decay) never calls mmap/madvise directly. Each primitive returns 0 or an
// errno value (or a pointer / nullptr with *err), never allocates, never touches errno of
// the caller unless documented, and is safe before main, in fork children and at exit.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

namespace hakmem {

// Page size of the system (4 KiB here; read once from auxv).
size_t os_page_size();

// Maps `size` bytes of anonymous private read/write memory aligned to `align` (a power of
// two >= page size). `populate` pre-faults the pages (MAP_POPULATE). Returns nullptr and
// sets *err (ENOMEM, ...) on failure.
void* os_map(size_t size, size_t align, bool populate, int* err);
int os_unmap(void* p, size_t size);
// Grows the mapping [p, p+old_size) to new_size bytes keeping its pages (mremap: resident
// pages move with their page tables, nothing is copied or faulted again). In place when the
// range after it is free, else moved to an address aligned to `align`. Returns the new start
// (p when in place), or nullptr with *err set and the old mapping untouched.
void* os_remap(void* p, size_t old_size, size_t new_size, size_t align, int* err);
// Replaces the mapping at [p, p+size) with private zero pages (MAP_FIXED): a fork child
// stops sharing its parent's segment while stale pointers into it stay harmless.
int os_replace_private(void* p, size_t size);
// Gives the pages back to the OS now; the next touch faults in zero pages (MADV_DONTNEED).
int os_purge(void* p, size_t size);
// Lets the OS take the pages back when it needs them (MADV_FREE): cheap, but RSS falls late.
int os_purge_lazy(void* p, size_t size);
// Asks for transparent huge pages on the range (MADV_HUGEPAGE).
int os_hugepage(void* p, size_t size);
// Faults the pages in now (MADV_POPULATE_WRITE, or touching each page on older kernels).
int os_populate(void* p, size_t size);

// Monotonic time in nanoseconds for the decay policy: CLOCK_MONOTONIC_COARSE, a third of
// CLOCK_MONOTONIC's cost (measured 9 vs 27 ns) and read on every whale malloc and free;
// its resolution (one kernel tick, 1-4 ms) is far below any decay time.
uint64_t os_now_ns();
// CLOCK_REALTIME in nanoseconds (vDSO: no syscall in the common case).
uint64_t os_realtime_ns();
// CLOCK_BOOTTIME in clock ticks (AT_CLKTCK per second, rounded down): the unit and the
// clock of a process's start time in /proc/<pid>/stat (vDSO: no syscall).
uint64_t os_boot_ticks();
uint32_t os_tid();
int32_t os_pid();

// errno's address in this thread, asked of libc once per thread: the slow paths save and
// restore the caller's errno through it. A fork child's thread keeps its parent's TLS
// addresses, so the child does not call __errno_location either, whose page of libc it has
// not run (each such page is a page fault in every child that allocates).
extern constinit thread_local int* t_errno_loc __attribute__((tls_model("initial-exec")));
int* os_errno_slow();
inline int* os_errno() {
  int* e = t_errno_loc;
  return __builtin_expect(e != nullptr, 1) ? e : os_errno_slow();
}
uint32_t os_uid();
// True when the process runs setuid/setgid or with capabilities (AT_SECURE): env is ignored.
bool os_secure();
// True when the process has never had a second thread (glibc's __libc_single_threaded):
// no other thread can hold a lock of ours. False when unknown.
bool os_single_threaded();
// Minor (soft) page faults of the whole process so far.
uint64_t os_minor_faults();

// Writes all of buf to stderr (fd 2), retrying on EINTR; errors are ignored.
void os_write_stderr(const char* buf, size_t len);
[[noreturn]] void os_abort();

// Reads up to cap-1 bytes of a small file (e.g. under /proc) into buf, NUL-terminated.
// Returns the byte count, or -errno.
ssize_t os_read_file(const char* path, char* buf, size_t cap);

// Creates `path` with O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600, sizes it and maps it shared.
// A leftover file of an earlier process with the same pid is removed first when it belongs
// to us (same uid). Returns 0 and *out, or an errno value.
int os_shm_create(const char* path, size_t size, void** out);
int os_shm_unlink(const char* path);
// Calls fn(name, arg) for each entry of folder `dir` (getdents64 into a stack buffer: no
// allocation, unlike opendir); stops early when fn returns false. Returns 0 or an errno.
int os_dir_each(const char* dir, bool (*fn)(const char* name, void* arg), void* arg);
// False only when no process has this pid (kill(pid, 0) fails with ESRCH).
bool os_pid_exists(int32_t pid);
// The parent's pid (getppid).
int32_t os_ppid();
// Whether `path` names an existing file (access F_OK); errno untouched.
bool os_file_exists(const char* path);
// A time stamp in a file's mtime: true (and the stamp set to now, the file created with
// mode 0600 if missing) unless `path` is a regular file of ours stamped less than `age_ns`
// ago. True as well when the stamp cannot be read or written. errno untouched.
bool os_stamp_if_older(const char* path, uint64_t age_ns);

// --- Added by the allocator (compatible extension) ---
// Blocks while *addr == expected (process-private futex); spurious wake-ups are allowed.
void os_futex_wait(const void* addr, uint32_t expected);
// A shared futex (a word in memory other processes map too: the segment): waits at most ns
// while *addr == expected; wakes up to n waiters of any process.
void os_futex_wait_shared_ns(const void* addr, uint32_t expected, uint64_t ns);
void os_futex_wake_shared(const void* addr, int n);
// Wakes up to n waiters blocked on addr.
void os_futex_wake(const void* addr, int n);
// Gives the CPU to another runnable thread.
void os_yield();
// 64 random bits from the kernel's per-exec AT_RANDOM block, mixed with the clock: seeds
// the free-list cookies without a syscall that could fail this early.
uint64_t os_random_seed();
// Sleeps for ns nanoseconds (CLOCK_MONOTONIC; an interrupted sleep returns early).
void os_sleep_ns(uint64_t ns);
// A two-argument system call as libc's wrappers make it: 0 or -1 with errno (for the
// exported unshare and setns, init.cc).
int os_syscall2(long nr, long a, long b);

}  // namespace hakmem
