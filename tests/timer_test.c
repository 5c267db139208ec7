/* conc_timer_t: threading.Timer — fires once after its interval, cancel,
 * join, one shared timer thread, 100,000 pending timers in due order, equal
 * due times in start order, exit waits for pending timers. */
#include "test_util.h"

typedef struct {
    atomic_int calls;
    double fired_at;
    double started_at;
    atomic_ulong thread;
    _Atomic(conc_timer_t *) self;
    atomic_int join_rc;
    conc_event_t *block; /* fn waits on it when set */
    conc_event_t done;
} rec_t;

static void rec_init(rec_t *r)
{
    memset(r, 0, sizeof *r);
    conc_event_init(&r->done);
    atomic_store(&r->join_rc, 99);
}

static void rec_fn(void *arg)
{
    rec_t *r = arg;
    r->fired_at = tu_now();
    atomic_store(&r->thread, (unsigned long)pthread_self());
    if (r->block)
        conc_event_wait(r->block, 30);
    atomic_fetch_add(&r->calls, 1);
    conc_event_set(&r->done);
}

static void nop(void *arg) { (void)arg; }

Test(timer, bad_inputs, .timeout = TU_TIMEOUT)
{
    conc_timer_t *t = (conc_timer_t *)0x1;
    cr_assert_eq(conc_timer_start(NULL, 0.1, nop, NULL), CONC_EINVAL);
    cr_assert_eq(conc_timer_start(&t, 0.1, NULL, NULL), CONC_EINVAL);
    cr_assert_eq(conc_timer_start(&t, NAN, nop, NULL), CONC_EINVAL);
    cr_assert_eq(t, (conc_timer_t *)0x1, "*out set on failure");
    cr_assert_eq(conc_timer_cancel(NULL), CONC_EINVAL);
    cr_assert_eq(conc_timer_join(NULL, 1.0), CONC_EINVAL);
    cr_assert_eq(conc_timer_free(NULL), CONC_EINVAL);
    cr_assert_not(conc_timer_is_alive(NULL));
    cr_assert_not(conc_timer_fired(NULL));

    cr_assert_eq(conc_timer_start(&t, 0.01, nop, NULL), 0);
    cr_assert_eq(conc_timer_join(t, NAN), CONC_EINVAL);
    cr_assert_eq(conc_timer_join(t, 10), 0);
    cr_assert_eq(conc_timer_free(t), 0);
}

Test(timer, fires_once_after_interval, .timeout = TU_TIMEOUT)
{
    static rec_t r;
    rec_init(&r);
    conc_timer_t *t;
    double t0 = tu_now();
    cr_assert_eq(conc_timer_start(&t, 0.2, rec_fn, &r), 0);
    cr_assert(conc_timer_is_alive(t));
    cr_assert_not(conc_timer_fired(t));
    cr_assert_eq(conc_timer_join(t, 10), 0);
    cr_assert_eq(atomic_load(&r.calls), 1);
    tu_assert_timeout(r.fired_at - t0, 0.2);
    cr_assert(conc_timer_fired(t));
    cr_assert_not(conc_timer_is_alive(t));
    tu_sleep(0.1);
    cr_assert_eq(atomic_load(&r.calls), 1, "fired more than once");
    /* cancel after firing is harmless */
    cr_assert_eq(conc_timer_cancel(t), 0);
    cr_assert(conc_timer_fired(t));
    cr_assert_eq(conc_timer_join(t, 0), 0);
    cr_assert_eq(conc_timer_free(t), 0);
}

Test(timer, zero_interval_fires, .timeout = TU_TIMEOUT)
{
    static rec_t r;
    rec_init(&r);
    conc_timer_t *t;
    cr_assert_eq(conc_timer_start(&t, 0, rec_fn, &r), 0);
    cr_assert_eq(conc_event_wait(&r.done, 10), 0);
    cr_assert_eq(conc_timer_join(t, 10), 0);
    cr_assert_eq(atomic_load(&r.calls), 1);
    cr_assert_eq(conc_timer_free(t), 0);
}

