#!/usr/bin/env bash
# Runs one fault_child scenario and checks how it ended and what the allocator reported.
#   expect.sh report|abort|survive FAULT_CHILD SCENARIO [ARG]
# report:  exit 0 after "survived", and stderr names the abused address and the fault kind
#          (hakmem's default: report and continue).
# abort:   same scenario with HAKMEM_ABORT_ON_ERROR=1: the child dies of SIGABRT and the
#          report naming the address came first.
# survive: exit 0 after "survived" (no report needed: garbage knobs, out of memory).
# The environment (HAKMEM_FAULT_PRELOAD, HAKMEM_EXPECT, HAKMEM_SHM_DIR) comes from ctest; the
# scenario runs with LD_PRELOAD=$HAKMEM_FAULT_PRELOAD, this script without it.
set -uo pipefail
mode="$1"
shift
tmp="$(mktemp -d "${TMPDIR:-/tmp}/hakmem-fault.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

if [ "$mode" = abort ]; then
  LD_PRELOAD="${HAKMEM_FAULT_PRELOAD:-}" HAKMEM_ABORT_ON_ERROR=1 "$@" >"$tmp/out" 2>"$tmp/err"
else
  LD_PRELOAD="${HAKMEM_FAULT_PRELOAD:-}" "$@" >"$tmp/out" 2>"$tmp/err"
fi
rc=$?


fail() {
  echo "FAIL: $* (exit $rc)" >&2
  echo "--- stdout"; tail -n 20 "$tmp/out"
  echo "--- stderr"; tail -n 20 "$tmp/err"
  exit 1
}

# The report must name the address the scenario abused (any hex spelling of it).
reported_address() {
  local addr want h
  addr="$(sed -n 's/^addr //p' "$tmp/out" | head -n 1)"
  [ -n "$addr" ] || fail "the scenario did not print its address"
  want=$((addr))
  for h in $(grep -oiE '0x[0-9a-f]+' "$tmp/err"); do
    [ $((h)) -eq "$want" ] && return 0
  done
  fail "stderr does not name the address $addr"
}

case "$mode" in
  report)
    [ "$rc" -eq 0 ] || fail "expected report-and-continue, the process ended badly"
    grep -q '^survived' "$tmp/out" || fail "the process did not get to the end"
    grep -qiE 'double free|invalid|not owned|foreign' "$tmp/err" || fail "no error report on stderr"
    reported_address
    ;;
  abort)
    [ "$rc" -eq 134 ] || fail "expected death by SIGABRT (exit 134) with HAKMEM_ABORT_ON_ERROR=1"
    grep -q '^survived' "$tmp/out" && fail "the process continued after the fault"
    reported_address
    ;;
  survive)
    [ "$rc" -eq 0 ] || fail "the process did not survive"
    grep -q '^survived' "$tmp/out" || fail "the process did not get to the end"
    ;;
  *)
    echo "usage: expect.sh report|abort|survive PROGRAM ARGS..." >&2
    exit 2
    ;;
esac
sed -n 's/^/  /p' "$tmp/out" | head -n 5
grep -iE 'double free|invalid' "$tmp/err" | head -n 3 | sed 's/^/  stderr: /'
echo "ok: $mode $*"
