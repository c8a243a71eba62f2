// Unit tests of libhakmem's control plane, linked from its sources (not preloaded): env
// parsing, the segment file, thread slots, the knob poll, error reports, fork, stats.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "control.h"
#include "control_internal.h"
#include "hakmem.h"
#include "hakmem/proto/snapshot.h"
#include "os.h"

using namespace hakmem;
using proto::Knob;
using proto::kKnobs;

namespace {

constexpr uint32_t kSizes[] = {16, 32, 48, 64, 128};

void unset_all_knob_env() {
  for (const auto& k : kKnobs) unsetenv(k.env);
}

std::string read_text(const std::string& path) {
  std::string out;
  FILE* f = fopen(path.c_str(), "r");
  if (!f) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  fclose(f);
  return out;
}

int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

// A private segment dir per test, removed afterwards.
class ControlShm : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/hakmem-control-test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    setenv(proto::kShmDirEnv, dir_.c_str(), 1);
    unset_all_knob_env();
  }
  void TearDown() override {
    control_segment_close();
    if (DIR* d = opendir(dir_.c_str())) {
      while (dirent* e = readdir(d))
        if (e->d_name[0] != '.') unlink((dir_ + "/" + e->d_name).c_str());
      closedir(d);
    }
    rmdir(dir_.c_str());
    unsetenv(proto::kShmDirEnv);
  }
  std::string expected_path(pid_t pid) const {
    return dir_ + "/hakmem." + std::to_string(getuid()) + "." + std::to_string(pid);
  }
  void load_defaults() {
    uint64_t v[proto::kKnobSlots];
    control_env_load(v);
    for (size_t i = 0; i < proto::kKnobSlots; i++) g_knob[i].store(v[i]);
  }
  std::string dir_;
};

// ---- env ----

TEST(ControlEnv, DefaultsWhenNothingIsSet) {
  unset_all_knob_env();
  uint64_t v[proto::kKnobSlots];
  EXPECT_EQ(control_env_load(v), 0u);
  for (size_t i = 0; i < proto::kKnobCount; i++) EXPECT_EQ(v[i], kKnobs[i].def) << kKnobs[i].name;
}

TEST(ControlEnv, ParsesEveryTypeAndRecordsTheMask) {
  unset_all_knob_env();
  setenv("HAKMEM_TINY_CAP", "64", 1);               // Uint
  setenv("HAKMEM_TINY_PREWARM", "on", 1);           // Bool
  setenv("HAKMEM_STATS_ENABLE", "false", 1);        // Bool, default 1
  setenv("HAKMEM_WHALE_CACHE_BYTES", "2M", 1);      // Size with suffix
  setenv("HAKMEM_WHALE_DECAY_MS", "2s", 1);         // Millis with suffix
  setenv("HAKMEM_BUNDLE_DECAY_MS", "0x10", 1);      // hex
  uint64_t v[proto::kKnobSlots];
  testing::internal::CaptureStderr();
  const uint64_t mask = control_env_load(v);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(v[size_t(Knob::TinyCap)], 64u);
  EXPECT_EQ(v[size_t(Knob::TinyPrewarm)], 1u);
  EXPECT_EQ(v[size_t(Knob::StatsEnable)], 0u);
  EXPECT_EQ(v[size_t(Knob::WhaleCacheBytes)], 2u << 20);
  EXPECT_EQ(v[size_t(Knob::WhaleDecayMs)], 2000u);
  EXPECT_EQ(v[size_t(Knob::BundleDecayMs)], 16u);
  const uint64_t want = 1ull << size_t(Knob::TinyCap) | 1ull << size_t(Knob::TinyPrewarm) |
                        1ull << size_t(Knob::StatsEnable) | 1ull << size_t(Knob::WhaleCacheBytes) |
                        1ull << size_t(Knob::WhaleDecayMs) | 1ull << size_t(Knob::BundleDecayMs);
  EXPECT_EQ(mask, want);
  EXPECT_EQ(v[size_t(Knob::PoolPrewarm)], kKnobs[size_t(Knob::PoolPrewarm)].def);
  unset_all_knob_env();
}

