/*
 * shwait.c — colorless waits on process-shared futex words (shwait.h).
 *
 * An OS thread sleeps in futex(2) on the word itself. A green thread
 * cannot: the futex would block its whole hub. It puts a node (its
 * waiter, the word, the value it expects) on a slot of a waiter thread
 * and parks; the waiter thread sleeps in futex_waitv(2) on up to 127
 * slots — one per distinct (word, expect) pair, shared, not private — and
 * on a private control word that registering green threads bump (and
 * wake) when they add a slot. More distinct pairs start more waiter
 * threads; a waiter thread with no slot for WAITER_LINGER_NS ends.
 *
 * When futex_waitv returns, the waiter thread unparks, under its lock,
 * every node of the slot it reports woken and of every slot whose word no
 * longer holds its expected value (futex_waitv reports one woken futex
 * even when several were woken), then goes back to sleep on what is left.
 * An unparked green thread re-reads its condition like any futex sleeper
 * and waits again if it must (registering anew). Whatever wakeups the
 * waiter thread consumes without reporting them happened while the word
 * held its expected value again, which a thread sleeping on the word
 * itself would also have gone back to sleep on.
 *
 * No lost wakeup: the caller's condition check, its sleeper count (the
 * primitives' protocols) and the hand-off all happen before the waiter
 * thread's futex_waitv compares the word with expect in the kernel: a
 * change before that makes futex_waitv return at once (EAGAIN; the scan
 * finds the slot changed), a change after it wakes the thread. A waker
 * that wakes one sleeper may pick the waiter thread, which counts as one
 * sleeper for all the nodes of that word, exactly like the threads it
 * stands for: all of them recheck.
 *
 * A cut-short wait (timeout, Timeout scope, kill) takes the lock: if its
 * node is still on a slot it removes it (and the slot when it was the
 * last node, kicking the waiter thread); if the waiter thread already
 * took it, that thread's unpark is imminent and the caller settles for it
 * (park.h), so nothing touches the node after the wait returns. A slot
 * left behind in the kernel's list until the next futex_waitv may absorb
 * a wake-one meant for another sleeper; the waiter thread passes such
 * wakeups on (one FUTEX_WAKE on every slot word it waited on that has no
 * node left).
 *
 * Fork: the child has no waiter threads. The atfork handlers hold the
 * lock across fork; the child forgets every slot and unparks the nodes of
 * the forking thread (its green threads, on its own hub), which recheck
 * and register again, starting a new waiter thread on demand.
 *
 * io_uring's futex wait (IORING_OP_FUTEX_WAIT, Linux 6.7+) would let the
 * hub itself wait on the words; the hub has no ring yet (its own issue),
 * so the waiter thread is the only path. Kernels without futex_waitv
 * (before 5.16): green threads nap (1 ms at a time) and recheck.
 */
#define _GNU_SOURCE
#include "core/shwait.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "conc/base.h"
#include "core/futex.h"
#include "core/time.h"

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif
#ifndef FUTEX_32
#define FUTEX_32 2
#endif

#define SLOTS 127                          /* + the control word = FUTEX_WAITV_MAX */
#define WAITER_LINGER_NS 250000000LL       /* an idle waiter thread ends after this */
#define NAP_NS 1000000LL                   /* no futex_waitv: poll this often */
#define WAITER_STACK ((size_t)64 * 1024)

typedef struct shw_node {
    conc__waiter_t w;
    uint32_t *word;
    uint32_t expect;
    struct shw_node *next, *prev; /* on its slot (under shw_mu) */
    struct shw_thread *thr;       /* NULL: not on a slot */
    pthread_t owner;              /* the OS thread that parks (fork) */
} shw_node_t;

typedef struct shw_slot {
    uint32_t *word;
    uint32_t expect;
    shw_node_t *head;
} shw_slot_t;

typedef struct shw_thread {
    struct shw_thread *next;
    uint32_t ctl;     /* private futex word: bumped when slots change */
    bool running;
    int nslots;
    shw_slot_t slots[SLOTS];
} shw_thread_t;

typedef struct {
    uint64_t val, uaddr;
    uint32_t flags, reserved;
} shw_waitv_t;

static pthread_mutex_t shw_mu = PTHREAD_MUTEX_INITIALIZER;
static shw_thread_t *shw_threads;
static pthread_once_t shw_once = PTHREAD_ONCE_INIT;
static _Atomic int shw_nosys; /* futex_waitv is missing */

/* ------------------------------------------------------------- slots */

static int slot_find(const shw_thread_t *t, const uint32_t *word, uint32_t expect)
{
    for (int i = 0; i < t->nslots; i++)
        if (t->slots[i].word == word && t->slots[i].expect == expect)
            return i;
    return -1;
}

static void slot_drop(shw_thread_t *t, int i)
{
    t->slots[i] = t->slots[--t->nslots];
}

