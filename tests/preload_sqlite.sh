#!/bin/sh
# preload_sqlite.sh -- the sqlite3 shell with and without LD_PRELOAD=libpymalloc.so:
# 100,000 deterministic rows made by a recursive CTE, indexes, aggregates,
# sorts, a self join, window functions, updates and deletes, in a temporary
# database file (then reopened) and in :memory:.  Outputs are compared.
. "$(dirname "$0")/preload_common.sh"

need_program SQLITE3 sqlite3
echo "sqlite3: $SQLITE3 ($("$SQLITE3" -version | cut -d' ' -f1))"

# ---- the SQL -----------------------------------------------------------------------
cat >"$PYM_TMP/fill.sql" <<'EOF'
PRAGMA cache_size = -16000;
CREATE TABLE t(id INTEGER PRIMARY KEY, grp INTEGER NOT NULL, name TEXT NOT NULL,
               val REAL NOT NULL, payload BLOB);
BEGIN;
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100000)
INSERT INTO t(id, grp, name, val, payload)
SELECT i,
       (i * 7919) % 100,
       printf('n%08x-%d', (i * 2654435761) % 4294967296, i % 977),
       ((i * 104729) % 100003) / 7.0,
       CASE WHEN i % 10 = 0 THEN NULL
            ELSE substr(replace(hex(zeroblob(1 + i % 90)), '00', printf('%02x', i % 256)), 1, 2 + i % 150)
       END
FROM c;
COMMIT;
CREATE INDEX t_grp_val ON t(grp, val);
CREATE INDEX t_name ON t(name);
CREATE TABLE small AS SELECT id, grp, name FROM t WHERE id % 1000 = 7;
EOF

cat >"$PYM_TMP/query.sql" <<'EOF'
.headers on
.mode list
SELECT 'count', count(*), sum(id), printf('%.4f', total(val)), sum(length(payload)) FROM t;
SELECT 'groups', grp, count(*), sum(length(name)), printf('%.6f', avg(val)), min(name), max(name)
  FROM t GROUP BY grp ORDER BY grp;
SELECT 'top', id, name, printf('%.4f', val) FROM t ORDER BY name DESC, id LIMIT 25;
SELECT 'bottom', id, grp, printf('%.4f', val) FROM t ORDER BY val, id LIMIT 25;
SELECT 'indexed', id, name FROM t WHERE grp = 42 AND val BETWEEN 1000 AND 1100 ORDER BY val, id;
SELECT 'join', a.id, b.id, a.grp, substr(a.name, 1, 5) || substr(b.name, 6)
  FROM t AS a JOIN t AS b ON a.grp = b.grp
  WHERE a.id BETWEEN 1000 AND 1200 AND b.id BETWEEN 50000 AND 50300
  ORDER BY a.id, b.id;
SELECT 'join-count', count(*), sum(a.id * b.id % 1000)
  FROM t AS a JOIN t AS b ON a.grp = b.grp AND a.id < b.id
  WHERE a.id <= 3000 AND b.id <= 3000;
SELECT 'small-join', s.id, t.id FROM small AS s JOIN t ON t.name = s.name ORDER BY s.id LIMIT 20;
SELECT 'unindexed-sort', sum(x), count(*) FROM
  (SELECT id * 31 % 1009 AS x FROM t ORDER BY substr(name, 4) || payload, id LIMIT 60000 OFFSET 1000);
SELECT 'distinct', count(DISTINCT substr(name, 1, 4)), count(DISTINCT payload) FROM t;
SELECT 'concat', length(group_concat(name, ',')), substr(group_concat(name, ','), 1, 60)
  FROM (SELECT name FROM t WHERE grp = 5 ORDER BY name);
SELECT 'window', id, grp, printf('%.3f', sum(val) OVER (PARTITION BY grp ORDER BY id ROWS 3 PRECEDING)),
       rank() OVER (PARTITION BY grp ORDER BY val DESC)
  FROM t WHERE id % 4999 = 0 ORDER BY id;
