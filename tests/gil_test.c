/* conc_gil_t: CPython's GIL algorithm (Python/ceval_gil.c, 3.2+) as a
 * primitive. Mutual exclusion; the switch interval and the drop request
 * (a waiter asks after one interval, the holder's check drops); forced
 * switching with FIFO hand-off; bounded hand-off latency under a
 * CPU-bound holder; release around blocking calls; timeouts; green
 * threads (waiting parks only the green thread; kill and Timeout scopes
 * cut the wait); bad input. */
#include "test_util.h"

#include "conc/gil.h"
#include "conc/green.h"

/* ------------------------------------------------------------ defaults */

Test(gil, defaults_and_interval, .timeout = TU_TIMEOUT)
{
    conc_gil_t g = CONC_GIL_INIT, z;
    memset(&z, 0, sizeof z);
    cr_assert_eq(conc_gil_getswitchinterval(&g), CONC_GIL_DEFAULT_INTERVAL);
    cr_assert_eq(conc_gil_getswitchinterval(&z), 0.005);
    cr_assert_eq(conc_gil_setswitchinterval(&g, 0.001), 0);
    cr_assert_float_eq(conc_gil_getswitchinterval(&g), 0.001, 1e-12);
    cr_assert_eq(conc_gil_setswitchinterval(&g, 1e-12), 0); /* clamped to 1 µs */
    cr_assert_float_eq(conc_gil_getswitchinterval(&g), 1e-6, 1e-12);
    cr_assert_eq(conc_gil_init(&g), 0);
    cr_assert_eq(conc_gil_getswitchinterval(&g), 0.005);
    cr_assert_not(conc_gil_held(&g));
    cr_assert_eq(conc_gil_acquire(&z, CONC_FOREVER), 0);
    cr_assert(conc_gil_held(&z));
    cr_assert_eq(conc_gil_check(&z), 0, "nobody asked: check does nothing");
    cr_assert_eq(conc_gil_release(&z), 0);
    cr_assert_not(conc_gil_held(&z));
}

Test(gil, bad_input, .timeout = TU_TIMEOUT)
{
    conc_gil_t g = CONC_GIL_INIT;
    cr_assert_eq(conc_gil_init(NULL), CONC_EINVAL);
    cr_assert_eq(conc_gil_acquire(NULL, 1.0), CONC_EINVAL);
    cr_assert_eq(conc_gil_release(NULL), CONC_EINVAL);
    cr_assert_eq(conc_gil_check(NULL), CONC_EINVAL);
    cr_assert_eq(conc_gil_begin_allow(NULL), CONC_EINVAL);
    cr_assert_eq(conc_gil_end_allow(NULL), CONC_EINVAL);
    cr_assert_eq(conc_gil_setswitchinterval(NULL, 0.01), CONC_EINVAL);
    cr_assert(isnan(conc_gil_getswitchinterval(NULL)));
    cr_assert_not(conc_gil_held(NULL));
    cr_assert_eq(conc_gil_switches(NULL), 0);
    /* sys.setswitchinterval: ValueError for <= 0 */
    cr_assert_eq(conc_gil_setswitchinterval(&g, 0.0), CONC_EINVAL);
    cr_assert_eq(conc_gil_setswitchinterval(&g, -1.0), CONC_EINVAL);
    cr_assert_eq(conc_gil_setswitchinterval(&g, NAN), CONC_EINVAL);
    cr_assert_eq(conc_gil_setswitchinterval(&g, INFINITY), CONC_EINVAL);
    cr_assert_eq(conc_gil_getswitchinterval(&g), 0.005, "a refused value changes nothing");
    /* Lock.acquire's timeout rule */
    cr_assert_eq(conc_gil_acquire(&g, -1.0), CONC_EINVAL);
    cr_assert_eq(conc_gil_acquire(&g, NAN), CONC_EINVAL);
    cr_assert_not(conc_gil_held(&g), "a refused acquire touches nothing");
    /* not held: release, check and begin_allow are RuntimeError */
    cr_assert_eq(conc_gil_release(&g), CONC_EPERM);
    cr_assert_eq(conc_gil_check(&g), CONC_EPERM);
    cr_assert_eq(conc_gil_begin_allow(&g), CONC_EPERM);
    /* not reentrant */
    cr_assert_eq(conc_gil_acquire(&g, CONC_FOREVER), 0);
    cr_assert_eq(conc_gil_acquire(&g, CONC_FOREVER), CONC_EDEADLK);
    cr_assert_eq(conc_gil_acquire(&g, 0), CONC_EDEADLK);
    cr_assert_eq(conc_gil_end_allow(&g), CONC_EDEADLK);
    cr_assert(conc_gil_held(&g));
    cr_assert_eq(conc_gil_release(&g), 0);
}

