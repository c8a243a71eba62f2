// Test helpers: segments built with proto's structs in a private folder, and live processes
// to own (and map) them (a forked child that only sleeps), so registry and daemon tests
// control every byte the daemon reads.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
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

// /proc/<pid>/comm without the newline ("" when the process is gone).
inline std::string comm_of(pid_t pid) {
  char path[64], buf[64];
  snprintf(path, sizeof path, "/proc/%d/comm", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return "";
  if (buf[n - 1] == '\n') n--;
  return std::string(buf, static_cast<size_t>(n));
}

// A child process that sleeps until killed; optionally drops to `uid` first. It can map a
// segment the way libhakmem maps its own (map_segment), and exec a program without hakmem
// (exec_sleep). It serves those requests over a socket pair and exits when the test process
// is gone (end of file), so a crashed test leaves no sleepers behind.
// With `exe` (a copy of tests/daemon/fake_service.cc's program, install_fake_service) the
// child runs that executable, which hakmemd reads from /proc/<pid>/exe, and serves the same
// requests; without, it is a fork of the test and runs the test's executable.
class Sleeper {
 public:
  explicit Sleeper(uid_t uid = 0, const std::string& exe = "") {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      ::close(sv[0]);
      if (uid != 0 && (setgid(uid) != 0 || setuid(uid) != 0)) _exit(1);
      if (!exe.empty()) {
        char fd[16];
        snprintf(fd, sizeof fd, "%d", sv[1]);
        fcntl(sv[1], F_SETFD, 0);  // kept across the exec
        execl(exe.c_str(), exe.c_str(), fd, static_cast<char*>(nullptr));
        _exit(127);
      }
      serve(sv[1]);
    }
    ::close(sv[1]);
    ctl_ = sv[0];
    if (!exe.empty()) {
      // The program says it is up: the exec is done, /proc/<pid>/exe names it.
      char up = 0;
      if (pid_ < 0 || read(ctl_, &up, 1) != 1 || up != 'r') stop();
      return;
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
    if (ctl_ >= 0) ::close(ctl_);
    ctl_ = -1;
  }

  // A one-byte command with room for one file descriptor (SCM_RIGHTS), to send or receive.
  struct CmdMsg {
    explicit CmdMsg(char c) : cmd(c) {
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = ctrl;
      msg.msg_controllen = sizeof ctrl;
    }
    CmdMsg(const CmdMsg&) = delete;
    CmdMsg& operator=(const CmdMsg&) = delete;
    char cmd;
    struct iovec iov{&cmd, 1};
    alignas(struct cmsghdr) char ctrl[CMSG_SPACE(sizeof(int))] = {};
    struct msghdr msg{};
  };

  // The child maps the whole file MAP_SHARED, as a process running hakmem maps its segment.
  // True once it has.
  bool map_segment(int fd) {
    char reply = 0;
    CmdMsg m('m');
    struct msghdr& msg = m.msg;
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
    if (ctl_ < 0 || sendmsg(ctl_, &msg, MSG_NOSIGNAL) != 1) return false;
    return read(ctl_, &reply, 1) == 1 && reply == 'k';
  }
  // The child execs `sleep` (no LD_PRELOAD involved): same pid and start time, a new program
  // image without the mappings of the old one. True once the exec has replaced the image
  // (the control socket closes on exec) and the process runs `sleep`.
  bool exec_sleep() {
    char cmd = 'x', reply;
    if (ctl_ < 0 || send(ctl_, &cmd, 1, MSG_NOSIGNAL) != 1) return false;
    const bool closed = read(ctl_, &reply, 1) == 0;
    ::close(ctl_);
    ctl_ = -1;
    return closed && comm_of(pid_) == "sleep";
  }

  // The child's loop: answers requests on fd until the test process closes its end.
  [[noreturn]] static void serve(int fd) {
    for (;;) {
      CmdMsg m(0);
      struct msghdr& msg = m.msg;
      if (recvmsg(fd, &msg, MSG_CMSG_CLOEXEC) <= 0) _exit(0);  // the test process is gone
      const char cmd = m.cmd;
      if (cmd == 'x') {
        execlp("sleep", "sleep", "100000", static_cast<char*>(nullptr));
        _exit(127);
      }
      char reply = 'e';
      struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
      if (cmd == 'm' && c && c->cmsg_type == SCM_RIGHTS) {
        int seg_fd;
        memcpy(&seg_fd, CMSG_DATA(c), sizeof(int));
        struct stat st;
        if (fstat(seg_fd, &st) == 0 && st.st_size > 0 &&
            mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_SHARED, seg_fd, 0) != MAP_FAILED)
          reply = 'k';
        ::close(seg_fd);
      }
      if (write(fd, &reply, 1) != 1) _exit(0);
    }
  }

 private:

  pid_t pid_ = -1;
  int ctl_ = -1;
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
  // The segment of a live process that maps it, as libhakmem does: `owner` maps it before
  // `ready` is set (hakmemd drops a segment its process no longer maps: exec'd away).
  FakeSegment(const std::string& dir, Sleeper& owner, uid_t uid = 0, bool ready = true,
              uint64_t created_ticks = ~0ull) {
    create(dir, owner.pid(), uid, created_ticks, &owner);
    if (seg_ && ready) set_ready();
  }
  // A segment that only this test maps: for pids that are dead, or not the file's process.
  FakeSegment(const std::string& dir, pid_t pid, uid_t uid = 0, bool ready = true,
              uint64_t created_ticks = ~0ull) {
    create(dir, pid, uid, created_ticks, nullptr);
    if (seg_ && ready) set_ready();
  }
  ~FakeSegment() {
    if (seg_) munmap(seg_, sizeof(proto::Segment));
  }
  FakeSegment(const FakeSegment&) = delete;
  FakeSegment& operator=(const FakeSegment&) = delete;

  bool ok() const { return seg_ != nullptr; }
  // False when an owner was given but did not map the segment.
  bool owner_mapped() const { return owner_mapped_; }
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
  // created_ticks ~0: the owner's start time (the earliest a real segment's can be).
  void create(const std::string& dir, pid_t pid, uid_t uid, uint64_t created_ticks, Sleeper* owner) {
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
    if (p != MAP_FAILED && owner) owner_mapped_ = owner->map_segment(fd);
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
    h.created_boot_ticks = created_ticks == ~0ull ? start_ticks_of(pid) : created_ticks;
    snprintf(h.lib_version, sizeof h.lib_version, "0.1.0");
    h.tiny_class_count = 4;
    const uint32_t sizes[] = {16, 32, 64, 128};
    for (int i = 0; i < 4; i++) h.tiny_class_size[i] = sizes[i];
    for (size_t k = 0; k < proto::kKnobCount; k++) seg_->knobs.value[k].store(proto::kKnobs[k].def);
    seg_->global.thread_slots_hwm.store(1);
    seg_->global.threads_live.store(1);
  }

  std::string path_;
  proto::Segment* seg_ = nullptr;
  bool owner_mapped_ = false;
};