Test(timer, cancel_before_firing, .timeout = TU_TIMEOUT)
{
    static rec_t r;
    rec_init(&r);
    conc_timer_t *t;
    cr_assert_eq(conc_timer_start(&t, 0.5, rec_fn, &r), 0);
    cr_assert_eq(conc_timer_cancel(t), 0);
    cr_assert_not(conc_timer_is_alive(t));
    double s = tu_now();
    cr_assert_eq(conc_timer_join(t, 10), 0);
    cr_assert_lt(tu_now() - s, 0.4, "join of a cancelled timer waited for the interval");
    cr_assert_eq(conc_timer_cancel(t), 0); /* twice: harmless */
    tu_sleep(0.7);
    cr_assert_eq(atomic_load(&r.calls), 0, "a cancelled timer fired");
    cr_assert_not(conc_timer_fired(t));
    cr_assert_not(conc_timer_is_alive(t));
    cr_assert_eq(conc_timer_free(t), 0);
}

Test(timer, join_timeout, .timeout = TU_TIMEOUT)
{
    static rec_t r;
    rec_init(&r);
    conc_timer_t *t;
    cr_assert_eq(conc_timer_start(&t, 5.0, rec_fn, &r), 0);
    cr_assert_eq(conc_timer_join(t, 0), CONC_ETIMEDOUT);
    double s = tu_now();
    cr_assert_eq(conc_timer_join(t, 0.2), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - s, 0.2);
    cr_assert(conc_timer_is_alive(t));
    cr_assert_eq(conc_timer_cancel(t), 0);
    cr_assert_eq(conc_timer_join(t, CONC_FOREVER), 0);
    cr_assert_eq(atomic_load(&r.calls), 0);
    cr_assert_eq(conc_timer_free(t), 0);
}

/* While fn runs: is_alive true, fired false until it returned, cancel does
 * not wait for it and does not undo it, join waits for it. */
Test(timer, state_while_running, .timeout = TU_TIMEOUT)
{
    static rec_t r;
    static conc_event_t block;
    rec_init(&r);
    conc_event_init(&block);
    r.block = &block;
    conc_timer_t *t;
    cr_assert_eq(conc_timer_start(&t, 0, rec_fn, &r), 0);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&r.thread) != 0, 10));
    cr_assert(conc_timer_is_alive(t));
    cr_assert_not(conc_timer_fired(t));
    double s = tu_now();
    cr_assert_eq(conc_timer_cancel(t), 0);
    cr_assert_lt(tu_now() - s, 1.0, "cancel waited for the running fn");
    cr_assert_eq(conc_timer_join(t, 0.1), CONC_ETIMEDOUT);
    conc_event_set(&block);
    cr_assert_eq(conc_timer_join(t, 10), 0);
    cr_assert_eq(atomic_load(&r.calls), 1);
    cr_assert(conc_timer_fired(t));
    cr_assert_not(conc_timer_is_alive(t));
    cr_assert_eq(conc_timer_free(t), 0);
}

static void join_self_fn(void *arg)
{
    rec_t *r = arg;
    conc_timer_t *me;
    double dl = tu_now() + 10;
    while (!(me = atomic_load(&r->self)) && tu_now() < dl)
        tu_sleep(0.001);
    atomic_store(&r->join_rc, me ? conc_timer_join(me, 1.0) : 98);
    atomic_fetch_add(&r->calls, 1);
}

Test(timer, join_from_own_fn_is_eperm, .timeout = TU_TIMEOUT)
{
    static rec_t r;
    rec_init(&r);
    conc_timer_t *t;
    cr_assert_eq(conc_timer_start(&t, 0.05, join_self_fn, &r), 0);
    atomic_store(&r.self, t);
    cr_assert_eq(conc_timer_join(t, 10), 0);
    cr_assert_eq(atomic_load(&r.join_rc), CONC_EPERM);
    cr_assert_eq(conc_timer_free(t), 0);
}

Test(timer, free_does_not_cancel, .timeout = TU_TIMEOUT)
{
    static rec_t r;
    rec_init(&r);
    conc_timer_t *t;
    cr_assert_eq(conc_timer_start(&t, 0.05, rec_fn, &r), 0);
    cr_assert_eq(conc_timer_free(t), 0);
    cr_assert_eq(conc_event_wait(&r.done, 10), 0);
    cr_assert_eq(atomic_load(&r.calls), 1);
}

