#!/bin/sh
# preload_stats.sh -- PYMALLOC_STATS=1 prints the statistics table at exit
# under LD_PRELOAD; PYMALLOC_ALIGN=8 / 16 choose the small-class mapping;
# a malformed PYMALLOC_ALIGN is reported in one line and ignored.
. "$(dirname "$0")/preload_common.sh"

if [ -z "${PYTHON3:-}" ] && [ -x /usr/bin/python3 ]; then
    PYTHON3=/usr/bin/python3
fi
need_program PYTHON3 python3
unset PYTHONMALLOC PYTHONDEVMODE
"$PYTHON3" -c 'import ctypes' 2>/dev/null || skip "$PYTHON3 has no ctypes module"

# 100000 small objects.  The list is leaked on purpose (one extra reference
# through ctypes) so that the objects are still allocated when the table is
# printed at exit, after the interpreter has finalized everything else.
# A float object is 24 bytes: with PYTHONMALLOC=malloc each one is a
# malloc(24), served by the 32-byte class 3 (alignment 16) or by the 24-byte
# class 2 (PYMALLOC_ALIGN=8).
objects='import ctypes
keep = []
for i in range(100000):
    keep.append((i / 3.0, str(i) * 3, [i], {"k": i}, b"x" * (i % 60), (i, i + 1)))
ctypes.pythonapi.Py_IncRef(ctypes.py_object(keep))
print("objects", len(keep), sum(len(t[1]) for t in keep))'

# The expected stdout: the same program without the preload.
expected_out=$(timeout "$PYM_TIMEOUT" "$PYTHON3" -c "$objects") ||
    pym_die "$PYTHON3 -c \"\$objects\" fails without the preload"
case "$expected_out" in
    "objects 100000 "*) ;;
    *) pym_die "unexpected output without the preload: $expected_out" ;;
esac

# table FILE: the rows "class block-size pools full-pools in-use free" of the
# statistics table in FILE.
table() {
    awk '/^class +block size +pools/ { on = 1; next }
         /^#/ { on = 0 }
         on && NF == 7 && $1 ~ /^[0-9]+$/ { print }' "$1"
}

# row FILE CLASS: that class's row ("" when it has no pools).
row() {
    table "$1" | awk -v c="$2" '$1 == c { print }'
}

