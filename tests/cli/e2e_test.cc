// End to end: the real hakctl against a real hakmemd (private socket and segment folder)
// and real processes preloaded with libhakmem. Asserts on what hakctl prints (tables and
// JSON), on its exit code for every kind of error, and that `set` reaches the target: in
// `hakctl get`, in the target's shared-memory knob block, and in the value the target's own
// libhakmem holds (hakmem_knob_get inside the process).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <memory>
#include <regex>

#include "fake_server.h"
#include "hakmem/proto/segment.h"
#include "hakctl_runner.h"
#include "proc.h"

using hakctl_test::Child;
using hakctl_test::RunResult;
using hakctl_test::can_connect;
using hakctl_test::contains;
using hakctl_test::pause_ms;
using hakctl_test::TempDir;
using json = nlohmann::json;
namespace proto = hakmem::proto;

namespace {

// Paths of the artifacts under test, from the command line (see main below).
std::string g_hakctl, g_hakmemd, g_lib, g_target;


// A target process with libhakmem preloaded; talks over its stdin/stdout.
struct Target {
  Child child;
  int pid = 0;

  std::string read_line() { return child.read_line(); }
  // The knob value as the target's own libhakmem holds it.
  std::string knob(const std::string& name) {
    const std::string q = "knob " + name + "\n";
    if (write(child.in_fd, q.data(), q.size()) != static_cast<ssize_t>(q.size())) return "write failed";
    return read_line();
  }
};

class E2E : public ::testing::Test {
 protected:
  void SetUp() override {
    hakctl_ = g_hakctl;
    hakmemd_ = g_hakmemd;
    lib_ = g_lib;
    target_ = g_target;
    ASSERT_FALSE(hakctl_.empty() || hakmemd_.empty() || lib_.empty() || target_.empty())
        << "run with --hakctl= --hakmemd= --hakmem-lib= --target= (ctest passes them)";
    sock_ = dir_.path + "/hakmemd.sock";
    runner_.init(hakctl_, sock_);
    start_daemon();
  }

  void TearDown() override {
    for (auto& t : targets_) {
      if (t->child.in_fd >= 0) { close(t->child.in_fd); t->child.in_fd = -1; }  // target exits on EOF
      t->child.wait();
    }
    if (daemon_.pid > 0) {
      const int rc = daemon_.stop(SIGTERM);
      EXPECT_EQ(rc, 0) << "hakmemd did not stop cleanly; its log:\n" << log();
    }
  }

  void start_daemon() {
    hakctl_test::spawn(&daemon_, {hakmemd_, "--socket", sock_, "--shm-dir", dir_.path, "--scan-interval-ms", "100",
                                  "--log-level", "info"},
                       {}, false, false, dir_.path + "/hakmemd.log");
    for (int i = 0; i < 500 && !can_connect(sock_); i++) pause_ms(20);  // readiness, not a timing check
    ASSERT_TRUE(can_connect(sock_)) << "hakmemd never listened on " << sock_ << "; its log:\n" << log();
  }

  std::string log() {
    std::string out;
    if (FILE* f = fopen((dir_.path + "/hakmemd.log").c_str(), "r")) {
      char buf[4096];
      size_t n;
      while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
      fclose(f);
    }
    return out;
  }

  RunResult hakctl(std::vector<std::string> args, const hakctl_test::Env& env = {}) {
    return runner_.run(args, env);
  }
  json hakctl_json(std::vector<std::string> args) { return runner_.run_json(std::move(args)); }
  bool listed(int pid) { return runner_.lists(pid); }

