// "larson": server churn in the spirit of Larson & Krishnan's benchmark. Each worker thread
// owns a table of live blocks (8-1000 B) and repeatedly frees a random one and allocates a
// replacement. After a generation of operations every worker exits and its table passes to
// the next generation's worker of a *different* index, so from then on most frees hit
// blocks that another (by now dead) thread allocated: remote frees and thread churn, as in a
// server whose connection threads come and go. Each block carries a tag checked at free.
// Reports ns per free+malloc operation over all threads.
#include <thread>
#include <vector>

#include "common.h"

namespace {

constexpr int kSlots = 2000;
constexpr size_t kMin = 8, kMax = 1000;

struct Table {
  void* block[kSlots];
  uint32_t size[kSlots];
};

void* make_block(size_t size, uint64_t tag) {
  void* p = std::malloc(size);
  if (!p) {
    std::fprintf(stderr, "larson: malloc(%zu) failed\n", size);
    std::exit(1);
  }
  // First and last bytes carry the tag so a block handed out twice shows up.
  std::memcpy(p, &tag, size < 8 ? size : 8);
  static_cast<unsigned char*>(p)[size - 1] = static_cast<unsigned char>(tag);
  return p;
}

uint64_t check_and_free(void* p, size_t size) {
  uint64_t tag = 0;
  std::memcpy(&tag, p, size < 8 ? size : 8);
  if (static_cast<unsigned char*>(p)[size - 1] != static_cast<unsigned char>(tag)) {
    std::fprintf(stderr, "larson: block corrupted\n");
    std::exit(1);
  }
  std::free(p);
  return size < 8 ? tag & ((1ull << (8 * size)) - 1) : tag;
}

// One worker generation: ops replacements on its table; returns its checksum.
uint64_t worker(Table* t, uint64_t seed, long ops) {
  bench::Rng rng(seed);
  uint64_t sum = 0;
  for (long i = 0; i < ops; ++i) {
    const int slot = static_cast<int>(rng.next() % kSlots);
    sum += check_and_free(t->block[slot], t->size[slot]);
    const size_t size = rng.range(kMin, kMax);
    t->block[slot] = make_block(size, rng.next());
    t->size[slot] = static_cast<uint32_t>(size);
  }
  return sum;
}

}  // namespace

int main(int argc, char** argv) {
  const bench::Args args = bench::parse_args(argc, argv);
  const int threads = args.threads_or(4);
  const long generations = args.pick(20, 8, 2);
  const long ops_per_gen = args.pick(60000, 40000, 5000);

  // The main thread fills every table: the first generation frees only foreign blocks.
  std::vector<Table*> tables(threads);
  bench::Rng init(7);
  for (auto& t : tables) {
    t = new Table;
    for (int s = 0; s < kSlots; ++s) {
      t->size[s] = static_cast<uint32_t>(init.range(kMin, kMax));
      t->block[s] = make_block(t->size[s], init.next());
    }
  }

  std::vector<uint64_t> sums(threads, 0);
  bench::Timer timer;
  timer.start();
  for (long g = 0; g < generations; ++g) {
    std::vector<std::thread> workers;
    for (int i = 0; i < threads; ++i)
      workers.emplace_back([&, i, g] { sums[i] += worker(tables[i], 1000003ull * g + i, ops_per_gen); });
    for (auto& w : workers) w.join();
    // Rotate: next generation's worker i inherits the table worker i+1 filled.
    Table* first = tables[0];
    for (int i = 0; i + 1 < threads; ++i) tables[i] = tables[i + 1];
    tables[threads - 1] = first;
  }
  timer.stop();

  uint64_t sum = 0;
  for (uint64_t s : sums) sum += s;
  for (auto* t : tables) {
    for (int s = 0; s < kSlots; ++s) sum += check_and_free(t->block[s], t->size[s]);
    delete t;
  }
  bench::report("larson", timer, generations * ops_per_gen * threads, "ns/op", sum);
  return 0;
}
