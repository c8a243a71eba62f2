// Stress: hakmemd attached and detached repeatedly while a target allocates hard. Each round
// starts a fresh daemon on the target's segment folder, retunes the target with the real
// hakctl (`set tiny.cap=N --pid P`, waiting for the apply), reads its stats, and stops the
// daemon (SIGTERM, or SIGKILL leaving a stale socket for the next one to replace). The
// target (stress_mixed: cookies, cross-thread frees, RSS bound) must end cleanly, and after
// each set its segment must hold the new value, applied by the process itself. HAKMEM_ATTACH_SECONDS sets the length (soak).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include <string>

#include "daemon_harness.h"

namespace {

using hakmem_test::Client;
using hakmem_test::eventually;
using hakmem_test::json;
namespace proto = hakmem::proto;

pid_t spawn(const std::vector<std::string>& args, const std::vector<std::string>& env, const std::string& out) {
  pid_t pid = fork();
  if (pid == 0) {
    for (const auto& e : env) putenv(const_cast<char*>(e.c_str()));
    int fd = open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// The target's tiny.cap and whether the process applied the latest knob generation, read
// straight from its segment; false when the segment is gone.
bool read_cap(const char* path, uint64_t* cap, bool* applied) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  void* p = mmap(nullptr, sizeof(proto::Segment), PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) return false;
  const auto* seg = static_cast<const proto::Segment*>(p);
  *cap = seg->knobs.value[static_cast<size_t>(proto::Knob::TinyCap)].load();
  *applied = seg->knobs.applied_generation.load() >= seg->knobs.generation.load();
  munmap(p, sizeof(proto::Segment));
  return true;
}

// Kills and reaps a child when the scope ends with it still running (a failed ASSERT returns
// early): a test never leaves a daemon or a target behind.
struct Reaper {
  pid_t* pid;
  ~Reaper() {
    if (*pid > 0) {
      kill(*pid, SIGKILL);
      waitpid(*pid, nullptr, 0);
    }
  }
};

int wait_exit(pid_t pid) {
  int st = 0;
  waitpid(pid, &st, 0);
  return st;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Runs hakctl with args; returns its exit code and stdout.
int hakctl(const std::string& socket, const std::vector<std::string>& args, std::string* out, const std::string& tmp) {
  std::vector<std::string> full = {HAKCTL_PATH, "--socket", socket, "--timeout", "10"};
  full.insert(full.end(), args.begin(), args.end());
  std::string file = tmp + "/hakctl.out";
  unlink(file.c_str());
  int st = wait_exit(spawn(full, {}, file));
  *out = slurp(file);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

TEST(DaemonStress, AttachDetachWhileTheTargetAllocatesHard) {
  const char* sec_env = getenv("HAKMEM_ATTACH_SECONDS");
  const int seconds = sec_env ? atoi(sec_env) : 15;
  hakmem_test::TempDir dir;
  const std::string shm = dir.path() + "/shm", socket = dir.path() + "/run/hakmemd.sock";
  mkdir(shm.c_str(), 0700);
  pid_t target = spawn({STRESS_MIXED, "--threads", "3", "--seconds", std::to_string(seconds), "--max-mib", "4"},
                       {"LD_PRELOAD=" HAKMEM_LIB, "HAKMEM_EXPECT=1", "HAKMEM_SHM_DIR=" + shm},
                       dir.path() + "/target.log");
  ASSERT_GT(target, 0);
  pid_t target_live = target;  // -1 once reaped, so the reaper never kills a reused pid
  Reaper target_reaper{&target_live};
  char seg_path[512];
  proto::segment_path(shm.c_str(), getuid(), target, seg_path, sizeof seg_path);

  int target_status = 0;
  auto reap_target = [&] {
    if (waitpid(target, &target_status, WNOHANG) != target) return false;
    target_live = -1;
    return true;
  };
  // True when the target exits within 5 s (bounded wait, not a timing assertion).
  auto ends_soon = [&] {
    return eventually([&] { return reap_target(); }, 5);
  };
  int rounds = 0, kills = 0;
  uint64_t last_cap = 0;
  bool target_done = false;
  while (!target_done) {
    pid_t d = spawn({HAKMEMD_PATH, "--socket", socket, "--shm-dir", shm, "--scan-interval-ms", "100"}, {},
                    dir.path() + "/hakmemd.log");
    Reaper daemon_reaper{&d};
    auto lists_target = [&] {
      json r = Client(socket).call({{"cmd", "ps"}});
      if (!r.contains("result")) return false;
      for (const auto& p : r["result"]["processes"])
        if (p["pid"] == target) return true;
      return false;
    };
    bool seen = eventually(lists_target, 20);
    // The target may have finished meanwhile; that ends the loop below.
    if (reap_target()) target_done = true;
    if (!target_done) {
      ASSERT_TRUE(seen) << "round " << rounds << ": the daemon never listed the target\n"
                        << slurp(dir.path() + "/hakmemd.log");
      uint64_t cap = 1 + static_cast<uint64_t>(rounds * 37) % 1024;
      std::string out;
      int rc = hakctl(socket, {"set", "tiny.cap=" + std::to_string(cap), "--pid", std::to_string(target), "--wait", "5000"},
                      &out, dir.path());
      // A failure while the target is exiting (its segment already unlinked, the process
      // not yet reaped) is the end of the run, not a fault.
      if (rc != 0) target_done = ends_soon();
      if (!target_done) {
        ASSERT_EQ(rc, 0) << "round " << rounds << ": hakctl set failed: " << out;
        last_cap = cap;
        uint64_t seen_cap = 0;
        bool applied = false;
        if (read_cap(seg_path, &seen_cap, &applied)) {
          ASSERT_EQ(seen_cap, cap) << "round " << rounds << ": the segment does not hold the value hakctl set";
          ASSERT_TRUE(applied) << "round " << rounds << ": hakctl set --wait returned before the process applied it";
        }
        rc = hakctl(socket, {"--json", "stats", "--pid", std::to_string(target)}, &out, dir.path());
        if (rc != 0) target_done = ends_soon();
        if (!target_done) {
          ASSERT_EQ(rc, 0) << "round " << rounds << ": hakctl stats failed: " << out;
          json st = json::parse(out, nullptr, false);
          ASSERT_FALSE(st.is_discarded()) << out;
        }
      }
    }
    // Detach: politely or not. A killed daemon leaves its socket behind.
    int sig = rounds % 3 == 2 ? SIGKILL : SIGTERM;
    kills += sig == SIGKILL;
    kill(d, sig);
    int dst = wait_exit(d);
    d = -1;
    if (sig == SIGTERM) {
      ASSERT_TRUE(WIFEXITED(dst) && WEXITSTATUS(dst) == 0) << "hakmemd did not stop cleanly on SIGTERM (status " << dst
                                                           << ")\n" << slurp(dir.path() + "/hakmemd.log");
    }
    rounds++;
    if (!target_done && reap_target()) target_done = true;
  }
  printf("attach/detach: %d rounds (%d by SIGKILL) over a %d s target; last tiny.cap %llu\n", rounds, kills, seconds,
         static_cast<unsigned long long>(last_cap));
  std::string log = slurp(dir.path() + "/target.log");
  ASSERT_TRUE(WIFEXITED(target_status) && WEXITSTATUS(target_status) == 0)
      << "the target did not end cleanly (status " << target_status << "):\n" << log;
  EXPECT_GE(rounds, 3) << "too few attach/detach rounds to mean anything";
  EXPECT_NE(log.find("stress_mixed: threads 3"), std::string::npos) << log;
}

}  // namespace
