/* Cross-process waits are colorless (issue 11, section 1): for every
 * blocking call of ipc.h, ipc_queue.h and the Manager proxies,
 *   (a) from a green thread it parks only that green thread — a ticker
 *       green thread on the same hub keeps ticking — and wakes when a
 *       peer process (a fork child) acts;
 *   (b) conc_green_kill of the waiting green thread returns promptly, the
 *       wait reports CONC_EKILLED and the primitive still works after;
 *   (c) a Timeout scope cuts the wait with CONC_ETIMEDOUT, on an OS
 *       thread and on a green thread, and the primitive still works;
 *   (d) a wait satisfied at the moment it is cut is not lost (no item or
 *       permit disappears, a lock is not left held).
 * Process join and a process pool's future are covered too. Children
 * are plain fork()s; they act on OS threads only. */
#include "test_util.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "conc/ipc.h"
#include "conc/ipc_queue.h"
#include "conc/manager.h"
#include "conc/pool.h"
#include "conc/process.h"

/* ------------------------------------------------------------ harness */

/* The Manager's server may be exec'd (a fork server when this process has
 * threads: Criterion's timer, TSan's): it must not take itself for a
 * Criterion worker (as in manager_test). */
static void suite_setup(void) { unsetenv("BXFI_MAP"); }
TestSuite(colorless, .init = suite_setup);

typedef struct env {
    conc_mpqueue_t *q;
    conc_plock_t *lk;
    conc_prlock_t *rl;
    conc_psemaphore_t *sem;
    conc_pevent_t *ev;
    conc_pcond_t *cv;
    conc_pbarrier_t *bar;
    conc_conn_t *ca, *cb;
    conc_manager_t *m;
    conc_mqueue_t *mq;
    conc_mlock_t *ml;
    /* shared words */
    _Atomic int ready;
    _Atomic int flag;
    _Atomic int go;   /* parent -> child: act now (child(e, op, -1)) */
    _Atomic int seen; /* parent -> child: the action was seen, exit */
} env_t;

typedef struct op {
    const char *name;
    void (*setup)(env_t *e);               /* parent, before the child */
    void (*hold)(env_t *e);                /* child, before it says ready */
    void (*peer)(env_t *e);                /* child, after its delay */
    int (*wait)(env_t *e, double timeout); /* the call under test */
    bool breaks;                           /* a cut wait breaks it (barrier) */
} op_t;

static env_t *env_new(void)
{
    env_t *e = mmap(NULL, sizeof *e, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(e, MAP_FAILED);
    memset(e, 0, sizeof *e);
    return e;
}

/* Everything a case made (after its child is reaped). */
static void env_free(env_t *e)
{
    if (e->q)
        conc_mpqueue_free(e->q);
    conc_shared_free(e->lk);
    conc_shared_free(e->rl);
    conc_shared_free(e->sem);
    conc_shared_free(e->ev);
    conc_shared_free(e->cv);
    conc_shared_free(e->bar);
    conc_conn_close(e->ca);
    conc_conn_close(e->cb);
    if (e->mq)
        conc_mqueue_free(e->mq);
    if (e->ml)
        conc_mlock_free(e->ml);
    if (e->m)
        conc_manager_free(e->m);
    munmap(e, sizeof *e);
}

/* The peer: acts `delay` s after it is ready, or (delay < 0) when the
 * parent says go (after its cut: no race with the cut, no idle wait); then
 * exits once the parent saw the action (at most 5 s later). */
static pid_t child(env_t *e, const op_t *op, double delay)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        if (op->hold)
            op->hold(e);
        atomic_store(&e->ready, 1);
        if (delay >= 0) {
            tu_sleep(delay);
        } else {
            double dl = tu_now() + 20;
            while (!atomic_load(&e->go) && tu_now() < dl)
                tu_sleep(0.001);
        }
        op->peer(e);
        /* let the parent see the action before our exit does */
        double dl = tu_now() + 5;
        while (!atomic_load(&e->seen) && tu_now() < dl)
            tu_sleep(0.001);
        _exit(0);
    }
    double dl = tu_now() + 10;
    while (!atomic_load(&e->ready) && tu_now() < dl)
        tu_sleep(0.001);
    cr_assert(atomic_load(&e->ready), "child never got ready");
    return pid;
}

static void reap(pid_t pid)
{
    double dl = tu_now() + 20;
    int st;
    while (waitpid(pid, &st, WNOHANG) != pid) {
        if (tu_now() > dl) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            cr_assert_fail("child did not end");
        }
        tu_sleep(0.002);
    }
}

/* The waiting green thread and the ticker beside it. */
typedef struct gw {
    env_t *e;
    const op_t *op;
    double timeout;
    double scope;  /* > 0: wrap the wait in a Timeout scope of that length */
    int rc;
    int fired;
    double took;
    _Atomic int done;
} gw_t;

static void *green_wait(void *arg)
{
    gw_t *w = arg;
    double t0 = tu_now();
    if (w->scope > 0)
        conc_timeout_begin(w->scope);
    w->rc = w->op->wait(w->e, w->timeout);
    if (w->scope > 0)
        w->fired = conc_timeout_end();
    w->took = tu_now() - t0;
    atomic_store(&w->done, 1);
    return NULL;
}

