#!/usr/bin/env bash
# compat: gzip, xz (2 threads) and sort (2 threads, small buffer so it merges runs) over a
# ~16 MB generated text, round-tripped. Args: HAKMEM_LIB GZIP XZ SORT
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/lib.sh" "$1"
export gzip_bin="$2" xz_bin="$3" sort_bin="$4"

# Generated once, read by both runs: lines of varying length and repetitiveness.
awk 'BEGIN { srand(7); for (i = 0; i < 300000; i++) {
  n = int(rand() * 80); s = sprintf("%08d", int(rand() * 100000000));
  printf "%s %s %d %*s|\n", s, (i % 3 ? "alpha" : "omega"), i, n, "" } }' >"$COMPAT_TMP/input.txt"
export input="$COMPAT_TMP/input.txt"

pipeline() {
  local w="$COMPAT_TMP/$1"
  mkdir -p "$w"
  "$gzip_bin" -6 -c "$input" >"$w/in.gz"
  "$gzip_bin" -dc "$w/in.gz" | cmp - "$input"
  "$xz_bin" -T2 -3 --block-size=2MiB -c "$input" >"$w/in.xz"
  "$xz_bin" -dc "$w/in.xz" | cmp - "$input"
  LC_ALL=C "$sort_bin" --parallel=2 -S 8M -T "$w" "$input" >"$w/sorted"
  LC_ALL=C "$sort_bin" --parallel=2 -S 8M -T "$w" -k3,3n -t ' ' "$input" >"$w/sorted-n"
  LC_ALL=C "$sort_bin" -c "$w/sorted"
  sha256sum <"$w/in.gz"
  sha256sum <"$w/in.xz"
  sha256sum <"$w/sorted"
  sha256sum <"$w/sorted-n"
  wc -l <"$w/sorted"
}
compat_plain compress pipeline plain
compat_hakmem compress pipeline hakmem
compat_same compress
