// An intrusive multi-producer stack: any thread pushes with a CAS, and a taker takes
// everything at once (one exchange), so there is no ABA problem and no per-pop atomic; two
// takers get disjoint chains. Used for cross-thread frees of tiny blocks (per slab, taken
// by its owner), for the list of slabs that have such frees pending (per heap), and for
// bundle runs freed by threads of another shard (per arena, taken under its lock or by a
// thread of its shard).
//
// T must have a member `T* NextField` that belongs to the stack while the node is on it.
#pragma once

#include <stdint.h>

#include <atomic>

namespace hakmem {

template <typename T, T* T::*Next>
class MpscStack {
 public:
  // Returns true when the stack was empty before: the caller that makes it non-empty is
  // the one that must tell the consumer (exactly one such caller per take_all()).
  bool push(T* node) {
    T* head = head_.load(std::memory_order_relaxed);
    do {
      node->*Next = head;
    } while (!head_.compare_exchange_weak(head, node, std::memory_order_release,
                                          std::memory_order_relaxed));
    return head == nullptr;
  }
  // Pushes an already linked chain first..last (last->*Next is overwritten).
  bool push_chain(T* first, T* last) {
    T* head = head_.load(std::memory_order_relaxed);
    do {
      last->*Next = head;
    } while (!head_.compare_exchange_weak(head, first, std::memory_order_release,
                                          std::memory_order_relaxed));
    return head == nullptr;
  }
  // Detaches the whole stack (most recent push first).
  T* take_all() {
    if (head_.load(std::memory_order_relaxed) == nullptr) return nullptr;
    return head_.exchange(nullptr, std::memory_order_acquire);
  }
  bool empty() const { return head_.load(std::memory_order_relaxed) == nullptr; }
  // Fork child / adoption: forget the contents without looking at them.
  void reset() { head_.store(nullptr, std::memory_order_relaxed); }

 private:
  std::atomic<T*> head_{nullptr};
};

// An MpscStack that also knows its oldest node and its length, so the consumer splices all
// it takes in front of another list without walking it. It is a tiny slab's list of blocks
// freed by other threads: walking each drained chain for its tail read every block's line
// back from the core that freed it (xmalloc, all of whose frees are remote, spent 21 % of
// its time there). Head, tail and length change together in one 16-byte compare-and-swap
// where the CPU has one (x86-64, built with -mcx16); elsewhere take_all walks the chain.
// Pre-condition: fewer than 65536 nodes on the stack at once (the length has 16 bits; a
// slab has at most 4096 blocks).
template <typename T, T* T::*Next>
class TailedMpscStack {
 public:
  struct Chain {
    T* head;   // most recent push
    T* tail;   // oldest: tail->*Next is null
    uint32_t n;
  };
  // Returns true when the stack was empty before (see MpscStack::push).
  bool push(T* node);
  // Consumer only: detaches the whole stack.
  Chain take_all();

 private:
#if defined(__GCC_HAVE_SYNC_COMPARE_AND_SWAP_16)
  // Low half: head. High half: tail | length << 48 (user addresses have 47 bits).
  using Pair = unsigned __int128;
  static constexpr int kLenShift = 48;
  static Pair pair(T* head, uint64_t tail_len) {
    return static_cast<Pair>(reinterpret_cast<uintptr_t>(head)) | static_cast<Pair>(tail_len) << 64;
  }
  // The two halves read without a lock: a torn pair only makes the next CAS fail and retry.
  Pair load() const {
    using Word = uint64_t __attribute__((may_alias));
    const Word* w = reinterpret_cast<const Word*>(&v_);
    const uint64_t lo = __atomic_load_n(&w[0], __ATOMIC_RELAXED), hi = __atomic_load_n(&w[1], __ATOMIC_RELAXED);
    return static_cast<Pair>(lo) | static_cast<Pair>(hi) << 64;
  }
  alignas(16) Pair v_ = 0;
#else
  alignas(16) MpscStack<T, Next> s_;  // same size and alignment as the 16-byte form
  uint64_t unused_ = 0;
#endif
};

#if defined(__GCC_HAVE_SYNC_COMPARE_AND_SWAP_16)
template <typename T, T* T::*Next>
bool TailedMpscStack<T, Next>::push(T* node) {
  Pair old = load();
  for (;;) {
    T* head = reinterpret_cast<T*>(static_cast<uintptr_t>(old));
    const uint64_t tail_len = static_cast<uint64_t>(old >> 64);
    node->*Next = head;
    const uint64_t next_tail_len = head ? tail_len + (uint64_t{1} << kLenShift)
                                        : reinterpret_cast<uintptr_t>(node) | uint64_t{1} << kLenShift;
    const Pair seen = __sync_val_compare_and_swap(&v_, old, pair(node, next_tail_len));
    if (seen == old) return head == nullptr;
    old = seen;
  }
}

template <typename T, T* T::*Next>
typename TailedMpscStack<T, Next>::Chain TailedMpscStack<T, Next>::take_all() {
  Pair old = load();
  while (old != 0) {
    const Pair seen = __sync_val_compare_and_swap(&v_, old, Pair{0});
    if (seen == old) break;
    old = seen;
  }
  if (old == 0) return {nullptr, nullptr, 0};
  const uint64_t tail_len = static_cast<uint64_t>(old >> 64);
  return {reinterpret_cast<T*>(static_cast<uintptr_t>(old)),
          reinterpret_cast<T*>(tail_len & ((uint64_t{1} << kLenShift) - 1)),
          static_cast<uint32_t>(tail_len >> kLenShift)};
}
#else
template <typename T, T* T::*Next>
bool TailedMpscStack<T, Next>::push(T* node) {
  return s_.push(node);
}

template <typename T, T* T::*Next>
typename TailedMpscStack<T, Next>::Chain TailedMpscStack<T, Next>::take_all() {
  Chain c{s_.take_all(), nullptr, 0};
  if (c.head) {
    c.tail = c.head;
    c.n = 1;
    while (c.tail->*Next) {
      c.tail = c.tail->*Next;
      c.n++;
    }
  }
  return c;
}
#endif

}  // namespace hakmem
