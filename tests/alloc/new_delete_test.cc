// Every replaceable operator new/delete, run with hakmem as the process allocator.
#include <malloc.h>
#include <stdint.h>
#include <gtest/gtest.h>

#include <new>

#include "alloc_test_util.h"

using namespace hakmem_test;

namespace {

constexpr size_t kImpossible = size_t{1} << 60;
int g_handler_calls = 0;
// Results go here so the compiler cannot drop a call whose result is unused.
void* volatile g_sink = nullptr;

void counting_handler() {
  // Give up after three attempts: uninstalling makes the next failure throw bad_alloc.
  if (++g_handler_calls == 3) std::set_new_handler(nullptr);
}

TEST(NewDelete, OperatorsResolveToHakmem) {
  EXPECT_TRUE(resolves_to_hakmem("_Znwm"));
  EXPECT_TRUE(resolves_to_hakmem("_ZdlPv"));
  EXPECT_TRUE(resolves_to_hakmem("_ZnwmSt11align_val_t"));
}

TEST(NewDelete, EveryVariantAllocatesAndFrees) {
  const size_t sizes[] = {1, 40, 3000, 70000, 3 << 20};
  for (size_t n : sizes) {
    SCOPED_TRACE(n);
    void* p = ::operator new(n);
    EXPECT_GE(malloc_usable_size(p), n);
    memset(p, 1, n);
    ::operator delete(p);
    p = ::operator new(n);
    ::operator delete(p, n);
    p = ::operator new[](n);
    memset(p, 1, n);
    ::operator delete[](p);
    p = ::operator new[](n);
    ::operator delete[](p, n);
    p = ::operator new(n, std::nothrow);
    ASSERT_NE(p, nullptr);
    ::operator delete(p, std::nothrow);
    p = ::operator new[](n, std::nothrow);
    ASSERT_NE(p, nullptr);
    ::operator delete[](p, std::nothrow);
    for (size_t a : {size_t{32}, size_t{256}, size_t{4096}, size_t{65536}, size_t{1} << 20}) {
      SCOPED_TRACE(a);
      std::align_val_t al{a};
      p = ::operator new(n, al);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % a, 0u);
      memset(p, 2, n);
      ::operator delete(p, al);
      p = ::operator new(n, al);
      ::operator delete(p, n, al);
      p = ::operator new[](n, al);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % a, 0u);
      ::operator delete[](p, al);
      p = ::operator new[](n, al);
      ::operator delete[](p, n, al);
      p = ::operator new(n, al, std::nothrow);
      ASSERT_NE(p, nullptr);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % a, 0u);
      ::operator delete(p, al, std::nothrow);
      p = ::operator new[](n, al, std::nothrow);
      ASSERT_NE(p, nullptr);
      ::operator delete[](p, al, std::nothrow);
    }
  }
  ::operator delete(nullptr);
  ::operator delete[](nullptr);
}

TEST(NewDelete, FailureThrowsBadAlloc) {
  EXPECT_THROW(g_sink = ::operator new(kImpossible), std::bad_alloc);
  EXPECT_THROW(g_sink = ::operator new[](kImpossible), std::bad_alloc);
  EXPECT_THROW(g_sink = ::operator new(kImpossible, std::align_val_t{64}), std::bad_alloc);
  EXPECT_THROW(g_sink = ::operator new[](kImpossible, std::align_val_t{64}), std::bad_alloc);
}

TEST(NewDelete, NothrowFailureReturnsNull) {
  EXPECT_EQ(::operator new(kImpossible, std::nothrow), nullptr);
  EXPECT_EQ(::operator new[](kImpossible, std::nothrow), nullptr);
  EXPECT_EQ(::operator new(kImpossible, std::align_val_t{128}, std::nothrow), nullptr);
  EXPECT_EQ(::operator new[](kImpossible, std::align_val_t{128}, std::nothrow), nullptr);
}

TEST(NewDelete, NewHandlerIsRetriedUntilItGivesUp) {
  g_handler_calls = 0;
  std::set_new_handler(counting_handler);
  EXPECT_THROW(g_sink = ::operator new(kImpossible), std::bad_alloc);
  EXPECT_EQ(g_handler_calls, 3);
  g_handler_calls = 0;
  std::set_new_handler(counting_handler);
  EXPECT_THROW(g_sink = ::operator new[](kImpossible, std::align_val_t{256}), std::bad_alloc);
  EXPECT_EQ(g_handler_calls, 3);
  // nothrow: the handler runs, and its giving up turns into nullptr, not an exception.
  g_handler_calls = 0;
  std::set_new_handler(counting_handler);
  EXPECT_EQ(::operator new(kImpossible, std::nothrow), nullptr);
  EXPECT_EQ(g_handler_calls, 3);
  std::set_new_handler(nullptr);
}

void* g_reserve = nullptr;
void releasing_handler() {
  // A handler that frees memory so that the retry can succeed: here it flips the request
  // to a satisfiable one by releasing a reserve and counting.
  g_handler_calls++;
  free(g_reserve);
  g_reserve = nullptr;
  std::set_new_handler(nullptr);
}

TEST(NewDelete, HandlerThatFreesMemoryLetsTheRetryRun) {
  g_handler_calls = 0;
  g_reserve = malloc(1000);
  std::set_new_handler(releasing_handler);
  EXPECT_THROW(g_sink = ::operator new(kImpossible), std::bad_alloc);
  EXPECT_EQ(g_handler_calls, 1);
  EXPECT_EQ(g_reserve, nullptr);
  // A possible request after that is served as usual.
  int* x = new int[100];
  x[99] = 5;
  delete[] x;
}

TEST(NewDelete, ContainersAndExceptionsRunOnHakmem) {
  std::string s;
  for (int i = 0; i < 10000; i++) s += static_cast<char>('a' + i % 26);
  EXPECT_EQ(s.size(), 10000u);
  std::vector<std::vector<int>> vv(100, std::vector<int>(1000, 3));
  long sum = 0;
  for (auto& v : vv)
    for (int x : v) sum += x;
  EXPECT_EQ(sum, 300000);
  try {
    throw std::runtime_error(std::string(500, 'x'));
  } catch (const std::exception& e) {
    EXPECT_EQ(strlen(e.what()), 500u);
  }
}

}  // namespace
