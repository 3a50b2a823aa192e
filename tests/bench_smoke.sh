#!/bin/sh
# bench_smoke.sh -- `make bench`'s machinery end to end, in quick mode
# (bench/report.py --quick: small sizes, 0.01 s per benchmark, one repetition),
# in well under a minute (~20 s on 2 cores).  The figures mean nothing; what
# is checked is that every piece works:
#   * report.py runs pymalloc-bench under glibc, jemalloc, mimalloc, tcmalloc
#     and pymalloc and exits 0, and each run's malloc really came from the
#     allocator named;
#   * the table has a row for every benchmark the binary lists, with a
#     positive figure in each allocator's column (a peer's says n/a only
#     when configure did not find it), the best peer, pym/best -- which is
#     pymalloc's time / the best peer's, recomputed here from the figures --
#     and LOSS exactly where pym/best > 1; the notes give its geometric mean,
#     the counts over 1.00 and 1.15, and the losing rows;
#   * the system-call counters: with tracepoints usable (root), glibc's
#     large/size:33554432 shows ~1 mmap and ~1 munmap per operation;
#     without, the notes say n/a;
#   * results.csv and results.json exist and parse, with the same rows and
#     the columns of the five allocators;
#   * ratios.png exists and is a PNG (when configure found gnuplot).
# SKIP (77) when configure found no google-benchmark or there is no python3.
#
# Environment (AM_TESTS_ENVIRONMENT, tests/Makefile.inc and bench/Makefile.inc):
#   PYM_LIB PYM_BUILDDIR PYM_SRCDIR PYTHON3   as for the preload tests
#   PYM_BENCH_ENABLED   yes/no: configure found google-benchmark
#   PYM_JEMALLOC PYM_MIMALLOC PYM_TCMALLOC
#                       the peers' libraries found by configure, or empty
#   GNUPLOT             gnuplot found by configure, or empty
. "$(dirname "$0")/preload_common.sh"

case "${PYM_BENCH_ENABLED:-}" in
    no) skip "configure found no google-benchmark (install Debian's libbenchmark-dev, re-run configure)" ;;
esac
bench=$PYM_BUILDDIR/bench/pymalloc-bench
if [ -z "${PYM_BENCH_ENABLED:-}" ] && [ ! -x "$bench" ]; then
    skip "$bench not built (PYM_BENCH_ENABLED unset: not run by make check?)"
fi
if [ -z "${PYTHON3:-}" ] && [ -x /usr/bin/python3 ]; then
    PYTHON3=/usr/bin/python3
fi
need_program PYTHON3 python3
[ -x "$bench" ] || pym_die "$bench was not built although configure found google-benchmark"
report=$PYM_SRCDIR/bench/report.py
[ -f "$report" ] || pym_die "$report not found"

# ---- the run -------------------------------------------------------------------
"$bench" --benchmark_list_tests >"$PYM_TMP/names" 2>"$PYM_TMP/names.err" ||
    pym_die "$bench --benchmark_list_tests failed: $(cat "$PYM_TMP/names.err")"
echo "$(wc -l <"$PYM_TMP/names" | tr -d ' ') benchmarks listed"

start=$(pym_now)
# ~20 s on 2 cores; the limit leaves room for a machine busy with other tests.
timeout -k 5 110 "$PYTHON3" "$report" --quick --bench "$bench" --lib "$PYM_LIB" \
    --jemalloc "${PYM_JEMALLOC:-}" --mimalloc "${PYM_MIMALLOC:-}" --tcmalloc "${PYM_TCMALLOC:-}" \
    --gnuplot "${GNUPLOT:-}" --results "$PYM_TMP/results" \
    >"$PYM_TMP/table" 2>"$PYM_TMP/report.err"
rc=$?
echo "TIME: report.py --quick took $(pym_elapsed "$start" "$(pym_now)") s"
cat "$PYM_TMP/table"
if [ "$rc" = 0 ]; then
    pass "report.py --quick exits 0"
else
    fail "report.py --quick exits 0" "$(pym_describe_rc "$rc")"
    tail -n 30 "$PYM_TMP/report.err"
fi
results=$PYM_TMP/results/latest
if [ -d "$results" ]; then
    pass "results folder $results"
else
    fail "results folder" "no $PYM_TMP/results/latest"
    finish
fi

# ---- the checks (each printed as "pass|fail<TAB>what<TAB>why") -------------------
"$PYTHON3" - "$PYM_TMP/names" "$PYM_TMP/table" "$results" "$PYM_LIB" "${PYM_JEMALLOC:-}" \
    "${PYM_MIMALLOC:-}" "${PYM_TCMALLOC:-}" "${GNUPLOT:-}" >"$PYM_TMP/checks" 2>&1 <<'CHECKS'
import csv, json, math, os, sys

