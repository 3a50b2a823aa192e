#!/bin/sh
# preload_common.sh -- sourced by the tests/preload_*.sh scripts.
#
# Environment (exported by AM_TESTS_ENVIRONMENT in tests/Makefile.inc):
#   PYM_LIB       absolute path of the built .libs/libpymalloc.so (required)
#   PYM_BUILDDIR  top build directory     PYM_SRCDIR  top source directory
#   PYTHON3 SQLITE3 SORT                  programs found by configure
#   PYM_TIMEOUT   seconds allowed for one run (default 60)
#
# Helpers:
#   pass NAME / fail NAME [WHY]   count one check and log its outcome
#   check NAME CMD...             pass when CMD succeeds, fail otherwise
#   run_both NAME CMD...          run CMD plainly and with LD_PRELOAD=$PYM_LIB,
#                                 fail on any difference of stdout or exit status
#   run_preload NAME CMD...       run CMD under the preload only; output in
#                                 $PYM_TMP/NAME.out, .err, .rc
#   skip WHY                      exit 77 (a required program is missing)
#   need_program VAR DEFAULT      set VAR to a runnable program or skip
#   finish                        print "N passed, M failed" and exit 0 or 1
# Exit codes: 0 pass, 1 fail, 77 skip.

pym_script=$(basename "$0" .sh)

pym_die() {
    echo "$pym_script: ERROR: $*" >&2
    exit 1
}

skip() {
    echo "$pym_script: SKIP: $*"
    exit 77
}

# ---- the library -------------------------------------------------------------
if [ -z "${PYM_LIB:-}" ]; then
    if [ -n "${PYM_BUILDDIR:-}" ] && [ -f "$PYM_BUILDDIR/.libs/libpymalloc.so" ]; then
        PYM_LIB=$PYM_BUILDDIR/.libs/libpymalloc.so
    else
        pym_die "PYM_LIB is not set (it should name the built .libs/libpymalloc.so)"
    fi
