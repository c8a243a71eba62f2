// Site rules end to end (issue 9): the real hakmemd (private socket and segment folder), the
// real hakctl, and sites_target preloaded with libhakmem. Asserts that `hakctl sites` names
// both allocating functions, that a rule routes one of them to the whale tier (the whale
// allocation counter rises by exactly its allocations, the other function's do not move it),
// that deleting the rule stops the routing, and that a config rule reaches a new process,
// also when it names a bare function whose call sites are sampled only after the process
// registered.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <memory>

#include "fake_server.h"
#include "hakctl_runner.h"
#include "proc.h"

using hakctl_test::Child;
using hakctl_test::RunResult;
using hakctl_test::can_connect;
using hakctl_test::contains;
using hakctl_test::pause_ms;
using hakctl_test::TempDir;
using json = nlohmann::json;

namespace {

std::string g_hakctl, g_hakmemd, g_lib, g_target;


struct Target {
  Child child;
  int pid = 0;
  std::string read_line() { return child.read_line(); }
  // Runs one workload command ("a N SIZE", "b N SIZE") and waits for its "ok".
  bool run(const std::string& cmd) {
    const std::string line = cmd + "\n";
    if (write(child.in_fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) return false;
    return read_line() == "ok";
  }
};

class Sites : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(g_hakctl.empty() || g_hakmemd.empty() || g_lib.empty() || g_target.empty())
        << "run with --hakctl= --hakmemd= --hakmem-lib= --target= (ctest passes them)";
    sock_ = dir_.path + "/hakmemd.sock";
    runner_.init(g_hakctl, sock_);
    config_ = dir_.path + "/hakmemd.json";
    write_config("{}");
    hakctl_test::spawn(&daemon_, {g_hakmemd, "--socket", sock_, "--shm-dir", dir_.path, "--config", config_,
                                  "--scan-interval-ms", "100", "--log-level", "info"},
                       {}, false, false, dir_.path + "/hakmemd.log");
    for (int i = 0; i < 500 && !can_connect(sock_); i++) pause_ms(20);  // readiness, not a timing check
    ASSERT_TRUE(can_connect(sock_)) << "hakmemd never listened; its log:\n" << log();
  }

  void TearDown() override {
    for (auto& t : targets_) {
      if (t->child.in_fd >= 0) {
        close(t->child.in_fd);  // the target exits on EOF
        t->child.in_fd = -1;
      }
      t->child.wait();
    }
    if (daemon_.pid > 0) {
      EXPECT_EQ(daemon_.stop(SIGTERM), 0) << "hakmemd did not stop cleanly; its log:\n" << log();
    }
  }

