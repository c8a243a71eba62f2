// Unit tests of site rules: the rule text syntax (hakmemd), the symbolizer on this binary,
// proto's rule check and seq protocol, libhakmem's compiled rule table fed malformed
// entries (it must ignore them and keep the valid ones), and hakmemd following a config rule
// that names a function in this very process (registered through a segment of its own).
#include <gtest/gtest.h>
#include <unistd.h>

#include <memory>

#include "config.h"
#include "fake_segment.h"
#include "hakmem/proto/site_rules.h"
#include "registry.h"
#include "site_rules.h"
#include "sites.h"
#include "symbolize.h"

namespace proto = hakmem::proto;
using hakmemd::RuleSpec;

extern "C" __attribute__((noinline, used, visibility("default"))) int sites_probe_fn(int x) {
  return x * 3 + static_cast<int>(getpid() & 1);
}
extern "C" __attribute__((noinline, used, visibility("default"))) int sites_other_fn(int x) {
  return x * 5 + static_cast<int>(getppid() & 1);
}

namespace {

RuleSpec parse_ok(const std::string& t) {
  RuleSpec r;
  std::string err;
  EXPECT_TRUE(hakmemd::rule_parse(t, &r, &err)) << t << ": " << err;
  return r;
}
std::string parse_err(const std::string& t) {
  RuleSpec r;
  std::string err;
  EXPECT_FALSE(hakmemd::rule_parse(t, &r, &err)) << t;
  return err;
}

TEST(RuleParse, FullRule) {
  RuleSpec r = parse_ok("site=build_json+0x1c size=64K-1M tier=whale prewarm=on");
  EXPECT_EQ(r.site, "build_json+0x1c");
  EXPECT_EQ(r.min_size, 64u << 10);
  EXPECT_EQ(r.max_size, 1u << 20);
  EXPECT_EQ(r.tier, static_cast<int32_t>(proto::RuleTier::Whale));
  EXPECT_EQ(r.prewarm, 1);
  EXPECT_EQ(r.cap, 0u);
}

TEST(RuleParse, SizeForms) {
  RuleSpec r = parse_ok("site=0x1000 size=4k tier=pool");
  EXPECT_EQ(r.min_size, 4096u);
  EXPECT_EQ(r.max_size, 4096u);
  r = parse_ok("site=f size=1M- tier=bundle");
  EXPECT_EQ(r.min_size, 1u << 20);
  EXPECT_EQ(r.max_size, 0u);
  r = parse_ok("  site=f   size=-512   cap=64  ");
  EXPECT_EQ(r.min_size, 0u);
  EXPECT_EQ(r.max_size, 512u);
  EXPECT_EQ(r.cap, 64u);
  EXPECT_EQ(r.tier, -1);
  r = parse_ok("site=libfoo.so+0x10 prewarm=off tier=system");
  EXPECT_EQ(r.prewarm, 0);
  EXPECT_EQ(r.tier, static_cast<int32_t>(proto::RuleTier::System));
}

TEST(RuleParse, Errors) {
  EXPECT_NE(parse_err("tier=whale").find("needs site="), std::string::npos);
  EXPECT_NE(parse_err("site=f").find("needs an action"), std::string::npos);
  EXPECT_NE(parse_err("site=f teir=whale").find("did you mean 'tier'"), std::string::npos);
  EXPECT_NE(parse_err("site=f tier=elephant").find("unknown tier"), std::string::npos);
  EXPECT_NE(parse_err("site=f tier=whale size=1M-64K").find("empty"), std::string::npos);
  EXPECT_NE(parse_err("site=f tier=whale size=lots").find("size must be"), std::string::npos);
  EXPECT_NE(parse_err("site=f cap=0").find("cap must be"), std::string::npos);
  EXPECT_NE(parse_err("site=f cap=5000").find("cap must be"), std::string::npos);
  EXPECT_NE(parse_err("site=f prewarm=maybe").find("prewarm must be"), std::string::npos);
  EXPECT_NE(parse_err("site=f site=g tier=whale").find("twice"), std::string::npos);
  EXPECT_NE(parse_err("site=f whale").find("KEY=VALUE"), std::string::npos);
  EXPECT_NE(parse_err("site= tier=whale").find("no value"), std::string::npos);
}

TEST(RuleParse, TextRoundTrip) {
  proto::RuleValue v;
  v.id = 3;
  v.site = 0x1234;
  v.min_size = 64 << 10;
  v.max_size = 1 << 20;
  v.tier = 3;
  v.prewarm = 1;
  const std::string t = hakmemd::rule_text("build_json+0x1c", v);
  EXPECT_EQ(t, "site=build_json+0x1c size=64K-1M tier=whale prewarm=on");
  RuleSpec r = parse_ok(t);
  EXPECT_EQ(r.min_size, v.min_size);
  EXPECT_EQ(r.max_size, v.max_size);
}

TEST(RuleParse, ConfigRules) {
  hakmemd::Config c;
  std::string err;
  ASSERT_TRUE(hakmemd::config_parse(R"({"rules": [{"exe": "*/svc", "rule": "site=f+0x4 tier=whale"}]})", &c, &err))
      << err;
  ASSERT_EQ(c.rules.size(), 1u);
  EXPECT_EQ(c.rules[0].exe, "*/svc");
  EXPECT_FALSE(hakmemd::config_parse(R"({"rules": [{"exe": "*/svc", "rule": "site=f"}]})", &c, &err));
  EXPECT_NE(err.find("rules[0]"), std::string::npos);
  EXPECT_FALSE(hakmemd::config_parse(R"({"rules": [{"exe": "x", "rul": "site=f tier=whale"}]})", &c, &err));
  EXPECT_FALSE(hakmemd::config_parse(R"({"rules": {}})", &c, &err));
}

TEST(Symbolizer, NamesAndResolvesOwnFunction) {
  std::vector<hakmemd::Mapping> maps;
  std::string err;
  ASSERT_TRUE(hakmemd::read_maps(getpid(), &maps, &err)) << err;
  hakmemd::Symbolizer sym;
  const uint64_t fn = reinterpret_cast<uint64_t>(&sites_probe_fn);
  hakmemd::Symbolized s = sym.symbolize(maps, fn + 4);
  EXPECT_EQ(s.function, "sites_probe_fn");
  EXPECT_EQ(s.function_offset, 4u);
  EXPECT_EQ(s.spec(), "sites_probe_fn+0x4");
  EXPECT_NE(s.text().find("(sites_unit_test)"), std::string::npos) << s.text();

  std::vector<uint64_t> out;
  ASSERT_TRUE(sym.resolve(maps, "sites_probe_fn+0x4", {}, &out, &err)) << err;
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0], fn + 4);
  // module+offset: the module offset the symbolizer reported resolves back to the address.
  ASSERT_TRUE(sym.resolve(maps, "sites_unit_test+0x" + [&] {
    char b[32];
    snprintf(b, sizeof b, "%llx", static_cast<unsigned long long>(s.module_offset));
    return std::string(b);
  }(), {}, &out, &err)) << err;
  EXPECT_EQ(out[0], fn + 4);
  // A bare name covers the sampled sites inside the function only.
  ASSERT_TRUE(sym.resolve(maps, "sites_probe_fn", {fn + 4, fn + 8, 0x10}, &out, &err)) << err;
  EXPECT_EQ(out, (std::vector<uint64_t>{fn + 4, fn + 8}));
  EXPECT_FALSE(sym.resolve(maps, "sites_probe_fn", {}, &out, &err));
  EXPECT_NE(err.find("no sampled call site"), std::string::npos);
  EXPECT_FALSE(sym.resolve(maps, "no_such_function_xyz+0x4", {}, &out, &err));
  EXPECT_NE(err.find("unknown symbol 'no_such_function_xyz'"), std::string::npos);
  EXPECT_FALSE(sym.resolve(maps, "0x10", {}, &out, &err));
  EXPECT_GE(sym.cached_modules(), 1u);
  // function_sites: a known function with nothing sampled inside it is no error.
  ASSERT_TRUE(sym.function_sites(maps, "sites_probe_fn", {}, &out, &err)) << err;
  EXPECT_TRUE(out.empty());
  ASSERT_TRUE(sym.function_sites(maps, "sites_probe_fn", {fn + 8, 0x10, fn + 4}, &out, &err)) << err;
  EXPECT_EQ(out, (std::vector<uint64_t>{fn + 4, fn + 8}));
  EXPECT_FALSE(sym.function_sites(maps, "no_such_function_xyz", {fn + 4}, &out, &err));
  EXPECT_NE(err.find("unknown symbol 'no_such_function_xyz'"), std::string::npos);
}

