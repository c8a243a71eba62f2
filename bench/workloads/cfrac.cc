// "cfrac": small-object churn of a real big-number computation, in the spirit of the classic
// cfrac benchmark. It runs the continued-fraction expansion of sqrt(N) for a 40-digit N, keeps
// the convergent numerators A_k mod N, and trial-divides every Q_k over a factor base looking
// for smooth relations (the first phase of the CFRAC factoring method) with a small factor base. Every big number is
// one malloc'd block (header + 32-bit limbs, 16-40 B here), created per operation and freed
// as soon as it is dead, so the allocator sees millions of short-lived small blocks with a
// ring of longer-lived relations. Reports ns per expansion step.
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "common.h"

namespace {

struct Big {
  uint32_t n;     // limbs in use; 0 means the value 0; d[n-1] != 0 otherwise
  uint32_t d[];   // little-endian limbs
};

Big* big_alloc(uint32_t n) {
  auto* b = static_cast<Big*>(std::malloc(sizeof(Big) + sizeof(uint32_t) * (n ? n : 1)));
  if (!b) {
    std::fprintf(stderr, "cfrac: out of memory\n");
    std::exit(1);
  }
  b->n = n;
  return b;
}

Big* big_trim(Big* b) {
  while (b->n && b->d[b->n - 1] == 0) --b->n;
  return b;
}

Big* big_from_u64(uint64_t v) {
  Big* b = big_alloc(2);
  b->d[0] = static_cast<uint32_t>(v);
  b->d[1] = static_cast<uint32_t>(v >> 32);
  return big_trim(b);
}

Big* big_copy(const Big* a) {
  Big* b = big_alloc(a->n);
  std::memcpy(b->d, a->d, sizeof(uint32_t) * a->n);
  return b;
}

int big_cmp(const Big* a, const Big* b) {
  if (a->n != b->n) return a->n < b->n ? -1 : 1;
  for (uint32_t i = a->n; i-- > 0;)
    if (a->d[i] != b->d[i]) return a->d[i] < b->d[i] ? -1 : 1;
  return 0;
}

Big* big_add(const Big* a, const Big* b) {
  if (a->n < b->n) std::swap(a, b);
  Big* r = big_alloc(a->n + 1);
  uint64_t carry = 0;
  for (uint32_t i = 0; i < a->n; ++i) {
    carry += static_cast<uint64_t>(a->d[i]) + (i < b->n ? b->d[i] : 0);
    r->d[i] = static_cast<uint32_t>(carry);
    carry >>= 32;
  }
  r->d[a->n] = static_cast<uint32_t>(carry);
  return big_trim(r);
}

// Pre-condition: a >= b.
Big* big_sub(const Big* a, const Big* b) {
  Big* r = big_alloc(a->n);
  int64_t borrow = 0;
  for (uint32_t i = 0; i < a->n; ++i) {
    int64_t t = static_cast<int64_t>(a->d[i]) - (i < b->n ? b->d[i] : 0) - borrow;
    borrow = t < 0;
    r->d[i] = static_cast<uint32_t>(t + (borrow << 32));
  }
  return big_trim(r);
}

Big* big_mul(const Big* a, const Big* b) {
  Big* r = big_alloc(a->n + b->n);
  std::memset(r->d, 0, sizeof(uint32_t) * r->n);
  for (uint32_t i = 0; i < a->n; ++i) {
    uint64_t carry = 0;
    for (uint32_t j = 0; j < b->n; ++j) {
      carry += static_cast<uint64_t>(a->d[i]) * b->d[j] + r->d[i + j];
      r->d[i + j] = static_cast<uint32_t>(carry);
      carry >>= 32;
    }
    r->d[i + b->n] = static_cast<uint32_t>(carry);
  }
  return big_trim(r);
}

Big* big_mul_small_add(const Big* a, uint32_t m, uint32_t add) {
  Big* r = big_alloc(a->n + 1);
  uint64_t carry = add;
  for (uint32_t i = 0; i < a->n; ++i) {
    carry += static_cast<uint64_t>(a->d[i]) * m;
    r->d[i] = static_cast<uint32_t>(carry);
    carry >>= 32;
  }
  r->d[a->n] = static_cast<uint32_t>(carry);
  return big_trim(r);
}

uint32_t big_mod_small(const Big* a, uint32_t m) {
  uint64_t rem = 0;
  for (uint32_t i = a->n; i-- > 0;) rem = ((rem << 32) | a->d[i]) % m;
  return static_cast<uint32_t>(rem);
}

Big* big_div_small(const Big* a, uint32_t m) {
  Big* q = big_alloc(a->n);
  uint64_t rem = 0;
  for (uint32_t i = a->n; i-- > 0;) {
    uint64_t cur = (rem << 32) | a->d[i];
    q->d[i] = static_cast<uint32_t>(cur / m);
    rem = cur % m;
  }
  return big_trim(q);
}

// Long division (Knuth's algorithm D). Either output may be null. Pre-condition: v != 0.
void big_divmod(const Big* u, const Big* v, Big** q_out, Big** r_out) {
  if (big_cmp(u, v) < 0) {
    if (q_out) *q_out = big_alloc(0);
    if (r_out) *r_out = big_copy(u);
    return;
  }
  const uint32_t n = v->n, m = u->n - v->n;
  Big* q = big_alloc(m + 1);
  if (n == 1) {
    uint64_t rem = 0;
    for (uint32_t i = u->n; i-- > 0;) {
      uint64_t cur = (rem << 32) | u->d[i];
      q->d[i] = static_cast<uint32_t>(cur / v->d[0]);
      rem = cur % v->d[0];
    }
    if (q_out) *q_out = big_trim(q); else std::free(q);
    if (r_out) *r_out = big_from_u64(rem);
    return;
  }
  // Normalise so the divisor's top limb has its high bit set; scratch copies are malloc'd
  // like every other temporary of a bignum library.
  const int s = __builtin_clz(v->d[n - 1]);
  auto* vn = static_cast<uint32_t*>(std::malloc(sizeof(uint32_t) * n));
  auto* un = static_cast<uint32_t*>(std::malloc(sizeof(uint32_t) * (u->n + 1)));
  if (!vn || !un) {
    std::fprintf(stderr, "cfrac: out of memory\n");
    std::exit(1);
  }
  for (uint32_t i = n - 1; i > 0; --i)
    vn[i] = (v->d[i] << s) | (s ? static_cast<uint32_t>(static_cast<uint64_t>(v->d[i - 1]) >> (32 - s)) : 0);
  vn[0] = v->d[0] << s;
  un[u->n] = s ? static_cast<uint32_t>(static_cast<uint64_t>(u->d[u->n - 1]) >> (32 - s)) : 0;
  for (uint32_t i = u->n - 1; i > 0; --i)
    un[i] = (u->d[i] << s) | (s ? static_cast<uint32_t>(static_cast<uint64_t>(u->d[i - 1]) >> (32 - s)) : 0);
  un[0] = u->d[0] << s;

  constexpr uint64_t kBase = 1ull << 32;
  for (uint32_t j = m + 1; j-- > 0;) {
    const uint64_t num = (static_cast<uint64_t>(un[j + n]) << 32) | un[j + n - 1];
    uint64_t qhat = num / vn[n - 1];
    uint64_t rhat = num % vn[n - 1];
    while (qhat >= kBase || qhat * vn[n - 2] > ((rhat << 32) | un[j + n - 2])) {
      --qhat;
      rhat += vn[n - 1];
      if (rhat >= kBase) break;
    }
    int64_t k = 0, t;
    for (uint32_t i = 0; i < n; ++i) {
      const uint64_t p = qhat * vn[i];
      t = static_cast<int64_t>(un[i + j]) - k - static_cast<int64_t>(p & 0xffffffffull);
      un[i + j] = static_cast<uint32_t>(t);
      k = static_cast<int64_t>(p >> 32) - (t >> 32);
    }
    t = static_cast<int64_t>(un[j + n]) - k;
    un[j + n] = static_cast<uint32_t>(t);
    q->d[j] = static_cast<uint32_t>(qhat);
    if (t < 0) {  // qhat was one too large: add the divisor back
      q->d[j] -= 1;
      uint64_t c = 0;
      for (uint32_t i = 0; i < n; ++i) {
        c += static_cast<uint64_t>(un[i + j]) + vn[i];
        un[i + j] = static_cast<uint32_t>(c);
        c >>= 32;
      }
      un[j + n] += static_cast<uint32_t>(c);
    }
  }
  if (r_out) {
    Big* r = big_alloc(n);
    for (uint32_t i = 0; i < n; ++i)
      r->d[i] = (un[i] >> s) | (s ? static_cast<uint32_t>(static_cast<uint64_t>(un[i + 1]) << (32 - s)) : 0);
    *r_out = big_trim(r);
  }
  if (q_out) *q_out = big_trim(q); else std::free(q);
  std::free(vn);
  std::free(un);
}

Big* big_from_dec(const char* s) {
  Big* b = big_alloc(0);
  for (; *s; ++s) {
    Big* next = big_mul_small_add(b, 10, static_cast<uint32_t>(*s - '0'));
    std::free(b);
    b = next;
  }
  return b;
}

// floor(sqrt(n)) by Newton's iteration from above.
Big* big_isqrt(const Big* n) {
  Big* x = big_copy(n);
  for (;;) {
    Big *q, *sum;
    big_divmod(n, x, &q, nullptr);
    sum = big_add(x, q);
    Big* y = big_div_small(sum, 2);
    std::free(q);
    std::free(sum);
    if (big_cmp(y, x) >= 0) {
      std::free(y);
      return x;
    }
    std::free(x);
    x = y;
  }
}

uint64_t big_low(const Big* a) { return a->n ? a->d[0] : 0; }

}  // namespace

