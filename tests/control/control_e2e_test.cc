// End-to-end tests: control_probe, a real program, runs with libhakmem preloaded in a
// private segment dir; these tests read what it printed and what it left behind.
// Paths come from CMake (HAKMEM_LIB_PATH, PROBE_PATH).
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "hakmem/proto/knobs.h"

namespace {

struct ProbeRun {
  int status = -1;
  pid_t pid = 0;
  std::string out, err;
  std::map<std::string, std::string> kv;

  bool exited_ok() const { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }
  bool has(const std::string& k) const { return kv.count(k) != 0; }
  std::string str(const std::string& k) const {
    auto it = kv.find(k);
    return it == kv.end() ? std::string("<missing ") + k + ">" : it->second;
  }
  long long num(const std::string& k) const {
    auto it = kv.find(k);
    if (it == kv.end()) {
      ADD_FAILURE() << "probe printed no '" << k << "'\nstdout:\n" << out << "\nstderr:\n" << err;
      return -1;
    }
    return strtoll(it->second.c_str(), nullptr, 0);
  }
};

std::string slurp(int fd) {
  std::string s;
  char buf[65536];
  lseek(fd, 0, SEEK_SET);
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) s.append(buf, n);
  return s;
}

class ControlE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/hakmem-e2e.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (const auto& f : files()) unlink((dir_ + "/" + f).c_str());
    unlink(sweep_stamp().c_str());
    rmdir(dir_.c_str());
  }
  // The file whose mtime says when a process of ours last swept the folder.
  std::string sweep_stamp() const { return dir_ + "/.hakmem-sweep." + std::to_string(getuid()); }
  std::vector<std::string> files() const {
    std::vector<std::string> v;
    if (DIR* d = opendir(dir_.c_str())) {
      while (dirent* e = readdir(d))
        if (e->d_name[0] != '.') v.push_back(e->d_name);
      closedir(d);
    }
    return v;
  }

  // Runs the probe preloaded with libhakmem, the environment cleared of HAKMEM_* but for
  // the segment dir and `env`.
  ProbeRun run(const std::vector<std::string>& steps, const std::vector<std::string>& env = {}) {
    return run_exe(PROBE_PATH, true, steps, env, false);
  }
  // `as_nobody`: drop to uid/gid 65534 before exec (for setuid binaries).
  ProbeRun run_exe(const char* exe, bool preload, const std::vector<std::string>& steps,
                   const std::vector<std::string>& env, bool as_nobody) {
    ProbeRun r;
    FILE* out = tmpfile();
    FILE* err = tmpfile();
    pid_t pid = fork();
    if (pid == 0) {
      for (const auto& k : hakmem::proto::kKnobs) unsetenv(k.env);
      if (preload) setenv("LD_PRELOAD", HAKMEM_LIB_PATH, 1);
      setenv("HAKMEM_SHM_DIR", dir_.c_str(), 1);
      for (const auto& e : env) putenv(strdup(e.c_str()));
      dup2(fileno(out), 1);
      dup2(fileno(err), 2);
      // Without transparent huge pages, first touches fault page by page: what the
      // prewarm knobs are about is then visible in the fault counts.
      if (no_thp_) prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
      if (as_nobody && (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0)) _exit(126);
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(exe));
      for (const auto& s : steps) argv.push_back(const_cast<char*>(s.c_str()));
      argv.push_back(nullptr);
      execv(exe, argv.data());
      _exit(127);
    }
    r.pid = pid;
    waitpid(pid, &r.status, 0);
    r.out = slurp(fileno(out));
    r.err = slurp(fileno(err));
    fclose(out);
    fclose(err);
    size_t pos = 0;
    while (pos < r.out.size()) {
      size_t nl = r.out.find('\n', pos);
      if (nl == std::string::npos) nl = r.out.size();
      std::string line = r.out.substr(pos, nl - pos);
      size_t sp = line.find(' ');
      if (sp != std::string::npos) r.kv[line.substr(0, sp)] = line.substr(sp + 1);
      pos = nl + 1;
    }
    return r;
  }
  std::string dir_;
  bool no_thp_ = false;
};

#define ASSERT_RAN(r) ASSERT_TRUE((r).exited_ok()) << "status " << (r).status << "\nstdout:\n" << (r).out << "\nstderr:\n" << (r).err

// ---- the segment ----

TEST_F(ControlE2E, PreloadedProgramFindsItsOwnSegment0600AndItIsGoneAfterExit) {
  ProbeRun r = run({"header", "knobs"});
  ASSERT_RAN(r);
  ASSERT_EQ(r.num("segment"), 1) << r.err;
  EXPECT_EQ(r.str("path"), dir_ + "/hakmem." + std::to_string(getuid()) + "." + std::to_string(r.pid));
  EXPECT_EQ(r.str("mode"), "600");
  EXPECT_EQ(r.num("owner"), (long long)getuid());
  EXPECT_EQ(r.num("size_ok"), 1);
  EXPECT_EQ(r.num("pid"), r.pid);
  EXPECT_EQ(r.num("my_pid"), r.pid);
  // The process started no later than its segment was created (hakmemd's test for a reused
  // pid), and that was no later than the probe printed it.
  EXPECT_GT(r.num("start_ticks"), 0);
  EXPECT_LE(r.num("start_ticks"), r.num("created_ticks"));
  EXPECT_LE(r.num("created_ticks"), r.num("now_ticks"));
  EXPECT_EQ(r.str("lib_version"), HAKMEM_VERSION_EXPECTED);
  EXPECT_GT(r.num("tiny_class_count"), 0);
  EXPECT_GE(r.num("threads_live"), 1);
  EXPECT_EQ(r.num("env_mask"), 0);
  EXPECT_TRUE(files().empty()) << "segment left behind after exit: " << files()[0];
}

