#!/bin/sh
# preload_python.sh -- CPython with and without LD_PRELOAD=libpymalloc.so:
# tests/workload.py (also with PYTHONMALLOC=malloc, so that every object goes
# through malloc instead of CPython's own small-object allocator), one-liners
# exercising re, json and hashlib, fork and subprocess children that allocate,
# and python3 -X dev / PYTHONMALLOC=malloc_debug under the preload.
. "$(dirname "$0")/preload_common.sh"

if [ -z "${PYTHON3:-}" ] && [ -x /usr/bin/python3 ]; then
    PYTHON3=/usr/bin/python3
fi
need_program PYTHON3 python3
workload=$PYM_SRCDIR/tests/workload.py
[ -r "$workload" ] || workload=$(dirname "$0")/workload.py
[ -r "$workload" ] || pym_die "tests/workload.py not found (set PYM_SRCDIR)"
echo "python: $PYTHON3 ($("$PYTHON3" -c 'import sys; print(sys.version.split()[0])'))"
# The output must not depend on the hash seed; vary it to prove that.
unset PYTHONHASHSEED PYTHONMALLOC PYTHONDEVMODE PYTHONSTARTUP

# ---- the workload --------------------------------------------------------------
run_both workload "$PYTHON3" "$workload" 1
run_both workload-pythonmalloc-malloc env PYTHONMALLOC=malloc "$PYTHON3" "$workload" 0.5
run_both workload-align8 env PYTHONMALLOC=malloc PYMALLOC_ALIGN=8 "$PYTHON3" "$workload" 0.3
# A workload that does not print what it should is no comparison at all.
if grep -q '^finalized: \([0-9]*\) of \1$' "$PYM_TMP/workload.preload.out" \
   && grep -q '^json main: equal=True' "$PYM_TMP/workload.preload.out" \
   && [ "$(grep -c '^thread [0-3]: churn' "$PYM_TMP/workload.preload.out")" = 4 ]; then
    pass "workload output complete (4 threads, all cycles finalized, json equal)"
else
    fail "workload output complete" "unexpected output: $(head -c 400 "$PYM_TMP/workload.preload.out")"
fi

# ---- one-liners ----------------------------------------------------------------
run_both re "$PYTHON3" -c '
import re, zlib
text = " ".join("word%d=%s;" % (i, "ab" * (i % 13)) for i in range(100000))
found = re.findall(r"word(\d+)=((?:ab)*);", text)
subbed = re.sub(r"(ab)+", lambda m: str(len(m.group(0))), text)
pats = [re.compile("x%d(y+)z" % i) for i in range(300)]
hits = sum(1 for i, p in enumerate(pats) if p.search("aa x%d yyy z x%dyyz" % (i, i)))
print(len(found), sum(len(b) for _, b in found), zlib.crc32(subbed.encode()), hits)
print(re.split(r"[;= ]+", text[:200]))
'

run_both json "$PYTHON3" -c '
import json, hashlib
doc = [{"k%d" % i: [i, str(i) * (i % 5), {"f": i / 3, "t": [True, None]}]} for i in range(60000)]
for _ in range(3):
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    doc = json.loads(text)
print(len(text), hashlib.sha256(text.encode()).hexdigest())
print(json.dumps(doc[12345], indent=2, sort_keys=True))
'

run_both hashlib "$PYTHON3" -c '
import hashlib
total = hashlib.sha256()
for i in range(20000):
    data = (b"%d:" % i) * (1 + i % 300)
    for name in ("md5", "sha1", "sha256", "sha512", "blake2b", "sha3_256"):
        h = hashlib.new(name, data)
        total.update(h.digest())
print(total.hexdigest())
print(hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 20000).hex())
print(hashlib.blake2s(b"x" * 10000000).hexdigest())
'

