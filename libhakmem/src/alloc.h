// The allocator's internal entry points, shared by malloc.cc (C API) and new_delete.cc
// (C++ operators). Fast paths are inline in malloc.cc; these are the out-of-line forms.
#pragma once

#include <stddef.h>

namespace hakmem {

void* hk_malloc(size_t n);
void* hk_aligned(size_t align, size_t n);  // align: a power of two
void hk_free(void* p);

}  // namespace hakmem
