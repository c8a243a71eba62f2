// daemon_load_probe: the daemon's cost figures (issue 5: stats over 200 live processes
// <= 100 ms, daemon RSS <= 20 MiB). Not a test: it prints measurements, asserts nothing.
//   daemon_load_probe [PROCESSES=200] [THREADS_PER_PROCESS=8] [LIBHAKMEM.so]
// Starts PROCESSES sleeping children, each with a segment (THREADS_PER_PROCESS used thread
// slots, 32 tiny classes, counters filled) -- or, given the library, PROCESSES real `sleep`
// processes with it preloaded --, the real hakmemd on a private socket, waits for discovery,
// then times `stats` (all processes) over the socket and reads the daemon's VmRSS.
#include <algorithm>
#include <memory>

#include "daemon_harness.h"

using namespace hakmem_test;
namespace proto = hakmem::proto;

static uint64_t status_kib(pid_t pid, const char* key) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) return std::stoull(line.substr(strlen(key)));
  return 0;
}

int main(int argc, char** argv) {
  const int n = argc > 1 ? atoi(argv[1]) : 200;
  const int threads = argc > 2 ? atoi(argv[2]) : 8;
  DaemonProc d({"--log-level", getenv("PROBE_LOG") ? getenv("PROBE_LOG") : "warn", "--scan-interval-ms", "1000"});
  if (!d.ready()) {
    fprintf(stderr, "hakmemd did not start:\n%s", d.log().c_str());
    return 1;
  }
  std::vector<std::unique_ptr<Sleeper>> procs;
  std::vector<std::unique_ptr<FakeSegment>> segs;
  const char* lib = argc > 3 ? argv[3] : nullptr;
  std::vector<pid_t> real;
  struct Reaper {
    std::vector<pid_t>& pids;
    ~Reaper() {
      for (pid_t p : pids) kill(p, SIGKILL);
      for (pid_t p : pids) waitpid(p, nullptr, 0);
    }
  } reaper{real};
  for (int i = 0; lib && i < n; i++) {
    pid_t p = fork();
    if (p == 0) {
      setenv("LD_PRELOAD", lib, 1);
      setenv("HAKMEM_SHM_DIR", d.shm().c_str(), 1);
      execlp("sleep", "sleep", "600", static_cast<char*>(nullptr));
      _exit(127);
    }
    real.push_back(p);
  }
  for (int i = 0; !lib && i < n; i++) {
    procs.push_back(std::make_unique<Sleeper>());
    auto s = std::make_unique<FakeSegment>(d.shm(), *procs.back());
    auto& seg = s->seg();
    seg.header.tiny_class_count = 32;
    for (uint32_t c = 0; c < 32; c++) seg.header.tiny_class_size[c] = 16 * (c + 1);
    seg.global.thread_slots_hwm.store(static_cast<uint32_t>(threads));
    seg.global.threads_live.store(static_cast<uint32_t>(threads));
    for (int t = 0; t < threads; t++) {
      for (size_t tier = 0; tier < proto::kTierCount; tier++)
        for (size_t c = 0; c < proto::kThreadCounterCount; c++) seg.threads[t].tier[tier][c].store(1000 + c);
      for (uint32_t c = 0; c < 32; c++) {
        seg.threads[t].tiny_class_allocs[c].store(100000 + c);
        seg.threads[t].tiny_class_frees[c].store(90000 + c);
      }
    }
    segs.push_back(std::move(s));
  }
  Client c(d.socket());
  if (!eventually([&] {
        json r = c.call({{"cmd", "ps"}});
        return r.contains("result") && r["result"]["processes"].size() == static_cast<size_t>(n);
      }, 60)) {
    fprintf(stderr, "discovery incomplete\n");
    return 1;
  }
  std::vector<double> ms;
  size_t bytes = 0;
  for (int i = 0; i < 20; i++) {
    auto t0 = std::chrono::steady_clock::now();
    c.send_raw("{\"id\":1,\"cmd\":\"stats\"}\n");
    auto line = c.read_line(60000);
    auto t1 = std::chrono::steady_clock::now();
    if (!line) return 1;
    bytes = line->size();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  // Also one metrics-style pass worth of ps calls, then the RSS after all that work.
  for (int i = 0; i < 5; i++) c.call({{"cmd", "ps"}});
  printf("processes=%d %s\n", n, lib ? "(real, preloaded)" : ("(fake segments, threads_per_process=" + std::to_string(threads) + ")").c_str());
  printf("stats (all) round trip: min %.1f ms, median %.1f ms, max %.1f ms; reply %zu bytes\n", ms.front(),
         ms[ms.size() / 2], ms.back(), bytes);
  printf("hakmemd VmRSS: %.1f MiB (peak VmHWM %.1f MiB)\n", static_cast<double>(status_kib(d.pid(), "VmRSS:")) / 1024.0,
         static_cast<double>(status_kib(d.pid(), "VmHWM:")) / 1024.0);
  if (getenv("PROBE_LOG")) fputs(d.log().c_str(), stdout);
  if (getenv("PROBE_STATUS")) {
    std::string cmd = "grep -E 'Rss|VmHWM' /proc/" + std::to_string(d.pid()) + "/status";
    (void)!system(cmd.c_str());
  }
  d.signal_and_wait(SIGINT);  // a clean stop (lets a profiler wrapper write its data)
  d.signal_and_wait(SIGINT);  // a clean stop (lets a profiler wrapper write its data)
  return 0;
}