TEST(ControlEnv, InvalidValuesWarnOnceWithTheRangeAndKeepTheDefault) {
  unset_all_knob_env();
  setenv("HAKMEM_TINY_CAP", "5000", 1);          // out of range
  setenv("HAKMEM_TINY_PREWARM", "maybe", 1);     // not a bool
  setenv("HAKMEM_WHALE_CACHE_BYTES", "12Q", 1);  // bad suffix
  setenv("HAKMEM_WHALE_DECAY_MS", "", 1);        // empty
  setenv("HAKMEM_BUNDLE_DECAY_MS", "99999999999999999999999", 1);  // overflow
  uint64_t v[proto::kKnobSlots];
  testing::internal::CaptureStderr();
  const uint64_t mask = control_env_load(v);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(mask, 0u);
  for (Knob k : {Knob::TinyCap, Knob::TinyPrewarm, Knob::WhaleCacheBytes, Knob::WhaleDecayMs,
                 Knob::BundleDecayMs})
    EXPECT_EQ(v[size_t(k)], kKnobs[size_t(k)].def) << kKnobs[size_t(k)].name;
  EXPECT_EQ(count_lines(err), 5) << err;
  EXPECT_NE(err.find("HAKMEM_TINY_CAP=5000: tiny.cap: out of range (5000); must be 0..1024"), std::string::npos) << err;
  EXPECT_NE(err.find("HAKMEM_TINY_PREWARM=maybe"), std::string::npos) << err;
  EXPECT_NE(err.find("0/1, true/false, on/off or yes/no"), std::string::npos) << err;
  EXPECT_NE(err.find("HAKMEM_WHALE_CACHE_BYTES=12Q: whale.cache_bytes: not a valid value; must be 0..64G"),
            std::string::npos) << err;
  EXPECT_NE(err.find("HAKMEM_WHALE_DECAY_MS=: whale.decay_ms: empty value; must be 0..3600000"), std::string::npos)
      << err;
  EXPECT_NE(err.find("value too large"), std::string::npos) << err;
  EXPECT_NE(err.find("keeping the default 1G"), std::string::npos) << err;
  unset_all_knob_env();
}

TEST(ControlEnv, AHugeInvalidValueStillGivesOneCompleteLine) {
  unset_all_knob_env();
  std::string huge(5000, 'x');
  setenv("HAKMEM_TINY_CAP", huge.c_str(), 1);
  uint64_t v[proto::kKnobSlots];
  testing::internal::CaptureStderr();
  control_env_load(v);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(count_lines(err), 1) << err;
  EXPECT_EQ(err.back(), '\n');
  EXPECT_NE(err.find(std::string(64, 'x') + "...: tiny.cap: not a valid value; must be 0..1024"), std::string::npos)
      << err;
  unset_all_knob_env();
}

// Before libc has set `environ` (the very first malloc), the initial environment is read
// from /proc/self/environ. ctest starts this test with HAKMEM_TINY_CAP=77 in it.
TEST(ControlEnv, FallsBackToProcSelfEnvironWithoutEnviron) {
  const char* initial = getenv("HAKMEM_TINY_CAP");
  if (initial == nullptr || strcmp(initial, "77") != 0)
    GTEST_SKIP() << "run through ctest (starts the test with HAKMEM_TINY_CAP=77)";
  unset_all_knob_env();  // environ no longer has it; /proc/self/environ still does
  char** saved = environ;
  environ = nullptr;
  control_env_reset_for_test();
  uint64_t v[proto::kKnobSlots];
  const uint64_t mask = control_env_load(v);
  const char* probe = control_env_get("HAKMEM_TINY_CAP");
  environ = saved;
  EXPECT_EQ(v[size_t(Knob::TinyCap)], 77u);
  EXPECT_EQ(mask, 1ull << size_t(Knob::TinyCap));
  ASSERT_NE(probe, nullptr);
  EXPECT_STREQ(probe, "77");
  // And with environ back, the (now unset) variable is gone again.
  EXPECT_EQ(control_env_get("HAKMEM_TINY_CAP"), nullptr);
}

// ---- segment ----

TEST_F(ControlShm, SegmentIsCreated0600WithAFullHeaderAndRemovedOnClose) {
  setenv("HAKMEM_TINY_CAP", "64", 1);
  load_defaults();
  const uint64_t mask = 1ull << size_t(Knob::TinyCap);
  control_segment_open(true, kSizes, 5, mask, 0);
  const std::string path = expected_path(getpid());
  ASSERT_TRUE(control_segment_is_shared());
  EXPECT_EQ(path, control_segment_path());
  struct stat st;
  ASSERT_EQ(lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, getuid());
  EXPECT_GE(static_cast<size_t>(st.st_size), sizeof(proto::Segment));

  // Read it back through a second, independent mapping, as hakmemd would.
  int fd = open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  void* m = mmap(nullptr, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  ASSERT_NE(m, MAP_FAILED);
  const auto* s = static_cast<const proto::Segment*>(m);
  EXPECT_EQ(proto::validate_segment(m, st.st_size), proto::SegmentCheck::Ok);
  EXPECT_EQ(s->header.pid, getpid());
  EXPECT_EQ(s->header.uid, getuid());
  // Field 22 of /proc/self/stat, counted after the command name: the process started no
  // later than its segment was created, and that was no later than now.
  std::string stat = read_text("/proc/self/stat");
  std::string rest = stat.substr(stat.rfind(')') + 2);
  unsigned long long start = 0;
  {
    int field = 3;
    size_t pos = 0;
    while (field < 22) { pos = rest.find(' ', pos) + 1; field++; }
    start = strtoull(rest.c_str() + pos, nullptr, 10);
  }
  timespec boot;
  clock_gettime(CLOCK_BOOTTIME, &boot);
  const unsigned long long now = boot.tv_sec * sysconf(_SC_CLK_TCK) + boot.tv_nsec / (1000000000 / sysconf(_SC_CLK_TCK));
  EXPECT_GT(start, 0u);
  EXPECT_LE(start, s->header.created_boot_ticks);
  EXPECT_LE(s->header.created_boot_ticks, now);
  EXPECT_STREQ(s->header.lib_version, HAKMEM_VERSION);
  ASSERT_EQ(s->header.tiny_class_count, 5u);
  for (uint32_t c = 0; c < 5; c++) EXPECT_EQ(s->header.tiny_class_size[c], kSizes[c]);
  EXPECT_EQ(s->knobs.value[size_t(Knob::TinyCap)].load(), 64u);
  EXPECT_EQ(s->knobs.env_mask.load(), mask);
  for (size_t i = 0; i < proto::kKnobCount; i++)
    EXPECT_EQ(s->knobs.value[i].load(), g_knob[i].load()) << kKnobs[i].name;

  // Counters written through the library appear in the other mapping.
  control_add(proto::Tier::Whale, proto::GlobalCounter::OsMaps, 3);
  EXPECT_EQ(s->global.tier[3][size_t(proto::GlobalCounter::OsMaps)].load(), 3u);
  munmap(m, st.st_size);

  control_segment_close();
  EXPECT_NE(access(path.c_str(), F_OK), 0);
  EXPECT_FALSE(control_segment_is_shared());
}

TEST_F(ControlShm, SegmentFileIsRemovedAtExit) {
  const std::string dir = dir_;
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    load_defaults();
    control_segment_open(true, kSizes, 5, 0, 0);
    // Tell the parent it exists, then exit normally: the destructor removes it.
    if (access(control_segment_path(), F_OK) == 0) exit(7);
    _exit(1);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 7);
  EXPECT_NE(access(expected_path(pid).c_str(), F_OK), 0) << "segment left behind";
}

