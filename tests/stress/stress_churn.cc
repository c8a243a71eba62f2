// Stress: thread churn. Thousands of short threads, a few alive at a time; each allocates
// across the tiers, frees some of its blocks, frees blocks left behind by threads that
// already exited, and exits holding the rest (and whatever its thread cache keeps). With
// hakmem's segment present, thread slots must be recycled: the high-water mark stays near
// the concurrency and no thread goes unslotted.
//   stress_churn [--threads-total N] [--concurrent C] [--seed X]
#include <mutex>
#include <thread>
#include <vector>

#include "harness.h"

namespace {

struct Block {
  void* p;
  size_t size;
  uint64_t tag;
};

std::mutex g_mu;
std::vector<Block> g_orphans;  // blocks allocated by threads that have exited

void short_life(uint64_t id) {
  harness::Rng r(id);
  Block mine[48];
  int n = 0;
  for (; n < 48; n++) {
    size_t s = harness::random_size(r, 2u << 20);
    void* p = malloc(s);
    HARNESS_CHECK(p != nullptr, "malloc(%zu) failed in thread %llu", s, static_cast<unsigned long long>(id));
    mine[n] = Block{p, s, id * 64 + static_cast<uint64_t>(n)};
    harness::cookie_fill(p, s, mine[n].tag);
  }
  std::vector<Block> take;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    size_t k = g_orphans.size() < 40 ? g_orphans.size() : 40;
    take.assign(g_orphans.end() - static_cast<long>(k), g_orphans.end());
    g_orphans.resize(g_orphans.size() - k);
    for (int i = 0; i < 16; i++) g_orphans.push_back(mine[--n]);
  }
  for (const Block& b : take) {
    HARNESS_CHECK(harness::cookie_ok(b.p, b.size, b.tag), "orphan block %p (%zu B) overwritten", b.p, b.size);
    free(b.p);
  }
  for (int i = 0; i < n; i++) {
    HARNESS_CHECK(harness::cookie_ok(mine[i].p, mine[i].size, mine[i].tag), "block %p overwritten", mine[i].p);
    free(mine[i].p);
  }
}

}  // namespace

int main(int argc, char** argv) {
  harness::require_hakmem_if_expected();
  unsigned total = static_cast<unsigned>(harness::arg_num(argc, argv, "--threads-total", 4000));
  unsigned conc = static_cast<unsigned>(harness::arg_num(argc, argv, "--concurrent", 8));
  uint64_t seed = static_cast<uint64_t>(harness::arg_num(argc, argv, "--seed", 1));
  unsigned started = 0;
  while (started < total) {
    std::vector<std::thread> wave;
    for (unsigned i = 0; i < conc && started < total; i++, started++) wave.emplace_back(short_life, seed * 1000003 + started);
    for (auto& t : wave) t.join();
  }
  for (const Block& b : g_orphans) {
    HARNESS_CHECK(harness::cookie_ok(b.p, b.size, b.tag), "orphan block %p overwritten", b.p);
    free(b.p);
  }
  printf("stress_churn: %u threads, %u at a time\n", started, conc);
  if (harness::hakmem_active()) {
    harness::OwnSegment seg;
    HARNESS_CHECK(seg.open_own(), "hakmem is the allocator but its segment %s is missing", seg.path);
    auto s = seg.snap();
    printf("stress_churn: slots hwm %u live %u unslotted %llu\n", s.thread_slots_used, s.threads_live,
           static_cast<unsigned long long>(s.threads_unslotted));
    HARNESS_CHECK(s.threads_unslotted == 0, "%llu threads found no free slot: slots are not recycled",
                  static_cast<unsigned long long>(s.threads_unslotted));
    HARNESS_CHECK(s.thread_slots_used <= 4 * conc + 8, "slot high-water mark %u for %u concurrent threads",
                  s.thread_slots_used, conc);
    HARNESS_CHECK(s.threads_live <= 2, "%u threads still hold a slot after all joined", s.threads_live);
  }
  return 0;
}