// A segment left by a process that died without its destructor (SIGKILL, or _exit in a
// fork child) is removed by the next process that creates one in the folder: no daemon is
// needed to keep /dev/shm clean. Other users' files and live processes' are left alone.
TEST_F(ControlE2E, StaleSegmentsOfDeadProcessesAreSweptAtStart) {
  pid_t dead = fork();
  ASSERT_GE(dead, 0);
  if (dead == 0) _exit(0);
  waitpid(dead, nullptr, 0);  // reaped: no process has this pid now
  const std::string uid = std::to_string(getuid());
  const std::string stale = dir_ + "/hakmem." + uid + "." + std::to_string(dead);
  // A live process that is not the probe's parent (whose segment would make the probe
  // publish late, as a command a hakmem process starts does).
  const std::string live = dir_ + "/hakmem." + uid + "." + std::to_string(getppid());
  const std::string other_user = dir_ + "/hakmem." + std::to_string(getuid() + 4242) + "." + std::to_string(dead);
  const std::string unrelated = dir_ + "/hakmem." + uid + ".notapid";
  for (const std::string& f : {stale, live, other_user, unrelated}) {
    int fd = open(f.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0) << f;
    close(fd);
  }
  ProbeRun r = run({"header"});
  ASSERT_RAN(r);
  EXPECT_NE(access(stale.c_str(), F_OK), 0) << "stale segment of dead pid " << dead << " was kept";
  EXPECT_EQ(access(live.c_str(), F_OK), 0) << "a live process's segment was removed";
  EXPECT_EQ(access(other_user.c_str(), F_OK), 0) << "another user's file was removed";
  EXPECT_EQ(access(unrelated.c_str(), F_OK), 0);
  for (const std::string& f : {live, other_user, unrelated}) unlink(f.c_str());
}

TEST_F(ControlE2E, EnvKnobShowsInTheKnobBlockAndTheApi) {
  ProbeRun r = run({"knobs"}, {"HAKMEM_TINY_CAP=64", "HAKMEM_WHALE_CACHE_BYTES=16M"});
  ASSERT_RAN(r);
  EXPECT_EQ(r.num("block.tiny.cap"), 64);
  EXPECT_EQ(r.num("knob.tiny.cap"), 64);
  EXPECT_EQ(r.num("block.whale.cache_bytes"), 16 << 20);
  EXPECT_EQ(r.num("env_mask"), (1 << int(hakmem::proto::Knob::TinyCap)) |
                                    (1 << int(hakmem::proto::Knob::WhaleCacheBytes)));
  EXPECT_EQ(r.err, "");
}

TEST_F(ControlE2E, InvalidEnvValueWarnsOnceAndKeepsTheDefault) {
  ProbeRun r = run({"knobs"}, {"HAKMEM_TINY_CAP=5000"});
  ASSERT_RAN(r);
  EXPECT_EQ(r.num("knob.tiny.cap"), 0);
  EXPECT_EQ(r.err,
            "hakmem: ignoring HAKMEM_TINY_CAP=5000: tiny.cap: out of range (5000); must be 0..1024 "
            "(keeping the default 0)\n");
}

TEST_F(ControlE2E, CountersMoveExactlyAsTheProgramAllocates) {
  // One size per tier: tiny, pool, bundle, whale.
  const struct { const char* tier; int size; int n; } cases[] = {
      {"tiny", 48, 1000}, {"pool", 4000, 200}, {"bundle", 100000, 20}, {"whale", 3 << 20, 3}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.tier);
    const std::string sz = std::to_string(c.size), n = std::to_string(c.n);
    ProbeRun r = run({"usable " + sz, "hold " + sz + " " + n, "release"});
    ASSERT_RAN(r);
    const long long usable = r.num("usable");
    ASSERT_GE(usable, c.size);
    const std::string t = c.tier;
    EXPECT_EQ(r.num("s2." + t + ".allocs"), c.n);
    EXPECT_EQ(r.num("s2." + t + ".alloc_bytes"), c.n * usable);
    EXPECT_EQ(r.num("s2." + t + ".live"), c.n * usable);
    EXPECT_EQ(r.num("s2." + t + ".frees"), 0);
    EXPECT_EQ(r.num("s3." + t + ".frees"), c.n);
    EXPECT_EQ(r.num("s3." + t + ".live"), -c.n * usable);
    for (const char* other : {"tiny", "pool", "bundle", "whale"}) {
      if (t == other) continue;
      EXPECT_EQ(r.num(std::string("s2.") + other + ".allocs"), 0) << other;
    }
  }
}

TEST_F(ControlE2E, GarbageInTheKnobBlockIsClampedAndTheProgramKeepsWorking) {
  ProbeRun r = run({"garbage", "knobs", "churn 40 2000", "churn 5000 200", "churn 200000 20", "churn 4194304 4"});
  ASSERT_RAN(r);
  EXPECT_EQ(r.num("applied"), 1);
  for (const auto& k : hakmem::proto::kKnobs) {
    if (k.mode != hakmem::proto::KnobMode::Live) continue;
    EXPECT_EQ(r.num(std::string("knob.") + k.name), (long long)k.max) << k.name;
  }
  EXPECT_EQ(r.num("s3.tiny.allocs"), 2000);
  EXPECT_EQ(r.num("s6.whale.allocs"), 4);
}

TEST_F(ControlE2E, KnobShmEnableZeroCreatesNoSegment) {
  ProbeRun r = run({"knobs", "churn 100 100"}, {"HAKMEM_SHM=0"});
  ASSERT_RAN(r);
  EXPECT_EQ(r.num("segment"), 0);
  EXPECT_EQ(r.num("knob.shm.enable"), 0);
  EXPECT_TRUE(files().empty());
}