# check_table NAME FILE ALIGN: the checks every table must pass.
check_table() {
    ct_name=$1
    ct_file=$2
    ct_align=$3
    ct_tables=$(grep -c '^pymalloc statistics' "$ct_file")
    if [ "$ct_tables" = 1 ]; then
        pass "$ct_name: one statistics table on stderr"
    else
        fail "$ct_name: one statistics table on stderr" "found $ct_tables"
    fi
    if grep -q '^pymalloc statistics (alignment '"$ct_align"', pid [0-9]*)$' "$ct_file"; then
        pass "$ct_name: title says alignment $ct_align"
    else
        fail "$ct_name: title says alignment $ct_align" "$(grep '^pymalloc statistics' "$ct_file" | head -n 1)"
    fi
    if grep -q 'block size' "$ct_file"; then
        pass "$ct_name: table header \"block size\""
    else
        fail "$ct_name: table header \"block size\"" "not on stderr"
    fi
    if grep -q '^# arenas (256 KiB) mapped now  *[1-9][0-9]*$' "$ct_file"; then
        pass "$ct_name: \"# arenas (256 KiB) mapped now\" > 0"
    else
        fail "$ct_name: \"# arenas (256 KiB) mapped now\" > 0" \
            "$(grep 'arenas (256 KiB)' "$ct_file" || echo 'line missing')"
    fi
    ct_small=$(table "$ct_file" | awk '$1 < 64 && $3 > 0' | wc -l | tr -d ' ')
    if [ "$ct_small" -ge 5 ]; then
        pass "$ct_name: $ct_small small classes with pools > 0"
    else
        fail "$ct_name: at least 5 small classes with pools > 0" "only $ct_small"
    fi
    # Each row is consistent: block size of its class, full <= pools, and
    # in-use + free + thread-cached = pools * capacity (4032-byte pool area for small
    # classes, 256 KiB span for medium ones).
    ct_bad=$(table "$ct_file" | awk -v align="$ct_align" '
        {
            c = $1; bs = $2; pools = $3; full = $4; used = $5; free = $6; cached = $7
            if (c < 64) {
                want = 8 * (c + 1); cap = int(4032 / bs)
                if (align == 16 && c >= 2 && c % 2 == 0) { print "class " c " used under alignment 16"; next }
            } else {
                want = 0; cap = int(262144 / bs)
            }
            if (want && bs != want) print "class " c ": block size " bs " (expected " want ")"
            if (full > pools) print "class " c ": full pools " full " > pools " pools
            if (used + free + cached != pools * cap) print "class " c ": " used " + " free " + " cached " blocks != " pools " x " cap
        }')
    if [ -z "$ct_bad" ]; then
        pass "$ct_name: every row consistent"
    else
        fail "$ct_name: every row consistent" "$ct_bad"
    fi
    ct_sum=$(table "$ct_file" | awk '{ s += $2 * $5 } END { printf "%d", s }')
    if grep -q "^# bytes in pool blocks in use  *$ct_sum\$" "$ct_file"; then
        pass "$ct_name: bytes in pool blocks in use = sum of the rows ($ct_sum)"
    else
        fail "$ct_name: bytes in pool blocks in use = sum of the rows ($ct_sum)" \
            "$(grep '^# bytes in pool blocks in use' "$ct_file")"
    fi
    # Preloaded from the start, every pointer freed is pymalloc's own.
    if grep -q '^# foreign frees ignored  *0$' "$ct_file"; then
        pass "$ct_name: no foreign frees"
    else
        fail "$ct_name: no foreign frees" "$(grep '^# foreign frees' "$ct_file" || echo 'line missing')"
    fi
    for ct_class in 3 7; do
        ct_row=$(row "$ct_file" $ct_class)
        if [ -n "$ct_row" ]; then
            pass "$ct_name: class $ct_class present: $ct_row"
        else
            fail "$ct_name: class $ct_class present" "no row for class $ct_class"
        fi
    done
}

# run_stats NAME ENV...: run python3 -c "$objects" under the preload with
# PYMALLOC_STATS=1 and ENV; stdout and exit status must be normal.
run_stats() {
    rs_name=$1
    shift
    run_preload "$rs_name" env PYMALLOC_STATS=1 "$@" "$PYTHON3" -c "$objects"
    rs_rc=$?
    rs_out=$(cat "$PYM_TMP/$rs_name.out")
    if [ "$rs_rc" = 0 ] && [ "$rs_out" = "$expected_out" ]; then
        pass "$rs_name: runs normally (exit 0, \"$rs_out\")"
    else
        fail "$rs_name: runs normally" "exit $(pym_describe_rc "$rs_rc"), stdout \"$rs_out\""
        tail -n 20 "$PYM_TMP/$rs_name.err"
    fi
}

# ---- CPython's own small-object allocator on top (the default) -----------------
run_stats stats-default
check_table stats-default "$PYM_TMP/stats-default.err" 16
if [ -z "$(row "$PYM_TMP/stats-default.err" 2)" ]; then
    pass "stats-default: class 2 has no pools (alignment 16)"
else
    fail "stats-default: class 2 has no pools (alignment 16)" "$(row "$PYM_TMP/stats-default.err" 2)"
fi

# ---- every object through malloc: 24-byte requests ------------------------------
run_stats stats-malloc PYTHONMALLOC=malloc
check_table stats-malloc "$PYM_TMP/stats-malloc.err" 16
if [ -z "$(row "$PYM_TMP/stats-malloc.err" 2)" ]; then
    pass "stats-malloc: class 2 has no pools (17..24 bytes go to class 3)"
else
    fail "stats-malloc: class 2 has no pools (17..24 bytes go to class 3)" "$(row "$PYM_TMP/stats-malloc.err" 2)"
fi
used3=$(row "$PYM_TMP/stats-malloc.err" 3 | awk '{ print $5 }')
if [ "${used3:-0}" -ge 100000 ]; then
    pass "stats-malloc: class 3 holds the 100000 floats ($used3 blocks in use)"
else
    fail "stats-malloc: class 3 holds the 100000 floats" "${used3:-no} blocks in use"
fi

run_stats stats-align16 PYTHONMALLOC=malloc PYMALLOC_ALIGN=16
check_table stats-align16 "$PYM_TMP/stats-align16.err" 16
if [ -z "$(row "$PYM_TMP/stats-align16.err" 2)" ]; then
    pass "stats-align16: class 2 has no pools"
else
    fail "stats-align16: class 2 has no pools" "$(row "$PYM_TMP/stats-align16.err" 2)"
fi

run_stats stats-align8 PYTHONMALLOC=malloc PYMALLOC_ALIGN=8
check_table stats-align8 "$PYM_TMP/stats-align8.err" 8
row2=$(row "$PYM_TMP/stats-align8.err" 2)
used2=$(echo "$row2" | awk '{ print $5 }')
if [ -n "$row2" ] && [ "${used2:-0}" -ge 100000 ]; then
    pass "stats-align8: class 2 (24 bytes) holds the 100000 floats: $row2"
else
    fail "stats-align8: class 2 (24 bytes) holds the 100000 floats" "row: ${row2:-none}"
fi
odd=$(table "$PYM_TMP/stats-align8.err" | awk '$1 < 64 && $1 % 2 == 0 && $1 > 0' | wc -l | tr -d ' ')
if [ "$odd" -ge 2 ]; then
    pass "stats-align8: $odd classes of odd multiples of 8 bytes in use"
else
    fail "stats-align8: classes of odd multiples of 8 bytes in use" "only $odd"
fi

# ---- malformed settings ------------------------------------------------------------
# bogus_setting NAME VAR VALUE: one warning line naming VAR, program unharmed.
bogus_setting() {
    bs_name=$1
    run_preload "$bs_name" env "$2=$3" "$PYTHON3" -c 'print(sum(len(str(i)) for i in range(100000)))'
    bs_rc=$?
    bs_out=$(cat "$PYM_TMP/$bs_name.out")
    if [ "$bs_rc" = 0 ] && [ "$bs_out" = 488890 ]; then   # sum of the digit counts
        pass "$bs_name: program runs normally"
    else
        fail "$bs_name: program runs normally" "exit $(pym_describe_rc "$bs_rc"), stdout \"$bs_out\""
    fi
    bs_lines=$(wc -l <"$PYM_TMP/$bs_name.err" | tr -d ' ')
    if [ "$bs_lines" = 1 ] && grep -q "$2" "$PYM_TMP/$bs_name.err"; then
        pass "$bs_name: one warning line naming $2: $(cat "$PYM_TMP/$bs_name.err")"
    else
        fail "$bs_name: one warning line naming $2" "stderr has $bs_lines lines:
$(head -n 5 "$PYM_TMP/$bs_name.err")"
    fi
}
bogus_setting align-bogus PYMALLOC_ALIGN bogus
bogus_setting align-7 PYMALLOC_ALIGN 7
bogus_setting stats-bogus PYMALLOC_STATS yes

# The bogus alignment falls back to 16.
run_stats stats-align-bogus PYMALLOC_ALIGN=bogus
if grep -q '^pymalloc statistics (alignment 16,' "$PYM_TMP/stats-align-bogus.err"; then
    pass "PYMALLOC_ALIGN=bogus: alignment 16 used"
else
    fail "PYMALLOC_ALIGN=bogus: alignment 16 used" "$(grep '^pymalloc statistics' "$PYM_TMP/stats-align-bogus.err")"
fi

# Without PYMALLOC_STATS nothing is printed.
run_preload quiet "$PYTHON3" -c "$objects"
if [ -s "$PYM_TMP/quiet.err" ]; then
    fail "no PYMALLOC_STATS: nothing on stderr" "$(head -n 3 "$PYM_TMP/quiet.err")"
else
    pass "no PYMALLOC_STATS: nothing on stderr"
fi

finish
