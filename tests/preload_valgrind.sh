#!/bin/sh
# preload_valgrind.sh -- memcheck finds leaks, reads after free and invalid
# frees in pymalloc's blocks, as it does in glibc's (src/valgrind.c).
#
# tests/valgrind_leak leaks 10 blocks of 100 bytes, reads a freed block and
# (with "interior") frees a pointer into the middle of a block.  It runs
# under valgrind with libpymalloc preloaded:
#   - with --soname-synonyms=somalloc=NONE, so that valgrind leaves
#     pymalloc's malloc alone and pymalloc's own annotations are what
#     memcheck sees: the leak (with the line that allocated it), the invalid
#     read and the invalid free must all be reported, and nothing else;
#   - with valgrind's defaults, which replace pymalloc's malloc with
#     valgrind's own (as --soname-synonyms=somalloc=*pymalloc* would): the
#     leak is reported too.
. "$(dirname "$0")/preload_common.sh"
need_program VALGRIND valgrind

LEAKER=$PYM_BUILDDIR/tests/valgrind_leak
[ -x "$LEAKER" ] || pym_die "$LEAKER not built"
PYM_TIMEOUT=300

memcheck() { # memcheck NAME [valgrind options...] -- program args
    memcheck_name=$1
    shift
    LD_PRELOAD=$PYM_LIB timeout -k 5 "$PYM_TIMEOUT" "$VALGRIND" --leak-check=full "$@" \
        >"$PYM_TMP/$memcheck_name.out" 2>"$PYM_TMP/$memcheck_name.err"
    echo $? >"$PYM_TMP/$memcheck_name.rc"
}

expect_in() { # expect_in NAME TEXT DESCRIPTION
    if grep -qF -- "$2" "$PYM_TMP/$1.err"; then
        pass "$1: $3"
    else
        fail "$1: $3" "\"$2\" not in valgrind's output:
$(cat "$PYM_TMP/$1.err")"
    fi
}

memcheck annotated --soname-synonyms=somalloc=NONE "$LEAKER"
if [ "$(cat "$PYM_TMP/annotated.rc")" -eq 0 ] && grep -q '^kept ' "$PYM_TMP/annotated.out"; then
    pass "annotated: the program runs to its end under valgrind"
else
    fail "annotated: the program runs to its end under valgrind" "exit $(cat "$PYM_TMP/annotated.rc")"
fi
expect_in annotated "definitely lost: 1,000 bytes in 10 blocks" "the 10 leaked blocks are definitely lost"
expect_in annotated "valgrind_leak.c:35" "the leak is traced to the line that allocated it"
expect_in annotated "Invalid read of size 1" "the read of a freed block is reported"
expect_in annotated "ERROR SUMMARY: 2 errors from 2 contexts" "and nothing else (leak + read)"
if grep -q "pym_valgrind_malloclike" "$PYM_TMP/annotated.err"; then
    pass "annotated: the blocks were pymalloc's (its annotations appear in the stacks)"
else
    fail "annotated: the blocks were pymalloc's" "no pymalloc frame in valgrind's stacks"
fi

memcheck interior --soname-synonyms=somalloc=NONE "$LEAKER" interior
expect_in interior "Invalid free()" "a free of a pointer into a block is reported"

memcheck replaced "$LEAKER"
expect_in replaced "definitely lost: 1,000 bytes in 10 blocks" "with valgrind's own malloc the leak is found too"
finish
