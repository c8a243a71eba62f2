# Shared by the compat scripts: run a real program twice (plain, then with libhakmem
# preloaded), compare what it produced, and prove the preloaded run really used hakmem.
#
# Usage in a script: source lib.sh "$HAKMEM_LIB"; then compat_plain/compat_hakmem/...
# HAKMEM_LIB empty means "no preload" (both runs plain): how the harness is checked
# against glibc. Every script exits 0 on success, 1 on any failure.
set -euo pipefail

COMPAT_LIB="${1:-}"
# tmpfs when there is one: these tests measure the allocator, not the disk.
compat_base="${TMPDIR:-/tmp}"
[ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ] && compat_base=/dev/shm
COMPAT_TMP="$(mktemp -d "$compat_base/hakmem-compat.XXXXXX")"
COMPAT_SHM="$COMPAT_TMP/shm"
mkdir -p "$COMPAT_SHM"
export COMPAT_TMP
trap 'rm -rf "$COMPAT_TMP"' EXIT

compat_fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# The preload must be a real allocator: a library that does not define malloc would be
# loaded and then bypassed, and every comparison below would pass against glibc.
if [ -n "$COMPAT_LIB" ]; then
  [ -f "$COMPAT_LIB" ] || compat_fail "preload library $COMPAT_LIB does not exist"
  nm -D --defined-only "$COMPAT_LIB" | grep -qw 'malloc$' ||
    compat_fail "$COMPAT_LIB does not define malloc: nothing would be interposed"
fi

# compat_run cmd...: runs a command or a shell function in a fresh bash whose errexit really
# applies (bash ignores `set -e` inside anything called from the left of `||`). A function
# sees only exported variables.
compat_run() {
  if declare -F "$1" >/dev/null; then export -f "$1"; fi
  bash -c 'set -euo pipefail; "$@"' compat_run "$@"
}

# compat_plain NAME cmd...: runs cmd with stdout to $COMPAT_TMP/NAME.plain.out.
compat_plain() {
  local name="$1"; shift
  local rc=0
  compat_run "$@" >"$COMPAT_TMP/$name.plain.out" 2>"$COMPAT_TMP/$name.plain.err" || rc=$?
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$COMPAT_TMP/$name.plain.err" >&2
    compat_fail "$name: plain run exited $rc"
  fi
}

# compat_hakmem NAME cmd...: same, under LD_PRELOAD with the exit summary switched on and a
# private segment folder, so parallel tests never meet.
compat_hakmem() {
  local name="$1"; shift
  local rc=0
  if [ -n "$COMPAT_LIB" ]; then
    LD_PRELOAD="$COMPAT_LIB" HAKMEM_STATS=1 HAKMEM_SHM_DIR="$COMPAT_SHM" \
      compat_run "$@" >"$COMPAT_TMP/$name.hakmem.out" 2>"$COMPAT_TMP/$name.hakmem.err" || rc=$?
  else
    compat_run "$@" >"$COMPAT_TMP/$name.hakmem.out" 2>"$COMPAT_TMP/$name.hakmem.err" || rc=$?
  fi
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$COMPAT_TMP/$name.hakmem.err" >&2
    compat_fail "$name: run under hakmem exited $rc"
  fi
  compat_check_used "$name"
}

# The dynamic loader only warns ("cannot be preloaded ... ignored") and goes on when a
# preload fails, so success alone proves nothing: the exit summary (HAKMEM_STATS=1) is
# printed by libhakmem itself, and it must report allocations.
compat_check_used() {
  local name="$1" err="$COMPAT_TMP/$1.hakmem.err"
  [ -n "$COMPAT_LIB" ] || return 0
  if grep -q 'cannot be preloaded' "$err"; then
    grep 'cannot be preloaded' "$err" | head -n 3 >&2
    compat_fail "$name: the loader ignored the preload"
  fi
  # Each preloaded process prints a header naming "hakmem" and its pid, and a "total" row whose
  # second column is its allocation count; at least one process must have allocated.
  local procs allocs
  procs="$(grep -cE '^hakmem[: ].*pid [0-9]+' "$err" || true)"
  allocs="$(awk '$1 == "total" && $2 ~ /^[0-9]+$/ { s += $2 } END { print s + 0 }' "$err")"
  if [ "$procs" -eq 0 ] || [ "$allocs" -eq 0 ]; then
    tail -n 20 "$err" >&2
    compat_fail "$name: no hakmem exit summary with allocations on stderr (HAKMEM_STATS=1): hakmem was not used"
  fi
  echo "$name: $procs preloaded processes reported, $allocs allocations served by hakmem"
}

# compat_same NAME: the two runs printed the same stdout.
compat_same() {
  local name="$1"
  if ! cmp -s "$COMPAT_TMP/$name.plain.out" "$COMPAT_TMP/$name.hakmem.out"; then
    diff "$COMPAT_TMP/$name.plain.out" "$COMPAT_TMP/$name.hakmem.out" | head -n 20 >&2
    compat_fail "$name: output under hakmem differs from the plain run"
  fi
  [ -s "$COMPAT_TMP/$name.plain.out" ] || compat_fail "$name: produced no output to compare"
  echo "$name: same output ($(wc -c <"$COMPAT_TMP/$name.plain.out") bytes)"
}

# compat_both NAME cmd...: plain run, hakmem run, compare.
compat_both() {
  compat_plain "$@"
  compat_hakmem "$@"
  compat_same "$1"
}