fi
case "$PYM_LIB" in
    /*) ;;
    *) PYM_LIB=$(cd "$(dirname "$PYM_LIB")" && pwd)/$(basename "$PYM_LIB") ;;
esac
[ -f "$PYM_LIB" ] || pym_die "library not found: PYM_LIB=$PYM_LIB (build it first)"
[ -r "$PYM_LIB" ] || pym_die "library not readable: PYM_LIB=$PYM_LIB"
export PYM_LIB
: "${PYM_BUILDDIR:=$(cd "$(dirname "$PYM_LIB")/.." && pwd)}"
: "${PYM_SRCDIR:=$(cd "$(dirname "$0")/.." && pwd)}"
: "${PYM_TIMEOUT:=60}"

command -v timeout >/dev/null 2>&1 || skip "timeout (coreutils) not found"

# The plain runs must not inherit a preload or pymalloc settings.
unset LD_PRELOAD PYMALLOC_STATS PYMALLOC_ALIGN PYMALLOC_VERBOSE
# Deterministic text handling for every program.
LC_ALL=C
export LC_ALL

# ---- temporary directory -----------------------------------------------------
PYM_TMP=$(mktemp -d "${TMPDIR:-/tmp}/$pym_script.XXXXXX") || pym_die "mktemp failed"
export PYM_TMP
trap 'rm -rf "$PYM_TMP"' EXIT
trap 'exit 1' HUP INT PIPE TERM

# ---- counting ----------------------------------------------------------------
pym_passed=0
pym_failed=0

pass() {
    pym_passed=$((pym_passed + 1))
    echo "PASS: $1"
}

fail() {
    pym_failed=$((pym_failed + 1))
    echo "FAIL: $1${2:+: $2}"
}

check() {
    pym_check_name=$1
    shift
    if "$@"; then
        pass "$pym_check_name"
    else
        fail "$pym_check_name" "command failed: $*"
    fi
}

finish() {
    echo "$pym_passed passed, $pym_failed failed"
    if [ "$pym_failed" -gt 0 ] || [ "$pym_passed" -eq 0 ]; then
        exit 1
    fi
    exit 0
}

need_program() {
    # need_program VAR DEFAULT: VAR's value (or DEFAULT) must be executable.
    eval "pym_np_value=\${$1:-}"
    if [ -n "$pym_np_value" ]; then
        command -v "$pym_np_value" >/dev/null 2>&1 || skip "$2 not found ($1=$pym_np_value)"
    else
        pym_np_value=$(command -v "$2" 2>/dev/null || true)
        [ -n "$pym_np_value" ] || skip "$2 not found (not in PATH, $1 not set)"
    fi
    eval "$1=\$pym_np_value"
}

# ---- timing ------------------------------------------------------------------
pym_now() {
    # Seconds since the epoch with sub-second precision where date has %N.
    pym_now_value=$(date +%s.%N 2>/dev/null)
    case "$pym_now_value" in
        *N*|'') date +%s ;;
        *) echo "$pym_now_value" ;;
    esac
}

pym_elapsed() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'
}

# ---- running -----------------------------------------------------------------
# pym_run OUTPREFIX MODE CMD...: MODE is "plain" or "preload".  Stores
# OUTPREFIX.out, .err, .rc and .time (wall seconds).
pym_run() {
    pym_run_prefix=$1
    pym_run_mode=$2
    shift 2
    pym_run_start=$(pym_now)
    if [ "$pym_run_mode" = preload ]; then
        LD_PRELOAD=$PYM_LIB timeout -k 5 "$PYM_TIMEOUT" "$@" \
            >"$pym_run_prefix.out" 2>"$pym_run_prefix.err" </dev/null
    else
        timeout -k 5 "$PYM_TIMEOUT" "$@" \
            >"$pym_run_prefix.out" 2>"$pym_run_prefix.err" </dev/null
    fi
    echo $? >"$pym_run_prefix.rc"
    pym_run_end=$(pym_now)
    pym_elapsed "$pym_run_start" "$pym_run_end" >"$pym_run_prefix.time"
}

# Describe an exit status: "0", "124 (timed out)", "139 (signal 11)".
pym_describe_rc() {
    case "$1" in
        124) echo "124 (timed out after ${PYM_TIMEOUT}s)" ;;
        125|126|127) echo "$1 (could not run the command)" ;;
        *)
            if [ "$1" -gt 128 ]; then
                echo "$1 (killed by signal $(($1 - 128)))"
            else
                echo "$1"
            fi
            ;;
    esac
}

pym_show_stderr() {
    if [ -s "$1" ]; then
        echo "--- stderr ($2), last 20 lines:"
        tail -n 20 "$1"
    fi
}

# The dynamic loader ignores a preload it cannot load and only warns on
# stderr; the comparison would then be vacuous.
pym_preload_loaded() {
    ! grep -q "cannot be preloaded" "$1"
}

# run_preload NAME CMD...: run CMD under the preload only.  Results in
# $PYM_TMP/NAME.out, NAME.err, NAME.rc; returns CMD's exit status.
run_preload() {
    pym_rp_name=$1
    shift
    pym_run "$PYM_TMP/$pym_rp_name" preload "$@"
    pym_rp_rc=$(cat "$PYM_TMP/$pym_rp_name.rc")
    if ! pym_preload_loaded "$PYM_TMP/$pym_rp_name.err"; then
        echo "$pym_rp_name: the dynamic loader did not preload $PYM_LIB:"
        grep "cannot be preloaded" "$PYM_TMP/$pym_rp_name.err"
        return 99
    fi
    return "$pym_rp_rc"
}

# run_both NAME CMD...: run CMD without and with LD_PRELOAD=$PYM_LIB (each
# under `timeout $PYM_TIMEOUT`, stdin from /dev/null) and compare stdout and
# exit status.  A timeout, a death by signal or a command that cannot run
# also fails, even when both runs agree.  Results stay in
# $PYM_TMP/NAME.plain.* and $PYM_TMP/NAME.preload.* (out, err, rc, time).
run_both() {
    pym_rb_name=$1
    shift
    pym_rb_plain=$PYM_TMP/$pym_rb_name.plain
    pym_rb_preload=$PYM_TMP/$pym_rb_name.preload
    pym_run "$pym_rb_plain" plain "$@"
    pym_run "$pym_rb_preload" preload "$@"
    pym_rb_rc1=$(cat "$pym_rb_plain.rc")
    pym_rb_rc2=$(cat "$pym_rb_preload.rc")
    pym_rb_t1=$(cat "$pym_rb_plain.time")
    pym_rb_t2=$(cat "$pym_rb_preload.time")
    pym_rb_ratio=$(awk -v a="$pym_rb_t1" -v b="$pym_rb_t2" \
        'BEGIN { if (a > 0) printf "%.2f", b / a; else printf "n/a" }')
    pym_rb_bytes=$(wc -c <"$pym_rb_plain.out" | tr -d ' ')
    echo "TIME: $pym_rb_name: plain ${pym_rb_t1}s, preload ${pym_rb_t2}s, ratio ${pym_rb_ratio} (preload/plain); $pym_rb_bytes bytes of output"
    pym_rb_ok=1
    pym_rb_why=
    if ! pym_preload_loaded "$pym_rb_preload.err"; then
        pym_rb_ok=0
        pym_rb_why="the library was not preloaded"
        grep "cannot be preloaded" "$pym_rb_preload.err"
    fi
    if [ "$pym_rb_rc1" != "$pym_rb_rc2" ]; then
        pym_rb_ok=0
        pym_rb_why="${pym_rb_why:+$pym_rb_why; }exit status differs: plain $(pym_describe_rc "$pym_rb_rc1"), preload $(pym_describe_rc "$pym_rb_rc2")"
    fi
    for pym_rb_rc in "$pym_rb_rc1" "$pym_rb_rc2"; do
        if [ "$pym_rb_rc" -ge 124 ]; then
            pym_rb_ok=0
            pym_rb_why="${pym_rb_why:+$pym_rb_why; }abnormal exit status $(pym_describe_rc "$pym_rb_rc")"
            break
        fi
    done
    if ! cmp -s "$pym_rb_plain.out" "$pym_rb_preload.out"; then
        pym_rb_ok=0
        pym_rb_why="${pym_rb_why:+$pym_rb_why; }stdout differs"
        echo "--- diff of stdout (plain vs preload), first 40 lines:"
        diff "$pym_rb_plain.out" "$pym_rb_preload.out" | head -n 40
    fi
    if [ "$pym_rb_ok" = 1 ]; then
        pass "$pym_rb_name (exit $pym_rb_rc1)"
        return 0
    fi
    echo "command: $*"
    pym_show_stderr "$pym_rb_plain.err" plain
    pym_show_stderr "$pym_rb_preload.err" "LD_PRELOAD=$PYM_LIB"
    fail "$pym_rb_name" "$pym_rb_why"
    return 1
}
