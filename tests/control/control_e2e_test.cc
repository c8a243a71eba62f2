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
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

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
    rmdir(dir_.c_str());
  }
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
  EXPECT_GT(r.num("start_time"), 0);
  EXPECT_EQ(r.str("exe"), PROBE_PATH);
  EXPECT_EQ(r.str("cmdline"), std::string(PROBE_PATH) + " header knobs");
  EXPECT_EQ(r.str("lib_version"), HAKMEM_VERSION_EXPECTED);
  EXPECT_GT(r.num("tiny_class_count"), 0);
  EXPECT_GE(r.num("threads_live"), 1);
  EXPECT_EQ(r.num("env_mask"), 0);
  EXPECT_TRUE(files().empty()) << "segment left behind after exit: " << files()[0];
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

TEST_F(ControlE2E, ShmOffCreatesNoSegment) {
  ProbeRun r = run({"knobs", "churn 100 100"}, {"HAKMEM_SHM=0"});
  ASSERT_RAN(r);
  EXPECT_EQ(r.num("segment"), 0);
  EXPECT_EQ(r.num("knob.shm.enable"), 0);
  EXPECT_TRUE(files().empty());
}

TEST_F(ControlE2E, StatsPrintWritesTheSummaryAtExit) {
  ProbeRun r = run({"churn 64 100", "churn 3000000 2"}, {"HAKMEM_STATS=1"});
  ASSERT_RAN(r);
  EXPECT_NE(r.err.find("hakmem "), std::string::npos) << r.err;
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

}  // namespace