TEST(Symbolizer, SiteNamesFunction) {
  EXPECT_TRUE(hakmemd::site_names_function("build_json"));
  EXPECT_TRUE(hakmemd::site_names_function("ns::Builder::add"));
  EXPECT_FALSE(hakmemd::site_names_function("build_json+0x1c"));
  EXPECT_FALSE(hakmemd::site_names_function("libfoo.so+0x10"));
  EXPECT_FALSE(hakmemd::site_names_function("0x55f5927da34b"));
  EXPECT_FALSE(hakmemd::site_names_function(""));
}

proto::RuleValue good(uint32_t id, uint64_t site) {
  proto::RuleValue v;
  v.id = id;
  v.site = site;
  v.tier = static_cast<int32_t>(proto::RuleTier::Whale);
  return v;
}

TEST(RuleCheck, RejectsEachMalformedField) {
  EXPECT_EQ(proto::rule_check(good(1, 0x10)), proto::RuleCheck::Ok);
  auto bad = [](auto mutate) {
    proto::RuleValue v = good(1, 0x10);
    mutate(v);
    return proto::rule_check(v);
  };
  EXPECT_EQ(bad([](auto& v) { v.id = 0; }), proto::RuleCheck::BadId);
  EXPECT_EQ(bad([](auto& v) { v.site = 0; }), proto::RuleCheck::BadSite);
  EXPECT_EQ(bad([](auto& v) { v.tier = 5; }), proto::RuleCheck::BadTier);
  EXPECT_EQ(bad([](auto& v) { v.tier = -7; }), proto::RuleCheck::BadTier);
  EXPECT_EQ(bad([](auto& v) { v.min_size = 10, v.max_size = 5; }), proto::RuleCheck::BadRange);
  EXPECT_EQ(bad([](auto& v) { v.cap = 5000; }), proto::RuleCheck::BadCap);
  EXPECT_EQ(bad([](auto& v) { v.prewarm = 2; }), proto::RuleCheck::BadPrewarm);
  EXPECT_EQ(bad([](auto& v) { v.tier = -1; }), proto::RuleCheck::NoAction);
}

