// Faults and bad input against the real hakmemd (label fault): a fuzz test of its request
// parsing (mutated JSON lines, fixed seed in CI, millions on demand via HAKMEM_FUZZ_COUNT),
// and hostile files in the segment folder (truncated, wrong magic/version, garbage, special
// files, a segment truncated under the daemon's mapping). After each, the daemon must still
// answer hello and list a real preloaded process correctly.
//
// Reuses the daemon engineer's harness (tests/daemon): DaemonProc, Client, FakeSegment.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <random>
#include <string>
#include <vector>

#include "daemon_harness.h"

namespace {

using hakmem_test::Client;
using hakmem_test::DaemonProc;
using hakmem_test::eventually;
using hakmem_test::json;
namespace proto = hakmem::proto;

uint64_t env_u64(const char* name, uint64_t def) {
  const char* v = getenv(name);
  return v && *v ? strtoull(v, nullptr, 0) : def;
}

// A real process running libhakmem (stress_mixed, preloaded) whose segment lives in the
// daemon's folder, so get/set/stats reach a live target. Killed at the end; it must still
// be alive then (nothing the daemon wrote into its segment may crash it).
class Target {
 public:
  explicit Target(const std::string& shm) {
    pid_ = fork();
    if (pid_ == 0) {
      setenv("LD_PRELOAD", HAKMEM_LIB, 1);
      setenv("HAKMEM_EXPECT", "1", 1);
      setenv("HAKMEM_SHM_DIR", shm.c_str(), 1);
      int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, 1);
      execl(STRESS_MIXED, STRESS_MIXED, "--threads", "2", "--seconds", "100000", "--max-mib", "2",
            static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~Target() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }
  // True while the process runs; records how it ended otherwise.
  bool alive() {
    if (pid_ <= 0) return false;
    int st = 0;
    if (waitpid(pid_, &st, WNOHANG) == pid_) {
      status_ = st;
      pid_ = -1;
      return false;
    }
    return true;
  }
  int status() const { return status_; }

 private:
  pid_t pid_ = -1;
  int status_ = -1;
};

bool hello_ok(DaemonProc& d) {
  Client c(d.socket());
  json r = c.call({{"id", 1}, {"cmd", "hello"}, {"version", proto::kProtocolVersion}, {"client", "fault-test"}});
  return r.is_object() && r.value("ok", false) == true;
}

// Printable form of a fuzz input for the failure message.
std::string escape(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f && c != '\\') out += static_cast<char>(c);
    else {
      char b[8];
      snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    }
  }
  return out.size() > 600 ? out.substr(0, 600) + "..." : out;
}

// The daemon answers every line except a blank one (only spaces/tabs once trailing CR/LF are
// stripped), which it skips.
bool expects_reply(std::string line) {
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
  return line.find_first_not_of(" \t") != std::string::npos;
}

class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}
  uint64_t below(uint64_t n) { return n ? rng_() % n : 0; }

  std::string mutate(std::string s, const std::vector<std::string>& corpus) {
    static const char* const tokens[] = {
        "{", "}", "[", "]", "\"", ":", ",", "\\", "\\u0000", "\\ud800", "null", "true", "false", "-0", "1e308",
        "-1", "18446744073709551616", "99999999999999999999999", "0.5", "NaN", "\"cmd\"", "\"pid\"", "\"knobs\"",
        "\"set\"", "\"get\"", "\"all\":true", "\"tiny.cap\"", "\"wait_ms\"", "{\"a\":", "[[[[", "\xff\xfe",
        "\xc3\x28", "\xf0\x9f\x92\xa9", "\r", "\t", " ", "\x00"};
    int rounds = 1 + static_cast<int>(below(4));
    for (int r = 0; r < rounds; r++) {
      size_t pos = s.empty() ? 0 : below(s.size() + 1);
      switch (below(8)) {
        case 0:  // flip a byte
          if (!s.empty()) s[below(s.size())] = static_cast<char>(below(256));
          break;
        case 1:  // delete a span
          if (!s.empty()) s.erase(pos > 0 ? pos - 1 : 0, 1 + below(16));
          break;
        case 2: {  // insert a token
          const char* t = tokens[below(sizeof tokens / sizeof tokens[0])];
          s.insert(pos, t, t[0] == 0 ? 1 : strlen(t));
          break;
        }
        case 3:  // duplicate a span
          if (!s.empty()) {
            size_t a = below(s.size()), n = 1 + below(32);
            s.insert(pos, s.substr(a, n));
          }
          break;
        case 4: {  // splice with another request
          const std::string& o = corpus[below(corpus.size())];
          s = s.substr(0, pos) + o.substr(below(o.size()));
          break;
        }
        case 5: {  // replace a number with an extreme one
          size_t d = s.find_first_of("0123456789", pos);
          if (d != std::string::npos) {
            size_t e = s.find_first_not_of("0123456789", d);
            const char* const nums[] = {"0", "-1", "4294967297", "18446744073709551615", "1e400", "-9e18", "3.5",
                                        "60000", "1048576"};
            s.replace(d, (e == std::string::npos ? s.size() : e) - d, nums[below(9)]);
          }
          break;
        }
        case 6:  // random bytes
          for (uint64_t n = 1 + below(8); n; n--) s.insert(pos, 1, static_cast<char>(below(256)));
          break;
        default:  // truncate
          s.resize(pos);
      }
    }
    for (char& c : s)
      if (c == '\n') c = ' ';  // the line framing is not what is being fuzzed here
    return s;
  }

 private:
  std::mt19937_64 rng_;
};

