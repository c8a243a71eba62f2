#include <gtest/gtest.h>

#include <set>
#include <string>

#include "hakmem/proto/knobs.h"

using namespace hakmem::proto;

namespace {
const KnobInfo& K(const char* name) {
  const KnobInfo* k = knob_find(name);
  EXPECT_NE(k, nullptr) << name;
  return *k;
}
}  // namespace

TEST(Knobs, TableHasTheDesignKnobsWithUniqueNamesAndEnvVars) {
  for (const char* n : {"tiny.cap", "tiny.prewarm", "pool.prewarm", "bundle.prewarm", "whale.prewarm",
                        "whale.cache_bytes", "whale.decay_ms", "site.rules", "stats.enable"})
    EXPECT_NE(knob_find(n), nullptr) << n;
  std::set<std::string> names, envs;
  for (const KnobInfo& k : kKnobs) {
    EXPECT_TRUE(names.insert(k.name).second) << k.name;
    EXPECT_TRUE(envs.insert(k.env).second) << k.env;
    EXPECT_EQ(std::string(k.env).rfind("HAKMEM_", 0), 0u) << k.env;
  }
  EXPECT_EQ(knob_find("tiny.nope"), nullptr);
  EXPECT_STREQ(K("site.rules").env, "HAKMEM_SITE_RULES");
  EXPECT_STREQ(K("tiny.cap").env, "HAKMEM_TINY_CAP");
}

TEST(Knobs, ParsesBooleansInEverySpelling) {
  uint64_t v = 7;
  for (const char* s : {"1", "true", "ON", "yes", "True"}) {
    EXPECT_EQ(knob_parse(K("site.rules"), s, &v), ParseError::Ok) << s;
    EXPECT_EQ(v, 1u);
  }
  for (const char* s : {"0", "false", "off", "No"}) {
    EXPECT_EQ(knob_parse(K("site.rules"), s, &v), ParseError::Ok) << s;
    EXPECT_EQ(v, 0u);
  }
  EXPECT_EQ(knob_parse(K("site.rules"), "2", &v), ParseError::Syntax);
  EXPECT_EQ(knob_parse(K("site.rules"), "", &v), ParseError::Empty);
}

TEST(Knobs, ParsesSizesWithSuffixes) {
  uint64_t v = 0;
  const KnobInfo& k = K("whale.cache_bytes");
  EXPECT_EQ(knob_parse(k, "512M", &v), ParseError::Ok);
  EXPECT_EQ(v, 512ull << 20);
  EXPECT_EQ(knob_parse(k, "2g", &v), ParseError::Ok);
  EXPECT_EQ(v, 2ull << 30);
  EXPECT_EQ(knob_parse(k, "64KiB", &v), ParseError::Ok);
  EXPECT_EQ(v, 64ull << 10);
  EXPECT_EQ(knob_parse(k, "4096", &v), ParseError::Ok);
  EXPECT_EQ(v, 4096u);
  EXPECT_EQ(knob_parse(k, "0x1000", &v), ParseError::Ok);
  EXPECT_EQ(v, 4096u);
  EXPECT_EQ(knob_parse(k, "1Q", &v), ParseError::Syntax);
  EXPECT_EQ(knob_parse(k, "M", &v), ParseError::Syntax);
  EXPECT_EQ(knob_parse(k, "100T", &v), ParseError::OutOfRange);
  EXPECT_EQ(v, 100ull << 40);  // the parsed value is reported with the range error
  EXPECT_EQ(knob_parse(k, "99999999999999999999", &v), ParseError::Overflow);
  EXPECT_EQ(knob_parse(k, "16777216T", &v), ParseError::Overflow);
}

TEST(Knobs, ParsesUintAndMillisAndRefusesOutOfRange) {
  uint64_t v = 0;
  EXPECT_EQ(knob_parse(K("tiny.cap"), "64", &v), ParseError::Ok);
  EXPECT_EQ(v, 64u);
  EXPECT_EQ(knob_parse(K("tiny.cap"), "1025", &v), ParseError::OutOfRange);
  EXPECT_EQ(knob_parse(K("tiny.cap"), "64K", &v), ParseError::Syntax);  // no suffix on counts
  EXPECT_EQ(knob_parse(K("tiny.cap"), "-1", &v), ParseError::Syntax);
  EXPECT_EQ(knob_parse(K("tiny.cap"), "12 ", &v), ParseError::Syntax);
  EXPECT_EQ(knob_parse(K("whale.decay_ms"), "2s", &v), ParseError::Ok);
  EXPECT_EQ(v, 2000u);
  EXPECT_EQ(knob_parse(K("whale.decay_ms"), "250ms", &v), ParseError::Ok);
  EXPECT_EQ(v, 250u);
}

TEST(Knobs, ClampAndFormatRoundTrip) {
  const KnobInfo& k = K("whale.cache_bytes");
  EXPECT_EQ(knob_clamp(k, UINT64_MAX), k.max);
  EXPECT_EQ(knob_clamp(K("tiny.cap"), 5000), 1024u);
  char buf[32];
  knob_format(k, 1ull << 30, buf, sizeof buf);
  EXPECT_STREQ(buf, "1G");
  knob_format(k, 3 * 1024 + 1, buf, sizeof buf);
  EXPECT_STREQ(buf, "3073");
  knob_format(K("tiny.cap"), 1024, buf, sizeof buf);
  EXPECT_STREQ(buf, "1024");
  uint64_t v = 0;
  for (uint64_t x : {0ull, 1ull, 4096ull, 3ull << 20, 64ull << 30}) {
    knob_format(k, x, buf, sizeof buf);
    ASSERT_EQ(knob_parse(k, buf, &v), ParseError::Ok) << buf;
    EXPECT_EQ(v, x);
  }
  knob_format(k, 123456, buf, 4);  // truncation stays NUL-terminated
  EXPECT_STREQ(buf, "123");
}
