#!/bin/sh
# tests/faults/soak.sh -- `make soak`: hours of mixed workloads on a debug
# build of pymalloc (./configure --enable-debug: internal assertions, full
# double-free scans, a heap check on every slow path).
#
# Usage: soak.sh [SECONDS]        (default: $STRESS_SECONDS, else 3600)
# Environment:
#   PYM_SRCDIR      top source directory (default: the script's ../..)
#   PYM_BUILDDIR    the main build directory (needed when it is the source
#                   tree itself: the debug build then uses a `make distdir` copy)
#   SOAK_BUILDDIR   the debug build's directory (default: ./soak-debug);
#                   configured there on first use, rebuilt every run
#   SOAK_THREADS    soak's worker threads (default 3)
#
# For SECONDS, side by side:
#   - tests/stress_threads (the C-library-only churn of `make stress`) with
#     the debug libpymalloc.so preloaded;
#   - tests/faults/soak, linked with the debug libpymalloc, which stops its
#     workers every SOAK_CHECK_EVERY seconds (default 30) and checks the
#     whole heap against its own record of every live block (patterns,
#     per-class counts of pymalloc's statistics, a forked child).
# Logs in SOAK_BUILDDIR/soak-*.log; exits 0 when both passed.
set -u
here=$(cd "$(dirname "$0")" && pwd)
srcdir=${PYM_SRCDIR:-$(cd "$here/../.." && pwd)}
seconds=${1:-${STRESS_SECONDS:-3600}}
dir=${SOAK_BUILDDIR:-$PWD/soak-debug}
threads=${SOAK_THREADS:-3}
check_every=${SOAK_CHECK_EVERY:-30}

case $seconds in ''|*[!0-9]*) echo "soak.sh: SECONDS must be a whole number, not '$seconds'" >&2; exit 2 ;; esac
mkdir -p "$dir" || exit 1
dir=$(cd "$dir" && pwd)
if [ ! -f "$dir/Makefile" ]; then
    config_src=$srcdir
    if [ -f "$srcdir/config.status" ]; then
        # Built in the source tree: autoconf allows no second build of it, so
        # the debug build gets a copy of the sources (make distdir).
        [ -n "${PYM_BUILDDIR:-}" ] || { echo "soak.sh: $srcdir is configured in place; set PYM_BUILDDIR" >&2; exit 1; }
        echo "soak.sh: copying the sources to $dir/src (the source tree is configured in place)"
        rm -rf "$dir/src"
        make -C "$PYM_BUILDDIR" distdir distdir="$dir/src" >"$dir/soak-distdir.log" 2>&1 ||
            { tail -20 "$dir/soak-distdir.log"; echo "soak.sh: make distdir failed" >&2; exit 1; }
        config_src=$dir/src
    fi
    echo "soak.sh: configuring a debug build in $dir"
    (cd "$dir" && "$config_src/configure" -q --enable-debug) || { echo "soak.sh: configure failed" >&2; exit 1; }
fi
echo "soak.sh: building the debug library and programs in $dir"
make -C "$dir" -j2 libpymalloc.la tests/stress_threads tests/faults/soak >"$dir/soak-build.log" 2>&1 ||
    { tail -30 "$dir/soak-build.log"; echo "soak.sh: build failed" >&2; exit 1; }
grep -q -- '-DPYM_DEBUG' "$dir/Makefile" || { echo "soak.sh: $dir is not a debug build (--enable-debug)" >&2; exit 1; }

lib=$dir/.libs/libpymalloc.so
echo "soak.sh: $seconds s of stress_threads (preloaded) and soak ($threads threads, checks every $check_every s)"
start=$(date +%s)
LD_PRELOAD=$lib "$dir/tests/stress_threads" --seconds "$seconds" >"$dir/soak-stress_threads.log" 2>&1 &
stress_pid=$!
"$dir/tests/faults/soak" --seconds "$seconds" --threads "$threads" --check-every "$check_every" \
    >"$dir/soak-soak.log" 2>&1
soak_status=$?
wait $stress_pid
stress_status=$?
echo "soak.sh: finished after $(( $(date +%s) - start )) s"
echo "== stress_threads (exit $stress_status)"; tail -5 "$dir/soak-stress_threads.log"
echo "== soak (exit $soak_status)"; grep -v '^soak: checkpoint' "$dir/soak-soak.log" | tail -8
grep '^soak: checkpoint' "$dir/soak-soak.log" | tail -2
[ $stress_status -eq 0 ] && [ $soak_status -eq 0 ] && { echo "soak.sh: PASS"; exit 0; }
echo "soak.sh: FAIL"
exit 1
