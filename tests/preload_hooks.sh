#!/bin/sh
# preload_hooks.sh -- the example tracing tool (examples/alloc_sites.c) on a
# real program: python3 preloaded with libpymalloc.so and the tool.
#
# The program's output must be the same as without them, and at exit the
# tool must print its table: sites, allocation counts and bytes, with the
# top site inside python3 or libpython (the interpreter's own allocations,
# PYTHONMALLOC=malloc sends them all to malloc), and a total of at least
# 100,000 allocations for a script that builds 100,000 objects.
. "$(dirname "$0")/preload_common.sh"
need_program PYTHON3 python3

SITES_LIB=$PYM_BUILDDIR/examples/.libs/libpymalloc-sites.so
[ -f "$SITES_LIB" ] || pym_die "$SITES_LIB not built"

SCRIPT='d = {i: str(i) * 2 for i in range(100000)}; print(len(d), sum(len(v) for v in d.values()))'
expected=$(timeout -k 5 "$PYM_TIMEOUT" "$PYTHON3" -c "$SCRIPT")
timeout -k 5 "$PYM_TIMEOUT" env PYTHONMALLOC=malloc LD_PRELOAD="$PYM_LIB $SITES_LIB" \
    "$PYTHON3" -c "$SCRIPT" >"$PYM_TMP/out" 2>"$PYM_TMP/err"
rc=$?
if [ "$rc" -eq 0 ] && [ "$(cat "$PYM_TMP/out")" = "$expected" ]; then
    pass "python3 under the tool prints what it prints without it ($expected)"
else
    fail "python3 under the tool prints what it prints without it" "exit $(pym_describe_rc "$rc"), output $(cat "$PYM_TMP/out")"
fi
cat "$PYM_TMP/err"
header=$(grep '^pymalloc allocation sites:' "$PYM_TMP/err")
allocations=$(echo "$header" | sed -n 's/.* sites, \([0-9]*\) allocations.*/\1/p')
if [ -n "$allocations" ] && [ "$allocations" -ge 100000 ]; then
    pass "the tool counted $allocations allocations"
else
    fail "the tool counted at least 100,000 allocations" "header: ${header:-none}"
fi
first_row=$(sed -n '/^ *bytes *allocations *site$/{n;p;}' "$PYM_TMP/err")
if echo "$first_row" | grep -Eq '^ *[0-9]+ +[0-9]+ +.*(python|libpython)'; then
    pass "the top site is in the interpreter: $first_row"
else
    fail "the top site is in the interpreter" "first row: ${first_row:-none}"
fi
finish
