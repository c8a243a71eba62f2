// The shared-memory segment: the one contract between a process running libhakmem
// (the writer of everything but the knob values) and hakmemd (a reader that writes only
// the knob block and the rule block).
//
// Lifecycle: the process creates <dir>/hakmem.<uid>.<pid> (dir = $HAKMEM_SHM_DIR or /dev/shm)
// with O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600, sizes it to sizeof(Segment), fills the
// header, stores `ready = 1` last with release ordering, and unlinks the file at exit.
// A reader uses a segment only after validate_segment() accepts it, and treats every
// field as untrusted: counts are clamped, strings are bounded. What /proc tells about the
// process (executable, command line, start time) is not here: hakmemd reads it there, once
// per process, rather than every process reading it at its start (about 50 us of a
// short command's half millisecond).
//
// Header-only, no allocation: libhakmem includes it inside malloc.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <atomic>

#include "hakmem/proto/knobs.h"

namespace hakmem::proto {

inline constexpr uint64_t kMagic = 0x00314d454d4b4148ull;  // "HAKMEM1\0" little-endian
// Bump on any change of the structs below (order, size or meaning of a field).
// 3: the header names no program (hakmemd reads /proc/<pid>/exe and cmdline) and holds the
// time the segment was created instead of the process's start time.
inline constexpr uint32_t kLayoutVersion = 3;

inline constexpr const char* kShmDirEnv = "HAKMEM_SHM_DIR";
inline constexpr const char* kDefaultShmDir = "/dev/shm";
inline constexpr const char* kSegmentPrefix = "hakmem.";  // then "<uid>.<pid>"

enum class Tier : uint32_t { Tiny, Pool, Bundle, Whale, Count };
inline constexpr size_t kTierCount = static_cast<size_t>(Tier::Count);
inline constexpr const char* kTierNames[kTierCount] = {"tiny", "pool", "bundle", "whale"};

enum class ThreadCounter : uint32_t {
#define HAKMEM_THREAD_COUNTER(ID, NAME, HELP) ID,
#define HAKMEM_GLOBAL_COUNTER(ID, NAME, HELP)
#include "hakmem/proto/counters.def"
#undef HAKMEM_THREAD_COUNTER
#undef HAKMEM_GLOBAL_COUNTER
  Count
};
enum class GlobalCounter : uint32_t {
#define HAKMEM_THREAD_COUNTER(ID, NAME, HELP)
#define HAKMEM_GLOBAL_COUNTER(ID, NAME, HELP) ID,
#include "hakmem/proto/counters.def"
#undef HAKMEM_THREAD_COUNTER
#undef HAKMEM_GLOBAL_COUNTER
  Count
};
inline constexpr size_t kThreadCounterCount = static_cast<size_t>(ThreadCounter::Count);
inline constexpr size_t kGlobalCounterCount = static_cast<size_t>(GlobalCounter::Count);

struct CounterInfo {
  const char* name;
  const char* help;
};
inline constexpr CounterInfo kThreadCounters[kThreadCounterCount] = {
#define HAKMEM_THREAD_COUNTER(ID, NAME, HELP) {NAME, HELP},
#define HAKMEM_GLOBAL_COUNTER(ID, NAME, HELP)
#include "hakmem/proto/counters.def"
#undef HAKMEM_THREAD_COUNTER
#undef HAKMEM_GLOBAL_COUNTER
};
inline constexpr CounterInfo kGlobalCounters[kGlobalCounterCount] = {
#define HAKMEM_THREAD_COUNTER(ID, NAME, HELP)
#define HAKMEM_GLOBAL_COUNTER(ID, NAME, HELP) {NAME, HELP},
#include "hakmem/proto/counters.def"
#undef HAKMEM_THREAD_COUNTER
#undef HAKMEM_GLOBAL_COUNTER
};

inline constexpr size_t kMaxTinyClasses = 64;
inline constexpr size_t kThreadSlots = 256;
inline constexpr size_t kSiteSlots = 512;
inline constexpr size_t kRuleSlots = 64;
inline constexpr size_t kSiteHistBuckets = 16;  // log2 size buckets: [0]=<=16 B .. [15]=>256 KiB

struct SegmentHeader {
  uint64_t magic;                  // kMagic
  uint32_t layout_version;         // kLayoutVersion
  uint32_t header_size;            // sizeof(SegmentHeader)
  uint64_t segment_size;           // sizeof(Segment); the file is at least this long
  int32_t pid;                     // owning process
  uint32_t uid;                    // its real uid (the file's owner too)
  // When the segment was created, in clock ticks after boot (CLOCK_BOOTTIME / CLK_TCK, the
  // unit of field 22 of /proc/<pid>/stat). The process started no later than that: a
  // process under this pid whose start time is later reused the pid of a dead owner.
  uint64_t created_boot_ticks;
  uint64_t created_unix_ns;        // CLOCK_REALTIME when the segment was created
  char lib_version[32];            // libhakmem version string
  uint32_t tiny_class_count;       // <= kMaxTinyClasses
  uint32_t tiny_class_size[kMaxTinyClasses];  // bytes per block of each tiny size class
  std::atomic<uint32_t> ready;     // 1 once everything above is written (release)
};

// Knob values. Writers: hakmemd and the process's own hakmem_knob_set(). A writer stores
// the value, then increments `generation` (release); hakmemd then wakes (FUTEX_WAKE,
// shared: not FUTEX_PRIVATE_FLAG) the futex word knob_wake_word() of the block. Each
// allocating thread compares the generation on its periodic slow-path check, reloads every
// value (acquire) clamped with knob_clamp(), and stores the generation it applied into
// `applied_generation`. libhakmem's decay thread, when the process runs one, waits on the
// futex word and applies a write at once, even if no thread of the program allocates.
struct alignas(64) KnobBlock {
  std::atomic<uint64_t> generation;
  std::atomic<uint64_t> applied_generation;  // latest generation applied by some thread
  std::atomic<uint64_t> applied_unix_ns;     // when that happened (CLOCK_REALTIME)
  std::atomic<uint64_t> env_mask;            // bit i: knob i was set from the environment
  std::atomic<uint64_t> value[kKnobSlots];
};

// The 32-bit futex word that changes with every knob generation: the low half of
// `generation`.
inline const void* knob_wake_word(const KnobBlock& k) {
  return reinterpret_cast<const char*>(&k.generation) + (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? 0 : 4);
}

// The whale cache's lock shards; each publishes its own figures (GlobalBlock::whale_shard).
inline constexpr size_t kWhaleCacheShards = 8;
enum WhaleShardFigure : size_t { kWhaleShardCached = 0, kWhaleShardHits = 1, kWhaleShardFigures = 2 };

// Process-wide figures, updated with relaxed fetch_add on slow paths only.
struct alignas(64) GlobalBlock {
  std::atomic<uint64_t> tier[kTierCount][kGlobalCounterCount];
  std::atomic<uint64_t> invalid_frees;     // free() of a pointer hakmem does not own
  std::atomic<uint64_t> double_frees;      // detected double frees
  std::atomic<uint32_t> thread_slots_hwm;  // slots [0, hwm) have ever been used
  std::atomic<uint32_t> threads_live;      // threads currently holding a slot
  std::atomic<uint64_t> threads_unslotted; // threads that found no free slot (not published)
  // The whale tier's cached bytes and cache hits, by cache shard: each written only under
  // its shard's lock, by plain stores (a read-modify-write of one shared counter on the
  // reuse path cost the vm seed measurably). Readers add them to the whale tier's
  // cached_bytes and cache_hits (snapshot() does).
  std::atomic<uint64_t> whale_shard[kWhaleCacheShards][kWhaleShardFigures];
};

// The sum of one whale figure over the cache shards.
inline uint64_t whale_shard_sum(const GlobalBlock& g, WhaleShardFigure f) {
  uint64_t sum = 0;
  for (const auto& s : g.whale_shard) sum += s[f].load(std::memory_order_relaxed);
  return sum;
}

// One per thread. Only the owning thread writes it (relaxed load + store, no RMW);
// readers sum all slots below thread_slots_hwm. Tiny-tier Allocs/Frees/AllocBytes/FreeBytes
// are NOT kept in `tier[Tiny]`: the fast path bumps only the per-class counts and
// snapshot() derives the tier totals (count x tiny_class_size).
struct alignas(64) ThreadSlot {
  std::atomic<uint32_t> owner_tid;  // gettid() of the owner, 0 when free
  uint32_t reserved;
  std::atomic<uint64_t> tier[kTierCount][kThreadCounterCount];
  std::atomic<uint64_t> tiny_class_allocs[kMaxTinyClasses];
  std::atomic<uint64_t> tiny_class_frees[kMaxTinyClasses];
};

// Sampled call sites (written by the process when site.rules is on).
struct alignas(64) SiteEntry {
  std::atomic<uint64_t> addr;      // return address of the malloc caller; 0 = empty
  std::atomic<uint64_t> samples;   // sampled allocations
  std::atomic<uint64_t> bytes;     // sampled bytes, each sample weighted by the sampling period
  std::atomic<uint64_t> hist[kSiteHistBuckets];  // estimated allocations per size bucket (weighted)
  std::atomic<uint32_t> last_tier; // Tier the last sample went to
  uint32_t reserved;
};

// Site rules (written by hakmemd). A writer sets seq odd, writes the fields, sets seq even
// (release) and bumps RuleBlock::generation. The allocator ignores odd or malformed entries.
enum class RuleTier : int32_t { None = -1, Tiny = 0, Pool = 1, Bundle = 2, Whale = 3, System = 4 };
struct SiteRule {
  std::atomic<uint32_t> seq;  // 0 = empty slot, odd = being written
  uint32_t id;                // rule id shown by `hakctl rules list`, > 0
  uint64_t site;              // return address to match
  uint64_t min_size;          // inclusive
  uint64_t max_size;          // inclusive; 0 = no upper bound
  int32_t tier;               // RuleTier
  uint32_t cap;               // magazine cap for the site, 0 = unchanged
  int32_t prewarm;            // -1 unchanged, 0 off, 1 on
  uint32_t reserved;
};
struct alignas(64) RuleBlock {
  std::atomic<uint64_t> generation;
  SiteRule rules[kRuleSlots];
  // Appended in the block's tail padding (sizeof unchanged, kLayoutVersion 1 still holds);
  // written by the process with relaxed stores/fetch_add, read by hakmemd.
  std::atomic<uint64_t> applied_generation;  // rule generation the process compiled last
  std::atomic<uint64_t> sites_dropped;       // samples lost because the site table was full
  std::atomic<uint64_t> rule_hits;           // allocations a rule acted on
  std::atomic<uint32_t> rules_active;        // valid rules at the last compile
  std::atomic<uint32_t> rules_rejected;      // malformed entries ignored at the last compile
};
static_assert(sizeof(RuleBlock) == 3136, "RuleBlock's tail fields must stay inside its old padding");

struct Segment {
  SegmentHeader header;
  KnobBlock knobs;
  GlobalBlock global;
  RuleBlock rules;
  SiteEntry sites[kSiteSlots];
  ThreadSlot threads[kThreadSlots];
};

static_assert(std::atomic<uint64_t>::is_always_lock_free, "shm counters need lock-free 64-bit atomics");
static_assert(sizeof(std::atomic<uint64_t>) == 8, "shm layout assumes 8-byte atomics");

// Writes "<dir>/hakmem.<uid>.<pid>" into buf; returns false when it does not fit.
inline bool segment_path(const char* dir, uint32_t uid, int32_t pid, char* buf, size_t cap) {
  size_t o = 0;
  auto put = [&](const char* s) {
    for (; *s; s++) { if (o + 1 >= cap) return false; buf[o++] = *s; }
    return true;
  };
  auto put_num = [&](uint64_t v) {
    char t[24]; size_t n = 0;
    do { t[n++] = static_cast<char>('0' + v % 10); v /= 10; } while (v);
    while (n) { if (o + 1 >= cap) return false; buf[o++] = t[--n]; }
    return true;
  };
  if (cap == 0) return false;
  bool ok = put(dir) && put("/") && put(kSegmentPrefix) && put_num(uid) && put(".") &&
            put_num(static_cast<uint64_t>(pid));
  buf[ok ? o : 0] = 0;
  return ok;
}

enum class SegmentCheck { Ok, TooSmall, BadMagic, BadVersion, BadSize, NotReady };

constexpr const char* segment_check_text(SegmentCheck c) {
  switch (c) {
    case SegmentCheck::Ok: return "ok";
    case SegmentCheck::TooSmall: return "file smaller than the segment layout";
    case SegmentCheck::BadMagic: return "bad magic";
    case SegmentCheck::BadVersion: return "unsupported layout version";
    case SegmentCheck::BadSize: return "size fields do not match the layout";
    case SegmentCheck::NotReady: return "segment not ready yet";
  }
  return "?";
}

// Checks a mapping of `file_size` bytes before any other field is trusted.
inline SegmentCheck validate_segment(const void* base, size_t file_size) {
  if (file_size < sizeof(Segment)) return SegmentCheck::TooSmall;
  const Segment* s = static_cast<const Segment*>(base);
  // A creator sizes the file before it writes the header: all zeroes means "not yet".
  if (s->header.magic == 0 && s->header.ready.load(std::memory_order_acquire) == 0)
    return SegmentCheck::NotReady;
  if (s->header.magic != kMagic) return SegmentCheck::BadMagic;
  if (s->header.layout_version != kLayoutVersion) return SegmentCheck::BadVersion;
  if (s->header.header_size != sizeof(SegmentHeader) || s->header.segment_size != sizeof(Segment))
    return SegmentCheck::BadSize;
  if (s->header.ready.load(std::memory_order_acquire) != 1) return SegmentCheck::NotReady;
  return SegmentCheck::Ok;
}

}  // namespace hakmem::proto