  // Starts a preloaded target and waits until hakmemd lists it.
  Target* start_target(const hakctl_test::Env& extra_env = {}) {
    auto t = std::make_unique<Target>();
    hakctl_test::Env env{{"LD_PRELOAD", lib_}, {"HAKMEM_SHM_DIR", dir_.path}};
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    hakctl_test::spawn(&t->child, {target_}, env, true, true);
    const std::string ready = t->read_line();
    EXPECT_TRUE(contains(ready, " hakmem ")) << "target did not start with libhakmem: '" << ready << "'";
    if (contains(ready, "other-malloc")) {
      ADD_FAILURE() << "the target's malloc is not libhakmem's: preloading did not interpose it";
      targets_.push_back(std::move(t));
      return nullptr;
    }
    t->pid = t->child.pid;
    for (int i = 0; i < 500 && !listed(t->pid); i++) pause_ms(20);
    EXPECT_TRUE(listed(t->pid)) << "hakmemd never listed pid " << t->pid << "; its log:\n" << log();
    targets_.push_back(std::move(t));
    return targets_.back().get();
  }

  // The target's knob block, read straight from its segment file.
  uint64_t segment_knob(int pid, proto::Knob k, uint64_t* generation = nullptr, uint64_t* applied = nullptr) {
    char path[512];
    proto::segment_path(dir_.path.c_str(), getuid(), pid, path, sizeof path);
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0) << "no segment " << path;
    if (fd < 0) return UINT64_MAX;
    struct stat st;
    fstat(fd, &st);
    void* base = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    EXPECT_NE(base, MAP_FAILED);
    if (base == MAP_FAILED) return UINT64_MAX;
    EXPECT_EQ(proto::validate_segment(base, static_cast<size_t>(st.st_size)), proto::SegmentCheck::Ok);
    const auto* seg = static_cast<const proto::Segment*>(base);
    const uint64_t v = seg->knobs.value[static_cast<size_t>(k)].load();
    if (generation) *generation = seg->knobs.generation.load();
    if (applied) *applied = seg->knobs.applied_generation.load();
    munmap(base, static_cast<size_t>(st.st_size));
    return v;
  }

  TempDir dir_;
  std::string hakctl_, hakmemd_, lib_, target_, sock_;
  hakctl_test::HakctlRunner runner_;
  Child daemon_;
  std::vector<std::unique_ptr<Target>> targets_;
};

}  // namespace

TEST_F(E2E, PsListsThePreloadedProcess) {
  Target* t = start_target();
  ASSERT_NE(t, nullptr);
  RunResult r = hakctl({"ps"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("^ *PID +UPTIME +THREADS +LIVE +MAPPED +ALLOCS +ALLOCS/S +EXE\n")))
      << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("\n *" + std::to_string(t->pid) + " .*" + target_ + "\n"))) << r.out;
  const json j = hakctl_json({"ps"});
  ASSERT_EQ(j["processes"].size(), 1u) << j.dump();
  EXPECT_EQ(j["processes"][0]["pid"], t->pid);
  EXPECT_EQ(j["processes"][0]["exe"], target_);
  EXPECT_GE(j["processes"][0].value("threads", 0), 1);
}

TEST_F(E2E, StatsTableAndJsonMoveWithTheTarget) {
  Target* t = start_target();
  ASSERT_NE(t, nullptr);
  const std::string pid = std::to_string(t->pid);
  RunResult r = hakctl({"stats", "--pid", pid});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "pid " + pid + "  " + target_ + "  up ")) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("\nTIER +ALLOCS +FREES +HIT% +MISSES +REMOTE +LIVE +CACHED +MAPPED")))
      << r.out;
  for (const char* tier : {"tiny", "pool", "bundle", "whale", "total"})
    EXPECT_TRUE(std::regex_search(r.out, std::regex(std::string("\n") + tier + " +[0-9.]+[kMG]? "))) << tier << "\n" << r.out;

  // The target keeps allocating tiny blocks: its figures grow between two reads.
  const json a = hakctl_json({"stats", "--pid", pid});
  ASSERT_EQ(a["processes"].size(), 1u);
  const uint64_t allocs1 = a["processes"][0]["tiers"]["tiny"].value("allocs", uint64_t{0});
  EXPECT_GT(allocs1, 0u) << a.dump();
  uint64_t allocs2 = allocs1;
  for (int i = 0; i < 200 && allocs2 == allocs1; i++) {
    pause_ms(20);
    allocs2 = hakctl_json({"stats", "--pid", pid})["processes"][0]["tiers"]["tiny"].value("allocs", uint64_t{0});
  }
  EXPECT_GT(allocs2, allocs1);

  // --tier narrows the table and the JSON alike.
  r = hakctl({"stats", "--pid", pid, "--tier", "tiny"});
  EXPECT_TRUE(contains(r.out, "\ntiny ")) << r.out;
  EXPECT_FALSE(contains(r.out, "\npool ")) << r.out;
  const json only = hakctl_json({"stats", "--pid", pid, "--tier", "tiny"});
  EXPECT_EQ(only["processes"][0]["tiers"].size(), 1u);
}