Test(timer, one_shared_timer_thread, .timeout = TU_TIMEOUT)
{
    static rec_t r[20];
    conc_timer_t *t[20];
    for (int i = 0; i < 20; i++) {
        rec_init(&r[i]);
        cr_assert_eq(conc_timer_start(&t[i], 0.01 * (i % 5), rec_fn, &r[i]), 0);
    }
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(conc_timer_join(t[i], 10), 0);
        cr_assert_eq(conc_timer_free(t[i]), 0);
    }
    unsigned long th = atomic_load(&r[0].thread);
    cr_assert_neq(th, (unsigned long)pthread_self());
    for (int i = 1; i < 20; i++)
        cr_assert_eq(atomic_load(&r[i].thread), th, "timer %d ran on another thread", i);
}

/* fn may start and cancel other timers. */
typedef struct {
    rec_t inner;
    _Atomic(conc_timer_t *) started;
    _Atomic(conc_timer_t *) victim;
    atomic_int rc_start, rc_cancel;
} chain_t;

static void chain_fn(void *arg)
{
    chain_t *c = arg;
    conc_timer_t *t = NULL;
    atomic_store(&c->rc_start, conc_timer_start(&t, 0.01, rec_fn, &c->inner));
    atomic_store(&c->started, t);
    atomic_store(&c->rc_cancel, conc_timer_cancel(atomic_load(&c->victim)));
}

Test(timer, fn_starts_and_cancels_timers, .timeout = TU_TIMEOUT)
{
    static chain_t c;
    static rec_t victim;
    memset(&c, 0, sizeof c);
    rec_init(&c.inner);
    rec_init(&victim);
    conc_timer_t *v, *t;
    cr_assert_eq(conc_timer_start(&v, 0.5, rec_fn, &victim), 0);
    atomic_store(&c.victim, v);
    cr_assert_eq(conc_timer_start(&t, 0.05, chain_fn, &c), 0);
    cr_assert_eq(conc_timer_join(t, 10), 0);
    cr_assert_eq(atomic_load(&c.rc_start), 0);
    cr_assert_eq(atomic_load(&c.rc_cancel), 0);
    conc_timer_t *inner = atomic_load(&c.started);
    cr_assert_not_null(inner);
    cr_assert_eq(conc_timer_join(inner, 10), 0);
    cr_assert_eq(atomic_load(&c.inner.calls), 1);
    cr_assert_eq(conc_timer_join(v, 10), 0);
    tu_sleep(0.6);
    cr_assert_eq(atomic_load(&victim.calls), 0, "timer cancelled from a fn still fired");
    conc_timer_free(inner);
    conc_timer_free(v);
    conc_timer_free(t);
}

static void failing_fn(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
    conc_fail(CONC_EINVAL, "timer fn failed on purpose");
}

Test(timer, failing_fn_does_not_stop_others, .timeout = TU_TIMEOUT)
{
    static atomic_int fails;
    static rec_t r;
    rec_init(&r);
    conc_timer_t *f, *t;
    FILE *tmp = tmpfile(); /* the failure is reported on stderr: keep it quiet */
    fflush(stderr);
    int saved = dup(2);
    dup2(fileno(tmp), 2);
    int rc1 = conc_timer_start(&f, 0, failing_fn, &fails);
    int rc2 = conc_timer_start(&t, 0.05, rec_fn, &r);
    int j1 = conc_timer_join(f, 10), j2 = conc_timer_join(t, 10);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fclose(tmp);
    cr_assert_eq(rc1, 0);
    cr_assert_eq(rc2, 0);
    cr_assert_eq(j1, 0);
    cr_assert_eq(j2, 0);
    cr_assert_eq(atomic_load(&fails), 1);
    cr_assert_eq(atomic_load(&r.calls), 1);
    cr_assert(conc_timer_fired(f));
    conc_timer_free(f);
    conc_timer_free(t);
}

/* ---- ordering */

