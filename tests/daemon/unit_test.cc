// Unit tests of the daemon's logic, in-process: knob validation, config parsing, /proc
// parsing, the registry over segments this test creates (hostile ones included), the
// protocol handler and the Prometheus rendering.
#include <gtest/gtest.h>

#include <sys/prctl.h>
#include <sys/sysmacros.h>

#include <chrono>
#include <regex>
#include <set>
#include <sstream>

#include <spdlog/spdlog.h>

#include "config.h"
#include "fake_segment.h"
#include "hakmem/proto/protocol.h"
#include "handler.h"
#include "knob_ops.h"
#include "metrics.h"
#include "procfs.h"
#include "registry.h"

using namespace hakmemd;
using namespace hakmem_test;
using nlohmann::json;
namespace proto = hakmem::proto;

// ---- knob validation ----------------------------------------------------------------

TEST(KnobOps, ClosestNameByEditDistance) {
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_STREQ(closest_knob("tiny.capp"), "tiny.cap");
  EXPECT_STREQ(closest_knob("tiny.prewarn"), "tiny.prewarm");
  EXPECT_STREQ(closest_knob("whale.cache"), "whale.cache_bytes");
  EXPECT_STREQ(closest_knob("bundle.decay"), "bundle.decay_ms");
}

TEST(KnobOps, AcceptsNumbersStringsAndBooleansInTheKnobsSyntax) {
  KnobValue kv;
  KnobError err;
  ASSERT_TRUE(knob_validate("tiny.cap", json(64), true, &kv, &err));
  EXPECT_EQ(kv.value, 64u);
  EXPECT_EQ(kv.info->id, proto::Knob::TinyCap);
  ASSERT_TRUE(knob_validate("whale.cache_bytes", json("512M"), true, &kv, &err));
  EXPECT_EQ(kv.value, 512ull << 20);
  ASSERT_TRUE(knob_validate("whale.decay_ms", json("2s"), true, &kv, &err));
  EXPECT_EQ(kv.value, 2000u);
  ASSERT_TRUE(knob_validate("tiny.prewarm", json(true), true, &kv, &err));
  EXPECT_EQ(kv.value, 1u);
  ASSERT_TRUE(knob_validate("tiny.prewarm", json("off"), true, &kv, &err));
  EXPECT_EQ(kv.value, 0u);
}

TEST(KnobOps, RefusesWithTheProtocolsCodesAndMessages) {
  KnobValue kv;
  KnobError err;
  EXPECT_FALSE(knob_validate("tiny.cap", json(2000), true, &kv, &err));
  EXPECT_EQ(err.code, "out_of_range");
  EXPECT_EQ(err.message, "tiny.cap must be 0..1024");
  EXPECT_FALSE(knob_validate("whale.cache_bytes", json("1T"), true, &kv, &err));
  EXPECT_EQ(err.message, "whale.cache_bytes must be 0..64G");
  EXPECT_FALSE(knob_validate("tiny.cap", json(-1), true, &kv, &err));
  EXPECT_EQ(err.code, "out_of_range");
  EXPECT_FALSE(knob_validate("tiny.cap", json("99999999999999999999999"), true, &kv, &err));
  EXPECT_EQ(err.code, "out_of_range");
  EXPECT_FALSE(knob_validate("tiny.cap", json("lots"), true, &kv, &err));
  EXPECT_EQ(err.code, "invalid_value");
  EXPECT_FALSE(knob_validate("tiny.cap", json(1.5), true, &kv, &err));
  EXPECT_EQ(err.code, "invalid_value");
  EXPECT_FALSE(knob_validate("tiny.cap", json(true), true, &kv, &err));
  EXPECT_EQ(err.code, "invalid_value");
  EXPECT_FALSE(knob_validate("tiny.prewarm", json(2), true, &kv, &err));
  EXPECT_EQ(err.message, "tiny.prewarm must be 0..1");
  EXPECT_FALSE(knob_validate("stats.print", json(1), true, &kv, &err));
  EXPECT_EQ(err.code, "restart_only");
  EXPECT_TRUE(knob_validate("stats.print", json(1), false, &kv, &err));
  EXPECT_FALSE(knob_validate("tiny.capp", json(1), true, &kv, &err));
  EXPECT_EQ(err.code, "unknown_knob");
  EXPECT_NE(err.message.find("did you mean 'tiny.cap'"), std::string::npos);
  EXPECT_FALSE(knob_validate(std::string("tiny.cap\0x", 10), json(1), true, &kv, &err));
  EXPECT_EQ(err.code, "unknown_knob");
}

// ---- config ---------------------------------------------------------------------------

TEST(Config, ParsesEveryFieldAndValidatesDefaults) {
  Config c;
  std::string err;
  ASSERT_TRUE(config_parse(R"({"_c":"comment","socket":"/tmp/s.sock","metrics":"127.0.0.1:9464",
      "shm_dir":"/tmp/shm","scan_interval_ms":250,"log_level":"debug",
      "defaults":[{"exe":"*/nginx","knobs":{"tiny.cap":64,"whale.cache_bytes":"256M"}}]})",
                           &c, &err))
      << err;
  EXPECT_EQ(c.socket, "/tmp/s.sock");
  EXPECT_EQ(c.metrics, "127.0.0.1:9464");
  EXPECT_EQ(c.shm_dir, "/tmp/shm");
  EXPECT_EQ(c.scan_interval_ms, 250u);
  EXPECT_EQ(c.log_level, "debug");
  ASSERT_EQ(c.defaults.size(), 1u);
  EXPECT_EQ(c.defaults[0].exe, "*/nginx");
  ASSERT_EQ(c.defaults[0].knobs.size(), 2u);
  EXPECT_EQ(c.defaults[0].knobs[1].value, 256ull << 20);
}

