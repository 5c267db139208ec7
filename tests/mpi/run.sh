#!/bin/sh
# run.sh SECS EXPECT CMD... — run an MPI test bounded in time.
#   EXPECT ok          CMD must exit 0
#   EXPECT dies        a worker dies: the job must end by itself (not by our
#   EXPECT dies-spawn  timeout) — nonzero when Open MPI aborts it, 0 when the
#                      program lived on and saw CONC_EBROKEN ("SURVIVED")
# Then no process of the test program may be left running.
secs=$1 expect=$2
shift 2
progpath=$(eval echo \${$#})
prog=$(basename "$progpath")
progexe=$(readlink -f "$progpath")
out=$(mktemp)
timeout -k 5 "$secs" "$@" >"$out" 2>&1
rc=$?
cat "$out"
status=0
case $expect in
ok) [ $rc -eq 0 ] || { echo "FAIL: exit status $rc"; status=1; } ;;
dies*)
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        echo "FAIL: the job hung after a worker died (killed by the test's timeout)"; status=1
    elif [ $rc -eq 0 ] && ! grep -q SURVIVED "$out"; then
        echo "FAIL: exit 0 without reporting the broken executor"; status=1
    else
        echo "ok: the job ended by itself (exit status $rc)"
    fi ;;
esac
rm -f "$out"
# nothing of ours may be left running (mpirun itself may take a moment)
i=0
while [ $i -lt 50 ]; do
    # only this checkout's program: another build of the same test (a
    # second clone's CI run) may run beside us and is not ours to judge
    left=
    for p in $(pgrep -x "$prog"); do
        [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$progexe" ] && left="$left $p"
    done
    left=${left# }
    [ -z "$left" ] && break
    sleep 0.2
    i=$((i + 1))
done
if [ -n "$left" ]; then
    echo "FAIL: processes left running: $left"; ps -o pid,stat,cmd -p $left
    kill -9 $left 2>/dev/null
    status=1
fi
exit $status
