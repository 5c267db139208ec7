/* internal.h — struct conc_future and what the futures files share (private). */
#ifndef CONC_FUTURES_INTERNAL_H
#define CONC_FUTURES_INTERNAL_H

#include <stdatomic.h>
#include <stdint.h>

#include "conc/futures.h"
#include "core/park.h"

/* state word: the state in bits 0-1, HASW when waiters or callbacks are
 * registered (set under the guard), so completing a future nobody waits
 * for is one CAS. */
#define FS_MASK 3u
#define FS_HASW 4u
#define FS_COMPLETING 8u /* a completer owns the outcome fields right now */
/* CPython's CANCELLED_AND_NOTIFIED: set on a cancelled future once its
 * executor has seen the cancellation (set_running_or_notify_cancel). wait()
 * and as_completed count a cancelled future as done only then. */
#define FS_NOTIFIED 16u
/* The reference count lives in the same word (bits 32-63, FS_REF each):
 * a pool drops its reference in the CAS that publishes the outcome, so a
 * task's future costs one atomic RMW fewer. A state change keeps FS_KEEP
 * (HASW and the count). */
#define FS_REF ((uint64_t)1 << 32)
#define FS_REFS(w) ((uint32_t)((w) >> 32))
#define FS_KEEP (FS_HASW | ~(uint64_t)0xffffffffu)

typedef struct conc__cb {
    conc_future_cb fn;
    void *arg;
    void (*discard)(void *arg); /* if the future is dropped before it completes */
    bool waiter;                /* a wait()/as_completed callback: runs when f is
                                   finished or cancelled-and-notified */
    struct conc__cb *next;
} conc__cb_t;

/* add_done_callback with a discard hook: called with arg instead of fn if
 * the last reference to f goes while f is still pending. */
int conc__future_add_callback(conc_future_t *f, conc_future_cb fn, void *arg, void (*discard)(void *));
/* The same for wait()/as_completed: fn runs once f is finished, or
 * cancelled and notified (at once if it already is). */
int conc__future_add_waiter_callback(conc_future_t *f, conc_future_cb fn, void *arg, void (*discard)(void *));
/* Remove callbacks (either kind) matching fn and arg that have not run;
 * returns how many were removed (their discard hooks are not called). */
int conc__future_remove_callback(conc_future_t *f, conc_future_cb fn, void *arg);
/* Done as wait() sees it: finished, or cancelled and notified. */
bool conc__future_done_notified(const conc_future_t *f);

struct conc_future {
    uint64_t sw;                /* atomic: conc_future_state_t | FS_* flags,
                                   and the references (FS_REF each) */
    conc__waitq_t q;            /* waiters; its guard also guards cbs */
    conc__cb_t *cbs, **cbs_tail;
    void *result;
    int code;                   /* failure code, 0 on success */
    char *msg;                  /* failure message (malloc'd) or NULL */
    void *owned;                /* malloc'd block an executor attached (a process
                                   pool's result bytes): freed with the future */
    void (*owned_free)(void *); /* how owned goes (NULL: free); set with owned */
    /* The task, while an executor holds it. */
    void *(*fn)(void *);
    void *arg;
    void *owner;                /* the pool that queued it, or NULL */
};

conc_future_t *conc__future_alloc(void);
/* Return recycled futures to malloc (called when the last pool is freed). */
void conc__futures_trim(void);
/* Wait until f is done or the deadline; helps run pool tasks meanwhile if
 * the caller is a pool worker. 0 or CONC_ETIMEDOUT. */
int conc__future_wait_done(conc_future_t *f, int64_t deadline);
/* The same, for done as wait() sees it (conc__future_done_notified). */
int conc__future_wait_notified(conc_future_t *f, int64_t deadline);
/* Register w on f unless f is done (notified: as wait() sees it); true if
 * registered. */
bool conc__future_register(conc_future_t *f, conc__waiter_t *w, bool notified);
/* Executors: f was cancelled and will never run; move it to
 * cancelled-and-notified (wakes wait()/as_completed). No-op otherwise. */
void conc__future_notify_cancel(conc_future_t *f);
/* Run f's task (executor side): running -> call -> result/exception.
 * Returns false if f was cancelled before it could start. */
bool conc__future_run(conc_future_t *f);
/* The same, and drop the caller's reference to f (a pool's, which its
 * queue entry held): in the CAS that publishes the outcome when nobody
 * waits on f, so f may be gone on return either way. */
bool conc__future_run_owned(conc_future_t *f, void (*before_publish)(void *), void *arg);
/* The same, calling before_publish(arg) after the task returned and
 * before its outcome is published (a pool marks its worker idle there). */
bool conc__future_run_hook(conc_future_t *f, void (*before_publish)(void *), void *arg);
/* Complete f as failed with code (e.g. CONC_EBROKEN) if it is still
 * pending or running. */
void conc__future_fail_now(conc_future_t *f, int code, const char *msg);

/* Set on the calling thread when completing a future woke a waiter that
 * was asleep in the kernel (futex); the pool's workers read and clear it. */
extern __thread bool conc__future_woke_sleeper;

/* How many futures an executor had queued were cancelled so far (a hint:
 * a pool worker tidies its deque's cancelled entries after an inline run
 * when it changed). */
extern atomic_ulong conc__queued_cancels;
/* Tests only (NULL otherwise): called by the pool with an entry it took
 * out of a deque and is about to push back (pool.c, put_back), in the
 * window a concurrent shutdown's drain can miss it. */
extern void (*conc__pool_put_back_hook)(conc_future_t *f);

/* pool.c: if the calling thread is a worker of the pool that queued f and
 * f has not started, run it here and now (it is done on return: true). */
bool conc__pool_run_inline(conc_future_t *f);

/* pool.c: if the calling thread is a worker of f's pool and f runs on
 * another worker, wait for it a while without sleeping, running f's
 * subtasks from that worker's deque meanwhile (leapfrogging); true if f
 * finished meanwhile (see pool.c). */
bool conc__pool_wait_running(conc_future_t *f);

#endif
