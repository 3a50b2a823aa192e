#!/bin/sh
# bench_smoke.sh -- `make bench`'s machinery end to end, in quick mode
# (bench/report.py --quick: small sizes, 0.01 s per benchmark, one repetition),
# in well under a minute.  The figures mean nothing; what is checked is that
# every piece works:
#   * report.py runs pymalloc-bench under glibc, jemalloc and pymalloc and
#     exits 0, and each run's malloc really came from the allocator named;
#   * the table has a row for every benchmark the binary lists, with a
#     positive figure in each allocator's column (jemalloc's says n/a only
#     when configure found no jemalloc);
#   * results.csv and results.json exist and parse, with the same rows;
#   * ratios.png exists and is a PNG (when configure found gnuplot).
# SKIP (77) when configure found no google-benchmark or there is no python3.
#
# Environment (AM_TESTS_ENVIRONMENT, tests/Makefile.inc and bench/Makefile.inc):
#   PYM_LIB PYM_BUILDDIR PYM_SRCDIR PYTHON3   as for the preload tests
#   PYM_BENCH_ENABLED   yes/no: configure found google-benchmark
#   PYM_JEMALLOC        libjemalloc.so.2 found by configure, or empty
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
timeout -k 5 55 "$PYTHON3" "$report" --quick --bench "$bench" --lib "$PYM_LIB" \
    --jemalloc "${PYM_JEMALLOC:-}" --gnuplot "${GNUPLOT:-}" --results "$PYM_TMP/results" \
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
    "${GNUPLOT:-}" >"$PYM_TMP/checks" 2>&1 <<'CHECKS'
import csv, json, os, sys

names_path, table_path, results, pym_lib, jemalloc, gnuplot = sys.argv[1:7]
allocators = ["glibc", "jemalloc", "pymalloc"]
expected = {"glibc": True, "jemalloc": bool(jemalloc), "pymalloc": True}


def report(ok, what, why=""):
    print("%s\t%s\t%s" % ("pass" if ok else "fail", what, why))


def positive(text):
    try:
        return float(text) > 0
    except (TypeError, ValueError):
        return False


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

# Each run's malloc came from the library it was meant to measure.
for allocator, library in (("pymalloc", pym_lib), ("jemalloc", jemalloc)):
    if not library:
        continue
    providers = document.get("allocators", {}).get(allocator, {}).get("malloc_from", [])
    ok = bool(providers) and all(os.path.realpath(p) == os.path.realpath(library) for p in providers)
    report(ok, "%s runs called %s's malloc" % (allocator, allocator), "malloc came from %s" % providers)
providers = document.get("allocators", {}).get("glibc", {}).get("malloc_from", [])
report(bool(providers) and all("libc.so" in p for p in providers), "glibc runs called libc's malloc",
       "malloc came from %s" % providers)

# The printed table: a line per row, label first, three allocator cells.
table = {}
for line in open(table_path):
    cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
    if len(cells) >= 5:
        table[cells[0]] = cells
bad = []
for name in names:
    label = rows.get(name, {}).get("label")
    cells = table.get(label)
    if cells is None:
        bad.append("no line for %s (%r)" % (name, label))
        continue
    for index, allocator in enumerate(allocators):
        cell = cells[2 + index]
        if expected[allocator] and not positive(cell):
            bad.append("%s: %s column says %r" % (label, allocator, cell))
        if not expected[allocator] and cell != "n/a":
            bad.append("%s: %s column says %r, not n/a" % (label, allocator, cell))
report(not bad, "table: a line per benchmark with its allocators' figures", "; ".join(bad[:10]))
if not jemalloc:
    report(True, "jemalloc not configured: its column says n/a")

try:
    with open(os.path.join(results, "results.csv"), newline="") as stream:
        records = list(csv.DictReader(stream))
    bad = [r.get("name") for r in records
           if not all(positive(r.get(a)) for a in allocators if expected[a])]
    report(len(records) == len(rows) and not bad,
           "results.csv parses, %d rows, positive figures" % len(records),
           "rows %d (json %d), bad: %s" % (len(records), len(rows), bad[:10]))
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
