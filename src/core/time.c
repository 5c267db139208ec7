/* time.c — timeouts to deadlines, conc_monotonic, conc_sleep_thread. */
#include "core/time.h"
#include "core/park.h"

#include <errno.h>
#include <math.h>

#include "conc/base.h"

#define CONC__MAX_TIMEOUT_S (100.0 * 365 * 24 * 3600) /* clamp: "forever" */

/* timeout >= 0 and not NaN: the deadline (clamped to forever). */
static int64_t from_now(double timeout)
{
    if (timeout >= CONC__MAX_TIMEOUT_S) /* +inf (CONC_FOREVER) included */
        return CONC__NO_DEADLINE;
    return conc__now_ns() + (int64_t)(timeout * 1e9);
}

int conc__deadline(double timeout, int64_t *deadline)
{
    if (isnan(timeout))
        return CONC_EINVAL;
    *deadline = timeout < 0 ? 0 : from_now(timeout);
    return 0;
}

int conc__deadline_strict(double timeout, int64_t *deadline)
{
    if (isnan(timeout) || timeout < 0)
        return CONC_EINVAL;
    *deadline = from_now(timeout);
    return 0;
}

int conc__acquire_deadline(bool blocking, double timeout, int64_t *deadline)
{
    if (!blocking) {
        if (timeout != CONC_FOREVER)
            return CONC_EINVAL;
        *deadline = 0;
        return 0;
    }
    return conc__deadline_strict(timeout, deadline);
}

int conc__acquire_deadline_lenient(bool blocking, double timeout, int64_t *deadline)
{
    if (!blocking) {
        if (timeout != CONC_FOREVER)
            return CONC_EINVAL;
        *deadline = 0;
        return 0;
    }
    return conc__deadline(timeout, deadline);
}

double conc_monotonic(void)
{
    return (double)conc__now_ns() / 1e9;
}

int conc_sleep_thread(double seconds)
{
    int64_t dl;
    /* time.sleep: ValueError for a negative length; sleep(inf) is
     * OverflowError in Python, here it sleeps "forever" (100 years). */
    if (conc__deadline_strict(seconds, &dl) != 0)
        return CONC_EINVAL;
    if (dl == CONC__NO_DEADLINE)
        dl = conc__now_ns() + (int64_t)(CONC__MAX_TIMEOUT_S * 1e9);
    struct timespec ts = {.tv_sec = dl / 1000000000, .tv_nsec = dl % 1000000000};
    conc__ctx_t *ctx = conc__cur; /* a thread conc never saw stays unseen */
    if (ctx)
        conc__obs_block(ctx, NULL, CONC__WAIT_SLEEP, dl);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
    if (ctx)
        conc__obs_unblock(ctx);
    return 0;
}