typedef struct ticker {
    _Atomic int stop;
    int ticks;
    double max_gap;
} ticker_t;

static void *tick(void *arg)
{
    ticker_t *t = arg;
    double last = tu_now();
    while (!atomic_load(&t->stop)) {
        conc_sleep(0.002);
        double now = tu_now();
        if (now - last > t->max_gap)
            t->max_gap = now - last;
        last = now;
        t->ticks++;
    }
    return NULL;
}

/* A case's start: a fresh env set up for op, and its child (delay: as
 * for child()). */
static env_t *case_begin(const op_t *op, double delay, pid_t *pid)
{
    env_t *e = env_new();
    op->setup(e);
    *pid = child(e, op, delay);
    return e;
}

/* A case's end: the child may finish; it is reaped and the env freed. */
static void case_end(env_t *e, pid_t pid)
{
    atomic_store(&e->seen, 1);
    reap(pid);
    env_free(e);
}

/* (a) */
static void case_green_parks_alone(const op_t *op)
{
    pid_t pid;
    env_t *e = case_begin(op, 0.6, &pid);
    ticker_t tk = {0};
    gw_t w = {.e = e, .op = op, .timeout = CONC_FOREVER};
    conc_green_t *gt, *gwait;
    cr_assert_eq(conc_go(&gt, tick, &tk), 0);
    cr_assert_eq(conc_go(&gwait, green_wait, &w), 0);
    cr_assert_eq(conc_green_join(gwait, 15), 0, "%s: the wait did not end", op->name);
    atomic_store(&tk.stop, 1);
    cr_assert_eq(conc_green_join(gt, 5), 0);
    cr_assert_eq(w.rc, 0, "%s: %s", op->name, conc_strerror(w.rc));
    cr_assert_geq(w.took, 0.5, "%s: returned before the peer acted (%.3f s)", op->name, w.took);
    /* ~0.6 s at 2 ms a tick: the ticker ran all along (a hub blocked by the
     * wait would show one gap of about 0.6 s; a loaded machine, shorter
     * ones) */
    cr_assert_geq(tk.ticks, 20, "%s: the ticker stopped (%d ticks)", op->name, tk.ticks);
    cr_assert_lt(tk.max_gap, 0.4, "%s: ticker gap %.3f s", op->name, tk.max_gap);
    conc_green_free(gt);
    conc_green_free(gwait);
    case_end(e, pid);
}

/* After a cut-short wait: the child is told to act, and then a plain wait
 * succeeds (a barrier reports being broken instead, then works again after
 * a reset). */
static void still_works(env_t *e, const op_t *op)
{
    atomic_store(&e->go, 1);
    if (op->breaks) {
        cr_assert(conc_pbarrier_broken(e->bar), "%s: not broken by the cut", op->name);
        return;
    }
    int rc = op->wait(e, 10);
    cr_assert_eq(rc, 0, "%s: after the cut: %s", op->name, conc_strerror(rc));
}

/* (b) */
static void case_kill(const op_t *op)
{
    pid_t pid;
    env_t *e = case_begin(op, -1, &pid);
    gw_t w = {.e = e, .op = op, .timeout = CONC_FOREVER};
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, green_wait, &w), 0);
    conc_sleep(0.2);
    cr_assert_not(atomic_load(&w.done), "%s: did not block", op->name);
    double t0 = tu_now();
    int rc = conc_green_kill(g, true, 10.0);
    double took = tu_now() - t0;
    cr_assert_eq(rc, 0, "%s: kill: %s", op->name, conc_strerror(rc));
    /* promptly (the child acts only once told to, below) */
    cr_assert_lt(took, TU_SANITIZED ? 2.0 : 0.5, "%s: kill took %.3f s", op->name, took);
    cr_assert_eq(w.rc, CONC_EKILLED, "%s: %s", op->name, conc_strerror(w.rc));
    conc_green_free(g);
    still_works(e, op);
    case_end(e, pid);
}

/* (c) on the calling OS thread */
static void case_scope_os(const op_t *op)
{
    pid_t pid;
    env_t *e = case_begin(op, -1, &pid);
    double t0 = tu_now();
    cr_assert_eq(conc_timeout_begin(0.2), 0);
    int rc = op->wait(e, CONC_FOREVER);
    int fired = conc_timeout_end();
    double took = tu_now() - t0;
    cr_assert_eq(rc, CONC_ETIMEDOUT, "%s: %s", op->name, conc_strerror(rc));
    cr_assert_eq(fired, 1, "%s", op->name);
    cr_assert_geq(took, 0.2 - TU_EPS, "%s: %.3f s", op->name, took);
    cr_assert_lt(took, 0.2 + TU_SLACK, "%s: %.3f s", op->name, took);
    still_works(e, op);
    case_end(e, pid);
}