TEST_F(ControlShm, UnusableShmDirFallsBackToALocalSegmentWithAWarning) {
  setenv(proto::kShmDirEnv, "/nonexistent/hakmem-dir", 1);
  load_defaults();
  testing::internal::CaptureStderr();
  control_segment_open(true, kSizes, 5, 0, 0);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_FALSE(control_segment_is_shared());
  EXPECT_NE(err.find("cannot create the stats segment in /nonexistent/hakmem-dir"), std::string::npos) << err;
  // Stats still work on the stand-in.
  EXPECT_EQ(proto::validate_segment(&control_segment(), sizeof(proto::Segment)), proto::SegmentCheck::Ok);
  control_add(proto::Tier::Pool, proto::GlobalCounter::MappedBytes, 65536);
  proto::Snapshot snap;
  proto::snapshot(control_segment(), &snap);
  EXPECT_GE(snap.tier[1].get(proto::GlobalCounter::MappedBytes), 65536u);
}

TEST_F(ControlShm, RelativeShmDirIsRefusedForTheDefault) {
  setenv(proto::kShmDirEnv, "relative/dir", 1);
  load_defaults();
  testing::internal::CaptureStderr();
  control_segment_open(true, kSizes, 5, 0, 0);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("hakmem: ignoring HAKMEM_SHM_DIR: not an absolute path; using /dev/shm"), std::string::npos)
      << err;
  if (control_segment_is_shared()) {
    EXPECT_EQ(std::string(control_segment_path()).rfind("/dev/shm/hakmem.", 0), 0u) << control_segment_path();
  }
}

TEST_F(ControlShm, ShmOffCreatesNoFile) {
  load_defaults();
  control_segment_open(false, kSizes, 5, 0, 0);
  EXPECT_FALSE(control_segment_is_shared());
  EXPECT_STREQ(control_segment_path(), "");
  EXPECT_NE(access(expected_path(getpid()).c_str(), F_OK), 0);
}

// ---- thread slots ----

TEST_F(ControlShm, ThreadSlotsAreTakenFreedAndReusedKeepingTheirCounts) {
  load_defaults();
  control_segment_open(true, kSizes, 5, 0, 0);
  proto::Segment* s = control_segment_ptr();
  ThreadCtl a{}, b{};
  control_thread_attach(&a);
  control_thread_attach(&b);
  EXPECT_EQ(a.slot_index, 0u);
  EXPECT_EQ(b.slot_index, 1u);
  EXPECT_EQ(a.slot, &s->threads[0]);
  EXPECT_EQ(s->threads[0].owner_tid.load(), os_tid());
  EXPECT_EQ(s->global.thread_slots_hwm.load(), 2u);
  EXPECT_EQ(s->global.threads_live.load(), 2u);
  thread_count(&a, proto::Tier::Pool, proto::ThreadCounter::Allocs, 5);
  control_thread_detach(&a);
  EXPECT_EQ(a.slot, control_discard_slot());
  EXPECT_EQ(s->threads[0].owner_tid.load(), 0u);
  EXPECT_EQ(s->global.threads_live.load(), 1u);
  ThreadCtl c{};
  control_thread_attach(&c);
  EXPECT_EQ(c.slot_index, 0u);  // the freed slot, counts kept
  thread_count(&c, proto::Tier::Pool, proto::ThreadCounter::Allocs, 2);
  proto::Snapshot snap;
  proto::snapshot(*s, &snap);
  EXPECT_EQ(snap.tier[1].allocs(), 7u);
  EXPECT_EQ(s->global.thread_slots_hwm.load(), 2u);
}