TEST(DaemonFault, FuzzedRequestLinesAreAnsweredAndTheDaemonSurvives) {
  DaemonProc d;
  ASSERT_TRUE(d.ready()) << d.log();
  Target target(d.shm());
  ASSERT_TRUE(eventually([&] { return d.lists(target.pid()); })) << "the preloaded target never showed up";

  const std::string pid = std::to_string(target.pid());
  const std::vector<std::string> corpus = {
      R"({"id":1,"cmd":"hello","version":1,"client":"fuzz 0.1"})",
      R"({"id":2,"cmd":"ps"})",
      R"({"id":"x","cmd":"stats"})",
      R"({"id":[1,2],"cmd":"stats","pid":)" + pid + "}",
      R"({"id":5,"cmd":"get","pid":)" + pid + R"(,"keys":["tiny.cap","whale.decay_ms"]})",
      R"({"id":6,"cmd":"get"})",
      R"({"id":7,"cmd":"set","pid":)" + pid + R"(,"knobs":{"tiny.cap":64,"whale.cache_bytes":"512M"}})",
      R"({"id":8,"cmd":"set","pid":)" + pid + R"(,"knobs":{"bundle.decay_ms":"2s","tiny.prewarm":"on"},"wait_ms":5})",
      R"({"id":9,"cmd":"set","all":true,"knobs":{"tiny.cap":"8"}})",
      R"({"id":10,"cmd":"knobs"})",
      R"({"id":null,"cmd":"set","pid":)" + pid + R"(,"knobs":{"shm.enable":0}})",
  };
  const uint64_t count = env_u64("HAKMEM_FUZZ_COUNT", 50000);
  const uint64_t seed = env_u64("HAKMEM_FUZZ_SEED", 1);
  Mutator m(seed);
  Client c(d.socket());
  ASSERT_TRUE(c.connected());
  uint64_t sent = 0, ok_replies = 0, error_replies = 0;
  std::vector<std::string> batch;
  while (sent < count) {
    // Pipelined: a batch of lines in one write, then one reply per line, in order.
    batch.clear();
    std::string wire;
    for (int i = 0; i < 16 && sent < count; i++, sent++) {
      std::string line = m.below(10) == 0 ? corpus[m.below(corpus.size())] : m.mutate(corpus[m.below(corpus.size())], corpus);
      batch.push_back(line);
      wire += line + "\n";
    }
    ASSERT_TRUE(c.send_raw(wire)) << "send failed; daemon alive: " << !d.exited() << "\n" << d.log();
    for (const std::string& line : batch) {
      if (!expects_reply(line)) continue;
      auto reply = c.read_line(65000);
      if (!reply) {
        std::string all;
        for (const std::string& b : batch) all += "  " + escape(b) + "\n";
        FAIL() << "no reply to: " << escape(line) << "\ndaemon alive: " << !d.exited() << "\nseed " << seed
               << ", batch ending at input #" << sent << ":\n" << all;
      }
      json r = json::parse(*reply, nullptr, false);
      ASSERT_TRUE(r.is_object() && r.contains("ok") && r["ok"].is_boolean())
          << "malformed reply " << escape(*reply) << " to " << escape(line);
      if (r["ok"] == true) {
        ok_replies++;
      } else {
        error_replies++;
        ASSERT_TRUE(r.contains("error") && r["error"].is_object() && r["error"].value("code", "") != "" &&
                    r["error"]["message"].is_string())
            << "error reply without code/message: " << escape(*reply);
        ASSERT_NE(r["error"]["code"], proto::err::kInternal) << "internal error for " << escape(line) << ": " << *reply;
      }
    }
    if (sent % 2048 < 16) {
      ASSERT_TRUE(hello_ok(d)) << "hello failed after " << sent << " inputs";
      ASSERT_TRUE(target.alive()) << "the target died (status " << target.status() << ")";
    }
  }
  printf("fuzz: %llu inputs (seed %llu): %llu ok, %llu error replies\n", static_cast<unsigned long long>(sent),
         static_cast<unsigned long long>(seed), static_cast<unsigned long long>(ok_replies),
         static_cast<unsigned long long>(error_replies));
  EXPECT_GT(error_replies, count / 4) << "the mutator hardly produced bad input";
  EXPECT_TRUE(hello_ok(d));
  EXPECT_TRUE(d.lists(target.pid()));
  EXPECT_TRUE(target.alive()) << "the target died (status " << target.status() << ")";
}

