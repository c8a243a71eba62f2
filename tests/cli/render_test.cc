// Units, table layout and the views of each reply shape: what people read.
#include <gtest/gtest.h>

#include "client.h"
#include "sites_cmd.h"
#include "hakmem/proto/knobs.h"
#include "table.h"
#include "units.h"
#include "views.h"

using namespace hakctl;

TEST(Units, Bytes) {
  EXPECT_EQ(format_bytes(0), "0 B");
  EXPECT_EQ(format_bytes(1023), "1023 B");
  EXPECT_EQ(format_bytes(1024), "1.00 KiB");
  EXPECT_EQ(format_bytes(1536), "1.50 KiB");
  EXPECT_EQ(format_bytes(12ull * 1024 * 1024 + 300 * 1024), "12.3 MiB");
  EXPECT_EQ(format_bytes(200ull << 20), "200 MiB");
  EXPECT_EQ(format_bytes(1ull << 30), "1.00 GiB");
  EXPECT_EQ(format_bytes(5ull << 40), "5.00 TiB");
  // Rounding that reaches the next unit moves to it instead of printing "1024 KiB".
  EXPECT_EQ(format_bytes((1ull << 20) - 1), "1.00 MiB");
}

TEST(Units, Counts) {
  EXPECT_EQ(format_count(0), "0");
  EXPECT_EQ(format_count(999), "999");
  EXPECT_EQ(format_count(1000), "1.00k");
  EXPECT_EQ(format_count(1500), "1.50k");
  EXPECT_EQ(format_count(15300), "15.3k");
  EXPECT_EQ(format_count(153000), "153k");
  EXPECT_EQ(format_count(999999), "1.00M");
  EXPECT_EQ(format_count(2500000), "2.50M");
  EXPECT_EQ(format_count(7000000000ull), "7.00G");
}

TEST(Units, RatesPercentDuration) {
  EXPECT_EQ(format_rate(0), "0/s");
  EXPECT_EQ(format_rate(0.5), "0.5/s");
  EXPECT_EQ(format_rate(12), "12/s");
  EXPECT_EQ(format_rate(1234.5), "1.23k/s");
  EXPECT_EQ(format_rate(3.2e6), "3.20M/s");
  EXPECT_EQ(format_rate(-1), "-");
  EXPECT_EQ(format_percent(998, 1000), "99.8%");
  EXPECT_EQ(format_percent(1, 1), "100.0%");
  EXPECT_EQ(format_percent(0, 0), "-");
  EXPECT_EQ(format_duration(45.7), "45s");
  EXPECT_EQ(format_duration(312), "5m12s");
  EXPECT_EQ(format_duration(3 * 3600 + 5 * 60), "3h05m");
  EXPECT_EQ(format_duration(2 * 86400 + 4 * 3600), "2d04h");
}

TEST(TableRender, AlignsColumnsWithoutTrailingBlanks) {
  Table t({{"NAME", Align::Left}, {"N", Align::Right}, {"NOTE", Align::Left}});
  t.add_row({"tiny", "5", "x"});
  t.add_row({"bundle", "12345", ""});
  t.add_row({"é→", "1"});  // short row, multibyte text
  EXPECT_EQ(t.render(),
            "NAME        N  NOTE\n"
            "tiny        5  x\n"
            "bundle  12345\n"
            "é→          1\n");
}

namespace {

json stats_result() {
  return json::parse(R"({"processes":[{"pid":1234,"exe":"/usr/bin/svc","cmdline":"svc -x","uptime_s":312.4,
    "threads":3,"page_faults":1500,"rss_bytes":12902400,
    "tiers":{"tiny":{"allocs":2000000,"frees":1999000,"hits":1996000,"misses":4000,"remote_frees":12,
                     "live_bytes":65536,"cached_bytes":1048576,"mapped_bytes":4194304,"os_maps":4,
                     "cache_hits":0,"cache_misses":0},
             "pool":{"allocs":1000,"frees":1000,"hits":900,"misses":100,"remote_frees":0,"live_bytes":0,
                     "cached_bytes":131072,"mapped_bytes":131072,"os_maps":2,"cache_hits":3,"cache_misses":1},
             "bundle":{},"whale":{"allocs":5,"frees":5,"live_bytes":0,"mapped_bytes":0,"cache_hits":4,"cache_misses":1}},
    "errors":{"invalid_frees":2,"double_frees":0},"knobs":{"tiny.cap":0}}]})");
}

}  // namespace