  void write_config(const std::string& text) { std::ofstream(config_) << text; }
  // Writes the config and has the daemon reload it (SIGHUP); true once its log says so.
  bool reload_config(const std::string& text) {
    write_config(text);
    const size_t before = count(log(), "configuration reloaded");
    if (kill(daemon_.pid, SIGHUP) != 0) return false;
    for (int i = 0; i < 500 && count(log(), "configuration reloaded") == before; i++) pause_ms(20);
    return count(log(), "configuration reloaded") > before;
  }
  // Reloads a config that turns site.rules on for every sites_target and gives it one rule.
  bool reload_with_rule(const std::string& rule) {
    return reload_config(R"({"defaults": [{"exe": "sites_target", "knobs": {"site.rules": 1}}],
                   "rules": [{"exe": "*/sites_target", "rule": ")" + rule + R"("}]})");
  }
  static size_t count(const std::string& hay, const std::string& needle) {
    size_t n = 0;
    for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + 1)) n++;
    return n;
  }

  std::string log() {
    std::ifstream f(dir_.path + "/hakmemd.log");
    return std::string(std::istreambuf_iterator<char>(f), {});
  }

  RunResult hakctl(std::vector<std::string> args) { return runner_.run(args); }
  json hakctl_json(std::vector<std::string> args) { return runner_.run_json(std::move(args)); }
  bool listed(int pid) { return runner_.lists(pid); }
  Target* start_target(const hakctl_test::Env& extra = {}) {
    auto t = std::make_unique<Target>();
    hakctl_test::Env env{{"LD_PRELOAD", g_lib}, {"HAKMEM_SHM_DIR", dir_.path}};
    env.insert(env.end(), extra.begin(), extra.end());
    hakctl_test::spawn(&t->child, {g_target}, env, true, true);
    const std::string ready = t->read_line();
    EXPECT_TRUE(contains(ready, "ready ")) << ready;
    t->pid = t->child.pid;
    for (int i = 0; i < 500 && !listed(t->pid); i++) pause_ms(20);
    EXPECT_TRUE(listed(t->pid)) << "hakmemd never listed pid " << t->pid << "; its log:\n" << log();
    targets_.push_back(std::move(t));
    return targets_.back().get();
  }
  // A tier's allocation count, now or in a `hakctl stats --json` snapshot.
  static uint64_t tier_allocs(const json& stats, const char* tier) {
    return stats.at("processes").at(0).at("tiers").at(tier).at("allocs").get<uint64_t>();
  }
  uint64_t tier_allocs(int pid, const char* tier) {
    return tier_allocs(hakctl_json({"stats", "--pid", std::to_string(pid)}), tier);
  }
  // The rule-syntax site of `function` as `hakctl sites --json` reports it ("alloc_alpha+0x2b").
  std::string spec_of(int pid, const std::string& function) {
    const json j = hakctl_json({"sites", "--pid", std::to_string(pid)});
    for (const json& s : j.at("processes").at(0).at("by_bytes"))
      if (s.value("function", "") == function) return s.value("spec", "");
    return {};
  }
  // The process's object in `hakctl rules list --json`.
  json rules_of(int pid) { return hakctl_json({"rules", "list", "--pid", std::to_string(pid)}).at("processes").at(0); }
  // The installed rule (from `rules list --json`) with at least `min_sites` sites inside
  // `function`, or null.
  json rule_covering(int pid, const std::string& function, size_t min_sites = 1) {
    const json p = rules_of(pid);
    for (const json& r : p.value("rules", json::array())) {
      size_t n = 0;
      for (const json& s : r.value("sites", json::array()))
        if (s.value("site", "").rfind(function + "+0x", 0) == 0) n++;
      if (n >= min_sites) return r;
    }
    return nullptr;
  }
  // Runs `workload` in t until the daemon has installed a rule covering `min_sites` call sites
  // of `function` (it needs a sample of each and a scan); null if that never happens. The
  // deadline is generous: this waits for a condition, it times nothing.
  json run_until_covered(Target* t, const std::string& workload, const std::string& function, size_t min_sites = 1) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (;;) {
      json r = rule_covering(t->pid, function, min_sites);
      if (!r.is_null() || std::chrono::steady_clock::now() > deadline) return r;
      if (!t->run(workload)) return nullptr;
      pause_ms(20);
    }
  }

  TempDir dir_;
  std::string sock_, config_;
  hakctl_test::HakctlRunner runner_;
  Child daemon_;
  std::vector<std::unique_ptr<Target>> targets_;
};

TEST_F(Sites, SitesNamesBothFunctions) {
  Target* t = start_target({{"HAKMEM_SITE_RULES", "1"}});
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->run("a 2000 65536"));  // 128 MiB from alloc_alpha
  ASSERT_TRUE(t->run("b 40000 256"));   // 10 MiB in 40000 small blocks from alloc_beta
  ASSERT_TRUE(t->run("n 300 100000"));  // 30 MiB through operator new[]: its caller is the site
  RunResult r = hakctl({"sites", "--pid", std::to_string(t->pid)});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "alloc_alpha+0x")) << r.out;
  EXPECT_TRUE(contains(r.out, "alloc_beta+0x")) << r.out;
  EXPECT_TRUE(contains(r.out, "new_gamma+0x")) << r.out;
  EXPECT_TRUE(contains(r.out, "(sites_target)")) << r.out;
  EXPECT_TRUE(contains(r.out, "by bytes")) << r.out;
  EXPECT_TRUE(contains(r.out, "by count")) << r.out;

  const json j = hakctl_json({"sites", "--pid", std::to_string(t->pid), "--top", "2"});
  const json& p = j.at("processes").at(0);
  EXPECT_TRUE(p.at("site_rules").get<bool>());
  ASSERT_EQ(p.at("by_bytes").size(), 2u);
  // By bytes alloc_alpha leads (128 MiB against 10 MiB); by count alloc_beta does.
  EXPECT_EQ(p["by_bytes"][0].value("function", ""), "alloc_alpha");
  EXPECT_EQ(p["by_count"][0].value("function", ""), "alloc_beta");
  EXPECT_EQ(p["by_bytes"][0].value("tier", ""), "bundle");
  EXPECT_EQ(p["by_count"][0].value("tier", ""), "tiny");
  // The estimates are sampled: within a factor of two of the truth.
  const uint64_t alpha_bytes = p["by_bytes"][0].value("bytes", uint64_t{0});
  EXPECT_GT(alpha_bytes, 64ull << 20);
  EXPECT_LT(alpha_bytes, 256ull << 20);
}