TEST(Config, RefusesMistakesWithAClearMessage) {
  Config c;
  std::string err;
  EXPECT_FALSE(config_parse("{", &c, &err));
  EXPECT_NE(err.find("not valid JSON"), std::string::npos);
  EXPECT_FALSE(config_parse("[]", &c, &err));
  EXPECT_FALSE(config_parse(R"({"sockt":"x"})", &c, &err));
  EXPECT_NE(err.find("did you mean 'socket'"), std::string::npos) << err;
  EXPECT_FALSE(config_parse(R"({"metrics":"localhost"})", &c, &err));
  EXPECT_FALSE(config_parse(R"({"scan_interval_ms":0})", &c, &err));
  EXPECT_FALSE(config_parse(R"({"log_level":"loud"})", &c, &err));
  EXPECT_FALSE(config_parse(R"({"defaults":[{"exe":"x","knobs":{"tiny.cap":5000}}]})", &c, &err));
  EXPECT_NE(err.find("tiny.cap must be 0..1024"), std::string::npos) << err;
  EXPECT_FALSE(config_parse(R"({"defaults":[{"exe":"x","knobs":{"stats.print":1}}]})", &c, &err));
  EXPECT_FALSE(config_parse(R"({"defaults":[{"knobs":{}}]})", &c, &err));
}

TEST(Config, TheShippedDefaultConfigParses) {
  Config c;
  std::string err;
  EXPECT_TRUE(config_load(HAKMEM_DEFAULT_CONFIG, &c, &err)) << err;
  EXPECT_TRUE(c.defaults.empty());
}

TEST(Config, ExePatternsMatchPathOrBaseName) {
  EXPECT_TRUE(exe_matches("*/nginx", "/usr/sbin/nginx"));
  EXPECT_TRUE(exe_matches("nginx", "/usr/sbin/nginx"));
  EXPECT_TRUE(exe_matches("ngin?", "/usr/sbin/nginx"));
  EXPECT_FALSE(exe_matches("/usr/bin/*", "/usr/sbin/nginx"));
  EXPECT_FALSE(exe_matches("redis*", "/usr/sbin/nginx"));
}

TEST(Config, HostPort) {
  std::string h;
  uint16_t p = 0;
  EXPECT_TRUE(parse_host_port("127.0.0.1:9464", &h, &p));
  EXPECT_EQ(h, "127.0.0.1");
  EXPECT_EQ(p, 9464);
  EXPECT_TRUE(parse_host_port("[::1]:80", &h, &p));
  EXPECT_EQ(h, "::1");
  EXPECT_FALSE(parse_host_port("127.0.0.1", &h, &p));
  EXPECT_FALSE(parse_host_port("127.0.0.1:0", &h, &p));
  EXPECT_FALSE(parse_host_port("127.0.0.1:70000", &h, &p));
  EXPECT_FALSE(parse_host_port(":80", &h, &p));
}

// ---- /proc ----------------------------------------------------------------------------

TEST(Procfs, StatParsingSurvivesHostileCommNames) {
  const char text[] =
      "4242 (evil) 1 2 (x) R 1 4242 4242 0 -1 4194560 777 0 3 0 10 20 0 0 20 0 5 0 123456 1000 50 "
      "18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
  auto st = proc_stat_parse(text, sizeof text - 1);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->minflt, 777u);
  EXPECT_EQ(st->majflt, 3u);
  EXPECT_EQ(st->threads, 5u);
  EXPECT_EQ(st->start_time_ticks, 123456u);
  EXPECT_FALSE(proc_stat_parse("garbage", 7));
  auto self = proc_stat(getpid());
  ASSERT_TRUE(self);
  EXPECT_EQ(self->start_time_ticks, start_ticks_of(getpid()));
  EXPECT_EQ(proc_liveness(getpid()), Liveness::Alive);
  EXPECT_EQ(proc_liveness(dead_pid()), Liveness::Dead);
  EXPECT_GT(*proc_rss_bytes(getpid()), 0u);
}

TEST(Procfs, StatCarriesTheProgramImageAndExecChangesIt) {
  // Fields 26-28 and 45-51 of a real line (6.x kernel), the rest shortened.
  const char text[] =
      "77 (sleep) S 1 77 77 0 -1 4194304 95 0 0 0 0 0 0 0 20 0 1 0 5000 2273280 232 18446744073709551615 "
      "94000000000000 94000000016000 140730000000000 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 94000000020000 "
      "94000000021000 94000001000000 140730000001000 140730000001020 140730000001020 140730000002000 0\n";
  auto st = proc_stat_parse(text, sizeof text - 1);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->image.start_code, 94000000000000u);
  EXPECT_EQ(st->image.end_code, 94000000016000u);
  EXPECT_EQ(st->image.start_stack, 140730000000000u);
  EXPECT_EQ(st->image.start_data, 94000000020000u);
  EXPECT_EQ(st->image.start_brk, 94000001000000u);
  EXPECT_EQ(st->image.arg_start, 140730000001000u);
  EXPECT_EQ(st->image.env_end, 140730000002000u);

  // The premise of the exec check on this kernel: a process keeps its image until it execs,
  // and the exec'd program has another.
  Sleeper proc;
  auto before = proc_stat(proc.pid());
  ASSERT_TRUE(before);
  EXPECT_NE(before->image.start_code, 0u);
  EXPECT_EQ(proc_stat(proc.pid())->image, before->image);
  ASSERT_TRUE(proc.exec_sleep());
  auto after = proc_stat(proc.pid());
  ASSERT_TRUE(after);
  EXPECT_EQ(after->start_time_ticks, before->start_time_ticks);  // same process to every other check
  EXPECT_FALSE(after->image == before->image);
}

