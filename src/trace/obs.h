/*
 * trace/obs.h — the hooks of the trace, the wait profiles and the counters
 * (private). Every call site tests its switch first:
 *     if (conc__obs_on(CONC__OBS_TRACE)) conc__trace_spawn(...);
 * so with everything off a hook is one relaxed load and a branch, and with
 * CONC_NO_OBSERVE it is compiled out (see core/observe.h).
 */
#ifndef CONC_TRACE_OBS_H
#define CONC_TRACE_OBS_H

#include <stdint.h>

#include "core/observe.h"
#include "core/park.h"

/* Any of the three tools that watch parks. */
#define CONC__OBS_PARKS (CONC__OBS_TRACE | CONC__OBS_PROFILE | CONC__OBS_STATS)

/* conc_stats counters (see conc_stats_t in conc/trace.h). */
enum {
    CONC__ST_PARK,
    CONC__ST_SPIN_WON,
    CONC__ST_FUTEX_SLEEP,
    CONC__ST_GREEN_SWITCH,
    CONC__ST_STEAL,
    CONC__ST_TIMER_FIRE,
    CONC__ST_N
};

/* Count one event of kind k on the calling thread (stats on only). */
void conc__stat_inc(int k);
#define CONC__STAT(k)                        \
    do {                                     \
        if (conc__obs_on(CONC__OBS_STATS))   \
            conc__stat_inc(k);               \
    } while (0)

/* park.c: the observed park (trace, profile, counters around the plain
 * one, conc__park_plain). */
int conc__obs_park(conc__waiter_t *w, int64_t deadline);
int conc__park_plain(conc__waiter_t *w, int64_t deadline);
/* park.c: w is about to be unparked by the calling context. */
void conc__obs_unpark(conc__waiter_t *w);

/* green/hub.c: a switch between two contexts of the calling OS thread's
 * hub; loop: which of them is the hub's loop context. */
void conc__obs_switch(conc__ctx_t *from, int from_loop, conc__ctx_t *to, int to_loop);
/* green/hub.c: one turn of the hub loop begins / ends; an I/O wait
 * (epoll) begins / ends. */
void conc__trace_hub(int what);
enum { CONC__HUB_TURN_B, CONC__HUB_TURN_E, CONC__HUB_IO_B, CONC__HUB_IO_E };
/* green/green.c: a green thread made by the calling context / ended. */
void conc__trace_spawn(conc__ctx_t *g, const char *name);
void conc__trace_end(conc__ctx_t *ctx);
/* thread/thread.c: a conc thread starts running / ends (in itself). */
void conc__trace_thread_start(const char *name);
void conc__trace_thread_end(void);
/* futures: a task submitted by the calling context; a task starts /
 * finishes on the calling context. */
void conc__trace_task(int what, void *(*fn)(void *), void *arg);
enum { CONC__TASK_SUBMIT, CONC__TASK_START, CONC__TASK_FINISH,
       CONC__TASK_DONE /* its result arrived here (it ran in another process) */ };
/* green/green.c: an OS thread's plain sleep, shown as blocked on sleep. */
int conc__trace_sleep(double seconds, int (*sleep_fn)(double));
/* process: a child process started / was seen to exit. */
void conc__trace_process(int what, long pid, int code);
enum { CONC__PROC_START, CONC__PROC_EXIT };

#endif
