/*
 * sleep.c — sleep, usleep, nanosleep, clock_nanosleep in libconc_patch.so
 * (design: patch.c). On a green thread they are conc_sleep: the green
 * thread parks on its hub's timer and the others run. A kill or timeout
 * scope ends the sleep early as a signal would: sleep returns the whole
 * seconds left (rounded up), nanosleep and usleep -1 with the cut errno
 * (nanosleep's rem receives the time left), clock_nanosleep returns the
 * cut errno. Zero sleeps yield to the other green threads (gevent.sleep(0)).
 * Sleeps on a CPU-time clock go to libc: a parked green thread uses no CPU.
 */
#include "patch/internal.h"

#include <errno.h>
#include <math.h>
#include <time.h>
#include <unistd.h>

/* Sleep seconds; 0, or the seconds left when cut (> 0). */
static double green_sleep(double s)
{
    double dl = conc_monotonic() + s;
    int rc = conc_sleep(s);
    if (rc == 0 || rc == CONC_EINVAL)
        return 0;
    double left = dl - conc_monotonic();
    return left > 0 ? left : 1e-9; /* cut at the last moment: still a cut */
}

static void to_ts(double s, struct timespec *ts)
{
    ts->tv_sec = (time_t)s;
    ts->tv_nsec = (long)((s - (double)ts->tv_sec) * 1e9);
    if (ts->tv_nsec >= 1000000000)
        ts->tv_nsec = 999999999;
}

PATCH_EXPORT unsigned int sleep(unsigned int seconds)
{
    if (!PATCH_GREEN())
        return REAL(sleep)(seconds);
    double left = green_sleep(seconds);
    return left > 0 ? (unsigned int)ceil(left) : 0;
}

PATCH_EXPORT int usleep(useconds_t us)
{
    if (!PATCH_GREEN())
        return REAL(usleep)(us);
    if (green_sleep(us / 1e6) > 0) {
        errno = conc__patch_cut_errno();
        return -1;
    }
    return 0;
}

static bool bad_ts(const struct timespec *ts) { return ts->tv_sec < 0 || ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000; }

PATCH_EXPORT int nanosleep(const struct timespec *req, struct timespec *rem)
{
    if (!req || !PATCH_GREEN())
        return REAL(nanosleep)(req, rem);
    if (bad_ts(req)) {
        errno = EINVAL;
        return -1;
    }
    double left = green_sleep((double)req->tv_sec + req->tv_nsec / 1e9);
    if (left > 0) {
        if (rem)
            to_ts(left, rem);
        errno = conc__patch_cut_errno();
        return -1;
    }
    return 0;
}

PATCH_EXPORT int clock_nanosleep(clockid_t clock, int flags, const struct timespec *req, struct timespec *rem)
{
    if (!req || !PATCH_GREEN() ||
        (clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC && clock != CLOCK_BOOTTIME && clock != CLOCK_TAI))
        return REAL(clock_nanosleep)(clock, flags, req, rem);
    if (bad_ts(req))
        return EINVAL;
    double s = (double)req->tv_sec + req->tv_nsec / 1e9;
    if (flags & TIMER_ABSTIME) {
        struct timespec now;
        if (clock_gettime(clock, &now) != 0)
            return errno;
        s -= (double)now.tv_sec + now.tv_nsec / 1e9;
        if (s < 0)
            s = 0;
    }
    double left = green_sleep(s);
    if (left > 0) {
        if (rem && !(flags & TIMER_ABSTIME))
            to_ts(left, rem);
        return conc__patch_cut_errno();
    }
    return 0;
}