TEST_F(E2E, SetReachesGetTheKnobBlockAndTheProcess) {
  Target* t = start_target();
  ASSERT_NE(t, nullptr);
  const std::string pid = std::to_string(t->pid);
  EXPECT_EQ(t->knob("tiny.cap"), "knob tiny.cap 0");

  RunResult r = hakctl({"set", "tiny.cap=64", "--pid", pid, "--wait", "10000"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "pid " + pid + " tiny.cap: 0 -> 64\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "pid " + pid + ": applied in ")) << r.out;  // the target allocates, so it applies

  r = hakctl({"get", "tiny.cap", "--pid", pid});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("\n *" + pid + " +tiny\\.cap +64 +0 +set\n"))) << r.out;
  const json g = hakctl_json({"get", "tiny.cap", "--pid", pid});
  EXPECT_EQ(g["processes"][0]["knobs"]["tiny.cap"]["value"], 64) << g.dump();
  EXPECT_EQ(g["processes"][0]["knobs"]["tiny.cap"]["source"], "set") << g.dump();

  uint64_t gen = 0, applied = 0;
  EXPECT_EQ(segment_knob(t->pid, proto::Knob::TinyCap, &gen, &applied), 64u);
  EXPECT_GE(applied, gen);
  EXPECT_EQ(t->knob("tiny.cap"), "knob tiny.cap 64");  // the library inside the target holds it

  // Sizes in their syntax, and the stats JSON carries the new knobs too.
  r = hakctl({"set", "whale.cache_bytes=512M", "--pid", pid, "--wait", "10000"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "whale.cache_bytes: 1G -> 512M")) << r.out;
  EXPECT_EQ(t->knob("whale.cache_bytes"), "knob whale.cache_bytes 536870912");
  const json s = hakctl_json({"stats", "--pid", pid});
  EXPECT_EQ(s["processes"][0]["knobs"]["tiny.cap"], 64) << s.dump();
}

// The knob changes what the process does: its tiny magazines hold tiny.cap blocks per size
// class. The target frees 8 blocks of each of 8 classes per round, so with a cap of 1 most
// of its allocations miss the magazine, and with 64 nearly all hit. Read off hakctl's own
// watch output (second frame: the hit rate over one interval, after the change applied).
TEST_F(E2E, TinyCapChangesTheTargetsHitRate) {
  Target* t = start_target();
  ASSERT_NE(t, nullptr);
  const std::string pid = std::to_string(t->pid);
  auto interval_hit_rate = [&]() {
    RunResult r = hakctl({"stats", "--watch", "0.2", "--count", "2", "--pid", pid, "--tier", "tiny"});
    EXPECT_EQ(r.status, 0) << r.err;
    const size_t second = r.out.find("hakctl stats --watch", 1);
    std::smatch m;
    const std::string tail = second == std::string::npos ? std::string() : r.out.substr(second);
    if (!std::regex_search(tail, m, std::regex("\ntiny +\\S+ +\\S+ +\\S+ +\\S+ +([0-9.]+)%"))) {
      ADD_FAILURE() << "no hit rate in:\n" << r.out;
      return -1.0;
    }
    return std::stod(m[1]);
  };
  RunResult r = hakctl({"set", "tiny.cap=1", "--pid", pid, "--wait", "10000"});
  ASSERT_EQ(r.status, 0) << r.err;
  ASSERT_TRUE(contains(r.out, ": applied in ")) << r.out;
  const double low = interval_hit_rate();
  r = hakctl({"set", "tiny.cap=64", "--pid", pid, "--wait", "10000"});
  ASSERT_EQ(r.status, 0) << r.err;
  ASSERT_TRUE(contains(r.out, ": applied in ")) << r.out;
  const double high = interval_hit_rate();
  EXPECT_LT(low, 50.0);
  EXPECT_GT(high, 90.0);
}

