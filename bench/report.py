#!/usr/bin/env python3
"""report.py -- run bench/pymalloc-bench under glibc, jemalloc, mimalloc,
tcmalloc and pymalloc and report the five side by side (`make bench`; python3
standard library only).

How it works
  1. `pymalloc-bench --benchmark_list_tests` gives the benchmarks; they are
     grouped into families (the name before the first '/': pair, large, ...).
  2. Each family runs in a fresh process per allocator -- glibc (no preload),
     jemalloc (LD_PRELOAD=libjemalloc.so.2), mimalloc (libmimalloc.so.2),
     tcmalloc (libtcmalloc_minimal.so.4), pymalloc (libpymalloc.so) -- the
     five one after the other before the next family, so that a slow drift of
     the machine touches all five alike and peak RSS is never inherited from
     an earlier workload.  A peer that is not given says n/a.  Each process writes
     google-benchmark JSON (raw/<family>.<allocator>.json, console output in
     .log beside it).  The JSON context names the library that provides
     `malloc` in that process; a preload that did not take effect is an error.
  3. The median of the repetitions is kept for every figure; the table, the
     notes, results.csv, results.json and the chart ratios.png (gnuplot) are
     written into RESULTS/<date-time>/, and RESULTS/latest points to it.

Figures
  time rows   time per operation (what one iteration is: see register.cc),
              CPU time of the benchmark thread, or wall time for workloads
              that run threads of their own
  rate rows   operations per second (threaded workloads)
  best peer   the best of glibc, jemalloc, mimalloc and tcmalloc on the row
  pym/best    pymalloc's time / the best peer's time (rates: the best peer's
              rate / pymalloc's rate; the RSS row: pymalloc's RSS / the
              smallest peer's): a time ratio, lower is better, > 1 means
              pymalloc loses, and the row is marked LOSS
  speed vs X  (CSV/JSON) X's time / pymalloc's time: > 1 means pymalloc is
              faster (the inverse of pym/X)
  RSS         peak_rss_kib / end_rss_kib counters of bench.cc, in MiB
  syscalls    <name>_per_kop counters of bench.cc: mmap, munmap, madvise,
              mremap and brk calls per 1000 operations, all threads, timed
              loop only; absent (n/a) where the kernel's tracepoints cannot be
              used

Exit status: 0 when every allocator ran every workload, 1 when one failed
(its cells say FAILED and the notes say why), 2 on bad usage.
"""

import argparse
import csv
import datetime
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

ALLOCATORS = ("glibc", "jemalloc", "mimalloc", "tcmalloc", "pymalloc")
PEERS = ALLOCATORS[:-1]
INITIALS = "/".join(a[0] for a in ALLOCATORS)  # "g/j/m/t/p": column headers
# Peers: (command-line option, library, Debian package).
PEER_LIBRARIES = {
    "jemalloc": ("--jemalloc", "libjemalloc.so.2", "libjemalloc-dev"),
    "mimalloc": ("--mimalloc", "libmimalloc.so.2", "libmimalloc2.0"),
    "tcmalloc": ("--tcmalloc", "libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"),
}
# bench.cc's system-call counters, "<name>_per_kop"; the table shows their sum.
SYSCALLS = ("mmap", "munmap", "madvise", "mremap", "brk")
LOSS = "LOSS"
CLEAR_LOSS = 1.15  # the notes count the rows where pymalloc is more than 15% slower

KIB = 1024
MIB = 1024 * 1024

# Family -> (label format, kind).  {arg} is the argument of the benchmark,
# {size} the same formatted as bytes (an argument of 0: "mixed sizes"), {s}
# "s" when the argument is plural.  kind "time": time per operation, "rate":
# operations per second (items_per_second), unit named in RATE_UNITS.
FAMILIES = {
    "pair": ("malloc+free pair, {size}", "time"),
    "random_live": ("random 8..512 B, 200k live", "time"),
    "interpreter_churn": ("interpreter churn, 16..64 B", "time"),
    "string_append": ("string append to 8 MiB", "time"),
    "cross_thread": ("cross-thread free, {arg} pair{s}", "rate"),
    "parallel_threads": ("independent threads, {arg} thread{s}", "rate"),
    "short_threads": ("short-lived threads", "rate"),
    "producer_consumer": ("producer/consumer batches, {size}", "rate"),
    "request_response": ("request/response, 2 threads", "rate"),
    "larson": ("larson, 2 threads replaced", "rate"),
    "thread_churn": ("thread churn, shared table, {arg} threads", "rate"),
    "large": ("large alloc+touch+free, {size}", "time"),
    "large_churn": ("large churn, 20 x 1..25 MiB zeroed", "time"),
    "fragmentation": ("fragmentation: 1M, free half, +500k", "time"),
}
RATE_UNITS = {"short_threads": "threads/s", "producer_consumer": "blocks/s", "request_response": "req/s"}
FRAGMENTATION_FAMILY = "fragmentation"
TO_NANOSECONDS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def die(message):
    print("report.py: " + message, file=sys.stderr)
    sys.exit(2)