// Aligned allocations and realloc growth count for the function that asked, like malloc.
TEST_F(Sites, AlignedAndReallocGrownBlocksAreAttributedToTheirCaller) {
  Target* t = start_target({{"HAKMEM_SITE_RULES", "1"}});
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->run("l 400 65536"));  // 25 MiB through posix_memalign
  ASSERT_TRUE(t->run("r 200 131072"));  // 200 blocks grown to 128 KiB by realloc
  RunResult r = hakctl({"sites", "--pid", std::to_string(t->pid)});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "align_delta+0x")) << r.out;
  EXPECT_TRUE(contains(r.out, "grow_epsilon+0x")) << r.out;
}

// prewarm=off on a rule keeps the tier's own prewarm knob (here bundle.prewarm=1) away from
// the site's allocations: fresh bundle memory carved for it is not populated (no madvise),
// while another site's fresh bundle memory still is.
TEST_F(Sites, PrewarmOffOverridesTheTiersPrewarmKnob) {
  Target* t = start_target({{"HAKMEM_SITE_RULES", "1"}, {"HAKMEM_BUNDLE_PREWARM", "1"}});
  ASSERT_TRUE(t);
  const std::string pid = std::to_string(t->pid);
  ASSERT_TRUE(t->run("k 40 524288"));  // 20 MiB live from hold_zeta: sampled, so nameable
  RunResult r = hakctl({"rules", "add", "--pid", pid, "site=hold_zeta tier=bundle prewarm=off"});
  ASSERT_EQ(r.status, 0) << r.err;
  auto bundle = [&](const json& j, const char* field) {
    return j.at("processes").at(0).at("tiers").at("bundle").at(field).get<uint64_t>();
  };
  const json s0 = hakctl_json({"stats", "--pid", pid});
  ASSERT_TRUE(t->run("k 120 524288"));  // 60 MiB live: fresh chunks carved for hold_zeta
  const json s1 = hakctl_json({"stats", "--pid", pid});
  EXPECT_GT(bundle(s1, "mapped_bytes"), bundle(s0, "mapped_bytes")) << "new memory was carved";
  EXPECT_EQ(bundle(s1, "madvises"), bundle(s0, "madvises")) << "and not populated";
  ASSERT_TRUE(t->run("h 240 524288"));  // 120 MiB from hold_eta, no rule: populated
  const json s2 = hakctl_json({"stats", "--pid", pid});
  EXPECT_GT(bundle(s2, "mapped_bytes"), bundle(s1, "mapped_bytes"));
  EXPECT_GT(bundle(s2, "madvises"), bundle(s1, "madvises"));
}