/* (c) on a green thread (a ticker beside it) */
static void case_scope_green(const op_t *op)
{
    pid_t pid;
    env_t *e = case_begin(op, -1, &pid);
    ticker_t tk = {0};
    gw_t w = {.e = e, .op = op, .timeout = CONC_FOREVER, .scope = 0.2};
    conc_green_t *gt, *g;
    cr_assert_eq(conc_go(&gt, tick, &tk), 0);
    cr_assert_eq(conc_go(&g, green_wait, &w), 0);
    cr_assert_eq(conc_green_join(g, 10), 0);
    atomic_store(&tk.stop, 1);
    cr_assert_eq(conc_green_join(gt, 5), 0);
    cr_assert_eq(w.rc, CONC_ETIMEDOUT, "%s: %s", op->name, conc_strerror(w.rc));
    cr_assert_eq(w.fired, 1, "%s", op->name);
    cr_assert_geq(w.took, 0.2 - TU_EPS, "%s: %.3f s", op->name, w.took);
    cr_assert_lt(w.took, 0.2 + TU_SLACK, "%s: %.3f s", op->name, w.took);
    cr_assert_geq(tk.ticks, 10, "%s: the ticker stopped", op->name);
    conc_green_free(gt);
    conc_green_free(g);
    still_works(e, op);
    case_end(e, pid);
}

/* --------------------------------------------------------------- ops */

static void q_setup(env_t *e) { cr_assert_eq(conc_mpqueue_new(&e->q, CONC_MPQ_QUEUE, 0, 0), 0); }
static void q_put(env_t *e) { conc_mpqueue_put(e->q, "x", 1, true, 5); }
static int q_get(env_t *e, double t)
{
    char b[16];
    size_t n;
    return conc_mpqueue_get(e->q, b, sizeof b, &n, true, t);
}
static void qfull_setup(env_t *e)
{
    cr_assert_eq(conc_mpqueue_new(&e->q, CONC_MPQ_QUEUE, 1, 0), 0);
    cr_assert_eq(conc_mpqueue_put(e->q, "x", 1, false, 0), 0);
}
static void qfull_get(env_t *e)
{
    char b[16];
    size_t n;
    conc_mpqueue_get(e->q, b, sizeof b, &n, true, 5);
}
static int qfull_put(env_t *e, double t) { return conc_mpqueue_put(e->q, "y", 1, true, t); }
static void qj_setup(env_t *e)
{
    cr_assert_eq(conc_mpqueue_new(&e->q, CONC_MPQ_JOINABLE, 0, 0), 0);
    cr_assert_eq(conc_mpqueue_put(e->q, "x", 1, false, 0), 0);
}
static void qj_done(env_t *e)
{
    qfull_get(e);
    conc_mpqueue_task_done(e->q);
}
static int qj_join(env_t *e, double t) { return conc_mpqueue_join(e->q, t); }

static void conn_setup(env_t *e) { cr_assert_eq(conc_pipe(true, &e->ca, &e->cb), 0); }
static void conn_send(env_t *e) { conc_conn_send_bytes(e->cb, "hello", 5); }
static int conn_poll(env_t *e, double t) { return conc_conn_poll(e->ca, t); }
static int conn_recv(env_t *e, double t)
{
    (void)t;
    void *b;
    size_t n;
    int rc = conc_conn_recv_bytes(e->ca, &b, &n, 0);
    if (rc == 0) {
        rc = n == 5 && memcmp(b, "hello", 5) == 0 ? 0 : CONC_EBROKEN;
        free(b);
    }
    return rc;
}

static void lk_setup(env_t *e) { cr_assert_eq(conc_plock_new(&e->lk), 0); }
static void lk_hold(env_t *e) { conc_plock_acquire(e->lk, true, CONC_FOREVER); }
static void lk_release(env_t *e) { conc_plock_release(e->lk); }
static int lk_acquire(env_t *e, double t) { return conc_plock_acquire(e->lk, true, t); }

static void rl_setup(env_t *e) { cr_assert_eq(conc_prlock_new(&e->rl), 0); }
static void rl_hold(env_t *e) { conc_prlock_acquire(e->rl, true, CONC_FOREVER); }
static void rl_release(env_t *e) { conc_prlock_release(e->rl); }
static int rl_acquire(env_t *e, double t) { return conc_prlock_acquire(e->rl, true, t); }

static void sem_setup(env_t *e) { cr_assert_eq(conc_psemaphore_new(0, false, &e->sem), 0); }
static void sem_release(env_t *e) { conc_psemaphore_release(e->sem, 1); }
static int sem_acquire(env_t *e, double t) { return conc_psemaphore_acquire(e->sem, true, t); }

static void ev_setup(env_t *e) { cr_assert_eq(conc_pevent_new(&e->ev), 0); }
static void ev_set(env_t *e) { conc_pevent_set(e->ev); }
static int ev_wait(env_t *e, double t) { return conc_pevent_wait(e->ev, t); }