TEST(DaemonFault, OverlongAndDeeplyNestedLines) {
  DaemonProc d;
  ASSERT_TRUE(d.ready()) << d.log();
  {
    // Deep nesting within the line limit: a recursive parser must not overflow its stack.
    Client c(d.socket());
    std::string deep = R"({"id":1,"cmd":"ps","x":)" + std::string(30000, '[') + std::string(30000, ']') + "}";
    ASSERT_TRUE(c.send_raw(deep + "\n"));
    auto reply = c.read_line();
    ASSERT_TRUE(reply.has_value()) << "no reply to 30000-deep nesting; daemon alive: " << !d.exited();
  }
  EXPECT_TRUE(hello_ok(d));
  {
    // Over the limit: line_too_long, then the connection is closed.
    Client c(d.socket());
    ASSERT_TRUE(c.send_raw(std::string(proto::kMaxLineBytes + 100, 'a') + "\n"));
    auto reply = c.read_line();
    ASSERT_TRUE(reply.has_value());
    json r = json::parse(*reply, nullptr, false);
    EXPECT_EQ(r["error"]["code"], proto::err::kLineTooLong) << *reply;
  }
  {
    // An endless line without a newline, then the client vanishes.
    Client c(d.socket());
    c.send_raw(std::string(proto::kMaxLineBytes * 4, '{'));
  }
  {
    // Binary garbage and NULs.
    Client c(d.socket());
    std::string junk;
    std::mt19937_64 rng(3);
    for (int i = 0; i < 4096; i++) junk += static_cast<char>(rng() % 256);
    c.send_raw(junk + "\n");
  }
  EXPECT_TRUE(eventually([&] { return hello_ok(d); }));
  EXPECT_FALSE(d.exited()) << d.log();
}

// Writes raw bytes into the daemon's folder under a segment-like name.
std::string seg_name(const DaemonProc& d, pid_t pid) {
  char buf[512];
  proto::segment_path(d.shm().c_str(), getuid(), pid, buf, sizeof buf);
  return buf;
}