TEST_F(ControlShm, ThreadsBeyondTheSlotsCountAsUnslotted) {
  load_defaults();
  control_segment_open(false, kSizes, 5, 0, 0);
  proto::Segment* s = control_segment_ptr();
  static ThreadCtl ctls[proto::kThreadSlots + 2];
  for (auto& c : ctls) control_thread_attach(&c);
  EXPECT_EQ(s->global.thread_slots_hwm.load(), proto::kThreadSlots);
  EXPECT_EQ(s->global.threads_live.load(), proto::kThreadSlots);
  EXPECT_EQ(s->global.threads_unslotted.load(), 2u);
  ThreadCtl& extra = ctls[proto::kThreadSlots];
  EXPECT_EQ(extra.slot_index, UINT32_MAX);
  ASSERT_NE(extra.slot, nullptr);
  EXPECT_NE(extra.slot, control_discard_slot());
  // The overflow slot is not published: the sums do not move.
  thread_count(&extra, proto::Tier::Bundle, proto::ThreadCounter::Allocs, 9);
  proto::Snapshot snap;
  proto::snapshot(*s, &snap);
  EXPECT_EQ(snap.tier[2].allocs(), 0u);
  for (auto& c : ctls) control_thread_detach(&c);
  EXPECT_EQ(s->global.threads_live.load(), 0u);
}

// ---- knob poll ----

TEST_F(ControlShm, PollAppliesNewGenerationsClampingGarbage) {
  load_defaults();
  control_segment_open(true, kSizes, 5, 0, 0);
  proto::Segment* s = control_segment_ptr();
  ThreadCtl t{};
  control_thread_attach(&t);
  EXPECT_FALSE(control_poll(&t));  // nothing changed

  // A sane daemon write: value, then generation++.
  s->knobs.value[size_t(Knob::TinyCap)].store(64);
  s->knobs.generation.fetch_add(1);
  EXPECT_TRUE(control_poll(&t));
  EXPECT_EQ(knob(Knob::TinyCap), 64u);
  EXPECT_EQ(s->knobs.applied_generation.load(), 1u);
  EXPECT_GT(s->knobs.applied_unix_ns.load(), 0u);
  EXPECT_FALSE(control_poll(&t));

  // Garbage everywhere: every live knob ends up within its range, restart-only knobs
  // keep what the process started with.
  const uint64_t print_before = knob(Knob::StatsPrint), shm_before = knob(Knob::ShmEnable);
  for (auto& v : s->knobs.value) v.store(0xdeadbeefdeadbeefull);
  s->knobs.generation.store(0xfffffffffff0ull);
  EXPECT_TRUE(control_poll(&t));
  for (size_t i = 0; i < proto::kKnobCount; i++) {
    const auto& k = kKnobs[i];
    if (k.mode == proto::KnobMode::Live) {
      EXPECT_EQ(knob(k.id), k.max) << k.name;
    }
  }
  EXPECT_EQ(knob(Knob::StatsPrint), print_before);
  EXPECT_EQ(knob(Knob::ShmEnable), shm_before);
  EXPECT_EQ(s->knobs.applied_generation.load(), 0xfffffffffff0ull);

  // Zeroes are in range for every knob's minimum here; stats.enable=0 re-targets the slot.
  for (auto& v : s->knobs.value) v.store(0);
  s->knobs.generation.fetch_add(1);
  EXPECT_TRUE(control_poll(&t));
  EXPECT_EQ(knob(Knob::StatsEnable), 0u);
  EXPECT_EQ(t.slot, control_discard_slot());
  thread_count(&t, proto::Tier::Tiny, proto::ThreadCounter::Misses, 1);
  EXPECT_EQ(s->threads[0].tier[0][size_t(proto::ThreadCounter::Misses)].load(), 0u);
  s->knobs.value[size_t(Knob::StatsEnable)].store(1);
  s->knobs.generation.fetch_add(1);
  EXPECT_TRUE(control_poll(&t));
  EXPECT_EQ(t.slot, &s->threads[0]);
}

TEST_F(ControlShm, ThreadAttachingAfterAnUnpolledWriteAppliesIt) {
  load_defaults();
  control_segment_open(false, kSizes, 5, 0, 0);
  proto::Segment* s = control_segment_ptr();
  s->knobs.value[size_t(Knob::WhaleDecayMs)].store(5);
  s->knobs.generation.fetch_add(1);
  ThreadCtl t{};
  control_thread_attach(&t);
  EXPECT_EQ(knob(Knob::WhaleDecayMs), 5u);
}

