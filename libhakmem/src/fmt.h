// Allocation-free text building for messages written from inside the allocator
// (error reports, HAKMEM_STATS, malloc_stats). A fixed buffer; output is truncated, never
// overflows.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "os.h"

namespace hakmem {

class FmtBuf {
 public:
  FmtBuf(char* buf, size_t cap) : buf_(buf), cap_(cap) { if (cap_) buf_[0] = 0; }

  FmtBuf& str(const char* s) {
    while (s && *s) put(*s++);
    return *this;
  }
  FmtBuf& ch(char c) { put(c); return *this; }
  FmtBuf& u64(uint64_t v) {
    char t[24];
    size_t n = 0;
    do { t[n++] = static_cast<char>('0' + v % 10); v /= 10; } while (v);
    while (n) put(t[--n]);
    return *this;
  }
  FmtBuf& i64(int64_t v) {
    if (v < 0) { put('-'); return u64(0 - static_cast<uint64_t>(v)); }
    return u64(static_cast<uint64_t>(v));
  }
  FmtBuf& hex(uint64_t v) {
    str("0x");
    char t[16];
    size_t n = 0;
    do { t[n++] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
    while (n) put(t[--n]);
    return *this;
  }
  // Right-aligns the next field of `width` characters by padding with spaces.
  FmtBuf& pad_to(size_t column) {
    while (len_ < column) put(' ');
    return *this;
  }
  // 1536 -> "1.5 KiB", 3 -> "3 B"
  FmtBuf& bytes(uint64_t v) {
    const char* unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    uint64_t scaled10 = v * 10;
    while (v >= 1024 && u < 4) { scaled10 = v * 10 / 1024; v /= 1024; u++; }
    if (u == 0) return u64(v).ch(' ').str(unit[0]);
    u64(scaled10 / 10).ch('.').u64(scaled10 % 10).ch(' ').str(unit[u]);
    return *this;
  }
  void write_stderr() const { os_write_stderr(buf_, len_); }
  const char* c_str() const { return buf_; }
  size_t size() const { return len_; }
  void clear() { len_ = 0; if (cap_) buf_[0] = 0; }

 private:
  void put(char c) {
    if (len_ + 1 < cap_) { buf_[len_++] = c; buf_[len_] = 0; }
  }
  char* buf_;
  size_t cap_;
  size_t len_ = 0;
};

}  // namespace hakmem
