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
    CONC__OBS_DUMP = 1u << 5,      /* dumps asked for (conc_dump, a dump signal) */
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
    CONC__WAIT_FD,         /* CONC__WAIT_FD_OBJ(fd, CONC__FD_READ/WRITE) */
    CONC__WAIT_PROCESS,    /* conc_process_t *     */
    CONC__WAIT_SHARED,     /* a process-shared futex word */
    CONC__WAIT_POOL,       /* a process pool's engine: its workers' results */
    CONC__WAIT_OTHER,
    /* process-shared locks (ipc/psync.c labels its waits with these; the
     * side table of observe/shlock.c and lock-order nodes use them too) */
    CONC__WAIT_SHARED_LOCK,  /* conc_plock_t *  */
    CONC__WAIT_SHARED_RLOCK, /* conc_prlock_t * */
    CONC__WAIT_SHARED_SEM,   /* conc_psemaphore_t * (a BoundedSemaphore(1)) */
    CONC__WAIT_NKINDS
};

/* The obj of an fd wait: the fd in the low 32 bits, the directions above. */
#define CONC__WAIT_FD_OBJ(fd, events) ((const void *)(((uintptr_t)(unsigned)(fd)) | ((uintptr_t)(events) << 32)))

#ifdef CONC_NO_OBSERVE
#define conc__obs_on(bit) false
#else
extern uint32_t conc__obs_flags; /* CONC__OBS_* bits; written rarely */
#define conc__obs_on(bit) \
    __builtin_expect((__atomic_load_n(&conc__obs_flags, __ATOMIC_RELAXED) & (bit)) != 0, 0)
#endif

/* Lock debugging is on (lock-order checking or deadlock detection): the
 * lock paths take their hooks. */
#define CONC__OBS_LOCKDBG (CONC__OBS_LOCKORDER | CONC__OBS_DEADLOCK)

#include <stddef.h>

struct conc__ctx;

/* ---------------------------------------------------- registry.c
 * Every OS thread conc knows (threads it started, threads with a context)
 * is on one list under one mutex; green threads are reached through their
 * hub (green/dump hook). Serials name contexts in a Lock's owner field. */
uint32_t conc__serial_next(void);
uint32_t conc__serial_take(uint32_t n); /* n in a row, first returned (none is 0) */
void conc__reg_os_add(struct conc__ctx *ctx);    /* by the thread itself */
void conc__reg_os_remove(struct conc__ctx *ctx); /* before ctx's memory goes */
void conc__reg_lock(void);
void conc__dump_env(void); /* CONC_DUMP_SIGNAL, read once (observe/dump.c) */
void conc__reg_unlock(void);
struct conc__ctx *conc__reg_os_first(void);      /* under conc__reg_lock */
/* Every green context of the hub of OS context os (under conc__reg_lock;
 * set by the green module): fn(green ctx, arg) under the hub's list guard;
 * fn returns false to stop. */
extern void (*conc__reg_green_walk)(struct conc__ctx *os, bool (*fn)(struct conc__ctx *, void *), void *arg);
/* The context of the OS thread whose hub runs this green context, or NULL
 * (set by the green module; used in a forked child). */
extern struct conc__ctx *(*conc__reg_green_os)(struct conc__ctx *green);
/* What a reader keeps of a context found in the registry: copied while
 * the context is pinned (reg_mu for an OS thread's, its hub's list guard
 * for a green thread's), because a green thread that ends may be freed
 * (its stack reused) the moment the guard is released. id is for
 * comparing identities only: never dereference it. */
typedef struct conc__ctx_snap {
    const struct conc__ctx *id;
    uint32_t serial;
    int wait_kind;
    const void *wait_obj;
    bool blocked;
    char name[48];
} conc__ctx_snap_t;
/* The live context with this serial / this address (under conc__reg_lock):
 * true and *out filled, or false. */