typedef struct slot slot_t;
typedef struct {
    int n;
    atomic_int next; /* slot of the next timer to fire */
    atomic_int pos;  /* timers done */
    int *order;  /* order[k] = index of the k-th timer to fire */
    int *calls;  /* per timer */
    double *fired;
    slot_t *slots;     /* timer i's argument: {&ord, i} */
    conc_timer_t **ts; /* timer i (freed by ord_free) */
} ord_t;
static ord_t ord;
struct slot {
    ord_t *o;
    int i;
};

static void ord_fn(void *arg)
{
    slot_t *s = arg;
    s->o->fired[s->i] = tu_now();
    s->o->calls[s->i]++;
    int k = atomic_fetch_add(&s->o->next, 1);
    if (k < s->o->n)
        s->o->order[k] = s->i;
    atomic_fetch_add(&s->o->pos, 1); /* published after order[k] */
}

static void ord_alloc(int n)
{
    ord.n = n;
    atomic_store(&ord.pos, 0);
    atomic_store(&ord.next, 0);
    ord.order = calloc((size_t)n, sizeof *ord.order);
    ord.calls = calloc((size_t)n, sizeof *ord.calls);
    ord.fired = calloc((size_t)n, sizeof *ord.fired);
    ord.slots = calloc((size_t)n, sizeof *ord.slots);
    ord.ts = calloc((size_t)n, sizeof *ord.ts);
    cr_assert(ord.order && ord.calls && ord.fired && ord.slots && ord.ts);
    for (int i = 0; i < n; i++)
        ord.slots[i] = (slot_t){&ord, i};
}

/* Start timer i, due in delay seconds. */
static void ord_start(int i, double delay)
{
    cr_assert_eq(conc_timer_start(&ord.ts[i], delay, ord_fn, &ord.slots[i]), 0);
}

static void ord_free(void)
{
    for (int i = 0; i < ord.n; i++)
        conc_timer_free(ord.ts[i]);
    free(ord.order);
    free(ord.calls);
    free(ord.fired);
    free(ord.slots);
    free(ord.ts);
}

Test(timer, many_pending_timers_fire_in_due_order, .timeout = TU_TIMEOUT)
{
    const int n = (int)tu_iters(100000);
    ord_alloc(n);
    double *lo = calloc((size_t)n, sizeof *lo), *hi = calloc((size_t)n, sizeof *hi);
    cr_assert(lo && hi);
    /* intervals spread over [0.3, 0.8) s in a scrambled order */
    unsigned long long seed = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        double iv = 0.3 + (double)(seed >> 11) / (double)(1ull << 53) * 0.5;
        double a = tu_now();
        int rc = conc_timer_start(&ord.ts[i], iv, ord_fn, &ord.slots[i]);
        double b = tu_now();
        cr_assert_eq(rc, 0, "start %d: %d", i, rc);
        lo[i] = a + iv; /* the due time is between these two */
        hi[i] = b + iv;
    }
    cr_assert(TU_WAIT_UNTIL(atomic_load(&ord.pos) >= n, 50), "%d of %d fired", atomic_load(&ord.pos),
              n);
    for (int i = 0; i < n; i++)
        cr_assert_eq(conc_timer_join(ord.ts[i], 10), 0);
    tu_sleep(0.05);
    cr_assert_eq(atomic_load(&ord.pos), n);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(ord.calls[i], 1, "timer %d fired %d times", i, ord.calls[i]);
        cr_assert_geq(ord.fired[i], lo[i] - TU_EPS, "timer %d fired %.4fs early", i, lo[i] - ord.fired[i]);
    }
    /* due order: no timer fires after one that was certainly due later */
    double maxlo = -1;
    int maxlo_i = -1;
    for (int k = 0; k < n; k++) {
        int i = ord.order[k];
        cr_assert(hi[i] >= maxlo - 1e-6,
                  "fire #%d: timer %d (due <= %.6f) fired after timer %d (due >= %.6f)", k, i,
                  hi[i], maxlo_i, maxlo);
        if (lo[i] > maxlo) {
            maxlo = lo[i];
            maxlo_i = i;
        }
    }
    free(lo);
    free(hi);
    ord_free();
}

