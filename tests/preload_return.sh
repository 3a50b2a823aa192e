#!/bin/sh
# preload_return.sh -- freed memory goes back to the OS.
#
# tests/return_memory allocates 10 million small strings and 100,000 medium
# blocks (about 900 MiB of RSS), frees them all and sleeps; it is run under
# pymalloc and, for comparison, under glibc, each without and with
# malloc_trim(0) before the sleep.  What the workload added to the RSS
# (peak - start) must be gone again under pymalloc: the RSS at the end may
# exceed the start by at most 10% of that growth, with and without
# malloc_trim.  Tighter: without malloc_trim, after the program's 2-second
# sleep, the RSS must be at most its start + 10% + 1 MiB -- what the
# background scavenger (src/scavenge.c) gives back once the freed memory has
# been unused for the 1-second decay time: empty chunks, the pages of spans
# the thread's cache still pins a few blocks of, the descriptors of the
# thousands of chunks and the page map that described them.  The check is
# not timed (the sleep is the program's).  glibc's figures are printed, not
# asserted (without malloc_trim it keeps nearly all of it: its heap cannot
# shrink below the highest block still in use, and free chunks stay
# mapped).
. "$(dirname "$0")/preload_common.sh"

RETURN_PROGRAM=$PYM_BUILDDIR/tests/return_memory
[ -x "$RETURN_PROGRAM" ] || pym_die "$RETURN_PROGRAM not built"

# field NAME FILE: the value of NAME=... in the program's output line.
field() {
    sed -n "s/.*\\b$1=\\([0-9-]*\\).*/\\1/p" "$2"
}

for mode in free trim; do
    arg=
    [ "$mode" = trim ] && arg=trim
    for allocator in glibc pymalloc; do
        out=$PYM_TMP/$allocator-$mode
        if [ "$allocator" = pymalloc ]; then
            run_preload "$allocator-$mode" "$RETURN_PROGRAM" $arg
            rc=$?
        else
            pym_run "$out" plain "$RETURN_PROGRAM" $arg
            rc=$(cat "$out.rc")
        fi
        if [ "$rc" -ne 0 ]; then
            fail "$allocator, $mode: the program ran" "exit $(pym_describe_rc "$rc")"
            pym_show_stderr "$out.err" "$allocator"
            continue
        fi
        start=$(field start "$out.out"); peak=$(field peak "$out.out")
        freed=$(field freed "$out.out"); end=$(field end "$out.out")
        growth=$((peak - start)); kept=$((end - start))
        percent=$(awk -v k="$kept" -v g="$growth" 'BEGIN { printf "%.1f", (g > 0) ? 100 * k / g : 0 }')
        echo "$allocator, $mode: RSS start $start KiB, peak $peak KiB, after free $freed KiB, after sleep $end KiB: keeps $kept KiB = $percent% of the growth"
        if [ "$allocator" = pymalloc ]; then
            if [ "$growth" -lt 500000 ]; then
                fail "pymalloc, $mode: the workload grew the RSS by at least 500 MiB" "only $growth KiB"
            elif [ $((kept * 10)) -le "$growth" ]; then
                pass "pymalloc, $mode: RSS back within 10% of the growth ($percent%)"
            else
                fail "pymalloc, $mode: RSS back within 10% of the growth" "kept $kept of $growth KiB ($percent%)"
            fi
            bound=$((start + start / 10 + 1024))
            if [ "$end" -le "$bound" ]; then
                pass "pymalloc, $mode: RSS after the sleep $end KiB <= start + 10% + 1 MiB ($bound KiB)"
            else
                fail "pymalloc, $mode: RSS after the sleep <= start + 10% + 1 MiB" "$end KiB > $bound KiB"
            fi
        fi
    done
done
finish