/* Bump the control word (under shw_mu); the caller wakes it after. */
static void ctl_bump(shw_thread_t *t)
{
    conc__store(&t->ctl, t->ctl + 1, REL);
}

/* Detach slot i's nodes onto *list (under shw_mu). */
static void slot_take(shw_thread_t *t, int i, shw_node_t **list)
{
    shw_node_t *n = t->slots[i].head;
    while (n) {
        shw_node_t *next = n->next;
        n->thr = NULL;
        n->next = *list;
        *list = n;
        n = next;
    }
    slot_drop(t, i);
}

static void unpark_nodes(shw_node_t *list)
{
    while (list) {
        shw_node_t *next = list->next; /* before the node may vanish */
        conc__unpark(&list->w);
        list = next;
    }
}

/* ------------------------------------------------------ waiter thread */

static void *waiter_main(void *arg)
{
    shw_thread_t *t = arg;
    shw_waitv_t v[SLOTS + 1];
    uint32_t *fwd[SLOTS];
    pthread_mutex_lock(&shw_mu);
    for (;;) {
        int n = t->nslots;
        v[0] = (shw_waitv_t){t->ctl, (uint64_t)(uintptr_t)&t->ctl, FUTEX_32 | FUTEX_PRIVATE_FLAG, 0};
        for (int i = 0; i < n; i++)
            v[i + 1] = (shw_waitv_t){t->slots[i].expect, (uint64_t)(uintptr_t)t->slots[i].word, FUTEX_32, 0};
        pthread_mutex_unlock(&shw_mu);

        struct timespec ts, *tsp = NULL;
        if (n == 0) {
            int64_t dl = conc__now_ns() + WAITER_LINGER_NS;
            ts.tv_sec = (time_t)(dl / 1000000000);
            ts.tv_nsec = (long)(dl % 1000000000);
            tsp = &ts;
        }
        long r = syscall(SYS_futex_waitv, v, (unsigned)(n + 1), 0u, tsp, CLOCK_MONOTONIC);
        int err = r < 0 ? errno : 0;

        pthread_mutex_lock(&shw_mu);
        if (err == ENOSYS)
            atomic_store(&shw_nosys, 1);
        if (t->nslots == 0 && (err == ETIMEDOUT || err == ENOSYS)) {
            t->running = false;
            pthread_mutex_unlock(&shw_mu);
            return NULL;
        }
        /* Words it waited on whose slot went away meanwhile (a cut-short
         * wait): a wake-one may have hit us there; pass it on. */
        int nfwd = 0;
        for (int i = 0; i < n; i++)
            if (slot_find(t, (uint32_t *)(uintptr_t)v[i + 1].uaddr, (uint32_t)v[i + 1].val) < 0)
                fwd[nfwd++] = (uint32_t *)(uintptr_t)v[i + 1].uaddr;
        shw_node_t *wake = NULL;
        if (err == EFAULT || err == ENOSYS || err == EINVAL) {
            /* A word is gone (unmapped under its waiter) or the kernel
             * cannot wait: let every waiter look again. */
            while (t->nslots)
                slot_take(t, t->nslots - 1, &wake);
        } else {
            if (r >= 1 && r <= n) {
                int i = slot_find(t, (uint32_t *)(uintptr_t)v[r].uaddr, (uint32_t)v[r].val);
                if (i >= 0)
                    slot_take(t, i, &wake);
            }
            for (int i = t->nslots - 1; i >= 0; i--)
                if (conc__load(t->slots[i].word, ACQ) != t->slots[i].expect)
                    slot_take(t, i, &wake);
        }
        pthread_mutex_unlock(&shw_mu);
        for (int i = 0; i < nfwd; i++)
            conc__futex_wake(fwd[i], 1, 1);
        unpark_nodes(wake);
        pthread_mutex_lock(&shw_mu);
    }
}

/* Start t's thread (under shw_mu). */
static bool waiter_start(shw_thread_t *t)
{
    pthread_attr_t a;
    if (pthread_attr_init(&a) != 0)
        return false;
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, WAITER_STACK);
    /* Signals are for the program's own threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t id;
    int e = pthread_create(&id, &a, waiter_main, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&a);
    if (e != 0)
        return false;
    t->running = true;
    return true;
}

/* ---------------------------------------------------------------- fork */

static void shw_prepare(void) { pthread_mutex_lock(&shw_mu); }
static void shw_parent(void) { pthread_mutex_unlock(&shw_mu); }

static void shw_child(void)
{
    pthread_mutex_init(&shw_mu, NULL);
    pthread_t self = pthread_self();
    shw_node_t *mine = NULL;
    for (shw_thread_t *t = shw_threads; t; t = t->next) {
        t->running = false;
        while (t->nslots) {
            shw_node_t *list = NULL;
            slot_take(t, t->nslots - 1, &list);
            while (list) {
                shw_node_t *next = list->next;
                if (pthread_equal(list->owner, self)) {
                    list->next = mine;
                    mine = list;
                }
                list = next;
            }
        }
    }
    unpark_nodes(mine); /* this thread's green threads: they look again */
}