# A forked child (os.fork) that allocates, while the parent's threads
# allocate too: two run sqlite3 queries, which release the GIL, so they are
# inside malloc/free while the main thread forks; one churns Python objects.
# (The children use no sqlite: its own mutexes are not fork-safe.)
run_both fork-threads "$PYTHON3" -c '
import os, sqlite3, threading, zlib
stop = threading.Event()
QUERY = ("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000) "
         "SELECT count(*), sum(length(s)) FROM (SELECT printf(?, i * 2654435761 % 1000003, i) || "
         "substr(hex(zeroblob(i % 40)), 1, i % 70) AS s FROM c ORDER BY s DESC)")
def sql_churn():
    con = sqlite3.connect(":memory:")
    while not stop.is_set():
        con.execute(QUERY, ("%x-%d",)).fetchall()
    con.close()
def py_churn(seed):
    while not stop.is_set():
        junk = [{"k": str(i + seed), "v": [i] * (i % 20)} for i in range(2000)]
        del junk
threads = [threading.Thread(target=sql_churn) for _ in range(2)]
threads.append(threading.Thread(target=py_churn, args=(1,)))
for t in threads:
    t.start()
results = []
for round in range(24):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        data = [str(i) * (1 + (i + round) % 50) for i in range(20000)]
        d = {s[:8]: len(s) for s in data}
        blob = ",".join(data).encode()
        os.write(w, b"%d %d %d" % (len(d), len(blob), zlib.crc32(blob)))
        os._exit(0)
    os.close(w)
    chunks = []
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    results.append((b"".join(chunks).decode(), os.waitstatus_to_exitcode(status)))
stop.set()
for t in threads:
    t.join()
print(sqlite3.connect(":memory:").execute(QUERY, ("%x-%d",)).fetchone())
for line in results:
    print(*line)
'

run_both multiprocessing "$PYTHON3" -c '
import multiprocessing as mp, zlib
def work(n):
    data = [(i, str(i) * (i % 9), {i: [i] * (i % 4)}) for i in range(n)]
    return n, zlib.crc32(repr(data).encode())
if __name__ == "__main__":
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:
        for n, crc in pool.map(work, [1000 * k for k in range(1, 17)]):
            print(n, crc)
'

# subprocess: the children (python3 and sort) inherit LD_PRELOAD in the
# preloaded run.
run_both subprocess "$PYTHON3" -c '
import subprocess, sys
out = subprocess.run([sys.executable, "-c",
    "print(sum(len(str(i) * 3) for i in range(300000)))"],
    capture_output=True, text=True, check=True).stdout
print(out.strip())
lines = "".join("%d line %d\n" % ((i * 7919) % 10007, i) for i in range(30000))
res = subprocess.run(["sort", "-n"], input=lines, capture_output=True, text=True, check=True)
print(len(res.stdout), res.stdout.splitlines()[:3], res.stdout.splitlines()[-1])
'

# ---- python3 -X dev (debug hooks on the allocators, faulthandler) -------------
cat >"$PYM_TMP/small.py" <<'EOF'
import array, collections, gc, warnings
warnings.simplefilter("error")          # any warning in dev mode fails the run
d = collections.defaultdict(list)
for i in range(200000):
    d[i % 1000].append(str(i))
big = bytearray(1 << 22)
for i in range(0, len(big), 4096):
    big[i] = i % 251
a = array.array("q", range(100000))
cyc = []
for i in range(10000):
    x = [i]; x.append(x); cyc.append(x)
del cyc
gc.collect()
print(len(d), sum(len(v) for v in d.values()), sum(big), sum(a))
EOF
run_both dev-mode "$PYTHON3" -X dev "$PYM_TMP/small.py"
run_both malloc-debug env PYTHONMALLOC=malloc_debug "$PYTHON3" -X dev "$PYM_TMP/small.py"
# Dev mode reports memory errors (debug hooks) and warnings on stderr.
for run in dev-mode malloc-debug; do
    if [ -s "$PYM_TMP/$run.preload.err" ]; then
        fail "$run: no stderr under the preload" "$(head -n 10 "$PYM_TMP/$run.preload.err")"
    else
        pass "$run: no stderr under the preload"
    fi
done

finish
