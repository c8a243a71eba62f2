// "xmalloc": producer/consumer cross-thread frees, in the spirit of xmalloc-test. Producer
// threads allocate small blocks (16-256 B), stamp them and hand them over in batches through
// a bounded queue; consumer threads check and free them. Every block (and every batch array)
// is freed by a thread other than the one that allocated it, so the allocator's remote-free
// path carries the whole load. Reports ns per block.
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "common.h"

namespace {

constexpr int kBatch = 128;
constexpr size_t kMaxInFlight = 32;  // batches; bounds the live set

struct Batch {
  int n;
  void* p[kBatch];
};

class Queue {
 public:
  void push(Batch* b) {
    std::unique_lock<std::mutex> lk(mu_);
    not_full_.wait(lk, [&] { return q_.size() < kMaxInFlight; });
    q_.push_back(b);
    not_empty_.notify_one();
  }
  // Returns nullptr once every producer is done and the queue is drained.
  Batch* pop() {
    std::unique_lock<std::mutex> lk(mu_);
    not_empty_.wait(lk, [&] { return !q_.empty() || producers_left_ == 0; });
    if (q_.empty()) return nullptr;
    Batch* b = q_.front();
    q_.pop_front();
    not_full_.notify_one();
    return b;
  }
  void set_producers(int n) { producers_left_ = n; }
  void producer_done() {
    std::lock_guard<std::mutex> lk(mu_);
    if (--producers_left_ == 0) not_empty_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable not_empty_, not_full_;
  std::deque<Batch*> q_;
  int producers_left_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  const bench::Args args = bench::parse_args(argc, argv);
  const int threads = args.threads_or(4);
  const int producers = threads / 2 > 0 ? threads / 2 : 1;
  const int consumers = threads - producers > 0 ? threads - producers : 1;
  const long batches_per_producer = args.pick(12000, 4000, 100);

  Queue q;
  q.set_producers(producers);
  std::vector<uint64_t> sums(consumers, 0);

  bench::Timer timer;
  timer.start();
  std::vector<std::thread> pool;
  for (int i = 0; i < producers; ++i) {
    pool.emplace_back([&, i] {
      bench::Rng rng(100 + i);
      for (long b = 0; b < batches_per_producer; ++b) {
        auto* batch = static_cast<Batch*>(std::malloc(sizeof(Batch)));
        if (!batch) std::abort();
        batch->n = kBatch;
        for (int k = 0; k < kBatch; ++k) {
          const size_t size = rng.range(16, 256);
          auto* p = static_cast<uint64_t*>(std::malloc(size));
          if (!p) std::abort();
          p[0] = rng.next();
          p[1] = size;
          batch->p[k] = p;
        }
        q.push(batch);
      }
      q.producer_done();
    });
  }
  for (int i = 0; i < consumers; ++i) {
    pool.emplace_back([&, i] {
      uint64_t sum = 0;
      while (Batch* batch = q.pop()) {
        for (int k = 0; k < batch->n; ++k) {
          auto* p = static_cast<uint64_t*>(batch->p[k]);
          if (p[1] < 16 || p[1] > 256) {
            std::fprintf(stderr, "xmalloc: block corrupted\n");
            std::exit(1);
          }
          sum += p[0] ^ p[1];
          std::free(p);
        }
        std::free(batch);
      }
      sums[i] = sum;
    });
  }
  for (auto& t : pool) t.join();
  timer.stop();

  uint64_t sum = 0;
  for (uint64_t s : sums) sum += s;
  bench::report("xmalloc", timer, batches_per_producer * producers * kBatch, "ns/block", sum);
  return 0;
}
