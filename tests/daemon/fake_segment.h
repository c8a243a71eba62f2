// Test helpers: segments built with proto's structs in a private folder, and live processes
// to own them (a forked child that only sleeps), so registry and daemon tests control every
// byte the daemon reads.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "hakmem/proto/snapshot.h"

namespace hakmem_test {

namespace proto = hakmem::proto;

inline uint64_t start_ticks_of(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  int fd = open(path, O_RDONLY);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  const char* p = strrchr(buf, ')');
  if (!p) return 0;
  p += 2;
  for (int field = 3; field < 22 && *p; field++) {
    p = strchr(p, ' ');
    if (!p) return 0;
    p++;
  }
  return strtoull(p, nullptr, 10);
}

// A child process that sleeps until killed; optionally drops to `uid` first.
class Sleeper {
 public:
  explicit Sleeper(uid_t uid = 0) {
    pid_ = fork();
    if (pid_ == 0) {
      if (uid != 0 && (setgid(uid) != 0 || setuid(uid) != 0)) _exit(1);
      for (;;) pause();
    }
    // Wait until the child has its own /proc entry (start time differs from ours).
    for (int i = 0; i < 1000 && start_ticks_of(pid_) == 0; i++) usleep(1000);
  }
  ~Sleeper() { stop(); }
  Sleeper(const Sleeper&) = delete;
  Sleeper& operator=(const Sleeper&) = delete;
  pid_t pid() const { return pid_; }
  void stop() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

 private:
  pid_t pid_ = -1;
};

// A pid that surely belongs to no process right now (a child that already exited).
inline pid_t dead_pid() {
  pid_t p = fork();
  if (p == 0) _exit(0);
  waitpid(p, nullptr, 0);
  return p;
}

// A segment file with a valid header; the test writes counters through seg().
class FakeSegment {
 public:
  FakeSegment(const std::string& dir, pid_t pid, uid_t uid = 0, const char* exe = "/usr/bin/fake-service",
              bool ready = true, uint64_t start_ticks = ~0ull) {
    char buf[512];
    proto::segment_path(dir.c_str(), uid, pid, buf, sizeof buf);
    path_ = buf;
    int fd = open(buf, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) return;
    if (uid != 0) (void)fchown(fd, uid, uid);
    if (ftruncate(fd, sizeof(proto::Segment)) != 0) {
      close(fd);
      return;
    }
    void* p = mmap(nullptr, sizeof(proto::Segment), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return;
    seg_ = static_cast<proto::Segment*>(p);
    auto& h = seg_->header;
    h.magic = proto::kMagic;
    h.layout_version = proto::kLayoutVersion;
    h.header_size = sizeof(proto::SegmentHeader);
    h.segment_size = sizeof(proto::Segment);
    h.pid = pid;
    h.uid = uid;
    h.start_time_ticks = start_ticks == ~0ull ? start_ticks_of(pid) : start_ticks;
    snprintf(h.exe, sizeof h.exe, "%s", exe);
    snprintf(h.cmdline, sizeof h.cmdline, "%s --serve", exe);
    snprintf(h.lib_version, sizeof h.lib_version, "0.1.0");
    h.tiny_class_count = 4;
    const uint32_t sizes[] = {16, 32, 64, 128};
    for (int i = 0; i < 4; i++) h.tiny_class_size[i] = sizes[i];
    for (size_t k = 0; k < proto::kKnobCount; k++) seg_->knobs.value[k].store(proto::kKnobs[k].def);
    seg_->global.thread_slots_hwm.store(1);
    seg_->global.threads_live.store(1);
    if (ready) set_ready();
  }
  ~FakeSegment() {
    if (seg_) munmap(seg_, sizeof(proto::Segment));
  }
  FakeSegment(const FakeSegment&) = delete;
  FakeSegment& operator=(const FakeSegment&) = delete;

  bool ok() const { return seg_ != nullptr; }
  proto::Segment& seg() { return *seg_; }
  const std::string& path() const { return path_; }
  void set_ready() { seg_->header.ready.store(1, std::memory_order_release); }
  void remove() { unlink(path_.c_str()); }

  void add(proto::Tier t, proto::ThreadCounter c, uint64_t v, int slot = 0) {
    seg_->threads[slot].tier[static_cast<size_t>(t)][static_cast<size_t>(c)].fetch_add(v);
  }
  void set_global(proto::Tier t, proto::GlobalCounter c, uint64_t v) {
    seg_->global.tier[static_cast<size_t>(t)][static_cast<size_t>(c)].store(v);
  }
  uint64_t knob(proto::Knob k) { return seg_->knobs.value[static_cast<size_t>(k)].load(); }
  uint64_t generation() { return seg_->knobs.generation.load(); }

 private:
  std::string path_;
  proto::Segment* seg_ = nullptr;
};

// Writes `bytes` of arbitrary content to dir/name with the given mode.
inline void write_file(const std::string& path, const std::string& bytes, mode_t mode = 0600) {
  int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, mode);
  if (fd < 0) return;
  (void)!write(fd, bytes.data(), bytes.size());
  fchmod(fd, mode);
  close(fd);
}

inline bool file_exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

// A private temporary folder, removed (with its files) at the end.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/hakmemd-test.XXXXXX";
    if (mkdtemp(tmpl)) path_ = tmpl;
  }
  ~TempDir() {
    if (!path_.empty()) {
      std::string cmd = "rm -rf '" + path_ + "'";
      (void)!system(cmd.c_str());
    }
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace hakmem_test
