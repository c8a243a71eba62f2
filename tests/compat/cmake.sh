#!/usr/bin/env bash
# compat: cmake configures and builds cmake_project/ (cmake, make, g++, cc1plus, as, ld all
# preloaded), then the program it built runs. Args: HAKMEM_LIB CMAKE
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/lib.sh" "$1"
export cmake_bin="$2" project="$here/cmake_project"

build_and_run() {
  local w="$COMPAT_TMP/$1"
  "$cmake_bin" -S "$project" -B "$w" -G "Unix Makefiles" -DCMAKE_BUILD_TYPE=Release >"$w.configure.log"
  "$cmake_bin" --build "$w" -j2 >"$w.build.log"
  "$w/app"
}
compat_plain cmake build_and_run plain
compat_hakmem cmake build_and_run hakmem
compat_same cmake
