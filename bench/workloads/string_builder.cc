// Seed scenario "string-builder": thousands of live 8-64 B strings are built, read, and then
// freed, round after round — the small-object pattern of a text/JSON producer. Reports ns per
// object (one malloc, the fill, one free).
#include "common.h"

int main(int argc, char** argv) {
  const bench::Args args = bench::parse_args(argc, argv);
  constexpr int kLive = 4096;
  const long rounds = args.pick(2500, 800, 20);
  const long warmup = rounds / 10 + 2;

  char* live[kLive];
  unsigned lens[kLive];
  bench::Rng rng(42);
  for (int i = 0; i < kLive; ++i) lens[i] = static_cast<unsigned>(rng.range(8, 64));

  uint64_t sum = 0;
  auto round = [&](long r) {
    for (int i = 0; i < kLive; ++i) {
      // The length pattern shifts each round so size classes mix differently.
      const unsigned len = lens[(i + r) % kLive];
      char* s = static_cast<char*>(std::malloc(len));
      if (!s) {
        std::fprintf(stderr, "string-builder: malloc failed\n");
        std::exit(1);
      }
      std::memset(s, 'a' + static_cast<int>((i + r) % 26), len - 1);
      s[len - 1] = '\0';
      live[i] = s;
    }
    for (int i = 0; i < kLive; i += 97) sum += static_cast<unsigned char>(live[i][lens[(i + r) % kLive] / 2]);
    // Free in an order unlike the allocation order, as a builder releasing its pieces does.
    for (int i = 0; i < kLive; ++i) std::free(live[(i * 2557) % kLive]);
  };

  for (long r = 0; r < warmup; ++r) round(r);
  sum = 0;
  bench::Timer t;
  t.start();
  for (long r = 0; r < rounds; ++r) round(r);
  t.stop();
  bench::report("string-builder", t, rounds * kLive, "ns/obj", sum);
  return 0;
}
