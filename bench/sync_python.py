#!/usr/bin/python3
"""Python peer of bench/sync_bench.c: the same rows, done with CPython's own
threading module, so conc's table can show conc-vs-python ratios.

Run it with Debian's interpreter (/usr/bin/python3), as bench/run does:

    /usr/bin/python3 bench/sync_python.py [--reps N] [--scale F] ROW [ROW...]

For each ROW it does one warm-up run (discarded), then N measured runs, and
prints one value per line in the row's unit (the C driver takes the median):

    lock.uncontended    ns per acquire+release (bound methods, tight loop)
    lock.contended2     ops/s, 2 threads x 100k acquire/increment/release
    rlock.uncontended   ns per acquire+release
    event.pingpong      round trips/s between two threads (two Events)
    condition.pingpong  round trips/s, two threads passing a turn under a
                        Condition
    thread.start_join   us per Thread(target=empty).start() + join()

Iteration counts are smaller than the C ones (Python is slower); every value
is per operation or per second, so they compare directly. Every run checks
its result and exits non-zero if a check fails. With --table, a readable
median per row goes to stdout instead.
"""

import argparse
import statistics
import sys
import threading
from time import perf_counter

SCALE = 1.0


def scaled(n):
    return max(1, int(n * SCALE))


def lock_uncontended(make=threading.Lock, n=1_000_000):
    n = scaled(n)
    lock = make()
    acquire, release = lock.acquire, lock.release
    count = 0
    t0 = perf_counter()
    for _ in range(n):
        acquire()
        count += 1
        release()
    t1 = perf_counter()
    if count != n:
        raise SystemExit(f"lock.uncontended: count {count}, expected {n}")
    if make is threading.Lock and lock.locked():
        raise SystemExit("lock.uncontended: lock still locked")
    return (t1 - t0) * 1e9 / n


def rlock_uncontended():
    return lock_uncontended(threading.RLock)


def two_threads(a, b):
    """Run a() and b() in two threads started together; return
    (start, end) where end is when the later one finished."""
    gate = threading.Barrier(3)
    ends = [0.0, 0.0]

    def wrap(i, fn):
        gate.wait()
        fn()
        ends[i] = perf_counter()

    ts = [threading.Thread(target=wrap, args=(0, a)), threading.Thread(target=wrap, args=(1, b))]
    for t in ts:
        t.start()
    gate.wait()
    t0 = perf_counter()
    for t in ts:
        t.join()
    return t0, max(ends)


def lock_contended2(n=100_000):
    n = scaled(n)
    lock = threading.Lock()
    box = [0]

    def worker():
        acquire, release = lock.acquire, lock.release
        for _ in range(n):
            acquire()
            box[0] += 1
            release()

    t0, t1 = two_threads(worker, worker)
    if box[0] != 2 * n:
        raise SystemExit(f"lock.contended2: total {box[0]}, expected {2 * n}")
    return 2 * n / (t1 - t0)


def event_pingpong(n=10_000):
    n = scaled(n)
    e1, e2 = threading.Event(), threading.Event()
    rounds = [0, 0]

    def a():
        for _ in range(n):
            e1.set()
            e2.wait()
            e2.clear()
            rounds[0] += 1

    def b():
        for _ in range(n):
            e1.wait()
            e1.clear()
            e2.set()
            rounds[1] += 1

    t0, t1 = two_threads(a, b)
    if rounds != [n, n]:
        raise SystemExit(f"event.pingpong: rounds {rounds}, expected {n} each")
    return n / (t1 - t0)


def condition_pingpong(n=10_000):
    n = scaled(n)
    cond = threading.Condition(threading.Lock())
    state = {"turn": 0}
    turns = [0, 0]

    def player(k):
        def run():
            for _ in range(n):
                with cond:
                    while state["turn"] != k:
                        cond.wait()
                    state["turn"] = 1 - k
                    turns[k] += 1
                    cond.notify()
        return run

    t0, t1 = two_threads(player(0), player(1))
    if turns != [n, n] or state["turn"] != 0:
        raise SystemExit(f"condition.pingpong: turns {turns}, expected {n} each")
    return n / (t1 - t0)


def _empty():
    pass


def thread_start_join(n=1_000):
    n = scaled(n)
    Thread = threading.Thread
    t0 = perf_counter()
    for _ in range(n):
        t = Thread(target=_empty)
        t.start()
        t.join()
    t1 = perf_counter()
    return (t1 - t0) * 1e6 / n


ROWS = {
    "lock.uncontended": (lock_uncontended, "ns"),
    "lock.contended2": (lock_contended2, "ops/s"),
    "rlock.uncontended": (rlock_uncontended, "ns"),
    "event.pingpong": (event_pingpong, "rt/s"),
    "condition.pingpong": (condition_pingpong, "rt/s"),
    "thread.start_join": (thread_start_join, "us"),
}


def main():
    global SCALE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--table", action="store_true", help="print a readable median per row")
    ap.add_argument("rows", nargs="*", help="rows to run (default: all)")
    args = ap.parse_args()
    SCALE = args.scale
    rows = args.rows or list(ROWS)
    for name in rows:
        if name not in ROWS:
            ap.error(f"unknown row {name!r}; known: {', '.join(ROWS)}")
    for name in rows:
        fn, unit = ROWS[name]
        fn()  # warm-up, discarded
        vals = [fn() for _ in range(args.reps)]
        if args.table:
            print(f"{name:20s} {statistics.median(vals):14.1f} {unit}")
        else:
            for v in vals:
                print(repr(v))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
