#!/usr/bin/python3
"""workload.py -- an allocation-heavy Python workload for the preload tests.

Builds and drops millions of small objects (lists, dicts, sets, strings,
tuples, bytes), once in the main thread and then in 4 threads at the same
time, collects reference cycles with gc.collect(), round-trips a document
through json and sorts large lists.  It prints only deterministic checksums
(no timings, addresses, ids or hash-order dependent output), so its stdout
must be identical with and without LD_PRELOAD=libpymalloc.so.

usage: workload.py [SCALE]   (SCALE: a positive number, default 1)
"""
import gc
import hashlib
import json
import random
import sys
import threading
import zlib

WINDOW = 4096          # records kept alive at once by one churn()


def crc_text(text, acc=0):
    return zlib.crc32(text.encode("utf-8"), acc)


def make_record(i, k):
    """A record made of many small objects of every common kind."""
    name = "rec%d-%x" % (i, k)
    blob = name.encode("ascii") * (1 + k % 5) + bytes((k & 0xFF, i & 0xFF))
    key = (i, name, k % 97, float(k % 1000) / 8)
    info = {
        "id": i,
        "name": name,
        "tags": [k % 7, k % 11, k % 13, name[:3]],
        "key": key,
        "even": k % 2 == 0,
    }
    members = {k % 1000, (k >> 10) % 1000, i % 1000, -(k % 50)}
    pieces = [name[j:j + 3] for j in range(0, len(name), 3)]
    return (key, info, members, pieces, blob)


def digest_record(record, acc):
    key, info, members, pieces, blob = record
    acc = crc_text(repr(key), acc)
    acc = crc_text(repr(info), acc)          # dicts keep insertion order
    acc = crc_text(repr(sorted(members)), acc)
    acc = crc_text("|".join(pieces).upper(), acc)
    return zlib.crc32(blob, acc)


def churn(seed, count):
    """Create `count` records, keeping WINDOW of them alive and replacing
    random ones, so objects of every size are freed in random order."""
    rng = random.Random(seed)
    window = [None] * WINDOW
    acc = 0
    total_len = 0
    for i in range(count):
        k = rng.getrandbits(30)
        record = make_record(i, k)
        slot = k % WINDOW
        old = window[slot]
        if old is not None:
            acc = digest_record(old, acc)
        window[slot] = record
        if i % 997 == 0:
            # drop a whole run of records at once, and grow/shrink a list
            start = rng.randrange(WINDOW - 64)
            for j in range(start, start + 64):
                window[j] = None
            grown = [str(x) for x in range(k % 3000)]
            total_len += len(grown) + len("".join(grown))
            del grown[::2]
            total_len += len(grown)
    for record in window:
        if record is not None:
            acc = digest_record(record, acc)
    return acc, total_len


class Node:
    """Objects in reference cycles, for gc.collect()."""
    finalized = 0
    lock = threading.Lock()

    def __init__(self, value):
        self.value = value
        self.peer = None
        self.payload = [value, str(value), {"v": value}]

    def __del__(self):
        with Node.lock:
            Node.finalized += 1


def cycles(count):
    created = 0
    for i in range(count):
        a, b, c = Node(i), Node(i + 1), Node(i + 2)
        a.peer, b.peer, c.peer = b, c, a
        created += 3
        del a, b, c
    gc.collect()
    return created


def json_round_trip(seed, count):
    rng = random.Random(seed)
    doc = {
        "items": [
            {
                "id": i,
                "name": "item-%d" % rng.getrandbits(20),
                "values": [rng.randrange(-1000, 1000) for _ in range(1 + i % 9)],
                "nested": {"a": [i, str(i)], "b": {"c": i % 3 == 0}},
                "ratio": (i % 97) / 4.0,
            }
            for i in range(count)
        ],
        "meta": {"seed": seed, "count": count, "text": "\u00e9t\u00e9 \u2713"},
    }
    text = json.dumps(doc, sort_keys=True)
    back = json.loads(text)
    same = back == doc
    text2 = json.dumps(back, sort_keys=True, indent=1)
    return same, hashlib.sha256(text.encode()).hexdigest()[:16], len(text), zlib.crc32(text2.encode())


def sorting(seed, count):
    rng = random.Random(seed)
    numbers = [rng.getrandbits(40) for _ in range(count)]
    words = ["w%08x" % (n & 0xFFFFFFF) for n in numbers]
    pairs = list(zip([n % 1000 for n in numbers], words))
    numbers.sort()
    words.sort(reverse=True)
    pairs.sort(key=lambda p: (p[0], p[1]))
    unique = sorted(set(words))          # sorted: hash order must not leak out
    h = hashlib.sha256()
    h.update(repr(numbers[::101]).encode())
    h.update("".join(words[::53]).encode())
    h.update(repr(pairs[::211]).encode())
    h.update(repr(len(unique)).encode())
    return h.hexdigest()[:16]


def bytes_work(seed, count):
    rng = random.Random(seed)
    buf = bytearray()
    chunks = []
    for i in range(count):
        chunk = bytes(rng.getrandbits(8) for _ in range(1 + i % 40))
        chunks.append(chunk)
        buf += chunk
        if len(chunks) > 500:
            del chunks[:250]
    joined = b"".join(chunks)
    return zlib.crc32(bytes(buf)), len(buf), zlib.crc32(joined)


def main():
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    if not scale > 0:
        sys.exit("workload.py: SCALE must be positive")
    n = max(1000, int(60000 * scale))

    acc, total = churn(1, n)
    print("churn main: records=%d crc=%08x len=%d" % (n, acc, total))

    print("cycles: created=%d" % cycles(max(100, n // 6)))

    results = [None] * 4
    errors = []

    def worker(index):
        try:
            per = n // 2
            res = [churn(100 + index, per)]
            res.append(cycles(max(100, per // 12)))
            res.append(json_round_trip(200 + index, max(100, per // 20)))
            res.append(sorting(300 + index, max(1000, per // 2)))
            res.append(bytes_work(400 + index, max(100, per // 10)))
            results[index] = res
        except BaseException as error:      # report it; do not hide it
            errors.append("thread %d: %r" % (index, error))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        for error in errors:
            print("ERROR", error)
        sys.exit(1)
    for index, res in enumerate(results):
        (acc, total), created, js, srt, byt = res
        print("thread %d: churn crc=%08x len=%d cycles=%d json=%s/%s/%d/%08x sort=%s bytes=%08x/%d/%08x"
              % ((index, acc, total, created) + js + (srt,) + byt))

    gc.collect()
    expected = 3 * (max(100, n // 6) + 4 * max(100, (n // 2) // 12))
    print("finalized: %d of %d" % (Node.finalized, expected))

    same, sha, length, crc2 = json_round_trip(7, max(200, n // 10))
    print("json main: equal=%s sha=%s len=%d crc=%08x" % (same, sha, length, crc2))
    print("sort main: %s" % sorting(8, max(2000, n)))
    print("bytes main: %08x/%d/%08x" % bytes_work(9, max(100, n // 5)))

    # strings: build, join, split, replace, encode
    parts = ["%d:%s" % (i, "xyz" * (i % 7)) for i in range(n)]
    text = ",".join(parts)
    split = text.split(",")
    replaced = text.replace("xyz", "XY").encode("utf-16-le")
    print("strings: n=%d len=%d crc=%08x utf16=%08x"
          % (len(split), len(text), crc_text(text), zlib.crc32(replaced)))


if __name__ == "__main__":
    main()
