#!/usr/bin/python3
"""Python peers of bench/green_bench.c (issue 7): greenlet and gevent doing
the work of conc's green-thread rows, so the table can show conc-vs-greenlet
and conc-vs-gevent ratios. Debian's python3-greenlet and python3-gevent,
run with /usr/bin/python3 (bench/run passes it).

    /usr/bin/python3 bench/green_python.py IMPL ROW [N]

prints one value on stdout (switch and spawn_join first do a warm-up with
a tenth of N, discarded):

    greenlet switch N     ns per switch: two greenlets switch() to each
                          other, N times each (2N switches)
    gevent switch N       ns per switch: two greenlets each call
                          gevent.sleep(0) N times; every sleep(0) goes
                          through the hub's loop to the other one
    gevent spawn_join N   ns per gevent.spawn(f).join() of an empty f,
                          N times one after the other
    gevent idle_rss N     bytes of RSS per greenlet with N alive, each
                          blocked in gevent.event.Event().wait()
    gevent echo           gevent.server.StreamServer echo server on
                          127.0.0.1 (port on stdout, then serves); exits
                          when stdin reaches EOF (the bench closes it)

A failed check exits with status 1 and the reason on stderr. With
--missing, prints which of greenlet/gevent cannot be imported and exits 0
(the bench skips those peers with that note).
"""

import os
import sys
import threading
from time import perf_counter


def die(msg):
    sys.stderr.write("green_python.py: %s\n" % msg)
    sys.exit(1)


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def greenlet_switch(n):
    from greenlet import greenlet

    count = [0, 0]

    def a():
        for _ in range(n):
            count[0] += 1
            gb.switch()

    def b():
        for _ in range(n):
            count[1] += 1
            ga.switch()

    ga = greenlet(a)
    gb = greenlet(b)
    t0 = perf_counter()
    ga.switch()  # a and b alternate; a ends after its n-th switch came back
    t1 = perf_counter()
    if count != [n, n]:
        die("greenlet switch: counted %r, wanted %d each" % (count, n))
    return (t1 - t0) / (2 * n) * 1e9


def gevent_switch(n):
    import gevent

    turn = [0]
    missed = [0]

    def body():
        for _ in range(n):
            turn[0] += 1
            before = turn[0]
            gevent.sleep(0)
            if turn[0] == before:
                missed[0] += 1

    t0 = perf_counter()
    gs = [gevent.spawn(body), gevent.spawn(body)]
    gevent.joinall(gs, raise_error=True)
    t1 = perf_counter()
    if turn[0] != 2 * n:
        die("gevent switch: %d iterations, wanted %d" % (turn[0], 2 * n))
    if missed[0] > 2:
        die("gevent switch: %d sleep(0) calls came back without the other greenlet running" % missed[0])
    return (t1 - t0) / (2 * n) * 1e9


def gevent_spawn_join(n):
    import gevent

    ran = [0]

    def body():
        ran[0] += 1

    spawn = gevent.spawn
    t0 = perf_counter()
    for _ in range(n):
        spawn(body).join()
    t1 = perf_counter()
    if ran[0] != n:
        die("gevent spawn_join: %d bodies ran, wanted %d" % (ran[0], n))
    return (t1 - t0) / n * 1e9


def gevent_idle_rss(n):
    import gc

    import gevent
    from gevent.event import Event

    ev = Event()
    started = [0]

    def body():
        started[0] += 1
        ev.wait()

    gs = [None] * n  # the list of handles exists before the first measurement
    gevent.sleep(0)  # the hub and its loop exist too
    gc.collect()
    before = rss_bytes()
    for i in range(n):
        gs[i] = gevent.spawn(body)
    t_end = perf_counter() + 120
    while started[0] < n:
        gevent.sleep(0)
        if perf_counter() > t_end:
            die("gevent idle_rss: only %d of %d greenlets started" % (started[0], n))
    after = rss_bytes()
    ev.set()
    gevent.joinall(gs)
    if not all(g.dead for g in gs):
        die("gevent idle_rss: greenlets still alive after the event was set")
    return (after - before) / n


def gevent_echo():
    from gevent.server import StreamServer

    def handle(sock, _addr):
        try:
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                sock.sendall(data)
        finally:
            sock.close()

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    sys.stdout.write("%d\n" % server.server_port)
    sys.stdout.flush()

    def watch_stdin():
        # a real OS thread (nothing is monkey-patched): it only blocks in
        # read() and ends the process once the bench closes our stdin
        while os.read(0, 4096):
            pass
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    server.serve_forever()


ROWS = {
    ("greenlet", "switch"): greenlet_switch,
    ("gevent", "switch"): gevent_switch,
    ("gevent", "spawn_join"): gevent_spawn_join,
    ("gevent", "idle_rss"): gevent_idle_rss,
}


def main(argv):
    if argv[:1] == ["--missing"]:
        for mod in ("greenlet", "gevent"):
            try:
                __import__(mod)
            except ImportError as e:
                print("%s: %s" % (mod, e))
        return 0
    if len(argv) == 2 and tuple(argv) == ("gevent", "echo"):
        gevent_echo()
        return 0
    if len(argv) != 3 or tuple(argv[:2]) not in ROWS:
        die("usage: green_python.py IMPL ROW N  (%s) | gevent echo | --missing"
            % ", ".join(" ".join(k) for k in ROWS))
    fn = ROWS[tuple(argv[:2])]
    n = int(argv[2])
    if n < 1:
        die("N must be >= 1")
    if argv[1] in ("switch", "spawn_join"):
        fn(max(1, n // 10))
    print("%.4f" % fn(n))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
