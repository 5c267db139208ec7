/* internal.h — the thread record shared by thread.c and local.c (private). */
#ifndef CONC_THREAD_INTERNAL_H
#define CONC_THREAD_INTERNAL_H

#include <pthread.h>

#include "conc/sync.h"
#include "conc/thread.h"
#include "core/park.h"

enum { CONC__T_NEW = 0, CONC__T_RUNNING = 1, CONC__T_DONE = 2 };

typedef struct conc__slot {
    uint64_t gen; /* the conc_local generation this value belongs to */
    void *value;
} conc__slot_t;

/* The values of the locals in one context (an OS thread, or a green thread
 * that set one). Only its context grows it; lock guards it against
 * conc_local_free from elsewhere. */
typedef struct conc__slotset {
    conc_lock_t lock;
    conc__slot_t *slots;
    size_t nslots;
} conc__slotset_t;

struct conc_thread {
    int refs;                    /* atomic */
    int status;                  /* CONC__T_* (atomic) */
    void *(*fn)(void *);
    void *arg;
    void *result;
    char *name;                  /* name_buf, or malloc'd when longer */
    char name_buf[32];
    bool daemon;
    bool dummy;                  /* a thread conc did not create */
    bool is_main;
    size_t stack_size;
    unsigned long ident;         /* atomic */
    long native_id;              /* atomic */
    pthread_t pt;                /* written by the thread itself, first thing */
    pthread_t pt_start;          /* written by start() once pthread_create returned */
    int pt_known;                /* atomic: pt_start is set */
    int reaped;                  /* atomic: the OS thread was joined or detached */
    conc_event_t started;        /* native_id is known */
    conc_event_t done;           /* the function returned */
    conc__ctx_t *ctx;            /* its context (own_ctx for conc threads) */
    conc__ctx_t own_ctx;
    struct conc_thread *next, *prev; /* the registry of live threads */
    conc__slotset_t locals;      /* threading.local values */
};

/* threading.stack_size()'s setting (stack_size.c): 0 = the system default. */
size_t conc__thread_default_stack(void);
/* The calling thread's record, created for foreign threads (NULL: no memory). */
conc_thread_t *conc__thread_self(void);
/* Modules that keep work alive past main (pools, timers) register an exit
 * hook: at normal exit conc runs every hook, then joins the non-daemon
 * threads, and repeats until a round does nothing (a timer may start a
 * thread, a thread may submit to a pool...). A hook returns true if it
 * waited for or stopped something. */
void conc__at_exit(bool (*hook)(void));
/* True once conc's exit step ran (threads joined, pools shut down): new
 * work submitted from a later atexit handler fails with CONC_ESHUTDOWN. */
bool conc__exit_done(void);

/* Report the failure recorded on t's context through the excepthook. */
void conc__thread_report_failure(conc_thread_t *t);
/* Every live thread record, for local.c: calls fn under the registry lock. */
void conc__thread_foreach(void (*fn)(conc_thread_t *t, void *arg), void *arg);
/* local.c: run and clear the destructors of t's values (t is ending). */
void conc__locals_thread_exit(conc_thread_t *t);
/* A green thread (ctx) ends: run the destructors of its local values. */
void conc__locals_ctx_exit(conc__ctx_t *ctx);
/* local.c: fork handlers. */
void conc__locals_atfork_prepare(void);
void conc__locals_atfork_parent(void);
void conc__locals_atfork_child(void);

#endif