static void cv_setup(env_t *e) { cr_assert_eq(conc_pcond_new(&e->cv), 0); }
static void cv_notify(env_t *e)
{
    conc_pcond_acquire(e->cv, true, CONC_FOREVER);
    atomic_store(&e->flag, 1);
    conc_pcond_notify_all(e->cv);
    conc_pcond_release(e->cv);
}
static bool cv_pred(void *arg) { return atomic_load(&((env_t *)arg)->flag) != 0; }
static int cv_wait(env_t *e, double t)
{
    int rc = conc_pcond_acquire(e->cv, true, CONC_FOREVER);
    if (rc)
        return rc;
    rc = conc_pcond_wait_for(e->cv, cv_pred, e, t);
    conc_pcond_release(e->cv);
    return rc;
}

static void bar_setup(env_t *e) { cr_assert_eq(conc_pbarrier_new(2, NULL, NULL, CONC_FOREVER, &e->bar), 0); }
static void bar_peer(env_t *e) { conc_pbarrier_wait(e->bar, 5, NULL); }
static int bar_wait(env_t *e, double t) { return conc_pbarrier_wait(e->bar, t, NULL); }

static void mgr_start(env_t *e)
{
    /* the default start method, as manager_test (see suite_setup) */
    conc_manager_opts_t o = {.authkey = "secret", .authkey_len = 6, .timeout = 10};
    int rc = conc_manager_start(&e->m, &o);
    cr_assert_eq(rc, 0, "manager: %s", conc_strerror(rc));
}
static void mq_setup(env_t *e)
{
    mgr_start(e);
    cr_assert_eq(conc_manager_queue(e->m, NULL, 0, &e->mq), 0);
}
static void mq_put(env_t *e) { conc_mqueue_put(e->mq, "x", 1, true, 5); }
static int mq_get(env_t *e, double t)
{
    void *it;
    size_t n;
    int rc = conc_mqueue_get(e->mq, &it, &n, true, t);
    if (rc == 0)
        free(it);
    return rc;
}
static void ml_setup(env_t *e)
{
    mgr_start(e);
    cr_assert_eq(conc_manager_lock(e->m, "L", &e->ml), 0);
}
static void ml_hold(env_t *e) { conc_mlock_acquire(e->ml, true, CONC_FOREVER); }
static void ml_release(env_t *e) { conc_mlock_release(e->ml); }
static int ml_acquire(env_t *e, double t) { return conc_mlock_acquire(e->ml, true, t); }

static const op_t OPS[] = {
    {"mpqueue_get", q_setup, NULL, q_put, q_get, false},
    {"mpqueue_put", qfull_setup, NULL, qfull_get, qfull_put, false},
    {"mpqueue_join", qj_setup, NULL, qj_done, qj_join, false},
    {"conn_poll", conn_setup, NULL, conn_send, conn_poll, false},
    {"conn_recv_bytes", conn_setup, NULL, conn_send, conn_recv, false},
    {"plock_acquire", lk_setup, lk_hold, lk_release, lk_acquire, false},
    {"prlock_acquire", rl_setup, rl_hold, rl_release, rl_acquire, false},
    {"psemaphore_acquire", sem_setup, NULL, sem_release, sem_acquire, false},
    {"pevent_wait", ev_setup, NULL, ev_set, ev_wait, false},
    {"pcond_wait", cv_setup, NULL, cv_notify, cv_wait, false},
    {"pbarrier_wait", bar_setup, NULL, bar_peer, bar_wait, true},
    {"mqueue_get", mq_setup, NULL, mq_put, mq_get, false},
    {"mlock_acquire", ml_setup, ml_hold, ml_release, ml_acquire, false},
};
#define NOPS (sizeof OPS / sizeof OPS[0])

static const op_t *op_named(const char *name)
{
    for (size_t i = 0; i < NOPS; i++)
        if (strcmp(OPS[i].name, name) == 0)
            return &OPS[i];
    cr_assert_fail("no op %s", name);
    return NULL;
}