def format_bytes(value):
    for unit, scale in (("MiB", MIB), ("KiB", KIB)):
        if value >= scale and value % scale == 0:
            return "%d %s" % (value // scale, unit)
    return "%d B" % value


def three_digits(value):
    """A figure with about three significant digits, no exponent."""
    if value is None:
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 100:
        return "%.0f" % value
    if magnitude >= 10:
        return "%.1f" % value
    return "%.2f" % value


def describe_status(returncode):
    if returncode is None:
        return "timed out"
    if returncode < 0:
        return "killed by signal %d" % -returncode
    return "exit status %d" % returncode


# ---- the benchmark binary ------------------------------------------------------------


class Benchmark:
    """One benchmark of the binary: its full name and how to show it."""

    def __init__(self, name):
        self.name = name
        parts = name.split("/")
        self.family = parts[0]
        self.arg = None
        for part in parts[1:]:
            key, _, value = part.partition(":")
            if key not in ("real_time", "iterations") and value.isdigit():
                self.arg = int(value)
        label_format, self.kind = FAMILIES.get(self.family, (name, "time"))
        self.label = label_format.format(
            arg=self.arg, size=format_bytes(self.arg) if self.arg else "mixed sizes" if self.arg == 0 else "",
            s="" if self.arg == 1 else "s")
        self.wall_clock = "/real_time" in name


def list_benchmarks(bench, name_filter):
    command = [bench, "--benchmark_list_tests"]
    if name_filter:
        command.append("--benchmark_filter=" + name_filter)
    try:
        output = subprocess.run(command, check=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, universal_newlines=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        die("cannot list the benchmarks of %s: %s" % (bench, error))
    benchmarks = [Benchmark(line.strip()) for line in output.splitlines() if line.strip()]
    if not benchmarks:
        die("%s lists no benchmark%s" % (bench, " matching " + name_filter if name_filter else ""))
    return benchmarks


def families_in_order(benchmarks):
    seen = []
    for benchmark in benchmarks:
        if benchmark.family not in seen:
            seen.append(benchmark.family)
    return seen


# ---- running ---------------------------------------------------------------------------


class Run:
    """The outcome of one family under one allocator."""

    def __init__(self, family, allocator):
        self.family = family
        self.allocator = allocator
        self.error = None          # why the figures are missing, or None
        self.figures = {}          # benchmark name -> dict of figures
        self.malloc_from = None
        self.context = {}
        self.seconds = 0.0


def same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_malloc_provider(run, library):
    """Did the process's malloc come from the library this run is about?"""
    provider = run.malloc_from or "unknown"
    if run.allocator == "glibc":
        ok = re.search(r"/libc\.so", provider) is not None
    else:
        ok = same_file(provider, library)
    if not ok:
        run.error = "malloc came from %s, not %s (the preload did not take effect)" % (
            provider, library if run.allocator != "glibc" else "libc.so")


def pick(entries, aggregate):
    for entry in entries:
        if entry.get("aggregate_name") == aggregate:
            return entry
    return None


def read_figures(run, json_path, benchmarks_by_name):
    with open(json_path) as stream:
        data = json.load(stream)
    run.context = data.get("context", {})
    run.malloc_from = run.context.get("malloc_from")
    grouped = {}
    for entry in data.get("benchmarks", []):
        grouped.setdefault(entry.get("run_name", entry.get("name")), []).append(entry)
    for name, entries in grouped.items():
        benchmark = benchmarks_by_name.get(name)
        if benchmark is None:
            continue
        errors = [e.get("error_message", "error") for e in entries if e.get("error_occurred")]
        if errors:
            run.figures[name] = {"error": errors[0]}
            continue
        # Several repetitions: the median aggregate; one: the run itself.
        central = pick(entries, "median") or next(
            (e for e in entries if e.get("run_type") == "iteration"), None)
        if central is None:
            continue
        spread = pick(entries, "cv")
        time_key = "real_time" if benchmark.wall_clock else "cpu_time"
        scale = TO_NANOSECONDS.get(central.get("time_unit", "ns"), 1.0)
        figures = {
            "time_ns": central[time_key] * scale,
            "items_per_second": central.get("items_per_second"),
            "peak_rss_mib": central.get("peak_rss_kib", 0) / KIB if "peak_rss_kib" in central else None,
            "end_rss_mib": central.get("end_rss_kib", 0) / KIB if "end_rss_kib" in central else None,
            "iterations": central.get("iterations"),
            "repetitions": central.get("repetitions", 1),
            "cv_percent": spread[time_key] * 100 if spread is not None else None,
            # Absent when bench.cc could not count (no tracepoints): None.
            "syscalls_per_kop": {name: central[name + "_per_kop"] for name in SYSCALLS
                                 if name + "_per_kop" in central} or None,
        }
        run.figures[name] = figures


def tail(path, lines=8):
    try:
        with open(path, errors="replace") as stream:
            return "".join(stream.readlines()[-lines:]).rstrip()
    except OSError:
        return ""


def run_family(options, family, allocator, library, raw_dir, benchmarks_by_name):
    run = Run(family, allocator)
    json_path = os.path.join(raw_dir, "%s.%s.json" % (family, allocator))
    log_path = os.path.join(raw_dir, "%s.%s.log" % (family, allocator))
    if allocator != "glibc" and not library:
        run.error = "not available"
        return run
    name_filter = "^%s(/|$)" % re.escape(family)
    if options.filter:
        # The user's filter further narrows the family (a benchmark must match both).
        names = [re.escape(n) for n, b in benchmarks_by_name.items() if b.family == family]
        name_filter = "^(%s)$" % "|".join(names)
    command = [options.bench, "--benchmark_filter=" + name_filter,
               "--benchmark_out=" + json_path, "--benchmark_out_format=json",
               "--benchmark_min_time=%g" % options.min_time,
               "--benchmark_repetitions=%d" % options.repetitions]
    if options.repetitions > 1:
        command.append("--benchmark_report_aggregates_only=true")
    if options.quick:
        command.append("--bench-quick")
    if options.no_syscalls:
        command.append("--bench-no-syscalls")
    environment = dict(os.environ)
    environment.pop("LD_PRELOAD", None)
    if allocator != "glibc":
        environment["LD_PRELOAD"] = library
    started = time.monotonic()
    with open(log_path, "w") as log:
        log.write("$ %s%s\n" % ("LD_PRELOAD=%s " % library if allocator != "glibc" else "",
                                " ".join(command)))
        log.flush()
        try:
            completed = subprocess.run(command, env=environment, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, timeout=options.timeout)
            returncode = completed.returncode
        except subprocess.TimeoutExpired:
            returncode = None
        except OSError as error:
            run.error = "cannot run %s: %s" % (options.bench, error)
            return run
    run.seconds = time.monotonic() - started
    if returncode != 0:
        run.error = "%s; end of %s:\n%s" % (describe_status(returncode), log_path, tail(log_path))
        return run
    try:
        read_figures(run, json_path, benchmarks_by_name)
    except (OSError, ValueError, KeyError) as error:
        run.error = "unreadable results %s: %s" % (json_path, error)
        return run
    check_malloc_provider(run, library)
    return run


def run_all(options, benchmarks, libraries, raw_dir):
    benchmarks_by_name = {b.name: b for b in benchmarks}
    families = families_in_order(benchmarks)
    runs = []
    total = len(families) * len(ALLOCATORS)
    for family in families:
        for allocator in ALLOCATORS:
            run = run_family(options, family, allocator, libraries[allocator], raw_dir,
                             benchmarks_by_name)
            runs.append(run)
            if run.error != "not available":
                print("[%2d/%d] %-18s %-9s %5.1f s%s" % (
                    len(runs), total, family, allocator, run.seconds,
                    "  FAILED: " + run.error.splitlines()[0] if run.error else ""),
                    file=sys.stderr, flush=True)
    return runs


def load_raw(raw_dir, benchmarks, libraries):
    """Rebuild the runs from an earlier run's raw/ folder (--report-only)."""
    benchmarks_by_name = {b.name: b for b in benchmarks}
    runs = []
    for family in families_in_order(benchmarks):
        for allocator in ALLOCATORS:
            run = Run(family, allocator)
            json_path = os.path.join(raw_dir, "%s.%s.json" % (family, allocator))
            if not os.path.exists(json_path):
                run.error = "not available" if not libraries.get(allocator) and allocator != "glibc" \
                    else "no results file " + json_path
            else:
                try:
                    read_figures(run, json_path, benchmarks_by_name)
                    check_malloc_provider(run, libraries.get(allocator))
                except (OSError, ValueError, KeyError) as error:
                    run.error = "unreadable results %s: %s" % (json_path, error)
            runs.append(run)
    return runs


# ---- rows ------------------------------------------------------------------------------


def ratio(numerator, denominator):
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


class Row:
    """One line of the table: a figure per allocator, the best peer, ratios."""

    def __init__(self, name, label, kind, unit):
        self.name = name
        self.label = label
        self.kind = kind           # "time", "rate" or "memory"
        self.unit = unit           # unit of the displayed values
        self.values = {}           # allocator -> displayed value or None
        self.status = {}           # allocator -> "ok", "n/a" or "FAILED"
        self.peak_rss_mib = {}
        self.end_rss_mib = {}
        self.cv_percent = {}
        self.syscalls_per_kop = {}  # allocator -> {name: calls per 1000 operations} or None

    def cost(self, allocator):
        """A figure where lower is better: the time (rate rows: 1 / rate), or the RSS."""
        value = self.values.get(allocator)
        if value is None or value <= 0 or self.status.get(allocator) != "ok":
            return None
        return 1.0 / value if self.kind == "rate" else value

    def pym_over(self, other):
        """pymalloc's cost / other's: a time ratio, > 1 means pymalloc is slower (or bigger)."""
        return ratio(self.cost("pymalloc"), self.cost(other))

    def speed_vs(self, other):
        """The inverse, other's cost / pymalloc's: > 1 means pymalloc is better."""
        return ratio(self.cost(other), self.cost("pymalloc"))

    def best_among(self, allocators):
        present = {a: self.cost(a) for a in allocators if self.cost(a) is not None}
        if not present:
            return None
        return min(present, key=present.get)

    def best(self):
        """The best of the five."""
        return self.best_among(ALLOCATORS)

    def best_peer(self):
        """The best of glibc, jemalloc, mimalloc, tcmalloc."""
        return self.best_among(PEERS)

    def pym_over_best(self):
        peer = self.best_peer()
        return self.pym_over(peer) if peer else None

    def loses(self):
        value = self.pym_over_best()
        return value is not None and value > 1.0

    def relative_to_best(self, allocator):
        """This allocator's cost / the best of the five's (>= 1)."""
        best = self.best()
        return ratio(self.cost(allocator), self.cost(best)) if best else None

    def peak_rss_relative(self, allocator):
        """Peak RSS / the smallest of the five (for the memory row: RSS while live)."""
        figures = self.end_rss_mib if self.kind == "memory" else self.peak_rss_mib
        present = [figures.get(a) for a in ALLOCATORS
                   if self.status.get(a) == "ok" and figures.get(a)]
        if not present or self.status.get(allocator) != "ok":
            return None
        return ratio(figures.get(allocator), min(present))

    def syscalls_total(self, allocator):
        counts = self.syscalls_per_kop.get(allocator)
        if not counts or self.status.get(allocator) != "ok":
            return None
        return sum(counts.values())


def choose_time_unit(nanoseconds):
    smallest = min(nanoseconds)
    if smallest < 1e4:
        return "ns/op", 1.0
    if smallest < 1e7:
        return "us/op", 1e3
    return "ms/op", 1e6


def choose_rate_unit(per_second, thing):
    smallest = min(per_second)
    if smallest >= 1e6:
        return "M %s" % thing, 1e6
    if smallest >= 1e3:
        return "k %s" % thing, 1e3
    return thing, 1.0


def build_rows(benchmarks, runs):
    by_family = {}
    for run in runs:
        by_family.setdefault(run.family, {})[run.allocator] = run
    rows = []
    for benchmark in benchmarks:
        family_runs = by_family.get(benchmark.family, {})
        figures = {}
        status = {}
        for allocator in ALLOCATORS:
            run = family_runs.get(allocator)
            found = run.figures.get(benchmark.name) if run is not None and not run.error else None
            if found is not None and "error" not in found:
                figures[allocator] = found
                status[allocator] = "ok"
            elif run is not None and run.error == "not available":
                status[allocator] = "n/a"
            else:
                status[allocator] = "FAILED"
        if benchmark.kind == "rate":
            raw = {a: f.get("items_per_second") for a, f in figures.items()}
            present = [v for v in raw.values() if v]
            thing = "ops/s" if benchmark.family not in RATE_UNITS else RATE_UNITS[benchmark.family]
            unit, scale = choose_rate_unit(present, thing) if present else (thing, 1.0)
        else:
            raw = {a: f.get("time_ns") for a, f in figures.items()}
            present = [v for v in raw.values() if v]
            unit, scale = choose_time_unit(present) if present else ("ns/op", 1.0)
        row = Row(benchmark.name, benchmark.label, benchmark.kind, unit)
        row.status = status
        for allocator in ALLOCATORS:
            value = raw.get(allocator)
            row.values[allocator] = value / scale if value else None
            found = figures.get(allocator, {})
            row.peak_rss_mib[allocator] = found.get("peak_rss_mib")
            row.end_rss_mib[allocator] = found.get("end_rss_mib")
            row.cv_percent[allocator] = found.get("cv_percent")
            row.syscalls_per_kop[allocator] = found.get("syscalls_per_kop")
        rows.append(row)
        if benchmark.family == FRAGMENTATION_FAMILY:
            # A second row for the memory the fragmented heap takes while live.
            memory = Row(benchmark.name + "#end_rss", "fragmentation: RSS while live",
                         "memory", "MiB")
            memory.status = dict(status)
            memory.values = dict(row.end_rss_mib)
            memory.peak_rss_mib = dict(row.peak_rss_mib)
            memory.end_rss_mib = dict(row.end_rss_mib)
            rows.append(memory)
    return rows


# ---- output ----------------------------------------------------------------------------


def cell(row, allocator):
    status = row.status.get(allocator)
    if status != "ok":
        return status or "n/a"
    return three_digits(row.values.get(allocator))


def format_ratio(value):
    if value is None:
        return "n/a"
    return ("%.2fx" if value >= 0.1 else "%.3fx") % value


def format_pym_best(value):
    """pym/best with two decimals, three near 1 so that a LOSS never reads "1.00"."""
    if value is None:
        return "n/a"
    if 0.995 <= value < 1.005:
        text = "%.3f" % value
        if text == "1.000" and value != 1.0:
            return (">" if value > 1.0 else "<") + text  # never an unexplained LOSS at 1.000
        return text
    return ("%.2f" if value >= 0.1 else "%.3f") % value


def compact(value):
    """A small count (system calls per 1000 operations) in few characters."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if value < 0.001:
        return "<.001"
    if value < 0.1:
        return "%.3f" % value
    return three_digits(value)


def format_rss(row):
    return " / ".join(three_digits(row.peak_rss_mib.get(a)) if row.status.get(a) == "ok" else "-"
                      for a in ALLOCATORS)


def format_syscalls(row):
    if row.kind == "memory":
        return "-"  # the same run as the row above
    totals = [row.syscalls_total(a) for a in ALLOCATORS]
    if all(total is None for total in totals):
        return "n/a"
    return " / ".join(compact(total) for total in totals)


def table_lines(rows):
    header = (["workload", "unit"] + list(ALLOCATORS) +
              ["best peer", "pym/best", "loss", "peak RSS MiB " + INITIALS, "syscalls/kop " + INITIALS])
    right = [False, False] + [True] * len(ALLOCATORS) + [False, True, False, True, True]
    body = []
    for row in rows:
        body.append([row.label, row.unit] + [cell(row, a) for a in ALLOCATORS] +
                    [row.best_peer() or "-", format_pym_best(row.pym_over_best()),
                     LOSS if row.loses() else "", format_rss(row), format_syscalls(row)])
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]

    def render(line):
        cells = [(text.rjust(width) if align else text.ljust(width))
                 for text, width, align in zip(line, widths, right)]
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if align else ("-" * (w + 2))
                          for w, align in zip(widths, right)) + "|"
    return [render(header), rule] + [render(line) for line in body]


def geometric_mean(values):
    values = [v for v in values if v is not None and v > 0]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def scaling_note(rows, family, wanted, what):
    """Throughput with argument 2 over argument 1 of a rate family, per allocator."""
    by_arg = {}
    for row in rows:
        benchmark = Benchmark(row.name)
        if benchmark.family == family and row.kind == "rate":
            by_arg[benchmark.arg] = row
    if 1 not in by_arg or 2 not in by_arg:
        return None
    parts = []
    for allocator in ALLOCATORS:
        one, two = by_arg[1], by_arg[2]
        if one.status[allocator] == "ok" and two.status[allocator] == "ok":
            # Same unit is not guaranteed (M vs k): compare the raw ratio of rates.
            value = ratio(two.values[allocator] * unit_scale(two.unit),
                          one.values[allocator] * unit_scale(one.unit))
            parts.append("%s %s" % (allocator, format_ratio(value)))
        else:
            parts.append("%s n/a" % allocator)
    return "%s: %s (%s)" % (what, ", ".join(parts), wanted)


def unit_scale(unit):
    if unit.startswith("M "):
        return 1e6
    if unit.startswith("k "):
        return 1e3
    return 1.0


def spread_note(rows):
    """How much the repetitions disagreed: differences below that are noise."""
    spreads = [(value, row.label, allocator) for row in rows if row.kind != "memory"
               for allocator, value in row.cv_percent.items() if value is not None]
    if not spreads:
        return None
    spreads.sort()
    median = spreads[len(spreads) // 2][0]
    worst = spreads[-1]
    return ("run-to-run spread (coefficient of variation of the repetitions): median %.1f%%, largest"
            " %.1f%% (%s, %s); per row in results.csv" % (median, worst[0], worst[1], worst[2]))


def loss_notes(rows):
    """The geometric mean of pym/best, how many rows pymalloc loses, and which."""
    speed_rows = [r for r in rows if r.kind != "memory" and r.pym_over_best() is not None]
    values = [r.pym_over_best() for r in speed_rows]
    lines = ["pym/best over %d workloads (time and rate rows): geometric mean %s; %d over 1.00"
             " (pymalloc loses), %d over %.2f"
             % (len(speed_rows), format_pym_best(geometric_mean(values)),
                sum(1 for v in values if v > 1.0), sum(1 for v in values if v > CLEAR_LOSS), CLEAR_LOSS)]
    means = ["%s %s" % (peer, format_pym_best(geometric_mean([r.pym_over(peer) for r in speed_rows])))
             for peer in PEERS]
    lines.append("pym/X, geometric mean over the same rows (lower is better for pymalloc): " + ", ".join(means))
    losing = sorted((r for r in rows if r.loses()), key=lambda r: -r.pym_over_best())
    if losing:
        lines.append("rows marked %s (pym/best > 1.00), worst first:\n" % LOSS + "\n".join(
            "%s: %s (best peer %s%s)" % (r.label, format_pym_best(r.pym_over_best()), r.best_peer(),
                                         ", RSS" if r.kind == "memory" else "")
            for r in losing))
    elif speed_rows:
        lines.append("pymalloc loses no row (pym/best <= 1.00 everywhere)")
    return lines


def syscall_note(runs):
    """What the syscalls/kop column counts, or why it says n/a."""
    off = {}
    for run in runs:
        if run.error:
            continue
        state = run.context.get("syscall_counters", "off: not recorded (an older pymalloc-bench)")
        if state != "on":
            off.setdefault(state, []).append(run.allocator)
    if not off:
        return ("syscalls/kop: mmap + munmap + madvise + mremap + brk calls per 1000 operations in the timed"
                " loop, all threads of the process (each call separately in results.csv/json)")
    ran = {run.allocator for run in runs if not run.error}
    if len(off) == 1 and set(next(iter(off.values()))) == ran:
        reasons = next(iter(off)).split(": ", 1)[-1]  # the same for everyone
    else:
        reasons = "; ".join("%s (%s)" % (state.split(": ", 1)[-1],
                                         ", ".join(a for a in ALLOCATORS if a in allocators))
                            for state, allocators in off.items())
    return ("syscall counters: n/a: %s.  They need the syscalls tracepoints in tracefs and root"
            " (or kernel.perf_event_paranoid <= -1)" % reasons)


def notes(rows, runs, options, libraries):
    repetitions = max([f.get("repetitions") or 1 for run in runs for f in run.figures.values()] + [1])
    statistic = "median of %d repetitions" % repetitions if repetitions > 1 else "a single run"
    lines = [
        "pym/best = pymalloc's time / the best peer's time (best peer: the fastest of %s); for rate"
        " rows (per second) the best peer's rate / pymalloc's rate; the RSS row: pymalloc's RSS / the"
        " smallest peer's.  Lower is better; > 1.00 means pymalloc loses, marked %s."
        % (", ".join(PEERS), LOSS),
        "figures: %s; time is the CPU time of the benchmark thread, wall time for the threaded"
        " workloads (rate rows); peak RSS is VmHWM of the run (baseline ~4 MiB included)." % statistic,
    ]
    spread = spread_note(rows)
    if spread:
        lines.append(spread)
    lines += loss_notes(rows)
    for note in (
            scaling_note(rows, "parallel_threads", "the issue's target: >= 1.60x",
                         "scaling, independent threads, 2 threads / 1 thread"),
            scaling_note(rows, "cross_thread", "2 pairs are 4 busy threads on this machine's cores",
                         "scaling, cross-thread free, 2 pairs / 1 pair")):
        if note:
            lines.append(note)
    for row in rows:
        if row.kind == "memory":
            parts = ["%s peak %s, live %s" % (a, three_digits(row.peak_rss_mib.get(a)),
                                              three_digits(row.end_rss_mib.get(a)))
                     for a in ALLOCATORS if row.status.get(a) == "ok"]
            lines.append("fragmentation RSS in MiB: " + "; ".join(parts))
    lines.append(syscall_note(runs))
    for peer in PEERS:
        if not libraries.get(peer):
            option, library, package = PEER_LIBRARIES[peer]
            lines.append("%s: not found (install Debian's %s, or configure --with-%s=PATH to name its %s);"
                         " its columns say n/a" % (peer, package, peer, library))
    for run in runs:
        if run.error and run.error != "not available":
            lines.append("FAILED: %s under %s: %s" % (run.family, run.allocator, run.error))
    return lines


def number(value):
    return "" if value is None else "%.6g" % value


def write_csv(path, rows):
    fields = ["name", "label", "kind", "unit"]
    fields += list(ALLOCATORS)
    fields += ["best", "best_peer", "pym_over_best", "loss"]
    fields += ["speed_vs_" + p for p in PEERS]
    fields += ["peak_rss_mib_" + a for a in ALLOCATORS]
    fields += ["end_rss_mib_" + a for a in ALLOCATORS]
    fields += ["cv_percent_" + a for a in ALLOCATORS]
    fields += ["syscalls_per_kop_" + a for a in ALLOCATORS]
    fields += ["%s_per_kop_%s" % (name, a) for name in SYSCALLS for a in ALLOCATORS]
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(fields)
        for row in rows:
            def syscall(allocator, name):
                counts = row.syscalls_per_kop.get(allocator) or {}
                return number(counts.get(name)) if row.kind != "memory" else ""
            writer.writerow(
                [row.name, row.label, row.kind, row.unit] +
                [number(row.values.get(a)) if row.status.get(a) == "ok" else row.status.get(a, "")
                 for a in ALLOCATORS] +
                [row.best() or "", row.best_peer() or "", number(row.pym_over_best()),
                 LOSS if row.loses() else ""] +
                [number(row.speed_vs(p)) for p in PEERS] +
                [number(row.peak_rss_mib.get(a)) for a in ALLOCATORS] +
                [number(row.end_rss_mib.get(a)) for a in ALLOCATORS] +
                [number(row.cv_percent.get(a)) for a in ALLOCATORS] +
                [number(row.syscalls_total(a)) if row.kind != "memory" else "" for a in ALLOCATORS] +
                [syscall(a, name) for name in SYSCALLS for a in ALLOCATORS])


def write_json(path, rows, runs, options, libraries, note_lines, table):
    context = next((r.context for r in runs if r.allocator == "glibc" and r.context), {})
    document = {
        "generated": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "quick": options.quick,
        "settings": {"min_time_s": options.min_time, "repetitions": options.repetitions,
                     "statistic": "median" if options.repetitions > 1 else "single run"},
        "machine": {key: context.get(key) for key in
                    ("host_name", "num_cpus", "mhz_per_cpu", "caches", "load_avg",
                     "library_build_type")},
        "allocators": {
            allocator: {
                "library": libraries.get(allocator) or None,
                "malloc_from": sorted({r.malloc_from for r in runs
                                       if r.allocator == allocator and r.malloc_from}),
                "failed_families": [r.family for r in runs
                                    if r.allocator == allocator and r.error and r.error != "not available"],
                "syscall_counters": sorted({r.context.get("syscall_counters", "off: not recorded")
                                            for r in runs if r.allocator == allocator and not r.error}),
            } for allocator in ALLOCATORS},
        "peers": list(PEERS),
        "rows": [{
            "name": row.name, "label": row.label, "kind": row.kind, "unit": row.unit,
            "values": {a: (row.values.get(a) if row.status.get(a) == "ok" else None) for a in ALLOCATORS},
            "status": row.status,
            "best": row.best(),
            "best_peer": row.best_peer(),
            "pym_over_best": row.pym_over_best(),
            "loss": row.loses() if row.pym_over_best() is not None else None,
            "relative_to_best": {a: row.relative_to_best(a) for a in ALLOCATORS},
            "speed_vs": {p: row.speed_vs(p) for p in PEERS},
            "speed_vs_glibc": row.speed_vs("glibc"),
            "speed_vs_jemalloc": row.speed_vs("jemalloc"),
            "peak_rss_mib": row.peak_rss_mib,
            "end_rss_mib": row.end_rss_mib,
            "cv_percent": row.cv_percent,
            "syscalls_per_kop": ({a: (row.syscalls_per_kop.get(a) if row.status.get(a) == "ok" else None)
                                  for a in ALLOCATORS} if row.kind != "memory" else None),
        } for row in rows],
        "notes": note_lines,
        "table": table,
    }
    with open(path, "w") as stream:
        json.dump(document, stream, indent=1)
        stream.write("\n")


# ---- chart -----------------------------------------------------------------------------

CHART_LIMIT = 64.0  # ratios beyond 64 are drawn at the edge, labelled with their value
CHART_COLORS = {"glibc": "#1f77b4", "jemalloc": "#ff7f0e", "mimalloc": "#2ca02c",
                "tcmalloc": "#9467bd", "pymalloc": "#d62728"}
CHART_BAR_STEP = 0.17    # vertical distance between the bars of one workload
CHART_BAR_HALF = 0.07    # half the thickness of a bar


def chart_range(values):
    """From just below 1 to a power of two past the largest value (at least 2, at most the limit)."""
    present = [v for v in values if v is not None and v > 0]
    # The margin leaves room for the value printed past the end of a bar.
    high = min(max(present + [1.0]) * 1.8, CHART_LIMIT)
    return 1 / 1.12, 2.0 ** math.ceil(math.log2(max(high, 2.0)))


def power_of_two_tics(low, high):
    tics = []
    exponent = int(math.ceil(math.log2(low) - 1e-9))
    while 2.0 ** exponent <= high * 1.001:
        value = 2.0 ** exponent
        tics.append('"%s" %g' % ("%g" % value if exponent >= 0 else "1/%d" % 2 ** -exponent, value))
        exponent += 1
    return ", ".join(tics)


def write_chart(directory, rows, gnuplot):
    """ratios.png: per workload, one bar per allocator of its time relative to
    the fastest of the five (left) and of its peak RSS relative to the
    smallest (right), drawn from 1 (the line) to the ratio on a log scale: the
    best has no bar, and the longer pymalloc's (red) bar, the further it is
    from the best."""
    data_path = os.path.join(directory, "chart.dat")
    script_path = os.path.join(directory, "chart.gp")
    png_path = os.path.join(directory, "ratios.png")
    count = len(rows)

    # Ten series per row: time relative to the best, per allocator, then RSS relative to the smallest.
    series = []
    for row in rows:
        if row.kind == "memory":
            # Its figure is RSS while live: no time bars, its own ratios in the RSS panel.
            time = [None] * len(ALLOCATORS)
        else:
            time = [row.relative_to_best(a) for a in ALLOCATORS]
        series.append(time + [row.peak_rss_relative(a) for a in ALLOCATORS])
    width = len(ALLOCATORS)
    time_low, time_high = chart_range([v for s in series for v in s[:width]])
    rss_low, rss_high = chart_range([v for s in series for v in s[width:]])
    limits = [(time_low, time_high)] * width + [(rss_low, rss_high)] * width

    # Columns: y, then per series: the bar end (clamped to the axis), the true
    # ratio, where its label goes and how it is aligned (0 left, 1 right).
    # A label sits past the end of its bar, or inside a bar cut by the axis.
    with open(data_path, "w") as stream:
        stream.write("# y, then (bar end, ratio, label x, label alignment) for the time of each of %s,"
                     " then for the peak RSS of each\n" % ", ".join(ALLOCATORS))
        for index, values in enumerate(series):
            fields = ["%d" % (count - index)]
            for value, (low, high) in zip(values, limits):
                if value is None or value <= 0:
                    fields += ["?"] * 4
                    continue
                end = min(max(value, 1.0), high)
                if end >= high:
                    label_x, align = high / 1.04, 1
                else:
                    label_x, align = end * 1.03, 0
                fields += ["%.6g" % end, "%.6g" % value, "%.6g" % label_x, "%d" % align]
            stream.write("\t".join(fields) + "\n")

    def quoted(text):
        return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')

    ytics = ", ".join("%s %d" % (quoted(row.label), count - i) for i, row in enumerate(rows))

    def offset(number):
        # glibc on top, pymalloc at the bottom of each workload's group.
        return CHART_BAR_STEP * ((width - 1) / 2.0 - number % width)

    def bars(number, allocator, with_title):
        end = 2 + 4 * number  # columns: bar end, ratio, label x, label alignment
        shift = offset(number)
        return ("%s using (1):($1%+.3f):(1):(column(%d)):($1%+.3f):($1%+.3f) with boxxyerror lc rgb '%s' %s"
                % (quoted(data_path), shift, end, shift - CHART_BAR_HALF, shift + CHART_BAR_HALF,
                   CHART_COLORS[allocator], "title '%s'" % allocator if with_title else "notitle"))

    def labels(number):
        value, label_x, align = 3 + 4 * number, 4 + 4 * number, 5 + 4 * number
        text = "(sprintf(column(%d) < 10 ? '%%.2f' : '%%.1f', column(%d)))" % (value, value)
        codes = [(0, "left"), (1, "right")]
        low, high = limits[number]
        present = [v for s in series for v in [s[number]] if v is not None and v > 0]
        codes = [(code, side) for code, side in codes
                 if any((min(v, high) >= high) == (code == 1) for v in present)]
        return ", ".join(
            "%s using (column(%d) == %d ? column(%d) : NaN):($1%+.3f):%s with labels %s font ',7' notitle"
            % (quoted(data_path), align, code, label_x, offset(number), text, side)
            for code, side in codes)

    def panel(first, with_titles):
        # Only series with data: gnuplot 5.4 can crash on a plot clause without a valid point.
        numbers = [n for n in range(first, first + width) if any(s[n] is not None for s in series)]
        if not numbers:
            return "NaN notitle"
        return ", ".join([bars(n, ALLOCATORS[n - first], with_titles) for n in numbers] +
                         [text for text in (labels(n) for n in numbers) if text])

    row_height = 16 * width
    height = 150 + row_height * count
    script = """# chart.gp -- written by bench/report.py; `gnuplot chart.gp` redraws ratios.png
set terminal pngcairo size 1600,{height} font ',10'
set output {png}
set datafile separator '\\t'
set datafile missing '?'
set style fill solid 0.85 noborder
set logscale x 2
set yrange [0.45:{count}.55]
set grid xtics
set key at screen 0.5, screen {key_y} center horizontal
set arrow 1 from 1, graph 0 to 1, graph 1 nohead lw 2 lc rgb 'black' front
set multiplot title '{allocators}: each bar is how far an allocator is from the best (log scale, no bar = the best)' font ',13'
set lmargin at screen 0.2
set rmargin at screen 0.6
set tmargin at screen {top}
set bmargin at screen {bottom}
set ytics ({ytics}) nomirror
set xrange [{time_low}:{time_high}]
set xtics ({time_tics})
set title 'time / the fastest time (rate rows: the best rate / the rate)'
plot {time_panel}
set lmargin at screen 0.63
set rmargin at screen 0.98
unset ytics
set xrange [{rss_low}:{rss_high}]
set xtics ({rss_tics})
set title 'peak RSS / the smallest peak RSS (RSS row: RSS while live)'
plot {rss_panel}
unset multiplot
""".format(height=height, png=quoted(png_path), count=count, ytics=ytics,
           allocators=", ".join(a for number, a in enumerate(ALLOCATORS)
                                if any(s[number] is not None or s[number + width] is not None
                                       for s in series)),
           top=1 - 70.0 / height, bottom=80.0 / height, key_y=25.0 / height,
           time_low=time_low, time_high=time_high, time_tics=power_of_two_tics(1, time_high),
           rss_low=rss_low, rss_high=rss_high, rss_tics=power_of_two_tics(1, rss_high),
           time_panel=panel(0, True), rss_panel=panel(width, False))
    with open(script_path, "w") as stream:
        stream.write(script)
    try:
        completed = subprocess.run([gnuplot, script_path], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return "chart: gnuplot failed to run (%s); no ratios.png" % error
    if completed.returncode != 0 or not os.path.exists(png_path):
        return "chart: gnuplot failed (%s): %s" % (describe_status(completed.returncode),
                                                   completed.stdout.strip()[-400:])
    return None


# ---- main ------------------------------------------------------------------------------


def parse_arguments(argv):
    parser = argparse.ArgumentParser(
        description="Run pymalloc-bench under glibc, jemalloc, mimalloc, tcmalloc and pymalloc"
        " and compare them.")
    parser.add_argument("--bench", required=True, help="the pymalloc-bench binary")
    parser.add_argument("--lib", required=True, help="libpymalloc.so to preload")
    for peer, (option, library, _) in PEER_LIBRARIES.items():
        parser.add_argument(option, default="", help="%s to preload ('' = leave %s out)" % (library, peer))
    parser.add_argument("--gnuplot", default="", help="gnuplot program ('' = no chart)")
    parser.add_argument("--results", required=True,
                        help="results folder; each run writes RESULTS/<date-time>/ and updates RESULTS/latest")
    parser.add_argument("--quick", action="store_true",
                        help="smoke mode: small sizes, short runs, one repetition (figures meaningless)")
    parser.add_argument("--min-time", type=float, default=None,
                        help="google-benchmark minimum time per benchmark, seconds (default 0.3; quick 0.01)")
    parser.add_argument("--repetitions", type=int, default=None,
                        help="repetitions of each benchmark, the median is kept (default 5; quick 1)")
    parser.add_argument("--filter", default="", help="only benchmarks matching this regex")
    parser.add_argument("--no-syscalls", action="store_true",
                        help="do not count system calls (no perf events on the syscall tracepoints)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds allowed for one family under one allocator (default 600; quick 60)")
    parser.add_argument("--report-only", metavar="DIR", default="",
                        help="do not run: report again from DIR (an earlier results folder)")
    options = parser.parse_args(argv)
    if options.min_time is None:
        options.min_time = 0.01 if options.quick else 0.3
    if options.repetitions is None:
        options.repetitions = 1 if options.quick else 5
    if options.timeout is None:
        options.timeout = 60 if options.quick else 600
    if options.repetitions < 1 or options.min_time <= 0:
        die("--repetitions must be >= 1 and --min-time > 0")
    return options


def make_results_dir(parent):
    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
    directory = os.path.join(parent, stamp)
    suffix = 1
    while os.path.exists(directory):
        suffix += 1
        directory = os.path.join(parent, "%s-%d" % (stamp, suffix))
    os.makedirs(os.path.join(directory, "raw"))
    latest = os.path.join(parent, "latest")
    try:
        if os.path.islink(latest) or os.path.exists(latest):
            os.remove(latest)
        os.symlink(os.path.basename(directory), latest)
    except OSError as error:
        print("report.py: cannot update %s: %s" % (latest, error), file=sys.stderr)
    return directory


def main(argv):
    options = parse_arguments(argv)
    for path, what in ((options.bench, "benchmark binary"), (options.lib, "libpymalloc.so")):
        if not os.path.isfile(path):
            die("%s not found: %s (build it first)" % (what, path))
    options.bench = os.path.abspath(options.bench)
    libraries = {"glibc": "libc", "pymalloc": os.path.abspath(options.lib)}
    for peer, (option, library, package) in PEER_LIBRARIES.items():
        path = getattr(options, peer)
        libraries[peer] = os.path.abspath(path) if path else ""
        if path and not os.path.isfile(path):
            print("report.py: %s library not found: %s; its columns will say n/a" % (peer, path),
                  file=sys.stderr)
            libraries[peer] = ""
        if not libraries[peer]:
            print("report.py: no %s to compare with (install Debian's %s or configure --with-%s=PATH);"
                  " its columns will say n/a" % (peer, package, peer), file=sys.stderr)

    benchmarks = list_benchmarks(options.bench, options.filter)
    if options.report_only:
        directory = os.path.abspath(options.report_only)
        runs = load_raw(os.path.join(directory, "raw"), benchmarks, libraries)
    else:
        directory = make_results_dir(os.path.abspath(options.results))
        print("report.py: %d benchmarks in %d families x %d allocators -> %s" % (
            len(benchmarks), len(families_in_order(benchmarks)), len(ALLOCATORS), directory),
            file=sys.stderr, flush=True)
        runs = run_all(options, benchmarks, libraries, os.path.join(directory, "raw"))

    rows = build_rows(benchmarks, runs)
    table = table_lines(rows)
    note_lines = notes(rows, runs, options, libraries)
    chart_problem = None
    if options.gnuplot and shutil.which(options.gnuplot):
        chart_problem = write_chart(directory, rows, options.gnuplot)
    else:
        chart_problem = "chart: gnuplot not found (install Debian's gnuplot-nox); no ratios.png"
    if chart_problem:
        note_lines.append(chart_problem)
    write_csv(os.path.join(directory, "results.csv"), rows)
    write_json(os.path.join(directory, "results.json"), rows, runs, options, libraries, note_lines, table)
    with open(os.path.join(directory, "table.txt"), "w") as stream:
        stream.write("\n".join(table + [""] + note_lines) + "\n")

    if options.quick:
        print("QUICK MODE: reduced sizes and one short run each -- a smoke test, not a measurement")
    print("\n".join(table))
    print()
    for line in note_lines:
        print("* " + line.replace("\n", "\n    "))
    print()
    print("results: %s/{results.csv,results.json,table.txt%s}" % (
        directory, ",ratios.png" if os.path.exists(os.path.join(directory, "ratios.png")) else ""))
    failed = [r for r in runs if r.error and r.error != "not available"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
