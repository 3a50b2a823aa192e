#!/bin/sh
# gc_compare.sh -- `make bench-gc`: the GC side API's workloads
# (bench/gc_bench.c) beside the same object graphs in CPython
# (bench/gc_bench.py), one table with the ratios from the same run.
#
# Usage: gc_compare.sh C_BENCH PYTHON3 [--n N] [--repeat R]
# "CPython / pymalloc" > 1 means pymalloc's C objects were faster.  Python
# pays for its interpreter too (bytecode, attribute stores): the table says
# what a C program gets from the API, not that one collector is better.
set -eu
bench=$1 python=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d /tmp/pymalloc-gc-bench.XXXXXX)
trap 'rm -rf "$out"' EXIT
"$bench" "$@" >"$out/c.txt"
"$python" "$here/gc_bench.py" "$@" >"$out/py.txt"
printf '%-10s %14s %14s %18s\n' workload "pymalloc (ms)" "CPython (ms)" "CPython/pymalloc"
while read -r name seconds; do
    py=$(awk -v n="$name" '$1 == n { print $2 }' "$out/py.txt")
    awk -v n="$name" -v c="$seconds" -v p="$py" \
        'BEGIN { printf "%-10s %14.1f %14.1f %17.2fx\n", n, c * 1000, p * 1000, (c > 0 ? p / c : 0) }'
done <"$out/c.txt"