names_path, table_path, results, pym_lib, jemalloc, mimalloc, tcmalloc, gnuplot = sys.argv[1:9]
peers = {"jemalloc": jemalloc, "mimalloc": mimalloc, "tcmalloc": tcmalloc}
allocators = ["glibc", "jemalloc", "mimalloc", "tcmalloc", "pymalloc"]
expected = {"glibc": True, "pymalloc": True}
expected.update({peer: bool(library) for peer, library in peers.items()})
present_peers = [a for a in allocators[:-1] if expected[a]]
syscalls = ["mmap", "munmap", "madvise", "mremap", "brk"]


def report(ok, what, why=""):
    print("%s\t%s\t%s" % ("pass" if ok else "fail", what, why))


def positive(text):
    try:
        return float(text) > 0
    except (TypeError, ValueError):
        return False


def number(text):
    try:
        return float(text.lstrip("<>"))
    except (AttributeError, TypeError, ValueError):
        return None


names = [line.strip() for line in open(names_path) if line.strip()]
try:
    document = json.load(open(os.path.join(results, "results.json")))
    report(True, "results.json parses")
except (OSError, ValueError) as error:
    report(False, "results.json parses", str(error))
    sys.exit(0)
rows = {row["name"]: row for row in document.get("rows", [])}
missing = [name for name in names if name not in rows]
report(not missing, "results.json has a row for each of the %d benchmarks" % len(names),
       "missing: " + ", ".join(missing))

bad = []
for name in names:
    row = rows.get(name, {})
    for allocator in allocators:
        value = row.get("values", {}).get(allocator)
        if expected[allocator] and not positive(value):
            bad.append("%s/%s=%r" % (name, allocator, value))
        if not expected[allocator] and value is not None:
            bad.append("%s/%s=%r (expected none)" % (name, allocator, value))
report(not bad, "results.json: a positive figure per benchmark and allocator", "; ".join(bad[:10]))

# pym/best and LOSS, recomputed from the figures: a time ratio, lower is better.
bad = []
for row in rows.values():
    values = row.get("values", {})
    if row.get("kind") == "rate":
        cost = {a: 1 / values[a] for a in allocators if positive(values.get(a))}
    else:
        cost = {a: values[a] for a in allocators if positive(values.get(a))}
    peer_costs = {a: cost[a] for a in present_peers if a in cost}
    if not peer_costs or "pymalloc" not in cost:
        continue
    best_peer = min(peer_costs, key=peer_costs.get)
    wanted = cost["pymalloc"] / peer_costs[best_peer]
    got = row.get("pym_over_best")
    if row.get("best_peer") != best_peer or got is None or abs(got - wanted) > 1e-6 * wanted:
        bad.append("%s: best_peer %r pym_over_best %r, expected %s %.6g"
                   % (row["name"], row.get("best_peer"), got, best_peer, wanted))
    if row.get("loss") != (wanted > 1.0):
        bad.append("%s: loss %r with pym/best %.4g" % (row["name"], row.get("loss"), wanted))
report(not bad, "results.json: best_peer, pym_over_best (pymalloc / best peer) and loss are right",
       "; ".join(bad[:6]))

# Each run's malloc came from the library it was meant to measure.
for allocator, library in [("pymalloc", pym_lib)] + sorted(peers.items()):
    if not library:
        continue
    providers = document.get("allocators", {}).get(allocator, {}).get("malloc_from", [])
    ok = bool(providers) and all(os.path.realpath(p) == os.path.realpath(library) for p in providers)
    report(ok, "%s runs called %s's malloc" % (allocator, allocator), "malloc came from %s" % providers)
providers = document.get("allocators", {}).get("glibc", {}).get("malloc_from", [])
report(bool(providers) and all("libc.so" in p for p in providers), "glibc runs called libc's malloc",
       "malloc came from %s" % providers)

# The printed table: a line per row, columns found by their header.
table = {}
header = None
for line in open(table_path):
    if not line.startswith("|") or line.startswith("|-"):
        continue
    cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
    if header is None:
        header = cells
    else:
        table[cells[0]] = dict(zip(header, cells))
wanted_columns = allocators + ["best peer", "pym/best", "loss"]
absent = [c for c in wanted_columns if c not in (header or [])]
report(header is not None and not absent, "table: columns of the five allocators, best peer, pym/best, loss",
       "header %r lacks %r" % (header, absent))
if header is None or absent:
    sys.exit(0)
syscall_column = next((c for c in header if c.startswith("syscalls/kop")), None)
rss_column = next((c for c in header if c.startswith("peak RSS MiB")), None)
report(syscall_column is not None and rss_column is not None, "table: peak RSS and syscalls/kop columns",
       "header %r" % header)
