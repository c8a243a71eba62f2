// One mapped segment file, and the guard that keeps a hostile segment from killing the daemon.
//
// A segment belongs to another (possibly hostile) process: it can truncate the file after we
// mapped it, and touching a page past the new end raises SIGBUS. Every access to mapped
// segment memory therefore runs inside a BusGuard: the SIGBUS handler maps a zero page over
// the faulting address (so the instruction completes) and flags the guard; the caller then
// drops the segment. Only the thread that created the guard may touch the segment meanwhile.
#pragma once

#include <stddef.h>
#include <sys/types.h>

#include "hakmem/proto/segment.h"

namespace hakmemd {

// Installs the SIGBUS handler once per process (idempotent).
void bus_guard_install();

class BusGuard {
 public:
  BusGuard(const void* base, size_t len);
  ~BusGuard();
  BusGuard(const BusGuard&) = delete;
  BusGuard& operator=(const BusGuard&) = delete;
  // True when some access under this guard hit a page past the end of the file.
  bool faulted() const;
};

class SegmentMap {
 public:
  SegmentMap() = default;
  ~SegmentMap();
  SegmentMap(SegmentMap&& o) noexcept;
  SegmentMap& operator=(SegmentMap&& o) noexcept;
  SegmentMap(const SegmentMap&) = delete;
  SegmentMap& operator=(const SegmentMap&) = delete;

  // Maps sizeof(Segment) bytes of fd shared read-write. Only the header, the knob and
  // global blocks and the used thread slots are ever touched.
  bool map(int fd, size_t file_size);
  void unmap();

  // Drops this mapping's page-table entries (the file keeps its data). A read fault on a
  // shared file mapping maps up to 64 KiB of neighbouring pages ("fault-around"), all of
  // which count as the daemon's RSS; dropping them after each access keeps the daemon's
  // resident size independent of how many processes it watches.
  void drop_pages();

  bool mapped() const { return base_ != nullptr; }
  hakmem::proto::Segment* seg() const { return static_cast<hakmem::proto::Segment*>(base_); }
  size_t file_size() const { return file_size_; }
  size_t map_len() const { return len_; }

 private:
  void* base_ = nullptr;
  size_t len_ = 0;
  size_t file_size_ = 0;
};

}  // namespace hakmemd
