# conc_green.py — gdb commands for conc's green threads.
#
#   (gdb) source scripts/gdb/conc_green.py
#   (gdb) conc-green list          every green thread of every OS thread: state, name
#   (gdb) conc-green bt N          backtrace of green thread N (as numbered by list)
#
# A green thread that is not running is suspended inside the scheduler; its
# saved stack pointer (gs.sp) points at a small frame the context switch
# left (src/arch/switch_<cpu>.h): on x86-64 [FP control][resume address]
# [rbp] below a 128-byte red zone, on AArch64 [x29][resume address][FPCR][pad]. `bt N`
# loads those into the registers, prints the backtrace and puts the
# registers back (on a live process; a core file's registers cannot be
# changed). The live green threads of a hub are on its `all` list.
import gdb

_seen = []  # (OS thread, green thread value) as numbered by the last `list`


def _arch():
    a = gdb.selected_frame().architecture().name()
    return "aarch64" if "aarch64" in a else "x86-64"


def _hubs():
    inf = gdb.selected_inferior()
    orig = gdb.selected_thread()
    out = []
    try:
        for th in inf.threads():
            th.switch()
            try:
                hub = gdb.parse_and_eval("conc__tl_hub")
            except gdb.error:
                continue
            if int(hub) != 0:
                out.append((th, hub))
    finally:
        if orig is not None:
            orig.switch()
    return out


def _name(g):
    if int(g["name_state"]) == 2:
        return g["name"].string()
    return "(unnamed: Green-N is made when first asked for)"


def _state(hub, g, ready):
    gs = g["gs"]
    st = int(g["status"])
    if hub["cur"] == gs.address:
        return "running"
    if st == 0:
        return "new (ready to start)"
    if int(gs.address) in ready:
        return "ready"
    if int(gs["parked_w"]) != 0:
        if int(gs["heap_idx"]) != 0xFFFFFFFFFFFFFFFF:
            return "blocked (with a deadline)"
        return "blocked"
    return "suspended"


def _ready_set(hub):
    s = set()
    p = hub["ready_head"]
    n = 0
    while int(p) != 0 and n < 10000000:
        s.add(int(p))
        p = p["next"]
        n += 1
    return s


class ConcGreen(gdb.Command):
    """conc green threads: `conc-green list`, `conc-green bt N`."""

    def __init__(self):
        super().__init__("conc-green", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        argv = gdb.string_to_argv(arg)
        if not argv or argv[0] == "list":
            self.list()
        elif argv[0] == "bt" and len(argv) == 2:
            self.bt(int(argv[1]))
        else:
            raise gdb.GdbError("usage: conc-green list | conc-green bt N")

    def list(self):
        global _seen
        _seen = []
        hubs = _hubs()
        if not hubs:
            print("no green threads (no OS thread has a hub)")
            return
        for th, hub in hubs:
            h = hub.dereference()
            ready = _ready_set(h)
            main = "running" if h["cur"] == h["main"].address else (
                "blocked" if int(h["main"]["parked_w"]) else "ready")
            print("OS thread %d (LWP %d): %d live green thread(s); its own context: %s"
                  % (th.num, th.ptid[1], int(h["nalive"]), main))
            g = h["all"]
            while int(g) != 0:
                gv = g.dereference()
                _seen.append((th, g))
                print("  [%d] %s  %-28s %s" % (len(_seen), str(g), _state(h, gv, ready), _name(gv)))
                g = gv["all_next"]

    def bt(self, n):
        if n < 1 or n > len(_seen):
            raise gdb.GdbError("no green thread %d: run `conc-green list` first" % n)
        th, g = _seen[n - 1]
        th.switch()
        gv = g.dereference()
        hub = gdb.parse_and_eval("conc__tl_hub").dereference()
        if hub["cur"] == gv["gs"].address:
            print("green thread %d is running: this is the OS thread's own backtrace" % n)
            gdb.execute("bt")
            return
        sp = int(gv["gs"]["sp"])
        u64 = gdb.lookup_type("unsigned long").pointer()
        word = lambda a: int(gdb.Value(a).cast(u64).dereference())
        if _arch() == "aarch64":
            regs = {"$x29": word(sp), "$pc": word(sp + 8), "$sp": sp + 32}
        else:
            regs = {"$rip": word(sp + 8), "$rbp": word(sp + 16), "$rsp": sp + 24 + 128}
        frame = gdb.newest_frame()
        saved = {r: int(frame.read_register(r[1:])) for r in regs}
        try:
            for r, v in regs.items():
                gdb.execute("set %s = %d" % (r, v), to_string=True)
            print("green thread %d (%s):" % (n, _name(gv)))
            gdb.execute("bt")
        finally:
            for r, v in saved.items():
                gdb.execute("set %s = %d" % (r, v), to_string=True)


ConcGreen()
