#!/usr/bin/python3
"""Python peer of bench/deadlock_bench.c: CPython's own GIL on the same two
threads, so the table can compare conc_gil_t with the real thing.

    /usr/bin/python3 bench/deadlock_python.py [--reps N] [--scale F] ROW [ROW...]

Rows (one warm-up run, discarded, then N runs; one value per line):

    gil.convoy   per run TWO lines: p50 then p99 (us) of an I/O-bound
                 thread's response time while a CPU-bound thread runs: the
                 I/O thread sleeps 1 ms (a blocking call that releases the
                 GIL) and the response time is how much later than 1 ms it
                 runs again (it must get the GIL back from the CPU-bound
                 thread: about one switch interval, 5 ms by default)
    gil.handoff  ns per forced hand-off between two CPU-bound threads with
                 the switch interval at 1 us (sys.setswitchinterval(1e-6)):
                 the run time divided by the number of times the running
                 thread changed
"""

import argparse
import statistics
import sys
import threading
import time
from time import perf_counter

SCALE = 1.0
SLEEP = 0.001


def scaled(n):
    return max(1, int(n * SCALE))


def pct(vals, p):
    s = sorted(vals)
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))
    return s[k]


def convoy(samples=300):
    samples = scaled(samples)
    stop = False
    started = threading.Event()

    def cpu():
        x = 0
        started.set()
        while not stop:
            x += 1

    t = threading.Thread(target=cpu)
    t.start()
    started.wait()
    lat = []
    sleep = time.sleep
    for _ in range(samples):
        t0 = perf_counter()
        sleep(SLEEP)
        lat.append((perf_counter() - t0 - SLEEP) * 1e6)
    stop = True
    t.join()
    return pct(lat, 50), pct(lat, 99)


def handoff(seconds=0.3):
    seconds = max(0.05, seconds * SCALE)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    state = {"last": None, "switches": 0, "stop": False}
    gate = threading.Barrier(3)

    def run(me):
        gate.wait()
        st = state
        while not st["stop"]:
            if st["last"] is not me:
                st["last"] = me
                st["switches"] += 1

    ts = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    gate.wait()
    t0 = perf_counter()
    time.sleep(seconds)  # the main thread sleeps without the GIL
    state["stop"] = True
    t1 = perf_counter()
    for t in ts:
        t.join()
    sys.setswitchinterval(old)
    n = state["switches"]
    if n < 2:
        raise SystemExit("gil.handoff: the threads never switched")
    return (t1 - t0) * 1e9 / n


def main():
    global SCALE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--table", action="store_true")
    ap.add_argument("rows", nargs="*")
    args = ap.parse_args()
    SCALE = args.scale
    rows = args.rows or ["gil.convoy", "gil.handoff"]
    for name in rows:
        if name == "gil.convoy":
            convoy()
            vals = [convoy() for _ in range(args.reps)]
            if args.table:
                print(f"gil.convoy p50 {statistics.median(v[0] for v in vals):.0f} us, "
                      f"p99 {statistics.median(v[1] for v in vals):.0f} us")
            else:
                for p50, p99 in vals:
                    print(repr(p50))
                    print(repr(p99))
        elif name == "gil.handoff":
            handoff()
            vals = [handoff() for _ in range(args.reps)]
            if args.table:
                print(f"gil.handoff {statistics.median(vals):.0f} ns")
            else:
                for v in vals:
                    print(repr(v))
        else:
            ap.error(f"unknown row {name!r}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