TEST(RuleCheck, SeqProtocol) {
  proto::SiteRule r{};
  proto::RuleValue v;
  EXPECT_EQ(proto::rule_read(r, &v), proto::RuleCheck::Empty);
  proto::RuleValue w = good(7, 0xabc);
  proto::rule_write(r, &w);
  EXPECT_EQ(r.seq.load() % 2, 0u);
  ASSERT_EQ(proto::rule_read(r, &v), proto::RuleCheck::Ok);
  EXPECT_EQ(v.id, 7u);
  EXPECT_EQ(v.site, 0xabcu);
  r.seq.store(r.seq.load() | 1);  // a writer mid-way
  EXPECT_EQ(proto::rule_read(r, &v), proto::RuleCheck::Busy);
  r.seq.store(r.seq.load() + 1);
  proto::rule_write(r, nullptr);
  EXPECT_EQ(proto::rule_read(r, &v), proto::RuleCheck::Empty);
}

TEST(HistBucket, Boundaries) {
  EXPECT_EQ(proto::site_hist_bucket(1), 0u);
  EXPECT_EQ(proto::site_hist_bucket(16), 0u);
  EXPECT_EQ(proto::site_hist_bucket(17), 1u);
  EXPECT_EQ(proto::site_hist_bucket(32), 1u);
  EXPECT_EQ(proto::site_hist_bucket(256 << 10), 14u);
  EXPECT_EQ(proto::site_hist_bucket((256 << 10) + 1), 15u);
  EXPECT_EQ(proto::site_hist_bucket(uint64_t{1} << 40), 15u);
}

