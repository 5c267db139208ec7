#!/usr/bin/python3
"""Python peer of bench/pool_bench.c: the same rows, done with CPython's
concurrent.futures.ProcessPoolExecutor, multiprocessing.Pool and
multiprocessing.Manager, so conc's table can show conc-vs-python ratios.

Run it with Debian's interpreter (/usr/bin/python3), as bench/run does:

    /usr/bin/python3 bench/pool_python.py [--reps N] [--scale F] ROW [ROW...]

For each ROW it does one warm-up run on a fraction of the work
(discarded), then N measured runs, and prints one value per line (the C
driver takes the median):

    ppe.throughput     tasks/s: submit 20k trivial tasks (ident(i) -> i) to
                       ProcessPoolExecutor(2), then wait for every result
    ppe.latency        us per submit -> result() of one trivial task (500)
    pool.map_chunked   items/s: Pool(2).map(square, 1M ints), default
                       chunksize (results checked after the clock)
    ppe.broken_detect  ms from os.kill(pid, SIGKILL) of the worker running a
                       spinning task until its future has failed with
                       BrokenProcessPool
    manager.dict_ops   set+get pairs/s on Manager().dict() from a forked
                       child (2000 pairs; d[k] = v; d[k])
    manager.sem_ops    acquire+release pairs/s on Manager().Semaphore(1)
                       from the parent (2000 pairs)

Every pool and manager uses the fork context (3.11's default on Linux, as
conc's bench uses CONC_FORK); pools are created and every worker has run
tasks before the clock starts. Every run checks its results and exits
with status 1 when a check fails. With --table, a readable median per row
goes to stdout instead.
"""

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import select
import signal
import statistics
import sys
import time

SCALE = 1.0
WARMUP = False
WORKERS = 2
CTX = mp.get_context("fork")


def scaled(n):
    f = SCALE * (0.2 if WARMUP else 1.0)
    return max(1, int(n * f))


def ident(x):
    return x


def square(x):
    return x * x


# The busy task's worker writes its pid here (inherited through fork).
BUSY_R, BUSY_W = os.pipe()


def busy():
    os.write(BUSY_W, os.getpid().to_bytes(4, "little"))
    end = time.monotonic() + 20
    while time.monotonic() < end:
        pass


def new_executor():
    ex = cf.ProcessPoolExecutor(WORKERS, mp_context=CTX)
    # every worker started and has run tasks
    for f in [ex.submit(ident, i) for i in range(200)]:
        f.result()
    return ex


# ------------------------------------------------------------ executor

def throughput():
    n = scaled(20_000)
    with new_executor() as ex:
        submit = ex.submit
        t0 = time.perf_counter()
        fs = [submit(ident, i) for i in range(n)]
        bad = sum(f.result() != i for i, f in enumerate(fs))
        t1 = time.perf_counter()
    if bad:
        raise SystemExit(f"{bad} wrong results")
    return n / (t1 - t0)


def latency():
    n = scaled(500)
    with new_executor() as ex:
        submit = ex.submit
        bad = 0
        t0 = time.perf_counter()
        for i in range(n):
            bad += submit(ident, i).result() != i
        t1 = time.perf_counter()
    if bad:
        raise SystemExit(f"{bad} wrong results")
    return (t1 - t0) / n * 1e6


def broken_detect():
    ex = new_executor()
    f = ex.submit(busy)
    r, _, _ = select.select([BUSY_R], [], [], 30)
    if not r:
        raise SystemExit("the busy task did not start")
    pid = int.from_bytes(os.read(BUSY_R, 4), "little")
    time.sleep(0.002)  # well into its spin
    t0 = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    try:
        f.result(timeout=10)
        raise SystemExit("the busy task's future did not fail")
    except cf.process.BrokenProcessPool:
        t1 = time.perf_counter()
    except cf.TimeoutError:
        raise SystemExit("the busy task's future was still pending 10 s after the kill")
    ex.shutdown(wait=True)
    return (t1 - t0) * 1e3


# ------------------------------------------------------------ pool

def map_chunked():
    n = scaled(1_000_000)
    xs = list(range(n))
    with CTX.Pool(WORKERS) as pool:
        pool.map(square, range(4096))  # every worker runs a chunk
        t0 = time.perf_counter()
        ys = pool.map(square, xs)
        t1 = time.perf_counter()
    if len(ys) != n or any(y != x * x for x, y in zip(xs, ys)):
        raise SystemExit("wrong squares")
    return n / (t1 - t0)


# ------------------------------------------------------------ manager

def dict_child(d, n, out, ready_w, go_r):
    d["warm"] = b"up"  # the proxy reconnects here, before the gate
    os.write(ready_w, b"r")
    if os.read(go_r, 1) != b"g":
        raise SystemExit(2)
    keys = [b"key%d" % (i % 64) for i in range(64)]
    pad = b"v" * 8
    t0 = time.monotonic()
    for i in range(n):
        k = keys[i % 64]
        v = i.to_bytes(8, "little") + pad
        d[k] = v
        if d[k] != v:
            raise SystemExit(3)
    out[1] = time.monotonic() - t0
    out[0] = 1.0


def dict_ops():
    n = scaled(2_000)
    with CTX.Manager() as m:
        d = m.dict()
        out = CTX.Array("d", 2, lock=False)
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        child = CTX.Process(target=dict_child, args=(d, n, out, ready_w, go_r))
        child.start()
        if os.read(ready_r, 1) != b"r":
            raise SystemExit("the child did not start")
        os.write(go_w, b"g")
        child.join()
        for fd in (ready_r, ready_w, go_r, go_w):
            os.close(fd)
        if child.exitcode != 0 or out[0] != 1.0:
            raise SystemExit(f"the dict child's exit code is {child.exitcode}")
    return n / out[1]


def sem_ops():
    n = scaled(2_000)
    with CTX.Manager() as m:
        s = m.Semaphore(1)
        for _ in range(20):  # warm up
            s.acquire()
            s.release()
        t0 = time.monotonic()
        for _ in range(n):
            s.acquire()
            s.release()
        t1 = time.monotonic()
    return n / (t1 - t0)


ROWS = {
    "ppe.throughput": throughput,
    "ppe.latency": latency,
    "pool.map_chunked": map_chunked,
    "ppe.broken_detect": broken_detect,
    "manager.dict_ops": dict_ops,
    "manager.sem_ops": sem_ops,
}


def main():
    global SCALE, WARMUP
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--table", action="store_true")
    ap.add_argument("rows", nargs="*", default=list(ROWS))
    a = ap.parse_args()
    SCALE = a.scale
    for row in a.rows:
        if row not in ROWS:
            raise SystemExit(f"unknown row {row} (have: {' '.join(ROWS)})")
    for row in a.rows:
        fn = ROWS[row]
        WARMUP = True
        fn()
        WARMUP = False
        vals = [fn() for _ in range(a.reps)]
        if a.table:
            print(f"{row:24} {statistics.median(vals):14.1f}   ({a.reps} reps)")
        else:
            for v in vals:
                print(repr(v))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