// Writes `bytes` of arbitrary content to dir/name with the given mode.
inline void write_file(const std::string& path, const std::string& bytes, mode_t mode = 0600) {
  int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, mode);
  if (fd < 0) return;
  (void)!write(fd, bytes.data(), bytes.size());
  fchmod(fd, mode);
  close(fd);
}

// readlink(/proc/self/exe): what hakmemd reads as the executable of a plain Sleeper.
inline std::string self_exe() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

// /proc/self/cmdline with the arguments joined by spaces: what hakmemd reads as the command
// line of a plain Sleeper.
inline std::string own_cmdline() {
  char buf[8192];
  int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
  ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf) : -1;
  if (fd >= 0) close(fd);
  std::string s = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  while (!s.empty() && s.back() == 0) s.pop_back();
  for (char& c : s)
    if (c == 0) c = ' ';
  return s;
}

#ifdef FAKE_SERVICE_PATH
// Copies the fake_service program to dir/name (mode 0755), for a Sleeper that should run an
// executable of that name. Returns the path, or "" when the copy failed.
inline std::string install_fake_service(const std::string& dir, const std::string& name) {
  const std::string path = dir + "/" + name;
  int in = open(FAKE_SERVICE_PATH, O_RDONLY | O_CLOEXEC);
  int out = open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0755);
  bool ok = in >= 0 && out >= 0;
  char buf[65536];
  for (ssize_t n; ok && (n = read(in, buf, sizeof buf)) != 0;) ok = n > 0 && write(out, buf, static_cast<size_t>(n)) == n;
  if (in >= 0) close(in);
  if (out >= 0) close(out);
  return ok ? path : std::string();
}
#endif

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
