// An intrusive multi-producer single-consumer stack: any thread pushes with a CAS, only the
// owner takes, and it takes everything at once (one exchange), so there is no ABA problem
// and no per-pop atomic. Used for cross-thread frees of tiny blocks (per slab) and for the
// list of slabs that have such frees pending (per heap).
//
// T must have a member `T* NextField` that belongs to the stack while the node is on it.
#pragma once

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
  // Consumer only: detaches the whole stack (most recent push first).
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

}  // namespace hakmem