TEST_F(Sites, RuleRoutesToWhaleAndDeleteStopsIt) {
  Target* t = start_target({{"HAKMEM_SITE_RULES", "1"}});
  ASSERT_TRUE(t);
  const std::string pid = std::to_string(t->pid);
  ASSERT_TRUE(t->run("a 2000 65536"));
  const std::string spec = spec_of(t->pid, "alloc_alpha");
  ASSERT_FALSE(spec.empty()) << "alloc_alpha not sampled";

  RunResult bad = hakctl({"rules", "add", "--pid", pid, "site=no_such_function+0x10 tier=whale"});
  EXPECT_EQ(bad.status, 1);
  EXPECT_TRUE(contains(bad.err, "unknown symbol 'no_such_function'")) << bad.err;
  bad = hakctl({"rules", "add", "--pid", pid, "site=" + spec + " tier=elephant"});
  EXPECT_EQ(bad.status, 1);
  EXPECT_TRUE(contains(bad.err, "invalid_rule")) << bad.err;
  bad = hakctl({"rules", "add", "site=" + spec + " tier=whale"});
  EXPECT_EQ(bad.status, 2) << "no --pid is a usage error";

  RunResult add = hakctl({"rules", "add", "--pid", pid, "site=" + spec + " size=32K-1M tier=whale prewarm=on"});
  ASSERT_EQ(add.status, 0) << add.err;
  EXPECT_TRUE(contains(add.out, "rule 1 added")) << add.out;
  EXPECT_TRUE(contains(add.out, "alloc_alpha+0x")) << add.out;

  RunResult list = hakctl({"rules", "list", "--pid", pid});
  ASSERT_EQ(list.status, 0) << list.err;
  EXPECT_TRUE(contains(list.out, "size=32K-1M tier=whale prewarm=on")) << list.out;

  // 64 KiB normally goes to bundle; alloc_alpha's now go to whale, alloc_beta's do not.
  uint64_t whale0 = tier_allocs(t->pid, "whale"), bundle0 = tier_allocs(t->pid, "bundle");
  ASSERT_TRUE(t->run("a 300 65536"));
  ASSERT_TRUE(t->run("b 200 65536"));
  EXPECT_EQ(tier_allocs(t->pid, "whale") - whale0, 300u);
  EXPECT_GE(tier_allocs(t->pid, "bundle") - bundle0, 200u);
  EXPECT_LT(tier_allocs(t->pid, "bundle") - bundle0, 300u);
  // Outside the rule's size range alloc_alpha is served as usual.
  whale0 = tier_allocs(t->pid, "whale");
  ASSERT_TRUE(t->run("a 100 4096"));
  EXPECT_EQ(tier_allocs(t->pid, "whale") - whale0, 0u);

  const json lj = hakctl_json({"rules", "list", "--pid", pid});
  EXPECT_GE(lj.at("processes").at(0).at("rule_hits").get<uint64_t>(), 300u);
  EXPECT_EQ(lj["processes"][0].at("rules_active").get<uint64_t>(), 1u);

  RunResult del = hakctl({"rules", "del", "1", "--pid", pid});
  ASSERT_EQ(del.status, 0) << del.err;
  EXPECT_EQ(hakctl({"rules", "del", "1", "--pid", pid}).status, 1) << "deleting twice";
  whale0 = tier_allocs(t->pid, "whale");
  ASSERT_TRUE(t->run("a 300 65536"));
  EXPECT_EQ(tier_allocs(t->pid, "whale") - whale0, 0u);
  EXPECT_TRUE(contains(hakctl({"rules", "list", "--pid", pid}).out, "no rules"));
}

// Every other action: pool (a 100-byte request rounded up into the pool tier) with a cap,
// system (own mapping per block, counted as whale) with pre-warm, bundle for a size range.
TEST_F(Sites, RoutesToPoolBundleAndSystem) {
  Target* t = start_target({{"HAKMEM_SITE_RULES", "1"}});
  ASSERT_TRUE(t);
  const std::string pid = std::to_string(t->pid);
  ASSERT_TRUE(t->run("a 2000 65536"));
  // Enough bytes that each function is sampled (about 20 samples each; mean 1 per 512 KiB).
  ASSERT_TRUE(t->run("b 100000 100"));
  ASSERT_TRUE(t->run("n 3500 3000"));
  // Bare function names: every sampled call site inside each function.
  RunResult r = hakctl({"rules", "add", "--pid", pid, "site=alloc_beta tier=pool cap=4"});
  ASSERT_EQ(r.status, 0) << r.err;
  r = hakctl({"rules", "add", "--pid", pid, "site=new_gamma tier=system prewarm=on"});
  ASSERT_EQ(r.status, 0) << r.err;
  r = hakctl({"rules", "add", "--pid", pid, "site=alloc_alpha size=-1K tier=bundle"});
  ASSERT_EQ(r.status, 0) << r.err;
  const json before = hakctl_json({"stats", "--pid", pid});
  ASSERT_TRUE(t->run("b 1000 100"));
  ASSERT_TRUE(t->run("n 100 3000"));
  ASSERT_TRUE(t->run("a 100 512"));
  ASSERT_TRUE(t->run("a 100 65536"));  // outside alpha's size range: bundle as usual
  const json after = hakctl_json({"stats", "--pid", pid});
  auto delta = [&](const char* tier) { return tier_allocs(after, tier) - tier_allocs(before, tier); };
  EXPECT_EQ(delta("pool"), 1000u);
  EXPECT_EQ(delta("whale"), 100u);
  EXPECT_EQ(delta("bundle"), 200u);
  EXPECT_EQ(delta("tiny"), 0u);
  // system: every block a mapping of its own, unmapped at its free, none kept in the cache.
  auto whale = [&](const json& j, const char* field) {
    return j.at("processes").at(0).at("tiers").at("whale").at(field).get<uint64_t>();
  };
  EXPECT_EQ(whale(after, "os_maps") - whale(before, "os_maps"), 100u);
  EXPECT_EQ(whale(after, "os_unmaps") - whale(before, "os_unmaps"), 100u);
  EXPECT_EQ(whale(after, "cached_bytes"), whale(before, "cached_bytes"));
}