// Without a segment the figures live in the library's static stand-in. That stand-in must
// not be re-initialised by a constructor running after the first malloc (libstdc++'s
// start-up allocates before libhakmem's constructors run): counts must survive it.
TEST_F(ControlE2E, CountersStillCountWithoutASegment) {
  ProbeRun r = run({"hold 48 1000", "release"}, {"HAKMEM_SHM=0", "HAKMEM_STATS=1"});
  ASSERT_RAN(r);
  EXPECT_TRUE(files().empty());
  // The exit summary's tiny row: "tiny <allocs> <frees> ...".
  const size_t row = r.err.find("\ntiny ");
  ASSERT_NE(row, std::string::npos) << r.err;
  unsigned long long allocs = 0, frees = 0;
  ASSERT_EQ(sscanf(r.err.c_str() + row, "\ntiny %llu %llu", &allocs, &frees), 2) << r.err;
  EXPECT_GE(allocs, 1000u) << r.err;
  EXPECT_GE(frees, 1000u) << r.err;
}

TEST_F(ControlE2E, KnobStatsPrintWritesTheSummaryAtExit) {
  ProbeRun r = run({"churn 64 100", "churn 3000000 2"}, {"HAKMEM_STATS=1"});
  ASSERT_RAN(r);
  EXPECT_NE(r.err.find("hakmem: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("pid " + std::to_string(r.pid)), std::string::npos) << r.err;
  for (const char* t : {"\ntiny ", "\npool ", "\nbundle ", "\nwhale ", "\ntotal "})
    EXPECT_NE(r.err.find(t), std::string::npos) << t << "\n" << r.err;
  EXPECT_NE(r.err.find("soft page faults"), std::string::npos) << r.err;
  ProbeRun quiet = run({"churn 64 100"});
  ASSERT_RAN(quiet);
  EXPECT_EQ(quiet.err, "");
}

TEST_F(ControlE2E, KnobSetThroughTheApiReachesTheBlock) {
  ProbeRun r = run({"set tiny.cap 32", "set tiny.cap 4096", "knobs"});
  ASSERT_RAN(r);
  EXPECT_EQ(r.num("block.tiny.cap"), 32);
  EXPECT_EQ(r.num("knob.tiny.cap"), 32);
  EXPECT_EQ(r.num("set_rc"), 3);  // the last one: out of range
  EXPECT_EQ(r.str("set_err"), "tiny.cap: out of range (4096); must be 0..1024");
}

TEST_F(ControlE2E, LinkedCProgramUsesTheApiAndEnv) {
  ProbeRun r = run_exe(LINKED_PROBE_PATH, false, {}, {"HAKMEM_TINY_CAP=64"}, false);
  ASSERT_RAN(r);
  EXPECT_EQ(r.num("knob.tiny.cap"), 64);
  EXPECT_EQ(r.num("shared"), 1);
  EXPECT_EQ(r.str("path").rfind(dir_ + "/hakmem.", 0), 0u) << r.str("path");
  EXPECT_EQ(r.str("version"), HAKMEM_VERSION_EXPECTED);
}

// Linked statically (libhakmem.a): the segment, the env knobs and the exit summary work
// the same (the summary's destructor must not be left out of the link).
TEST_F(ControlE2E, StaticallyLinkedProgramHasTheWholeControlPlane) {
  ProbeRun r = run_exe(STATIC_PROBE_PATH, false, {}, {"HAKMEM_TINY_CAP=64", "HAKMEM_STATS=1"}, false);
  ASSERT_RAN(r);
  EXPECT_EQ(r.num("knob.tiny.cap"), 64);
  EXPECT_EQ(r.num("shared"), 1);
  EXPECT_NE(r.err.find("hakmem: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("\ntotal "), std::string::npos) << r.err;
  EXPECT_TRUE(files().empty()) << "segment left behind";
}

// A setuid program must not be steered by its caller's environment (AT_SECURE): the knobs
// keep their defaults, no warning is printed, and HAKMEM_SHM_DIR is ignored too.
TEST_F(ControlE2E, EnvironmentIsIgnoredInSetuidPrograms) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to make a setuid copy";
  ASSERT_EQ(chmod(dir_.c_str(), 0755), 0);
  const std::string exe = dir_ + "/linked_probe_setuid";
  {
    std::string cmd = std::string("cp ") + LINKED_PROBE_PATH + " " + exe;
    ASSERT_EQ(system(cmd.c_str()), 0);
  }
  ASSERT_EQ(chown(exe.c_str(), 0, 0), 0);
  ASSERT_EQ(chmod(exe.c_str(), 04755), 0);
  ProbeRun r = run_exe(exe.c_str(), false, {},
                       {"HAKMEM_TINY_CAP=64", "HAKMEM_TINY_PREWARM=bogus", "HAKMEM_SHM=0"}, true);
  ASSERT_RAN(r);
  EXPECT_EQ(r.num("knob.tiny.cap"), 0);
  EXPECT_EQ(r.num("knob.shm.enable"), 1);
  EXPECT_EQ(r.err, "") << "no warnings for ignored variables";
  // The segment went to the default dir, not the one the caller chose; gone at exit.
  EXPECT_EQ(r.str("path").rfind("/dev/shm/hakmem.65534.", 0), 0u) << r.str("path");
  EXPECT_NE(access(r.str("path").c_str(), F_OK), 0);
  unlink(exe.c_str());
  // And the same binary without setuid honours the environment.
  ProbeRun plain = run_exe(LINKED_PROBE_PATH, false, {}, {"HAKMEM_TINY_CAP=64"}, true);
  ASSERT_RAN(plain);
  EXPECT_EQ(plain.num("knob.tiny.cap"), 64);
}

// The sweep runs once a second at most per user (it reads the whole folder and asks the
// kernel about every pid in it): the time of the last one is the mtime of the user's stamp
// file in the folder. A stamp of ours from just now holds the next process's sweep back, an
// older one does not, and neither does one another user made.
TEST_F(ControlE2E, StaleSegmentsAreSweptAtMostOnceASecond) {
  pid_t dead = fork();
  ASSERT_GE(dead, 0);
  if (dead == 0) _exit(0);
  waitpid(dead, nullptr, 0);
  const std::string stale = dir_ + "/hakmem." + std::to_string(getuid()) + "." + std::to_string(dead);
  const std::string stamp = sweep_stamp();
  auto make = [](const std::string& f) {
    int fd = open(f.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0) << f;
    close(fd);
  };
  auto stamp_at = [&](time_t when) {
    const timespec t[2] = {{when, 0}, {when, 0}};
    ASSERT_EQ(utimensat(AT_FDCWD, stamp.c_str(), t, 0), 0);
  };
  // Now to the nanosecond: a stamp of time(nullptr) is up to a second old already, and a
  // probe started late in that second saw "more than a second ago" and swept.
  auto stamp_now = [&] { ASSERT_EQ(utimensat(AT_FDCWD, stamp.c_str(), nullptr, 0), 0); };
  make(stale);
  make(stamp);
  stamp_now();
  ProbeRun r = run({"header"});
  ASSERT_RAN(r);
  EXPECT_EQ(access(stale.c_str(), F_OK), 0) << "swept again within a second of the last sweep";

  stamp_at(time(nullptr) - 5);
  r = run({"header"});
  ASSERT_RAN(r);
  EXPECT_NE(access(stale.c_str(), F_OK), 0) << "the last sweep was 5 s ago, and this process did not sweep";
  struct stat st{};
  ASSERT_EQ(stat(stamp.c_str(), &st), 0);
  EXPECT_GE(st.st_mtime, time(nullptr) - 2) << "the sweep did not stamp its time";

  if (geteuid() == 0) {
    make(stale);
    stamp_now();
    ASSERT_EQ(chown(stamp.c_str(), 65534, 65534), 0);
    r = run({"header"});
    ASSERT_RAN(r);
    EXPECT_NE(access(stale.c_str(), F_OK), 0) << "another user's stamp held our sweep back";
  }
}

TEST_F(ControlE2E, ForkChildGetsItsOwnSegmentAndTheParentsKnobs) {
  ProbeRun r = run({"fork 48 100"}, {"HAKMEM_TINY_CAP=64"});
  ASSERT_RAN(r);
  EXPECT_EQ(r.num("child.status"), 0);
  EXPECT_EQ(r.num("child.segment_at_fork"), 0);  // created lazily (fork+exec leaves none)
  // Published a while after the child's first check (kChildPublishDelayNs, 100 ms): a child
  // that execs or exits sooner never creates one.
  EXPECT_GE(r.num("child.ms_until_segment"), 90);
  EXPECT_LT(r.num("child.ms_until_segment"), 5000);
  EXPECT_EQ(r.num("child.segment"), 1);
  EXPECT_EQ(r.num("child.valid"), 1);
  EXPECT_EQ(r.num("child.header_pid_ok"), 1);
  EXPECT_EQ(r.num("child.tiny_cap"), 64);
  EXPECT_EQ(r.num("child.allocs_delta"), 100);  // measured in the child's own segment
  EXPECT_EQ(r.num("child.threads_live"), 1);
  EXPECT_EQ(r.num("parent.allocs_delta"), 0) << "the child's allocations leaked into the parent's segment";
  EXPECT_EQ(r.num("parent.segment_ok"), 1);
  EXPECT_TRUE(files().empty()) << "a segment was left behind: " << files()[0];
}

// A command that a hakmem process starts (a preloaded shell's, a build tool's) is published
// as a fork child is: no file at its start, its own once it has lived a while, with the
// identity hakmemd reads (start time, executable, command line) read then.
TEST_F(ControlE2E, ACommandStartedByAHakmemProcessPublishesOnceItHasLivedAWhile) {
  ProbeRun r = run({"header", "spawn"});
  ASSERT_RAN(r);
  ASSERT_EQ(r.num("segment"), 1) << r.err;
  EXPECT_EQ(r.num("spawn.status"), 0) << r.out;
  EXPECT_EQ(r.num("spawn.segment"), 0) << "the command created its segment at its start";
  // kChildPublishDelayNs (100 ms) from its first periodic check, which its start-up's
  // allocations may have run a few milliseconds before the probe's clock started.
  EXPECT_GE(r.num("spawn.late.ms_until_segment"), 50);
  EXPECT_LT(r.num("spawn.late.ms_until_segment"), 5000);
  ASSERT_EQ(r.num("spawn.late.segment"), 1);
  EXPECT_EQ(r.num("spawn.pid"), r.num("spawn.my_pid"));
  EXPECT_NE(r.num("spawn.pid"), r.pid);
  EXPECT_EQ(r.str("spawn.mode"), "600");
  // Created when published, at least 50 ms (5 ticks at 100 Hz) after the command started.
  EXPECT_GT(r.num("spawn.start_ticks"), 0);
  EXPECT_GE(r.num("spawn.created_ticks"), r.num("spawn.start_ticks") + 50 * sysconf(_SC_CLK_TCK) / 1000);
  EXPECT_LE(r.num("spawn.created_ticks"), r.num("spawn.now_ticks"));
  EXPECT_TRUE(files().empty()) << "a segment was left behind: " << files()[0];
}

// Such a command that maps a good deal of memory of its own (a service started from a
// preloaded shell, which sets up and then waits for work) publishes at its next check, and
// does not wait for an allocation 100 ms later that may never come; a small one still waits.
TEST_F(ControlE2E, ACommandThatMapsMuchPublishesAtOnceASmallOneWaits) {
  ProbeRun r = run({"header", "spawn bigidle 24"});
  ASSERT_RAN(r);
  ASSERT_EQ(r.num("segment"), 1) << r.err;
  EXPECT_EQ(r.num("spawn.status"), 0) << r.out;
  EXPECT_EQ(r.num("spawn.bigidle.segment_before"), 0) << "the command created its segment at its start";
  EXPECT_EQ(r.num("spawn.bigidle.segment_after"), 1) << "24 MiB mapped, and still no segment";
  // 2 MiB of its own: still a short command's footprint, so no file at once. (Not asserted
  // if the command was held up for the delay: a check then publishes it by time.)
  timespec t0{}, t1{};
  clock_gettime(CLOCK_MONOTONIC, &t0);
  r = run({"header", "spawn bigidle 2"});
  clock_gettime(CLOCK_MONOTONIC, &t1);
  ASSERT_RAN(r);
  EXPECT_EQ(r.num("spawn.status"), 0) << r.out;
  EXPECT_EQ(r.num("spawn.bigidle.segment_before"), 0);
  const long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
  if (ms < 90) {
    EXPECT_EQ(r.num("spawn.bigidle.segment_after"), 0) << "a 4 MiB command published at once";
  }
  EXPECT_TRUE(files().empty()) << "a segment was left behind: " << files()[0];
}

// Such a command that starts a thread (a service setting up its workers before it waits for
// work) publishes at that thread's first malloc, not at a check after the delay that may
// never come; the command's own main thread allocating does not (the test above).
TEST_F(ControlE2E, ACommandThatStartsAThreadPublishesAtTheThreadsFirstMalloc) {
  timespec t0{}, t1{};
  clock_gettime(CLOCK_MONOTONIC, &t0);
  ProbeRun r = run({"header", "spawn threadidle"});
  clock_gettime(CLOCK_MONOTONIC, &t1);
  ASSERT_RAN(r);
  ASSERT_EQ(r.num("segment"), 1) << r.err;
  EXPECT_EQ(r.num("spawn.status"), 0) << r.out;
  // (Not asserted if the command was held up for the delay: a check may then have
  // published it by time before the thread.)
  const long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
  if (ms < 90) {
    EXPECT_EQ(r.num("spawn.threadidle.segment_before"), 0) << "published before its thread";
  }
  EXPECT_EQ(r.num("spawn.threadidle.segment_after"), 1) << "a thread allocated, and still no segment";
  EXPECT_TRUE(files().empty()) << "a segment was left behind: " << files()[0];
}

// Threads that start, count and exit while such a command publishes its segment: the file
// has every allocation they made (a thread carries what it counted in the stand-in after the
// copy into its new slot) and the slots of exactly the threads alive (attach, detach and the
// copy exclude each other). Before, threads_live ended at 2^32 - 1 in the soak's churn.
TEST_F(ControlE2E, ThreadsChurningWhileACommandPublishesKeepEveryCountAndSlot) {
  ProbeRun r = run({"spawn latechurn 4 1000"});
  ASSERT_RAN(r);
  EXPECT_EQ(r.num("spawn.status"), 0) << r.out;
  ASSERT_EQ(r.num("spawn.latechurn.segment"), 1) << r.out;
  EXPECT_GE(r.num("spawn.latechurn.mallocs"), 8000);
  EXPECT_GE(r.num("spawn.latechurn.tiny_allocs"), r.num("spawn.latechurn.mallocs"))
      << "allocations counted in the stand-in after the copy were lost";
  EXPECT_EQ(r.num("spawn.latechurn.threads_live"), 1);
}

// fork + exec of a program that does not run hakmem: nothing left in the shm dir.
TEST_F(ControlE2E, ForkThenExecLeavesNoSegmentBehind) {
  ProbeRun r = run({"forkexec"});
  ASSERT_RAN(r);
  EXPECT_EQ(r.num("exec.status"), 0);
  EXPECT_TRUE(files().empty()) << "left behind: " << files()[0];
}

TEST_F(ControlE2E, ThreadsTakeSlotsAndGiveThemBack) {
  ProbeRun r = run({"threads 8"});
  ASSERT_RAN(r);
  EXPECT_EQ(r.num("threads.live_during"), 9);  // main + 8
  EXPECT_GE(r.num("threads.hwm_during"), 9);
  EXPECT_EQ(r.num("threads.unslotted"), 0);
  EXPECT_EQ(r.num("threads.live_after"), 1);
}

TEST_F(ControlE2E, ThreadsBeyondTheSlotTableKeepWorkingUnpublished) {
  ProbeRun r = run({"threads 300"});
  ASSERT_RAN(r);
  EXPECT_EQ(r.num("threads.live_during"), 256);
  EXPECT_EQ(r.num("threads.hwm_during"), 256);
  EXPECT_EQ(r.num("threads.unslotted"), 300 + 1 - 256);
  EXPECT_EQ(r.num("threads.live_after"), 1);
}

TEST_F(ControlE2E, MallinfoAndMallocInfoReportHakmemsFigures) {
  ProbeRun r = run({"hold 3000000 2", "hold 100 1000", "mallinfo"});
  ASSERT_RAN(r);
  const long long live = r.num("s1.whale.live") + r.num("s2.tiny.live");
  EXPECT_GE(r.num("mi.uordblks"), live);
  EXPECT_GE(r.num("mi.hblkhd"), 2 * 3000000);
  EXPECT_EQ(r.num("mi.hblks"), 2);
  EXPECT_GT(r.num("mi.arena"), 0);
  EXPECT_NE(r.out.find("<malloc version=\"1\" allocator=\"hakmem\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("<heap nr=\"3\" name=\"whale\">"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("\nwhale "), std::string::npos) << r.err;  // malloc_stats()
}

TEST_F(ControlE2E, KnobWritesUnderMultiThreadedLoadAreAllAppliedAndNothingBreaks) {
  // 2000 daemon-style writes (a third of them garbage) while 4 threads allocate in every
  // tier; the program keeps working and ends having applied the last generation.
  // (stats.enable may have ended at 0: switch it on to count the check that follows.)
  ProbeRun r = run({"storm 2000", "write stats.enable 1", "churn 100 1000", "churn 3000000 2", "knobs"});
  ASSERT_RAN(r);
  EXPECT_EQ(r.num("storm.failures"), 0);
  EXPECT_EQ(r.num("storm.generation"), 2000);
  EXPECT_EQ(r.num("storm.applied"), 2000);
  EXPECT_EQ(r.num("s3.tiny.allocs"), 1000);
  for (const auto& k : hakmem::proto::kKnobs) {
    if (k.mode != hakmem::proto::KnobMode::Live) continue;
    const long long v = r.num(std::string("knob.") + k.name);
    EXPECT_GE(v, (long long)k.min) << k.name;
    EXPECT_LE(v, (long long)k.max) << k.name;
  }
}

TEST_F(ControlE2E, AQuietProcessAppliesADaemonWriteFromItsDecayThread) {
  // 16 MiB of bundle blocks freed: the cached memory starts the decay thread. Then the
  // program stops allocating, as a service between requests does; a daemon-style write is
  // applied all the same, by that thread, within a period (250 ms at the default decay
  // times). Before, it waited for some thread's next periodic check: here, never.
  ProbeRun r = run({"hold 262144 64", "release", "quietwrite whale.cache_bytes 12345678", "knobs"});
  ASSERT_RAN(r);
  EXPECT_GE(r.num("quiet_applied_ms"), 0);
  EXPECT_LE(r.num("quiet_applied_ms"), 1500);
  EXPECT_EQ(r.num("knob.whale.cache_bytes"), 12345678);
}

TEST_F(ControlE2E, AWriterThatWakesTheKnobWordIsAppliedAtOnce) {
  // Decay times of 4 s make the decay thread's period 1 s. hakmemd wakes the knob futex
  // word after a write: the thread applies it then, not at the end of its period.
  ProbeRun r = run({"hold 262144 64", "release", "quietwrite whale.cache_bytes 7654321 wake",
                    "quietwrite whale.cache_bytes 7654322 wake", "knobs"},
                   {"HAKMEM_BUNDLE_DECAY_MS=4000", "HAKMEM_WHALE_DECAY_MS=4000"});
  ASSERT_RAN(r);
  // Both writes printed their figure; the last one is what r.num reads.
  EXPECT_GE(r.num("quiet_applied_ms"), 0);
  EXPECT_LE(r.num("quiet_applied_ms"), 300);
  EXPECT_EQ(r.num("knob.whale.cache_bytes"), 7654322);
}

TEST_F(ControlE2E, KnobDecayThreadStopsTheBackgroundThreadAndStartsItAgain) {
  // The freed 16 MiB start the decay thread (2 threads). decay.thread=0, written and woken
  // as hakmemd does, is applied by that thread, which then leaves: one thread again, with
  // no allocation in between. Back at 1, the next periodic check starts it again.
  ProbeRun r = run({"hold 262144 64", "release", "tasks 2", "quietwrite decay.thread 0 wake", "tasks 1",
                    "write decay.thread 1", "hold 262144 64", "release", "tasks 2", "knobs"});
  ASSERT_RAN(r);
  EXPECT_GE(r.num("s3.tasks_ms"), 0) << "the decay thread did not start";
  EXPECT_GE(r.num("quiet_applied_ms"), 0);
  EXPECT_LE(r.num("quiet_applied_ms"), 300);
  EXPECT_GE(r.num("s5.tasks_ms"), 0) << "still " << r.num("s5.tasks") << " threads with decay.thread=0";
  EXPECT_LE(r.num("s5.tasks_ms"), 1000);
  EXPECT_GE(r.num("s9.tasks_ms"), 0) << "the thread did not come back with decay.thread=1";
  EXPECT_EQ(r.num("knob.decay.thread"), 1);
}

// ---- every knob changes the allocator's behaviour: one test each ----
// Counts, not times: misses, OS calls, cache hits and page faults of the touch phase.

TEST_F(ControlE2E, KnobTinyCapBoundsTheMagazine) {
  // 1000 blocks freed and allocated again: a magazine of 1024 keeps them all; one of 1
  // sends every allocation but the first back to a refill.
  const std::vector<std::string> steps = {"hold 48 1000", "release", "hold 48 1000"};
  ProbeRun big = run(steps, {"HAKMEM_TINY_CAP=1024"});
  ProbeRun one = run(steps, {"HAKMEM_TINY_CAP=1"});
  ASSERT_RAN(big);
  ASSERT_RAN(one);
  EXPECT_EQ(big.num("s3.tiny.misses"), 0);
  EXPECT_GE(one.num("s3.tiny.misses"), 999);
  EXPECT_GE(one.num("s1.tiny.misses"), 1000);
  // Live: the same cap written into the segment as hakmemd does.
  ProbeRun live = run({"write tiny.cap 1", "hold 48 1000", "release", "hold 48 1000"}, {"HAKMEM_TINY_CAP=1024"});
  ASSERT_RAN(live);
  EXPECT_EQ(live.num("applied"), 1);
  EXPECT_GE(live.num("s4.tiny.misses"), 999);
}

TEST_F(ControlE2E, KnobTinyPrewarmRefillsWholeMagazines) {
  // With a fixed cap of 64, a refill takes 32 blocks, or all 64 when pre-warming.
  const std::vector<std::string> steps = {"hold 48 1000"};
  ProbeRun off = run(steps, {"HAKMEM_TINY_CAP=64"});
  ProbeRun on = run(steps, {"HAKMEM_TINY_CAP=64", "HAKMEM_TINY_PREWARM=1"});
  ASSERT_RAN(off);
  ASSERT_RAN(on);
  EXPECT_GE(off.num("s1.tiny.misses"), 30);
  EXPECT_LE(on.num("s1.tiny.misses"), 17);
  EXPECT_LT(on.num("s1.tiny.misses") * 3, off.num("s1.tiny.misses") * 2);
}

TEST_F(ControlE2E, KnobPoolPrewarmPrefaultsPoolPages) {
  const std::vector<std::string> steps = {"hold 16384 100"};
  ProbeRun off = run(steps);
  ProbeRun on = run(steps, {"HAKMEM_POOL_PREWARM=1"});
  ASSERT_RAN(off);
  ASSERT_RAN(on);
  EXPECT_EQ(on.num("s1.pool.allocs"), 100);
  // 1.6 MB of new pool pages: touched for the first time by the program, or already
  // faulted in by malloc.
  EXPECT_GE(off.num("s1.touch_faults"), 200);
  EXPECT_LT(on.num("s1.touch_faults") * 10, off.num("s1.touch_faults"));
}

TEST_F(ControlE2E, KnobBundlePrewarmPrefaultsBundleMemory) {
  // Bundle chunks ask for huge pages, which the allocator's own first write faults in
  // whole; with THP off (as on many hosts) the first touches are the program's.
  no_thp_ = true;
  const std::vector<std::string> steps = {"hold 200000 40"};
  ProbeRun off = run(steps);
  ProbeRun on = run(steps, {"HAKMEM_BUNDLE_PREWARM=1"});
  ASSERT_RAN(off);
  ASSERT_RAN(on);
  EXPECT_EQ(on.num("s1.bundle.allocs"), 40);
  EXPECT_GE(off.num("s1.touch_faults"), 40 * 40);  // ~48 of each block's 49 pages
  // Pre-warming populates new bundle memory inside malloc (madvise calls) so the program
  // takes fewer first-touch faults. Today the allocator populates only the first run
  // placed in each not-yet-backed chunk half, so the saving is small (~5 %).
  EXPECT_GT(on.num("s1.bundle.madvises"), off.num("s1.bundle.madvises"));
  EXPECT_LT(on.num("s1.touch_faults"), off.num("s1.touch_faults"));
  EXPECT_GT(on.num("s1.malloc_faults"), off.num("s1.malloc_faults"));
}

TEST_F(ControlE2E, KnobBundleDecayMsZeroReturnsFreedBundleMemoryAtOnce) {
  const std::vector<std::string> steps = {"hold 200000 16", "release"};
  ProbeRun keep = run(steps, {"HAKMEM_BUNDLE_DECAY_MS=1h"});
  ProbeRun now = run(steps, {"HAKMEM_BUNDLE_DECAY_MS=0"});
  ASSERT_RAN(keep);
  ASSERT_RAN(now);
  EXPECT_EQ(keep.num("s2.bundle.madvises"), 0);
  EXPECT_GT(keep.num("s2.bundle.cached_bytes"), 0);
  EXPECT_GT(now.num("s2.bundle.madvises") + now.num("s2.bundle.os_unmaps"), 0);
  EXPECT_LT(now.num("s2.bundle.cached_bytes"), keep.num("s2.bundle.cached_bytes"));
}

TEST_F(ControlE2E, KnobWhalePrewarmPopulatesNewMappings) {
  const std::vector<std::string> steps = {"hold 8388608 2"};
  ProbeRun off = run(steps);
  ProbeRun on = run(steps, {"HAKMEM_WHALE_PREWARM=1"});
  ASSERT_RAN(off);
  ASSERT_RAN(on);
  EXPECT_GE(off.num("s1.touch_faults"), 4);  // at least one per 2 MiB even with THP
  EXPECT_EQ(on.num("s1.touch_faults"), 0);
}

TEST_F(ControlE2E, KnobWhaleCacheBytesZeroUnmapsFreedWhales) {
  // Default cache: 10 x (malloc 4 MiB, free) maps once and reuses 9 times. Written to 0
  // through the segment: every free unmaps and nothing is reused.
  ProbeRun r = run({"churn 4194304 10", "write whale.cache_bytes 0", "churn 4194304 10"},
                   {"HAKMEM_WHALE_DECAY_MS=1h"});
  ASSERT_RAN(r);
  EXPECT_EQ(r.num("s1.whale.os_maps"), 1);
  EXPECT_EQ(r.num("s1.whale.cache_hits"), 9);
  EXPECT_EQ(r.num("s1.whale.os_unmaps"), 0);
  EXPECT_EQ(r.num("applied"), 1);
  EXPECT_EQ(r.num("s3.whale.cache_hits"), 0);
  EXPECT_EQ(r.num("s3.whale.os_maps"), 10);
  EXPECT_EQ(r.num("s3.whale.os_unmaps"), 10);
  // The first touch of a fresh mapping faults; a reused one does not.
  EXPECT_GT(r.num("s3.touch_faults"), r.num("s1.touch_faults"));
}

TEST_F(ControlE2E, KnobWhaleDecayMsZeroUnmapsAtOnce) {
  const std::vector<std::string> steps = {"churn 4194304 10"};
  ProbeRun keep = run(steps, {"HAKMEM_WHALE_DECAY_MS=1h"});
  ProbeRun now = run(steps, {"HAKMEM_WHALE_DECAY_MS=0"});
  ASSERT_RAN(keep);
  ASSERT_RAN(now);
  EXPECT_EQ(keep.num("s1.whale.os_unmaps"), 0);
  EXPECT_EQ(keep.num("s1.whale.cache_hits"), 9);
  EXPECT_EQ(now.num("s1.whale.os_unmaps"), 10);
  EXPECT_EQ(now.num("s1.whale.cache_hits"), 0);
}

TEST_F(ControlE2E, KnobDecayThreadZeroKeepsOneThreadAndAllocationsStillDecay) {
  // 16 MiB of bundle blocks freed start the decay thread of a default process, which then
  // returns the memory while the program sleeps past the decay time. With decay.thread=0
  // the process keeps its one thread, the memory stays cached through the sleep, and the
  // program's next allocations return it.
  auto steps = [](int threads) {
    return std::vector<std::string>{"hold 262144 64", "release", "tasks " + std::to_string(threads), "sleep 400",
                                    "churn 64 20000"};
  };
  ProbeRun on = run(steps(2), {"HAKMEM_BUNDLE_DECAY_MS=100"});
  ProbeRun off = run(steps(1), {"HAKMEM_BUNDLE_DECAY_MS=100", "HAKMEM_DECAY_THREAD=0"});
  ASSERT_RAN(on);
  ASSERT_RAN(off);
  EXPECT_EQ(on.num("s3.tasks"), 2);
  EXPECT_EQ(off.num("s3.tasks"), 1);
  EXPECT_LT(on.num("s4.bundle.cached_bytes"), -(8ll << 20));
  EXPECT_EQ(off.num("s4.bundle.cached_bytes"), 0);
  EXPECT_EQ(off.num("s4.bundle.madvises") + off.num("s4.bundle.os_unmaps"), 0);
  EXPECT_LT(off.num("s5.bundle.cached_bytes"), -(8ll << 20));
  EXPECT_GT(off.num("s5.bundle.madvises") + off.num("s5.bundle.os_unmaps"), 0);
}

TEST_F(ControlE2E, KnobThpEnableAsksForHugePagesOnNewMappings) {
  // A whale, bundle runs and tiny blocks, each in memory mapped after start. By default
  // none of their mappings carries MADV_HUGEPAGE; with thp.enable=1 all of them do, and the
  // whale's and the bundle chunk's hint are counted as madvise calls.
  const std::vector<std::string> steps = {"hold 8388608 1", "hold 300000 8", "hold 48 1000", "thp"};
  ProbeRun off = run(steps);
  ProbeRun on = run(steps, {"HAKMEM_THP=1"});
  ASSERT_RAN(off);
  ASSERT_RAN(on);
  EXPECT_EQ(off.num("s4.held"), 1009);
  EXPECT_EQ(off.num("s4.thp_held"), 0);
  EXPECT_EQ(off.num("s1.whale.madvises"), 0);
  EXPECT_EQ(off.num("s2.bundle.madvises"), 0);
  EXPECT_EQ(on.num("s4.thp_held"), 1009);
  EXPECT_EQ(on.num("s1.whale.madvises"), 1);
  EXPECT_EQ(on.num("s2.bundle.madvises"), 1);
  // Whether the kernel backs a hinted range with huge pages is its policy: never with
  // transparent_hugepage/enabled = [never], else at the first touch (with compaction when
  // defrag allows). The 8 MiB whale is touched on every page.
  std::ifstream sys("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string mode((std::istreambuf_iterator<char>(sys)), std::istreambuf_iterator<char>());
  if (mode.find("[never]") != std::string::npos) EXPECT_EQ(on.num("s4.anon_huge_kib"), 0);
  else EXPECT_GE(on.num("s4.anon_huge_kib"), 2048) << "transparent_hugepage/enabled: " << mode;
}

TEST_F(ControlE2E, KnobStatsEnableStopsAndRestartsPublishing) {
  ProbeRun r = run({"hold 48 100", "write stats.enable 1", "hold 48 100", "write stats.enable 0", "hold 48 100"},
                   {"HAKMEM_STATS_ENABLE=0"});
  ASSERT_RAN(r);
  EXPECT_EQ(r.num("s1.tiny.allocs"), 0);
  EXPECT_EQ(r.num("s3.tiny.allocs"), 100);
  EXPECT_EQ(r.num("s5.tiny.allocs"), 0);
}

TEST_F(ControlE2E, KnobAbortOnErrorTurnsAReportIntoAnAbort) {
  ProbeRun report = run({"badfree", "badfree"});
  ASSERT_RAN(report);
  EXPECT_EQ(report.num("survived"), 1);
  EXPECT_NE(report.err.find("hakmem: free(): invalid pointer 0x"), std::string::npos) << report.err;
  EXPECT_EQ(std::count(report.err.begin(), report.err.end(), '\n'), 2) << report.err;

  ProbeRun die = run({"badfree"}, {"HAKMEM_ABORT_ON_ERROR=1"});
  ASSERT_TRUE(WIFSIGNALED(die.status)) << die.status << "\n" << die.out << die.err;
  EXPECT_EQ(WTERMSIG(die.status), SIGABRT);
  EXPECT_NE(die.err.find("aborting: debug.abort_on_error=1"), std::string::npos) << die.err;
  EXPECT_FALSE(die.has("survived"));
  // Killed by a signal: no destructor ran, the segment stays for hakmemd to reap.
  EXPECT_EQ(files().size(), 1u);
}

// The knob table grows; this keeps "a test proves each knob" true: every knob ID needs a
// test here named Knob<ID>... (site.rules is the site-rules issue's to prove).
TEST(ControlKnobCoverage, EveryKnobHasItsOwnBehaviourTest) {
  const char* const ids[] = {
#define HAKMEM_KNOB(ID, NAME, TYPE, DEF, MIN, MAX, MODE, ENV, HELP) #ID,
#include "hakmem/proto/knobs.def"
#undef HAKMEM_KNOB
  };
  const ::testing::UnitTest* ut = ::testing::UnitTest::GetInstance();
  for (const char* id : ids) {
    if (std::string(id) == "SiteRules") continue;
    const std::string prefix = std::string("Knob") + id;
    bool found = false;
    for (int i = 0; i < ut->total_test_suite_count() && !found; i++) {
      const ::testing::TestSuite* suite = ut->GetTestSuite(i);
      for (int j = 0; j < suite->total_test_count() && !found; j++) {
        const std::string name = suite->GetTestInfo(j)->name();
        found = name.rfind(prefix, 0) == 0;
      }
    }
    EXPECT_TRUE(found) << "no ControlE2E test named " << prefix << "...";
  }
}

}  // namespace