// The library side: a block mixing valid rules with every kind of garbage.
TEST(LibraryRules, CompileIgnoresMalformedEntries) {
  static proto::RuleBlock rb{};
  auto put = [](size_t slot, proto::RuleValue v) { proto::rule_write(rb.rules[slot], &v); };
  proto::RuleValue a = good(1, 0x1000);
  a.min_size = 100;
  a.max_size = 200;
  put(0, a);
  proto::RuleValue b = good(2, 0x1000);  // same site, later slot, wider range
  b.tier = static_cast<int32_t>(proto::RuleTier::Pool);
  b.cap = 8;
  put(1, b);
  put(2, good(3, 0x2000));
  // Garbage: zero id, zero site, bad tier, bad range, bad cap, bad prewarm, no action.
  proto::RuleValue g = good(0, 0x3000);
  put(3, g);
  g = good(4, 0);
  put(4, g);
  g = good(5, 0x3000);
  g.tier = 42;
  put(5, g);
  g = good(6, 0x3000);
  g.min_size = 9, g.max_size = 1;
  put(6, g);
  g = good(7, 0x3000);
  g.cap = 99999;
  put(7, g);
  g = good(8, 0x3000);
  g.prewarm = -5;
  put(8, g);
  g = good(9, 0x3000);
  g.tier = -1;
  put(9, g);
  // A slot left odd (a writer that died mid-write).
  put(10, good(10, 0x4000));
  rb.rules[10].seq.fetch_add(1);

  uint32_t rejected = 0;
  EXPECT_EQ(hakmem::site_rules_compile(rb, &rejected), 3u);
  EXPECT_EQ(rejected, 8u);
  EXPECT_EQ(hakmem::site_rules_count(), 3u);

  hakmem::SiteAction act;
  ASSERT_TRUE(hakmem::site_rules_lookup(0x1000, 150, &act));
  EXPECT_EQ(act.id, 1u);  // the lowest slot wins
  EXPECT_EQ(act.tier, static_cast<int32_t>(proto::RuleTier::Whale));
  ASSERT_TRUE(hakmem::site_rules_lookup(0x1000, 5000, &act));
  EXPECT_EQ(act.id, 2u);
  EXPECT_EQ(act.cap, 8u);
  EXPECT_EQ(act.prewarm, -1);
  ASSERT_TRUE(hakmem::site_rules_lookup(0x2000, 1, &act));
  EXPECT_EQ(act.id, 3u);
  EXPECT_FALSE(hakmem::site_rules_lookup(0x3000, 1, &act));
  EXPECT_FALSE(hakmem::site_rules_lookup(0x4000, 1, &act));
  EXPECT_FALSE(hakmem::site_rules_lookup(0x5000, 1, &act));

  // refresh recompiles on a generation change and publishes the figures.
  proto::rule_write(rb.rules[2], nullptr);
  rb.generation.fetch_add(1);
  hakmem::site_rules_refresh(rb);
  EXPECT_EQ(rb.rules_active.load(), 2u);
  EXPECT_EQ(rb.applied_generation.load(), rb.generation.load());
  EXPECT_FALSE(hakmem::site_rules_lookup(0x2000, 1, &act));
}

