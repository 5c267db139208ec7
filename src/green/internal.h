/*
 * green/internal.h — the green-thread scheduler's data (private).
 *
 * Every context a hub schedules has a conc__gs_t: the green threads, the
 * OS thread's own context ("main", gevent's main greenlet) and the hub's
 * loop context (which runs timers, epoll and the inbox when nothing else
 * is ready). A conc__gs_t is only touched by its hub's OS thread, except
 * for `inbox_next` (remote wakers push onto the hub's inbox) and the
 * waiter state words, which carry the park protocol across threads.
 */
#ifndef CONC_GREEN_INTERNAL_H
#define CONC_GREEN_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "conc/green.h"
#include "conc/sync.h"
#include "core/fence.h"
#include "core/park.h"

/* Waiter states beyond park.h's: set by the hub when it resumes a parked
 * green context for a reason other than an unpark. */
enum { CONC__W_TIMEDOUT = 3, CONC__W_INTERRUPTED = 4 };

enum { GS_MAIN = 0, GS_GREEN = 1, GS_LOOP = 2 };

#include "core/sanitize.h"

struct conc__hub;

typedef struct conc__gs {
    void *sp;                       /* saved stack pointer while switched out */
    struct conc__hub *hub;
    struct conc__gs *next, *prev;   /* ready queue (prev: unlink a killed, unstarted one) */
    struct conc__gs *_Atomic inbox_next;
    conc__waiter_t *parked_w;       /* set while parked */
    conc__ctx_t *ctx;
    int64_t due;                    /* timer */
    size_t heap_idx;                /* in hub->heap, or SIZE_MAX */
    int interrupt;                  /* pending: CONC_EKILLED, CONC_ELOOPEXIT */
    int last_intr;                  /* what the last park reported (rearm) */
    uint8_t kind;                   /* GS_* */
    const void *stack_lo;           /* for sanitizers; NULL = unknown (main) */
    size_t stack_size;
#ifdef CONC__ASAN
    void *asan_fake;
#endif
#ifdef CONC__TSAN
    void *tsan_fiber;
#endif
} conc__gs_t;

/* A stack slot from the slab allocator (stack.c). */
typedef struct conc__stack {
    char *lo;         /* lowest usable byte (above the guard, if any) */
    char *hi;         /* one past the highest byte */
    uint32_t guarded; /* a PROT_NONE page sits just below lo */
    unsigned valgrind_id;
    void *resume_sp;  /* suspended in conc__green_entry's loop, or NULL */
#ifdef CONC__TSAN
    void *tsan_fiber; /* made once per stack (creating one is slow) */
#endif
} conc__stack_t;

typedef struct conc__link {
    struct conc__link *next;
    void (*cb)(conc_green_t *g, void *arg);
    void *arg;
    int kind; /* CONC__LINK_*: which outcomes it runs for (links.c) */
} conc__link_t;
enum { CONC__LINK_ANY = 0, CONC__LINK_VALUE = 1, CONC__LINK_EXCEPTION = 2 };

enum { G_NEW = 0, G_RUNNING = 1, G_DEAD = 2 };
#define CONC__LINKS_CLOSED ((conc__link_t *)1)
#define CONC__LINKS_BUSY ((conc__link_t *)2) /* a list being edited (unlink): wait */

/* A green thread. It lives at the top of its own stack, so an idle green
 * thread costs one page. */
