#!/bin/sh
# install_pkgconfig.sh -- `make install` into a temporary prefix, then build
# programs the way users do: cc prog.c $(pkg-config --cflags --libs pymalloc).
#   -lpymalloc      replaces malloc: a block from malloc() is pymalloc's;
#   -lpymalloc-api  only pym_ functions: malloc() stays glibc's.
# Also checks the installed headers, both .pc files and the wrapper script,
# and builds a program using the object API of <pymalloc/gc.h> (a cycle
# freed by pym_gc_collect) against each package.
set -u
: "${PYM_BUILDDIR:?PYM_BUILDDIR must point at the build tree}"
command -v pkg-config >/dev/null 2>&1 || { echo "SKIP: pkg-config not installed"; exit 77; }
CC=${CC:-cc}
passed=0; failed=0
ok()   { passed=$((passed + 1)); echo "ok: $1"; }
bad()  { failed=$((failed + 1)); echo "FAIL: $1"; }
prefix=$(mktemp -d /tmp/pymalloc-install.XXXXXX)
trap 'rm -rf "$prefix"' EXIT

if make -C "$PYM_BUILDDIR" install prefix="$prefix" >"$prefix/install.log" 2>&1; then
    ok "make install prefix=$prefix"
else
    bad "make install"; cat "$prefix/install.log"; echo "$passed passed, $failed failed"; exit 1
fi
for f in include/pymalloc.h include/pymalloc/gc.h lib/libpymalloc.so lib/libpymalloc-api.so lib/pkgconfig/pymalloc.pc \
         lib/pkgconfig/pymalloc-api.pc bin/pymalloc; do
    if [ -e "$prefix/$f" ]; then ok "installed $f"; else bad "missing $prefix/$f"; fi
done

cat >"$prefix/prog.c" <<'PROG'
#include <pymalloc.h>
#include <stdio.h>
#include <stdlib.h>
int main(void)
{
    void *from_malloc = malloc(40);
    void *from_pym = pym_malloc(40);
    printf("malloc-is-pymalloc=%d pym-owns-own=%d\n", pym_owns(from_malloc), pym_owns(from_pym));
    pym_free(from_pym);
    free(from_malloc);
    return 0;
}
PROG
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
for package in pymalloc pymalloc-api; do
    flags=$(pkg-config --define-prefix --cflags --libs "$package") || { bad "pkg-config $package"; continue; }
    # shellcheck disable=SC2086
    if $CC "$prefix/prog.c" -o "$prefix/prog-$package" $flags -Wl,-rpath,"$prefix/lib" 2>"$prefix/cc.log"; then
        ok "cc prog.c \$(pkg-config --cflags --libs $package)"
    else
        bad "compiling against $package"; cat "$prefix/cc.log"; continue
    fi
    output=$("$prefix/prog-$package")
    case "$package" in
        pymalloc) expected="malloc-is-pymalloc=1 pym-owns-own=1" ;;
        *)        expected="malloc-is-pymalloc=0 pym-owns-own=1" ;;
    esac
    if [ "$output" = "$expected" ]; then ok "$package: $output"; else bad "$package: got '$output', expected '$expected'"; fi
done

# The object API: two nodes in a cycle survive their last pym_decref and are
# freed by pym_gc_collect.
cat >"$prefix/gcprog.c" <<'PROG'
#include <pymalloc/gc.h>
#include <stdio.h>
typedef struct node { void *other; } node_t;
static int freed;
static int node_traverse(void *self, pym_visit_fn visit, void *arg)
{
    node_t *node = self;
    return node->other ? visit(node->other, arg) : 0;
}
static void node_clear(void *self)
{
    node_t *node = self;
    void *other = node->other;
    node->other = NULL;
    pym_decref(other);
}
static void node_dealloc(void *self) { (void)self; freed++; }
static const pym_type node_type = {"node", sizeof(node_t), PYM_TYPE_GC, node_traverse, node_clear, NULL, node_dealloc};
int main(void)
{
    node_t *a = pym_new(&node_type), *b = pym_new(&node_type);
    if (a == NULL || b == NULL)
        return 1;
    a->other = b;
    b->other = a;
    pym_incref(a);
    pym_decref(a);
    int before = freed;
    long found = pym_gc_collect(2);
    printf("freed-before=%d collected=%ld freed-after=%d\n", before, found, freed);
    return 0;
}
PROG
for package in pymalloc pymalloc-api; do
    flags=$(pkg-config --define-prefix --cflags --libs "$package") || { bad "pkg-config $package"; continue; }
    # shellcheck disable=SC2086
    if $CC -std=c99 -Wall -Wextra -Werror "$prefix/gcprog.c" -o "$prefix/gcprog-$package" $flags -Wl,-rpath,"$prefix/lib" 2>"$prefix/cc.log"; then
        ok "cc -std=c99 -Wall -Wextra -Werror gcprog.c (<pymalloc/gc.h>) \$(pkg-config --cflags --libs $package)"
    else
        bad "compiling the <pymalloc/gc.h> program against $package"; cat "$prefix/cc.log"; continue
    fi
    output=$("$prefix/gcprog-$package")
    expected="freed-before=0 collected=2 freed-after=2"
    if [ "$output" = "$expected" ]; then ok "$package: gc: $output"; else bad "$package: gc: got '$output', expected '$expected'"; fi
done

if "$prefix/bin/pymalloc" --help >/dev/null 2>&1; then ok "installed pymalloc --help"; else bad "pymalloc --help"; fi
out=$("$prefix/bin/pymalloc" /bin/sh -c 'echo "$LD_PRELOAD"')
case "$out" in
    "$prefix/lib/libpymalloc.so"*) ok "installed script preloads $out" ;;
    *) bad "installed script preloads '$out', expected $prefix/lib/libpymalloc.so" ;;
esac

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
