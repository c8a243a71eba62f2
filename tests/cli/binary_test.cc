// The real hakctl binary against the fake daemon: exit codes, what goes to stdout/stderr,
// the requests it sends, --watch snapshots, Ctrl-C and a closed pipe.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>

#include "fake_server.h"
#include "proc.h"

using hakctl_test::Action;
using hakctl_test::Child;
using hakctl_test::FakeServer;
using hakctl_test::RunResult;
using hakctl_test::TempDir;
using json = nlohmann::json;

namespace {

std::string hakctl_path() {
  const char* p = getenv("HAKCTL");
  return p ? p : "";
}

RunResult hakctl(const std::vector<std::string>& args, const hakctl_test::Env& env = {}) {
  std::vector<std::string> argv{hakctl_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  return hakctl_test::run(argv, env);
}

bool contains(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

// A fake daemon with one process whose tiny allocations grow by 1000 per stats request.
class FakeDaemon {
 public:
  FakeDaemon()
      : srv([this](const json& req) { return handle(req); }) {}
  Action handle(const json& req) {
    const std::string cmd = req.value("cmd", "");
    if (cmd == "hello") return hakctl_test::ok(req, {{"protocol", 1}, {"daemon", "hakmemd 0.1.0"}, {"pid", 42}});
    if (cmd == "ps")
      return hakctl_test::ok(req, {{"processes", {{{"pid", 4242}, {"exe", "/bin/fake"}, {"uptime_s", 10},
                                                   {"threads", 2}, {"live_bytes", 2048}, {"mapped_bytes", 65536},
                                                   {"allocs", 5000}, {"frees", 4000}}}}});
    if (cmd == "stats") {
      if (req.contains("pid") && req["pid"] != 4242)
        return hakctl_test::fail(req, "no_such_process", "no process " + req["pid"].dump() + " runs hakmem");
      const uint64_t n = ++stats_calls;
      json tiny = {{"allocs", 1000 * n}, {"frees", 900 * n}, {"hits", 990 * n}, {"misses", 10 * n},
                   {"live_bytes", 4096}, {"cached_bytes", 0}, {"mapped_bytes", 65536}};
      return hakctl_test::ok(req, {{"processes", {{{"pid", 4242}, {"exe", "/bin/fake"}, {"uptime_s", 10.0 + n},
                                                   {"threads", 1}, {"tiers", {{"tiny", tiny}}}}}}});
    }
    if (cmd == "set") {
      const json& k = req["knobs"];
      if (k.contains("tiny.cpa"))
        return hakctl_test::fail(req, "unknown_knob", "unknown knob 'tiny.cpa'; did you mean 'tiny.cap'?");
      if (k.contains("tiny.cap") && k["tiny.cap"].is_number() && k["tiny.cap"].get<uint64_t>() > 1024)
        return hakctl_test::fail(req, "out_of_range", "tiny.cap must be 0..1024");
      json changes = json::array();
      for (auto it = k.begin(); it != k.end(); ++it)
        changes.push_back({{"pid", 4242}, {"knob", it.key()}, {"old", 0}, {"new", it.value()}});
      return hakctl_test::ok(req, {{"changes", changes},
                                   {"processes", {{{"pid", 4242}, {"generation", 2}, {"applied", true},
                                                   {"apply_ms", 1.5}}}}});
    }
    return hakctl_test::fail(req, "unknown_command", "unknown command " + cmd);
  }
  std::atomic<uint64_t> stats_calls{0};
  FakeServer srv;
};

}  // namespace

TEST(Binary, UsageErrorsExitTwoBeforeAnyConnection) {
  RunResult r = hakctl({"stat"});
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(contains(r.err, "hakctl: unknown command 'stat'; did you mean 'stats'?")) << r.err;
  EXPECT_TRUE(contains(r.err, "hint: run `hakctl help`")) << r.err;
  r = hakctl({"set", "tiny.cap", "--pid", "1", "--socket", "/nonexistent/x.sock"});
  EXPECT_EQ(r.status, 2);  // syntax is checked before the socket
  EXPECT_TRUE(contains(r.err, "hint: for example: hakctl set tiny.cap=64 --pid 1234")) << r.err;
  EXPECT_EQ(hakctl({}).status, 2);
  EXPECT_EQ(hakctl({"ps", "--bogus"}).status, 2);
  EXPECT_TRUE(r.out.empty());
}

TEST(Binary, HelpAndKnobsNeedNoDaemon) {
  RunResult r = hakctl({"help"});
  EXPECT_EQ(r.status, 0);
  EXPECT_TRUE(contains(r.out, "Commands:"));
  r = hakctl({"stats", "--help"});
  EXPECT_EQ(r.status, 0);
  EXPECT_TRUE(contains(r.out, "Usage: hakctl stats"));
  r = hakctl({"knobs", "--socket", "/nonexistent/x.sock"});
  EXPECT_EQ(r.status, 0);
  EXPECT_TRUE(contains(r.out, "tiny.cap")) << r.out;
  r = hakctl({"knobs", "--json"});
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(json::parse(r.out)["knobs"][0]["name"], "tiny.cap");
}

TEST(Binary, UnreachableExitsThreeWithWhatToDo) {
  TempDir d;
  const std::string sock = d.path + "/none.sock";
  for (const auto& cmd : std::vector<std::vector<std::string>>{{"ps"}, {"stats"}, {"get"}, {"set", "tiny.cap=1", "--all"}}) {
    std::vector<std::string> args = cmd;
    args.insert(args.end(), {"--socket", sock});
    RunResult r = hakctl(args);
    EXPECT_EQ(r.status, 3) << cmd[0];
    EXPECT_TRUE(contains(r.err, "hakmemd is not running: no socket at " + sock +
                                    "; start it with `hakmemd` or `systemctl start hakmemd`"))
        << r.err;
  }
  // HAKMEM_SOCKET is honoured when --socket is absent.
  RunResult r = hakctl({"ps"}, {{"HAKMEM_SOCKET", sock}});
  EXPECT_EQ(r.status, 3);
  EXPECT_TRUE(contains(r.err, sock)) << r.err;
  // version still prints its own version.
  r = hakctl({"version", "--socket", sock});
  EXPECT_EQ(r.status, 0);
  EXPECT_TRUE(contains(r.out, std::string("hakctl ") + HAKMEM_VERSION + " (protocol 1)")) << r.out;
  EXPECT_TRUE(contains(r.out, "not reachable")) << r.out;
}

TEST(Binary, SetPrintsOldToNewAndSendsOneRequest) {
  FakeDaemon d;
  RunResult r = hakctl({"set", "tiny.cap=64", "whale.cache_bytes=512M", "--pid", "4242", "--socket", d.srv.path()});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "pid 4242 tiny.cap: 0 -> 64\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "pid 4242 whale.cache_bytes: 0 -> 512M\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "pid 4242: applied in 1.5 ms")) << r.out;
  std::vector<json> sets;
  for (const json& q : d.srv.requests())
    if (q["cmd"] == "set") sets.push_back(q);
  ASSERT_EQ(sets.size(), 1u);  // all pairs in one request: nothing half-applied
  EXPECT_EQ(sets[0]["pid"], 4242);
  EXPECT_EQ(sets[0]["knobs"]["tiny.cap"], 64);  // plain numbers go as numbers
  EXPECT_EQ(sets[0]["knobs"]["whale.cache_bytes"], "512M");
  EXPECT_EQ(sets[0]["wait_ms"], 1000);
  EXPECT_EQ(d.srv.requests().at(0)["cmd"], "hello");  // hello first
}