struct conc_green {
    conc__ctx_t ctx;         /* ctx.green = &gs */
    conc__gs_t gs;
    conc__stack_t stack;
    void *(*fn)(void *);
    void *arg;
    void *result;
    _Atomic int status;      /* G_* */
    _Atomic int refs;        /* handle + alive + pending remote kills */
    bool killed;             /* ended by a kill */
    _Atomic bool ran;        /* its function started */
    bool detached;
    _Atomic bool kill_queued;
    void *_Atomic kill_next; /* remote kill requests (hub->kills) */
    conc_event_t done;       /* set at the end if remote_joins: joiners on other OS threads */
    _Atomic unsigned remote_joins; /* joins from other OS threads began (never decremented) */
    _Atomic unsigned foreign_links; /* links / unlinks from other OS threads under way */
    conc__waitq_t joinq;     /* joiners on g's own hub (no guard: hub-local) */
    conc__link_t *_Atomic links; /* a stack; CONC__LINKS_CLOSED once ended */
    struct conc_green_pool *pool;
    struct conc_green *pool_next, *pool_prev;
    bool unscheduled;        /* made by conc_green_new, not started yet */
    int64_t start_dl;        /* start_later: run fn from this deadline on (0: at once) */
    struct conc_green *all_next, *all_prev; /* hub->all: live ones, for debuggers */
    _Atomic int name_state; /* 0: default name not made yet, 1: being made, 2: set */
    char name[32];
};

/* One fd the hub knows (hub_io.c). */
typedef struct conc__fdent {
    conc__waiter_t *rd, *wr;
    struct accq *acc;   /* uring: the multishot accept on this listener */
    uint8_t registered; /* CONC__FD_READ/WRITE: the directions ever waited on */
    uint8_t interest;   /* CONC__FD_READ/WRITE: what the poller watches */
    uint8_t dry;    /* CONC__FD_READ/WRITE: ran dry, no readiness seen since */
    uint8_t stream; /* CONC__FD_READ/WRITE: a short transfer means drained / full
                     * (a stream socket when nonzero: hub_io.c short_means) */
} conc__fdent_t;

typedef struct conc__hub {
    /* what every switch touches, in one cache line */
    conc__gs_t *cur;                 /* the running context */
    conc__gs_t *ready_head, *ready_tail;
    conc_green_t *dead;              /* ended; its alive ref is dropped after the switch */
    int turns;                       /* switches left before the loop's fairness turn */
    conc__gs_t *handoff;             /* an ended green thread's next context: its one joiner,
                                      * woken with nothing else ready (green.c); else NULL */
    conc__gs_t main;                 /* the OS thread's own context */
    conc__gs_t loop;                 /* the loop context (loop.ctx = &loop_ctx) */
    conc__stack_t loop_stack;
    conc__ctx_t *os_ctx;             /* the OS thread's own context (main's, kept after it left) */
    conc__gs_t *_Atomic inbox;       /* remote wakeups (Treiber stack) */
    void *_Atomic kills;             /* remote kill requests (via kill_next) */
    _Atomic int sleeping;            /* in the poller's wait: wake through evfd */
    int evfd;
    const struct conc__poller_ops *pops; /* the backend (io/poller.h) */
    struct conc__poller *poller;
    conc__gs_t **heap;               /* timers, by due */
    size_t nheap, cap_heap;
    size_t nalive;                   /* green threads not yet ended */
    struct conc_green *all;          /* the live ones (scripts/gdb/conc_green.py, the dump) */
    unsigned all_guard;              /* readers of `all` (the dump: observe/dump.c), a spin lock */
    unsigned all_wbusy;              /* the hub changes `all` now (conc__hub_all_wlock) */
    size_t nfdwait;                  /* contexts waiting on fds */
    conc__fdent_t *fds;
    size_t nfds;
    size_t nwatched;                 /* fds with registered != 0 */
    size_t nacq;                     /* listeners with an accept queue (uring) */
    unsigned long nsubmit, narm;     /* operations submitted, accepts armed (tests) */
    unsigned long nfastwait;         /* fd waits by conc__fd_io's hub-local park (tests) */
    conc_green_t *dead_pending;      /* off its stack, alive ref kept for its handle's free (green.c) */
    struct conc__hub *free_next;
    /* stacks of the default size, kept for reuse by this hub */
    conc__stack_t *cache;
    size_t ncache, cap_cache;
    /* ended green threads of this hub with default-size stacks, records
     * kept in place on their stacks (linked through all_next): the next
     * spawn takes one back without the stack cache's copies and with the
     * per-stack fields already right (green.c) */
    struct conc_green *gfree;
    size_t ngfree;
    /* serials for this hub's green threads, taken from the registry's
     * counter in blocks (conc__serial_take): [serial_next, serial_end) */
    uint32_t serial_next, serial_end;
    /* The loop context's own conc context: conc__cur while the loop runs,
     * so the current context says "hub loop" by itself. Its ops
     * (conc__loop_ops) refuse every park and fd wait with CONC_EPERM, and
     * its scheduling record carries a standing interruption, CONC_EPERM
     * (CONC__LOOP_REFUSES), that the inline fast paths which look at
     * gs->interrupt anyway (conc_yield, the hub-local join, the queue's
     * presleep) take to their slow side, where the refusal is decided:
     * no check of its own on any fast path. (gevent's
     * BlockingSwitchOutError: conc/green.h.) */
    conc__ctx_t loop_ctx;
} conc__hub_t;
#define CONC__LOOP_REFUSES CONC_EPERM
extern const struct conc__park_ops conc__loop_ops;

