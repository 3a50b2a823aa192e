"""gc_bench.py -- the workloads of bench/gc_bench.c in Python, for
bench/gc_compare.sh: the same object graphs built from a two-slot class, so
the figures compare pymalloc's GC side API with CPython's own refcounting
and collector.  Prints "<name> <seconds>", the best of --repeat runs."""
import gc
import sys
import time
import weakref


class Node:
    __slots__ = ("left", "right", "__weakref__")

    def __init__(self):
        self.left = None
        self.right = None


def run_churn(n):
    for _ in range(n):
        Node()


def run_cycles(n):
    gc.disable()
    for _ in range(n // 2):
        a = Node()
        b = Node()
        a.left = b
        b.left = a
    del a, b
    found = gc.collect()
    gc.enable()
    assert found == n // 2 * 2, found


def build_tree(n):
    nodes = [Node() for _ in range(n)]
    for i in range(1, n):
        if i % 2:
            nodes[(i - 1) // 2].left = nodes[i]
        else:
            nodes[(i - 1) // 2].right = nodes[i]
    return nodes[0]


def time_full(n):
    root = build_tree(n)
    gc.collect()
    start = time.perf_counter()
    found = gc.collect()
    elapsed = time.perf_counter() - start
    assert found == 0
    del root
    return elapsed


def run_chain(n):
    gc.disable()
    head = tail = Node()
    for _ in range(1, n):
        nxt = Node()
        tail.left = nxt
        tail = nxt
    del tail, nxt
    del head
    gc.enable()


callbacks_run = 0


def run_weakrefs(n):
    global callbacks_run
    callbacks_run = 0
    refs = set()

    def callback(ref):
        global callbacks_run
        callbacks_run += 1
        refs.discard(ref)

    for _ in range(n):
        obj = Node()
        refs.add(weakref.ref(obj, callback))
        del obj
    assert callbacks_run == n, callbacks_run


def run_build(n):
    root = build_tree(n)
    del root


def main():
    n, repeat, only = 1000000, 3, None
    args = sys.argv[1:]
    while args:
        arg = args.pop(0)
        if arg == "--n":
            n = int(args.pop(0))
        elif arg == "--repeat":
            repeat = int(args.pop(0))
        else:
            only = arg
    sys.setrecursionlimit(10000)
    workloads = [("churn", run_churn, False), ("cycles", run_cycles, False), ("full", time_full, True),
                 ("chain", run_chain, False), ("weakrefs", run_weakrefs, False), ("build", run_build, False)]
    for name, run, timed in workloads:
        if only and only != name:
            continue
        best = float("inf")
        for _ in range(repeat):
            if timed:
                elapsed = run(n)
            else:
                start = time.perf_counter()
                run(n)
                elapsed = time.perf_counter() - start
            best = min(best, elapsed)
            gc.collect()
        print(f"{name} {best:.6f}", flush=True)


main()