/* ------------------------------------------------- release by non-holder */

typedef struct {
    conc_gil_t g;
    atomic_int step;
    atomic_int rc1, rc2, rc3;
} other_t;

static void *other_thread(void *arg)
{
    other_t *o = arg;
    atomic_store(&o->rc1, conc_gil_release(&o->g));
    atomic_store(&o->rc2, conc_gil_check(&o->g));
    atomic_store(&o->rc3, conc_gil_held(&o->g));
    return NULL;
}

Test(gil, release_by_non_holder_is_eperm, .timeout = TU_TIMEOUT)
{
    other_t o = {.g = CONC_GIL_INIT};
    cr_assert_eq(conc_gil_acquire(&o.g, CONC_FOREVER), 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, other_thread, &o), 0);
    pthread_join(t, NULL);
    cr_assert_eq(atomic_load(&o.rc1), CONC_EPERM);
    cr_assert_eq(atomic_load(&o.rc2), CONC_EPERM);
    cr_assert_eq(atomic_load(&o.rc3), 0);
    cr_assert(conc_gil_held(&o.g), "a refused release leaves the holder holding");
    cr_assert_eq(conc_gil_release(&o.g), 0);
}

/* ---------------------------------------------------- mutual exclusion */

typedef struct {
    conc_gil_t g;
    long iters;
    atomic_int inside;
    atomic_int overlaps;
    long counter; /* plain: protected by the GIL */
} mutex_t_;

static void excl_worker(void *arg, int idx)
{
    mutex_t_ *m = arg;
    (void)idx;
    if (conc_gil_acquire(&m->g, CONC_FOREVER) != 0) {
        atomic_fetch_add(&m->overlaps, 1000);
        return;
    }
    for (long i = 0; i < m->iters; i++) {
        if (atomic_fetch_add(&m->inside, 1) != 0)
            atomic_fetch_add(&m->overlaps, 1);
        long c = m->counter;
        for (volatile int k = 0; k < 20; k++) {
        }
        m->counter = c + 1;
        atomic_fetch_sub(&m->inside, 1);
        if (conc_gil_check(&m->g) < 0) /* a safe point: may switch */
            atomic_fetch_add(&m->overlaps, 1000);
        if (i % 97 == 0) { /* and a "blocking call" now and then */
            conc_gil_begin_allow(&m->g);
            sched_yield();
            conc_gil_end_allow(&m->g);
        }
    }
    if (conc_gil_release(&m->g) != 0)
        atomic_fetch_add(&m->overlaps, 1000);
}

Test(gil, mutual_exclusion, .timeout = TU_TIMEOUT)
{
    static mutex_t_ m;
    memset(&m, 0, sizeof m);
    conc_gil_setswitchinterval(&m.g, 0.0002);
    m.iters = tu_iters(20000);
    unsigned long s0 = conc_gil_switches(&m.g);
    tu_run_threads(4, excl_worker, &m);
    cr_assert_eq(atomic_load(&m.overlaps), 0, "%d overlaps or errors", atomic_load(&m.overlaps));
    cr_assert_eq(m.counter, 4 * m.iters);
    cr_assert_gt(conc_gil_switches(&m.g) - s0, 4, "the holders never switched");
    cr_assert_not(conc_gil_held(&m.g));
}

/* ---------------------------------------------- hand-off under a hog */

