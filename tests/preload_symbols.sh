#!/bin/sh
# preload_symbols.sh -- libpymalloc.so exports every interposed malloc-family
# symbol and the public pym_ API, no internal pym_ symbol, and does not
# depend on another allocator (libjemalloc).
. "$(dirname "$0")/preload_common.sh"

command -v nm >/dev/null 2>&1 || skip "nm (binutils) not found"
command -v readelf >/dev/null 2>&1 || skip "readelf (binutils) not found"

header=$PYM_SRCDIR/include/pymalloc.h
gc_header=$PYM_SRCDIR/include/pymalloc/gc.h
for h in "$header" "$gc_header"; do
    [ -r "$h" ] || pym_die "header not found: $h (set PYM_SRCDIR)"
done

# "NAME TYPE" of every defined dynamic symbol.
if ! nm -D --defined-only "$PYM_LIB" >"$PYM_TMP/nm.raw" 2>"$PYM_TMP/nm.err"; then
    cat "$PYM_TMP/nm.err"
    pym_die "nm -D --defined-only $PYM_LIB failed"
fi
awk 'NF >= 2 { name = $NF; sub(/@.*/, "", name); print name, $(NF - 1) }' \
    "$PYM_TMP/nm.raw" | sort -u >"$PYM_TMP/exports"
echo "$(wc -l <"$PYM_TMP/exports" | tr -d ' ') symbols exported by $PYM_LIB"

# ---- 1. the interposed symbols are exported, as functions ------------------------
interposed="malloc free calloc realloc reallocarray posix_memalign aligned_alloc
memalign valloc pvalloc malloc_usable_size __libc_malloc __libc_free __libc_calloc
__libc_realloc __libc_memalign __posix_memalign"
pym_required="pym_malloc pym_free pym_calloc pym_realloc pym_aligned_alloc
pym_usable_size pym_stats_print pym_stats_get"

exported_function() {
    # T/t: text, W: weak, i: indirect function
    awk -v sym="$1" '$1 == sym && $2 ~ /^[TWi]$/ { found = 1 } END { exit !found }' \
        "$PYM_TMP/exports"
}

for sym in $interposed; do
    if exported_function "$sym"; then
        pass "interposes $sym"
    else
        fail "interposes $sym" "not exported as a function by $PYM_LIB"
    fi
done
for sym in $pym_required; do
    if exported_function "$sym"; then
        pass "exports API $sym"
    else
        fail "exports API $sym" "not exported as a function by $PYM_LIB"
    fi
done

# ---- 2. the public pym_ names come from the headers -----------------------------
# Every declaration "PYM_API <type> pym_name(" (possibly "*pym_name("), in
# pymalloc.h and in the GC side API's pymalloc/gc.h.
sed -n 's/^[[:space:]]*PYM_API[^(]*[^A-Za-z0-9_]\(pym_[A-Za-z0-9_]*\)[[:space:]]*(.*/\1/p' \
    "$header" "$gc_header" | sort -u >"$PYM_TMP/api"
api_count=$(wc -l <"$PYM_TMP/api" | tr -d ' ')
gc_count=$(grep -c '^pym_gc_\|^pym_new$\|^pym_decref$' "$PYM_TMP/api")
if [ "$api_count" -ge 8 ] && [ "$gc_count" -ge 10 ]; then
    pass "parsed $api_count PYM_API functions from include/pymalloc.h and include/pymalloc/gc.h"
else
    fail "parse the headers" "found only $api_count PYM_API declarations ($gc_count of the GC API)"
fi
# The required API must be declared there too (catches a broken parser).
for sym in $pym_required; do
    if ! grep -qx "$sym" "$PYM_TMP/api"; then
        fail "header declares $sym" "$sym is not a PYM_API declaration in $header"
    fi
done

# Every header function is exported (a declared but missing one breaks users).
missing=
while read -r sym; do
    exported_function "$sym" || missing="$missing $sym"
done <"$PYM_TMP/api"
if [ -z "$missing" ]; then
    pass "every PYM_API function of the header is exported"
else
    fail "every PYM_API function of the header is exported" "missing:$missing"
fi

# No exported pym_ symbol (function or data) outside the header.
awk '$1 ~ /^pym_/ { print $1 }' "$PYM_TMP/exports" | sort -u >"$PYM_TMP/pym_exports"
internal=$(comm -23 "$PYM_TMP/pym_exports" "$PYM_TMP/api" | tr '\n' ' ')
if [ -z "$internal" ]; then
    pass "no internal pym_ symbol exported ($(wc -l <"$PYM_TMP/pym_exports" | tr -d ' ') pym_ exports, all in the header)"
else
    fail "no internal pym_ symbol exported" "exported but not in the header: $internal"
fi

# Nothing else leaks: every non-pym_ export is a known malloc-family or
# C++ allocation name (the library is built with -fvisibility=hidden).
others=$(awk '$1 !~ /^pym_/ { print $1 }' "$PYM_TMP/exports" | while read -r sym; do
    case "$sym" in
        malloc|free|calloc|realloc|reallocarray|posix_memalign|aligned_alloc) ;;
        memalign|valloc|pvalloc|malloc_usable_size|cfree|free_sized|free_aligned_sized) ;;
        mallopt|mallinfo|mallinfo2|malloc_trim|malloc_stats|malloc_info) ;;
        __libc_*|__posix_memalign|__malloc_*|__free_hook|__memalign_hook|__realloc_hook) ;;
        _Znw*|_Zna*|_Zdl*|_Zda*) ;;   # operator new / delete
        _init|_fini|_edata|_end|__bss_start) ;;
        *) printf '%s ' "$sym" ;;
    esac
done)
if [ -z "$others" ]; then
    pass "no other symbol exported"
else
    fail "no other symbol exported" "unexpected exports: $others"
fi

# ---- 3. no dependency on another allocator -------------------------------------
readelf -d "$PYM_LIB" >"$PYM_TMP/dynamic" 2>&1 || pym_die "readelf -d $PYM_LIB failed"
needed=$(sed -n 's/.*(NEEDED).*\[\(.*\)\].*/\1/p' "$PYM_TMP/dynamic" | tr '\n' ' ')
echo "NEEDED: $needed"
if [ -n "$needed" ]; then
    pass "readelf -d lists the dependencies"
else
    fail "readelf -d lists the dependencies" "no NEEDED entry (not a dynamic library?)"
fi
if grep -i 'NEEDED' "$PYM_TMP/dynamic" | grep -qi 'jemalloc\|tcmalloc\|mimalloc'; then
    fail "no NEEDED allocator library" "$(grep -i 'NEEDED' "$PYM_TMP/dynamic" | grep -i 'jemalloc\|tcmalloc\|mimalloc')"
else
    pass "no NEEDED libjemalloc (readelf -d)"
fi
if command -v ldd >/dev/null 2>&1; then
    if ldd "$PYM_LIB" >"$PYM_TMP/ldd" 2>&1; then
        if grep -qi 'jemalloc\|tcmalloc\|mimalloc' "$PYM_TMP/ldd"; then
            fail "no libjemalloc in ldd" "$(grep -i 'jemalloc\|tcmalloc\|mimalloc' "$PYM_TMP/ldd")"
        elif grep -q 'not found' "$PYM_TMP/ldd"; then
            fail "ldd resolves every dependency" "$(grep 'not found' "$PYM_TMP/ldd")"
        else
            pass "no libjemalloc in ldd, all dependencies found"
        fi
    else
        cat "$PYM_TMP/ldd"
        fail "ldd $PYM_LIB" "ldd failed"
    fi
else
    echo "ldd not found; only readelf -d checked"
fi

finish