Test(timer, same_interval_fires_in_start_order, .timeout = TU_TIMEOUT)
{
    const int n = (int)tu_iters(20000);
    ord_alloc(n);
    for (int i = 0; i < n; i++)
        ord_start(i, 0.2);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&ord.pos) >= n, 50));
    for (int k = 0; k < n; k++)
        cr_assert_eq(ord.order[k], k, "fire #%d was timer %d", k, ord.order[k]);
    ord_free();
}

/* Equal (or already passed) due times: start order. The timer thread is
 * held busy while they are started, so all are due when it comes back. */
Test(timer, equal_due_times_fire_in_start_order, .timeout = TU_TIMEOUT)
{
    static rec_t blocker;
    static conc_event_t release;
    const int n = 2000;
    rec_init(&blocker);
    conc_event_init(&release);
    blocker.block = &release;
    conc_timer_t *b;
    cr_assert_eq(conc_timer_start(&b, 0, rec_fn, &blocker), 0);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&blocker.thread) != 0, 10));
    ord_alloc(n);
    for (int i = 0; i < n; i++)
        ord_start(i, (i % 3) ? 0.0 : 1e-9);
    conc_event_set(&release);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&ord.pos) >= n, 30));
    for (int k = 0; k < n; k++)
        cr_assert_eq(ord.order[k], k, "fire #%d was timer %d", k, ord.order[k]);
    cr_assert_eq(conc_timer_join(b, 10), 0);
    conc_timer_free(b);
    ord_free();
}

/* Cancelling many of many pending timers: exactly the others fire. */
Test(timer, cancel_half_of_many, .timeout = TU_TIMEOUT)
{
    const int n = (int)tu_iters(20000);
    ord_alloc(n);
    for (int i = 0; i < n; i++)
        ord_start(i, 0.3 + 0.2 * ((i * 7919) % n) / n);
    for (int i = 0; i < n; i += 2)
        cr_assert_eq(conc_timer_cancel(ord.ts[i]), 0);
    for (int i = 0; i < n; i++)
        cr_assert_eq(conc_timer_join(ord.ts[i], 30), 0);
    tu_sleep(0.05);
    cr_assert_eq(atomic_load(&ord.pos), n / 2);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(ord.calls[i], i % 2, "timer %d fired %d times", i, ord.calls[i]);
        cr_assert_eq(conc_timer_fired(ord.ts[i]), i % 2 == 1);
    }
    ord_free();
}

/* ---- exit waits for pending timers, not for cancelled ones */

static void say_fired(void *arg)
{
    (void)arg;
    if (write(1, "fired\n", 6) != 6)
        return;
}

static int scenario(const char *name)
{
    conc_timer_t *t;
    if (strcmp(name, "pending") == 0) {
        if (conc_timer_start(&t, 0.3, say_fired, NULL) != 0)
            return 2;
        conc_timer_free(t);
        return 0; /* return from main: the timer must still fire */
    }
    if (strcmp(name, "cancelled") == 0) {
        if (conc_timer_start(&t, 30.0, say_fired, NULL) != 0)
            return 2;
        conc_timer_cancel(t);
        conc_timer_free(t);
        return 0; /* must not wait 30 s */
    }
    return 99;
}

TU_MAIN_WITH_SCENARIOS(scenario)

Test(timer, exit_waits_for_pending_timer, .timeout = TU_TIMEOUT)
{
    char out[256];
    double secs;
    int st = tu_run_scenario("pending", out, sizeof out, &secs);
    cr_assert(WIFEXITED(st), "status %#x", st);
    cr_assert_eq(WEXITSTATUS(st), 0);
    cr_assert_str_eq(out, "fired\n", "process exited before its pending timer fired");
    cr_assert_geq(secs, 0.3 - TU_EPS);
}

Test(timer, exit_does_not_wait_for_cancelled_timer, .timeout = TU_TIMEOUT)
{
    char out[256];
    double secs;
    int st = tu_run_scenario("cancelled", out, sizeof out, &secs);
    cr_assert(WIFEXITED(st), "status %#x", st);
    cr_assert_eq(WEXITSTATUS(st), 0);
    cr_assert_str_eq(out, "");
    cr_assert_lt(secs, 10.0);
}