#define COLORLESS_TESTS_OPTS(id, name, ...)                                           \
    Test(colorless, id##_green_parks_alone, ##__VA_ARGS__)                            \
    {                                                                                 \
        case_green_parks_alone(op_named(name));                                       \
    }                                                                                 \
    Test(colorless, id##_kill, ##__VA_ARGS__) { case_kill(op_named(name)); }          \
    Test(colorless, id##_scope_os_thread, ##__VA_ARGS__) { case_scope_os(op_named(name)); } \
    Test(colorless, id##_scope_green, ##__VA_ARGS__) { case_scope_green(op_named(name)); }
#define COLORLESS_TESTS(id, name) COLORLESS_TESTS_OPTS(id, name, .timeout = TU_TIMEOUT)
#define MANAGER_TESTS(id, name) COLORLESS_TESTS(id, name)

COLORLESS_TESTS(mpqueue_get, "mpqueue_get")
COLORLESS_TESTS(mpqueue_put, "mpqueue_put")
COLORLESS_TESTS(mpqueue_join, "mpqueue_join")
COLORLESS_TESTS(conn_poll, "conn_poll")
COLORLESS_TESTS(conn_recv_bytes, "conn_recv_bytes")
COLORLESS_TESTS(plock_acquire, "plock_acquire")
COLORLESS_TESTS(prlock_acquire, "prlock_acquire")
COLORLESS_TESTS(psemaphore_acquire, "psemaphore_acquire")
COLORLESS_TESTS(pevent_wait, "pevent_wait")
COLORLESS_TESTS(pcond_wait, "pcond_wait")
COLORLESS_TESTS(pbarrier_wait, "pbarrier_wait")
MANAGER_TESTS(mqueue_get, "mqueue_get")
MANAGER_TESTS(mlock_acquire, "mlock_acquire")

/* ------------------------------------- (d) satisfied as it is cut: not lost */

#define RACE_ITEMS 60

typedef struct race {
    env_t *e;
    const char *kind; /* "mpq", "sem", "mq", "lock" */
    int got;
    int errs;
    int last_err;
    _Atomic int child_done;
} race_t;

/* The child: RACE_ITEMS items / permits / lock holds, ~3 ms apart. */
static void race_child(env_t *e, const char *kind)
{
    for (int i = 0; i < RACE_ITEMS; i++) {
        tu_sleep(0.003);
        if (!strcmp(kind, "mpq"))
            q_put(e);
        else if (!strcmp(kind, "sem"))
            sem_release(e);
        else if (!strcmp(kind, "mq"))
            mq_put(e);
        else {
            lk_hold(e);
            tu_sleep(0.002);
            lk_release(e);
        }
    }
}

static int race_take(race_t *r, double t)
{
    int rc;
    if (!strcmp(r->kind, "mpq"))
        rc = q_get(r->e, t);
    else if (!strcmp(r->kind, "sem"))
        rc = sem_acquire(r->e, t);
    else if (!strcmp(r->kind, "mq"))
        rc = mq_get(r->e, t);
    else if ((rc = lk_acquire(r->e, t)) == 0)
        conc_plock_release(r->e->lk);
    return rc;
}

/* Take with short Timeout scopes (about the producer's period) until the
 * child is done, then take what is left without waiting. */
static void *race_consume(void *arg)
{
    race_t *r = arg;
    unsigned k = 0;
    while (!atomic_load(&r->child_done)) {
        conc_timeout_begin(0.001 + 0.001 * (k++ % 4));
        int rc = race_take(r, CONC_FOREVER);
        conc_timeout_end();
        if (rc == 0)
            r->got++;
        else if (rc != CONC_ETIMEDOUT)
            r->errs++, r->last_err = rc;
        conc_yield(); /* let the watcher run when nothing made us wait */
    }
    while (strcmp(r->kind, "lock") && race_take(r, 0.2) == 0)
        r->got++;
    return NULL;
}

static void *race_watch(void *arg)
{
    race_t *r = arg;
    pid_t pid = (pid_t)(intptr_t)r->e->flag;
    int st;
    while (waitpid(pid, &st, WNOHANG) != pid)
        conc_sleep(0.005);
    atomic_store(&r->child_done, 1);
    return NULL;
}

static void race(const char *kind, bool green)
{
    env_t *e = env_new();
    if (!strcmp(kind, "mpq"))
        q_setup(e);
    else if (!strcmp(kind, "sem"))
        sem_setup(e);
    else if (!strcmp(kind, "mq"))
        mq_setup(e);
    else
        lk_setup(e);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        race_child(e, kind);
        tu_sleep(0.05);
        _exit(0);
    }
    atomic_store(&e->flag, (int)pid);
    race_t r = {.e = e, .kind = kind};
    conc_green_t *w, *c;
    cr_assert_eq(conc_go(&w, race_watch, &r), 0);
    if (green) {
        cr_assert_eq(conc_go(&c, race_consume, &r), 0);
        cr_assert_eq(conc_green_join(c, 40), 0);
        conc_green_free(c);
    } else {
        race_consume(&r);
    }
    cr_assert_eq(conc_green_join(w, 10), 0);
    conc_green_free(w);
    cr_assert_eq(r.errs, 0, "%s: %d unexpected errors, the last %s", kind, r.errs, conc_strerror(r.last_err));
    if (!strcmp(kind, "lock"))
        cr_assert_not(conc_plock_locked(e->lk), "the lock was left held");
    else
        cr_assert_eq(r.got, RACE_ITEMS, "%s%s: %d of %d taken: lost some", kind, green ? " (green)" : "",
                     r.got, RACE_ITEMS);
    env_free(e);
}

Test(colorless, satisfied_at_cut_mpqueue_get, .timeout = TU_TIMEOUT) { race("mpq", false); }
Test(colorless, satisfied_at_cut_mpqueue_get_green, .timeout = TU_TIMEOUT) { race("mpq", true); }
Test(colorless, satisfied_at_cut_psemaphore, .timeout = TU_TIMEOUT) { race("sem", false); }
Test(colorless, satisfied_at_cut_psemaphore_green, .timeout = TU_TIMEOUT) { race("sem", true); }
Test(colorless, satisfied_at_cut_plock, .timeout = TU_TIMEOUT) { race("lock", false); }
Test(colorless, satisfied_at_cut_plock_green, .timeout = TU_TIMEOUT) { race("lock", true); }
Test(colorless, satisfied_at_cut_mqueue_get, .timeout = TU_TIMEOUT) { race("mq", false); }
Test(colorless, satisfied_at_cut_mqueue_get_green, .timeout = TU_TIMEOUT) { race("mq", true); }

/* An unnamed Manager queue lives as long as a connection is bound to it:
 * a cut-short call must rebind before it drops its connection, or the
 * server frees the queue and every later call is CONC_EBROKEN (seen in
 * ~3 % of mqueue_get_scope_green runs before the fix). */
static void *cut_rounds(void *arg)
{
    env_t *e = arg;
    for (int i = 0; i < 8; i++) {
        cr_assert_eq(conc_timeout_begin(0.005), 0);
        int rc = mq_get(e, CONC_FOREVER);
        conc_timeout_end();
        cr_assert_eq(rc, CONC_ETIMEDOUT, "round %d: %s", i, conc_strerror(rc));
        conc_sleep(0.1); /* the server sees the old connection end first */
        cr_assert_eq(conc_mqueue_put(e->mq, "x", 1, true, 5), 0, "round %d", i);
        cr_assert_eq(mq_get(e, 5), 0, "round %d", i);
    }
    return NULL;
}
Test(colorless, cut_calls_keep_an_unnamed_queue, .timeout = TU_TIMEOUT)
{
    env_t *e = env_new();
    mq_setup(e);
    cut_rounds(e); /* an OS thread */
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, cut_rounds, e), 0); /* a green thread */
    cr_assert_eq(conc_green_join(g, 60), 0);
    conc_green_free(g);
    env_free(e);
}

/* A green receiver that leaves bytes in the kernel between reads (messages
 * larger than the connection's buffer) does not wait for a readiness edge
 * that already came. */
typedef struct brecv {
    conc_conn_t *c;
    int rc;
    int n;
} brecv_t;

#define BIG_MSG (200 * 1024)

static void *big_receiver(void *arg)
{
    brecv_t *r = arg;
    for (int i = 0; i < 3; i++) {
        void *b;
        size_t n;
        if ((r->rc = conc_conn_recv_bytes(r->c, &b, &n, 0)) != 0)
            return NULL;
        free(b);
        if (n != BIG_MSG) {
            r->rc = CONC_EBROKEN;
            return NULL;
        }
        r->n++;
    }
    return NULL;
}

Test(colorless, conn_green_recv_of_large_messages, .timeout = TU_TIMEOUT)
{
    for (int duplex = 0; duplex < 2; duplex++) {
        conc_conn_t *a, *b;
        cr_assert_eq(conc_pipe(duplex, &a, &b), 0);
        conc_conn_t *rd = a, *wr = b;
        fflush(NULL);
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0) {
            conc_conn_close(rd); /* a gone reader: EPIPE, not a hang */
            char *m = calloc(1, BIG_MSG);
            for (int i = 0; i < 3; i++)
                if (conc_conn_send_bytes(wr, m, BIG_MSG) != 0)
                    _exit(1);
            _exit(0);
        }
        if (!duplex) {
            conc_conn_close(wr); /* the child's copy writes */
            b = NULL;
        }
        brecv_t r = {rd, -1, 0};
        conc_green_t *g;
        cr_assert_eq(conc_go(&g, big_receiver, &r), 0);
        cr_assert_eq(conc_green_join(g, 20), 0, "duplex %d: the receiver hung", duplex);
        cr_assert_eq(r.rc, 0, "%s", conc_strerror(r.rc));
        cr_assert_eq(r.n, 3);
        conc_green_free(g);
        reap(pid);
        conc_conn_close(a);
        conc_conn_close(b);
    }
}

