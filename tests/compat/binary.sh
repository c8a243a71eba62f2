#!/usr/bin/env bash
# compat: one of our own test programs, run plain and preloaded. Args: HAKMEM_LIB NAME PROGRAM [ARGS...]
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/lib.sh" "$1"
name="$2"
shift 2
compat_both "$name" "$@"
