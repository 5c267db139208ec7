#!/usr/bin/python3
"""Python peer of bench/process_bench.c: the same rows, done with CPython's
multiprocessing, so conc's table can show conc-vs-python ratios.

Run it with Debian's interpreter (/usr/bin/python3), as bench/run does:

    /usr/bin/python3 bench/process_python.py [--reps N] [--scale F] ROW [ROW...]

For each ROW it does one warm-up run on a fraction of the work (discarded;
it also starts the fork server for the forkserver row), then N measured
runs, and prints one value per line (the C driver takes the median):

    process.start_join.fork        us per Process(target=empty) + start() +
    process.start_join.forkserver  join() with that start method (the
    process.start_join.spawn       exit code must be 0)
    pipe.pingpong                  round trips/s of a 16-byte message: two
                                   Pipe(duplex=False), send_bytes /
                                   recv_bytes, a forked child echoes
    ipc_queue.1p1c                 items/s of 64-byte bytes objects through
                                   Queue(): a forked producer puts, this
                                   process gets
    shared_value.contended2        locked increments/s of Value('l') (its
                                   default RLock) by two forked processes:
                                   `with v.get_lock(): v.value += 1`

As in the C program, the helper processes are started and report ready
before the clock starts and then wait on a gate (an os.pipe the parent
writes to); every run checks its result (echoes carry their sequence
number, messages arrive in order and intact, the counter ends at exactly 2
x the increments) and exits with status 1 when a check fails. With
--table, a readable median per row goes to stdout instead.
"""

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time

SCALE = 1.0
WARMUP = False

PING_SIZE = 16
QUEUE_MSG = 64


def scaled(n):
    f = SCALE * (0.2 if WARMUP else 1.0)
    return max(1, int(n * f))


def empty():
    pass


# ------------------------------------------------------------ start_join

def start_join(method, n):
    ctx = mp.get_context(method)
    Process = ctx.Process
    t0 = time.perf_counter()
    for i in range(n):
        p = Process(target=empty)
        p.start()
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"child {i}: exit code {p.exitcode}")
    t1 = time.perf_counter()
    return (t1 - t0) / n * 1e6


def start_join_fork():
    return start_join("fork", scaled(60))


def start_join_forkserver():
    return start_join("forkserver", scaled(15))


def start_join_spawn():
    return start_join("spawn", scaled(6))


# ------------------------------------------------------------ gate

def gate_child(ready_w, go_r):
    os.write(ready_w, b"r")
    if os.read(go_r, 1) != b"g":
        raise SystemExit(2)


def gate_ready(ready_r, n):
    got = b""
    while len(got) < n:
        b = os.read(ready_r, n - len(got))
        if not b:
            raise SystemExit("a helper process did not start")
        got += b


def close_all(*fds):
    for fd in fds:
        os.close(fd)


# ------------------------------------------------------------ pingpong

def echo(r, w, n):
    w.send_bytes(b"ready")
    recv, send = r.recv_bytes, w.send_bytes
    for _ in range(n):
        send(recv())


def pingpong():
    n = scaled(10_000)
    ctx = mp.get_context("fork")
    p2c_r, p2c_w = ctx.Pipe(duplex=False)
    c2p_r, c2p_w = ctx.Pipe(duplex=False)
    child = ctx.Process(target=echo, args=(p2c_r, c2p_w, n))
    child.start()
    p2c_r.close()
    c2p_w.close()
    if c2p_r.recv_bytes() != b"ready":
        raise SystemExit("the echo child did not start")
    pad = b"p" * (PING_SIZE - 8)
    msgs = [i.to_bytes(8, "little") + pad for i in range(n)]  # made before the clock
    send, recv = p2c_w.send_bytes, c2p_r.recv_bytes
    wrong = 0
    t0 = time.perf_counter()
    for m in msgs:
        send(m)
        wrong += recv() != m
    t1 = time.perf_counter()
    p2c_w.close()
    c2p_r.close()
    child.join()
    if wrong or child.exitcode != 0:
        raise SystemExit(f"{wrong} wrong echoes, echo child exit code {child.exitcode}")
    return n / (t1 - t0)


# ------------------------------------------------------------ queue

def qmsg(i):
    return i.to_bytes(8, "little") + bytes((i + k) & 0xFF for k in range(8, QUEUE_MSG))


def producer(q, n, ready_w, go_r):
    msgs = [qmsg(i) for i in range(n)]  # made before the gate opens
    gate_child(ready_w, go_r)
    put = q.put
    for m in msgs:
        put(m)
    q.close()
    q.join_thread()  # the feeder thread flushes everything before exit


def ipc_queue():
    n = scaled(50_000)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    child = ctx.Process(target=producer, args=(q, n, ready_w, go_r))
    child.start()
    gate_ready(ready_r, 1)
    want = [qmsg(i) for i in range(n)]
    get = q.get
    bad = 0
    t0 = time.perf_counter()
    os.write(go_w, b"g")
    for m in want:
        bad += get() != m
    t1 = time.perf_counter()
    child.join()
    close_all(ready_r, ready_w, go_r, go_w)
    if bad or child.exitcode != 0 or not q.empty():
        raise SystemExit(f"{bad} messages lost, reordered or torn; producer exit code {child.exitcode}")
    return n / (t1 - t0)


# ------------------------------------------------------------ shared value

def incr(v, n, idx, ends, ready_w, go_r):
    gate_child(ready_w, go_r)
    lock = v.get_lock()
    for _ in range(n):
        with lock:
            v.value += 1
    ends[idx] = time.monotonic()


def shared_value():
    n = scaled(100_000)
    ctx = mp.get_context("fork")
    v = ctx.Value("l", 0)
    ends = ctx.Array("d", 2, lock=False)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    kids = [ctx.Process(target=incr, args=(v, n, k, ends, ready_w, go_r)) for k in range(2)]
    for k in kids:
        k.start()
    gate_ready(ready_r, 2)
    t0 = time.monotonic()
    os.write(go_w, b"gg")
    for k in kids:
        k.join()
    close_all(ready_r, ready_w, go_r, go_w)
    if any(k.exitcode != 0 for k in kids):
        raise SystemExit(f"child exit codes {[k.exitcode for k in kids]}")
    if v.value != 2 * n:
        raise SystemExit(f"the counter is {v.value}, not {2 * n}: increments were lost")
    return 2 * n / (max(ends[0], ends[1]) - t0)


ROWS = {
    "process.start_join.fork": start_join_fork,
    "process.start_join.forkserver": start_join_forkserver,
    "process.start_join.spawn": start_join_spawn,
    "pipe.pingpong": pingpong,
    "ipc_queue.1p1c": ipc_queue,
    "shared_value.contended2": shared_value,
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
            print(f"{row:32} {statistics.median(vals):14.1f}   ({a.reps} reps)")
        else:
            for v in vals:
                print(repr(v))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