// site.rules turned on while the process runs covers every size, tiny blocks too: the
// malloc fast path's one compare (control.h, the tiny gate) must close when the process
// reloads the knob, not only when the environment sets it at start.
TEST_F(Sites, SiteRulesTurnedOnLiveCoverTinyBlocks) {
  Target* t = start_target();
  ASSERT_TRUE(t);
  const std::string pid = std::to_string(t->pid);
  RunResult r = hakctl({"set", "--pid", pid, "site.rules=1", "--no-wait"});
  ASSERT_EQ(r.status, 0) << r.err;
  // The process reloads knobs at its next periodic check (every 4096 allocations of a
  // class); then about 20 samples of alloc_beta (10 MB, one sample per 512 KiB on average).
  ASSERT_TRUE(t->run("b 100000 100"));
  r = hakctl({"rules", "add", "--pid", pid, "site=alloc_beta tier=pool"});
  ASSERT_EQ(r.status, 0) << r.err;
  const json before = hakctl_json({"stats", "--pid", pid});
  ASSERT_TRUE(t->run("b 1000 100"));
  const json after = hakctl_json({"stats", "--pid", pid});
  auto delta = [&](const char* tier) { return tier_allocs(after, tier) - tier_allocs(before, tier); };
  EXPECT_EQ(delta("pool"), 1000u);
  EXPECT_EQ(delta("tiny"), 0u);
}

TEST_F(Sites, ConfigRuleReachesNewProcess) {
  Target* first = start_target({{"HAKMEM_SITE_RULES", "1"}});
  ASSERT_TRUE(first);
  ASSERT_TRUE(first->run("a 2000 65536"));
  const std::string spec = spec_of(first->pid, "alloc_alpha");
  ASSERT_FALSE(spec.empty());
  // Same executable, same offset: a persistent rule for every sites_target, and site.rules
  // turned on for it by a knob default (no environment needed).
  ASSERT_TRUE(reload_with_rule("site=" + spec + " size=32K-1M tier=whale")) << log();

  Target* t = start_target();
  ASSERT_TRUE(t);
  const std::string pid = std::to_string(t->pid);
  RunResult list = hakctl({"rules", "list", "--pid", pid});
  ASSERT_EQ(list.status, 0) << list.err;
  EXPECT_TRUE(contains(list.out, "site=" + spec + " size=32K-1M tier=whale")) << list.out << log();
  // Knob changes reach a thread at its periodic check (every 4096 tiny allocations of a
  // class): this workload passes one, so site.rules=1 from the config is in effect.
  ASSERT_TRUE(t->run("b 10000 64"));
  const uint64_t whale0 = tier_allocs(t->pid, "whale");
  ASSERT_TRUE(t->run("a 200 65536"));
  EXPECT_EQ(tier_allocs(t->pid, "whale") - whale0, 200u);
  // The first process predates the config rule: untouched.
  EXPECT_TRUE(contains(hakctl({"rules", "list", "--pid", std::to_string(first->pid)}).out, "no rules"));
}