typedef struct {
    conc_gil_t g;
    atomic_int holding, stop;
    atomic_long waiter_ran; /* times the waiter held the GIL */
    atomic_long checks, switched;
    atomic_int errors;
} hog_t;

static void *hog(void *arg)
{
    hog_t *h = arg;
    if (conc_gil_acquire(&h->g, CONC_FOREVER) != 0) {
        atomic_fetch_add(&h->errors, 1);
        return NULL;
    }
    atomic_store(&h->holding, 1);
    long seen = 0;
    while (!atomic_load(&h->stop)) {
        for (volatile int k = 0; k < 200; k++) {
        }
        atomic_fetch_add(&h->checks, 1);
        int rc = conc_gil_check(&h->g);
        if (rc < 0)
            atomic_fetch_add(&h->errors, 1);
        if (rc == 1) {
            /* Forced switching: the requester ran before we got it back. */
            long ran = atomic_load(&h->waiter_ran);
            if (ran == seen)
                atomic_fetch_add(&h->errors, 100);
            seen = ran;
            atomic_fetch_add(&h->switched, 1);
        }
    }
    conc_gil_release(&h->g);
    return NULL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

Test(gil, handoff_latency_bounded_by_interval, .timeout = TU_TIMEOUT)
{
    static hog_t h;
    memset(&h, 0, sizeof h);
    const double interval = 0.010;
    cr_assert_eq(conc_gil_setswitchinterval(&h.g, interval), 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, hog, &h), 0);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&h.holding), 10.0));
    enum { ROUNDS = 9 };
    double lat[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = tu_now();
        int rc = conc_gil_acquire(&h.g, 10.0);
        lat[r] = tu_now() - t0;
        cr_assert_eq(rc, 0, "round %d: %d", r, rc);
        atomic_fetch_add(&h.waiter_ran, 1);
        cr_assert_eq(conc_gil_release(&h.g), 0);
        tu_sleep(0.002); /* let the hog run a little */
    }
    atomic_store(&h.stop, 1);
    pthread_join(t, NULL);
    qsort(lat, ROUNDS, sizeof *lat, cmp_d);
    cr_assert_eq(atomic_load(&h.errors), 0, "hog errors %d", atomic_load(&h.errors));
    cr_assert_geq(atomic_load(&h.switched), ROUNDS, "every hand-off went through check");
    /* The waiter asks only after a whole interval, and gets it soon after. */
    cr_assert_geq(lat[0], interval * 0.9, "got the GIL after %.4fs, before the interval", lat[0]);
    double bound = TU_SANITIZED ? interval + 0.2 : interval + 0.04;
    cr_assert_leq(lat[ROUNDS / 2], bound, "median hand-off latency %.4fs for a %.3fs interval",
                  lat[ROUNDS / 2], interval);
}

/* Without check the holder never drops it: the waiter times out. */
typedef struct {
    conc_gil_t *g;
    atomic_int rc;
    double dt;
} timed_t;

static void *timed_acquirer(void *arg)
{
    timed_t *p = arg;
    double t0 = tu_now();
    atomic_store(&p->rc, conc_gil_acquire(p->g, 0.1));
    p->dt = tu_now() - t0;
    if (atomic_load(&p->rc) == 0)
        conc_gil_release(p->g);
    return NULL;
}

