#!/usr/bin/python3
"""Python peer of bench/mpi_bench.c: mpi4py.futures.MPIPoolExecutor on the
same work, run by mpi_bench under

    mpirun -n 4 python3 -m mpi4py.futures bench/mpi_python.py [--reps N] [--scale F]

(rank 0 runs this script, ranks 1..3 are the executor's workers). After a
warm-up it prints, for each rep, two lines:

    mpi.throughput   tasks/s: submit 4000 trivial tasks (ident(i) -> i),
                     then wait for every result (checked)
    mpi.latency      us per submit -> result() of one trivial task (300)
"""

import argparse
import sys
import time

from mpi4py.futures import MPIPoolExecutor


def ident(x):
    return x


def throughput(ex, n):
    t0 = time.perf_counter()
    fs = [ex.submit(ident, i) for i in range(n)]
    for i, f in enumerate(fs):
        if f.result() != i:
            sys.exit(1)
    return n / (time.perf_counter() - t0)


def latency(ex, n):
    t0 = time.perf_counter()
    for i in range(n):
        if ex.submit(ident, i).result() != i:
            sys.exit(1)
    return (time.perf_counter() - t0) / n * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0)
    a = ap.parse_args()
    nt = max(100, int(4000 * a.scale))
    nl = max(20, int(300 * a.scale))
    with MPIPoolExecutor() as ex:
        throughput(ex, nt // 4)  # warm-up: workers started and connected
        latency(ex, nl // 4)
        for _ in range(a.reps):
            print(throughput(ex, nt), flush=True)
            print(latency(ex, nl), flush=True)


if __name__ == "__main__":
    main()
