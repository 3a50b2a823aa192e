#!/bin/sh
# preload_cxx.sh -- tests/cxx_containers (a C++ workload over the standard
# containers: new/delete through malloc/free) with and without
# LD_PRELOAD=libpymalloc.so.  Interface: `cxx_containers [scale]` prints a
# deterministic summary on stdout and exits 0.
. "$(dirname "$0")/preload_common.sh"

program=$PYM_BUILDDIR/tests/cxx_containers
[ -f "$program" ] || pym_die "$program not built (make tests/cxx_containers)"
[ -x "$program" ] || pym_die "$program is not executable"

run_both cxx-containers "$program" 2
run_both cxx-containers-align8 env PYMALLOC_ALIGN=8 "$program" 1

for name in cxx-containers cxx-containers-align8; do
    rc=$(cat "$PYM_TMP/$name.preload.rc")
    if [ "$rc" = 0 ]; then
        pass "$name: exit 0"
    else
        fail "$name: exit 0" "exit $(pym_describe_rc "$rc")"
    fi
    if [ -s "$PYM_TMP/$name.preload.out" ]; then
        pass "$name: prints a summary ($(wc -l <"$PYM_TMP/$name.preload.out" | tr -d ' ') lines)"
    else
        fail "$name: prints a summary" "stdout is empty"
    fi
done

finish