BEGIN;
UPDATE t SET name = upper(name) || '!', val = val * 2 WHERE id % 7 = 3;
DELETE FROM t WHERE id % 13 = 0;
INSERT INTO t(grp, name, val, payload) SELECT grp, name || '+', val + 0.5, zeroblob(grp) FROM t WHERE id % 97 = 1;
COMMIT;
SELECT 'after-update', count(*), sum(id), printf('%.4f', total(val)), sum(length(name)), max(id) FROM t;
SELECT 'after-groups', grp, count(*), printf('%.4f', sum(val)) FROM t GROUP BY grp HAVING count(*) > 900 ORDER BY grp;
PRAGMA integrity_check;
EOF

cat >"$PYM_TMP/reopen.sql" <<'EOF'
SELECT 'reopened', count(*), sum(id), printf('%.4f', total(val)) FROM t;
SELECT 'reopened-index', id, name FROM t INDEXED BY t_name WHERE name > 'N8' ORDER BY name LIMIT 10;
VACUUM;
SELECT 'vacuumed', count(*), sum(length(payload)) FROM t;
PRAGMA integrity_check;
EOF

# One run: a fresh database file (removed first, so that both runs start
# from nothing), filled and queried, then reopened by a second sqlite3.
cat >"$PYM_TMP/file-db.sh" <<'EOF'
#!/bin/sh
db=$1; dir=$2; sqlite3=$3
rm -f "$db" "$db-journal" "$db-wal"
"$sqlite3" -batch -bail "$db" ".read $dir/fill.sql" ".read $dir/query.sql" || exit $?
"$sqlite3" -batch -bail "$db" ".read $dir/reopen.sql" || exit $?
rm -f "$db"
EOF

run_both file-db sh "$PYM_TMP/file-db.sh" "$PYM_TMP/test.db" "$PYM_TMP" "$SQLITE3"
run_both memory-db "$SQLITE3" -batch -bail :memory: ".read $PYM_TMP/fill.sql" ".read $PYM_TMP/query.sql"
run_both memory-db-align8 env PYMALLOC_ALIGN=8 "$SQLITE3" -batch -bail :memory: \
    ".read $PYM_TMP/fill.sql" ".read $PYM_TMP/query.sql"
# A big page cache and a big sort in memory: large and medium blocks.
run_both memory-db-bigcache "$SQLITE3" -batch -bail :memory: "PRAGMA cache_size = -200000;" \
    "PRAGMA temp_store = MEMORY;" ".read $PYM_TMP/fill.sql" \
    "SELECT 'big-sort', count(*), sum(length(k)) FROM (SELECT name || payload || id AS k FROM t ORDER BY k DESC);"

# ---- the outputs are what the SQL says -------------------------------------------
expect() {
    # expect NAME FILE PATTERN: FILE holds a line matching PATTERN.
    if grep -q "$3" "$2"; then
        pass "$1"
    else
        fail "$1" "no line matching '$3' in the output"
    fi
}
expect "file-db: 100000 rows" "$PYM_TMP/file-db.preload.out" '^count|100000|5000050000|'
expect "file-db: reopened" "$PYM_TMP/file-db.preload.out" '^reopened|'
expect "file-db: integrity ok" "$PYM_TMP/file-db.preload.out" '^ok$'
expect "memory-db: 100000 rows" "$PYM_TMP/memory-db.preload.out" '^count|100000|5000050000|'
expect "memory-db: self join" "$PYM_TMP/memory-db.preload.out" '^join|1000|'
expect "memory-db: integrity ok" "$PYM_TMP/memory-db.preload.out" '^ok$'
expect "memory-db-align8: integrity ok" "$PYM_TMP/memory-db-align8.preload.out" '^ok$'
expect "memory-db-bigcache: sorted" "$PYM_TMP/memory-db-bigcache.preload.out" '^big-sort|100000|'

finish