TEST_F(ControlShm, ProcessPollAppliesAWriteAndThreadsStillRefreshTheirOwnState) {
  load_defaults();
  control_segment_open(true, kSizes, 5, 0, 0);
  proto::Segment* s = control_segment_ptr();
  ThreadCtl t{};
  control_thread_attach(&t);
  EXPECT_FALSE(control_poll_process());  // nothing written

  s->knobs.value[size_t(Knob::TinyCap)].store(96);
  s->knobs.generation.fetch_add(1);
  EXPECT_TRUE(control_poll_process());
  EXPECT_EQ(knob(Knob::TinyCap), 96u);
  EXPECT_EQ(s->knobs.applied_generation.load(), 1u);
  EXPECT_FALSE(control_poll_process());
  // The thread has not seen the generation yet: its own check still reports the change,
  // so it refreshes what it cached (its magazine capacities, its stats slot).
  EXPECT_TRUE(control_poll(&t));
  EXPECT_FALSE(control_poll(&t));

  // The decay thread and allocating threads poll concurrently: every write is applied,
  // the published generation only moves forward, and once it says the last write is
  // applied, the process holds that write's value: a slower reload of an older generation
  // must not land on top of a newer one (run under TSan in CI, where that once happened).
  std::atomic<bool> stop{false};
  std::vector<std::thread> pollers;
  for (int p = 0; p < 2; p++)
    pollers.emplace_back([&] {
      while (!stop.load()) control_poll_process();
    });
  for (int p = 0; p < 2; p++)
    pollers.emplace_back([&] {
      ThreadCtl w{};
      control_thread_attach(&w);
      while (!stop.load()) control_poll(&w);
      control_thread_detach(&w);
    });
  uint64_t last_seen = 0;
  bool backwards = false;
  int stale = 0;
  for (uint64_t round = 0; round < 200; round++) {
    for (uint64_t i = 0; i < 50; i++) {
      s->knobs.value[size_t(Knob::TinyCap)].store((round * 50 + i) % 1000);
      s->knobs.generation.fetch_add(1);
      const uint64_t a = s->knobs.applied_generation.load();
      backwards |= a < last_seen;
      last_seen = a;
    }
    const uint64_t gen = s->knobs.generation.load();
    for (int i = 0; i < 100000 && s->knobs.applied_generation.load() < gen; i++) std::this_thread::yield();
    stale += knob(Knob::TinyCap) != (round * 50 + 49) % 1000;
  }
  const uint64_t gen = s->knobs.generation.load();
  stop = true;
  for (auto& p : pollers) p.join();
  EXPECT_FALSE(backwards);
  EXPECT_EQ(stale, 0) << "rounds that ended with an older write's value in force";
  EXPECT_EQ(s->knobs.applied_generation.load(), gen);
  EXPECT_EQ(knob(Knob::TinyCap), (199u * 50 + 49) % 1000);
  control_thread_detach(&t);
}

// ---- C API ----

TEST_F(ControlShm, KnobSetValidatesLikeTheDaemonAndWritesTheBlock) {
  load_defaults();
  control_segment_open(true, kSizes, 5, 0, 0);
  proto::Segment* s = control_segment_ptr();
  char err[256];
  const uint64_t gen = s->knobs.generation.load();
  EXPECT_EQ(hakmem_knob_set("tiny.cap", "64", err, sizeof err), HAKMEM_OK);
  EXPECT_STREQ(err, "");
  uint64_t v = 0;
  EXPECT_EQ(hakmem_knob_get("tiny.cap", &v), HAKMEM_OK);
  EXPECT_EQ(v, 64u);
  EXPECT_EQ(s->knobs.value[size_t(Knob::TinyCap)].load(), 64u);
  EXPECT_EQ(s->knobs.generation.load(), gen + 1);

  EXPECT_EQ(hakmem_knob_set("tiny.cap", "5000", err, sizeof err), HAKMEM_ERANGE);
  EXPECT_STREQ(err, "tiny.cap: out of range (5000); must be 0..1024");
  EXPECT_EQ(hakmem_knob_set("whale.cache_bytes", "lots", err, sizeof err), HAKMEM_EINVAL);
  EXPECT_NE(std::string(err).find("must be 0..64G"), std::string::npos) << err;
  EXPECT_EQ(hakmem_knob_set("tiny.capp", "1", err, sizeof err), HAKMEM_EUNKNOWN);
  EXPECT_NE(std::string(err).find("unknown knob 'tiny.capp'"), std::string::npos) << err;
  EXPECT_EQ(hakmem_knob_set("stats.print", "1", err, sizeof err), HAKMEM_ERESTART);
  EXPECT_NE(std::string(err).find("HAKMEM_STATS"), std::string::npos) << err;
  EXPECT_EQ(hakmem_knob_set("tiny.cap", nullptr, nullptr, 0), HAKMEM_EINVAL);
  EXPECT_EQ(s->knobs.generation.load(), gen + 1) << "refused writes must not bump the generation";
  EXPECT_EQ(knob(Knob::TinyCap), 64u);

  EXPECT_EQ(hakmem_knob_set_u64("whale.cache_bytes", 0, err, sizeof err), HAKMEM_OK);
  EXPECT_EQ(knob(Knob::WhaleCacheBytes), 0u);
  EXPECT_EQ(hakmem_knob_set_u64("tiny.cap", 1025, err, sizeof err), HAKMEM_ERANGE);
  EXPECT_EQ(hakmem_knob_set("whale.decay_ms", "2s", err, sizeof err), HAKMEM_OK);
  EXPECT_EQ(hakmem_knob_get("whale.decay_ms", &v), HAKMEM_OK);
  EXPECT_EQ(v, 2000u);
  EXPECT_EQ(hakmem_knob_get("nope", &v), HAKMEM_EUNKNOWN);
  EXPECT_EQ(hakmem_knob_get(nullptr, &v), HAKMEM_EINVAL);

  ASSERT_EQ(hakmem_knob_count(), proto::kKnobCount);
  for (unsigned i = 0; i < hakmem_knob_count(); i++) EXPECT_STREQ(hakmem_knob_name(i), kKnobs[i].name);
  EXPECT_EQ(hakmem_knob_name(hakmem_knob_count()), nullptr);
  EXPECT_STREQ(hakmem_version(), HAKMEM_VERSION);
  EXPECT_STREQ(hakmem_strerror(HAKMEM_ERANGE), "value out of range");
}

