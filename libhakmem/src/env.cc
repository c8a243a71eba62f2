// HAKMEM_* environment variables -> knob values, without allocating.
//
// Called from the very first malloc, possibly while libc is still starting: `environ` may
// not be set yet, so /proc/self/environ (the initial environment, which is what a process
// was started with) is the fallback. Everything about a knob (env name, type, range)
// comes from proto's knob table.
#include <unistd.h>

#include <atomic>

#include "control_internal.h"
#include "fmt.h"
#include "os.h"

namespace hakmem {

using proto::KnobInfo;
using proto::KnobType;
using proto::ParseError;

namespace {

// The initial environment, NUL-separated, when `environ` is not usable. 64 KiB covers
// any sane environment; a longer one is truncated (the kernel caps argv+env anyway and
// HAKMEM_* variables near the end are then missed, which the README notes).
constexpr size_t kEnvBufBytes = 64 * 1024;
char g_env_buf[kEnvBufBytes];
size_t g_env_len = 0;
// 0 = not read, 1 = read (g_env_len valid). A race between two first readers only
// reads the same file twice into the same bytes.
std::atomic<int> g_env_state{0};

// Returns the value if `entry` is "name=value".
const char* match(const char* entry, const char* name) {
  while (*name && *entry == *name) { entry++; name++; }
  return (*name == 0 && *entry == '=') ? entry + 1 : nullptr;
}

const char* proc_environ_get(const char* name) {
  if (g_env_state.load(std::memory_order_acquire) == 0) {
    ssize_t n = os_read_file("/proc/self/environ", g_env_buf, kEnvBufBytes);
    g_env_len = n > 0 ? static_cast<size_t>(n) : 0;
    g_env_state.store(1, std::memory_order_release);
  }
  for (size_t i = 0; i < g_env_len;) {
    const char* entry = g_env_buf + i;
    if (const char* v = match(entry, name)) return v;
    while (i < g_env_len && g_env_buf[i]) i++;
    i++;
  }
  return nullptr;
}

void put_range(FmtBuf& b, const KnobInfo& k) {
  if (k.type == KnobType::Bool) {
    b.str("0/1, true/false, on/off or yes/no");
    return;
  }
  char lo[32], hi[32];
  proto::knob_format(k, k.min, lo, sizeof lo);
  proto::knob_format(k, k.max, hi, sizeof hi);
  b.str(lo).str("..").str(hi);
  if (k.type == KnobType::Size) b.str(" bytes (K/M/G suffixes allowed)");
  if (k.type == KnobType::Millis) b.str(" ms (ms/s/m suffixes allowed)");
}

}  // namespace

const char* control_env_get(const char* name) {
  if (os_secure()) return nullptr;
  char** env = environ;
  if (env == nullptr) return proc_environ_get(name);
  for (; *env; env++)
    if (const char* v = match(*env, name)) return v;
  return nullptr;
}

void control_env_reset_for_test() { g_env_state.store(0, std::memory_order_release); }

ParseError control_knob_parse(const KnobInfo& k, const char* text, uint64_t* out, char* err,
                              size_t err_cap) {
  uint64_t v = 0;
  ParseError e = proto::knob_parse(k, text, &v);
  if (e == ParseError::Ok) {
    *out = v;
    return e;
  }
  if (err && err_cap) {
    FmtBuf b(err, err_cap);
    b.str(k.name).str(": ").str(proto::parse_error_text(e));
    if (e == ParseError::OutOfRange) b.str(" (").u64(v).str(")");
    b.str("; must be ");
    put_range(b, k);
  }
  return e;
}

uint64_t control_env_load(uint64_t values[proto::kKnobSlots]) {
  uint64_t mask = 0;
  for (size_t i = 0; i < proto::kKnobSlots; i++) values[i] = 0;
  for (size_t i = 0; i < proto::kKnobCount; i++) {
    const KnobInfo& k = proto::kKnobs[i];
    values[i] = k.def;
    const char* text = control_env_get(k.env);
    if (text == nullptr) continue;
    uint64_t v = 0;
    char why[192];
    if (control_knob_parse(k, text, &v, why, sizeof why) == ParseError::Ok) {
      values[i] = v;
      mask |= 1ull << i;
      continue;
    }
    char line[400];
    char def[32];
    proto::knob_format(k, k.def, def, sizeof def);
    FmtBuf b(line, sizeof line);
    b.str("hakmem: ignoring ").str(k.env).ch('=');
    // Bounded so the line (and its newline) always fits the buffer.
    size_t shown = 0;
    for (; text[shown] && shown < 64; shown++) b.ch(text[shown]);
    if (text[shown]) b.str("...");
    b.str(": ").str(why)
        .str(" (keeping the default ").str(def).str(")\n");
    b.write_stderr();
  }
  return mask;
}

}  // namespace hakmem