Test(gil, no_check_no_switch, .timeout = TU_TIMEOUT)
{
    static conc_gil_t g;
    conc_gil_init(&g);
    conc_gil_setswitchinterval(&g, 0.001);
    cr_assert_eq(conc_gil_acquire(&g, CONC_FOREVER), 0);
    timed_t w = {&g, 1, 0};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, timed_acquirer, &w), 0);
    pthread_join(t, NULL);
    cr_assert_eq(atomic_load(&w.rc), CONC_ETIMEDOUT);
    tu_assert_timeout(w.dt, 0.1);
    cr_assert(atomic_load((_Atomic unsigned *)&g.drop_request), "the waiter asked for it");
    cr_assert_eq(conc_gil_check(&g), 0, "asked, but nobody waits any more: no switch");
    cr_assert(conc_gil_held(&g));
    cr_assert_eq(conc_gil_release(&g), 0);
    cr_assert_eq(conc_gil_acquire(&g, 0), 0, "free after its waiter left");
    cr_assert_eq(conc_gil_release(&g), 0);
    cr_assert_eq(conc_gil_acquire(&g, 0), 0);
    /* try once / a short timeout while another holds it */
    w.rc = 1;
    cr_assert_eq(pthread_create(&t, NULL, timed_acquirer, &w), 0);
    pthread_join(t, NULL);
    cr_assert_eq(atomic_load(&w.rc), CONC_ETIMEDOUT);
    cr_assert_eq(conc_gil_release(&g), 0);
}

/* ------------------------------------------------------------ FIFO */

typedef struct {
    conc_gil_t g;
    atomic_int order[8];
    atomic_int n;
    atomic_int errors;
} fifo_t;

static fifo_t fifo;

static atomic_long fifo_tid[8];

static void fifo_waiter(void *arg, int idx)
{
    (void)arg;
    atomic_store(&fifo_tid[idx], tu_gettid());
    if (conc_gil_acquire(&fifo.g, 20.0) != 0) {
        atomic_fetch_add(&fifo.errors, 1);
        return;
    }
    atomic_store(&fifo.order[atomic_fetch_add(&fifo.n, 1)], idx);
    if (conc_gil_release(&fifo.g) != 0)
        atomic_fetch_add(&fifo.errors, 1);
}

static void *fifo_one(void *arg)
{
    fifo_waiter(NULL, (int)(intptr_t)arg);
    return NULL;
}

Test(gil, fifo_handoff, .timeout = TU_TIMEOUT)
{
    memset(&fifo, 0, sizeof fifo);
    for (int i = 0; i < 8; i++)
        atomic_store(&fifo_tid[i], 0);
    conc_gil_setswitchinterval(&fifo.g, 5.0); /* no drop requests here */
    cr_assert_eq(conc_gil_acquire(&fifo.g, CONC_FOREVER), 0);
    enum { N = 6 };
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        cr_assert_eq(pthread_create(&t[i], NULL, fifo_one, (void *)(intptr_t)i), 0);
        /* each one queued (asleep in the kernel) before the next comes */
        cr_assert(TU_WAIT_UNTIL(atomic_load(&fifo_tid[i]) != 0, 10.0));
        cr_assert(TU_WAIT_UNTIL(tu_tid_sleeping(atomic_load(&fifo_tid[i])), 10.0));
        tu_sleep(0.005);
    }
    cr_assert_eq(conc_gil_release(&fifo.g), 0);
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(atomic_load(&fifo.errors), 0);
    cr_assert_eq(atomic_load(&fifo.n), N);
    for (int i = 0; i < N; i++)
        cr_assert_eq(atomic_load(&fifo.order[i]), i, "position %d went to waiter %d", i,
                     atomic_load(&fifo.order[i]));
}

/* ------------------------------------------- release around blocking */

typedef struct {
    conc_gil_t g;
    atomic_int in_call, other_got, done;
    atomic_int rc;
} allow_t;

static void *allow_other(void *arg)
{
    allow_t *a = arg;
    cr_assert(TU_WAIT_UNTIL(atomic_load(&a->in_call), 10.0));
    int rc = conc_gil_acquire(&a->g, 10.0);
    atomic_store(&a->other_got, rc == 0 ? 1 : rc);
    tu_sleep(0.02);
    if (rc == 0)
        conc_gil_release(&a->g);
    return NULL;
}