TEST_F(E2E, EnvironmentShowsAsSourceEnv) {
  Target* t = start_target({{"HAKMEM_TINY_CAP", "32"}});
  ASSERT_NE(t, nullptr);
  RunResult r = hakctl({"get", "--pid", std::to_string(t->pid)});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("tiny\\.cap +32 +0 +env\n"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("whale\\.cache_bytes +1G +1G +default\n"))) << r.out;
}

TEST_F(E2E, SetAllChangesEveryProcess) {
  Target* a = start_target();
  ASSERT_NE(a, nullptr);
  Target* b = start_target();
  RunResult r = hakctl({"set", "tiny.prewarm=on", "--all", "--wait", "10000"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "pid " + std::to_string(a->pid) + " tiny.prewarm: 0 -> 1\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "pid " + std::to_string(b->pid) + " tiny.prewarm: 0 -> 1\n")) << r.out;
  EXPECT_EQ(a->knob("tiny.prewarm"), "knob tiny.prewarm 1");
  EXPECT_EQ(b->knob("tiny.prewarm"), "knob tiny.prewarm 1");
}

TEST_F(E2E, EveryErrorHasItsExitCode) {
  // 1: the daemon refused (validation happens before any target is looked at).
  RunResult r = hakctl({"set", "tiny.cpa=1", "--all"});
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.err, "hakctl: unknown_knob: ")) << r.err;
  EXPECT_TRUE(contains(r.err, "tiny.cap")) << r.err;  // names the closest knob
  r = hakctl({"set", "tiny.cap=5000", "--all"});
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.err, "hakctl: out_of_range: ")) << r.err;
  EXPECT_TRUE(contains(r.err, "0..1024")) << r.err;  // names the range
  r = hakctl({"set", "tiny.prewarm=maybe", "--all"});
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.err, "hakctl: invalid_value: ")) << r.err;
  r = hakctl({"set", "stats.print=1", "--all"});
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.err, "hakctl: restart_only: ")) << r.err;
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"stats", "--pid", "999999"}, {"get", "--pid", "999999"}, {"set", "tiny.cap=1", "--pid", "999999"}}) {
    r = hakctl(args);
    EXPECT_EQ(r.status, 1) << args[0];
    EXPECT_TRUE(contains(r.err, "hakctl: no_such_process: ")) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
  // 2: usage, before anything is sent.
  r = hakctl({"set", "tiny.cap", "64", "--pid", "1"});
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(contains(r.err, "hint: for example: hakctl set tiny.cap=64 --pid 1234")) << r.err;
  EXPECT_EQ(hakctl({"stats", "--pid", "x"}).status, 2);
  EXPECT_EQ(hakctl({"stast"}).status, 2);
  // 3: no daemon (stopped cleanly: its socket is gone).
  ASSERT_EQ(daemon_.stop(SIGTERM), 0) << log();
  r = hakctl({"ps"});
  EXPECT_EQ(r.status, 3);
  EXPECT_TRUE(contains(r.err, "hakmemd is not running: no socket at " + sock_ +
                                  "; start it with `hakmemd` or `systemctl start hakmemd`"))
      << r.err;
}