TEST(Procfs, MapsParsingFindsAFileByInodeAndDeviceOrName) {
  const char text[] =
      "55d0c0a00000-55d0c0a02000 r--p 00000000 fd:01 1234                       /usr/bin/x\n"
      "7f0000000000-7f0000064000 rw-s 00000000 00:1a 777                        /dev/shm/hakmem.0.42\n"
      "7f0000100000-7f0000200000 rw-p 00000000 00:00 0 \n"
      "7f0000300000-7f0000301000 rw-s 00000000 103:05 4242                      /data/a dir/hakmem.0.43\n"
      "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]\n";
  const size_t n = sizeof text - 1;
  EXPECT_EQ(proc_maps_parse(text, n, makedev(0, 0x1a), 777, "hakmem.0.42"), MapCheck::Mapped);
  EXPECT_EQ(proc_maps_parse(text, n, makedev(0x103, 5), 4242, "hakmem.0.43"), MapCheck::Mapped);
  EXPECT_EQ(proc_maps_parse(text, n, makedev(0, 0x1a), 778, "hakmem.0.42"), MapCheck::NotMapped);  // another file
  EXPECT_EQ(proc_maps_parse(text, n, makedev(0, 0x2b), 777, "hakmem.0.42"), MapCheck::Mapped);  // overlayfs: same inode and name
  EXPECT_EQ(proc_maps_parse(text, n, makedev(0, 0x2b), 777, "hakmem.0.9"), MapCheck::NotMapped);
  EXPECT_EQ(proc_maps_parse(text, n, makedev(0xfd, 1), 1234, "hakmem.0.42"), MapCheck::Mapped);  // matched by device
  EXPECT_EQ(proc_maps_parse("", 0, makedev(0, 0x1a), 777, "hakmem.0.42"), MapCheck::Unknown);  // no address space
}

TEST(Procfs, MapsOfALiveProcessShowItsSharedFileMapping) {
  TempDir dir;
  const std::string path = dir.path() + "/hakmem.0.1";
  write_file(path, std::string(8192, 'x'));
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  void* seg = mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  ASSERT_NE(seg, MAP_FAILED);
  // Mappings made later sit below it, so maps lists them first: well past the reader's
  // 16 KiB buffer (alternating protections keep them from merging).
  std::vector<void*> filler;
  for (int i = 0; i < 2000; i++) {
    void* p = mmap(nullptr, 4096, i % 2 ? PROT_READ : PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(p, MAP_FAILED);
    filler.push_back(p);
  }
  EXPECT_EQ(proc_maps_file(getpid(), st.st_dev, st.st_ino, "hakmem.0.1"), MapCheck::Mapped);
  munmap(seg, 8192);
  EXPECT_EQ(proc_maps_file(getpid(), st.st_dev, st.st_ino, "hakmem.0.1"), MapCheck::NotMapped);
  for (void* p : filler) munmap(p, 4096);
  EXPECT_EQ(proc_maps_file(dead_pid(), st.st_dev, st.st_ino, "hakmem.0.1"), MapCheck::Unknown);
}

// ---- registry -------------------------------------------------------------------------

TEST(Registry, SegmentNames) {
  uid_t u;
  pid_t p;
  EXPECT_TRUE(parse_segment_name("hakmem.1000.4242", &u, &p));
  EXPECT_EQ(u, 1000u);
  EXPECT_EQ(p, 4242);
  for (const char* bad : {"hakmem.1000", "hakmem.1000.", "hakmem..1", "hakmem.1000.0", "hakmem.01.5", "hakmem.1.2.3",
                          "hakmem.x.1", "other.1.2", "hakmem.1.99999999999"})
    EXPECT_FALSE(parse_segment_name(bad, &u, &p)) << bad;
}

class RegistryTest : public ::testing::Test {
 protected:
  TempDir dir;
  std::string seg_path(uid_t uid, pid_t pid) { return dir.path() + "/hakmem." + std::to_string(uid) + "." + std::to_string(pid); }
};

TEST(ProcFs, Argv0StandsInForAnExecutableOnlyAsAnAbsolutePath) {
  const char full[] = "/usr/sbin/svc\0--port\0" "80";
  EXPECT_EQ(argv0_path(full, sizeof full), "/usr/sbin/svc");
  const char relative[] = "svc\0--port";
  EXPECT_EQ(argv0_path(relative, sizeof relative), "");
  EXPECT_EQ(argv0_path("", 0), "");
  const char unterminated[] = {'/', 'b', 'i', 'n', '/', 'x'};
  EXPECT_EQ(argv0_path(unterminated, sizeof unterminated), "/bin/x");
}

// A process that made itself non-dumpable hides /proc/<pid>/exe from a reader without
// CAP_SYS_PTRACE (hakmemd run as the user): its argv[0] names it instead, when absolute.
TEST(ProcFs, ANonDumpableProcessIsNamedByItsArgv0) {
  auto drop = [] { return geteuid() != 0 || (setgid(65534) == 0 && setuid(65534) == 0); };
  int ready[2], out[2];
  ASSERT_EQ(pipe(ready), 0);
  ASSERT_EQ(pipe(out), 0);
  const pid_t target = fork();
  ASSERT_GE(target, 0);
  if (target == 0) {
    if (!drop() || prctl(PR_SET_DUMPABLE, 0) != 0 || write(ready[1], "r", 1) != 1) _exit(1);
    for (;;) pause();
  }
  char r = 0;
  ASSERT_EQ(read(ready[0], &r, 1), 1);
  const pid_t reader = fork();
  ASSERT_GE(reader, 0);
  if (reader == 0) {
    if (!drop()) _exit(1);
    char link[4096];
    const std::string path = "/proc/" + std::to_string(target) + "/exe";
    const bool hidden = readlink(path.c_str(), link, sizeof link) < 0 && errno == EACCES;
    const std::string exe = (hidden ? "hidden " : "shown ") + proc_exe(target);
    _exit(write(out[1], exe.data(), exe.size()) == static_cast<ssize_t>(exe.size()) ? 0 : 1);
  }
  close(out[1]);
  char buf[4096];
  const ssize_t n = read(out[0], buf, sizeof buf);
  int status = 0;
  waitpid(reader, &status, 0);
  kill(target, SIGKILL);
  waitpid(target, nullptr, 0);
  close(out[0]);
  close(ready[0]);
  close(ready[1]);
  ASSERT_EQ(status, 0);
  ASSERT_GT(n, 0);
  const std::string cmd = own_cmdline();
  const std::string argv0 = cmd.substr(0, cmd.find(' '));
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), "hidden " + (argv0[0] == '/' ? argv0 : std::string()));
}

