#!/usr/bin/env bash
# check.sh PROGRAM SCRIPT — the gdb helper (scripts/gdb/conc_green.py) lists
# the green threads of tests/gdb/green_demo.c with their states and shows
# the backtrace of a suspended one.
set -euo pipefail
prog=$1
script=$2
out=$(timeout 120 gdb -nx -batch -ex "source $script" -ex "break stop_here" -ex run \
      -ex "conc-green list" -ex "conc-green bt 3" -ex "kill" "$prog" 2>&1)
echo "$out"
fail() { echo "check.sh: $1" >&2; exit 1; }
grep -q "3 live green thread(s)" <<<"$out" || fail "list did not find 3 green threads"
grep -q "running" <<<"$out" || fail "no running green thread"
grep -q "blocked (with a deadline)" <<<"$out" || fail "the sleeper is not blocked with a deadline"
grep -qE "blocked +the-waiter" <<<"$out" || fail "the waiter is not blocked"
grep -q "in waiter (" <<<"$out" || fail "bt 3 does not reach the waiter's function"
grep -q "conc_event_wait" <<<"$out" || fail "bt 3 does not show the Event wait"
echo "check.sh: ok"
