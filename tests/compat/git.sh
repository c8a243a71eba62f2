#!/usr/bin/env bash
# compat: git init, commit a few thousand files in a few commits, log, gc, fsck. With fixed
# dates and identities the commit ids are a digest of everything git wrote, so equal ids
# mean equal repositories. Args: HAKMEM_LIB GIT
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/lib.sh" "$1"
export git_bin="$2"

export GIT_AUTHOR_NAME=hakmem GIT_AUTHOR_EMAIL=hakmem@example.invalid
export GIT_COMMITTER_NAME=hakmem GIT_COMMITTER_EMAIL=hakmem@example.invalid
export GIT_AUTHOR_DATE='2026-01-01T00:00:00Z' GIT_COMMITTER_DATE='2026-01-01T00:00:00Z'
export GIT_CONFIG_NOSYSTEM=1 HOME="$COMPAT_TMP" GIT_CONFIG_GLOBAL=/dev/null

# Runs the whole session in a fresh repo ($1 = its folder). Every git process is preloaded
# when the caller is compat_hakmem (the environment is inherited by git's children too).
session() {
  local repo="$COMPAT_TMP/$1"
  rm -rf "$repo"
  mkdir -p "$repo"
  cd "$repo"
  "$git_bin" init -q -b main .
  "$git_bin" config gc.auto 0
  local round
  for round in 1 2 3; do
    # 1200 files per round, a few bytes .. ~8 KiB each, all changed every round.
    awk -v round="$round" 'BEGIN {
      for (d = 0; d < 30; d++) {
        system("mkdir -p dir" d)
        for (i = 0; i < 40; i++) {
          f = "dir" d "/f" i ".txt"
          n = ((d * 40 + i) * 37 % 150) + round
          line = sprintf("round %d file %d/%d %*s", round, d, i, (i % 40), "")
          for (k = 0; k < n; k++) print line k >f
          close(f)
        }
      }
    }'
    "$git_bin" add -A
    "$git_bin" commit -q -m "round $round: $(find . -path ./.git -prune -o -type f -print | wc -l) files"
  done
  "$git_bin" log --stat --format='%H %s' | tail -n 5
  "$git_bin" log --format='%H %T %s'
  "$git_bin" gc -q
  "$git_bin" fsck --strict --no-progress
  "$git_bin" count-objects -v | grep -E '^(count|in-pack|packs|garbage)'
  "$git_bin" rev-list --objects --all | sort | sha256sum
  "$git_bin" diff --stat HEAD~2 HEAD | tail -n 1
}
compat_plain git session plain
compat_hakmem git session hakmem
compat_same git