/* The calling OS thread's hub, or NULL. */
extern __thread conc__hub_t *conc__tl_hub __attribute__((tls_model("initial-exec")));
conc__hub_t *conc__hub_get(void); /* create on first use; NULL if out of memory */
extern const struct conc__park_ops conc__green_ops;
/* (Re)attach the hub's OS thread's own context ctx (conc__hub_get; a
 * spawn after maybe_detach): it parks through the hub from now on. */
static inline void conc__hub_attach(conc__hub_t *h, conc__ctx_t *ctx)
{
    h->main.ctx = ctx;
    h->os_ctx = ctx;
    /* published with release: another thread's dump or deadlock check
     * that reads it (acquire) sees the hub's record made */
    __atomic_store_n(&ctx->green, (void *)&h->main, __ATOMIC_RELEASE);
    ctx->ops = &conc__green_ops;
}

/* Scheduling (hub.c). All on the hub's own thread. */
/* Append gs to the ready queue. Inline: it is on every yield and wakeup. */
static inline void conc__hub_ready(conc__hub_t *h, conc__gs_t *gs)
{
    gs->next = NULL;
    gs->prev = h->ready_tail;
    if (h->ready_tail)
        h->ready_tail->next = gs;
    else
        h->ready_head = gs;
    h->ready_tail = gs;
}
void conc__hub_unready(conc__hub_t *h, conc__gs_t *gs);        /* take it out again */
int conc__hub_yield(conc__gs_t *gs);                           /* conc_yield on a hub */
void conc__hub_schedule(conc__hub_t *h, conc__gs_t *from);     /* switch away; returns when resumed */
void conc__hub_interrupt(conc__hub_t *h, conc__gs_t *gs, int code);
void conc__hub_kill_remote(conc__hub_t *h, conc_green_t *g);   /* from another thread */
int conc__hub_park_local(conc__gs_t *gs, conc__waiter_t *w); /* a join on its own hub */
bool conc__hub_main_idle_detach(conc__hub_t *h); /* hub_io.c: main's fd waits, nothing green alive */
void conc__gs_init(conc__gs_t *gs, conc__hub_t *h, conc__ctx_t *ctx, int kind);
extern const conc__park_ops_t conc__green_ops;

/* I/O (hub_io.c): the park ops' fd entries, the poll of a hub turn,
 * and the poller's life. */
struct conc__fdop;
struct conc__poller_ops;
int conc__green_fd_wait(int fd, int events, int64_t deadline);
ssize_t conc__green_fd_op(const struct conc__fdop *d, int64_t deadline);
ssize_t conc__green_fd_io(int fd, bool wr, void *buf, size_t n, int flags, int64_t deadline);
void conc__green_fd_forget(int fd);
bool conc__green_fd_maybe_ready(int fd, int events);
void conc__green_fd_short(int fd, int events);
void conc__hub_io_poll(conc__hub_t *h, int64_t timeout_ns);
void conc__hub_io_detach(conc__hub_t *h);
bool conc__hub_io_start(conc__hub_t *h, const struct conc__poller_ops *ops);
void conc__hub_io_forked(conc__hub_t *h);
int conc__hub_io_switch(conc__hub_t *h, const struct conc__poller_ops *ops, bool renew);