TEST_F(RegistryTest, RegistersAValidSegmentOfALiveProcess) {
  Sleeper proc;
  FakeSegment seg(dir.path(), proc);
  ASSERT_TRUE(seg.ok());
  Registry reg(dir.path());
  int seen = 0;
  reg.on_new = [&](ProcessEntry& e) {
    seen++;
    EXPECT_EQ(e.pid, proc.pid());
  };
  reg.scan();
  ASSERT_EQ(reg.size(), 1u);
  ProcessEntry* e = reg.find(proc.pid());
  ASSERT_NE(e, nullptr);
  // The Sleeper is a fork of this test: hakmemd reads its program and arguments from /proc.
  EXPECT_EQ(e->exe, self_exe());
  EXPECT_NE(e->exe.find("daemon_unit_test"), std::string::npos) << e->exe;
  EXPECT_EQ(e->cmdline, own_cmdline());
  EXPECT_EQ(e->start_time_ticks, start_ticks_of(proc.pid()));
  reg.scan();  // a second pass sees the same process, not a new one
  EXPECT_EQ(seen, 1);
  EXPECT_TRUE(reg.still_alive(*e));
}

TEST_F(RegistryTest, RemovesTheStaleSegmentOfADeadProcess) {
  const pid_t dead = dead_pid();
  FakeSegment seg(dir.path(), dead, 0, true, 12345);
  ASSERT_TRUE(seg.ok());
  Registry reg(dir.path());
  reg.scan();
  EXPECT_EQ(reg.size(), 0u);
  EXPECT_FALSE(file_exists(seg.path()));
}

TEST_F(RegistryTest, DropsAndUnlinksWhenTheProcessDiesLater) {
  Sleeper proc;
  FakeSegment seg(dir.path(), proc);
  Registry reg(dir.path());
  reg.scan();
  ASSERT_EQ(reg.size(), 1u);
  proc.stop();
  reg.scan();
  EXPECT_EQ(reg.size(), 0u);
  EXPECT_FALSE(file_exists(seg.path()));
}

TEST_F(RegistryTest, ASegmentCreatedLongAfterItsProcessStartedIsItsOwn) {
  // A service that starts its allocator late (dlopen, or its first malloc minutes in).
  Sleeper proc;
  FakeSegment seg(dir.path(), proc, 0, true, start_ticks_of(proc.pid()) + 100000);
  Registry reg(dir.path());
  reg.scan();
  ASSERT_EQ(reg.size(), 1u);
  EXPECT_EQ(reg.find(proc.pid())->start_time_ticks, start_ticks_of(proc.pid()));  // the uptime's base
  EXPECT_TRUE(file_exists(seg.path()));
}

TEST_F(RegistryTest, AReusedPidIsStale) {
  Sleeper proc;
  FakeSegment seg(dir.path(), proc, 0, true, start_ticks_of(proc.pid()) - 1);
  Registry reg(dir.path());
  reg.scan();
  EXPECT_EQ(reg.size(), 0u);
  EXPECT_FALSE(file_exists(seg.path()));
}

TEST_F(RegistryTest, ASegmentLeftBehindByAnExecIsRemovedAfterTheGrace) {
  Sleeper proc;
  FakeSegment seg(dir.path(), proc);
  ASSERT_TRUE(seg.owner_mapped());
  Registry reg(dir.path());
  reg.unmapped_grace = std::chrono::hours(1);
  reg.scan();
  ASSERT_EQ(reg.size(), 1u);
  reg.scan();
  reg.scan();
  EXPECT_EQ(reg.size(), 1u);  // its process maps it: it stays

  ASSERT_TRUE(proc.exec_sleep());  // same pid and start time, no mapping of the segment
  reg.scan();
  reg.scan();
  EXPECT_EQ(reg.size(), 1u);  // within the grace (a program with hakmem would replace the file)
  EXPECT_TRUE(file_exists(seg.path()));

  reg.unmapped_grace = std::chrono::milliseconds(0);
  reg.scan();
  EXPECT_EQ(reg.size(), 0u);
  EXPECT_FALSE(file_exists(seg.path()));
  EXPECT_EQ(proc_liveness(proc.pid()), Liveness::Alive);  // the process itself lives on
  reg.scan();
  EXPECT_EQ(reg.size(), 0u);
}

TEST_F(RegistryTest, AProcessWhoseMapsTheDaemonCannotReadIsKept) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run the registry as another user";
  Sleeper proc;  // root's: a daemon running as nobody may not read its maps
  ASSERT_EQ(chmod(dir.path().c_str(), 0755), 0);
  FakeSegment seg(dir.path(), proc.pid(), 65534);  // nobody's file, mapped by no process
  ASSERT_TRUE(seg.ok());
  const pid_t child = fork();
  if (child == 0) {
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(100);
    struct stat st;
    if (stat(seg.path().c_str(), &st) != 0) _exit(101);
    int code = 0;
    const std::string name = seg.path().substr(dir.path().size() + 1);
    if (proc_maps_file(proc.pid(), st.st_dev, st.st_ino, name.c_str()) != MapCheck::Unknown) code |= 1;
    Registry reg(dir.path());
    reg.unmapped_grace = std::chrono::milliseconds(0);
    int registered = 0;  // a drop would show as a second registration (nobody cannot unlink here)
    reg.on_new = [&](ProcessEntry&) { registered++; };
    for (int i = 0; i < 3; i++) {
      reg.scan();
      if (reg.size() != 1) code |= 2;
    }
    if (registered != 1) code |= 4;
    if (!file_exists(seg.path())) code |= 8;
    _exit(code);
  }
  int status = -1;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "bit mask of failed checks in the registry running as nobody";
  // The same registry as root reads the maps, sees no mapping and removes the file.
  Registry reg(dir.path());
  reg.unmapped_grace = std::chrono::milliseconds(0);
  reg.scan();
  EXPECT_EQ(reg.size(), 1u);
  reg.scan();
  EXPECT_EQ(reg.size(), 0u);
  EXPECT_FALSE(file_exists(seg.path()));
}

