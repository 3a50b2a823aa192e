#!/bin/sh
# tests/faults/sanitize.sh -- the unit and integration tests built from the
# sources with a sanitizer and run (`make check-asan`, `make check-tsan-all`).
#
# Usage: sanitize.sh asan|tsan [NAME...]
#   asan: clang -fsanitize=address,undefined (UBSan aborts on the first report)
#   tsan: clang -fsanitize=thread
# NAME... runs only those programs (as listed by the script: unit_pools,
# api_realloc, tsan_pym, faults_oom, ...).
#
# Environment (the Makefile rule sets them):
#   PYM_SRCDIR      top source directory                (default: the script's ../..)
#   PYM_BUILDDIR    top build directory, for config.h   (default: .)
#   PYM_CORE_FILES  the core's .c files, relative to PYM_SRCDIR (Makefile.am's
#                   pym_core_c_files; default: src/*.c but override.c and compat.c)
#   CLANG           the compiler (default: clang)
#   SAN_OUT         where binaries and logs go          (default: tests/faults/MODE in the build dir)
#
# The sanitizer's runtime owns malloc, so nothing is preloaded or
# interposed: every program uses pymalloc through the pym_ functions,
# compiled into it from the core sources.
#   unit_*         tests/unit_*.c: internals, pym_ API already
#   api_prefixed   tests/api_prefixed.c: pym_ beside the system allocator
#   tsan_pym       tests/tsan_pym.c: cross-thread churn, no block lost
#   api_*          the malloc-level integration tests, with malloc, free, ...
#                  renamed to pym_ by tests/faults/pym_prefix.h (-include)
#   faults_*       tests/faults: oom (with the OS failure injection), regress,
#                  thread_churn and fork_storm (shortened; renamed likewise)
# Tests that cannot run this way are listed below with the reason.
#
# Prints PASS/FAIL/SKIP per program and a summary; exits 1 if any failed.
set -u
mode=${1:-}
case $mode in
asan) san_flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" ;;
tsan) san_flags="-fsanitize=thread" ;;
*) echo "usage: $0 asan|tsan [NAME...]" >&2; exit 2 ;;
esac
shift

here=$(cd "$(dirname "$0")" && pwd)
srcdir=${PYM_SRCDIR:-$(cd "$here/../.." && pwd)}
builddir=${PYM_BUILDDIR:-.}
builddir=$(cd "$builddir" && pwd)
clang=${CLANG:-clang}
out=${SAN_OUT:-$builddir/tests/faults/$mode}
core_files=${PYM_CORE_FILES:-}
if [ -z "$core_files" ]; then
    for f in "$srcdir"/src/*.c; do
        case $f in */override.c|*/compat.c) ;; *) core_files="$core_files src/${f##*/}" ;; esac
    done
fi
if ! command -v "$clang" >/dev/null 2>&1; then
    echo "sanitize.sh: $clang not found (Debian: apt-get install clang)" >&2
    exit 77
fi
mkdir -p "$out" || exit 1

config=
[ -f "$builddir/config.h" ] && config="-DHAVE_CONFIG_H -I$builddir"
cflags="-O1 -g -std=gnu11 -D_GNU_SOURCE -pthread -ftls-model=initial-exec -fno-builtin-malloc -fno-builtin-free
        -I$srcdir/include -I$srcdir/src -I$srcdir/tests -I$srcdir/tests/faults $config $san_flags"