bool conc__reg_find_serial(uint32_t serial, conc__ctx_snap_t *out);
bool conc__reg_find_ptr(const void *p, conc__ctx_snap_t *out);
/* Tests only: called by a lookup that found a context, after its guard is
 * released (under conc__reg_lock): a green thread it names may end and be
 * freed before the hook returns, and nothing may read it afterwards. */
extern void (*conc__reg_found_hook)(const struct conc__ctx *found);
/* Label the calling context's next parks (a join that waits on an Event,
 * say): obj/kind replace the waiter's own until cleared with kind 0. */
void conc__wait_label(const void *obj, int kind);
/* Coarse monotonic ns (the vDSO's coarse clock). */
int64_t conc__now_coarse(void);
/* A raw time stamp for "blocked since" (park.h): the CPU's counter where
 * it has a constant-rate one (x86-64 TSC, AArch64 generic timer: one
 * instruction), else the coarse clock; conc__obs_tick_age turns one into
 * seconds ago. */
static inline int64_t conc__obs_tick(void)
{
#if defined(__x86_64__)
    unsigned lo, hi;
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
    return (int64_t)(((uint64_t)hi << 32) | lo);
#elif defined(__aarch64__)
    uint64_t v;
    __asm__ __volatile__("mrs %0, cntvct_el0" : "=r"(v));
    return (int64_t)v;
#else
    return conc__now_coarse();
#endif
}
double conc__obs_tick_age(int64_t tick);

/* ---------------------------------------------------- lockdep.c, deadlock.c */
void conc__debug_init(void); /* parse CONC_DEBUG once */
/* A lock-like object was taken / given back by the calling context. */
void conc__lockdep_acquired(const void *lock, int kind);
void conc__lockdep_released(const void *lock);
void conc__lockdep_ctx_exit(struct conc__ctx *ctx); /* ctx ends */
/* Process-shared locks (ipc) as seen here (observe/shlock.c): lock is the
 * conc_plock_t / conc_prlock_t / conc_psemaphore_t (its futex word is at
 * offset 0), kind CONC__WAIT_SHARED_LOCK / _RLOCK / _SEM, pair the owner
 * pair this process wrote (a semaphore: 0, its value while held). Called only
 * while CONC__OBS_LOCKDBG is on. holder: the context of this process that
 * holds the lock whose word is at word, when the shared pair (read once)
 * is still the one recorded (under conc__reg_lock). mine: the calling
 * context holds it. */
void conc__shlock_acquired(const void *lock, int kind, uint64_t pair);
void conc__shlock_released(const void *lock);
uint32_t conc__shlock_holder(const void *word, int *kind); /* the holder's serial, 0 */
bool conc__shlock_mine(const void *word, uint64_t pair);
/* The kind recorded for the shared lock at word (CONC__WAIT_SHARED_*), 0. */
int conc__shlock_kind(const void *word);
void conc__shlock_forget_all(void); /* detection switched off */
/* A shared wait kind: CONC__WAIT_SHARED or one of the _SHARED_* above. */
#define CONC__WAIT_IS_SHARED(k) \
    ((k) == CONC__WAIT_SHARED || ((k) >= CONC__WAIT_SHARED_LOCK && (k) <= CONC__WAIT_SHARED_SEM))
/* Deadlock detection: the slice a blocking wait parks for before it
 * checks the wait-for graph (ns), and the check itself: CONC_EDEADLK when
 * the calling context's wait on obj (kind) closes a cycle (printed). */
int64_t conc__deadlock_slice(void);
int conc__deadlock_check(const void *obj, int kind);
/* Wait for e (a join's done event) until deadline, labelled obj/kind for
 * the dump, in detection slices while detection is on (deadlock.c). */
struct conc_event;
int conc__deadlock_event_wait(struct conc_event *e, int64_t deadline, const void *obj, int kind);
/* The wait's real deadline, cut to the next detection slice. */
static inline int64_t conc__deadlock_dl(int64_t now, int64_t deadline)
{
    int64_t s = now + conc__deadlock_slice();
    return s < deadline ? s : deadline;
}

#endif