TEST_F(RegistryTest, NotReadyIsRetriedUntilReady) {
  Sleeper proc;
  FakeSegment seg(dir.path(), proc, 0, false);
  Registry reg(dir.path());
  reg.scan();
  EXPECT_EQ(reg.size(), 0u);
  EXPECT_TRUE(reg.has_pending());
  EXPECT_TRUE(file_exists(seg.path()));  // a process mid-start is left alone
  seg.set_ready();
  reg.retry_pending();
  EXPECT_EQ(reg.size(), 1u);
  EXPECT_FALSE(reg.has_pending());
}

TEST_F(RegistryTest, HostileFilesAreSkippedAndKept) {
  Sleeper proc;  // all of them claim a live pid, so none is removed as stale
  const pid_t pid = proc.pid();
  write_file(seg_path(0, pid), "short");  // truncated
  write_file(seg_path(1, pid), std::string(sizeof(proto::Segment), '\xAB'));  // garbage, owner mismatch
  Registry reg(dir.path());
  reg.scan();
  EXPECT_EQ(reg.size(), 0u);
  EXPECT_TRUE(file_exists(seg_path(0, pid)));

  unlink(seg_path(0, pid).c_str());
  write_file(seg_path(0, pid), std::string(sizeof(proto::Segment), '\xAB'));  // garbage
  reg.scan();
  EXPECT_EQ(reg.size(), 0u);
  unlink(seg_path(0, pid).c_str());

  auto variant = [&](auto damage) {
    FakeSegment s(dir.path(), pid);
    damage(s.seg());
    reg.scan();
    EXPECT_EQ(reg.size(), 0u);
    EXPECT_TRUE(file_exists(s.path()));
    s.remove();
  };
  variant([](proto::Segment& s) { s.header.magic = 0x1234; });
  variant([](proto::Segment& s) { s.header.layout_version = proto::kLayoutVersion + 1; });
  variant([](proto::Segment& s) { s.header.segment_size = 1; });
  variant([&](proto::Segment& s) { s.header.pid = pid + 1; });
  variant([](proto::Segment& s) { s.header.uid = 7; });
  {
    FakeSegment s(dir.path(), pid);
    chmod(s.path().c_str(), 0666);  // world-writable: anyone could have forged it
    reg.scan();
    EXPECT_EQ(reg.size(), 0u);
    s.remove();
  }
  symlink("/etc/passwd", seg_path(0, pid).c_str());
  reg.scan();
  EXPECT_EQ(reg.size(), 0u);
  unlink(seg_path(0, pid).c_str());
  mkfifo(seg_path(0, pid).c_str(), 0600);
  reg.scan();
  EXPECT_EQ(reg.size(), 0u);
  unlink(seg_path(0, pid).c_str());
  // And a healthy segment next to the wreckage still works.
  FakeSegment good(dir.path(), proc);
  reg.scan();
  EXPECT_EQ(reg.size(), 1u);
}

TEST_F(RegistryTest, ATruncationUnderTheMappingIsCaughtNotFatal) {
  Sleeper proc;
  FakeSegment seg(dir.path(), proc);
  seg.seg().global.thread_slots_hwm.store(proto::kThreadSlots);
  Registry reg(dir.path());
  reg.scan();
  ProcessEntry* e = reg.find(proc.pid());
  ASSERT_NE(e, nullptr);
  ASSERT_EQ(truncate(seg.path().c_str(), 4096), 0);  // header page stays, the rest would SIGBUS
  proto::Snapshot s;
  EXPECT_FALSE(reg.read_snapshot(*e, &s));
  EXPECT_EQ(reg.find(proc.pid()), nullptr);
  reg.scan();
  EXPECT_EQ(reg.size(), 0u);
}

TEST_F(RegistryTest, ARemovedFileDropsTheEntry) {
  Sleeper proc;
  FakeSegment seg(dir.path(), proc);
  Registry reg(dir.path());
  reg.on_created(seg.path().substr(dir.path().size() + 1));
  EXPECT_EQ(reg.size(), 1u);
  seg.remove();
  reg.on_deleted(seg.path().substr(dir.path().size() + 1));
  EXPECT_EQ(reg.size(), 0u);
}

// ---- handler --------------------------------------------------------------------------

class HandlerTest : public ::testing::Test {
 protected:
  TempDir dir;
  Sleeper proc;
  std::unique_ptr<FakeSegment> seg;
  std::unique_ptr<Registry> reg;
  std::unique_ptr<Handler> h;
  Peer root{0, 1};

  void SetUp() override {
    seg = std::make_unique<FakeSegment>(dir.path(), proc);
    reg = std::make_unique<Registry>(dir.path());
    reg->scan();
    h = std::make_unique<Handler>(*reg);
  }
  json call(const std::string& line, Peer peer) {
    Outcome o = h->handle(line, peer);
    EXPECT_FALSE(o.reply.empty());
    EXPECT_EQ(o.reply.back(), '\n');
    EXPECT_EQ(o.reply.find('\n'), o.reply.size() - 1);  // exactly one line
    return json::parse(o.reply);
  }
  json call(const std::string& line) { return call(line, root); }
  std::string pid() { return std::to_string(proc.pid()); }
};

