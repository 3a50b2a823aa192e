#!/bin/sh
# python_regrtest.sh -- CPython running part of its own regression suite
# (Debian's libpython3.11-testsuite, /usr/lib/python3.11/test) with and
# without LD_PRELOAD=libpymalloc.so.  CPython's allocator is the design
# pymalloc comes from and its interpreter is the workload it was made for.
#
# Two configurations, each run plainly and preloaded:
#   malloc  PYTHONMALLOC=malloc: every object of the interpreter is a malloc
#           block (pymalloc's small classes under the preload); the core
#           tests, more allocation-heavy ones (bytes, pickle, collections,
#           itertools, ctypes, mmap, ...) and test_bigmem at -M 2G (the
#           smallest limit regrtest accepts: its 2 GiB tests run for real and
#           go through pymalloc's directly mapped blocks and mremap).
#   stock   CPython's own obmalloc below 512 bytes, malloc above: the core
#           tests only, test_bigmem in its dry-run sizes.
# Each run is `python3 -m test -j2 --timeout 300 --junit-xml ...` (two worker
# processes, which inherit the preload); tests/real/regrtest_verdicts.py
# reduces it to one verdict per test file and per test case, and the plain
# and preloaded verdicts must be identical, as must regrtest's exit status.
# Tests that fail or skip on this machine without pymalloc are listed (from
# the plain run) but are not a failure: the requirement is "no difference".
# Runs take about 35 s each (test_bigmem -M 2G dominates).
: "${PYM_SRCDIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$(dirname "$0")/../preload_common.sh"
PYM_TIMEOUT=${PYM_REAL_TIMEOUT:-420}

# The interpreter whose test package is installed (Debian 12: python3.11).
py=
for candidate in "${PYTHON3:-}" /usr/bin/python3.11 /usr/bin/python3; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    if "$candidate" -c 'import test.libregrtest, test.test_list, test.test_bigmem' 2>/dev/null; then
        py=$candidate
        break
    fi
done
[ -n "$py" ] || skip "CPython's regression suite is not installed (Debian: apt-get install libpython3.11-testsuite)"
verdicts=$PYM_SRCDIR/tests/real/regrtest_verdicts.py
[ -r "$verdicts" ] || pym_die "$verdicts not found (set PYM_SRCDIR)"
echo "python: $py ($("$py" -c 'import sys; print(sys.version.split()[0])'))," \
     "test package: $("$py" -c 'import os, test; print(os.path.dirname(test.__file__))')"
unset PYTHONMALLOC PYTHONDEVMODE PYTHONSTARTUP PYTHONPATH PYTHONHOME PYTHONHASHSEED

core_tests="test_list test_dict test_set test_unicode test_gc test_weakref test_threading test_json test_re test_bigmem"
more_tests="test_bytes test_collections test_deque test_sort test_pickle test_tuple test_array test_memoryview
            test_itertools test_ordered_dict test_zlib test_mmap test_ctypes test_functools test_hashlib
            test_thread test_copy test_marshal"