// A config rule naming a bare function cannot resolve when the process registers: nothing is
// sampled yet. It waits (and `rules list` says so), and is installed once the daemon sees a
// sampled call site inside the function; from then on the function's allocations go to whale.
TEST_F(Sites, ConfigRuleForFunctionWaitsForItsCallSite) {
  ASSERT_TRUE(reload_with_rule("site=alloc_alpha tier=whale")) << log();
  Target* t = start_target();
  ASSERT_TRUE(t);
  const std::string pid = std::to_string(t->pid);

  // Registered with an empty site table: the rule is pending, not silently dropped.
  json p = rules_of(t->pid);
  EXPECT_TRUE(p.at("rules").empty()) << p.dump(2);
  ASSERT_EQ(p.value("pending_rules", json::array()).size(), 1u) << p.dump(2) << log();
  EXPECT_EQ(p["pending_rules"][0].value("rule", ""), "site=alloc_alpha tier=whale");
  EXPECT_EQ(p["pending_rules"][0].value("config", ""), "*/sites_target");
  EXPECT_EQ(p["pending_rules"][0].value("rule_id", 1u), 0u);
  EXPECT_TRUE(p["pending_rules"][0].at("sites").empty());
  RunResult list = hakctl({"rules", "list", "--pid", pid});
  ASSERT_EQ(list.status, 0) << list.err;
  EXPECT_TRUE(contains(list.out, "site=alloc_alpha tier=whale")) << list.out;
  EXPECT_TRUE(contains(list.out, "pending: no call site inside alloc_alpha sampled yet")) << list.out;
  EXPECT_FALSE(contains(list.out, "no rules")) << list.out;

  // site.rules=1 from the config default reaches the thread at its periodic knob check
  // (every 4096 tiny allocations of a class); then alloc_alpha gets sampled.
  ASSERT_TRUE(t->run("b 10000 64"));
  const json rule = run_until_covered(t, "a 100 65536", "alloc_alpha");
  ASSERT_FALSE(rule.is_null()) << "the pending config rule was never installed:\n"
                               << rules_of(t->pid).dump(2) << "\n" << log();
  EXPECT_EQ(rule.value("rule", ""), "site=alloc_alpha tier=whale");
  EXPECT_EQ(rule.value("follows", ""), "alloc_alpha");
  EXPECT_EQ(rule.value("config", ""), "*/sites_target");
  EXPECT_TRUE(rules_of(t->pid).value("pending_rules", json::array()).empty());
  EXPECT_TRUE(contains(log(), "pending config rule 'site=alloc_alpha tier=whale' for '*/sites_target' installed"))
      << log();
  list = hakctl({"rules", "list", "--pid", pid});
  EXPECT_TRUE(contains(list.out, "alloc_alpha+0x")) << list.out;
  EXPECT_FALSE(contains(list.out, "pending")) << list.out;

  // Routed: alloc_alpha's 64 KiB blocks (bundle by default) now come from the whale tier,
  // alloc_beta's do not.
  const uint64_t whale0 = tier_allocs(t->pid, "whale");
  ASSERT_TRUE(t->run("a 200 65536"));
  ASSERT_TRUE(t->run("b 200 65536"));
  EXPECT_EQ(tier_allocs(t->pid, "whale") - whale0, 200u);
}

// A function with two call sites, sampled one after the other: the config rule covers the
// first as soon as it is seen and gains the second, under the same rule id, when that one
// is sampled later.
TEST_F(Sites, ConfigRuleForFunctionGainsLaterCallSites) {
  ASSERT_TRUE(reload_with_rule("site=alloc_zeta tier=whale")) << log();
  Target* t = start_target();
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->run("b 10000 64"));  // site.rules on in the thread (see above)

  const json first = run_until_covered(t, "z 100 65536", "alloc_zeta");
  ASSERT_FALSE(first.is_null()) << rules_of(t->pid).dump(2) << "\n" << log();
  ASSERT_EQ(first.at("sites").size(), 1u) << first.dump(2);
  const uint64_t id = first.at("rule_id").get<uint64_t>();
  uint64_t whale0 = tier_allocs(t->pid, "whale");
  ASSERT_TRUE(t->run("z 200 65536"));
  EXPECT_EQ(tier_allocs(t->pid, "whale") - whale0, 200u);

  const json both = run_until_covered(t, "c 100 65536", "alloc_zeta", 2);
  ASSERT_FALSE(both.is_null()) << "the second call site was never added:\n"
                               << rules_of(t->pid).dump(2) << "\n" << log();
  EXPECT_EQ(both.at("rule_id").get<uint64_t>(), id) << both.dump(2);
  EXPECT_EQ(both.at("sites").size(), 2u) << both.dump(2);
  EXPECT_EQ(rules_of(t->pid).at("rules").size(), 1u);
  whale0 = tier_allocs(t->pid, "whale");
  ASSERT_TRUE(t->run("c 200 65536"));
  ASSERT_TRUE(t->run("z 200 65536"));
  EXPECT_EQ(tier_allocs(t->pid, "whale") - whale0, 400u);
}

}  // namespace

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
