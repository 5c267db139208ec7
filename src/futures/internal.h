/* internal.h — struct conc_future and what the futures files share (private). */
#ifndef CONC_FUTURES_INTERNAL_H
#define CONC_FUTURES_INTERNAL_H

#include "conc/futures.h"
#include "core/park.h"

/* state word: the state in bits 0-1, HASW when waiters or callbacks are
 * registered (set under the guard), so completing a future nobody waits
 * for is one CAS. */
#define FS_MASK 3u
#define FS_HASW 4u
#define FS_COMPLETING 8u /* a completer owns the outcome fields right now */

typedef struct conc__cb {
    conc_future_cb fn;
    void *arg;
    void (*discard)(void *arg); /* if the future is dropped before it completes */
    struct conc__cb *next;
} conc__cb_t;

/* add_done_callback with a discard hook: called with arg instead of fn if
 * the last reference to f goes while f is still pending. */
int conc__future_add_callback(conc_future_t *f, conc_future_cb fn, void *arg, void (*discard)(void *));

struct conc_future {
    unsigned state;             /* conc_future_state_t | FS_HASW (atomic) */
    int refs;                   /* atomic */
    conc__waitq_t q;            /* waiters; its guard also guards cbs */
    conc__cb_t *cbs, **cbs_tail;
    void *result;
    int code;                   /* failure code, 0 on success */
    char *msg;                  /* failure message (malloc'd) or NULL */
    void *owned;                /* malloc'd block an executor attached (a process
                                   pool's result bytes): freed with the future */
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
/* Run f's task (executor side): running -> call -> result/exception.
 * Returns false if f was cancelled before it could start. */
bool conc__future_run(conc_future_t *f);
/* Complete f as failed with code (e.g. CONC_EBROKEN) if it is still
 * pending or running. */
void conc__future_fail_now(conc_future_t *f, int code, const char *msg);

/* pool.c: if the calling thread is a worker of the pool that queued f and
 * f has not started, run it here and now (it is done on return: true). */
bool conc__pool_run_inline(conc_future_t *f);

#endif
