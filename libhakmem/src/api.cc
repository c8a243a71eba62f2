// The public C API (include/hakmem.h): knobs by name and a stats snapshot.
// Validation is proto's knob_parse via control_knob_parse, the very code env parsing and
// hakmemd use, so the three accept and refuse the same values.
#include "hakmem.h"

#include <string.h>

#include "control_internal.h"
#include "fmt.h"
#include "hakmem/proto/snapshot.h"
#include "os.h"

#ifndef HAKMEM_VERSION
#define HAKMEM_VERSION "unknown"
#endif

using namespace hakmem;
using proto::KnobInfo;
using proto::ParseError;

namespace {

void set_err(char* err, size_t cap, const char* a, const char* b = "", const char* c = "") {
  if (err == nullptr || cap == 0) return;
  FmtBuf f(err, cap);
  f.str(a).str(b).str(c);
}

int check_settable(const char* name, const KnobInfo** out, char* err, size_t cap) {
  if (name == nullptr) {
    set_err(err, cap, "no knob name given");
    return HAKMEM_EINVAL;
  }
  const KnobInfo* k = proto::knob_find(name);
  if (k == nullptr) {
    set_err(err, cap, "unknown knob '", name, "' (see hakctl knobs)");
    return HAKMEM_EUNKNOWN;
  }
  if (k->mode != proto::KnobMode::Live) {
    set_err(err, cap, name, ": only read at start; set ", k->env);
    return HAKMEM_ERESTART;
  }
  *out = k;
  return HAKMEM_OK;
}

int parse_code(ParseError e) {
  return e == ParseError::OutOfRange ? HAKMEM_ERANGE : HAKMEM_EINVAL;
}

void fill_tier(const proto::TierSnapshot& t, hakmem_tier_stats* o) {
  using proto::GlobalCounter;
  using proto::ThreadCounter;
  o->allocs = t.allocs();
  o->frees = t.frees();
  o->hits = t.hits();
  o->misses = t.misses();
  o->remote_frees = t.get(ThreadCounter::RemoteFrees);
  o->alloc_bytes = t.get(ThreadCounter::AllocBytes);
  o->free_bytes = t.get(ThreadCounter::FreeBytes);
  o->live_bytes = t.live_bytes();
  o->cached_bytes = stats_gauge(t.get(GlobalCounter::CachedBytes));
  o->mapped_bytes = stats_gauge(t.get(GlobalCounter::MappedBytes));
  o->os_maps = t.get(GlobalCounter::OsMaps);
  o->os_unmaps = t.get(GlobalCounter::OsUnmaps);
  o->madvises = t.get(GlobalCounter::Madvises);
  o->cache_hits = t.get(GlobalCounter::CacheHits);
  o->cache_misses = t.get(GlobalCounter::CacheMisses);
}

}  // namespace

extern "C" {

HAKMEM_API const char* hakmem_version(void) { return HAKMEM_VERSION; }

HAKMEM_API const char* hakmem_strerror(int code) {
  switch (code) {
    case HAKMEM_OK: return "ok";
    case HAKMEM_EUNKNOWN: return "unknown knob";
    case HAKMEM_EINVAL: return "invalid value";
    case HAKMEM_ERANGE: return "value out of range";
    case HAKMEM_ERESTART: return "knob is read at start only";
  }
  return "unknown error";
}

HAKMEM_API unsigned hakmem_knob_count(void) { return static_cast<unsigned>(proto::kKnobCount); }

HAKMEM_API const char* hakmem_knob_name(unsigned i) {
  return i < proto::kKnobCount ? proto::kKnobs[i].name : nullptr;
}

HAKMEM_API int hakmem_knob_get(const char* name, uint64_t* value) {
  if (name == nullptr || value == nullptr) return HAKMEM_EINVAL;
  const KnobInfo* k = proto::knob_find(name);
  if (k == nullptr) return HAKMEM_EUNKNOWN;
  *value = knob(k->id);
  return HAKMEM_OK;
}

HAKMEM_API int hakmem_knob_set(const char* name, const char* value, char* err, size_t err_cap) {
  const KnobInfo* k = nullptr;
  if (int rc = check_settable(name, &k, err, err_cap)) return rc;
  if (value == nullptr) {
    set_err(err, err_cap, name, ": no value given");
    return HAKMEM_EINVAL;
  }
  uint64_t v = 0;
  ParseError e = control_knob_parse(*k, value, &v, err, err_cap);
  if (e != ParseError::Ok) return parse_code(e);
  control_knob_store(k->id, v);
  if (err && err_cap) err[0] = 0;
  return HAKMEM_OK;
}

HAKMEM_API int hakmem_knob_set_u64(const char* name, uint64_t value, char* err, size_t err_cap) {
  const KnobInfo* k = nullptr;
  if (int rc = check_settable(name, &k, err, err_cap)) return rc;
  // Format then parse: one validation path, one error text.
  char text[32];
  FmtBuf f(text, sizeof text);
  f.u64(value);
  uint64_t v = 0;
  ParseError e = control_knob_parse(*k, text, &v, err, err_cap);
  if (e != ParseError::Ok) return parse_code(e);
  control_knob_store(k->id, v);
  if (err && err_cap) err[0] = 0;
  return HAKMEM_OK;
}

HAKMEM_API int hakmem_stats_get(struct hakmem_stats* out, size_t size) {
  if (out == nullptr || size == 0) return HAKMEM_EINVAL;
  proto::Snapshot snap;
  proto::snapshot(control_segment(), &snap);
  hakmem_stats s;
  memset(&s, 0, sizeof s);
  for (size_t t = 0; t < proto::kTierCount; t++) fill_tier(snap.tier[t], &s.tier[t]);
  s.minor_faults = os_minor_faults();
  s.invalid_frees = snap.invalid_frees;
  s.double_frees = snap.double_frees;
  s.threads_live = snap.threads_live;
  s.thread_slots_used = snap.thread_slots_used;
  s.threads_unslotted = snap.threads_unslotted;
  s.knob_generation = snap.knob_generation;
  s.knob_applied_generation = snap.knob_applied_generation;
  s.shared = control_segment_is_shared() ? 1 : 0;
  FmtBuf p(s.segment_path, sizeof s.segment_path);
  p.str(control_segment_path());
  memcpy(out, &s, size < sizeof s ? size : sizeof s);
  return HAKMEM_OK;
}

}  // extern "C"
