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

}  // namespace

TEST(Preload, APreloadedProcessIsDiscoveredAndItsStatsMoveWithItsAllocations) {
  DaemonProc d;
  ASSERT_TRUE(d.ready()) << d.log();
  Target t(d.shm());
  ASSERT_TRUE(t.ready());
  ASSERT_TRUE(eventually([&] { return d.lists(t.pid()); })) << d.log();

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

TEST(Preload, ALiveSetChangesTheTargetsBehaviour) {
  DaemonProc d;
  ASSERT_TRUE(d.ready()) << d.log();
  // No time-based release during the test: only whale.cache_bytes decides what is unmapped.
  Target t(d.shm(), {"HAKMEM_WHALE_DECAY_MS=3600000"});
  ASSERT_TRUE(t.ready());
  ASSERT_TRUE(eventually([&] { return d.lists(t.pid()); })) << d.log();

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
  ASSERT_TRUE(d.ready()) << d.log();
  Target t(d.shm());
  ASSERT_TRUE(t.ready());
  ASSERT_TRUE(eventually([&] { return d.lists(t.pid()); })) << d.log();
  ASSERT_TRUE(eventually([&] {
    t.run("tick");
    json g = Client(d.socket()).call({{"cmd", "get"}, {"pid", t.pid()}, {"keys", {"tiny.cap"}}});
    const json& p = g["result"]["processes"][0];
    return p["knobs"]["tiny.cap"]["value"] == 48 && p["applied_generation"] == p["generation"];
  })) << d.log();
}
