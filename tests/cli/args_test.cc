// Argument parsing: every command's flags, values, and each usage error with its hint.
#include <gtest/gtest.h>

#include "args.h"
#include "exit.h"

using hakctl::CliError;
using hakctl::Exit;
using hakctl::Options;
using hakctl::parse_args;

namespace {

// Parses and expects a usage error whose message contains `needle`; returns the hint.
std::string usage_error(const std::vector<std::string>& args, const std::string& needle) {
  try {
    parse_args(args);
  } catch (const CliError& e) {
    EXPECT_EQ(e.code(), Exit::Usage) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
    return e.hint();
  }
  ADD_FAILURE() << "no usage error for " << ::testing::PrintToString(args);
  return {};
}

}  // namespace

TEST(Args, PsAndGlobalFlagsAnywhere) {
  Options o = parse_args({"--socket", "/tmp/s.sock", "ps", "--json"});
  EXPECT_EQ(o.command, "ps");
  EXPECT_EQ(o.socket, "/tmp/s.sock");
  EXPECT_TRUE(o.json);
  o = parse_args({"ps", "--socket=/x/y", "--timeout", "0.5"});
  EXPECT_EQ(o.socket, "/x/y");
  EXPECT_DOUBLE_EQ(o.timeout_s, 0.5);
}

TEST(Args, StatsFlags) {
  Options o = parse_args({"stats", "--pid", "1234", "--tier", "tiny"});
  EXPECT_EQ(o.pid, 1234);
  EXPECT_EQ(o.tier, "tiny");
  EXPECT_FALSE(o.watch);
}

TEST(Args, PidAndAllExcludeEachOther) {
  usage_error({"stats", "-p", "7", "--all"}, "exclude each other");
}

TEST(Args, WatchTakesOptionalSeconds) {
  Options o = parse_args({"stats", "--watch"});
  EXPECT_TRUE(o.watch);
  EXPECT_DOUBLE_EQ(o.interval_s, 1.0);
  o = parse_args({"stats", "--watch", "2.5", "--count", "3"});
  EXPECT_DOUBLE_EQ(o.interval_s, 2.5);
  EXPECT_EQ(o.count, 3);
  o = parse_args({"stats", "-w", "--pid", "9"});  // next word is a flag, not seconds
  EXPECT_TRUE(o.watch);
  EXPECT_EQ(o.pid, 9);
  o = parse_args({"stats", "--watch=3"});
  EXPECT_DOUBLE_EQ(o.interval_s, 3.0);
  usage_error({"stats", "--watch=0"}, "--watch expects seconds");
  usage_error({"stats", "--count", "2"}, "only with --watch");
}

TEST(Args, BadValues) {
  usage_error({"stats", "--pid", "abc"}, "--pid expects a whole number");
  usage_error({"stats", "--pid", "0"}, "--pid expects a whole number");
  usage_error({"stats", "--pid", "-3"}, "--pid expects a whole number");
  usage_error({"stats", "--pid"}, "--pid needs a value");
  usage_error({"ps", "--timeout", "0"}, "--timeout expects seconds");
  usage_error({"ps", "--socket="}, "--socket needs a path");
  usage_error({"ps", "--json=yes"}, "takes no value");
  std::string hint = usage_error({"stats", "--tier", "tinyy"}, "did you mean 'tiny'");
  EXPECT_NE(hint.find("tiny, pool, bundle and whale"), std::string::npos);
}

TEST(Args, UnknownCommandSuggestsClosest) {
  std::string hint = usage_error({"stat"}, "unknown command 'stat'; did you mean 'stats'?");
  EXPECT_NE(hint.find("hakctl help"), std::string::npos);
  usage_error({"frobnicate"}, "unknown command 'frobnicate'");
  usage_error({}, "no command given");
}

TEST(Args, UnknownOrMisplacedFlag) {
  std::string hint = usage_error({"stats", "--pidd", "3"}, "unknown option --pidd; did you mean --pid?");
  EXPECT_NE(hint.find("hakctl help stats"), std::string::npos);
  usage_error({"ps", "--pid", "3"}, "'ps' does not take --pid");
  usage_error({"knobs", "--watch"}, "'knobs' does not take --watch");
  usage_error({"ps", "extra"}, "takes no argument 'extra'");
}