TEST_F(ControlShm, StatsGetSummarisesTheSegment) {
  load_defaults();
  control_segment_open(true, kSizes, 5, 0, 0);
  ThreadCtl t{};
  control_thread_attach(&t);
  slot_add(t.slot->tiny_class_allocs[1], 10);  // 10 x 32 B
  slot_add(t.slot->tiny_class_frees[1], 4);
  thread_count(&t, proto::Tier::Whale, proto::ThreadCounter::Allocs, 2);
  thread_count(&t, proto::Tier::Whale, proto::ThreadCounter::AllocBytes, 4 << 20);
  control_add(proto::Tier::Whale, proto::GlobalCounter::MappedBytes, 4 << 20);
  control_add(proto::Tier::Tiny, proto::GlobalCounter::MappedBytes, 1 << 20);
  control_add(proto::Tier::Tiny, proto::GlobalCounter::CachedBytes, 4096);
  // A gauge that slipped below zero reads as 0, not as 16 EiB.
  control_add(proto::Tier::Bundle, proto::GlobalCounter::CachedBytes, -8192);
  hakmem_stats st;
  ASSERT_EQ(hakmem_stats_get(&st, sizeof st), HAKMEM_OK);
  EXPECT_EQ(st.tier[HAKMEM_TIER_TINY].allocs, 10u);
  EXPECT_EQ(st.tier[HAKMEM_TIER_TINY].frees, 4u);
  EXPECT_EQ(st.tier[HAKMEM_TIER_TINY].live_bytes, 6u * 32);
  EXPECT_EQ(st.tier[HAKMEM_TIER_WHALE].live_bytes, 4u << 20);
  EXPECT_EQ(st.tier[HAKMEM_TIER_WHALE].mapped_bytes, 4u << 20);
  EXPECT_EQ(st.tier[HAKMEM_TIER_BUNDLE].cached_bytes, 0u);
  EXPECT_EQ(st.threads_live, 1u);
  EXPECT_EQ(st.shared, 1);
  EXPECT_STREQ(st.segment_path, control_segment_path());
  EXPECT_GT(st.minor_faults, 0u);

  // A caller compiled against an older, shorter struct gets only its prefix.
  hakmem_stats small;
  memset(&small, 0xab, sizeof small);
  ASSERT_EQ(hakmem_stats_get(&small, sizeof(hakmem_tier_stats)), HAKMEM_OK);
  EXPECT_EQ(small.tier[0].allocs, 10u);
  EXPECT_EQ(small.tier[1].allocs, 0xababababababababull);

  struct mallinfo2 m = mallinfo2();
  EXPECT_EQ(m.arena, 1u << 20);
  EXPECT_EQ(m.hblkhd, 4u << 20);
  EXPECT_EQ(m.hblks, 2u);
  EXPECT_EQ(m.uordblks, 6u * 32 + (4u << 20));
  EXPECT_EQ(m.fordblks, 4096u);

  char* xml = nullptr;
  size_t len = 0;
  FILE* f = open_memstream(&xml, &len);
  ASSERT_EQ(malloc_info(0, f), 0);
  fclose(f);
  std::string x(xml, len);
  free(xml);
  EXPECT_EQ(x.rfind("<malloc version=\"1\"", 0), 0u) << x;
  EXPECT_NE(x.find("<size from=\"17\" to=\"32\" total=\"192\" count=\"6\"/>"), std::string::npos) << x;
  EXPECT_NE(x.find("<heap nr=\"3\" name=\"whale\">"), std::string::npos) << x;
  EXPECT_NE(x.find("</malloc>\n"), std::string::npos) << x;
  EXPECT_EQ(malloc_info(1, stdout), -1);

  testing::internal::CaptureStderr();
  malloc_stats();
  const std::string out = testing::internal::GetCapturedStderr();
  EXPECT_NE(out.find("hakmem: "), std::string::npos) << out;
  EXPECT_NE(out.find("\ntiny "), std::string::npos) << out;
  EXPECT_NE(out.find("\nwhale "), std::string::npos) << out;
  EXPECT_NE(out.find("threads live 1"), std::string::npos) << out;
  EXPECT_NE(out.find("192 B"), std::string::npos) << out;
  EXPECT_EQ(out.find("TiB"), std::string::npos) << out;
}

