// Every replaceable C++ allocation operator: plain, array, nothrow, sized, aligned
// (std::align_val_t) and their combinations. Throwing forms call the installed
// std::new_handler until it succeeds or is absent, then throw std::bad_alloc; nothrow forms
// return nullptr instead of throwing (a handler that throws is caught).
//
// libstdc++ is not a dependency of libhakmem: loading it would cost every C program it is
// preloaded into about 1 MiB of RSS and the time to load it. These operators are only ever
// called from C++ code, whose process has libstdc++ loaded, so the few runtime functions
// they need are weak references bound at load time (null, and never reached, elsewhere).
#include <new>

#include "alloc.h"
#include "fastpath.h"
#include "site.h"

#define HK_EXPORT __attribute__((visibility("default")))

// std::__throw_bad_alloc() and std::get_new_handler(), by their symbol names.
extern "C" [[noreturn]] void hk_throw_bad_alloc() __asm__("_ZSt17__throw_bad_allocv") __attribute__((weak));
extern "C" std::new_handler hk_get_new_handler() __asm__("_ZSt15get_new_handlerv") __attribute__((weak));
// What the catch in the nothrow forms needs; the unwinder reaches them only when a new
// handler throws, which only happens with libstdc++ loaded.
// The personality routine is named by the compiler itself (in .eh_frame): only the
// assembler can make that reference weak.
__asm__(".weak __gxx_personality_v0");
extern "C" void* __cxa_begin_catch(void*) noexcept __attribute__((weak));
extern "C" void __cxa_end_catch() __attribute__((weak));

namespace {

using hakmem::hk_aligned;
// The inline fast paths: operator new/delete cost what malloc/free cost.
inline void* hk_malloc(size_t n) { return hakmem::malloc_inline(n); }
inline void hk_free(void* p) { hakmem::free_inline(p); }

__attribute__((noinline)) void* new_retry(size_t n, size_t align) {
  for (;;) {
    void* p = align ? hk_aligned(align, n) : hk_malloc(n);
    if (p) return p;
    std::new_handler h = hk_get_new_handler ? hk_get_new_handler() : nullptr;
    if (!h) {
      if (hk_throw_bad_alloc) hk_throw_bad_alloc();
      __builtin_trap();  // unreachable: only C++ code calls operator new
    }
    h();
  }
}

// Everything but a tiny magazine hit: malloc_entry's general path for the caller `ra`, then
// the new_handler loop if that fails.
__attribute__((noinline)) void* op_new_general(size_t n, void* ra) {
  void* p;
  if (hakmem::site_enabled() && hakmem::site_path_needed(n, ra)) p = hakmem::site_malloc(n, ra, false);
  else p = hakmem::malloc_inline(n);
  return __builtin_expect(p != nullptr, 1) ? p : new_retry(n, 0);
}

// always_inline: __builtin_return_address(0) must name the caller of operator new. A hit
// cannot fail, and everything else is one tail jump with n: no register to save for the
// new_handler retry, so operator new costs what malloc costs.
__attribute__((always_inline)) inline void* op_new(size_t n) {
  if (__builtin_expect(n < hakmem::g_tiny_gate.end.load(std::memory_order_relaxed), 1)) {
    hakmem::Heap* h = hakmem::t_heap;
    const uint32_t c8 = hakmem::tiny_class_x8(n);
    hakmem::Magazine& m = hakmem::tiny_mag(h, c8);
    if (__builtin_expect(m.head != nullptr, 1)) return hakmem::tiny_take(h, m, c8);
  }
  return op_new_general(n, __builtin_return_address(0));
}

__attribute__((always_inline)) inline void* op_new_aligned(size_t n, std::align_val_t al) {
  size_t a = static_cast<size_t>(al);
  void* p = hk_aligned(a, n);
  if (__builtin_expect(p != nullptr, 1) && hakmem::site_enabled()) hakmem::site_note(n, __builtin_return_address(0));
  return __builtin_expect(p != nullptr, 1) ? p : new_retry(n, a);
}

__attribute__((always_inline)) inline void* op_new_nothrow(size_t n, size_t align) noexcept {
  void* p = align ? hk_aligned(align, n) : hakmem::malloc_entry(n);
  if (__builtin_expect(p != nullptr, 1)) return p;
  try {
    return new_retry(n, align);
  } catch (...) {
    return nullptr;
  }
}

}  // namespace

HK_EXPORT void* operator new(size_t n) { return op_new(n); }
HK_EXPORT void* operator new[](size_t n) { return op_new(n); }
HK_EXPORT void* operator new(size_t n, const std::nothrow_t&) noexcept { return op_new_nothrow(n, 0); }
HK_EXPORT void* operator new[](size_t n, const std::nothrow_t&) noexcept { return op_new_nothrow(n, 0); }
HK_EXPORT void* operator new(size_t n, std::align_val_t a) { return op_new_aligned(n, a); }
HK_EXPORT void* operator new[](size_t n, std::align_val_t a) { return op_new_aligned(n, a); }
HK_EXPORT void* operator new(size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return op_new_nothrow(n, static_cast<size_t>(a));
}
HK_EXPORT void* operator new[](size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return op_new_nothrow(n, static_cast<size_t>(a));
}

HK_EXPORT void operator delete(void* p) noexcept { hk_free(p); }
HK_EXPORT void operator delete[](void* p) noexcept { hk_free(p); }
HK_EXPORT void operator delete(void* p, const std::nothrow_t&) noexcept { hk_free(p); }
HK_EXPORT void operator delete[](void* p, const std::nothrow_t&) noexcept { hk_free(p); }
HK_EXPORT void operator delete(void* p, size_t) noexcept { hk_free(p); }
HK_EXPORT void operator delete[](void* p, size_t) noexcept { hk_free(p); }
HK_EXPORT void operator delete(void* p, std::align_val_t) noexcept { hk_free(p); }
HK_EXPORT void operator delete[](void* p, std::align_val_t) noexcept { hk_free(p); }
HK_EXPORT void operator delete(void* p, size_t, std::align_val_t) noexcept { hk_free(p); }
HK_EXPORT void operator delete[](void* p, size_t, std::align_val_t) noexcept { hk_free(p); }
HK_EXPORT void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { hk_free(p); }
HK_EXPORT void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { hk_free(p); }