TEST(Args, GetKeys) {
  Options o = parse_args({"get", "tiny.cap", "whale.decay_ms", "--pid", "42"});
  EXPECT_EQ(o.keys, (std::vector<std::string>{"tiny.cap", "whale.decay_ms"}));
  EXPECT_EQ(o.pid, 42);
  o = parse_args({"get"});
  EXPECT_TRUE(o.keys.empty());
  std::string hint = usage_error({"get", "tiny.cap=3"}, "get takes knob names");
  EXPECT_NE(hint.find("hakctl set tiny.cap=3"), std::string::npos);
}

TEST(Args, SetPairs) {
  Options o = parse_args({"set", "tiny.cap=64", "whale.cache_bytes=512M", "--pid", "1234"});
  ASSERT_EQ(o.assignments.size(), 2u);
  EXPECT_EQ(o.assignments[0], (std::pair<std::string, std::string>{"tiny.cap", "64"}));
  EXPECT_EQ(o.assignments[1], (std::pair<std::string, std::string>{"whale.cache_bytes", "512M"}));
  EXPECT_EQ(o.wait_ms, 1000);
  o = parse_args({"set", "--all", "tiny.prewarm=on", "--no-wait"});
  EXPECT_TRUE(o.all);
  EXPECT_EQ(o.wait_ms, 0);
  o = parse_args({"set", "a.b=x=y", "--pid", "1", "--wait", "250"});
  EXPECT_EQ(o.assignments[0].second, "x=y");  // only the first '=' splits
  EXPECT_EQ(o.wait_ms, 250);
}

TEST(Args, SetSyntaxErrorsCarryAHint) {
  std::string hint = usage_error({"set", "tiny.cap", "--pid", "1"}, "expected KEY=VALUE, got 'tiny.cap'");
  EXPECT_NE(hint.find("hakctl set tiny.cap=64 --pid 1234"), std::string::npos);
  usage_error({"set", "=64", "--pid", "1"}, "no knob name");
  usage_error({"set", "tiny.cap=", "--pid", "1"}, "no value after '=' for tiny.cap");
  usage_error({"set", "tiny.cap=1", "tiny.cap=2", "--pid", "1"}, "given twice");
  usage_error({"set", "--pid", "1"}, "at least one KEY=VALUE");
  usage_error({"set", "tiny.cap=64"}, "needs a target: --pid N or --all");
}

TEST(Args, HelpEverywhere) {
  EXPECT_EQ(parse_args({"--help"}).command, "help");
  Options o = parse_args({"set", "--help"});  // no pairs needed to ask for help
  EXPECT_EQ(o.command, "set");
  EXPECT_TRUE(o.help);
  o = parse_args({"help", "stats"});
  EXPECT_EQ(o.help_topic, "stats");
  usage_error({"help", "stast"}, "did you mean 'stats'");
  for (const auto& c : hakctl::command_names()) {
    const std::string text = hakctl::help_text(c);
    EXPECT_NE(text.find("Usage: hakctl " + c), std::string::npos) << c;
    EXPECT_NE(text.find("--socket"), std::string::npos) << c;
  }
  const std::string overview = hakctl::help_text("");
  for (const auto& c : hakctl::command_names()) EXPECT_NE(overview.find("  " + c + " "), std::string::npos) << c;
  EXPECT_NE(overview.find("Exit codes"), std::string::npos);
}

TEST(Args, KnobsAndMarkdown) {
  EXPECT_TRUE(parse_args({"knobs", "--markdown"}).markdown);
  usage_error({"knobs", "--markdown", "--json"}, "exclude each other");
}

TEST(Args, DoubleDashEndsFlags) {
  Options o = parse_args({"get", "--pid", "3", "--", "tiny.cap"});
  EXPECT_EQ(o.keys, std::vector<std::string>{"tiny.cap"});
}

TEST(Args, Closest) {
  EXPECT_EQ(hakctl::closest("stast", {"ps", "stats", "get"}), "stats");
  EXPECT_EQ(hakctl::closest("zzzzzz", {"ps", "stats", "get"}), "");
  EXPECT_EQ(hakctl::closest("--jsn", {"--json", "--socket"}), "--json");
}
