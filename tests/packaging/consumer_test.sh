#!/usr/bin/env bash
# Installs the build tree into a temporary prefix and builds outside consumers against it:
# one with find_package(hakmem), one with pkg-config. Each consumer proves at run time that
# its allocations are served by hakmem (see consumer.c).
set -euo pipefail
build=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

cmake --install "$build" --prefix "$prefix" >/dev/null
libdir=$(cd "$prefix" && ls -d lib* | head -n 1)
for f in bin/hakmemd bin/hakctl "$libdir/libhakmem.so" "$libdir/libhakmem.a" include/hakmem.h \
         include/hakmem/proto/knobs.h include/hakmem/proto/segment.h "$libdir/pkgconfig/hakmem.pc" \
         "$libdir/cmake/hakmem/hakmemConfig.cmake" etc/hakmem/hakmemd.json \
         lib/systemd/system/hakmemd.service share/bash-completion/completions/hakctl; do
  if [ ! -e "$prefix/$f" ]; then
    echo "FAIL: cmake --install did not install $f" >&2
    exit 1
  fi
done
echo "installed: all expected files present under $prefix"

# find_package(hakmem): shared and static.
cmake -S "$src" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$tmp/consumer" >/dev/null
LD_LIBRARY_PATH="$prefix/$libdir" "$tmp/consumer/consumer"
"$tmp/consumer/consumer_static"
if ldd "$tmp/consumer/consumer_static" | grep -q libhakmem; then
  echo "FAIL: consumer_static links libhakmem.so dynamically" >&2
  exit 1
fi

# pkg-config: flags point into the relocated prefix.
export PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig"
libs=$(pkg-config --libs hakmem)
cflags=$(pkg-config --cflags hakmem)
echo "pkg-config --libs hakmem: $libs"
case "$libs" in
  *-lhakmem*) ;;
  *) echo "FAIL: pkg-config --libs lacks -lhakmem" >&2; exit 1 ;;
esac
libpath=$(pkg-config --variable=libdir hakmem)
if [ "$(cd "$libpath" && pwd -P)" != "$(cd "$prefix/$libdir" && pwd -P)" ]; then
  echo "FAIL: pkg-config libdir $libpath is not the install prefix's" >&2
  exit 1
fi
# shellcheck disable=SC2086
cc "$src/consumer.c" $cflags $libs -o "$tmp/pc_consumer"
LD_LIBRARY_PATH="$prefix/$libdir" "$tmp/pc_consumer"
echo "packaging: find_package and pkg-config consumers work"
