#!/usr/bin/python3
"""Python peer of bench/futures_bench.c: the same rows, done with CPython's
concurrent.futures.ThreadPoolExecutor, so conc's table can show
conc-vs-python ratios.

Run it with Debian's interpreter (/usr/bin/python3), as bench/run does:

    /usr/bin/python3 bench/futures_python.py [--reps N] [--scale F] [--workers W] ROW [ROW...]

For each ROW it does one warm-up run with a tenth of the work (discarded),
then N measured runs, and prints one value per line (the C driver takes
the median):

    pool.throughput  tasks/s: ThreadPoolExecutor(W); submit 100k tasks, each
                     with its own Future, then result() on each in
                     submission order
    pool.latency     us per round trip: ex.submit(task, i).result(), 10k times
                     one after the other

W (--workers) is the number of CPUs by default, as in the C program. The
executor is created and its workers started before the clock. The task is
as empty as a Python function gets while still being checked: it returns
its argument; the run fails (exit status 1) unless every result is the
task's own argument. With --table, a readable median per row goes to
stdout instead.
"""

import argparse
import os
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter

SCALE = 1.0


def scaled(n):
    return max(1, int(n * SCALE))


def task(x):
    return x


def start_workers(ex, workers):
    # ThreadPoolExecutor starts a worker per submit while fewer than
    # max_workers exist and none is idle: keep `workers` tasks in flight.
    list(ex.map(task, range(workers * 4)))


def throughput(ex, n=100_000):
    n = scaled(n)
    submit = ex.submit
    t0 = perf_counter()
    fs = [submit(task, i) for i in range(n)]
    rs = [f.result() for f in fs]
    t1 = perf_counter()
    if rs != list(range(n)):
        raise SystemExit("a future returned something other than its task's result")
    return n / (t1 - t0)


def latency(ex, n=10_000):
    n = scaled(n)
    submit = ex.submit
    wrong = 0
    t0 = perf_counter()
    for i in range(n):
        wrong += submit(task, i).result() != i
    t1 = perf_counter()
    if wrong:
        raise SystemExit(f"{wrong} round trips returned the wrong result")
    return (t1 - t0) / n * 1e6


ROWS = {
    "pool.throughput": throughput,
    "pool.latency": latency,
}


def main():
    global SCALE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--table", action="store_true", help="print a readable median per row")
    ap.add_argument("rows", nargs="*", help="rows to run (default: all)")
    args = ap.parse_args()
    if args.reps < 1 or not args.scale > 0 or args.workers < 1:
        ap.error("--reps and --workers must be >= 1 and --scale > 0")
    for r in args.rows:
        if r not in ROWS:
            ap.error(f"unknown row {r!r} (have: {', '.join(ROWS)})")
    rows = args.rows or list(ROWS)
    with ThreadPoolExecutor(max_workers=args.workers) as ex:
        start_workers(ex, args.workers)
        for name in rows:
            fn = ROWS[name]
            SCALE = args.scale / 10  # warm-up with a tenth of the work, discarded
            fn(ex)
            SCALE = args.scale
            vals = [fn(ex) for _ in range(args.reps)]
            if args.table:
                unit = "tasks/s" if name == "pool.throughput" else "us"
                print(f"{name:20} {statistics.median(vals):14,.2f} {unit}  "
                      f"(min {min(vals):,.2f}, max {max(vals):,.2f}, {args.reps} reps)")
            else:
                for v in vals:
                    print(repr(v))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
