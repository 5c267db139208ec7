#!/usr/bin/python3
"""Python peer of bench/queue_bench.c: the same rows, done with CPython's own
queue module and threads, so conc's table can show conc-vs-python ratios.

Run it with Debian's interpreter (/usr/bin/python3), as bench/run does:

    /usr/bin/python3 bench/queue_python.py [--reps N] [--scale F] ROW [ROW...]

For each ROW it does one warm-up run with a tenth of the items (discarded),
then N measured runs, and prints one value per line, in items/s (the C
driver takes the median):

    queue.1p1c          queue.Queue(1024), 1 producer thread, 1 consumer
                        thread, 1M items
    queue.2p2c          queue.Queue(1024), 2 producers, 2 consumers, 1M in all
    simplequeue.1p1c    queue.SimpleQueue, 1 producer, 1 consumer, 1M items
    priorityqueue.1p1c  queue.PriorityQueue(1024), random priorities (ints,
                        drawn before the clock starts), 1 + 1 threads,
                        200k items

The work mirrors the C program: producer p of P puts p+1, p+1+P, ...; each
consumer takes exactly its share (it counts; no sentinel, no timing) and
adds up what it got; the run fails (exit status 1) unless the sums match
what was put and, for the FIFO rows, each consumer saw each producer's
items in increasing order. Item counts are smaller than the C ones (Python
is slower); the values are per second, so they compare directly. With
--table, a readable median per row goes to stdout instead.
"""

import argparse
import queue
import random
import statistics
import sys
import threading
from time import perf_counter

SCALE = 1.0
CAPACITY = 1024


def scaled(n):
    return max(1, int(n * SCALE))


def run(make, nprod, ncons, total, prios=None):
    """Move `total` items from nprod producer threads to ncons consumer
    threads through q = make(); return items/s. prios: a list per producer
    of the values to put (priority rows), else the FIFO numbering."""
    unit = nprod * ncons
    total = max(unit, total // unit * unit)
    per_prod, per_cons = total // nprod, total // ncons
    q = make()
    if prios is None:
        items = [range(p + 1, p + 1 + nprod * per_prod, nprod) for p in range(nprod)]
        check_order = True
    else:
        items = [prios[p][:per_prod] for p in range(nprod)]
        check_order = False
    want = sum(sum(it) for it in items)
    got = [0] * ncons
    bad = [False] * ncons
    ends = [0.0] * (nprod + ncons)
    gate = threading.Barrier(nprod + ncons + 1)

    def producer(p):
        put = q.put
        it = items[p]
        gate.wait()
        for v in it:
            put(v)
        ends[p] = perf_counter()

    def consumer(c):
        get = q.get
        s = 0
        gate.wait()
        if check_order:
            last = [0] * nprod
            disorder = False
            for _ in range(per_cons):
                v = get()
                s += v
                k = v % nprod
                if v <= last[k]:
                    disorder = True
                last[k] = v
            bad[c] = disorder
        else:
            for _ in range(per_cons):
                s += get()
        got[c] = s
        ends[nprod + c] = perf_counter()

    ts = [threading.Thread(target=producer, args=(p,)) for p in range(nprod)]
    ts += [threading.Thread(target=consumer, args=(c,)) for c in range(ncons)]
    for t in ts:
        t.start()
    gate.wait()
    t0 = perf_counter()
    for t in ts:
        t.join()
    t1 = max(ends)
    if sum(got) != want:
        raise SystemExit(f"checksum mismatch: got {sum(got)}, put {want}")
    if any(bad):
        raise SystemExit("a consumer got a producer's items out of FIFO order")
    if not q.empty():
        raise SystemExit("items left in the queue")
    return total / (t1 - t0)


def fifo(nprod, ncons):
    def row(n=1_000_000):
        return run(lambda: queue.Queue(CAPACITY), nprod, ncons, scaled(n))
    return row


def simple(n=1_000_000):
    return run(queue.SimpleQueue, 1, 1, scaled(n))


_prios = None


def priority(n=200_000):
    global _prios
    n = scaled(n)
    if _prios is None or len(_prios[0]) < n:
        rng = random.Random(12345)
        _prios = [[rng.getrandbits(31) + 1 for _ in range(n)]]
    return run(lambda: queue.PriorityQueue(CAPACITY), 1, 1, n, prios=_prios)


ROWS = {
    "queue.1p1c": fifo(1, 1),
    "queue.2p2c": fifo(2, 2),
    "simplequeue.1p1c": simple,
    "priorityqueue.1p1c": priority,
}


def main():
    global SCALE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--table", action="store_true", help="print a readable median per row")
    ap.add_argument("rows", nargs="*", help="rows to run (default: all)")
    args = ap.parse_args()
    if args.reps < 1 or not args.scale > 0:
        ap.error("--reps must be >= 1 and --scale > 0")
    for r in args.rows:
        if r not in ROWS:
            ap.error(f"unknown row {r!r} (have: {', '.join(ROWS)})")
    rows = args.rows or list(ROWS)
    for name in rows:
        fn = ROWS[name]
        SCALE = args.scale / 10  # warm-up with a tenth of the items, discarded
        fn()
        SCALE = args.scale
        vals = [fn() for _ in range(args.reps)]
        if args.table:
            print(f"{name:20} {statistics.median(vals):14,.0f} items/s  "
                  f"(min {min(vals):,.0f}, max {max(vals):,.0f}, {args.reps} reps)")
        else:
            for v in vals:
                print(repr(v))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