/* ------------------------------- many green consumers: no lost wakeup */

extern int64_t conc__mpq_sleep_cap_ns; /* src/ipc/queue.c, tests only */

#define BURST_ITEMS 20000
#define BURST_CONSUMERS 50

typedef struct burst {
    conc_mpqueue_t *q;
    long claimed, got;
    int err;
} burst_t;

static void *burst_consumer(void *arg)
{
    burst_t *b = arg;
    char buf[16];
    size_t n;
    while (b->claimed < BURST_ITEMS) {
        b->claimed++;
        int rc = conc_mpqueue_get(b->q, buf, sizeof buf, &n, true, 30);
        if (rc) {
            b->err = rc;
            return NULL;
        }
        b->got++;
    }
    return NULL;
}

/* Producer bursts and pauses, so the green consumers go to sleep and wake
 * again thousands of times (sharing membarriers and waiter-thread slots);
 * with the queue's safety-net sleep cap raised, a lost wakeup would be a
 * stall the time limit catches. */
Test(colorless, many_green_consumers_no_lost_wakeup, .timeout = TU_TIMEOUT)
{
    conc__mpq_sleep_cap_ns = 60 * 1000000000LL;
    burst_t b = {0};
    cr_assert_eq(conc_mpqueue_new(&b.q, CONC_MPQ_QUEUE, 0, 0), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        for (int i = 0; i < BURST_ITEMS; i++) {
            if (conc_mpqueue_put(b.q, "m", 1, true, 10) != 0)
                _exit(1);
            if (i % 97 == 0)
                tu_sleep(0.0002);
        }
        _exit(0);
    }
    conc_green_t *g[BURST_CONSUMERS];
    double t0 = tu_now();
    for (int i = 0; i < BURST_CONSUMERS; i++)
        cr_assert_eq(conc_go(&g[i], burst_consumer, &b), 0);
    cr_assert_eq(conc_green_joinall(g, BURST_CONSUMERS, 40), 0);
    cr_assert_eq(b.err, 0, "%s", conc_strerror(b.err));
    cr_assert_eq(b.got, BURST_ITEMS);
    cr_assert_lt(tu_now() - t0, TU_SANITIZED ? 30.0 : 10.0, "stalled: a lost wakeup?");
    for (int i = 0; i < BURST_CONSUMERS; i++)
        conc_green_free(g[i]);
    reap(pid);
    conc_mpqueue_free(b.q);
    conc__mpq_sleep_cap_ns = 250000000LL;
}