TEST(Binary, DaemonErrorsExitOneWithCodeAndMessage) {
  FakeDaemon d;
  RunResult r = hakctl({"set", "tiny.cpa=64", "--pid", "4242", "--socket", d.srv.path()});
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.err, "hakctl: unknown_knob: unknown knob 'tiny.cpa'; did you mean 'tiny.cap'?")) << r.err;
  r = hakctl({"set", "tiny.cap=5000", "--all", "--socket", d.srv.path()});
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.err, "out_of_range: tiny.cap must be 0..1024")) << r.err;
  r = hakctl({"stats", "--pid", "7", "--socket", d.srv.path()});
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.err, "no_such_process")) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

TEST(Binary, VersionMismatchExitsOne) {
  FakeServer srv([](const json& req) {
    return hakctl_test::fail(req, "version_mismatch", "client speaks protocol 1, hakmemd speaks 2");
  });
  for (const char* cmd : {"ps", "version"}) {
    RunResult r = hakctl({cmd, "--socket", srv.path()});
    EXPECT_EQ(r.status, 1) << cmd;
    EXPECT_TRUE(contains(r.err, "version_mismatch: client speaks protocol 1, hakmemd speaks 2")) << r.err;
    EXPECT_TRUE(contains(r.err, "hint: hakctl " HAKMEM_VERSION " speaks protocol 1")) << r.err;
  }
}

