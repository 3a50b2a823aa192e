#!/bin/sh
# real_common.sh -- sourced by the tests/real/*.test scripts (`make check-real`)
# before anything else; it sources tests/preload_common.sh (pass, fail,
# run_both, run_preload, skip, need_program, finish: see there).
#
# On top of preload_common.sh:
#   * PYM_SRCDIR defaults to the source tree holding this script, so a script
#     can also be run by hand: PYM_LIB=.../.libs/libpymalloc.so sh tests/real/X.sh
#   * the temporary directory ($PYM_TMP, removed at exit) is created in
#     /dev/shm when it is a writable tmpfs with 2 GiB free: these tests create
#     thousands of files and fsync databases, which on a VM's disk costs more
#     time than the programs' allocations, and the file system is not what
#     they test.  PYM_REAL_TMPDIR=DIR chooses another place.
#   * PYM_TIMEOUT (seconds per run_both/run_preload command) defaults to
#     PYM_REAL_TIMEOUT, else 300.
#   * real_need VAR PROGRAM PACKAGE: like need_program, and the skip message
#     names the Debian package to install.  With PYM_REAL_REQUIRE_ALL=1 (CI,
#     where tests/real/debian-packages.txt is installed) a missing program
#     is an error (exit 1), not a skip.
: "${PYM_SRCDIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
export PYM_SRCDIR

if [ -n "${PYM_REAL_TMPDIR:-}" ]; then
    TMPDIR=$PYM_REAL_TMPDIR
    export TMPDIR
elif [ -d /dev/shm ] && [ -w /dev/shm ] \
     && [ "$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print ($4 >= 2097152) ? "yes" : "no" }')" = yes ]; then
    TMPDIR=/dev/shm
    export TMPDIR
fi

. "$PYM_SRCDIR/tests/preload_common.sh"
PYM_TIMEOUT=${PYM_REAL_TIMEOUT:-300}

real_need() {
    eval "rn_value=\${$1:-}"
    [ -n "$rn_value" ] || rn_value=$(command -v "$2" 2>/dev/null || true)
    if [ -z "$rn_value" ] || ! command -v "$rn_value" >/dev/null 2>&1; then
        if [ "${PYM_REAL_REQUIRE_ALL:-0}" = 1 ]; then
            pym_die "$2 not found (Debian package $3) and PYM_REAL_REQUIRE_ALL=1"
        fi
        skip "$2 not found: install Debian's $3 (all of tests/real/debian-packages.txt) to run this test"
    fi
    eval "$1=\$rn_value"
}