/* ------------------------------------------ many words: several waiters */

/* More distinct words than one waiter thread watches (127): every green
 * waiter still wakes when its own event is set by the peer. */
#define MANY 300
typedef struct many {
    conc_pevent_t *ev;
    int rc;
} many_t;

static void *many_wait(void *arg)
{
    many_t *m = arg;
    m->rc = conc_pevent_wait(m->ev, 20);
    return NULL;
}

Test(colorless, many_words_many_waiter_threads, .timeout = TU_TIMEOUT)
{
    conc_pevent_t *evs;
    cr_assert_eq(conc_shared_alloc(sizeof(conc_pevent_t) * MANY, (void **)&evs), 0);
    for (int i = 0; i < MANY; i++)
        conc_pevent_init(&evs[i]);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        tu_sleep(0.3);
        for (int i = MANY - 1; i >= 0; i--)
            conc_pevent_set(&evs[i]);
        _exit(0);
    }
    static many_t m[MANY];
    conc_green_t *g[MANY];
    for (int i = 0; i < MANY; i++) {
        m[i] = (many_t){&evs[i], -1};
        cr_assert_eq(conc_go(&g[i], many_wait, &m[i]), 0);
    }
    cr_assert_eq(conc_green_joinall(g, MANY, 30), 0);
    for (int i = 0; i < MANY; i++) {
        cr_assert_eq(m[i].rc, 0, "waiter %d: %s", i, conc_strerror(m[i].rc));
        conc_green_free(g[i]);
    }
    reap(pid);
    conc_shared_free(evs);
}

/* A green thread forks while siblings wait on shared words: in the child
 * (no waiter thread there) they still wake when their words change. */
static conc_pevent_t *fork_ev;
static int fork_rc = -1;
static void *fork_waiter(void *arg)
{
    (void)arg;
    fork_rc = conc_pevent_wait(fork_ev, 10);
    return NULL;
}

Test(colorless, fork_child_green_waiters_still_wake, .timeout = TU_TIMEOUT)
{
    if (TU_TSAN)
        cr_skip("TSan cannot start threads in a child of a threaded process");
    cr_assert_eq(conc_pevent_new(&fork_ev), 0);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, fork_waiter, NULL), 0);
    conc_sleep(0.1); /* it waits now, through the waiter thread */
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* The parent sets the event in 0.3 s: our copy of the waiter must
         * register again with a waiter thread of our own. */
        int rc = conc_green_join(g, 10);
        _exit(rc == 0 && fork_rc == 0 ? 0 : 1);
    }
    tu_sleep(0.3);
    conc_pevent_set(fork_ev);
    cr_assert_eq(conc_green_join(g, 10), 0);
    cr_assert_eq(fork_rc, 0);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child's waiter did not wake");
    conc_green_free(g);
    conc_shared_free(fork_ev);
}

/* --------------------------------------- process join and pool waits */

static int sleeper_main(const void *arg, size_t len)
{
    (void)arg;
    (void)len;
    tu_sleep(2.0);
    return 0;
}
CONC_REGISTER(sleeper_main);

typedef struct pj {
    conc_process_t *p;
    int rc;
    int fired;
} pj_t;

static void *green_join_scoped(void *arg)
{
    pj_t *j = arg;
    conc_timeout_begin(0.2);
    j->rc = conc_process_join(j->p, CONC_FOREVER);
    j->fired = conc_timeout_end();
    return NULL;
}