TEST_F(HandlerTest, BadInputGetsErrorsNotExceptions) {
  EXPECT_EQ(call("{not json")["error"]["code"], "bad_request");
  EXPECT_TRUE(call("{not json")["id"].is_null());
  EXPECT_EQ(call("42")["error"]["code"], "bad_request");
  EXPECT_EQ(call("[1,2]")["error"]["code"], "bad_request");
  EXPECT_EQ(call(R"({"id":7})")["error"]["code"], "bad_request");
  json r = call(R"({"id":"x","cmd":"fly"})");
  EXPECT_EQ(r["id"], "x");
  EXPECT_EQ(r["ok"], false);
  EXPECT_EQ(r["error"]["code"], "unknown_command");
  EXPECT_EQ(call(R"({"cmd":5})")["error"]["code"], "bad_request");
  EXPECT_EQ(call(R"({"cmd":"stats","pid":"12"})")["error"]["code"], "bad_request");
  EXPECT_EQ(call(R"({"cmd":"stats","pid":-3})")["error"]["code"], "bad_request");
  EXPECT_EQ(call(R"({"cmd":"get","keys":"tiny.cap"})")["error"]["code"], "bad_request");
  EXPECT_EQ(call(R"({"cmd":"set","all":"yes","knobs":{"tiny.cap":1}})")["error"]["code"], "bad_request");
  EXPECT_EQ(call(R"({"cmd":"set","knobs":{"tiny.cap":1}})")["error"]["code"], "bad_request");
  EXPECT_EQ(call(R"({"cmd":"set","all":true,"knobs":[]})")["error"]["code"], "bad_request");
  EXPECT_EQ(call(R"({"cmd":"set","all":true,"knobs":{"tiny.cap":1},"wait_ms":"soon"})")["error"]["code"], "bad_request");
  EXPECT_EQ(call("{\"cmd\":\"hello\",\"client\":\"\xff\xfe\"}")["error"]["code"], "bad_request");  // invalid UTF-8
}

TEST_F(HandlerTest, HelloChecksTheVersion) {
  json r = call(R"({"id":1,"cmd":"hello","version":1,"client":"test"})", Peer{1234, 5});
  ASSERT_TRUE(r["ok"]);
  EXPECT_EQ(r["result"]["protocol"], proto::kProtocolVersion);
  EXPECT_EQ(r["result"]["daemon"], std::string("hakmemd ") + HAKMEM_VERSION);
  EXPECT_EQ(r["result"]["uid"], 1234);
  r = call(R"({"id":1,"cmd":"hello","version":2})");
  EXPECT_EQ(r["error"]["code"], "version_mismatch");
  EXPECT_NE(r["error"]["message"].get<std::string>().find("client speaks protocol 2, hakmemd speaks 1"),
            std::string::npos);
}

TEST_F(HandlerTest, StatsHasTheDocumentedShapeAndFigures) {
  seg->add(proto::Tier::Pool, proto::ThreadCounter::Allocs, 10);
  seg->add(proto::Tier::Pool, proto::ThreadCounter::Frees, 4);
  seg->add(proto::Tier::Pool, proto::ThreadCounter::AllocBytes, 40960);
  seg->add(proto::Tier::Pool, proto::ThreadCounter::FreeBytes, 16384);
  seg->add(proto::Tier::Pool, proto::ThreadCounter::Misses, 3);
  seg->set_global(proto::Tier::Pool, proto::GlobalCounter::MappedBytes, 65536);
  seg->set_global(proto::Tier::Whale, proto::GlobalCounter::CachedBytes, 4 << 20);
  seg->seg().threads[0].tiny_class_allocs[1].store(5);  // 5 x 32 B
  seg->seg().threads[0].tiny_class_frees[1].store(2);
  seg->seg().global.invalid_frees.store(1);
  json r = call(R"({"id":9,"cmd":"stats","pid":)" + pid() + "}");
  ASSERT_TRUE(r["ok"]) << r.dump();
  ASSERT_EQ(r["result"]["processes"].size(), 1u);
  json p = r["result"]["processes"][0];
  EXPECT_EQ(p["pid"], proc.pid());
  EXPECT_EQ(p["exe"], self_exe());
  EXPECT_EQ(p["cmdline"], own_cmdline());
  EXPECT_GE(p["uptime_s"].get<double>(), 0.0);
  EXPECT_GT(p["rss_bytes"].get<uint64_t>(), 0u);
  EXPECT_TRUE(p["page_faults"].is_number_unsigned());
  for (const char* tier : {"tiny", "pool", "bundle", "whale"})
    for (const char* f : {"allocs", "frees", "hits", "misses", "remote_frees", "alloc_bytes", "free_bytes",
                          "live_bytes", "cached_bytes", "mapped_bytes", "os_maps", "os_unmaps", "madvises",
                          "cache_hits", "cache_misses"})
      EXPECT_TRUE(p["tiers"][tier].contains(f)) << tier << "." << f;
  EXPECT_EQ(p["tiers"]["pool"]["allocs"], 10);
  EXPECT_EQ(p["tiers"]["pool"]["hits"], 7);
  EXPECT_EQ(p["tiers"]["pool"]["live_bytes"], 40960 - 16384);
  EXPECT_EQ(p["tiers"]["pool"]["mapped_bytes"], 65536);
  EXPECT_EQ(p["tiers"]["whale"]["cached_bytes"], 4 << 20);
  EXPECT_EQ(p["tiers"]["tiny"]["allocs"], 5);
  EXPECT_EQ(p["tiers"]["tiny"]["live_bytes"], 3 * 32);
  ASSERT_EQ(p["tiny_classes"].size(), 4u);
  EXPECT_EQ(p["tiny_classes"][1]["size"], 32);
  EXPECT_EQ(p["tiny_classes"][1]["live"], 3);
  EXPECT_EQ(p["errors"]["invalid_frees"], 1);
  EXPECT_EQ(p["knobs"]["whale.cache_bytes"], 1ull << 30);
  EXPECT_EQ(call(R"({"cmd":"stats"})")["result"]["processes"].size(), 1u);
  EXPECT_EQ(call(R"({"cmd":"stats","pid":1})")["error"]["code"], "no_such_process");
  json ps = call(R"({"cmd":"ps"})")["result"]["processes"];
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_EQ(ps[0]["allocs"], 15);
  EXPECT_EQ(ps[0]["live_bytes"], 40960 - 16384 + 96);
}

