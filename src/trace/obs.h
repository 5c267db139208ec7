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
#include "core/time.h"

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

/* A thread's buffer (one per OS thread that recorded anything). */
typedef struct conc__tbuf {
    struct conc__tbuf *next; /* all buffers, under conc__tbufs_lock */
    uint32_t gen;            /* the trace these events belong to (atomic) */
    uint32_t n;              /* words published (atomic: release by owner) */
    uint32_t cap;            /* words */
    uint64_t dropped;        /* records dropped (atomic) */
    uint64_t *w;             /* records, 2 to 4 words each (trace.c) */
    int dead;                /* its thread ended (atomic) */
    uint64_t stats[CONC__ST_N]; /* counters, relaxed atomics */
} conc__tbuf_t;

/* The trace's state read by the inline switch hook below (trace.c). */
extern __thread conc__tbuf_t *conc__tl_tbuf __attribute__((tls_model("initial-exec")));
extern uint32_t conc__trace_gen;  /* atomic */
extern int64_t conc__clk_base;    /* atomic */
extern bool conc__use_cycles;
enum { CONC__T_SWITCH = 5 };      /* T_SWITCH of trace/internal.h */
#define CONC__LOOP_BIT 0x80000000u

/* A record's stamp: the CPU's invariant counter where there is one. */
static inline int64_t conc__stamp(void)
{
    if (__builtin_expect(conc__use_cycles, 1)) {
#if defined(__x86_64__)
        return (int64_t)__builtin_ia32_rdtsc();
#elif defined(__aarch64__)
        uint64_t v;
        __asm__ __volatile__("isb; mrs %0, cntvct_el0" : "=r"(v));
        return (int64_t)v;
#endif
    }
    return conc__now_ns();
}

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
/* The same, with the common case (tracing only, both tracks named in this
 * trace, room in the buffer) written inline: one record, no call. */
static inline void conc__obs_switch_inline(conc__ctx_t *from, int from_loop, conc__ctx_t *to, int to_loop)
{
#ifndef CONC_NO_OBSERVE
    uint32_t fl = __atomic_load_n(&conc__obs_flags, __ATOMIC_RELAXED);
    uint32_t gen = __atomic_load_n(&conc__trace_gen, __ATOMIC_RELAXED);
    conc__tbuf_t *t = conc__tl_tbuf;
    if (__builtin_expect((fl & ~(uint32_t)CONC__OBS_DUMP) == CONC__OBS_TRACE && t && from && to && t->gen == gen &&
                             from->trace_gen == gen && to->trace_gen == gen && t->n + 2 <= t->cap,
                         1)) {
        uint32_t n = t->n, f = __atomic_load_n(&from->trace_id, __ATOMIC_RELAXED);
        uint32_t d = __atomic_load_n(&to->trace_id, __ATOMIC_RELAXED);
        uint64_t *w = &t->w[n];
        w[0] = ((uint64_t)(conc__stamp() - __atomic_load_n(&conc__clk_base, __ATOMIC_RELAXED)) << 16) | CONC__T_SWITCH;
        w[1] = (f | (from_loop ? CONC__LOOP_BIT : 0)) | ((uint64_t)(d | (to_loop ? CONC__LOOP_BIT : 0)) << 32);
        __atomic_store_n(&t->n, n + 2, __ATOMIC_RELEASE);
        return;
    }
#endif
    conc__obs_switch(from, from_loop, to, to_loop);
}
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
