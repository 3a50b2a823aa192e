#!/bin/sh
# preload_script.sh -- the `pymalloc` wrapper script (scripts/pymalloc, made
# from scripts/pymalloc.in by make): options, exit codes, the preload.
. "$(dirname "$0")/preload_common.sh"

if [ -z "${PYTHON3:-}" ] && [ -x /usr/bin/python3 ]; then
    PYTHON3=/usr/bin/python3
fi
need_program PYTHON3 python3
wrapper=$PYM_BUILDDIR/scripts/pymalloc
[ -f "$wrapper" ] || pym_die "wrapper not built: $wrapper (run make)"
[ -x "$wrapper" ] || pym_die "wrapper not executable: $wrapper"

# wrap NAME ARGS...: run the wrapper (never with an inherited preload);
# results in $PYM_TMP/NAME.out, .err, .rc.
wrap() {
    w_name=$1
    shift
    timeout -k 5 "$PYM_TIMEOUT" "$wrapper" "$@" >"$PYM_TMP/$w_name.out" 2>"$PYM_TMP/$w_name.err" </dev/null
    echo $? >"$PYM_TMP/$w_name.rc"
}

# expect_rc NAME RC: the wrapper run NAME exited with RC.
expect_rc() {
    er_rc=$(cat "$PYM_TMP/$1.rc")
    if [ "$er_rc" = "$2" ]; then
        pass "$1: exit $2"
    else
        fail "$1: exit $2" "exit $(pym_describe_rc "$er_rc"); stderr: $(head -n 3 "$PYM_TMP/$1.err")"
    fi
}

# expect_grep NAME FILE-SUFFIX PATTERN WHAT
expect_grep() {
    if grep -q -- "$3" "$PYM_TMP/$1.$2"; then
        pass "$1: $4"
    else
        fail "$1: $4" "no '$3' in std$2: $(head -n 3 "$PYM_TMP/$1.$2")"
    fi
}

# expect_empty NAME FILE-SUFFIX WHAT: the wrapper run NAME wrote nothing to std<SUFFIX>.
expect_empty() {
    if [ -s "$PYM_TMP/$1.$2" ]; then
        fail "$1: $3" "std$2: $(head -c 200 "$PYM_TMP/$1.$2")"
    else
        pass "$1: $3"
    fi
}

# ---- --stats ---------------------------------------------------------------------
wrap stats --lib="$PYM_LIB" --stats "$PYTHON3" -c 'print(1)'
expect_rc stats 0
if [ "$(cat "$PYM_TMP/stats.out")" = 1 ]; then
    pass "stats: stdout is \"1\""
else
    fail "stats: stdout is \"1\"" "stdout: $(head -c 200 "$PYM_TMP/stats.out")"
fi
expect_grep stats err '^pymalloc statistics (alignment 16, pid [0-9]*)$' "statistics title on stderr"
expect_grep stats err 'block size' "table header on stderr"
expect_grep stats err '^# arenas (256 KiB) mapped now  *[0-9]' "arena line on stderr"
tables=$(grep -c '^pymalloc statistics' "$PYM_TMP/stats.err")
if [ "$tables" = 1 ]; then
    pass "stats: exactly one table (one process)"
else
    fail "stats: exactly one table (one process)" "$tables tables"
fi

wrap align8 --lib="$PYM_LIB" --stats --align=8 "$PYTHON3" -c 'print(2)'
expect_rc align8 0
expect_grep align8 out '^2$' "stdout is \"2\""
expect_grep align8 err '^pymalloc statistics (alignment 8, ' "--align=8 reaches the library"

wrap align16 --lib="$PYM_LIB" --align=16 --stats -- "$PYTHON3" -c 'print(3)'
expect_rc align16 0
expect_grep align16 out '^3$' "stdout is \"3\" (after --)"
expect_grep align16 err '^pymalloc statistics (alignment 16, ' "--align=16 reaches the library"

# Without --stats, nothing on stderr.
wrap nostats --lib="$PYM_LIB" "$PYTHON3" -c 'print(sum(range(100000)))'
expect_rc nostats 0
expect_grep nostats out '^4999950000$' "program output"
expect_empty nostats err "nothing on stderr"

# ---- the environment the command gets ----------------------------------------------
# shellcheck disable=SC2016
wrap env --lib="$PYM_LIB" --verbose sh -c 'echo "LD_PRELOAD=$LD_PRELOAD"; echo "VERBOSE=$PYMALLOC_VERBOSE"'
expect_rc env 0
expect_grep env out "^LD_PRELOAD=$PYM_LIB\$" "LD_PRELOAD is the --lib library"
expect_grep env out '^VERBOSE=1$' "--verbose sets PYMALLOC_VERBOSE=1"

# (env, not an assignment before a shell function, which may outlive the call)
# shellcheck disable=SC2016
timeout -k 5 "$PYM_TIMEOUT" env LD_PRELOAD="$PYM_LIB" "$wrapper" --lib="$PYM_LIB" \
    sh -c 'echo "LD_PRELOAD=$LD_PRELOAD"' >"$PYM_TMP/env-keep.out" 2>"$PYM_TMP/env-keep.err" </dev/null
echo $? >"$PYM_TMP/env-keep.rc"
expect_rc env-keep 0
expect_grep env-keep out "^LD_PRELOAD=$PYM_LIB $PYM_LIB\$" "an existing LD_PRELOAD is kept after the library"

# The command's exit status comes through (exec).
wrap status --lib="$PYM_LIB" sh -c 'exit 3'
expect_rc status 3

# ---- usage errors ------------------------------------------------------------------
wrap help --help
expect_rc help 0
expect_grep help out '^usage: pymalloc' "usage on stdout"
wrap help-short -h
expect_rc help-short 0

wrap unknown --lib="$PYM_LIB" --frobnicate "$PYTHON3" -c 'print(1)'
expect_rc unknown 2
expect_grep unknown err "unknown option '--frobnicate'" "message names the option"
expect_empty unknown out "command not run"

wrap align7 --lib="$PYM_LIB" --align=7 "$PYTHON3" -c 'print(1)'
expect_rc align7 2
expect_grep align7 err '--align' "message names --align"
expect_empty align7 out "command not run"

wrap nocommand --lib="$PYM_LIB"
expect_rc nocommand 2
expect_grep nocommand err 'usage' "usage on stderr"
wrap nocommand-stats --lib="$PYM_LIB" --stats
expect_rc nocommand-stats 2

wrap nolib --lib="$PYM_TMP/no-such-lib.so" "$PYTHON3" -c 'print(1)'
expect_rc nolib 2
expect_grep nolib err 'library not found' "message says the library is missing"

finish