TEST(Views, StatsTable) {
  const std::string s = render_stats(stats_result(), "");
  EXPECT_EQ(s,
            "pid 1234  /usr/bin/svc  up 5m12s  threads 3  rss 12.3 MiB  page faults 1.50k\n"
            "TIER    ALLOCS  FREES    HIT%  MISSES  REMOTE      LIVE    CACHED    MAPPED  CACHE%  MMAPS\n"
            "tiny     2.00M  2.00M   99.8%   4.00k      12  64.0 KiB  1.00 MiB  4.00 MiB       -      4\n"
            "pool     1.00k  1.00k   90.0%     100       0       0 B   128 KiB   128 KiB   75.0%      2\n"
            "bundle       0      0       -       0       0       0 B       0 B       0 B       -      0\n"
            "whale        5      5  100.0%       0       0       0 B       0 B       0 B   80.0%      0\n"
            "total    2.00M  2.00M   99.8%   4.10k      12  64.0 KiB  1.12 MiB  4.12 MiB              6\n"
            "errors: 2 invalid frees, 0 double frees\n");
}

TEST(Views, StatsOneTierAndJsonFilter) {
  const std::string s = render_stats(stats_result(), "pool");
  EXPECT_NE(s.find("\npool "), std::string::npos);
  EXPECT_EQ(s.find("tiny "), std::string::npos);
  EXPECT_EQ(s.find("total"), std::string::npos);
  const json j = filter_tier(stats_result(), "whale");
  ASSERT_EQ(j["processes"][0]["tiers"].size(), 1u);
  EXPECT_EQ(j["processes"][0]["tiers"]["whale"]["allocs"], 5);
  EXPECT_EQ(j["processes"][0]["pid"], 1234);  // everything else as is
  EXPECT_EQ(j["processes"][0]["knobs"]["tiny.cap"], 0);
  json with_classes = stats_result();
  with_classes["processes"][0]["tiny_classes"] = json::array({{{"size", 16}, {"allocs", 3}}});
  EXPECT_FALSE(filter_tier(with_classes, "whale")["processes"][0].contains("tiny_classes"));
  EXPECT_TRUE(filter_tier(with_classes, "tiny")["processes"][0].contains("tiny_classes"));
}

TEST(Views, EmptyAndMalformedRepliesDoNotCrash) {
  EXPECT_NE(render_stats(json::object(), "").find("no processes"), std::string::npos);
  EXPECT_NE(render_ps(json::parse(R"({"processes":[]})")).find("no processes"), std::string::npos);
  // Wrong types show as zeros rather than throwing.
  const json bad = json::parse(R"({"processes":[{"pid":"x","tiers":{"tiny":{"allocs":"many"}},"uptime_s":null}, 7]})");
  EXPECT_NO_THROW(render_stats(bad, ""));
  EXPECT_NO_THROW(render_ps(bad));
  EXPECT_NO_THROW(render_get(bad));
  EXPECT_NO_THROW(render_watch(bad, bad, 1.0, ""));
}

TEST(Views, Ps) {
  const json r = json::parse(R"({"processes":[
    {"pid":1234,"uid":1000,"exe":"/usr/bin/svc","uptime_s":100,"threads":3,"live_bytes":1048576,
     "mapped_bytes":8388608,"allocs":250000,"frees":240000},
    {"pid":99,"exe":"","cmdline":"python3 x.py","uptime_s":3725,"threads":1,"live_bytes":10,"mapped_bytes":4096,"allocs":5}]})");
  EXPECT_EQ(render_ps(r),
            " PID  UPTIME  THREADS      LIVE    MAPPED  ALLOCS  ALLOCS/S  EXE\n"
            "1234   1m40s        3  1.00 MiB  8.00 MiB    250k   2.50k/s  /usr/bin/svc\n"
            "  99   1h02m        1      10 B  4.00 KiB       5     0.0/s  python3 x.py\n");
}

TEST(Views, WatchRates) {
  json before = stats_result();
  json after = stats_result();
  after["processes"][0]["uptime_s"] = 314.4;
  after["processes"][0]["tiers"]["tiny"]["allocs"] = 2000000 + 20000;
  after["processes"][0]["tiers"]["tiny"]["hits"] = 1996000 + 19000;
  const std::string first = render_watch(after, json(), 0, "tiny");
  EXPECT_NE(first.find("tiny         -        -"), std::string::npos) << first;
  const std::string s = render_watch(after, before, 2.0, "tiny");
  // 20000 allocs over 2 s, 19000 of them hits.
  EXPECT_NE(s.find("10.0k/s"), std::string::npos) << s;
  EXPECT_NE(s.find("95.0%"), std::string::npos) << s;
  EXPECT_NE(s.find("ALLOCS/S"), std::string::npos);
  // A restarted pid (uptime went backwards) gets no rates.
  after["processes"][0]["uptime_s"] = 1.0;
  EXPECT_EQ(render_watch(after, before, 2.0, "tiny").find("k/s"), std::string::npos);
}

TEST(Views, GetOrdersByKnobTableAndShowsSource) {
  const json r = json::parse(R"({"processes":[{"pid":1234,"exe":"/x","generation":5,"applied_generation":4,
    "knobs":{"whale.cache_bytes":{"value":536870912,"source":"env"},"tiny.cap":{"value":64,"source":"set"}}}]})");
  EXPECT_EQ(render_get(r),
            " PID  KNOB               VALUE  DEFAULT  SOURCE\n"
            "1234  tiny.cap              64        0  set\n"
            "1234  whale.cache_bytes   512M       1G  env\n"
            "pid 1234: knob generation 5 not applied yet (the process applied 4; it picks changes up on its next "
            "allocations)\n");
}