static void shw_init(void) { pthread_atfork(shw_prepare, shw_parent, shw_child); }

/* --------------------------------------------------------------- waits */

/* Put n on a slot. 0, or CONC_ENOMEM (no thread could be had). */
static int shw_register(shw_node_t *n)
{
    pthread_once(&shw_once, shw_init);
    if (atomic_load_explicit(&shw_nosys, memory_order_relaxed))
        return CONC_ENOTSUP;
    pthread_mutex_lock(&shw_mu);
    shw_thread_t *t, *room = NULL;
    int i = -1;
    for (t = shw_threads; t; t = t->next) {
        if ((i = slot_find(t, n->word, n->expect)) >= 0)
            break;
        if (!room && t->nslots < SLOTS)
            room = t;
    }
    bool kick = false;
    if (!t) {
        t = room;
        if (!t) {
            t = calloc(1, sizeof *t);
            if (!t) {
                pthread_mutex_unlock(&shw_mu);
                return CONC_ENOMEM;
            }
            t->next = shw_threads;
            shw_threads = t;
        }
        if (!t->running && !waiter_start(t)) {
            pthread_mutex_unlock(&shw_mu);
            return CONC_ENOMEM;
        }
        i = t->nslots++;
        t->slots[i] = (shw_slot_t){n->word, n->expect, NULL};
        ctl_bump(t);
        kick = true;
    }
    shw_slot_t *s = &t->slots[i];
    n->prev = NULL;
    n->next = s->head;
    if (s->head)
        s->head->prev = n;
    s->head = n;
    n->thr = t;
    pthread_mutex_unlock(&shw_mu);
    if (kick)
        conc__futex_wake(&t->ctl, 1, 0);
    return 0;
}

/* After a cut-short park: off the slot, or settle for the imminent unpark. */
static void shw_leave(shw_node_t *n)
{
    pthread_mutex_lock(&shw_mu);
    shw_thread_t *t = n->thr;
    if (!t) {
        pthread_mutex_unlock(&shw_mu);
        conc__park_settle(&n->w);
        return;
    }
    int i = slot_find(t, n->word, n->expect);
    if (n->prev)
        n->prev->next = n->next;
    else
        t->slots[i].head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    n->thr = NULL;
    bool kick = false;
    if (!t->slots[i].head) {
        slot_drop(t, i);
        ctl_bump(t);
        kick = true;
    }
    pthread_mutex_unlock(&shw_mu);
    if (kick)
        conc__futex_wake(&t->ctl, 1, 0);
}

static int os_wait(conc__ctx_t *ctx, uint32_t *word, uint32_t expect, int64_t deadline)
{
    ctx->cut_scope = -1;
    int64_t dl = ctx->nointr ? deadline : conc__park_deadline(ctx, deadline);
    conc__obs_block(ctx, word, CONC__WAIT_SHARED, deadline);
    int r = conc__futex_wait(word, expect, dl, 1);
    conc__obs_unblock(ctx);
    if (r == CONC_ETIMEDOUT && dl != deadline)
        return conc__park_cut(ctx, deadline);
    return r;
}

int conc__shared_wait(uint32_t *word, uint32_t expect, int64_t deadline)
{
    conc__ctx_t *ctx = conc__ctx();
    if (!ctx->ops)
        return os_wait(ctx, word, expect, deadline);
    shw_node_t n;
    conc__waiter_init(&n.w);
    n.w.obj = word;
    n.w.kind = CONC__WAIT_SHARED;
    n.word = word;
    n.expect = expect;
    n.thr = NULL;
    n.owner = pthread_self();
    if (shw_register(&n) != 0) {
        /* No waiter thread: nap and let the caller look again. */
        int64_t nap = conc__now_ns() + NAP_NS;
        int rc = conc__park(&n.w, nap < deadline ? nap : deadline);
        if (rc == CONC_ETIMEDOUT && nap < deadline && !conc__is_cut(rc))
            rc = 0;
        return rc;
    }
    int rc = conc__park(&n.w, deadline);
    if (rc != 0)
        shw_leave(&n);
    return rc;
}

void conc__cut_rearm(const conc__cut_t *c)
{
    if (!c->code)
        return;
    conc__waiter_t w;
    conc__waiter_init(&w);
    w.ctx->cut_scope = c->scope;
    conc__park_rearm(&w);
}

int conc__shared_waiters_running(void)
{
    int k = 0;
    pthread_mutex_lock(&shw_mu);
    for (shw_thread_t *t = shw_threads; t; t = t->next)
        k += t->running;
    pthread_mutex_unlock(&shw_mu);
    return k;
}