TEST_F(E2E, NothingIsHalfApplied) {
  Target* t = start_target();
  ASSERT_NE(t, nullptr);
  const std::string pid = std::to_string(t->pid);
  RunResult r = hakctl({"set", "tiny.cap=16", "tiny.cpa=1", "--pid", pid});
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.err, "unknown_knob")) << r.err;
  r = hakctl({"set", "tiny.cap=16", "whale.decay_ms=2h", "--pid", pid});
  EXPECT_EQ(r.status, 1);
  r = hakctl({"get", "tiny.cpa", "--pid", pid});
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.err, "unknown_knob")) << r.err;
  // The good half of the refused requests was not written anywhere.
  EXPECT_EQ(segment_knob(t->pid, proto::Knob::TinyCap), 0u);
  EXPECT_EQ(t->knob("tiny.cap"), "knob tiny.cap 0");
  r = hakctl({"get", "tiny.cap", "--pid", pid});
  EXPECT_TRUE(std::regex_search(r.out, std::regex("tiny\\.cap +0 +0 +default\n"))) << r.out;
}

// (Sets that assert "applied in" pass --wait 10000: an upper bound for a loaded machine; the
// reply comes as soon as the target applies, so nothing here measures time.)

// Another uid cannot reach root's daemon (socket folder 0700, socket 0600): exit 3 with a
// message that says so, not "not running".
TEST_F(E2E, OtherUserIsToldPermissionDenied) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run hakctl as nobody";
  const int nobody = 65534;
  RunResult r = hakctl_test::run({hakctl_, "--socket", sock_, "ps"}, {}, {}, nobody);
  if (r.status == 127) GTEST_SKIP() << "nobody cannot execute " << hakctl_;
  EXPECT_EQ(r.status, 3) << r.err;
  EXPECT_TRUE(contains(r.err, "cannot reach hakmemd: permission denied on " + sock_)) << r.err;
}

TEST_F(E2E, WatchShowsRatesOfTheTarget) {
  Target* t = start_target();
  ASSERT_NE(t, nullptr);
  RunResult r = hakctl({"stats", "--watch", "0.3", "--count", "2", "--pid", std::to_string(t->pid), "--tier", "tiny"});
  ASSERT_EQ(r.status, 0) << r.err;
  const size_t second = r.out.find("hakctl stats --watch", 1);
  ASSERT_NE(second, std::string::npos) << r.out;
  // The target allocates all the time: the second frame shows a non-zero tiny rate.
  EXPECT_TRUE(std::regex_search(r.out.substr(second), std::regex("\ntiny +[0-9.]+[kMG]?/s"))) << r.out;
  EXPECT_FALSE(std::regex_search(r.out.substr(second), std::regex("\ntiny +0/s"))) << r.out;
}

TEST_F(E2E, VersionAndEnvironmentSocket) {
  RunResult r = hakctl_test::run({hakctl_, "version"}, {{"HAKMEM_SOCKET", sock_}});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "hakctl " HAKMEM_VERSION " (protocol 1)\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "hakmemd " HAKMEM_VERSION " (protocol 1, pid " + std::to_string(daemon_.pid) + ") at " +
                                  sock_))
      << r.out;
  const json j = hakctl_json({"version"});
  EXPECT_EQ(j["daemon"]["protocol"], 1);
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    auto take = [&](const char* flag, std::string* out) {
      const std::string f = std::string(flag) + "=";
      if (a.compare(0, f.size(), f) == 0) *out = a.substr(f.size());
    };
    take("--hakctl", &g_hakctl);
    take("--hakmemd", &g_hakmemd);
    take("--hakmem-lib", &g_lib);
    take("--target", &g_target);
  }
  return RUN_ALL_TESTS();
}