Test(gil, allow_threads_around_a_blocking_call, .timeout = TU_TIMEOUT)
{
    static allow_t a;
    memset(&a, 0, sizeof a);
    cr_assert_eq(conc_gil_acquire(&a.g, CONC_FOREVER), 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, allow_other, &a), 0);
    CONC_GIL_BEGIN_ALLOW_THREADS(&a.g)
    cr_assert_not(conc_gil_held(&a.g));
    atomic_store(&a.in_call, 1);
    /* the "blocking call": meanwhile the other thread runs with the GIL */
    cr_assert(TU_WAIT_UNTIL(atomic_load(&a.other_got) != 0, 10.0));
    CONC_GIL_END_ALLOW_THREADS(&a.g)
    cr_assert_eq(atomic_load(&a.other_got), 1);
    cr_assert(conc_gil_held(&a.g), "end_allow returns holding the GIL");
    pthread_join(t, NULL);
    cr_assert_eq(conc_gil_release(&a.g), 0);
}

/* A timeout scope cuts an OS thread's wait too. */
static void *scoped_acquirer(void *arg)
{
    timed_t *p = arg;
    conc_timeout_begin(0.05);
    double t0 = tu_now();
    atomic_store(&p->rc, conc_gil_acquire(p->g, CONC_FOREVER));
    p->dt = tu_now() - t0;
    conc_timeout_end();
    return NULL;
}

Test(gil, timeout_scope_cuts_a_thread_wait, .timeout = TU_TIMEOUT)
{
    static conc_gil_t g;
    conc_gil_init(&g);
    cr_assert_eq(conc_gil_acquire(&g, CONC_FOREVER), 0);
    timed_t w = {&g, 1, 0};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, scoped_acquirer, &w), 0);
    pthread_join(t, NULL);
    cr_assert_eq(atomic_load(&w.rc), CONC_ETIMEDOUT);
    tu_assert_timeout(w.dt, 0.05);
    cr_assert(conc_gil_held(&g));
    cr_assert_eq(conc_gil_release(&g), 0);
}

/* ------------------------------------------------------ green threads */

typedef struct {
    conc_gil_t *g;
    atomic_int stop;
    atomic_long ticks;
    atomic_int rc;
    atomic_int started;
    double dt;
} green_t_;

static void *ticker(void *arg)
{
    green_t_ *p = arg;
    while (!atomic_load(&p->stop)) {
        atomic_fetch_add(&p->ticks, 1);
        if (conc_sleep(0.001) != 0)
            break;
    }
    return NULL;
}

static void *green_acquirer(void *arg)
{
    green_t_ *p = arg;
    atomic_store(&p->started, 1);
    double t0 = tu_now();
    int rc = conc_gil_acquire(p->g, 0.2);
    p->dt = tu_now() - t0;
    atomic_store(&p->rc, rc);
    if (rc == 0)
        conc_gil_release(p->g);
    return NULL;
}

static void *green_forever(void *arg)
{
    green_t_ *p = arg;
    atomic_store(&p->started, 1);
    int rc = conc_gil_acquire(p->g, CONC_FOREVER);
    atomic_store(&p->rc, rc);
    if (rc == 0)
        conc_gil_release(p->g);
    return NULL;
}

static void *green_scoped(void *arg)
{
    green_t_ *p = arg;
    conc_timeout_begin(0.05);
    int rc = conc_gil_acquire(p->g, CONC_FOREVER);
    conc_timeout_end();
    atomic_store(&p->rc, rc);
    if (rc == 0)
        conc_gil_release(p->g);
    return NULL;
}

/* Another OS thread holds the GIL for the whole test. */
typedef struct {
    conc_gil_t g;
    atomic_int holding, stop;
} holder_t;

static void *holder_thread(void *arg)
{
    holder_t *h = arg;
    conc_gil_acquire(&h->g, CONC_FOREVER);
    atomic_store(&h->holding, 1);
    while (!atomic_load(&h->stop))
        tu_sleep(0.001);
    conc_gil_release(&h->g);
    return NULL;
}

