// The real hakmemd binary, driven over its socket: discovery and removal, stats figures,
// live set, permission refusal for another uid, every bad input answered, metrics over HTTP,
// signals. Segments are built by the test (fake_segment.h) and owned by live child processes.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <atomic>
#include <map>
#include <regex>

#include "daemon_harness.h"

using namespace hakmem_test;
namespace proto = hakmem::proto;

namespace {

json stats_of(DaemonProc& d, pid_t pid) {
  Client c(d.socket());
  json r = c.call({{"id", 1}, {"cmd", "stats"}, {"pid", pid}});
  if (!r.value("ok", false) || r["result"]["processes"].size() != 1) return json{{"error", r}};
  return r["result"]["processes"][0];
}

}  // namespace

TEST(Daemon, HelpAndVersion) {
  std::string cmd = hakmemd_path() + " --version";
  FILE* p = popen(cmd.c_str(), "r");
  char buf[128] = {};
  ASSERT_NE(fgets(buf, sizeof buf, p), nullptr);
  EXPECT_EQ(pclose(p), 0);
  EXPECT_EQ(std::string(buf), std::string("hakmemd ") + HAKMEM_VERSION + "\n");
  cmd = hakmemd_path() + " --help";
  p = popen(cmd.c_str(), "r");
  std::string help;
  while (fgets(buf, sizeof buf, p)) help += buf;
  EXPECT_EQ(pclose(p), 0);
  EXPECT_NE(help.find("--metrics HOST:PORT"), std::string::npos);
  cmd = hakmemd_path() + " --bogus 2>/dev/null";
  EXPECT_EQ(WEXITSTATUS(system(cmd.c_str())), 2);
}