// hakmemd following a config rule that names a function, in this very process: a segment
// for our own pid (so /proc/self/maps and this binary's symbols resolve sites_probe_fn),
// registered by a Registry that applies the config rules to new processes. The test plays
// the allocator: it writes sampled call sites into the site table.
class FollowedConfigRule : public ::testing::Test {
 protected:
  void SetUp() override {
    seg_ = std::make_unique<hakmem_test::FakeSegment>(dir_.path(), getpid(), getuid());
    ASSERT_TRUE(seg_->ok());
  }
  // The daemon registers the process, with `rule` in its config.
  void start(const std::string& rule) {
    rules_ = {{"*/sites_unit_test", rule}};
    reg_ = std::make_unique<hakmemd::Registry>(dir_.path());
    reg_->on_new = [this](hakmemd::ProcessEntry& e) { hakmemd::sites_apply_config(e, rules_); };
    reg_->scan();
    ASSERT_NE(reg_->find(getpid()), nullptr) << "our own segment was not registered";
  }
  // The allocator recorded a sample at `site`.
  void sample(uint64_t site) { seg_->seg().sites[sampled_++].addr.store(site); }
  // The daemon's periodic pass.
  void follow() { hakmemd::sites_follow(*reg_); }
  nlohmann::ordered_json call(const char* cmd, nlohmann::ordered_json req) {
    req["pid"] = static_cast<uint64_t>(getpid());
    hakmemd::SitesResult r = hakmemd::sites_command(*reg_, cmd, req, getuid());
    EXPECT_TRUE(r.ok) << cmd << ": " << r.code << " " << r.message;
    return r.ok && cmd == std::string("rules_list") ? r.result.at("processes").at(0) : r.result;
  }
  nlohmann::ordered_json list() { return call("rules_list", nlohmann::ordered_json::object()); }
  uint64_t generation() { return seg_->seg().rules.generation.load(); }
  // Slots holding `site` under rule `id` with tier whale.
  int slots(uint32_t id, uint64_t site) {
    int n = 0;
    for (const proto::SiteRule& r : seg_->seg().rules.rules) {
      proto::RuleValue v;
      if (proto::rule_read(r, &v) == proto::RuleCheck::Ok && v.id == id && v.site == site &&
          v.tier == static_cast<int32_t>(proto::RuleTier::Whale))
        n++;
    }
    return n;
  }

  const uint64_t fn_ = reinterpret_cast<uint64_t>(&sites_probe_fn);
  hakmem_test::TempDir dir_;
  std::vector<hakmemd::ConfigRule> rules_;
  std::unique_ptr<hakmem_test::FakeSegment> seg_;
  std::unique_ptr<hakmemd::Registry> reg_;
  size_t sampled_ = 0;
};

TEST_F(FollowedConfigRule, PendingUntilSampledThenGainsEachCallSite) {
  start("site=sites_probe_fn tier=whale");
  auto p = list();
  EXPECT_TRUE(p.at("rules").empty());
  ASSERT_EQ(p.at("pending_rules").size(), 1u) << p.dump(2);
  EXPECT_EQ(p["pending_rules"][0].at("rule"), "site=sites_probe_fn tier=whale");
  EXPECT_EQ(p["pending_rules"][0].at("config"), "*/sites_unit_test");
  EXPECT_EQ(p["pending_rules"][0].at("rule_id"), 0u);
  EXPECT_EQ(p["pending_rules"][0].at("reason"), "no call site inside sites_probe_fn sampled yet");
  EXPECT_EQ(generation(), 0u);
  follow();  // nothing sampled: nothing written
  EXPECT_EQ(generation(), 0u);

  // A call site elsewhere does not match; one inside the function installs rule 1.
  sample(reinterpret_cast<uint64_t>(&sites_other_fn) + 4);
  follow();
  EXPECT_EQ(generation(), 0u);
  sample(fn_ + 4);
  follow();
  EXPECT_EQ(generation(), 1u);
  EXPECT_EQ(slots(1, fn_ + 4), 1);
  p = list();
  EXPECT_TRUE(p.at("pending_rules").empty()) << p.dump(2);
  ASSERT_EQ(p.at("rules").size(), 1u);
  EXPECT_EQ(p["rules"][0].at("rule"), "site=sites_probe_fn tier=whale");
  EXPECT_EQ(p["rules"][0].at("follows"), "sites_probe_fn");
  EXPECT_EQ(p["rules"][0].at("config"), "*/sites_unit_test");
  EXPECT_EQ(p["rules"][0].at("sites").size(), 1u);

  // A second call site sampled later joins the same rule; a pass with nothing new writes nothing.
  sample(fn_ + 8);
  follow();
  EXPECT_EQ(slots(1, fn_ + 8), 1);
  EXPECT_EQ(slots(1, fn_ + 4), 1);
  const uint64_t gen = generation();
  follow();
  EXPECT_EQ(generation(), gen);
  p = list();
  ASSERT_EQ(p.at("rules").size(), 1u);
  EXPECT_EQ(p["rules"][0].at("sites").size(), 2u);
}