Test(gil, green_wait_parks_only_the_green_thread, .timeout = TU_TIMEOUT)
{
    static holder_t h;
    memset(&h, 0, sizeof h);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, holder_thread, &h), 0);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&h.holding), 10.0));

    green_t_ tk = {.g = &h.g}, a = {.g = &h.g, .rc = 1};
    conc_green_t *gt, *ga;
    cr_assert_eq(conc_go(&gt, ticker, &tk), 0);
    cr_assert_eq(conc_go(&ga, green_acquirer, &a), 0);
    cr_assert_eq(conc_green_join(ga, 10.0), 0);
    atomic_store(&tk.stop, 1);
    cr_assert_eq(conc_green_join(gt, 10.0), 0);
    cr_assert_eq(atomic_load(&a.rc), CONC_ETIMEDOUT);
    tu_assert_timeout(a.dt, 0.2);
    cr_assert_geq(atomic_load(&tk.ticks), 40, "the ticker ticked %ld times: the GIL wait blocked the hub",
                  atomic_load(&tk.ticks));

    /* kill cuts the wait */
    green_t_ k = {.g = &h.g, .rc = 1};
    conc_green_t *gk;
    cr_assert_eq(conc_go(&gk, green_forever, &k), 0);
    conc_sleep(0.02);
    cr_assert(atomic_load(&k.started));
    cr_assert_eq(conc_green_kill(gk, true, 5.0), 0);
    cr_assert_eq(atomic_load(&k.rc), CONC_EKILLED);

    /* a Timeout scope cuts the wait */
    green_t_ s = {.g = &h.g, .rc = 1};
    conc_green_t *gs;
    cr_assert_eq(conc_go(&gs, green_scoped, &s), 0);
    cr_assert_eq(conc_green_join(gs, 10.0), 0);
    cr_assert_eq(atomic_load(&s.rc), CONC_ETIMEDOUT);

    atomic_store(&h.stop, 1);
    pthread_join(t, NULL);
    /* the GIL is whole: free, no waiter left behind */
    cr_assert_eq(conc_gil_acquire(&h.g, 0), 0);
    cr_assert_eq(conc_gil_release(&h.g), 0);
    conc_green_free(gt);
    conc_green_free(ga);
    conc_green_free(gk);
    conc_green_free(gs);
}

/* Green threads of one hub are holders of their own: a sibling waits
 * (parked) until the holder releases, and gets it from check. */
static void *green_hog(void *arg)
{
    green_t_ *p = arg;
    if (conc_gil_acquire(p->g, CONC_FOREVER) != 0)
        return NULL;
    atomic_store(&p->started, 1);
    long switched = 0;
    while (!atomic_load(&p->stop)) {
        int rc = conc_gil_check(p->g);
        if (rc == 1)
            switched++;
        conc_sleep(0.0005); /* keeps the GIL while it sleeps: the sibling stays parked */
    }
    atomic_store(&p->ticks, switched);
    conc_gil_release(p->g);
    return NULL;
}

static void *green_sibling(void *arg)
{
    green_t_ *p = arg;
    int rc = conc_gil_acquire(p->g, 10.0);
    atomic_store(&p->rc, rc);
    if (rc == 0) {
        if (!conc_gil_held(p->g))
            atomic_store(&p->rc, 99);
        conc_gil_release(p->g);
    }
    return NULL;
}

Test(gil, green_siblings_hand_off, .timeout = TU_TIMEOUT)
{
    static conc_gil_t g;
    conc_gil_init(&g);
    conc_gil_setswitchinterval(&g, 0.005);
    green_t_ hogp = {.g = &g}, sib = {.g = &g, .rc = 1};
    conc_green_t *gh, *gsb;
    cr_assert_eq(conc_go(&gh, green_hog, &hogp), 0);
    conc_sleep(0.005);
    cr_assert(atomic_load(&hogp.started));
    cr_assert_eq(conc_go(&gsb, green_sibling, &sib), 0);
    cr_assert_eq(conc_green_join(gsb, 10.0), 0);
    atomic_store(&hogp.stop, 1);
    cr_assert_eq(conc_green_join(gh, 10.0), 0);
    cr_assert_eq(atomic_load(&sib.rc), 0, "sibling: %d", atomic_load(&sib.rc));
    cr_assert_geq(atomic_load(&hogp.ticks), 1, "the hog handed over through check");
    conc_green_free(gh);
    conc_green_free(gsb);
}
