#!/bin/sh
# oom_ulimit.sh -- out of memory for real: tests/faults/oom_ulimit_prog runs
# with libpymalloc.so preloaded under `ulimit -v` (RLIMIT_AS: mmap and
# mremap fail with ENOMEM once the address space is used up).  The program
# allocates until NULL, checks errno and that every API fails cleanly, frees
# half and allocates again, frees everything and allocates big blocks again
# (see its header).  The limit is the program's VmSize after start-up plus
# OOM_ULIMIT_HEADROOM_MIB (default 96).
. "$(dirname "$0")/../preload_common.sh"

prog=$PYM_BUILDDIR/tests/faults/oom_ulimit_prog
[ -x "$prog" ] || pym_die "$prog not built (make check builds it)"
headroom_mib=${OOM_ULIMIT_HEADROOM_MIB:-96}

base_kib=$(LD_PRELOAD=$PYM_LIB "$prog" --vmsize) || pym_die "$prog --vmsize failed"
case $base_kib in
    ''|*[!0-9]*) pym_die "$prog --vmsize printed '$base_kib'" ;;
esac
limit_kib=$((base_kib + headroom_mib * 1024))
echo "oom_ulimit: VmSize after start-up $base_kib KiB; running under ulimit -v $limit_kib"

out=$PYM_BUILDDIR/tests/faults/oom_ulimit.out
(
    ulimit -v "$limit_kib" || exit 99
    LD_PRELOAD=$PYM_LIB exec timeout "$PYM_TIMEOUT" "$prog"
) >"$out" 2>&1
status=$?
cat "$out"
case $status in
    0) pass "allocation under ulimit -v: NULL with ENOMEM, nothing crashes, memory comes back" ;;
    99) skip "ulimit -v is not supported by this shell" ;;
    124) fail "under ulimit -v" "timed out after $PYM_TIMEOUT s" ;;
    *) if [ $status -gt 128 ]; then
           fail "under ulimit -v" "killed by signal $((status - 128))"
       else
           fail "under ulimit -v" "exit status $status"
       fi ;;
esac
finish
