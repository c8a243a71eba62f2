#!/usr/bin/env bash
# compat: sqlite3 builds a generated database (100k rows, indexes, a join, group by,
# a large sort) and queries it. Args: HAKMEM_LIB SQLITE3
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/lib.sh" "$1"
export sqlite="$2"

# One script builds and queries, so the whole life of the database runs under test.
cat >"$COMPAT_TMP/work.sql" <<'SQL'
PRAGMA cache_size = -65536;
PRAGMA synchronous = OFF;
PRAGMA journal_mode = MEMORY;
CREATE TABLE item(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, price REAL, blob BLOB);
CREATE TABLE tag(item_id INTEGER, tag TEXT);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
INSERT INTO item SELECT i, 'item-' || i || '-' || substr(hex(i * 2654435761), 1, 8),
  i % 97, (i * 7919 % 10007) / 100.0, zeroblob(i % 2000) FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
INSERT INTO tag SELECT (i * 31) % 100000 + 1, 'tag' || (i % 500) FROM n;
CREATE INDEX tag_item ON tag(item_id);
CREATE INDEX item_grp ON item(grp, price);
SELECT count(*), sum(length(blob)), round(sum(price), 2) FROM item;
SELECT grp, count(*), round(avg(price), 4), max(name) FROM item GROUP BY grp ORDER BY grp;
SELECT t.tag, count(*), round(sum(i.price), 2) FROM tag t JOIN item i ON i.id = t.item_id
  GROUP BY t.tag ORDER BY 2 DESC, 1 LIMIT 50;
SELECT name FROM item ORDER BY name DESC LIMIT 20 OFFSET 5000;
SELECT group_concat(name, ',') IS NOT NULL, length(group_concat(name, ',')) FROM item;
UPDATE item SET blob = zeroblob(4000) WHERE id % 10 = 0;
DELETE FROM tag WHERE tag LIKE 'tag1%';
SELECT count(*) FROM tag;
VACUUM;
PRAGMA integrity_check;
SELECT count(*), sum(length(blob)) FROM item;
SQL

run() { rm -f "$COMPAT_TMP/$1.db"; "$sqlite" "$COMPAT_TMP/$1.db" <"$COMPAT_TMP/work.sql"; }
compat_plain sqlite run plain
compat_hakmem sqlite run hakmem
compat_same sqlite
# The files themselves must hold the same data (row order, values).
dump() { "$sqlite" "$COMPAT_TMP/$1.db" 'SELECT * FROM item ORDER BY id; SELECT * FROM tag ORDER BY rowid;' | sha256sum; }
[ "$(dump plain)" = "$(dump hakmem)" ] || compat_fail "sqlite: the two databases hold different data"
echo "sqlite: databases hold the same data"