TEST_F(HandlerTest, SetWritesValueBumpsGenerationAndReportsOldAndNew) {
  const uint64_t gen0 = seg->generation();
  json r = call(R"({"id":2,"cmd":"set","pid":)" + pid() + R"(,"knobs":{"tiny.cap":64,"whale.cache_bytes":"512M"}})");
  ASSERT_TRUE(r["ok"]) << r.dump();
  EXPECT_EQ(seg->knob(proto::Knob::TinyCap), 64u);
  EXPECT_EQ(seg->knob(proto::Knob::WhaleCacheBytes), 512ull << 20);
  EXPECT_EQ(seg->generation(), gen0 + 1);  // one generation for the whole request
  json ch = r["result"]["changes"];
  ASSERT_EQ(ch.size(), 2u);
  EXPECT_EQ(ch[0]["knob"], "tiny.cap");
  EXPECT_EQ(ch[0]["old"], 0);
  EXPECT_EQ(ch[0]["new"], 64);
  EXPECT_EQ(ch[1]["old"], 1ull << 30);
  EXPECT_EQ(r["result"]["processes"][0]["generation"], gen0 + 1);

  json g = call(R"({"cmd":"get","pid":)" + pid() + R"(,"keys":["tiny.cap","tiny.prewarm"]})");
  ASSERT_TRUE(g["ok"]) << g.dump();
  EXPECT_EQ(g["result"]["processes"][0]["knobs"]["tiny.cap"]["value"], 64);
  EXPECT_EQ(g["result"]["processes"][0]["knobs"]["tiny.cap"]["source"], "set");
  EXPECT_EQ(g["result"]["processes"][0]["knobs"]["tiny.prewarm"]["source"], "default");
  EXPECT_EQ(call(R"({"cmd":"get","keys":["tiny.cop"]})")["error"]["code"], "unknown_knob");
}

TEST_F(HandlerTest, OneBadEntryMeansNothingIsWritten) {
  const uint64_t gen0 = seg->generation();
  for (const char* knobs : {R"({"tiny.cap":64,"tiny.capp":1})", R"({"tiny.cap":64,"whale.decay_ms":"soon"})",
                            R"({"tiny.cap":64,"bundle.decay_ms":99999999})", R"({"tiny.cap":64,"shm.enable":0})"}) {
    json r = call(R"({"cmd":"set","all":true,"knobs":)" + std::string(knobs) + "}");
    EXPECT_FALSE(r["ok"]) << knobs;
  }
  EXPECT_EQ(seg->knob(proto::Knob::TinyCap), 0u);
  EXPECT_EQ(seg->generation(), gen0);
}

TEST_F(HandlerTest, AnotherUidSeesAndChangesNothingOfRoots) {
  Peer nobody{65534, 99};
  EXPECT_TRUE(call(R"({"cmd":"ps"})", nobody)["result"]["processes"].empty());
  EXPECT_TRUE(call(R"({"cmd":"stats"})", nobody)["result"]["processes"].empty());
  EXPECT_EQ(call(R"({"cmd":"stats","pid":)" + pid() + "}", nobody)["error"]["code"], "permission_denied");
  EXPECT_EQ(call(R"({"cmd":"get","pid":)" + pid() + "}", nobody)["error"]["code"], "permission_denied");
  EXPECT_EQ(call(R"({"cmd":"set","pid":)" + pid() + R"(,"knobs":{"tiny.cap":8}})", nobody)["error"]["code"],
            "permission_denied");
  EXPECT_TRUE(call(R"({"cmd":"set","all":true,"knobs":{"tiny.cap":8}})", nobody)["result"]["changes"].empty());
  EXPECT_EQ(seg->knob(proto::Knob::TinyCap), 0u);
}

TEST_F(HandlerTest, SetWithWaitReportsWhenTheTargetApplied) {
  Outcome o = h->handle(R"({"id":5,"cmd":"set","pid":)" + pid() + R"(,"knobs":{"tiny.cap":16},"wait_ms":5000})", root);
  ASSERT_TRUE(o.wait);
  std::string reply;
  EXPECT_FALSE(h->poll(*o.wait, &reply));  // nobody applied it yet
  seg->seg().knobs.applied_generation.store(seg->generation());  // what the process does
  ASSERT_TRUE(h->poll(*o.wait, &reply));
  json r = json::parse(reply);
  EXPECT_EQ(r["id"], 5);
  EXPECT_EQ(r["result"]["processes"][0]["applied"], true);
  EXPECT_GE(r["result"]["processes"][0]["apply_ms"].get<double>(), 0.0);
  EXPECT_EQ(r["result"]["changes"][0]["new"], 16);

  o = h->handle(R"({"id":6,"cmd":"set","pid":)" + pid() + R"(,"knobs":{"tiny.cap":17},"wait_ms":1})", root);
  ASSERT_TRUE(o.wait);
  usleep(5000);
  ASSERT_TRUE(h->poll(*o.wait, &reply));  // deadline passed
  EXPECT_EQ(json::parse(reply)["result"]["processes"][0]["applied"], false);
}

