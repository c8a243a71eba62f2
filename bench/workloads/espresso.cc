// "espresso": two-level logic minimisation churn, in the spirit of the espresso benchmark.
// Each problem is a random ON-set cover and OFF-set cover of cubes in positional notation
// (two bits per variable: 01 = 0, 10 = 1, 11 = don't care), each cube its own malloc'd
// bit vector and each cover an array grown by realloc. The EXPAND step raises literals of
// every ON cube while the cube stays disjoint from the OFF set (a new candidate cube per try),
// a consensus step adds cubes of distance-1 pairs, and single-cube containment drops covered
// cubes. Cube sizes vary with the problem's variable count (8-56 B), so many size classes
// churn together. Reports ns per problem-cube processed.
#include "common.h"

namespace {

struct Cube {
  uint64_t w[1];  // words of 32 variables each; the real length is the problem's `words`
};

struct Cover {
  Cube** v = nullptr;
  size_t n = 0, cap = 0;
};

struct Problem {
  int vars;
  int words;
  uint64_t last_mask;  // valid bits of the last word
};

Cube* cube_new(const Problem& pb) {
  auto* c = static_cast<Cube*>(std::malloc(sizeof(uint64_t) * pb.words));
  if (!c) {
    std::fprintf(stderr, "espresso: out of memory\n");
    std::exit(1);
  }
  return c;
}

Cube* cube_copy(const Problem& pb, const Cube* a) {
  Cube* c = cube_new(pb);
  std::memcpy(c->w, a->w, sizeof(uint64_t) * pb.words);
  return c;
}

void cover_add(Cover& f, Cube* c) {
  if (f.n == f.cap) {
    f.cap = f.cap ? f.cap * 2 : 8;
    f.v = static_cast<Cube**>(std::realloc(f.v, sizeof(Cube*) * f.cap));
    if (!f.v) std::abort();
  }
  f.v[f.n++] = c;
}

void cover_free(Cover& f) {
  for (size_t i = 0; i < f.n; ++i) std::free(f.v[i]);
  std::free(f.v);
  f = Cover{};
}

constexpr uint64_t kLow = 0x5555555555555555ull;

// Number of variables where a and b are disjoint (a pair of bits whose AND is 00).
int cube_distance(const Problem& pb, const Cube* a, const Cube* b) {
  int d = 0;
  for (int i = 0; i < pb.words; ++i) {
    const uint64_t mask = i == pb.words - 1 ? pb.last_mask : ~0ull;
    const uint64_t x = a->w[i] & b->w[i];
    d += __builtin_popcountll(~(x | (x >> 1)) & kLow & mask);
  }
  return d;
}

// a contains b when every literal of a allows what b allows.
bool cube_contains(const Problem& pb, const Cube* a, const Cube* b) {
  for (int i = 0; i < pb.words; ++i)
    if ((a->w[i] & b->w[i]) != b->w[i]) return false;
  return true;
}

Cube* cube_random(const Problem& pb, bench::Rng& rng, int literal_pct) {
  Cube* c = cube_new(pb);
  std::memset(c->w, 0, sizeof(uint64_t) * pb.words);
  for (int v = 0; v < pb.vars; ++v) {
    uint64_t bits = 3;  // don't care
    if (static_cast<int>(rng.next() % 100) < literal_pct) bits = 1 + (rng.next() & 1);
    c->w[v / 32] |= bits << (2 * (v % 32));
  }
  return c;
}

bool disjoint_from_all(const Problem& pb, const Cube* c, const Cover& off) {
  for (size_t i = 0; i < off.n; ++i)
    if (cube_distance(pb, c, off.v[i]) == 0) return false;
  return true;
}

uint64_t solve(bench::Rng& rng) {
  Problem pb;
  pb.vars = static_cast<int>(rng.range(12, 224));
  pb.words = (pb.vars + 31) / 32;
  const int tail = pb.vars % 32;
  pb.last_mask = tail ? (1ull << (2 * tail)) - 1 : ~0ull;

  Cover on, off;
  const int n_on = static_cast<int>(rng.range(30, 90));
  const int n_off = static_cast<int>(rng.range(10, 30));
  for (int i = 0; i < n_off; ++i) cover_add(off, cube_random(pb, rng, 40));
  for (int i = 0; i < n_on; ++i) {
    Cube* c = cube_random(pb, rng, 60);
    if (disjoint_from_all(pb, c, off)) cover_add(on, c); else std::free(c);
  }

  // EXPAND: raise each literal to don't-care if the cube stays disjoint from OFF.
  for (size_t i = 0; i < on.n; ++i) {
    for (int v = 0; v < pb.vars; ++v) {
      const int w = v / 32, sh = 2 * (v % 32);
      if (((on.v[i]->w[w] >> sh) & 3) == 3) continue;
      Cube* raised = cube_copy(pb, on.v[i]);
      raised->w[w] |= 3ull << sh;
      if (disjoint_from_all(pb, raised, off)) {
        std::free(on.v[i]);
        on.v[i] = raised;
      } else {
        std::free(raised);
      }
    }
  }

  // CONSENSUS of distance-1 pairs, kept when no cube of the cover already contains it.
  Cover added;
  for (size_t i = 0; i < on.n && added.n < 2 * on.n; ++i) {
    for (size_t j = i + 1; j < on.n; ++j) {
      if (cube_distance(pb, on.v[i], on.v[j]) != 1) continue;
      Cube* c = cube_new(pb);
      for (int k = 0; k < pb.words; ++k) {
        const uint64_t x = on.v[i]->w[k] & on.v[j]->w[k];
        const uint64_t empty = ~(x | (x >> 1)) & kLow & (k == pb.words - 1 ? pb.last_mask : ~0ull);
        c->w[k] = x | empty | (empty << 1);  // the conflicting variable becomes don't-care
      }
      bool covered = false;
      for (size_t k = 0; k < on.n && !covered; ++k) covered = cube_contains(pb, on.v[k], c);
      if (covered) std::free(c); else cover_add(added, c);
    }
  }
  for (size_t i = 0; i < added.n; ++i) cover_add(on, added.v[i]);
  std::free(added.v);

  // Single-cube containment: drop every cube contained in another (keep the first of equals;
  // containment is transitive, so deciding against the full cover is consistent).
  auto* drop = static_cast<bool*>(std::malloc(on.n ? on.n : 1));
  if (!drop) std::abort();
  for (size_t i = 0; i < on.n; ++i) {
    drop[i] = false;
    for (size_t j = 0; j < on.n && !drop[i]; ++j)
      drop[i] = i != j && cube_contains(pb, on.v[j], on.v[i]) && (j < i || !cube_contains(pb, on.v[i], on.v[j]));
  }
  Cover result;
  for (size_t i = 0; i < on.n; ++i) {
    if (drop[i]) std::free(on.v[i]); else cover_add(result, on.v[i]);
  }
  std::free(drop);
  std::free(on.v);

  uint64_t h = bench::mix(result.n, static_cast<uint64_t>(pb.vars));
  for (size_t i = 0; i < result.n; ++i)
    for (int k = 0; k < pb.words; ++k) h = bench::mix(h, result.v[i]->w[k]);
  cover_free(result);
  cover_free(off);
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  const bench::Args args = bench::parse_args(argc, argv);
  const long problems = args.pick(900, 100, 10);
  bench::Rng rng(5);
  uint64_t sum = 0;
  bench::Timer t;
  t.start();
  for (long p = 0; p < problems; ++p) sum = bench::mix(sum, solve(rng));
  t.stop();
  bench::report("espresso", t, problems, "ns/problem", sum);
  return 0;
}