# ---- which programs, with which arguments --------------------------------------------
# name|source|kind|arguments   (kind: core = links the core objects; fi = the core
# built with PYM_FAULT_INJECTION; prefix = core + pym_prefix.h)
programs=
add() { programs="$programs
$1"; }
for f in "$srcdir"/tests/unit_*.c; do
    n=${f##*/}; add "${n%.c}|tests/$n|core|"
done
add "api_prefixed|tests/api_prefixed.c|core|"
add "tsan_pym|tests/tsan_pym.c|core|"
# malloc-level tests that need libpymalloc's own symbols, not renamed calls:
#   api_compat   glibc's introspection functions (mallinfo2, malloc_info,
#                mallopt, ...) as libpymalloc's compat.c overrides them
# (tests/api_cxx.cc, C++ new/delete through libstdc++, is not built here.)
# Under ASan also api_fork: clang 14's ASan runtime does not make its own
# allocator safe across fork, and the child of a multi-threaded parent
# calling printf can hang inside it (2 of 200 children in one run here).
# pymalloc's fork handling is covered by api_fork in the plain build and
# under TSan, and by faults_fork_storm (below, ASan included).
# Under TSan also api_thread_exit: TSan's runtime has a background thread of
# its own, so a TSan program whose threads all call pthread_exit stays alive
# with or without pymalloc (a test program that only does that never exits
# under clang 14's TSan); the plain build and ASan run it.
if [ "$mode" = asan ]; then default_skip="api_compat api_fork"; else default_skip="api_compat api_thread_exit"; fi
skip_api=${SAN_SKIP_API-$default_skip}
for f in "$srcdir"/tests/api_*.c; do
    n=${f##*/}; n=${n%.c}
    case " $skip_api api_prefixed " in *" $n "*) continue ;; esac
    add "$n|tests/$n.c|prefix|"
done
add "faults_oom|tests/faults/oom.c|fi|"
add "faults_regress|tests/faults/regress.c|core|"
add "faults_thread_churn|tests/faults/thread_churn.c|prefix|--threads 20000 --rss-bound-mib 1024"
# fork under TSan costs ~0.5 s per child (its runtime's state is copied and reset)
if [ "$mode" = tsan ]; then storm_forks=40; else storm_forks=300; fi
add "faults_fork_storm|tests/faults/fork_storm.c|prefix|--forks $storm_forks"

selected() { # $1: a program; then the names asked for (none: all)
    candidate=$1; shift
    [ $# -eq 0 ] && return 0
    for want in "$@"; do [ "$want" = "$candidate" ] && return 0; done
    return 1
}

# ---- the core, compiled once per flavour ----------------------------------------------
build_core() { # $1: directory, $2: extra flags
    mkdir -p "$1"
    objects=
    for f in $core_files; do
        o="$1/$(basename "$f" .c).o"
        objects="$objects $o"
        if [ ! -f "$o" ] || [ "$srcdir/$f" -nt "$o" ] || [ "$srcdir/src/internal.h" -nt "$o" ]; then
            # shellcheck disable=SC2086
            "$clang" $cflags $2 -c "$srcdir/$f" -o "$o" || return 1
        fi
    done
    echo "$objects"
}
echo "sanitize.sh: building the core with $clang $san_flags"
core_objects=$(build_core "$out/core" "") || { echo "FAIL: the core does not build"; exit 1; }
fi_objects=$(build_core "$out/core-fi" "-DPYM_FAULT_INJECTION") || { echo "FAIL: the core does not build"; exit 1; }

case $mode in
asan) export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:allocator_may_return_null=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
      export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}" ;;
tsan) export TSAN_OPTIONS="halt_on_error=1:exitcode=66:second_deadlock_stack=1:die_after_fork=0${TSAN_OPTIONS:+:$TSAN_OPTIONS}" ;;
esac
# The tests' own environment (tests/Makefile.inc exports these for make check).
export PYM_SRCDIR="$srcdir" PYM_BUILDDIR="$builddir"

pass=0 fail=0 skip=0 failed=
start=$(date +%s)
old_ifs=$IFS
IFS='
'
for entry in $programs; do
    IFS=$old_ifs
    [ -n "$entry" ] || continue
    name=${entry%%|*}; rest=${entry#*|}
    source=${rest%%|*}; rest=${rest#*|}
    kind=${rest%%|*}; args=${rest#*|}
    selected "$name" "$@" || continue
    exe="$out/$name" log="$out/$name.log"
    case $kind in
    core) objects=$core_objects; extra= ;;
    fi) objects=$fi_objects; extra="-DPYM_FAULT_INJECTION" ;;
    prefix) objects=$core_objects; extra="-include $srcdir/tests/faults/pym_prefix.h" ;;
    esac
    # shellcheck disable=SC2086
    if ! "$clang" $cflags $extra "$srcdir/$source" $objects -o "$exe" >"$log" 2>&1; then
        echo "FAIL: $name (does not build; see $log)"
        fail=$((fail + 1)); failed="$failed $name"
        continue
    fi
    t0=$(date +%s)
    # shellcheck disable=SC2086
    (cd "$out" && exec "$exe" $args) >>"$log" 2>&1
    status=$?
    t1=$(date +%s)
    if [ $status -eq 0 ]; then
        echo "PASS: $name ($((t1 - t0)) s)"; pass=$((pass + 1))
    elif [ $status -eq 77 ]; then
        echo "SKIP: $name"; skip=$((skip + 1))
    else
        echo "FAIL: $name (exit $status, $((t1 - t0)) s; log: $log)"
        grep -E "ERROR: (Address|Thread|UndefinedBehavior)Sanitizer|runtime error:|WARNING: ThreadSanitizer|CHECK failed|REQUIRE failed" "$log" | head -5 | sed 's/^/    /'
        fail=$((fail + 1)); failed="$failed $name"
    fi
    IFS='
'
done
IFS=$old_ifs
echo "============================================================"
echo "sanitize.sh $mode: $pass passed, $fail failed, $skip skipped ($(( $(date +%s) - start )) s)"
[ $fail -eq 0 ] || { echo "failed:$failed"; exit 1; }
exit 0