/* Stacks (stack.c). size: usable bytes, page multiple. */
#define CONC__GREEN_STACK_DEFAULT ((size_t)128 * 1024)
#define CONC__GREEN_STACK_MIN ((size_t)16 * 1024)
int conc__stack_get(conc__hub_t *h, size_t size, conc__stack_t *out);
/* Where a green thread's record sits on its stack slot: just below the
 * slot's top, less the slot's colour — 2 KiB on every other 4 KiB page
 * number of `hi` — so that two green threads on neighbouring slots (the
 * usual pair that switch to each other) have their records, frames and
 * saved slots 2 KiB apart modulo 4 KiB, not at the same page offsets: a
 * load from the resumed side's slots right after the stores to the
 * suspended side's would otherwise match them in the low 12 address bits
 * (4K aliasing: the load waits as if it depended on those stores). */
static inline conc_green_t *conc__stack_record(const char *hi)
{
    uintptr_t top = (uintptr_t)hi - ((((uintptr_t)hi >> 12) & 1) << 11);
    return (conc_green_t *)((top - sizeof(conc_green_t)) & ~(uintptr_t)63);
}
void conc__stack_put(conc__hub_t *h, conc__stack_t *s);
void conc__stack_overflow_handler_install(void);
void conc__stack_overflow_handler_thread_exit(void);

/* The guard of h->all: an asymmetric lock. The hub thread, the only one
 * that changes the list (spawn, end: hot), announces itself in all_wbusy
 * and checks all_guard with only a compiler barrier between (fence.h's
 * light side); a reader (the dump, the deadlock detector: rare) takes
 * all_guard, makes every thread pass a full barrier (the heavy side:
 * membarrier) and waits for all_wbusy to clear. One of the two sees the
 * other, so they never overlap; the hub pays no atomic read-modify-write.
 * Without membarrier both sides use full fences. */
static inline void conc__hub_all_lock(conc__hub_t *h) /* readers */
{
    unsigned exp = 0;
    while (!atomic_compare_exchange_weak_explicit(CONC__A(&h->all_guard), &exp, 1u, ACQ, RLX)) {
        exp = 0;
        conc__cpu_relax();
    }
    conc__fence_heavy();
    while (conc__load(&h->all_wbusy, ACQ))
        conc__cpu_relax();
}
static inline void conc__hub_all_unlock(conc__hub_t *h) { conc__store(&h->all_guard, 0u, REL); }
void conc__hub_all_wlock_slow(conc__hub_t *h); /* green.c */
static inline void conc__hub_all_wlock(conc__hub_t *h) /* the hub's own thread */
{
    conc__store(&h->all_wbusy, 1u, RLX);
    conc__fence_light();
    if (__builtin_expect(conc__load(&h->all_guard, ACQ) != 0, 0))
        conc__hub_all_wlock_slow(h);
}
static inline void conc__hub_all_wunlock(conc__hub_t *h) { conc__store(&h->all_wbusy, 0u, REL); }
/* The hub whose all_guard the calling thread holds while it looks things
 * up in the registry (the dump): the registry's walk of that hub must not
 * take the guard again (a spin lock: it would spin forever). */
extern __thread conc__hub_t *conc__hub_all_held;

/* green.c */
void conc__green_unref(conc_green_t *g);
void conc__green_off_stack(conc__hub_t *h, conc_green_t *d); /* after the switch off d's stack */
/* links.c: run a link now (in the caller) if its kind matches g's outcome. */
void conc__green_run_link(conc_green_t *g, const conc__link_t *l);
void conc__green_do_kill(conc_green_t *g); /* on g's hub thread */
/* A link or unlink of g from another OS thread than its hub's: announce
 * it (false: g ended, its links are or will be closed: do not touch
 * them); leave once done. See end_green. */
bool conc__links_foreign_enter(conc_green_t *g);
void conc__links_foreign_leave(conc_green_t *g);

#endif
