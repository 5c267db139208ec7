#!/usr/bin/python3
"""Python peer of bench/selectors_bench.c: selectors.DefaultSelector (epoll
on Linux) doing the same work, so the table shows conc-vs-python ratios.

    /usr/bin/python3 bench/selectors_python.py [--reps N] [--scale F] ROW

ROW is selectors.sparse_10 or selectors.sparse_1000: N registered fds for
reading (N - 1 idle unbound UDP sockets, never readable, and one end of a
socketpair holding one unread byte), then select(0) in a loop for
0.1 s * scale. One warm-up run (discarded), then one value per line:
select() calls per second; every call must report exactly the one ready
key (exit 1 otherwise).
"""

import argparse
import selectors
import socket
import sys
import time


def run(nfds, seconds):
    sel = selectors.DefaultSelector()
    idle = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(nfds - 1)]
    for s in idle:
        sel.register(s, selectors.EVENT_READ)
    a, b = socket.socketpair()
    sel.register(a, selectors.EVENT_READ, "active")
    b.send(b"x")
    select = sel.select
    calls = 0
    t0 = time.monotonic()
    end = t0 + seconds
    while True:
        for _ in range(64):
            ready = select(0)
            if len(ready) != 1 or ready[0][0].data != "active":
                sys.exit(1)
        calls += 64
        now = time.monotonic()
        if now >= end:
            break
    sel.close()
    for s in idle:
        s.close()
    a.close()
    b.close()
    return calls / (now - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("row")
    args = ap.parse_args()
    nfds = {"selectors.sparse_10": 10, "selectors.sparse_1000": 1000}.get(args.row)
    if nfds is None:
        sys.exit(2)
    run(nfds, 0.02)
    for _ in range(args.reps):
        print(run(nfds, 0.1 * args.scale), flush=True)


main()
