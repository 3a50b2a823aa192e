#!/bin/sh
# example_gc_tour.sh -- examples/gc_tour (the README's tour of Python's
# memory model in C) prints exactly examples/gc_tour.out and exits 0, also
# in debug mode (PYMALLOC_DEBUG=1: correct use of the object API raises no
# report and changes nothing).
# Its output is deterministic by design (no addresses, no timings), so any
# difference is a change in the collector's behaviour or in the example:
# the diff is printed.  Regenerate the .out file only after reading the new
# output critically.
set -u
: "${PYM_BUILDDIR:?PYM_BUILDDIR must point at the build tree}"
: "${PYM_SRCDIR:?PYM_SRCDIR must point at the source tree}"
program=$PYM_BUILDDIR/examples/gc_tour
expected=$PYM_SRCDIR/examples/gc_tour.out
[ -x "$program" ] || { echo "FAIL: $program not built (make examples/gc_tour)"; exit 1; }
[ -r "$expected" ] || { echo "FAIL: $expected missing"; exit 1; }

actual=$(mktemp "${TMPDIR:-/tmp}/gc_tour.XXXXXX") || exit 1
trap 'rm -f "$actual"' EXIT
unset PYMALLOC_STATS PYMALLOC_VERBOSE
LC_ALL=C
export LC_ALL

failed=0
# run NAME ENV...: run the tour with ENV, compare with the expected output.
run() {
    r_name=$1
    shift
    r_status=0
    env "$@" "$program" >"$actual" 2>&1 || r_status=$?
    if [ "$r_status" -eq 0 ]; then
        echo "PASS: $r_name: gc_tour exits 0"
    else
        echo "FAIL: $r_name: gc_tour exits $r_status"
        failed=1
    fi
    if diff -u "$expected" "$actual"; then
        echo "PASS: $r_name: output matches examples/gc_tour.out ($(wc -l <"$actual" | tr -d ' ') lines)"
    else
        echo "FAIL: $r_name: output differs from examples/gc_tour.out (diff above: - expected, + actual)"
        failed=1
    fi
}
run release PYMALLOC_DEBUG=0
run debug PYMALLOC_DEBUG=1
exit "$failed"
