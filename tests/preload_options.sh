#!/bin/sh
# preload_options.sh -- the PYMALLOC_ variables as a preloaded program sees
# them (options.c, stats.c).
#
#   - a malformed value is reported once on stderr, naming the variable, the
#     value and what it accepts; the program runs normally with the default;
#   - PYMALLOC_STATS=json prints one JSON object on stderr at exit,
#     json:PATH and PATH write JSON or the text table into a file, "%p" in
#     the path is the process id;
#   - PYMALLOC_MMAP_THRESHOLD, PYMALLOC_DECAY_MS and PYMALLOC_ARENA_CACHE
#     change what pymalloc keeps, as the exit statistics show: a freed
#     2 MiB block is cached by default, not with a 1M threshold nor with a
#     0 ms decay (after one more large free); no empty chunk is kept with
#     an arena cache of 0.
. "$(dirname "$0")/preload_common.sh"
need_program PYTHON3 python3

# A python3 that frees a 2 MiB block and then a 300 KB one (the second free
# applies the decay) through libc's malloc, then exits.
PROBE='import ctypes
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
big = libc.malloc(2 << 20); libc.free(big)
other = libc.malloc(300000); libc.free(other)
blocks = [libc.malloc(64) for i in range(200000)]
for b in blocks: libc.free(b)
print("probe done")'

# json_field FILE KEY: a number from the exit statistics in FILE.
json_field() {
    "$PYTHON3" -c 'import json, sys; print(json.load(open(sys.argv[1]))["pymalloc"][sys.argv[2]])' "$1" "$2"
}

# ---- malformed values --------------------------------------------------------
# Run outside run_preload: its `timeout` would be preloaded too, and a
# second process reports (and writes statistics) on its own.
# preloaded NAME VAR=VALUE... -- CMD...: only CMD has pymalloc and the variables.
preloaded() {
    preloaded_name=$1
    shift
    timeout -k 5 "$PYM_TIMEOUT" env LD_PRELOAD="$PYM_LIB" "$@" \
        >"$PYM_TMP/$preloaded_name.out" 2>"$PYM_TMP/$preloaded_name.err" </dev/null
}
preloaded malformed PYMALLOC_ALIGN=7 PYMALLOC_MMAP_THRESHOLD=12Q PYMALLOC_DECAY_MS=soon "$PYTHON3" -c 'print("ran")'
rc=$?
err=$PYM_TMP/malformed.err
if [ "$rc" -eq 0 ] && grep -q '^ran$' "$PYM_TMP/malformed.out"; then
    pass "malformed values: the program runs normally"
else
    fail "malformed values: the program runs normally" "exit $(pym_describe_rc "$rc")"
fi
for expected in 'PYMALLOC_ALIGN="7" is not valid (accepted: 16 or 8)' \
                'PYMALLOC_MMAP_THRESHOLD="12Q" is not valid' \
                'PYMALLOC_DECAY_MS="soon" is not valid (accepted: milliseconds, 0 to 3600000)'; do
    count=$(grep -cF "$expected" "$err")
    if [ "$count" -eq 1 ]; then
        pass "reported once: $expected"
    else
        fail "reported once: $expected" "$count times; stderr: $(cat "$err")"
    fi
done

# ---- statistics output ----------------------------------------------------------
preloaded stats-json PYMALLOC_STATS=json "$PYTHON3" -c 'pass'
if "$PYTHON3" -c 'import json, sys; d = json.load(open(sys.argv[1]))["pymalloc"]; assert d["classes"] and d["arenas_peak"] > 0' "$PYM_TMP/stats-json.err"; then
    pass "PYMALLOC_STATS=json: one JSON object on stderr, with classes and arenas"
else
    fail "PYMALLOC_STATS=json: one JSON object on stderr" "$(head -c 300 "$PYM_TMP/stats-json.err")"
fi
preloaded stats-json-file PYMALLOC_STATS="json:$PYM_TMP/exit.json" "$PYTHON3" -c 'pass'
if [ -s "$PYM_TMP/exit.json" ] && [ "$(json_field "$PYM_TMP/exit.json" alignment)" = 16 ] && ! [ -s "$PYM_TMP/stats-json-file.err" ]; then
    pass "PYMALLOC_STATS=json:PATH writes the JSON into the file, nothing on stderr"
