#!/usr/bin/env python3
"""instructions.py -- instructions per malloc/free pair under callgrind
(`make bench-instructions`; python3 standard library only).

Runs bench/pymalloc-bench-loop (loop.c) under `valgrind --tool=callgrind
--toggle-collect=<loop function>` once per loop variant and allocator (glibc:
no preload; jemalloc, mimalloc, tcmalloc, pymalloc: LD_PRELOAD), reads the
collected total ("totals:" line of the callgrind output file) and divides it
by the number of pairs.  Only the loop function and what it calls are
counted (the loop's own instructions and the PLT jumps included): start-up,
the allocator's initialisation and the warm-up are not.  Then pymalloc's
figure at each of the target sizes (8, 32, 256, 4000 B) against the
project's target (<= 46 instructions per pair), and, for malloc(64), the
same count split by function (callgrind_annotate), per pair.  A missed
target is reported, not an error: the exit status is 0 whenever everything
ran.

Instruction counts do not depend on the machine's load, so one run is enough;
they say nothing about cache misses (see `make bench` for time).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

# (argument of loop.c, its loop function, column title)
VARIANTS = (("8", "loop_fixed_8", "8 B"),
            ("32", "loop_fixed_32", "32 B"),
            ("fixed", "loop_fixed_64", "64 B"),
            ("256", "loop_fixed_256", "256 B"),
            ("4000", "loop_fixed_4000", "4000 B"),
            ("mixed", "loop_mixed_sizes", "8 sizes 16..512 B"))
TARGET_SIZES = ("8", "32", "256", "4000")   # variants held to the target
TARGET = 46.0  # instructions per malloc/free pair, loop and PLT included
PEERS = (("jemalloc", "libjemalloc.so.2"), ("mimalloc", "libmimalloc.so.2"),
         ("tcmalloc", "libtcmalloc_minimal.so.4"))


def fail(message):
    print("instructions.py: " + message, file=sys.stderr)
    sys.exit(1)


def callgrind(options, variant, function, library, out_path):
    command = [options.valgrind, "--tool=callgrind", "--toggle-collect=" + function,
               "--callgrind-out-file=" + out_path, options.loop, variant, str(options.pairs)]
    environment = dict(os.environ)
    environment.pop("LD_PRELOAD", None)
    if library:
        environment["LD_PRELOAD"] = library
    completed = subprocess.run(command, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, universal_newlines=True)
    if completed.returncode != 0:
        fail("%s failed (exit %d):\n%s" % (" ".join(command), completed.returncode,
                                           completed.stdout[-2000:]))
    if "cannot be preloaded" in completed.stdout:
        fail("the loader could not preload %s:\n%s" % (library, completed.stdout[-2000:]))
    with open(out_path) as stream:
        for line in stream:
            match = re.match(r"(?:totals|summary):\s+(\d+)", line)
            if match:
                return int(match.group(1))
    fail("no totals line in " + out_path)


def breakdown(options, out_path):
    """(instructions, function) of the measured loop, most first."""
    completed = subprocess.run([options.callgrind_annotate, "--inclusive=no", "--auto=no", out_path],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    if completed.returncode != 0:
        return []
    rows = []
    for line in completed.stdout.splitlines():
        match = re.match(r"\s*([\d,]+) \([\s\d.]+%\)\s+(\S+:\S+)", line)
        if match:
            rows.append((int(match.group(1).replace(",", "")), match.group(2)))
    return rows


def main(argv):
    parser = argparse.ArgumentParser(description="Instructions per malloc/free pair under callgrind.")
    parser.add_argument("--loop", required=True, help="the pymalloc-bench-loop program")
    parser.add_argument("--lib", required=True, help="libpymalloc.so to preload")
    for peer, library in PEERS:
        parser.add_argument("--" + peer, default="", help="%s ('' = leave it out)" % library)
    parser.add_argument("--valgrind", default="valgrind")
    parser.add_argument("--callgrind-annotate", default="callgrind_annotate")
    parser.add_argument("--pairs", type=int, default=1000000)
    options = parser.parse_args(argv)
    for path, what in ((options.loop, "loop program"), (options.lib, "libpymalloc.so")):
        if not os.path.isfile(path):
            fail("%s not found: %s" % (what, path))
    allocators = [("glibc", "")]
    for peer, _ in PEERS:
        path = getattr(options, peer)
        if path and not os.path.isfile(path):
            print("instructions.py: %s not found; %s left out" % (path, peer), file=sys.stderr)
            path = ""
        allocators.append((peer, os.path.abspath(path) if path else ""))
    allocators.append(("pymalloc", os.path.abspath(options.lib)))

    results = {}
    pymalloc_split = []
    with tempfile.TemporaryDirectory(prefix="pymalloc-callgrind.") as scratch:
        for name, library in allocators:
            if name != "glibc" and not library:
                continue
            for variant, function, _ in VARIANTS:
                out_path = os.path.join(scratch, "%s.%s.out" % (name, variant))
                print("instructions.py: %-8s %-5s under callgrind" % (name, variant),
                      file=sys.stderr, flush=True)
                total = callgrind(options, variant, function, library, out_path)
                results[(name, variant)] = total / options.pairs
                if name == "pymalloc" and variant == "fixed":
                    pymalloc_split = breakdown(options, out_path)

    print("instructions per malloc(N)/free pair (callgrind Ir of the loop function / %d pairs;"
          " the loop's own instructions and the PLT jumps included)" % options.pairs)
    header = ["allocator"] + [title for _, _, title in VARIANTS]
    lines = [header]
    for name, _ in allocators:
        lines.append([name] + ["%.1f" % results[(name, v)] if (name, v) in results else "n/a"
                               for v, _, _ in VARIANTS])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for index, line in enumerate(lines):
        print("| " + " | ".join(text.ljust(w) if i == 0 else text.rjust(w)
                                for i, (text, w) in enumerate(zip(line, widths))) + " |")
        if index == 0:
            print("|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":"
                                 for i, w in enumerate(widths)) + "|")
    print()
    for variant in TARGET_SIZES:
        value = results.get(("pymalloc", variant))
        print("pymalloc %s B: %.1f instructions per pair (target <= %g: %s)"
              % (variant, value, TARGET, "met" if value <= TARGET else "MISSED"))
    if pymalloc_split:
        print()
        print("pymalloc, malloc(64)/free: instructions per pair by source function (self cost,"
              " inlined code under the file it comes from; >= 0.5 shown):")
        for count, function in pymalloc_split:
            if count >= options.pairs // 2:
                print("  %6.1f  %s" % (count / options.pairs, function))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
