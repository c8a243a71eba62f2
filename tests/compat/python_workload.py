"""A Python workload for the compat test: dicts, strings, threads and a JSON round trip.

Deterministic: prints digests that must be identical with and without libhakmem.
Python's own allocator (pymalloc) takes small objects from 256 KiB arenas obtained with
malloc/mmap; large strings, lists and dict tables go straight to malloc/realloc.
"""
import hashlib
import json
import random
import sys
import threading

rng = random.Random(12345)


def dicts():
    d = {}
    for i in range(200_000):
        d[f"key-{i}-{rng.randrange(1 << 30)}"] = [i, str(i) * (i % 7), {"n": i}]
    for k in list(d)[::3]:
        del d[k]
    h = hashlib.sha256()
    for k in sorted(d):
        h.update(k.encode())
        h.update(repr(d[k]).encode())
    return len(d), h.hexdigest()


def strings():
    parts = []
    for i in range(50_000):
        parts.append("x" * (i % 4000) + str(i))
    big = "|".join(parts)  # one ~100 MB string: realloc/large-block path
    words = big.split("|")
    up = "".join(w.upper()[:50] for w in words)
    return len(big), len(words), hashlib.sha256(up.encode()).hexdigest()


def threads():
    results = [None] * 8

    def work(idx):
        r = random.Random(idx)
        acc = []
        for _ in range(20_000):
            acc.append(bytes(r.randrange(1, 3000)))
            if len(acc) > 500:
                acc = acc[250:]
        results[idx] = sum(len(b) for b in acc)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return results


def json_round_trip():
    doc = {
        f"obj{i}": {
            "id": i,
            "name": "n" * (i % 100),
            "vals": [rng.random() for _ in range(i % 50)],
            "nested": {"a": [1, 2, {"b": "c" * (i % 300)}]},
        }
        for i in range(20_000)
    }
    text = json.dumps(doc, sort_keys=True)
    back = json.loads(text)
    if back != doc:
        raise SystemExit("json round trip lost data")
    return len(text), hashlib.sha256(text.encode()).hexdigest()


print("dicts", *dicts())
print("strings", *strings())
print("threads", *threads())
print("json", *json_round_trip())
sys.stdout.flush()
