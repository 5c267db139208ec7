#!/usr/bin/python3
"""check_trace.py — read a conc trace (Chrome trace-event JSON) back and
check it: the file parses, timestamps rise per track, slices nest, the
states of a track follow each other without overlap, every block that a
context ended has its wake (a flow from the waker into the ready slice that
follows), every flow has both ends, every track is named, and the dropped
count is written. Exit 0 when all holds, 1 with a list of what did not.

usage: check_trace.py FILE [--no-drops | --expect-dropped]
                            [--names A,B,...] [--min KEY=N ...]
KEYs for --min: blocked, wakes, tasks, spawns, submits, green_tracks,
thread_tracks, ready, running, turns, iowaits, blocked_lock, results,
pstarts, pexits, flows.
"""
import json
import sys
from collections import defaultdict


def ns(us):
    return round(us * 1000)


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    path = argv[1]
    opts = argv[2:]
    errors = []
    with open(path) as f:
        doc = json.load(f)
    evs = doc.get("traceEvents")
    other = doc.get("otherData", {})
    if not isinstance(evs, list):
        print("no traceEvents list")
        return 1
    if not isinstance(other.get("dropped_events"), int):
        errors.append("otherData.dropped_events missing")
    dropped = other.get("dropped_events", 0)

    names = {}
    tracks = defaultdict(list)  # (pid, tid) -> X events in file order
    for e in evs:
        ph = e.get("ph")
        if ph == "M" and e.get("name") == "thread_name":
            names[(e["pid"], e["tid"])] = e["args"]["name"]
        elif ph == "X":
            tracks[(e["pid"], e["tid"])].append(e)
        elif ph != "M":
            errors.append("unexpected event phase %r" % ph)

    count = defaultdict(int)
    flows_out = {}
    flows_in = {}
    for key, xs in tracks.items():
        if key not in names:
            errors.append("track %r has no thread_name" % (key,))
        tname = names.get(key, str(key))
        last = -1
        stack = []  # open containers: end times
        prev_state = None  # (end, slice) of the last state slice
        states = []
        for e in xs:
            ts, dur = ns(e["ts"]), ns(e["dur"])
            if dur < 0:
                errors.append("%s: negative dur" % tname)
            if ts < last:
                errors.append("%s: ts goes back at %s (%d < %d)" % (tname, e["name"], ts, last))
            last = ts
            while stack and stack[-1] <= ts and not (stack[-1] == ts and dur == 0):
                stack.pop()
            if stack and ts + dur > stack[-1]:
                errors.append("%s: slice %r at %d overlaps its container (ends %d)" % (tname, e["name"], ts, stack[-1]))
            stack.append(ts + dur)
            a = e.get("args", {})
            st = a.get("state")
            count[st] = count[st] + 1
            if st in ("running", "ready", "blocked", "I/O wait"):
                if prev_state is not None and ts < prev_state:
                    errors.append("%s: state %s at %d overlaps the previous state (ends %d)" % (tname, st, ts, prev_state))
                prev_state = ts + dur
                states.append(e)
            bid = e.get("bind_id")
            if bid is not None:
                if e.get("flow_out"):
                    if bid in flows_out:
                        errors.append("bind_id %s leaves twice" % bid)
                    flows_out[bid] = e
                elif e.get("flow_in"):
                    if bid in flows_in:
                        errors.append("bind_id %s arrives twice" % bid)
                    flows_in[bid] = e
                else:
                    errors.append("bind_id %s with no direction" % bid)
        # every block ended by a waker is followed by a ready slice with a flow in
        for i, e in enumerate(states):
            a = e["args"]
            if a["state"] != "blocked" or a.get("open"):
                continue
            count["blocked_" + a.get("on", "?")] += 1
            wb = a.get("woken_by")
            if wb in ("timeout", "interruption", "hub"):
                continue
            if wb == "unknown" or wb is None:
                count["blocked_unmatched"] += 1
                if "--no-drops" in opts:
                    errors.append("%s: a block at %s has no recorded wake" % (tname, e["ts"]))
                continue
            nxt = states[i + 1] if i + 1 < len(states) else None
            if nxt is None or nxt["args"]["state"] != "ready" or not nxt.get("flow_in"):
                errors.append("%s: a block at %s woken by %s is not followed by a ready slice with a flow"
                              % (tname, e["ts"], wb))
        kinds = set()
        if any(k[1] == 2147483646 for k in [key]):
            count["loop_tracks"] += 1
        elif key[0] >= 10000000:
            count["green_tracks"] += 1
        else:
            count["thread_tracks"] += 1
        del kinds

    for bid, e in flows_out.items():
        if bid not in flows_in:
            errors.append("flow %s from %r has no end" % (bid, e["name"]))
    for bid, e in flows_in.items():
        if bid not in flows_out:
            errors.append("flow %s into %r has no start" % (bid, e["name"]))
    count["flows"] = len(flows_out)
    count["wakes"] = count.get("wake", 0)
    count["tasks"] = count.get("task", 0)
    count["spawns"] = count.get("spawn", 0)
    count["submits"] = count.get("submit", 0)
    count["turns"] = count.get("hub turn", 0)
    count["iowaits"] = count.get("I/O wait", 0)
    count["blocked_lock"] = count.get("blocked_Lock", 0)
    count["results"] = count.get("result", 0)
    count["pstarts"] = count.get("process start", 0)
    count["pexits"] = count.get("process exit", 0)

    if "--no-drops" in opts and dropped != 0:
        errors.append("dropped_events is %d, expected 0" % dropped)
    if "--expect-dropped" in opts and not dropped > 0:
        errors.append("dropped_events is %r, expected > 0" % dropped)
    i = 0
    while i < len(opts):
        o = opts[i]
        if o == "--names":
            for n in opts[i + 1].split(","):
                if n not in names.values():
                    errors.append("no track named %r (have %s)" % (n, sorted(set(names.values()))))
            i += 1
        elif o == "--min":
            k, v = opts[i + 1].split("=")
            if count.get(k, 0) < int(v):
                errors.append("%s: %d, expected at least %s" % (k, count.get(k, 0), v))
            i += 1
        i += 1

    summary = {k: v for k, v in sorted(count.items()) if k}
    summary["dropped_events"] = dropped
    print(json.dumps(summary))
    for e in errors[:40]:
        print("FAIL:", e)
    if len(errors) > 40:
        print("... and %d more" % (len(errors) - 40))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