int main(int argc, char** argv) {
  const bench::Args args = bench::parse_args(argc, argv);
  const long steps = args.pick(250000, 80000, 2000);

  // Factor base: the first primes (CFRAC keeps only those where N is a quadratic residue;
  // trial-dividing by all of them keeps the arithmetic the same and the code short).
  uint32_t primes[64];
  int np = 0;
  for (uint32_t c = 2; np < 64; ++c) {
    bool prime = true;
    for (int i = 0; i < np && primes[i] * primes[i] <= c; ++i)
      if (c % primes[i] == 0) prime = false;
    if (prime) primes[np++] = c;
  }

  Big* N = big_from_dec("1000000000000000000000000000000000000000000000231");
  Big* g = big_isqrt(N);

  // Relations found so far live in a ring, as CFRAC keeps them for the linear-algebra phase.
  constexpr int kRing = 256;
  Big* ring[kRing] = {};
  int ring_pos = 0;

  Big* P = big_alloc(0);
  Big* Q = big_from_u64(1);
  Big* a = big_copy(g);
  Big* A_prev = big_from_u64(1);  // A_{k-1}
  Big* A_prev2 = big_alloc(0);    // A_{k-2}
  uint64_t sum = 0;
  long smooth = 0;

  bench::Timer t;
  t.start();
  for (long k = 0; k < steps; ++k) {
    // A_k = a_k * A_{k-1} + A_{k-2}  (mod N)
    Big* prod = big_mul(a, A_prev);
    Big* s = big_add(prod, A_prev2);
    Big* A;
    big_divmod(s, N, nullptr, &A);
    std::free(prod);
    std::free(s);
    std::free(A_prev2);
    A_prev2 = A_prev;
    A_prev = A;

    // P' = a*Q - P;  Q' = (N - P'^2) / Q;  a' = floor((g + P') / Q')
    Big* aq = big_mul(a, Q);
    Big* P2 = big_sub(aq, P);
    Big* sq = big_mul(P2, P2);
    Big* diff = big_sub(N, sq);
    Big* Q2;
    big_divmod(diff, Q, &Q2, nullptr);
    Big* gp = big_add(g, P2);
    Big* a2;
    big_divmod(gp, Q2, &a2, nullptr);
    std::free(aq);
    std::free(sq);
    std::free(diff);
    std::free(gp);
    std::free(P);
    std::free(Q);
    std::free(a);
    P = P2;
    Q = Q2;
    a = a2;

    // Trial-divide Q over the factor base; a fully factored Q is a relation.
    Big* rest = big_copy(Q);
    for (int i = 0; i < np && rest->n > 0; ++i) {
      while (big_mod_small(rest, primes[i]) == 0) {
        Big* next = big_div_small(rest, primes[i]);
        std::free(rest);
        rest = next;
        sum = bench::mix(sum, primes[i]);
      }
    }
    if (rest->n == 1 && rest->d[0] == 1) {
      ++smooth;
      std::free(ring[ring_pos]);
      ring[ring_pos] = big_copy(A);
      ring_pos = (ring_pos + 1) % kRing;
    }
    std::free(rest);
    sum = bench::mix(sum, big_low(a));

    // Self-check now and then: A_k^2 = +-Q_{k+1} (mod N) holds for every convergent.
    if ((k & 63) == 0) {
      Big* a2sq = big_mul(A_prev, A_prev);
      Big* r;
      big_divmod(a2sq, N, nullptr, &r);
      Big* negq = big_sub(N, Q);
      if (big_cmp(r, Q) != 0 && big_cmp(r, negq) != 0) {
        std::fprintf(stderr, "cfrac: arithmetic self-check failed at step %ld\n", k);
        return 1;
      }
      std::free(a2sq);
      std::free(r);
      std::free(negq);
    }
  }
  t.stop();
  sum = bench::mix(sum, static_cast<uint64_t>(smooth));
  sum = bench::mix(sum, big_low(A_prev));

  for (Big* b : ring) std::free(b);
  for (Big* b : {N, g, P, Q, a, A_prev, A_prev2}) std::free(b);
  bench::report("cfrac", t, steps, "ns/step", sum);
  return 0;
}
