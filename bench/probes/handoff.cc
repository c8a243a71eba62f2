// handoff: buffers made by one thread and freed by another, the way a service passes
// requests or messages through a queue. Not part of bench/run's comparison.
//   [LD_PRELOAD=lib] build/bench/bench_handoff COUNT MIN MAX [PAIRS]
// Each of PAIRS (default 1) producer threads mallocs COUNT blocks of MIN..MAX bytes
// (uniform, deterministic), writes their first and last 8 bytes, and hands them over in
// batches of 64 through a bounded queue (at most 16 batches in flight) to its consumer
// thread, which checks and frees them. Every block is freed by a thread other than the one
// that allocated it. Prints ns per block (wall time over all blocks of all pairs), the CPU
// time per block (user + system, all threads: steadier on a shared machine, and it counts
// the time lost to lock contention but not the time spent waiting), the peak RSS and the
// page faults.
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "common.h"

namespace {

constexpr int kBatch = 64;
constexpr size_t kInFlight = 16;

struct Batch {
  int n;
  void* p[kBatch];
  size_t size[kBatch];
};

class Queue {
 public:
  void push(Batch* b) {
    std::unique_lock<std::mutex> lk(mu_);
    not_full_.wait(lk, [&] { return q_.size() < kInFlight; });
    q_.push_back(b);
    not_empty_.notify_one();
  }
  // nullptr once the producer is done and the queue is drained.
  Batch* pop() {
    std::unique_lock<std::mutex> lk(mu_);
    not_empty_.wait(lk, [&] { return !q_.empty() || done_; });
    if (q_.empty()) return nullptr;
    Batch* b = q_.front();
    q_.pop_front();
    not_full_.notify_one();
    return b;
  }
  void done() {
    std::lock_guard<std::mutex> lk(mu_);
    done_ = true;
    not_empty_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable not_empty_, not_full_;
  std::deque<Batch*> q_;
  bool done_ = false;
};

uint64_t cpu_ns() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

uint64_t stamp(const void* p, size_t size) { return reinterpret_cast<uintptr_t>(p) * 31 + size; }

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) {
    std::fprintf(stderr, "usage: %s COUNT MIN MAX [PAIRS]\n", argv[0]);
    return 2;
  }
  const long count = std::atol(argv[1]);
  const long lo = std::atol(argv[2]);
  const long hi = std::atol(argv[3]);
  const int pairs = argc == 5 ? std::atoi(argv[4]) : 1;
  if (count < 1 || lo < 16 || hi < lo || pairs < 1 || pairs > 64) {
    std::fprintf(stderr, "handoff: COUNT >= 1, 16 <= MIN <= MAX, 1 <= PAIRS <= 64\n");
    return 2;
  }
  std::vector<Queue> queues(static_cast<size_t>(pairs));
  std::vector<int> bad(static_cast<size_t>(pairs), 0);
  const long faults0 = bench::minor_faults();
  const uint64_t t0 = bench::now_ns(), c0 = cpu_ns();
  std::vector<std::thread> threads;
  for (int i = 0; i < pairs; i++) {
    threads.emplace_back([&, i] {
      bench::Rng rng(11 + static_cast<uint64_t>(i));
      Queue& q = queues[static_cast<size_t>(i)];
      for (long made = 0; made < count;) {
        auto* b = static_cast<Batch*>(std::malloc(sizeof(Batch)));
        if (!b) std::abort();
        b->n = 0;
        for (; b->n < kBatch && made < count; b->n++, made++) {
          const size_t size = rng.range(static_cast<uint64_t>(lo), static_cast<uint64_t>(hi));
          auto* p = static_cast<char*>(std::malloc(size));
          if (!p) std::abort();
          const uint64_t s = stamp(p, size);
          std::memcpy(p, &s, 8);
          std::memcpy(p + size - 8, &s, 8);
          b->p[b->n] = p;
          b->size[b->n] = size;
        }
        q.push(b);
      }
      q.done();
    });
    threads.emplace_back([&, i] {
      Queue& q = queues[static_cast<size_t>(i)];
      while (Batch* b = q.pop()) {
        for (int k = 0; k < b->n; k++) {
          auto* p = static_cast<char*>(b->p[k]);
          uint64_t first, last;
          std::memcpy(&first, p, 8);
          std::memcpy(&last, p + b->size[k] - 8, 8);
          if (first != stamp(p, b->size[k]) || last != first) bad[static_cast<size_t>(i)]++;
          std::free(p);
        }
        std::free(b);
      }
    });
  }
  for (auto& t : threads) t.join();
  const double blocks = static_cast<double>(count * pairs);
  const double ns = static_cast<double>(bench::now_ns() - t0) / blocks;
  const double cpu = static_cast<double>(cpu_ns() - c0) / blocks;
  for (int b : bad)
    if (b) {
      std::fprintf(stderr, "handoff: %d blocks corrupted\n", b);
      return 1;
    }
  std::printf("handoff %ld x %ld-%ld B, %d pair(s): %.1f ns/block  cpu %.1f ns/block  peak rss %.1f MiB  faults %ld\n", count, lo, hi,
              pairs, ns, cpu, static_cast<double>(bench::peak_rss_kib()) / 1024.0, bench::minor_faults() - faults0);
  return 0;
}