TEST(DaemonFault, HostileSegmentsNeverCrashTheDaemon) {
  DaemonProc d;
  ASSERT_TRUE(d.ready()) << d.log();
  Target target(d.shm());
  ASSERT_TRUE(eventually([&] { return d.lists(target.pid()); }));

  // Live owners for the hostile files: the daemon may not drop them as stale right away.
  std::vector<std::unique_ptr<hakmem_test::Sleeper>> owners;
  auto owner = [&] {
    owners.push_back(std::make_unique<hakmem_test::Sleeper>());
    return owners.back()->pid();
  };
  std::mt19937_64 rng(11);
  auto garbage = [&](size_t n) {
    std::string s(n, 0);
    for (auto& c : s) c = static_cast<char>(rng() % 256);
    return s;
  };
  const size_t full = sizeof(proto::Segment);
  hakmem_test::write_file(seg_name(d, owner()), "");
  hakmem_test::write_file(seg_name(d, owner()), garbage(100));
  hakmem_test::write_file(seg_name(d, owner()), garbage(full / 2));
  hakmem_test::write_file(seg_name(d, owner()), garbage(full));
  hakmem_test::write_file(seg_name(d, owner()), garbage(full + 12345));
  hakmem_test::write_file(seg_name(d, owner()), garbage(4 << 20));
  {
    // Valid headers with one field wrong each, and every count/string at its worst.
    struct Variant {
      const char* what;
      void (*spoil)(proto::Segment&);
    };
    const Variant variants[] = {
        {"magic", [](proto::Segment& s) { s.header.magic ^= 1; }},
        {"version", [](proto::Segment& s) { s.header.layout_version = 999; }},
        {"header size", [](proto::Segment& s) { s.header.header_size = 7; }},
        {"segment size", [](proto::Segment& s) { s.header.segment_size = ~0ull; }},
        {"not ready", [](proto::Segment& s) { s.header.ready.store(0); }},
        {"counts", [](proto::Segment& s) {
           s.header.tiny_class_count = 0xffffffffu;
           s.global.thread_slots_hwm.store(0xffffffffu);
           s.global.threads_live.store(0xffffffffu);
           for (auto& t : s.global.tier)
             for (auto& c : t) c.store(~0ull);
           for (auto& slot : s.threads)
             for (auto& t : slot.tier)
               for (auto& c : t) c.store(~0ull - 5);
           for (auto& c : s.threads[0].tiny_class_allocs) c.store(~0ull);
           for (auto& k : s.knobs.value) k.store(~0ull);
           for (auto& sz : s.header.tiny_class_size) sz = 0xffffffffu;
         }},
        {"strings", [](proto::Segment& s) { memset(s.header.lib_version, '"', sizeof s.header.lib_version); }},
        {"pid mismatch", [](proto::Segment& s) { s.header.pid = 1; }},
        {"created before its process started", [](proto::Segment& s) { s.header.created_boot_ticks = 12345; }},
        {"uid", [](proto::Segment& s) { s.header.uid = 4242; }},
    };
    for (const Variant& v : variants) {
      hakmem_test::FakeSegment f(d.shm(), owner());
      ASSERT_TRUE(f.ok()) << v.what;
      v.spoil(f.seg());
    }
  }
  // A process whose executable and arguments (hakmemd reads them from /proc) are not UTF-8
  // and hold quotes and backslashes.
  hakmem_test::TempDir bin;
  const std::string odd = hakmem_test::install_fake_service(bin.path(), "\xff\xfe\"\\ \xc3(");
  ASSERT_FALSE(odd.empty());
  owners.push_back(std::make_unique<hakmem_test::Sleeper>(0, odd));
  const pid_t odd_pid = owners.back()->pid();
  hakmem_test::FakeSegment odd_seg(d.shm(), *owners.back());
  ASSERT_TRUE(odd_seg.ok() && odd_seg.owner_mapped());
  // Names that look like segments but are not regular files of ours.
  std::string fifo = seg_name(d, owner());
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);  // opening it for reading would block
  ASSERT_EQ(mkdir(seg_name(d, owner()).c_str(), 0700), 0);
  ASSERT_EQ(symlink("/etc/passwd", seg_name(d, owner()).c_str()), 0);
  hakmem_test::write_file(d.shm() + "/hakmem.x.y", garbage(100));
  hakmem_test::write_file(d.shm() + "/hakmem." + std::to_string(getuid()) + ".-5", garbage(100));
  hakmem_test::write_file(d.shm() + "/hakmem." + std::to_string(getuid()) + ".99999999999999999999", garbage(full));
  hakmem_test::write_file(seg_name(d, owner()), garbage(full), 0666);

  // Give the scanner several passes over all of it, asking for everything meanwhile.
  for (int i = 0; i < 30; i++) {
    Client c(d.socket());
    for (const char* cmd : {"ps", "stats", "get"}) {
      json r = c.call({{"id", i}, {"cmd", cmd}});
      ASSERT_TRUE(r.is_object() && r.contains("ok")) << cmd << " after hostile segments: " << r.dump()
                                                     << "\ndaemon alive: " << !d.exited() << "\n" << d.log();
    }
    json r = c.call({{"id", i}, {"cmd", "set"}, {"all", true}, {"knobs", {{"tiny.cap", 16 + i}}}});
    ASSERT_TRUE(r.is_object() && r.contains("ok")) << r.dump();
    usleep(20 * 1000);
  }
  EXPECT_TRUE(hello_ok(d));
  EXPECT_TRUE(d.lists(target.pid())) << "the real process got lost among hostile segments";
  EXPECT_TRUE(d.lists(odd_pid)) << "the process whose name is not UTF-8 is not listed\n" << d.log();
  json st = Client(d.socket()).call({{"cmd", "stats"}, {"pid", target.pid()}});
  EXPECT_EQ(st.value("ok", false), true) << st.dump();
  EXPECT_TRUE(target.alive()) << "the target died (status " << target.status() << ")";
  EXPECT_FALSE(d.exited()) << d.log();
}

TEST(DaemonFault, SegmentTruncatedUnderTheDaemonsMapping) {
  DaemonProc d;
  ASSERT_TRUE(d.ready()) << d.log();
  hakmem_test::Sleeper owner;
  hakmem_test::FakeSegment f(d.shm(), owner);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(eventually([&] { return d.lists(owner.pid()); })) << d.log();
  // The daemon has it mapped now. Shrink the file under it: reading the mapping past the
  // new end raises SIGBUS unless the daemon guards against it.
  ASSERT_EQ(truncate(f.path().c_str(), 64), 0);
  for (int i = 0; i < 20; i++) {
    Client c(d.socket());
    json r = c.call({{"id", i}, {"cmd", i % 2 ? "stats" : "ps"}});
    ASSERT_TRUE(r.is_object() && r.contains("ok")) << "no answer after the truncation; daemon alive: " << !d.exited()
                                                   << " status " << d.status() << "\n" << d.log();
    usleep(20 * 1000);
  }
  EXPECT_TRUE(hello_ok(d));
  EXPECT_FALSE(d.exited()) << "daemon died, status " << d.status();
}

}  // namespace
