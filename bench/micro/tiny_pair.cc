// Hot-path micro benchmarks (Google Benchmark): the tiny malloc+free pair per size class, a
// small batch (magazine push/pop depth), and new/delete. The binary uses the process
// allocator, so bench/run measures each allocator by preloading it; stats on/off and site
// rules off/on are measured by running hakmem with HAKMEM_STATS_ENABLE / HAKMEM_SITE_RULES.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <new>

namespace {

// One malloc immediately followed by its free: the cost of the fast path both ways.
void BM_MallocFree(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    void* p = std::malloc(size);
    benchmark::DoNotOptimize(p);
    std::free(p);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_MallocFree)->Arg(8)->Arg(16)->Arg(32)->Arg(48)->Arg(64)->Arg(128)->Arg(256)->Arg(512)->Arg(1024);

// 64 allocations then 64 frees: the free list / magazine is pushed and popped 64 deep.
void BM_Batch64(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  void* p[64];
  for (auto _ : state) {
    for (auto& q : p) {
      q = std::malloc(size);
      benchmark::DoNotOptimize(q);
    }
    for (auto* q : p) std::free(q);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * 64);
}
BENCHMARK(BM_Batch64)->Arg(16)->Arg(64)->Arg(256);

// C++ new/delete of a 32-byte object (sized delete when the allocator provides it).
struct Obj32 {
  char bytes[32];
};
void BM_NewDelete32(benchmark::State& state) {
  for (auto _ : state) {
    auto* o = new Obj32;
    benchmark::DoNotOptimize(o);
    delete o;
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_NewDelete32);

}  // namespace

BENCHMARK_MAIN();