bad = []
for name in names:
    label = rows.get(name, {}).get("label")
    line = table.get(label)
    if line is None:
        bad.append("no line for %s (%r)" % (name, label))
        continue
    for allocator in allocators:
        cell = line[allocator]
        if expected[allocator] and not positive(cell):
            bad.append("%s: %s column says %r" % (label, allocator, cell))
        if not expected[allocator] and cell != "n/a":
            bad.append("%s: %s column says %r, not n/a" % (label, allocator, cell))
    ratio = number(line["pym/best"])
    wanted = rows[name].get("pym_over_best")
    if ratio is None or wanted is None or abs(ratio - wanted) > 0.006 * max(1.0, wanted):
        bad.append("%s: pym/best says %r, results.json %r" % (label, line["pym/best"], wanted))
    if (line["loss"] == "LOSS") != bool(rows[name].get("loss")):
        bad.append("%s: loss column %r with pym/best %r" % (label, line["loss"], wanted))
    if rss_column and len(line.get(rss_column, "").split(" / ")) != 5:
        bad.append("%s: peak RSS %r is not five figures" % (label, line.get(rss_column)))
report(not bad, "table: a line per benchmark with its allocators' figures, pym/best and LOSS",
       "; ".join(bad[:10]))
for peer in peers:
    if not expected[peer]:
        report(True, "%s not configured: its column says n/a" % peer)

notes = document.get("notes", [])
joined = "\n".join(notes)
losing = [row for row in rows.values() if row.get("loss")]
speed_rows = [row for row in rows.values() if row.get("kind") != "memory" and row.get("pym_over_best")]
over_1 = sum(1 for row in speed_rows if row["pym_over_best"] > 1.0)
over_115 = sum(1 for row in speed_rows if row["pym_over_best"] > 1.15)
mean = math.exp(sum(math.log(row["pym_over_best"]) for row in speed_rows) / len(speed_rows)) if speed_rows else 0
summary = next((n for n in notes if n.startswith("pym/best over")), "")
ok = ("geometric mean %.2f" % mean in summary or "geometric mean %.3f" % mean in summary) \
    and ("%d over 1.00" % over_1) in summary and ("%d over 1.15" % over_115) in summary
report(ok, "notes: geometric mean of pym/best, rows over 1.00 and over 1.15",
       "note %r; expected mean %.3f, %d, %d" % (summary, mean, over_1, over_115))
unlisted = [row["label"] for row in losing if "\n%s: " % row["label"] not in joined]
report(not unlisted, "notes: every LOSS row listed (%d)" % len(losing), "not listed: %s" % unlisted)

# System calls: real counts, or n/a said once.
states = {s for a in allocators if expected[a]
          for s in document.get("allocators", {}).get(a, {}).get("syscall_counters", [])}
large = rows.get("large/size:33554432", {}).get("syscalls_per_kop") or {}
if states == {"on"}:
    glibc = large.get("glibc") or {}
    ok = 500 <= (glibc.get("mmap") or 0) <= 1500 and 500 <= (glibc.get("munmap") or 0) <= 1500
    report(ok, "syscall counters on: glibc's large/size:33554432 makes ~1 mmap + 1 munmap per op",
           "per 1000 ops: %r" % glibc)
    bad = ["%s/%s" % (name, a) for name in names for a in allocators if expected[a] and
           sorted((rows[name].get("syscalls_per_kop") or {}).get(a) or {}) != sorted(syscalls)]
    report(not bad, "syscall counters on: the five counts for every benchmark and allocator", bad[:10])
else:
    count = sum(1 for n in notes if n.startswith("syscall counters: n/a"))
    report(count == 1, "syscall counters off (%s): the notes say n/a once" % sorted(states), notes[-3:])

try:
    with open(os.path.join(results, "results.csv"), newline="") as stream:
        reader = csv.DictReader(stream)
        records = list(reader)
        fields = reader.fieldnames or []
    bad = [r.get("name") for r in records
           if not all(positive(r.get(a)) for a in allocators if expected[a])]
    report(len(records) == len(rows) and not bad,
           "results.csv parses, %d rows, positive figures" % len(records),
           "rows %d (json %d), bad: %s" % (len(records), len(rows), bad[:10]))
    columns = allocators + ["best_peer", "pym_over_best", "loss"] + \
        ["peak_rss_mib_" + a for a in allocators] + ["syscalls_per_kop_" + a for a in allocators] + \
        ["%s_per_kop_%s" % (s, a) for s in syscalls for a in allocators]
    absent = [c for c in columns if c not in fields]
    report(not absent, "results.csv: columns of the five allocators, pym/best, loss, RSS, syscalls",
           "missing %s" % absent[:10])
except (OSError, csv.Error) as error:
    report(False, "results.csv parses", str(error))

png = os.path.join(results, "ratios.png")
if gnuplot:
    try:
        magic = open(png, "rb").read(8)
    except OSError as error:
        magic = b""
    report(magic == b"\x89PNG\r\n\x1a\n", "ratios.png is a PNG", "first bytes %r" % magic)
else:
    report(not os.path.exists(png), "no gnuplot configured: no ratios.png")
CHECKS
[ $? = 0 ] || { cat "$PYM_TMP/checks"; pym_die "the checking script failed"; }

tab=$(printf '\t')
while IFS="$tab" read -r outcome what why; do
    case "$outcome" in
        pass) pass "$what" ;;
        fail) fail "$what" "$why" ;;
        *) fail "checker output" "$outcome $what $why" ;;
    esac
done <"$PYM_TMP/checks"

finish