// ---- error reports ----

TEST_F(ControlShm, ErrorsAreReportedOncePerAddressBoundedAndCounted) {
  load_defaults();
  control_segment_open(false, kSizes, 5, 0, 0);
  control_reset_reports_for_test();
  proto::Segment* s = control_segment_ptr();
  int x;
  testing::internal::CaptureStderr();
  control_report_invalid_free("free", &x);
  control_report_invalid_free("free", &x);
  control_report_double_free("realloc", &x + 1);
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(count_lines(err), 2) << err;
  char want[128];
  snprintf(want, sizeof want, "hakmem: free(): invalid pointer %p: not allocated by hakmem\n", (void*)&x);
  EXPECT_NE(err.find(want), std::string::npos) << err;
  snprintf(want, sizeof want, "hakmem: realloc(): double free of %p\n", (void*)(&x + 1));
  EXPECT_NE(err.find(want), std::string::npos) << err;
  EXPECT_EQ(s->global.invalid_frees.load(), 2u);
  EXPECT_EQ(s->global.double_frees.load(), 1u);

  // A flood of distinct bad pointers: bounded output, everything counted.
  testing::internal::CaptureStderr();
  for (uintptr_t i = 1; i <= 1000; i++) control_report_invalid_free("free", reinterpret_cast<void*>(i * 16));
  err = testing::internal::GetCapturedStderr();
  EXPECT_LE(count_lines(err), 33);
  EXPECT_NE(err.find("no longer reported, still counted"), std::string::npos) << err;
  EXPECT_EQ(s->global.invalid_frees.load(), 1002u);
}

TEST_F(ControlShm, AbortOnErrorAborts) {
  load_defaults();
  g_knob[size_t(Knob::AbortOnError)].store(1);
  control_segment_open(false, kSizes, 5, 0, 0);
  int x;
  EXPECT_DEATH(control_report_invalid_free("free", &x), "invalid pointer 0x.*aborting: debug.abort_on_error=1");
  g_knob[size_t(Knob::AbortOnError)].store(0);
}

// ---- fork ----