Test(colorless, process_join_scope_and_green, .timeout = TU_TIMEOUT)
{
    conc_process_t *p;
    conc_process_opts_t po = {.method = CONC_FORK};
    cr_assert_eq(conc_process_new(&p, sleeper_main, NULL, 0, &po), 0);
    int src = conc_process_start(p);
    const char *fm = NULL;
    conc_failure(&fm);
    cr_assert_eq(src, 0, "start: %s %s errno %d", conc_strerror(src), fm ? fm : "", errno);
    /* OS thread */
    cr_assert_eq(conc_timeout_begin(0.2), 0);
    int rc = conc_process_join(p, CONC_FOREVER);
    cr_assert_eq(conc_timeout_end(), 1);
    cr_assert_eq(rc, CONC_ETIMEDOUT, "%s", conc_strerror(rc));
    /* green thread, a ticker beside it */
    ticker_t tk = {0};
    pj_t j = {.p = p};
    conc_green_t *gt, *g;
    cr_assert_eq(conc_go(&gt, tick, &tk), 0);
    cr_assert_eq(conc_go(&g, green_join_scoped, &j), 0);
    cr_assert_eq(conc_green_join(g, 10), 0);
    atomic_store(&tk.stop, 1);
    cr_assert_eq(conc_green_join(gt, 5), 0);
    cr_assert_eq(j.rc, CONC_ETIMEDOUT);
    cr_assert_eq(j.fired, 1);
    cr_assert_geq(tk.ticks, 10);
    conc_green_free(g);
    conc_green_free(gt);
    cr_assert_eq(conc_process_join(p, 10), 0);
    conc_process_free(p);
}

/* A child joins its parent (multiprocessing.parent_process().join()) under
 * a Timeout scope, on its OS thread and on a green thread. */
static void *green_join_parent(void *arg)
{
    int *rc = arg;
    conc_timeout_begin(0.2);
    *rc = conc_process_join(conc_parent_process(), CONC_FOREVER);
    conc_timeout_end();
    return NULL;
}

static int parent_joiner(const void *arg, size_t len)
{
    (void)arg;
    (void)len;
    conc_process_t *pp = conc_parent_process();
    if (!pp)
        return 2;
    conc_timeout_begin(0.2);
    int rc = conc_process_join(pp, CONC_FOREVER);
    if (conc_timeout_end() != 1 || rc != CONC_ETIMEDOUT)
        return 3;
    int grc = -1;
    conc_green_t *g;
    if (conc_go(&g, green_join_parent, &grc) != 0 || conc_green_join(g, 10) != 0)
        return 4;
    conc_green_free(g);
    return grc == CONC_ETIMEDOUT ? 0 : 5;
}
CONC_REGISTER(parent_joiner);

Test(colorless, parent_process_join_scope, .timeout = TU_TIMEOUT)
{
    conc_process_opts_t po = {.method = CONC_FORK};
    conc_process_t *p;
    cr_assert_eq(conc_process_new(&p, parent_joiner, NULL, 0, &po), 0);
    cr_assert_eq(conc_process_start(p), 0);
    cr_assert_eq(conc_process_join(p, 20), 0);
    int code = -1;
    cr_assert_eq(conc_process_exitcode(p, &code), 0);
    cr_assert_eq(code, 0, "the child's checks failed: %d", code);
    conc_process_free(p);
}

static int slow_task(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg;
    (void)len;
    tu_sleep(1.0);
    return conc_pool_return(out, "ok", 2);
}
CONC_POOL_REGISTER(slow_task);

typedef struct fw {
    conc_future_t *f;
    int rc;
    int fired;
} fw_t;

static void *green_result_scoped(void *arg)
{
    fw_t *w = arg;
    const void *d;
    size_t n;
    conc_timeout_begin(0.2);
    w->rc = conc_future_bytes(w->f, CONC_FOREVER, &d, &n);
    w->fired = conc_timeout_end();
    return NULL;
}

Test(colorless, process_pool_result_scope_and_green, .timeout = TU_TIMEOUT)
{
    conc_process_pool_opts_t o = {.max_workers = 1, .method = CONC_FORK};
    conc_executor_t *ex;
    cr_assert_eq(conc_process_pool_new(&ex, &o), 0);
    conc_future_t *f;
    cr_assert_eq(conc_process_pool_submit(ex, &f, slow_task, NULL, 0), 0);
    const void *d;
    size_t n;
    /* OS thread */
    cr_assert_eq(conc_timeout_begin(0.2), 0);
    int rc = conc_future_bytes(f, CONC_FOREVER, &d, &n);
    cr_assert_eq(conc_timeout_end(), 1);
    cr_assert_eq(rc, CONC_ETIMEDOUT, "%s", conc_strerror(rc));
    /* green thread, a ticker beside it */
    ticker_t tk = {0};
    fw_t w = {.f = f};
    conc_green_t *gt, *g;
    cr_assert_eq(conc_go(&gt, tick, &tk), 0);
    cr_assert_eq(conc_go(&g, green_result_scoped, &w), 0);
    cr_assert_eq(conc_green_join(g, 10), 0);
    atomic_store(&tk.stop, 1);
    cr_assert_eq(conc_green_join(gt, 5), 0);
    cr_assert_eq(w.rc, CONC_ETIMEDOUT, "%s", conc_strerror(w.rc));
    cr_assert_eq(w.fired, 1);
    cr_assert_geq(tk.ticks, 10);
    conc_green_free(g);
    conc_green_free(gt);
    /* the result still comes */
    cr_assert_eq(conc_future_bytes(f, 10, &d, &n), 0);
    cr_assert(n == 2 && memcmp(d, "ok", 2) == 0);
    conc_future_free(f);
    cr_assert_eq(conc_executor_shutdown(ex, true, false), 0);
    conc_executor_free(ex);
}

TU_MAIN_WITH_PROCESS_GUARD()
