#!/usr/bin/env python3
"""regrtest_verdicts.py -- reduce one run of CPython's regression suite
(`python3 -m test -j2 --junit-xml FILE ...`) to its verdicts, for
tests/real/python_regrtest.test to compare between a plain and a preloaded run.

Usage: regrtest_verdicts.py STDOUT JUNIT_XML OUTPUT

STDOUT is what regrtest printed: its progress lines ("[ 3/10] test_set
passed", "test_gc failed (2 errors)", "test_x crashed") give one verdict per
test file, durations and "-- running: ..." suffixes removed.  JUNIT_XML gives
one verdict per test case: ok, skipped, failure, error or expected-failure.
OUTPUT receives, sorted, one line per file ("file test_set passed") and one
per test case ("case test.test_set.TestSet.test_and ok"); timing and
addresses never appear, so two runs that behaved the same give identical
files.  A summary (counts per verdict, test cases per file) goes to stdout.

A missing or unreadable XML file (regrtest died before writing it) yields a
line "junit-xml missing"; a test file that crashed has no test cases.  The
exit status is 0 once OUTPUT is written; it is not a verdict.
"""
import collections
import re
import sys
import xml.etree.ElementTree as ET

PROGRESS = re.compile(r"\[\s*\d+/\d+(?:/\d+)?\]\s+(test_\w+|test\.\S+)\s+(.*)$")
DURATION = re.compile(r"\s*\((?:[\d.]+ (?:ms|sec)|\d+ min(?: \d+ sec)?|\d+ hour[^)]*)\)$")


def file_verdicts(stdout_path):
    verdicts = {}
    with open(stdout_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = PROGRESS.search(line.rstrip("\n"))
            if not m:
                continue
            name, rest = m.group(1), m.group(2)
            rest = rest.split(" -- running:")[0].strip()
            rest = DURATION.sub("", rest).strip()
            # "timed out (5 min)" keeps only "timed out".
            if rest.startswith("timed out"):
                rest = "timed out"
            verdicts[name] = rest
    return verdicts


def case_verdicts(xml_path):
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError) as exc:
        return None, str(exc)
    cases = {}
    reasons = collections.Counter()
    for case in root.iter("testcase"):
        name = case.get("name", "?")
        verdict = "ok"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                verdict = child.tag
                if child.tag == "skipped":
                    reasons[re.sub(r"\s+", " ", child.text or child.get("message") or "?")[:90]] += 1
                break
            if child.tag == "output":      # addExpectedFailure
                verdict = "expected-failure"
        if case.get("status") not in (None, "run"):
            verdict += " status=" + case.get("status")
        # A name seen twice (a test class run twice) keeps every verdict.
        if name in cases and cases[name] != verdict:
            verdict = cases[name] + "," + verdict
        cases[name] = verdict
    return cases, reasons


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: regrtest_verdicts.py STDOUT JUNIT_XML OUTPUT")
    stdout_path, xml_path, out_path = sys.argv[1:]
    files = file_verdicts(stdout_path)
    cases, reasons = case_verdicts(xml_path)
    lines = ["file %s %s" % (name, v) for name, v in files.items()]
    if cases is None:
        lines.append("junit-xml missing")
        print("junit-xml: unreadable (%s)" % reasons)
        cases, reasons = {}, collections.Counter()
    lines += ["case %s %s" % (name, v) for name, v in cases.items()]
    with open(out_path, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in sorted(lines)))

    per_verdict = collections.Counter(cases.values())
    per_file = collections.Counter()
    for name in cases:
        parts = name.split(".")
        if parts[0] == "test" and len(parts) > 1:
            per_file[parts[1]] += 1
        else:                               # ctypes.test.test_x...: test_ctypes
            per_file["test_" + parts[0]] += 1
    print("files: %d (%s)" % (len(files), ", ".join(
        "%s %d" % (v, n) for v, n in sorted(collections.Counter(files.values()).items()))))
    print("test cases: %d (%s)" % (len(cases), ", ".join(
        "%s %d" % (v, n) for v, n in sorted(per_verdict.items()))))
    for name in sorted(files):
        print("  %-22s %-28s %5d test cases" % (name, files[name], per_file.get(name, 0)))
    bad = sorted(n for n, v in cases.items() if v not in ("ok", "skipped", "expected-failure"))
    for name in bad[:20]:
        print("  not ok: %s %s" % (name, cases[name]))
    for reason, n in reasons.most_common(8):
        print("  skipped %4d x %s" % (n, reason))


if __name__ == "__main__":
    main()