TEST_F(HandlerTest, KnobsIsTheWholeTable) {
  json r = call(R"({"cmd":"knobs"})");
  ASSERT_EQ(r["result"]["knobs"].size(), proto::kKnobCount);
  EXPECT_EQ(r["result"]["knobs"][0]["name"], proto::kKnobs[0].name);
  EXPECT_EQ(r["result"]["knobs"][0]["max"], proto::kKnobs[0].max);
  EXPECT_EQ(r["result"]["knobs"][0]["env"], proto::kKnobs[0].env);
}

TEST_F(HandlerTest, ATargetThatDiedIsNoSuchProcess) {
  const std::string pid = this->pid();
  proc.stop();
  EXPECT_EQ(call(R"({"cmd":"stats","pid":)" + pid + "}")["error"]["code"], "no_such_process");
  EXPECT_EQ(call(R"({"cmd":"set","pid":)" + pid + R"(,"knobs":{"tiny.cap":8}})")["error"]["code"], "no_such_process");
  EXPECT_TRUE(call(R"({"cmd":"stats"})")["result"]["processes"].empty());
}

// ---- metrics --------------------------------------------------------------------------

TEST_F(HandlerTest, MetricsAreValidExpositionWithTheFigures) {
  seg->add(proto::Tier::Bundle, proto::ThreadCounter::Allocs, 3);
  seg->add(proto::Tier::Bundle, proto::ThreadCounter::AllocBytes, 3 << 16);
  seg->set_global(proto::Tier::Bundle, proto::GlobalCounter::MappedBytes, 1 << 20);
  const std::string text = metrics_render(*reg);
  const std::string lbl = "pid=\"" + pid() + "\",exe=\"" + self_exe() + "\"";
  EXPECT_NE(text.find("hakmem_processes 1\n"), std::string::npos);
  EXPECT_NE(text.find("hakmem_allocs_total{" + lbl + ",tier=\"bundle\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("hakmem_live_bytes{" + lbl + ",tier=\"bundle\"} 196608\n"), std::string::npos);
  EXPECT_NE(text.find("hakmem_mapped_bytes{" + lbl + ",tier=\"bundle\"} 1048576\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE hakmem_mapped_bytes gauge"), std::string::npos);
  EXPECT_NE(text.find("# TYPE hakmem_os_maps_total counter"), std::string::npos);
  EXPECT_NE(text.find("hakmem_page_faults_total{" + lbl + "} "), std::string::npos);
  // Every line is a comment or `name{labels} value`, and every family has HELP and TYPE.
  std::regex sample(R"(^[a-z_]+(\{[a-z_]+="([^"\\]|\\.)*"(,[a-z_]+="([^"\\]|\\.)*")*\})? [0-9.]+$)");
  std::istringstream in(text);
  std::string line;
  std::set<std::string> typed;
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) == 0) typed.insert(line.substr(7, line.find(' ', 7) - 7));
    if (line[0] == '#') continue;
    EXPECT_TRUE(std::regex_match(line, sample)) << line;
    EXPECT_TRUE(typed.count(line.substr(0, line.find_first_of("{ ")))) << line;
  }
  EXPECT_EQ(metrics_escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

// Mutated requests (fixed seed): every one gets exactly one well-formed reply line.
TEST_F(HandlerTest, RandomlyMutatedRequestsAlwaysGetOneWellFormedReply) {
  const std::vector<std::string> corpus = {
      R"({"id":1,"cmd":"hello","version":1,"client":"x"})",
      R"({"id":2,"cmd":"stats","pid":)" + pid() + "}",
      R"({"id":3,"cmd":"set","pid":)" + pid() + R"(,"knobs":{"tiny.cap":64,"whale.cache_bytes":"512M"},"wait_ms":0})",
      R"({"id":4,"cmd":"get","all":true,"keys":["tiny.cap","whale.decay_ms"]})",
      R"({"id":5,"cmd":"ps"})",
      R"({"id":6,"cmd":"knobs"})",
  };
  spdlog::set_level(spdlog::level::warn);  // accepted sets would log thousands of lines
  const char alphabet[] = "{}[]\":,0123456789-.eEtruefalsnl \\/u\x00\xff\xc3";
  uint64_t x = 0x9e3779b97f4a7c15ull;
  auto rnd = [&] {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  };
  for (int i = 0; i < 20000; i++) {
    std::string s = corpus[rnd() % corpus.size()];
    const int edits = 1 + static_cast<int>(rnd() % 4);
    for (int e = 0; e < edits && !s.empty(); e++) {
      const size_t at = rnd() % s.size();
      switch (rnd() % 3) {
        case 0: s[at] = alphabet[rnd() % (sizeof alphabet - 1)]; break;
        case 1: s.erase(at, 1 + rnd() % 8); break;
        default: s.insert(at, 1, alphabet[rnd() % (sizeof alphabet - 1)]); break;
      }
    }
    Outcome o = h->handle(s, root);
    if (o.wait) continue;  // a mutated wait_ms; polling is covered elsewhere
    ASSERT_FALSE(o.reply.empty()) << s;
    ASSERT_EQ(o.reply.find('\n'), o.reply.size() - 1) << s;
    json r = json::parse(o.reply, nullptr, false);
    ASSERT_FALSE(r.is_discarded()) << s;
    ASSERT_TRUE(r["ok"].is_boolean()) << s;
    if (!r["ok"]) {
      ASSERT_TRUE(r["error"]["code"].is_string()) << s;
    }
  }
  spdlog::set_level(spdlog::level::info);
  // Whatever the mutations wrote, the knobs stay within their ranges.
  for (size_t k = 0; k < proto::kKnobCount; k++) {
    const uint64_t v = seg->seg().knobs.value[k].load();
    EXPECT_GE(v, proto::kKnobs[k].min);
    EXPECT_LE(v, proto::kKnobs[k].max);
  }
}
