/*
 * observe.h — the switches of conc's observability and debugging tools
 * (private): task states and dumps, tracing, wait profiles, lock-order
 * checking and deadlock detection (conc/trace.h, conc/deadlock.h).
 *
 * Every hook on a hot path is written as
 *     if (conc__obs_on(CONC__OBS_TRACE)) conc__trace_...(...);
 * so that with everything off it costs one relaxed load of a global word
 * and a predicted-not-taken branch, and with the library configured with
 * -DCONC_OBSERVE=OFF (which defines CONC_NO_OBSERVE) it costs nothing:
 * conc__obs_on() is then the constant false and the hook is dead code.
 * The benchmarks compare the two builds (impl `conc` against
 * `conc_notrace`).
 *
 * What a waiter waits on is recorded by the primitive in the waiter it
 * already fills in (conc__waiter_t.obj / .kind, see park.h): two stores,
 * no switch test, so the dump and the deadlock detector can always read
 * them.
 */
#ifndef CONC_CORE_OBSERVE_H
#define CONC_CORE_OBSERVE_H

#include <stdbool.h>
#include <stdint.h>

enum {
    CONC__OBS_TRACE = 1u << 0,     /* conc_trace_start: record transitions */
    CONC__OBS_PROFILE = 1u << 1,   /* wait/lock contention profiles */
    CONC__OBS_STATS = 1u << 2,     /* conc_stats counters */
    CONC__OBS_LOCKORDER = 1u << 3, /* CONC_DEBUG=lockorder */
    CONC__OBS_DEADLOCK = 1u << 4,  /* CONC_DEBUG=deadlock */
};

/* What a parked waiter waits on (conc__waiter_t.kind); obj names the
 * object (the Lock, the Queue, the fd as a number, ...). */
enum conc__wait_kind {
    CONC__WAIT_NONE = 0,   /* not recorded */
    CONC__WAIT_LOCK,       /* conc_lock_t *        */
    CONC__WAIT_RLOCK,      /* conc_rlock_t *       */
    CONC__WAIT_COND,       /* conc_cond_t *        */
    CONC__WAIT_SEM,        /* conc_sem_t *         */
    CONC__WAIT_EVENT,      /* conc_event_t *       */
    CONC__WAIT_BARRIER,    /* conc_barrier_t *     */
    CONC__WAIT_QUEUE_GET,  /* conc_queue_t *       */
    CONC__WAIT_QUEUE_PUT,  /* conc_queue_t *       */
    CONC__WAIT_QUEUE_JOIN, /* conc_queue_t *       */
    CONC__WAIT_FUTURE,     /* conc_future_t *      */
    CONC__WAIT_SELECT,     /* several objects      */
    CONC__WAIT_THREAD_JOIN,/* conc_thread_t *      */
    CONC__WAIT_GREEN_JOIN, /* conc_green_t *       */
    CONC__WAIT_SLEEP,      /* NULL (the deadline says until when) */
    CONC__WAIT_FD,         /* (void *)(intptr_t)fd */
    CONC__WAIT_PROCESS,    /* conc_process_t *     */
    CONC__WAIT_SHARED,     /* a process-shared futex word */
    CONC__WAIT_OTHER,
    CONC__WAIT_NKINDS
};

#ifdef CONC_NO_OBSERVE
#define conc__obs_on(bit) false
#else
extern uint32_t conc__obs_flags; /* CONC__OBS_* bits; written rarely */
#define conc__obs_on(bit) \
    __builtin_expect((__atomic_load_n(&conc__obs_flags, __ATOMIC_RELAXED) & (bit)) != 0, 0)
#endif

#endif