TEST_F(FollowedConfigRule, CallSitesWaitForAFreeSlot) {
  // 63 of the 64 slots taken by other rules (ids 100..162).
  for (size_t i = 0; i + 1 < proto::kRuleSlots; i++) {
    proto::RuleValue v;
    v.id = static_cast<uint32_t>(100 + i);
    v.site = 0x1000 + 16 * i;
    v.tier = static_cast<int32_t>(proto::RuleTier::Pool);
    proto::rule_write(seg_->seg().rules.rules[i], &v);
  }
  start("site=sites_probe_fn tier=whale");
  sample(fn_ + 4);
  sample(fn_ + 8);
  follow();
  // One call site fits (rule 163), the other waits, and rules_list says why.
  EXPECT_EQ(slots(163, fn_ + 4) + slots(163, fn_ + 8), 1);
  auto p = list();
  ASSERT_EQ(p.at("pending_rules").size(), 1u) << p.dump(2);
  EXPECT_EQ(p["pending_rules"][0].at("rule_id"), 163u);
  EXPECT_EQ(p["pending_rules"][0].at("sites").size(), 1u);
  EXPECT_NE(p["pending_rules"][0].at("reason").get<std::string>().find("no free rule slot"), std::string::npos);
  // An operator deletes a rule: the waiting call site takes its slot at the next pass,
  // though nothing new was sampled.
  call("rules_del", {{"rule_id", 100u}});
  follow();
  EXPECT_EQ(slots(163, fn_ + 4), 1);
  EXPECT_EQ(slots(163, fn_ + 8), 1);
  EXPECT_TRUE(list().at("pending_rules").empty());
}

TEST_F(FollowedConfigRule, DeletedRuleIsNotReinstalled) {
  start("site=sites_probe_fn tier=whale");
  sample(fn_ + 4);
  follow();
  ASSERT_EQ(slots(1, fn_ + 4), 1);
  call("rules_del", {{"rule_id", 1u}});
  // The operator removed it: a new call site of the function brings it back under no id.
  sample(fn_ + 8);
  follow();
  for (uint32_t id = 1; id < 4; id++) EXPECT_EQ(slots(id, fn_ + 8), 0);
  auto p = list();
  EXPECT_TRUE(p.at("rules").empty()) << p.dump(2);
  EXPECT_TRUE(p.at("pending_rules").empty()) << p.dump(2);
}

TEST_F(FollowedConfigRule, ReloadWithoutTheRuleStopsFollowing) {
  start("site=sites_probe_fn tier=whale");
  ASSERT_EQ(list().at("pending_rules").size(), 1u);
  hakmemd::sites_config_reloaded(*reg_, {{"*/sites_unit_test", "site=sites_probe_fn tier=pool"}});
  EXPECT_TRUE(list().at("pending_rules").empty());
  sample(fn_ + 4);
  follow();
  EXPECT_EQ(generation(), 0u);
}

}  // namespace
