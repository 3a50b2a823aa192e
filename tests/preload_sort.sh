#!/bin/sh
# preload_sort.sh -- GNU sort with and without LD_PRELOAD=libpymalloc.so on a
# ~30 MB deterministic text file: plain, -n, -u, -k2 (with --parallel=2 and
# -S 50M), and a small buffer forcing temporary files and merges.  The sorted
# outputs and their sha256 sums must be identical.
. "$(dirname "$0")/preload_common.sh"

need_program SORT sort
"$SORT" --version 2>/dev/null | grep -q 'GNU coreutils' || skip "$SORT is not GNU sort"
command -v awk >/dev/null 2>&1 || skip "awk not found"
command -v sha256sum >/dev/null 2>&1 || skip "sha256sum not found"
echo "sort: $SORT ($("$SORT" --version | head -n 1))"

# ---- the input: ~30 MB, deterministic (Park-Miller generator, exact in doubles) --
input=$PYM_TMP/input.txt
awk 'BEGIN {
    split("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima " \
          "mike november oscar papa quebec romeo sierra tango uniform victor " \
          "whiskey xray yankee zulu", words, " ")
    x = 20240601
    for (i = 0; i < 700000; i++) {
        x = (x * 16807) % 2147483647
        y = (x * 16807) % 2147483647
        n = x % 200000 - 1000                       # numbers with duplicates
        w = words[1 + y % 26] (y % 977)             # field 2: many duplicates
        if (i % 5 == 0)                             # exact duplicate lines for -u
            printf "%d %s dup\n", int(i / 5) % 4000 - 100, words[1 + int(i / 5) % 7]
        else
            printf "%d %s %08x %s-%d %.3f\n", n, w, y, words[1 + x % 26], i, (y % 100000) / 7
        x = y
    }
}' >"$input" || pym_die "could not generate the input"
lines=$(wc -l <"$input" | tr -d ' ')
bytes=$(wc -c <"$input" | tr -d ' ')
echo "input: $lines lines, $bytes bytes, sha256 $(sha256sum "$input" | cut -d' ' -f1)"
if [ "$bytes" -gt 20000000 ]; then
    pass "input is large ($bytes bytes)"
else
    fail "input is large" "only $bytes bytes"
fi

mkdir -p "$PYM_TMP/sorttmp"
fast="--parallel=2 -S 50M -T $PYM_TMP/sorttmp"

# compare_sort NAME SORT-OPTIONS...: run_both, then compare the sha256 sums and
# check that the output really is sorted by those options.
compare_sort() {
    cs_name=$1
    shift
    run_both "$cs_name" "$SORT" "$@" "$input"
    cs_sum1=$(sha256sum <"$PYM_TMP/$cs_name.plain.out" | cut -d' ' -f1)
    cs_sum2=$(sha256sum <"$PYM_TMP/$cs_name.preload.out" | cut -d' ' -f1)
    cs_lines=$(wc -l <"$PYM_TMP/$cs_name.preload.out" | tr -d ' ')
    echo "$cs_name: plain sha256 $cs_sum1, preload sha256 $cs_sum2, $cs_lines lines"
    if [ "$cs_sum1" = "$cs_sum2" ]; then
        pass "$cs_name: sha256 equal"
    else
        fail "$cs_name: sha256 equal" "plain $cs_sum1, preload $cs_sum2"
    fi
    # The order check uses the same options, without the resource ones.
    cs_keys=
    for cs_opt in "$@"; do
        case "$cs_opt" in
            --parallel=*|-S|50M|1M|-T|"$PYM_TMP"/*) ;;
            *) cs_keys="$cs_keys $cs_opt" ;;
        esac
    done
    # shellcheck disable=SC2086
    if "$SORT" -c $cs_keys "$PYM_TMP/$cs_name.preload.out" 2>"$PYM_TMP/$cs_name.check"; then
        pass "$cs_name: output sorted (sort -c$cs_keys)"
    else
        fail "$cs_name: output sorted (sort -c$cs_keys)" "$(cat "$PYM_TMP/$cs_name.check")"
    fi
    # Keep the line count only: the outputs are ~30 MB each.
    echo "$cs_lines" >"$PYM_TMP/$cs_name.lines"
    rm -f "$PYM_TMP/$cs_name.plain.out" "$PYM_TMP/$cs_name.preload.out"
}

# shellcheck disable=SC2086
{
    compare_sort sort-plain $fast
    compare_sort sort-n -n $fast
    compare_sort sort-u -u $fast
    compare_sort sort-k2 -k2 $fast
    compare_sort sort-k2-n-r -k2,2 -k1,1nr $fast
    # The compact classes (PYMALLOC_ALIGN=8; ignored by the plain run).
    PYMALLOC_ALIGN=8
    export PYMALLOC_ALIGN
    compare_sort sort-align8 -k3 $fast
    unset PYMALLOC_ALIGN
    # A 1 MiB buffer: many temporary files, then merges.
    compare_sort sort-small-buffer -S 1M -T "$PYM_TMP/sorttmp" -n
}

# Line counts: all lines kept except by -u, which removes the duplicates.
for name in sort-plain sort-n sort-k2 sort-k2-n-r sort-align8 sort-small-buffer; do
    got=$(cat "$PYM_TMP/$name.lines")
    if [ "$got" = "$lines" ]; then
        pass "$name: $lines lines kept"
    else
        fail "$name: $lines lines kept" "got $got"
    fi
done
uniq_lines=$(cat "$PYM_TMP/sort-u.lines")
if [ "$uniq_lines" -lt "$lines" ] && [ "$uniq_lines" -gt $((lines / 2)) ]; then
    pass "sort-u: duplicates removed ($lines -> $uniq_lines lines)"
else
    fail "sort-u: duplicates removed" "$lines -> $uniq_lines lines"
fi

finish