// The slow paths save and restore errno through os_errno: it must be the calling thread's
// errno, in every thread and in a fork child (whose one thread inherits its parent's TLS).
TEST(Os, ErrnoLocationIsTheCallingThreadsInEveryThreadAndInAForkChild) {
  int* const mine = os_errno();
  EXPECT_EQ(mine, &errno);
  EXPECT_EQ(os_errno(), mine);  // the cached address, asked again
  int* theirs = nullptr;
  bool same_as_errno = false;
  std::thread([&] {
    theirs = os_errno();
    same_as_errno = theirs == &errno;
    *theirs = 42;
    same_as_errno = same_as_errno && errno == 42;
  }).join();
  EXPECT_TRUE(same_as_errno);
  EXPECT_NE(theirs, mine);
  errno = 7;
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int* e = os_errno();
    *e = 99;
    _exit(e == &errno && errno == 99 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(errno, 7);
}

TEST_F(ControlShm, ForkChildGetsItsOwnSegmentWithTheParentsKnobs) {
  load_defaults();
  control_segment_open(true, kSizes, 5, 0, 0);
  proto::Segment* parent_seg = control_segment_ptr();
  ThreadCtl t{};
  control_thread_attach(&t);
  ASSERT_EQ(hakmem_knob_set("tiny.cap", "100", nullptr, 0), HAKMEM_OK);
  thread_count(&t, proto::Tier::Pool, proto::ThreadCounter::Allocs, 3);
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    control_atfork_child(&t);
    int bad = 0;
    // First the local stand-in: no file yet (a child that only execs leaves none).
    proto::Segment* local = control_segment_ptr();
    if (local == parent_seg || control_segment_is_shared()) bad |= 1;
    if (access(expected_path(getpid()).c_str(), F_OK) == 0) bad |= 2;
    if (local->knobs.value[size_t(Knob::TinyCap)].load() != 100 || knob(Knob::TinyCap) != 100) bad |= 4;
    if (t.slot != &local->threads[0] || local->global.threads_live.load() != 1) bad |= 8;
    // The slot is the surviving thread's: its owner is the child's one thread (whose id the
    // child handler takes from getpid, not gettid).
    if (local->threads[0].owner_tid.load() != os_tid()) bad |= 65536;
    proto::Snapshot snap;
    proto::snapshot(*local, &snap);
    // Inherited figures: the child's memory is the parent's, so are the counts describing it.
    if (snap.tier[1].allocs() != 3) bad |= 16;
    // The stand-in carries the parent's header with the child's pid (no /proc read yet).
    if (local->header.pid != getpid() || local->header.tiny_class_count != 5 ||
        local->header.tiny_class_size[4] != kSizes[4] || local->header.ready.load() != 1)
      bad |= 2048;
    thread_count(&t, proto::Tier::Pool, proto::ThreadCounter::Allocs, 5);
    // The parent's segment stays mapped until the child publishes (a child that execs or
    // exits before spares the system call), though nothing writes into it any more.
    if (parent_seg->header.magic != proto::kMagic) bad |= 16384;
    // The first periodic check only starts the clock: a child that execs or exits within
    // kChildPublishDelayNs (a shell's command) never creates a file.
    if (control_poll(&t) || control_segment_is_shared() || access(expected_path(getpid()).c_str(), F_OK) == 0)
      bad |= 8192;
    if (parent_seg->header.magic != proto::kMagic) bad |= 16384;
    usleep(kChildPublishDelayNs / 1000 + 20000);
    // The first check after that creates the child's own file, carrying what was counted,
    // and replaces the parent's mapping with private zero pages.
    if (!control_poll(&t)) bad |= 32;
    if (parent_seg->header.magic != 0) bad |= 32768;
    proto::Segment* s = control_segment_ptr();
    if (!control_segment_is_shared() || std::string(control_segment_path()) != expected_path(getpid())) bad |= 64;
    if (s->header.pid != getpid() || t.slot != &s->threads[0]) bad |= 128;
    // Its own file's header is written afresh: the creation time (tells a reused pid apart).
    if (s->header.created_boot_ticks == 0 || s->header.tiny_class_count != 5) bad |= 4096;
    proto::snapshot(*s, &snap);
    if (snap.tier[1].allocs() != 3 + 5 || snap.threads_live != 1) bad |= 256;
    if (s->knobs.value[size_t(Knob::TinyCap)].load() != 100 || knob(Knob::TinyCap) != 100) bad |= 512;
    if (control_poll(&t)) bad |= 1024;  // and then nothing more to do
    // The parent's mapping is no longer shared: scribbling on it stays in the child.
    parent_seg->global.invalid_frees.store(12345);
    if (write(pipefd[1], &bad, sizeof bad) != sizeof bad) _exit(2);
    _exit(0);  // no destructors: the test checks the file then removes it
  }
  close(pipefd[1]);
  int bad = -1;
  ASSERT_EQ(read(pipefd[0], &bad, sizeof bad), (ssize_t)sizeof bad);
  close(pipefd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(access(expected_path(pid).c_str(), F_OK), 0) << "child created no segment";
  EXPECT_EQ(control_segment_ptr(), parent_seg);
  EXPECT_EQ(parent_seg->global.invalid_frees.load(), 0u);
  EXPECT_EQ(access(expected_path(getpid()).c_str(), F_OK), 0);
  proto::Snapshot snap;
  proto::snapshot(*parent_seg, &snap);
  EXPECT_EQ(snap.tier[1].allocs(), 3u);
}

// A fork child that maps kPublishGrowthBytes of its own creates its file at its first check,
// without the delay; what it inherited from its parent does not count, and less does not do.
TEST_F(ControlShm, AForkChildThatMapsMuchOfItsOwnPublishesAtItsFirstCheck) {
  load_defaults();
  control_segment_open(true, kSizes, 5, 0, 0);
  ThreadCtl t{};
  control_thread_attach(&t);
  // The parent's mappings, which a child inherits: far more than the threshold.
  control_add(proto::Tier::Whale, proto::GlobalCounter::MappedBytes, 4 * kPublishGrowthBytes);
  // Each child maps `own` bytes, runs its first check, and reports whether it published.
  auto child_published = [&](int64_t own) -> int {
    int pipefd[2];
    if (pipe(pipefd) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) {
      close(pipefd[0]);
      close(pipefd[1]);
      return -1;
    }
    if (pid == 0) {
      close(pipefd[0]);
      control_atfork_child(&t);
      control_add(proto::Tier::Whale, proto::GlobalCounter::MappedBytes, own);
      control_poll(&t);
      int published = (control_segment_is_shared() ? 1 : 0) | (access(expected_path(getpid()).c_str(), F_OK) == 0 ? 2 : 0);
      if (write(pipefd[1], &published, sizeof published) != sizeof published) _exit(2);
      control_segment_close();
      _exit(0);
    }
    close(pipefd[1]);
    int published = -1;
    if (read(pipefd[0], &published, sizeof published) != sizeof published) published = -1;
    close(pipefd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? published : -1;
  };
  EXPECT_EQ(child_published(0), 0) << "the inherited mappings counted as the child's own";
  EXPECT_EQ(child_published(kPublishGrowthBytes - 4096), 0) << "published below the threshold";
  EXPECT_EQ(child_published(kPublishGrowthBytes), 3) << "a child that mapped the threshold waited";
  control_add(proto::Tier::Whale, proto::GlobalCounter::MappedBytes, -4 * kPublishGrowthBytes);
}

}  // namespace