TEST(Binary, JsonIsTheDaemonsResult) {
  FakeDaemon d;
  RunResult r = hakctl({"ps", "--json", "--socket", d.srv.path()});
  ASSERT_EQ(r.status, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["processes"][0]["pid"], 4242);
  EXPECT_EQ(j["processes"][0]["allocs"], 5000);
  r = hakctl({"ps", "--socket", d.srv.path()});
  EXPECT_TRUE(contains(r.out, "4242")) << r.out;
  EXPECT_TRUE(contains(r.out, "/bin/fake")) << r.out;
}

TEST(Binary, WatchPrintsSnapshotsWithRatesWhenNotATerminal) {
  FakeDaemon d;
  RunResult r = hakctl({"stats", "--watch", "0.05", "--count", "3", "--tier", "tiny", "--socket", d.srv.path()});
  ASSERT_EQ(r.status, 0) << r.err;
  // Three snapshots appended (no screen redraw codes in a pipe).
  size_t frames = 0;
  for (size_t at = 0; (at = r.out.find("hakctl stats --watch", at)) != std::string::npos; at++) frames++;
  EXPECT_EQ(frames, 3u) << r.out;
  EXPECT_EQ(r.out.find("\x1b["), std::string::npos);
  // First frame has no rates yet, later ones do; hit rate over the interval is 99%.
  const size_t second = r.out.find("hakctl stats --watch", 1);
  EXPECT_TRUE(contains(r.out.substr(0, second), "tiny         -        -")) << r.out;
  EXPECT_TRUE(contains(r.out.substr(second), "/s")) << r.out;
  EXPECT_TRUE(contains(r.out.substr(second), "99.0%")) << r.out;
  r = hakctl({"stats", "--watch", "0.05", "--count", "2", "--json", "--socket", d.srv.path()});
  ASSERT_EQ(r.status, 0);
  const size_t nl = r.out.find('\n');
  EXPECT_EQ(json::parse(r.out.substr(0, nl))["processes"][0]["pid"], 4242);  // one JSON line per snapshot
}

TEST(Binary, WatchEndsCleanlyOnSigint) {
  FakeDaemon d;
  Child c;
  hakctl_test::spawn(&c, {hakctl_path(), "stats", "--watch", "0.05", "--socket", d.srv.path()}, {}, true, false);
  const std::string got = c.read_until("TIER");
  ASSERT_TRUE(contains(got, "TIER")) << got;
  EXPECT_EQ(c.stop(SIGINT), 0);
}

TEST(Binary, WatchEndsCleanlyWhenThePipeCloses) {
  FakeDaemon d;
  Child c;
  hakctl_test::spawn(&c, {hakctl_path(), "stats", "--watch", "0.02", "--socket", d.srv.path()}, {}, true, false);
  ASSERT_TRUE(contains(c.read_until("TIER"), "TIER"));
  close(c.out_fd);
  c.out_fd = -1;
  EXPECT_EQ(c.wait(), 0);  // EPIPE on the next snapshot ends it, no SIGPIPE death
}

TEST(Binary, CompletionWordsComeFromTheTables) {
  RunResult r = hakctl({"__complete", "knobs"});
  EXPECT_EQ(r.status, 0);
  EXPECT_TRUE(contains(r.out, "tiny.cap\n"));
  EXPECT_TRUE(contains(r.out, "stats.print\n"));
  r = hakctl({"__complete", "knobs", "--live"});
  EXPECT_FALSE(contains(r.out, "stats.print\n"));  // restart-only
  r = hakctl({"__complete", "commands"});
  EXPECT_EQ(r.out, "ps\nstats\nget\nset\nknobs\nsites\nrules\nversion\nhelp\n");
  FakeDaemon d;
  r = hakctl({"__complete", "pids", "--socket", d.srv.path()});
  EXPECT_EQ(r.out, "4242\n");
  r = hakctl({"__complete", "pids", "--socket", "/nonexistent/x.sock"});
  EXPECT_EQ(r.status, 0);  // a prompt never sees errors
  EXPECT_TRUE(r.out.empty() && r.err.empty());
}