/* ---- timers from many threads at once, cancelled from other threads */

typedef struct {
    conc_timer_t *t;
    atomic_int calls;
} mt_slot_t;

typedef struct {
    mt_slot_t *slots;
    int per_thread;
    atomic_int errors;
} mt_t;

static void mt_fn(void *arg) { atomic_fetch_add(&((mt_slot_t *)arg)->calls, 1); }

static void mt_starter(void *p, int i)
{
    mt_t *m = p;
    unsigned seed = (unsigned)i * 2654435761u + 1;
    for (int k = 0; k < m->per_thread; k++) {
        mt_slot_t *s = &m->slots[i * m->per_thread + k];
        seed = seed * 1103515245u + 12345u;
        double iv = (double)((seed >> 16) % 50) / 1000.0; /* 0..49 ms */
        if (conc_timer_start(&s->t, iv, mt_fn, s) != 0)
            atomic_fetch_add(&m->errors, 1);
        /* cancel the previous timer of this thread every third time */
        if (k > 0 && k % 3 == 0)
            if (conc_timer_cancel(m->slots[i * m->per_thread + k - 1].t) != 0)
                atomic_fetch_add(&m->errors, 1);
    }
}

Test(timer, start_and_cancel_from_many_threads, .timeout = TU_TIMEOUT)
{
    static mt_t m;
    static tu_bunch_t b;
    const int nt = 4;
    memset(&m, 0, sizeof m);
    m.per_thread = (int)tu_iters(5000);
    m.slots = calloc((size_t)(nt * m.per_thread), sizeof *m.slots);
    cr_assert_not_null(m.slots);
    tu_bunch_start(&b, nt, mt_starter, &m);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&m.errors), 0);
    for (int k = 0; k < nt * m.per_thread; k++) {
        mt_slot_t *s = &m.slots[k];
        cr_assert_eq(conc_timer_join(s->t, 30), 0);
        int calls = atomic_load(&s->calls);
        cr_assert_leq(calls, 1, "timer %d fired %d times", k, calls);
        cr_assert_eq(conc_timer_fired(s->t), calls == 1, "timer %d: fired() disagrees", k);
        if (k % m.per_thread % 3 != 2) /* never cancelled */
            cr_assert_eq(calls, 1, "timer %d never fired", k);
        cr_assert_not(conc_timer_is_alive(s->t));
        conc_timer_free(s->t);
    }
    free(m.slots);
}

/* ---- fork: a pending timer of the parent does not fire in the child, and
 * the child can use timers. */

static void mark_fn(void *arg) { atomic_fetch_add((atomic_int *)arg, 1); }

Test(timer, timers_after_fork, .timeout = TU_TIMEOUT)
{
    static atomic_int parent_calls, child_calls;
    if (TU_SANITIZED)
        cr_skip_test("sanitizer runtimes cannot start threads reliably in a child forked from a "
                     "threaded process (TSan refuses; gcc 12's ASan may inherit its allocator "
                     "lock held by another thread and deadlock)");
    conc_timer_t *p;
    cr_assert_eq(conc_timer_start(&p, 0.3, mark_fn, &parent_calls), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        int bad = 0;
        conc_timer_t *c;
        if (conc_timer_start(&c, 0.05, mark_fn, &child_calls) != 0)
            _exit(1);
        if (conc_timer_join(c, 10) != 0 || atomic_load(&child_calls) != 1)
            bad |= 2;
        tu_sleep(0.5); /* past the parent's timer's due time */
        if (atomic_load(&parent_calls) != 0)
            bad |= 4; /* the parent's timer fired in the child too */
        if (conc_timer_join(p, 1.0) != 0)
            bad |= 8; /* its join must not hang in the child */
        _exit(bad);
    }
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert_eq(conc_timer_join(p, 10), 0);
    cr_assert_eq(atomic_load(&parent_calls), 1);
    conc_timer_free(p);
    cr_assert(WIFEXITED(st), "child status %#x", st);
    cr_assert_eq(WEXITSTATUS(st), 0, "child failure mask %#x", WEXITSTATUS(st));
}