TEST(Views, SetShowsOldToNewAndApplied) {
  const json r = json::parse(R"({"changes":[{"pid":1234,"knob":"tiny.cap","old":0,"new":64},
    {"pid":1234,"knob":"whale.cache_bytes","old":1073741824,"new":"512M"},
    {"pid":77,"knob":"tiny.cap","old":64,"new":64}],
    "processes":[{"pid":1234,"generation":5,"applied":true,"apply_ms":3.25},{"pid":77,"generation":2,"applied":false}]})");
  EXPECT_EQ(render_set(r, 1000),
            "pid 1234 tiny.cap: 0 -> 64\n"
            "pid 1234 whale.cache_bytes: 1G -> 512M\n"
            "pid 77 tiny.cap: 64 -> 64 (unchanged)\n"
            "pid 1234: applied in 3.2 ms\n"
            "pid 77: not applied within 1000 ms; the process picks the change up on its next allocations\n");
  EXPECT_EQ(render_set(r, 0).find("applied"), std::string::npos);
}

TEST(Views, KnobTableComesFromProto) {
  const std::string t = render_knobs();
  const std::string md = render_knobs_markdown();
  const json j = knobs_json();
  ASSERT_EQ(j["knobs"].size(), hakmem::proto::kKnobCount);
  for (const auto& k : hakmem::proto::kKnobs) {
    EXPECT_NE(t.find(k.name), std::string::npos) << k.name;
    EXPECT_NE(t.find(k.env), std::string::npos) << k.name;
    EXPECT_NE(t.find(k.help), std::string::npos) << k.name;
    EXPECT_NE(md.find(std::string("| `") + k.env + "` | `" + k.name + "` |"), std::string::npos) << k.name;
  }
  EXPECT_NE(t.find("whale.cache_bytes     size       1G  0..64G      live"), std::string::npos) << t;
  EXPECT_NE(md.find("| at start only |"), std::string::npos);
  EXPECT_EQ(j["knobs"][0]["name"], "tiny.cap");
  EXPECT_EQ(j["knobs"][0]["max"], 1024);
  EXPECT_EQ(j["knobs"][0]["env"], "HAKMEM_TINY_CAP");
}

TEST(Views, KnobValueText) {
  EXPECT_EQ(knob_value_text("whale.cache_bytes", json(1073741824)), "1G");
  EXPECT_EQ(knob_value_text("tiny.cap", json(64)), "64");
  EXPECT_EQ(knob_value_text("tiny.prewarm", json(true)), "1");
  EXPECT_EQ(knob_value_text("no.such", json(5)), "5");
  EXPECT_EQ(knob_value_text("tiny.cap", json("auto")), "auto");
}

// rules list: installed rules, then config rules still waiting for a call site (ID "-") or for
// a free slot (their id, the waiting sites).
TEST(Views, RulesListShowsPendingConfigRules) {
  const json r = json::parse(R"J({"processes":[{"pid":42,"exe":"/usr/bin/svc","site_rules":true,
    "generation":3,"applied_generation":3,"rule_hits":10,
    "rules":[{"rule_id":1,"rule":"site=build_json tier=whale","config":"*/svc","follows":"build_json",
              "sites":[{"addr":"0x10","site":"build_json+0x1c (svc)"}]}],
    "pending_rules":[{"rule":"site=parse tier=pool","config":"*/svc","rule_id":0,
                      "reason":"no call site inside parse sampled yet","sites":[]},
                     {"rule":"site=emit tier=bundle","config":"*/svc","rule_id":2,
                      "reason":"no free rule slot (64 per process): delete a rule to make room",
                      "sites":[{"addr":"0x20","site":"emit+0x8 (svc)"}]}]}]})J");
  EXPECT_EQ(render_rules(r),
            "pid 42  /usr/bin/svc  site.rules on  generation 3 (applied 3)  rule hits 10\n"
            "ID  RULE                        SITES\n"
            " 1  site=build_json tier=whale  build_json+0x1c (svc)\n"
            " -  site=parse tier=pool        pending: no call site inside parse sampled yet\n"
            " 2  site=emit tier=bundle       pending: emit+0x8 (svc): no free rule slot (64 per process): delete a "
            "rule to make room\n");
  // Only pending rules: a table, not "no rules"; a daemon without pending_rules: as before.
  json only = r;
  only["processes"][0]["rules"] = json::array();
  EXPECT_EQ(render_rules(only).find("no rules"), std::string::npos);
  json old = r;
  old["processes"][0].erase("pending_rules");
  old["processes"][0]["rules"] = json::array();
  EXPECT_NE(render_rules(old).find("no rules"), std::string::npos);
}
