#!/usr/bin/env bash
# The installed bash completion, driven the way bash drives it, against the built hakctl.
# Usage: completion_test.sh HAKCTL COMPLETION_FILE
set -uo pipefail
HAKCTL_BIN="$1"
hakctl() { "$HAKCTL_BIN" "$@"; }
# shellcheck source=/dev/null
source "$2"
fail=0
expect() {  # expect "WANT" WORD...
  local want="$1"; shift
  COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=()
  _hakctl
  local got="${COMPREPLY[*]}"
  if [[ "$got" != "$want" ]]; then echo "FAIL: '${*}' completed to '$got', want '$want'"; fail=1; fi
}
expect "stats" hakctl st
expect "set" hakctl se
expect "tiny.cap= tiny.prewarm=" hakctl set tiny.
expect "tiny.cap tiny.prewarm" hakctl get --pid 3 tiny.
expect "--timeout --tier" hakctl stats --t
expect "tiny pool bundle whale" hakctl stats --tier ""
expect "--markdown" hakctl knobs --m
expect "stats" hakctl help sta
# Restart-only knobs cannot be set live, so set does not offer them.
expect "" hakctl set stats.p
exit $fail
