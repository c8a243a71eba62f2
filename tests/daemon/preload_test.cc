// The real thing end to end: hakmemd on a private socket and folder, a real program running
// with libhakmem preloaded (HAKMEM_SHM_DIR pointing at that folder). Proves discovery of a
// preloaded process, stats that move with its allocations, removal when it dies, and a live
// `set` that changes what the allocator does.
#include <gtest/gtest.h>

#include "daemon_harness.h"

using namespace hakmem_test;

namespace {

// The preloaded target, driven through pipes.
class Target {
 public:
  explicit Target(const std::string& shm_dir, std::vector<std::string> env_extra = {}) {
    int in[2], out[2];
    if (pipe(in) != 0 || pipe(out) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(in[0], 0);
      dup2(out[1], 1);
      ::close(in[1]);
      ::close(out[0]);
      setenv("LD_PRELOAD", HAKMEM_LIB, 1);
      setenv("HAKMEM_SHM_DIR", shm_dir.c_str(), 1);
      for (const auto& kv : env_extra) putenv(strdup(kv.c_str()));
      execl(TARGET_EXE, TARGET_EXE, static_cast<char*>(nullptr));
      _exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    to_ = fdopen(in[1], "w");
    from_ = fdopen(out[0], "r");
    std::string first = read_line();
    ready_ = first.rfind("ready ", 0) == 0;
  }
  ~Target() { kill_now(); }
  bool ready() const { return ready_; }
  pid_t pid() const { return pid_; }

  // Sends a command and waits for "ok".
  bool run(const std::string& cmd) {
    fprintf(to_, "%s\n", cmd.c_str());
    fflush(to_);
    return read_line() == "ok";
  }
  void send(const std::string& cmd) {
    fprintf(to_, "%s\n", cmd.c_str());
    fflush(to_);
  }
  std::string read_line() {
    struct pollfd p{fileno(from_), POLLIN, 0};
    if (poll(&p, 1, 30000) <= 0) return "";
    char buf[256];
    if (!fgets(buf, sizeof buf, from_)) return "";
    std::string s(buf);
    while (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
  }
  void kill_now() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
    if (to_) fclose(to_);
    if (from_) fclose(from_);
    to_ = from_ = nullptr;
  }

 private:
  pid_t pid_ = -1;
  FILE* to_ = nullptr;
  FILE* from_ = nullptr;
  bool ready_ = false;
};

json stats(DaemonProc& d, pid_t pid) {
  json r = Client(d.socket()).call({{"cmd", "stats"}, {"pid", pid}});
  if (!r.value("ok", false)) return json{{"error", r}};
  return r["result"]["processes"][0];
}

uint64_t tier(const json& st, const char* t, const char* f) { return st["tiers"][t][f].get<uint64_t>(); }

// The start of most tests here: the daemon is up, the target runs and the daemon lists it.
::testing::AssertionResult listed(DaemonProc& d, Target& t) {
  if (!d.ready()) return ::testing::AssertionFailure() << "daemon not ready: " << d.log();
  if (!t.ready()) return ::testing::AssertionFailure() << "target not ready";
  if (!eventually([&] { return d.lists(t.pid()); }))
    return ::testing::AssertionFailure() << "target " << t.pid() << " not listed: " << d.log();
  return ::testing::AssertionSuccess();
}

}  // namespace

TEST(Preload, APreloadedProcessIsDiscoveredAndItsStatsMoveWithItsAllocations) {
  DaemonProc d;
  Target t(d.shm());
  ASSERT_TRUE(listed(d, t));

  json s0 = stats(d, t.pid());
  ASSERT_TRUE(s0.contains("tiers")) << s0.dump();
  EXPECT_EQ(s0["exe"], TARGET_EXE);
  ASSERT_TRUE(t.run("hold 100 65536"));  // 6.25 MiB of 64 KiB blocks (bundle tier)
  json s1 = stats(d, t.pid());
  EXPECT_GE(tier(s1, "bundle", "allocs") - tier(s0, "bundle", "allocs"), 100u);
  EXPECT_GE(tier(s1, "bundle", "live_bytes"), tier(s0, "bundle", "live_bytes") + 100 * 65536);
  EXPECT_GE(tier(s1, "bundle", "mapped_bytes"), 100u * 65536);
  EXPECT_GT(s1["page_faults"].get<uint64_t>(), s0["page_faults"].get<uint64_t>());  // it touched 6 MiB
  ASSERT_TRUE(t.run("hold 1000 100"));  // tiny blocks
  json s2 = stats(d, t.pid());
  EXPECT_GE(tier(s2, "tiny", "allocs") - tier(s1, "tiny", "allocs"), 1000u);
  ASSERT_TRUE(t.run("release"));
  json s3 = stats(d, t.pid());
  EXPECT_GE(tier(s3, "bundle", "frees") - tier(s2, "bundle", "frees"), 100u);
  EXPECT_LE(tier(s3, "bundle", "live_bytes") + 100 * 65536, tier(s2, "bundle", "live_bytes"));

  // Killed hard, it cannot unlink its segment: the daemon must.
  char path[512];
  hakmem::proto::segment_path(d.shm().c_str(), getuid(), t.pid(), path, sizeof path);
  ASSERT_TRUE(file_exists(path));
  const pid_t pid = t.pid();
  t.kill_now();
  EXPECT_TRUE(eventually([&] { return !file_exists(path); })) << d.log();
  EXPECT_FALSE(d.lists(pid));
}

namespace {

std::string segment_of(DaemonProc& d, pid_t pid) {
  char path[512];
  hakmem::proto::segment_path(d.shm().c_str(), getuid(), pid, path, sizeof path);
  return path;
}

// When the segment file at `path` was created, from its header (0 when there is none).
// Identifies one process image's segment; an inode number does not (a freed one is reused).
uint64_t created_ns_of(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  void* p = mmap(nullptr, sizeof(hakmem::proto::SegmentHeader), PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) return 0;
  const auto* h = static_cast<const hakmem::proto::SegmentHeader*>(p);
  const uint64_t ns = h->ready.load(std::memory_order_acquire) ? h->created_unix_ns : 0;
  munmap(p, sizeof(hakmem::proto::SegmentHeader));
  return ns;
}

// True while `pid` is still a running process (not exited, not a zombie we could reap).
bool still_running(pid_t pid) { return waitpid(pid, nullptr, WNOHANG) == 0 && kill(pid, 0) == 0; }

// The daemon keeps listing every pid, and their files stay, for `seconds` (past the grace
// hakmemd gives a segment that seems unmapped, over many scans).
::testing::AssertionResult stays_listed(DaemonProc& d, std::vector<pid_t> pids, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    for (pid_t p : pids) {
      if (!d.lists(p)) return ::testing::AssertionFailure() << "process " << p << " dropped\n" << d.log();
      if (!file_exists(segment_of(d, p))) return ::testing::AssertionFailure() << "segment of " << p << " removed";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return ::testing::AssertionSuccess();
}

}  // namespace

TEST(Preload, AProcessThatExecsAProgramWithoutHakmemIsDroppedAndItsSegmentRemoved) {
  DaemonProc d;
  Target t(d.shm());
  ASSERT_TRUE(listed(d, t));
  const std::string path = segment_of(d, t.pid());
  ASSERT_TRUE(file_exists(path));
  const uint64_t started = start_ticks_of(t.pid());

  t.send("exec sleep 600");  // LD_PRELOAD removed: sleep runs on glibc's malloc
  ASSERT_TRUE(eventually([&] { return comm_of(t.pid()) == "sleep"; })) << "the target did not exec";
  EXPECT_TRUE(eventually([&] { return !d.lists(t.pid()) && !file_exists(path); }, 30)) << d.log();
  // The same process all along, still running: only its program changed.
  EXPECT_TRUE(still_running(t.pid()));
  EXPECT_EQ(start_ticks_of(t.pid()), started);
  EXPECT_EQ(comm_of(t.pid()), "sleep");
  EXPECT_NE(d.log().find("removed stale segment " + path + " (process " + std::to_string(t.pid()) +
                         " exec'd a program without hakmem)"),
            std::string::npos)
      << d.log();
}

TEST(Preload, AProcessThatExecsAProgramWithHakmemStaysListedWithItsNewSegment) {
  DaemonProc d;
  Target t(d.shm());
  ASSERT_TRUE(listed(d, t));
  const std::string path = segment_of(d, t.pid());
  const uint64_t first_image = created_ns_of(path);
  ASSERT_NE(first_image, 0u);

  t.send("reexec");  // LD_PRELOAD kept: the new image replaces the segment itself
  ASSERT_EQ(t.read_line(), "ready " + std::to_string(t.pid()));
  ASSERT_TRUE(eventually([&] {
    const uint64_t now = created_ns_of(path);
    return now != 0 && now != first_image && d.lists(t.pid());
  })) << d.log();
  EXPECT_TRUE(stays_listed(d, {t.pid()}, 3));
  // The daemon reads the new image's segment: its allocations show.
  ASSERT_TRUE(t.run("hold 20 65536"));
  json st = stats(d, t.pid());
  ASSERT_TRUE(st.contains("tiers")) << st.dump();
  EXPECT_GE(tier(st, "bundle", "allocs"), 20u);
  EXPECT_EQ(d.log().find("exec'd a program without hakmem"), std::string::npos) << d.log();
}

TEST(Preload, AForkChildWithItsOwnSegmentAndItsParentBothStayListed) {
  DaemonProc d;
  Target t(d.shm());
  ASSERT_TRUE(listed(d, t));
  t.send("fork");
  const std::string reply = t.read_line();
  ASSERT_EQ(reply.rfind("ok ", 0), 0u) << reply;
  const pid_t child = static_cast<pid_t>(std::stol(reply.substr(3)));
  struct Reap {
    pid_t pid;
    ~Reap() { kill(pid, SIGKILL); }  // the target's child: the target reaps it (or init does)
  } reap{child};
  ASSERT_TRUE(eventually([&] { return d.lists(child); }, 30)) << d.log();
  // The child inherited the parent's mapping and swapped it for private memory; the parent
  // still maps its own file and the child maps its new one: neither is left over.
  EXPECT_TRUE(stays_listed(d, {t.pid(), child}, 3));
  EXPECT_EQ(d.log().find("exec'd a program without hakmem"), std::string::npos) << d.log();
}

TEST(Preload, ALiveSetChangesTheTargetsBehaviour) {
  DaemonProc d;
  // No time-based release during the test: only whale.cache_bytes decides what is unmapped.
  Target t(d.shm(), {"HAKMEM_WHALE_DECAY_MS=3600000"});
  ASSERT_TRUE(listed(d, t));

  ASSERT_TRUE(t.run("churn 10 4194304"));
  const uint64_t u0 = tier(stats(d, t.pid()), "whale", "os_unmaps");
  ASSERT_TRUE(t.run("churn 50 4194304"));
  const uint64_t u1 = tier(stats(d, t.pid()), "whale", "os_unmaps");
  EXPECT_LE(u1 - u0, 5u) << "with the cache on, freed 4 MiB blocks are reused, not unmapped";

  // Set the cache to zero and wait until the target applies it (its next allocations do).
  Client c(d.socket());
  ASSERT_TRUE(c.send_raw(json({{"id", 1}, {"cmd", "set"}, {"pid", t.pid()}, {"knobs", {{"whale.cache_bytes", 0}}},
                               {"wait_ms", 20000}}).dump() + "\n"));
  ASSERT_TRUE(eventually([&] {
    json g = Client(d.socket()).call({{"cmd", "get"}, {"pid", t.pid()}, {"keys", {"whale.cache_bytes"}}});
    return g["result"]["processes"][0]["knobs"]["whale.cache_bytes"]["value"] == 0;
  }));
  ASSERT_TRUE(t.run("tick"));
  auto line = c.read_line(30000);
  ASSERT_TRUE(line);
  json r = json::parse(*line);
  ASSERT_TRUE(r["ok"]) << r.dump();
  EXPECT_EQ(r["result"]["changes"][0]["old"], 1ull << 30);
  EXPECT_EQ(r["result"]["changes"][0]["new"], 0);
  EXPECT_EQ(r["result"]["processes"][0]["applied"], true) << r.dump();

  ASSERT_TRUE(t.run("churn 50 4194304"));
  const uint64_t u2 = tier(stats(d, t.pid()), "whale", "os_unmaps");
  EXPECT_GE(u2 - u1, 45u) << "with whale.cache_bytes=0 every freed 4 MiB block is unmapped";
  EXPECT_NE(d.log().find("whale.cache_bytes 1G -> 0"), std::string::npos) << d.log();
}

TEST(Preload, ConfigDefaultsReachAPreloadedProcess) {
  TempDir cfgdir;
  const std::string cfg = cfgdir.path() + "/hakmemd.json";
  write_file(cfg, R"({"defaults":[{"exe":"daemon_target","knobs":{"tiny.cap":48}}]})");
  DaemonProc d({"--config", cfg});
  Target t(d.shm());
  ASSERT_TRUE(listed(d, t));
  ASSERT_TRUE(eventually([&] {
    t.run("tick");
    json g = Client(d.socket()).call({{"cmd", "get"}, {"pid", t.pid()}, {"keys", {"tiny.cap"}}});
    const json& p = g["result"]["processes"][0];
    return p["knobs"]["tiny.cap"]["value"] == 48 && p["applied_generation"] == p["generation"];
  })) << d.log();
}