else
    fail "PYMALLOC_STATS=json:PATH writes the JSON into the file" "stderr: $(head -c 300 "$PYM_TMP/stats-json-file.err")"
fi
preloaded stats-text-file PYMALLOC_STATS="$PYM_TMP/exit.txt" "$PYTHON3" -c 'pass'
if grep -q '^pymalloc statistics' "$PYM_TMP/exit.txt" && grep -q '^# arenas at peak' "$PYM_TMP/exit.txt"; then
    pass "PYMALLOC_STATS=PATH writes the text table into the file"
else
    fail "PYMALLOC_STATS=PATH writes the text table into the file"
fi
preloaded stats-pid-file PYMALLOC_STATS="json:$PYM_TMP/exit-%p.json" "$PYTHON3" -c 'import os; print(os.getpid())'
pid=$(cat "$PYM_TMP/stats-pid-file.out")
if [ -s "$PYM_TMP/exit-$pid.json" ] && [ "$(json_field "$PYM_TMP/exit-$pid.json" pid)" = "$pid" ]; then
    pass "%p in the PYMALLOC_STATS path is the process id"
else
    fail "%p in the PYMALLOC_STATS path is the process id" "$(ls "$PYM_TMP")"
fi
preloaded stats-bad-file PYMALLOC_STATS="$PYM_TMP/no/such/dir/x.txt" "$PYTHON3" -c 'pass'
if grep -q 'cannot open' "$PYM_TMP/stats-bad-file.err" && grep -q '^pymalloc statistics' "$PYM_TMP/stats-bad-file.err"; then
    pass "an unwritable PYMALLOC_STATS file is reported and the table goes to stderr"
else
    fail "an unwritable PYMALLOC_STATS file is reported" "$(head -c 300 "$PYM_TMP/stats-bad-file.err")"
fi

# ---- settings that change what is kept --------------------------------------------
probe() { # probe NAME [VAR=VALUE...]: run the probe with JSON statistics into NAME.json
    probe_name=$1
    shift
    preloaded "$probe_name" "$@" PYMALLOC_STATS="json:$PYM_TMP/$probe_name.json" "$PYTHON3" -c "$PROBE"
    grep -q 'probe done' "$PYM_TMP/$probe_name.out" && [ -s "$PYM_TMP/$probe_name.json" ]
}
if probe default && probe threshold PYMALLOC_MMAP_THRESHOLD=1M && probe decay PYMALLOC_DECAY_MS=0 \
   && probe nocache PYMALLOC_ARENA_CACHE=0; then
    default_cached=$(json_field "$PYM_TMP/default.json" large_cached_bytes)
    threshold_cached=$(json_field "$PYM_TMP/threshold.json" large_cached_bytes)
    decay_cached=$(json_field "$PYM_TMP/decay.json" large_cached_bytes)
    nocache_arenas=$(json_field "$PYM_TMP/nocache.json" arenas_cached)
    echo "large_cached_bytes at exit: default $default_cached, 1M threshold $threshold_cached, 0 ms decay $decay_cached; arenas cached with PYMALLOC_ARENA_CACHE=0: $nocache_arenas"
    if [ "$default_cached" -ge 2097152 ]; then pass "by default the freed 2 MiB block stays cached"; else fail "by default the freed 2 MiB block stays cached" "$default_cached bytes cached"; fi
    if [ "$threshold_cached" -lt 2097152 ]; then pass "PYMALLOC_MMAP_THRESHOLD=1M: the 2 MiB block is unmapped on free"; else fail "PYMALLOC_MMAP_THRESHOLD=1M: the 2 MiB block is unmapped on free" "$threshold_cached bytes cached"; fi
    if [ "$decay_cached" -lt 2097152 ]; then pass "PYMALLOC_DECAY_MS=0: the cached 2 MiB mapping goes at the next large free"; else fail "PYMALLOC_DECAY_MS=0: the cached mapping goes at the next large free" "$decay_cached bytes cached"; fi
    if [ "$nocache_arenas" -eq 0 ]; then pass "PYMALLOC_ARENA_CACHE=0: no empty chunk is kept"; else fail "PYMALLOC_ARENA_CACHE=0: no empty chunk is kept" "$nocache_arenas cached"; fi
else
    fail "the probe ran under every setting" "$(cat "$PYM_TMP"/*.err | head -20)"
fi
finish