# regrtest_both NAME ENV-ASSIGNMENTS MEMLIMIT TESTS: run the suite plainly and
# preloaded, compare, report.  ENV-ASSIGNMENTS is a word list for env(1)
# (may be empty); MEMLIMIT is a -M value or "none".
regrtest_both() {
    rb_name=$1 rb_env=$2 rb_mem=$3 rb_tests=$4
    rb_memopt=
    [ "$rb_mem" = none ] || rb_memopt="-M $rb_mem"
    for rb_mode in plain preload; do
        rb_prefix=$PYM_TMP/$rb_name.$rb_mode
        mkdir -p "$rb_prefix.tmp"
        # shellcheck disable=SC2086  # word lists on purpose
        pym_run "$rb_prefix" "$rb_mode" env TMPDIR="$rb_prefix.tmp" $rb_env \
            "$py" -m test -j2 --timeout 300 $rb_memopt --junit-xml "$rb_prefix.xml" $rb_tests
        "$py" "$verdicts" "$rb_prefix.out" "$rb_prefix.xml" "$rb_prefix.verdicts" >"$rb_prefix.summary" \
            || pym_die "regrtest_verdicts.py failed on $rb_prefix"
        rm -rf "$rb_prefix.tmp"
    done
    rb_plain=$PYM_TMP/$rb_name.plain
    rb_preload=$PYM_TMP/$rb_name.preload
    rb_rc1=$(cat "$rb_plain.rc") rb_rc2=$(cat "$rb_preload.rc")
    echo "TIME: $rb_name: plain $(cat "$rb_plain.time")s, preload $(cat "$rb_preload.time")s"
    echo "--- $rb_name, plain run (${rb_env:-stock allocator settings}, -M $rb_mem): exit $(pym_describe_rc "$rb_rc1")"
    sed 's/^/    /' "$rb_plain.summary"

    if pym_preload_loaded "$rb_preload.err"; then
        pass "$rb_name: the library was preloaded"
    else
        fail "$rb_name: the library was preloaded" "$(grep 'cannot be preloaded' "$rb_preload.err" | head -n 1)"
    fi
    if [ "$rb_rc1" = "$rb_rc2" ] && [ "$rb_rc1" -lt 124 ]; then
        pass "$rb_name: same regrtest exit status (exit $rb_rc1)"
    else
        fail "$rb_name: same regrtest exit status" "plain $(pym_describe_rc "$rb_rc1"), preload $(pym_describe_rc "$rb_rc2")"
        pym_show_stderr "$rb_preload.err" "LD_PRELOAD=$PYM_LIB"
        echo "--- last lines of the preloaded run's output:"
        tail -n 30 "$rb_preload.out"
    fi
    if cmp -s "$rb_plain.verdicts" "$rb_preload.verdicts"; then
        pass "$rb_name: same verdict for every test file and test case ($(grep -c '^case ' "$rb_plain.verdicts") cases)"
    else
        fail "$rb_name: same verdict for every test file and test case" "verdicts differ"
        echo "--- verdicts that differ (< plain, > preload), first 40:"
        diff "$rb_plain.verdicts" "$rb_preload.verdicts" | grep '^[<>]' | head -n 40
        echo "--- preloaded run summary:"
        sed 's/^/    /' "$rb_preload.summary"
        # The tracebacks of what failed only under the preload.
        grep -n -A 25 -E '^(FAIL|ERROR):|Fatal Python error|crashed|Traceback' "$rb_preload.out" | head -n 120
    fi
    # Every requested file ran (in both runs) and produced test cases.
    rb_missing=
    for rb_t in $rb_tests; do
        for rb_mode in plain preload; do
            grep -q "^file $rb_t " "$PYM_TMP/$rb_name.$rb_mode.verdicts" || rb_missing="$rb_missing $rb_t($rb_mode)"
            # (test_ctypes runs the package ctypes.test.)
            rb_cases="^case test\.$rb_t\."
            [ "$rb_t" = test_ctypes ] && rb_cases='^case ctypes\.test\.'
            grep -q "$rb_cases" "$PYM_TMP/$rb_name.$rb_mode.verdicts" || rb_missing="$rb_missing $rb_t($rb_mode:no-cases)"
        done
    done
    if [ -z "$rb_missing" ]; then
        pass "$rb_name: every test file ran ($(echo $rb_tests | wc -w) files)"
    else
        fail "$rb_name: every test file ran" "missing:$rb_missing"
    fi
}

# ---- the preload reaches regrtest's worker processes ------------------------------
run_preload workers "$py" -c '
import subprocess, sys
child = "import sys; print(any(\"libpymalloc\" in l for l in open(\"/proc/self/maps\")))"
print(subprocess.run([sys.executable, "-c", child], capture_output=True, text=True).stdout.strip())
'
if [ "$(cat "$PYM_TMP/workers.out")" = True ]; then
    pass "a python3 child of a preloaded python3 has libpymalloc mapped"
else
    fail "a python3 child of a preloaded python3 has libpymalloc mapped" \
        "got '$(cat "$PYM_TMP/workers.out")', exit $(cat "$PYM_TMP/workers.rc")"
fi

# ---- the suites -----------------------------------------------------------------
# shellcheck disable=SC2086
regrtest_both malloc "PYTHONMALLOC=malloc" 2G "$core_tests $(echo $more_tests)"
regrtest_both stock "" none "$core_tests"

# test_bigmem at -M 2G ran its 2 GiB cases (not only skips) in the malloc runs.
bigmem_ok=$(grep -c '^case test\.test_bigmem\..* ok$' "$PYM_TMP/malloc.preload.verdicts")
if [ "$bigmem_ok" -ge 1 ]; then
    pass "test_bigmem -M 2G: $bigmem_ok big cases passed under the preload"
else
    fail "test_bigmem -M 2G: big cases passed under the preload" "none passed"
fi

finish