TEST(Daemon, SocketIsPrivateAndHelloAnswers) {
  DaemonProc d;
  ASSERT_TRUE(d.ready()) << d.log();
  struct stat st;
  ASSERT_EQ(stat(d.socket().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat((d.tmp() + "/run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  Client c(d.socket());
  json r = c.call({{"id", "h"}, {"cmd", "hello"}, {"version", proto::kProtocolVersion}, {"client", "test"}});
  ASSERT_TRUE(r["ok"]) << r.dump();
  EXPECT_EQ(r["id"], "h");
  EXPECT_EQ(r["result"]["protocol"], proto::kProtocolVersion);
  EXPECT_EQ(r["result"]["pid"], d.pid());
  EXPECT_EQ(r["result"]["uid"], 0);
  EXPECT_EQ(c.call({{"cmd", "hello"}, {"version", 99}})["error"]["code"], "version_mismatch");
}

TEST(Daemon, DiscoversSegmentsAndRemovesThoseOfDeadProcesses) {
  DaemonProc d;
  ASSERT_TRUE(d.ready()) << d.log();
  Sleeper a, b;
  FakeSegment sa(d.shm(), a), sb(d.shm(), b);
  ASSERT_TRUE(eventually([&] { return d.lists(a.pid()) && d.lists(b.pid()); })) << d.log();
  const pid_t gone = b.pid();
  b.stop();  // died without unlinking: the daemon must notice and clean up
  EXPECT_TRUE(eventually([&] { return !file_exists(sb.path()); })) << d.log();
  EXPECT_FALSE(d.lists(gone));
  EXPECT_TRUE(d.lists(a.pid()));
  // A segment left by a process that died before the daemon ever saw it.
  FakeSegment dead(d.shm(), dead_pid(), 0, true, 1);
  EXPECT_TRUE(eventually([&] { return !file_exists(dead.path()); })) << d.log();
  // A process that exits cleanly unlinks its own segment: dropped from the list.
  sa.remove();
  EXPECT_TRUE(eventually([&] { return !d.lists(a.pid()); }));
  EXPECT_NE(d.log().find("removed stale segment"), std::string::npos);
}

TEST(Daemon, ASegmentLeftBehindByAnExecIsRemovedWhileTheProcessLivesOn) {
  DaemonProc d;
  ASSERT_TRUE(d.ready()) << d.log();
  Sleeper p, q;
  FakeSegment s(d.shm(), p), kept(d.shm(), q);
  ASSERT_TRUE(s.owner_mapped() && kept.owner_mapped());
  ASSERT_TRUE(eventually([&] { return d.lists(p.pid()) && d.lists(q.pid()); })) << d.log();
  // p runs a program without hakmem now: same pid, same start time, no exit code ran.
  ASSERT_TRUE(p.exec_sleep());
  EXPECT_TRUE(eventually([&] { return !d.lists(p.pid()) && !file_exists(s.path()); }, 30)) << d.log();
  EXPECT_EQ(comm_of(p.pid()), "sleep");  // alive all along
  EXPECT_NE(d.log().find("removed stale segment " + s.path() + " (process " + std::to_string(p.pid()) +
                         " exec'd a program without hakmem)"),
            std::string::npos)
      << d.log();
  // Its neighbour still maps its segment: listed, file kept.
  EXPECT_TRUE(d.lists(q.pid()));
  EXPECT_TRUE(file_exists(kept.path()));
}

TEST(Daemon, StatsReportTheSegmentsFiguresAndFollowThem) {
  DaemonProc d;
  ASSERT_TRUE(d.ready()) << d.log();
  TempDir bin;
  Sleeper p(0, install_fake_service(bin.path(), "server"));
  FakeSegment s(d.shm(), p);
  s.add(proto::Tier::Whale, proto::ThreadCounter::Allocs, 2);
  s.add(proto::Tier::Whale, proto::ThreadCounter::AllocBytes, 4 << 20);
  s.set_global(proto::Tier::Whale, proto::GlobalCounter::MappedBytes, 4 << 20);
  ASSERT_TRUE(eventually([&] { return d.lists(p.pid()); })) << d.log();
  json st = stats_of(d, p.pid());
  ASSERT_TRUE(st.contains("tiers")) << st.dump();
  EXPECT_EQ(st["exe"], bin.path() + "/server");  // hakmemd's read of /proc/<pid>/exe
  EXPECT_EQ(st["cmdline"].get<std::string>().rfind(bin.path() + "/server ", 0), 0u) << st["cmdline"];
  EXPECT_EQ(st["tiers"]["whale"]["allocs"], 2);
  EXPECT_EQ(st["tiers"]["whale"]["live_bytes"], 4 << 20);
  EXPECT_EQ(st["tiers"]["whale"]["mapped_bytes"], 4 << 20);
  EXPECT_GT(st["rss_bytes"].get<uint64_t>(), 0u);
  s.add(proto::Tier::Whale, proto::ThreadCounter::Allocs, 3);
  s.add(proto::Tier::Whale, proto::ThreadCounter::Frees, 5);
  s.add(proto::Tier::Whale, proto::ThreadCounter::FreeBytes, 4 << 20);
  st = stats_of(d, p.pid());
  EXPECT_EQ(st["tiers"]["whale"]["allocs"], 5);
  EXPECT_EQ(st["tiers"]["whale"]["frees"], 5);
  EXPECT_EQ(st["tiers"]["whale"]["live_bytes"], 0);
}

TEST(Daemon, SetWritesTheSegmentBumpsTheGenerationAndIsLogged) {
  DaemonProc d;
  ASSERT_TRUE(d.ready()) << d.log();
  Sleeper p;
  FakeSegment s(d.shm(), p);
  ASSERT_TRUE(eventually([&] { return d.lists(p.pid()); })) << d.log();
  const uint64_t gen0 = s.generation();
  Client c(d.socket());
  json r = c.call({{"id", 3}, {"cmd", "set"}, {"pid", p.pid()}, {"knobs", {{"tiny.cap", 64}, {"whale.decay_ms", "2s"}}}});
  ASSERT_TRUE(r["ok"]) << r.dump();
  EXPECT_EQ(s.knob(proto::Knob::TinyCap), 64u);
  EXPECT_EQ(s.knob(proto::Knob::WhaleDecayMs), 2000u);
  EXPECT_EQ(s.generation(), gen0 + 1);
  EXPECT_EQ(r["result"]["changes"][0], json({{"pid", p.pid()}, {"knob", "tiny.cap"}, {"old", 0}, {"new", 64}}));
  EXPECT_EQ(r["result"]["changes"][1]["old"], 1000);
  EXPECT_EQ(r["result"]["changes"][1]["new"], 2000);
  r = c.call({{"cmd", "get"}, {"pid", p.pid()}, {"keys", {"tiny.cap"}}});
  EXPECT_EQ(r["result"]["processes"][0]["knobs"]["tiny.cap"]["value"], 64);
  // Refusals leave the segment alone.
  r = c.call({{"cmd", "set"}, {"all", true}, {"knobs", {{"tiny.cap", 2000}}}});
  EXPECT_EQ(r["error"]["code"], "out_of_range");
  EXPECT_EQ(r["error"]["message"], "tiny.cap must be 0..1024");
  r = c.call({{"cmd", "set"}, {"all", true}, {"knobs", {{"tiny.cap", 1}, {"tiny.cpa", 1}}}});
  EXPECT_EQ(r["error"]["code"], "unknown_knob");
  EXPECT_NE(r["error"]["message"].get<std::string>().find("'tiny.cap'"), std::string::npos);
  EXPECT_EQ(s.knob(proto::Knob::TinyCap), 64u);
  EXPECT_EQ(s.generation(), gen0 + 1);
  const std::string log = d.log();
  EXPECT_NE(log.find("knob set by uid 0 pid " + std::to_string(getpid()) + ": process " + std::to_string(p.pid()) +
                     " (" + self_exe() + ") tiny.cap 0 -> 64"),
            std::string::npos)
      << log;
}

TEST(Daemon, SetWithWaitReportsTheApply) {
  DaemonProc d;
  ASSERT_TRUE(d.ready()) << d.log();
  Sleeper p;
  FakeSegment s(d.shm(), p);
  ASSERT_TRUE(eventually([&] { return d.lists(p.pid()); })) << d.log();
  // Plays the allocator's part: applies each new generation.
  std::atomic<bool> stop{false};
  std::thread applier([&] {
    auto& kb = s.seg().knobs;
    while (!stop) {
      uint64_t g = kb.generation.load(std::memory_order_acquire);
      if (g != kb.applied_generation.load()) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        kb.applied_unix_ns.store(static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec));
        kb.applied_generation.store(g, std::memory_order_release);
      }
      usleep(500);
    }
  });
  Client c(d.socket());
  json r = c.call({{"cmd", "set"}, {"pid", p.pid()}, {"knobs", {{"tiny.prewarm", "on"}}}, {"wait_ms", 5000}});
  stop = true;
  applier.join();
  ASSERT_TRUE(r["ok"]) << r.dump();
  EXPECT_EQ(r["result"]["processes"][0]["applied"], true);
  EXPECT_GE(r["result"]["processes"][0]["apply_ms"].get<double>(), 0.0);
}

TEST(Daemon, EveryBadInputIsAnsweredAndTheDaemonKeepsServing) {
  DaemonProc d;
  ASSERT_TRUE(d.ready()) << d.log();
  Sleeper p;
  FakeSegment good(d.shm(), p);
  // Hostile files in the segment folder, all claiming a live pid.
  Sleeper q;
  write_file(d.shm() + "/hakmem.0." + std::to_string(q.pid()), std::string(sizeof(proto::Segment), '\x5a'));
  Sleeper r2;
  write_file(d.shm() + "/hakmem.0." + std::to_string(r2.pid()), "tiny");
  ASSERT_TRUE(eventually([&] { return d.lists(p.pid()); })) << d.log();

  Client silent(d.socket());  // connects and says nothing for the whole test
  ASSERT_TRUE(silent.connected());
  Client half(d.socket());
  ASSERT_TRUE(half.send_raw("{\"cmd\":\"ps\""));  // half a line, never finished

  Client c(d.socket());
  ASSERT_TRUE(c.send_raw("this is not json\n[1,2]\n{\"id\":4,\"cmd\":\"explode\"}\n{\"id\":5,\"cmd\":\"stats\",\"pid\":\"x\"}\n"));
  json r = json::parse(*c.read_line());
  EXPECT_EQ(r["error"]["code"], "bad_request");
  EXPECT_TRUE(r["id"].is_null());
  EXPECT_EQ(json::parse(*c.read_line())["error"]["code"], "bad_request");
  r = json::parse(*c.read_line());
  EXPECT_EQ(r["id"], 4);
  EXPECT_EQ(r["error"]["code"], "unknown_command");
  EXPECT_EQ(json::parse(*c.read_line())["error"]["code"], "bad_request");
  EXPECT_TRUE(c.call({{"cmd", "ps"}})["ok"]);  // the same connection still works
  const json ps = c.call({{"cmd", "ps"}});
  EXPECT_EQ(ps["result"]["processes"].size(), 1u) << ps.dump();  // the garbage segments are not listed

  Client big(d.socket());
  ASSERT_TRUE(big.send_raw("{\"cmd\":\"ps\",\"pad\":\"" + std::string(proto::kMaxLineBytes + 100, 'a') + "\"}\n"));
  auto line = big.read_line();
  ASSERT_TRUE(line);
  EXPECT_EQ(json::parse(*line)["error"]["code"], "line_too_long");
  EXPECT_TRUE(big.closed_by_peer());

  // 100 clients at once, each with a request in flight before any reply is read.
  std::vector<Client> many;
  for (int i = 0; i < 100; i++) {
    many.emplace_back(d.socket());
    ASSERT_TRUE(many.back().connected()) << i;
    ASSERT_TRUE(many.back().send_raw(json({{"id", i}, {"cmd", "stats"}}).dump() + "\n"));
  }
  for (int i = 0; i < 100; i++) {
    auto l = many[static_cast<size_t>(i)].read_line();
    ASSERT_TRUE(l) << i;
    json rr = json::parse(*l);
    EXPECT_EQ(rr["id"], i);
    EXPECT_TRUE(rr["ok"]);
  }
  EXPECT_FALSE(d.exited()) << d.log();
  EXPECT_TRUE(Client(d.socket()).call({{"cmd", "hello"}})["ok"]);
  EXPECT_NE(d.log().find("bad magic"), std::string::npos);
}

TEST(Daemon, AnotherUidCannotSeeOrChangeRootsProcesses) {
  DaemonProc d;
  ASSERT_TRUE(d.ready()) << d.log();
  Sleeper mine;                   // root's process
  Sleeper theirs(65534);          // nobody's process
  FakeSegment s_root(d.shm(), mine);
  FakeSegment s_nobody(d.shm(), theirs, 65534);
  ASSERT_TRUE(eventually([&] { return d.lists(mine.pid()) && d.lists(theirs.pid()); })) << d.log();
  // An administrator opens the socket to everyone; the daemon's own SO_PEERCRED check is what
  // must keep users apart now.
  chmod(d.tmp().c_str(), 0711);
  chmod((d.tmp() + "/run").c_str(), 0711);
  chmod(d.socket().c_str(), 0666);

  pid_t child = fork();
  if (child == 0) {
    int code = 0;
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(100);
    Client c(d.socket());
    if (!c.connected()) _exit(101);
    json r = c.call({{"cmd", "hello"}});
    if (r["result"]["uid"] != 65534) code |= 1;
    r = c.call({{"cmd", "ps"}});
    if (r["result"]["processes"].size() != 1 || r["result"]["processes"][0]["pid"] != theirs.pid()) code |= 2;
    r = c.call({{"cmd", "stats"}, {"pid", mine.pid()}});
    if (r["error"]["code"] != "permission_denied") code |= 4;
    r = c.call({{"cmd", "set"}, {"pid", mine.pid()}, {"knobs", {{"tiny.cap", 5}}}});
    if (r["error"]["code"] != "permission_denied") code |= 8;
    r = c.call({{"cmd", "set"}, {"all", true}, {"knobs", {{"tiny.cap", 7}}}});
    if (!r["ok"] || r["result"]["changes"].size() != 1 || r["result"]["changes"][0]["pid"] != theirs.pid()) code |= 16;
    r = c.call({{"cmd", "stats"}});
    if (r["result"]["processes"].size() != 1) code |= 32;
    _exit(code);
  }
  int status = -1;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "bit mask of failed checks in the nobody client\n" << d.log();
  EXPECT_EQ(s_root.knob(proto::Knob::TinyCap), 0u);   // root's process untouched
  EXPECT_EQ(s_nobody.knob(proto::Knob::TinyCap), 7u); // nobody may tune its own
  EXPECT_NE(d.log().find("knob set by uid 65534"), std::string::npos);
}

TEST(Daemon, MetricsAreServedOverHttpAndParse) {
  const uint16_t port = free_port();
  DaemonProc d({"--metrics", "127.0.0.1:" + std::to_string(port)});
  ASSERT_TRUE(d.ready()) << d.log();
  TempDir bin;
  Sleeper p(0, install_fake_service(bin.path(), "a \"quoted\" name"));
  FakeSegment s(d.shm(), p);
  s.add(proto::Tier::Pool, proto::ThreadCounter::Allocs, 11);
  s.add(proto::Tier::Pool, proto::ThreadCounter::AllocBytes, 11 * 2048);
  s.set_global(proto::Tier::Pool, proto::GlobalCounter::MappedBytes, 65536);
  ASSERT_TRUE(eventually([&] { return d.lists(p.pid()); })) << d.log();

  const std::string resp = http_get(port, "/metrics");
  ASSERT_EQ(resp.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << resp.substr(0, 200);
  EXPECT_NE(resp.find("Content-Type: text/plain; version=0.0.4"), std::string::npos);
  const std::string body = resp.substr(resp.find("\r\n\r\n") + 4);
  // Parse every sample into name -> labels -> value.
  std::regex sample_re(R"(^([a-z_]+)(\{(.*)\})? ([0-9.eE+-]+)$)");
  std::map<std::string, double> samples;
  std::map<std::string, std::string> types;
  std::istringstream in(body);
  std::string line;
  size_t n = 0;
  while (std::getline(in, line)) {
    std::smatch m;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream t(line.substr(7));
      std::string name, type;
      t >> name >> type;
      types[name] = type;
      continue;
    }
    if (line.rfind("# HELP ", 0) == 0) continue;
    ASSERT_TRUE(std::regex_match(line, m, sample_re)) << line;
    ASSERT_TRUE(types.count(m[1])) << "sample before its TYPE: " << line;
    samples[m[1].str() + "{" + m[3].str() + "}"] = std::stod(m[4]);
    n++;
  }
  EXPECT_GT(n, 50u);
  const std::string lbl =
      "pid=\"" + std::to_string(p.pid()) + "\",exe=\"" + bin.path() + "/a \\\"quoted\\\" name\"";
  EXPECT_EQ(samples["hakmem_processes{}"], 1);
  EXPECT_EQ(samples["hakmem_allocs_total{" + lbl + ",tier=\"pool\"}"], 11);
  EXPECT_EQ(samples["hakmem_live_bytes{" + lbl + ",tier=\"pool\"}"], 11 * 2048);
  EXPECT_EQ(samples["hakmem_mapped_bytes{" + lbl + ",tier=\"pool\"}"], 65536);
  EXPECT_TRUE(samples.count("hakmem_page_faults_total{" + lbl + "}"));
  EXPECT_EQ(types["hakmem_allocs_total"], "counter");
  EXPECT_EQ(types["hakmem_live_bytes"], "gauge");

  EXPECT_EQ(http_get(port, "/").rfind("HTTP/1.1 404", 0), 0u);
  EXPECT_EQ(http_get(port, "/metricsx").rfind("HTTP/1.1 404", 0), 0u);
}

TEST(Daemon, MetricsAreOffUnlessConfigured) {
  DaemonProc d;
  ASSERT_TRUE(d.ready()) << d.log();
  EXPECT_EQ(d.log().find("Prometheus"), std::string::npos);
}

TEST(Daemon, SigtermStopsCleanlyAndRemovesTheSocket) {
  DaemonProc d;
  ASSERT_TRUE(d.ready()) << d.log();
  ASSERT_TRUE(file_exists(d.socket()));
  const int st = d.signal_and_wait(SIGTERM);
  ASSERT_TRUE(WIFEXITED(st)) << st;
  EXPECT_EQ(WEXITSTATUS(st), 0);
  EXPECT_FALSE(file_exists(d.socket()));
}

TEST(Daemon, AStaleSocketIsReplacedALiveOneRefused) {
  DaemonProc first;
  ASSERT_TRUE(first.ready()) << first.log();
  // A second daemon on the same socket must refuse and leave the first one serving.
  {
    std::string cmd = hakmemd_path() + " --socket " + first.socket() + " --shm-dir " + first.shm() + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    char buf[512];
    while (fgets(buf, sizeof buf, p)) out += buf;
    const int st = pclose(p);
    EXPECT_NE(WEXITSTATUS(st), 0);
    EXPECT_NE(out.find("already serving"), std::string::npos) << out;
    EXPECT_TRUE(Client(first.socket()).call({{"cmd", "hello"}})["ok"]);
  }
  // A daemon killed hard leaves its socket file behind; the next one replaces it.
  first.signal_and_wait(SIGKILL);
  ASSERT_TRUE(file_exists(first.socket()));
  first.start();
  ASSERT_TRUE(first.ready()) << first.log();
  EXPECT_TRUE(Client(first.socket()).call({{"cmd", "hello"}})["ok"]);
  EXPECT_NE(first.log().find("replacing stale socket"), std::string::npos);
}

TEST(Daemon, ConfigDefaultsApplyToNewProcessesAndSighupReloads) {
  TempDir cfgdir;
  const std::string cfg = cfgdir.path() + "/hakmemd.json";
  write_file(cfg, R"({"defaults":[{"exe":"fake-*","knobs":{"tiny.cap":32}},{"exe":"/other/*","knobs":{"tiny.cap":1}}]})");
  DaemonProc d({"--config", cfg});
  ASSERT_TRUE(d.ready()) << d.log();
  TempDir bin;
  Sleeper a(0, install_fake_service(bin.path(), "fake-service"));
  FakeSegment sa(d.shm(), a);
  ASSERT_TRUE(eventually([&] { return d.lists(a.pid()); })) << d.log();
  EXPECT_TRUE(eventually([&] { return sa.knob(proto::Knob::TinyCap) == 32; })) << d.log();
  EXPECT_NE(d.log().find("knob set by config default 'fake-*'"), std::string::npos);

  write_file(cfg, R"({"defaults":[{"exe":"*/fake-*","knobs":{"tiny.cap":48,"whale.cache_bytes":"64M"}}]})");
  kill(d.pid(), SIGHUP);
  ASSERT_TRUE(eventually([&] { return d.log().find("configuration reloaded") != std::string::npos; })) << d.log();
  Sleeper b(0, install_fake_service(bin.path(), "fake-worker"));
  FakeSegment sb(d.shm(), b);
  ASSERT_TRUE(eventually([&] { return sb.knob(proto::Knob::TinyCap) == 48; })) << d.log();
  EXPECT_EQ(sb.knob(proto::Knob::WhaleCacheBytes), 64ull << 20);
  EXPECT_EQ(sa.knob(proto::Knob::TinyCap), 32u);  // defaults are for newly seen processes only

  // A broken config on reload is refused; the daemon keeps the previous one and keeps serving.
  write_file(cfg, R"({"defaults":[{"exe":"*","knobs":{"tiny.cap":99999}}]})");
  kill(d.pid(), SIGHUP);
  ASSERT_TRUE(eventually([&] { return d.log().find("not reloaded") != std::string::npos; })) << d.log();
  EXPECT_NE(d.log().find("tiny.cap must be 0..1024"), std::string::npos);
  EXPECT_TRUE(Client(d.socket()).call({{"cmd", "ps"}})["ok"]);
}

TEST(Daemon, ABadConfigFileStopsStartupWithAMessage) {
  TempDir cfgdir;
  const std::string cfg = cfgdir.path() + "/bad.json";
  write_file(cfg, R"({"scan_interval":5})");
  DaemonProc d({"--config", cfg}, false);
  ASSERT_TRUE(eventually([&] { return d.exited(); }));
  EXPECT_NE(WEXITSTATUS(d.status()), 0);
  EXPECT_NE(d.log().find("did you mean 'scan_interval_ms'"), std::string::npos) << d.log();
}

TEST(Daemon, ASegmentTruncatedUnderTheDaemonIsDroppedNotFatal) {
  DaemonProc d;
  ASSERT_TRUE(d.ready()) << d.log();
  Sleeper p;
  FakeSegment s(d.shm(), p);
  s.seg().global.thread_slots_hwm.store(proto::kThreadSlots);  // make stats read the whole file
  ASSERT_TRUE(eventually([&] { return d.lists(p.pid()); })) << d.log();
  ASSERT_EQ(truncate(s.path().c_str(), 4096), 0);  // what a hostile owner could do
  Client c(d.socket());
  json r = c.call({{"cmd", "stats"}, {"pid", p.pid()}});
  EXPECT_EQ(r["error"]["code"], "no_such_process") << r.dump();
  EXPECT_TRUE(c.call({{"cmd", "stats"}})["result"]["processes"].empty());
  EXPECT_FALSE(d.exited()) << d.log();
  EXPECT_TRUE(eventually([&] { return d.log().find("truncated under the daemon") != std::string::npos; })) << d.log();
  EXPECT_TRUE(Client(d.socket()).call({{"cmd", "hello"}})["ok"]);
}

TEST(Daemon, TheSocketComesFromHakmemSocketWhenNotGiven) {
  TempDir tmp;
  const std::string sock = tmp.path() + "/env/hakmemd.sock";
  pid_t pid = fork();
  if (pid == 0) {
    setenv("HAKMEM_SOCKET", sock.c_str(), 1);
    int fd = open("/dev/null", O_WRONLY);
    dup2(fd, 2);
    execl(hakmemd_path().c_str(), "hakmemd", "--shm-dir", tmp.path().c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  const bool up = eventually([&] { return Client().connect(sock); });
  kill(pid, SIGTERM);
  int st = -1;
  waitpid(pid, &st, 0);
  EXPECT_TRUE(up);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
  EXPECT_FALSE(file_exists(sock));
}
