/* Timeout scopes (conc_timeout_begin/end, gevent's Timeout as a context
 * manager: test__timeout.py) and LoopExit.
 *
 * Each scope behaviour is one scenario function that returns NULL when it
 * held, or a message; it runs on the main OS context, on a plain pthread
 * (no hub) and inside a green thread, so a scope behaves the same on
 * every kind of context. Behaviours: a scope fires once (the first blocked
 * call gets CONC_ETIMEDOUT, later calls are not cut), ending a scope
 * cancels it, a call with its own shorter timeout is unaffected, scopes
 * nest (inner earlier, outer earlier, both in turn), end returns 1 only
 * for the scope that fired, a satisfied call inside a scope succeeds,
 * zero and FOREVER scopes, misuse, every blocking primitive is cut, and a
 * cut lock wait leaves the lock as it was.
 *
 * LoopExit (CONC_ELOOPEXIT) needs a process with no other thread that
 * conc knows of (threads conc never saw, like Criterion's runner thread,
 * do not count: loopexit_ignores_criterions_threads). Most cases run as
 * scenarios in a fresh single-threaded exec of this binary
 * (TU_MAIN_WITH_SCENARIOS), with alarm() turning a hang into a failure. */
#include "test_util.h"

#include <dirent.h>
#include <signal.h>

#include "conc/green.h"

#define PTR(x) ((void *)(uintptr_t)(x))
#define INT(p) ((int)(uintptr_t)(p))

/* Scenario plumbing: CHECK fails the scenario with a message. */
static __thread char sc_msg[256];
#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            int n_ = snprintf(sc_msg, sizeof sc_msg, "line %d: ", __LINE__); \
            snprintf(sc_msg + n_, sizeof sc_msg - (size_t)n_, __VA_ARGS__);  \
            cleanup_scopes();                                                \
            return sc_msg;                                                   \
        }                                                                    \
    } while (0)
#define CHECK_RC(expr, want)                                                 \
    do {                                                                     \
        int rc_ = (expr);                                                    \
        CHECK(rc_ == (want), "%s returned %d (%s), want %d", #expr, rc_, conc_errname(rc_), (want)); \
    } while (0)
/* dt roughly t: not before it, and not far after */
#define CHECK_TOOK(dt, t)                                                    \
    CHECK((dt) >= (t) - TU_EPS && (dt) < (t) + TU_SLACK, "took %.4fs, want %.3fs", (dt), (t))

static void cleanup_scopes(void)
{
    while (conc_timeout_end() >= 0) {
    }
}

typedef const char *(*scenario_fn)(void);

static conc_event_t never = CONC_EVENT_INIT; /* nobody sets it */

static const char *sc_fires(void)
{
    CHECK_RC(conc_timeout_begin(0.05), 0);
    double t0 = tu_now();
    CHECK_RC(conc_event_wait(&never, CONC_FOREVER), CONC_ETIMEDOUT);
    CHECK_TOOK(tu_now() - t0, 0.05);
    CHECK_RC(conc_timeout_end(), 1);
    return NULL;
}

static const char *sc_fires_once(void)
{
    conc_lock_t l = CONC_LOCK_INIT;
    CHECK_RC(conc_timeout_begin(0.03), 0);
    CHECK_RC(conc_event_wait(&never, CONC_FOREVER), CONC_ETIMEDOUT);
    /* fired: later calls in the same scope are not cut again */
    double t0 = tu_now();
    CHECK_RC(conc_event_wait(&never, 0.08), CONC_ETIMEDOUT);
    CHECK_TOOK(tu_now() - t0, 0.08);
    CHECK_RC(conc_lock_acquire(&l, true, 1.0), 0);
    CHECK_RC(conc_lock_release(&l), 0);
    CHECK_RC(conc_timeout_end(), 1);
    CHECK_RC(conc_timeout_end(), CONC_EPERM);
    return NULL;
}

static const char *sc_end_cancels(void)
{
    CHECK_RC(conc_timeout_begin(0.03), 0);
    CHECK_RC(conc_timeout_end(), 0);
    double t0 = tu_now();
    CHECK_RC(conc_event_wait(&never, 0.1), CONC_ETIMEDOUT);
    CHECK_TOOK(tu_now() - t0, 0.1);
    return NULL;
}

static const char *sc_own_shorter_timeout_unaffected(void)
{
    CHECK_RC(conc_timeout_begin(0.5), 0);
    for (int i = 0; i < 2; i++) {
        double t0 = tu_now();
        CHECK_RC(conc_event_wait(&never, 0.03), CONC_ETIMEDOUT);
        CHECK_TOOK(tu_now() - t0, 0.03);
    }
    CHECK_RC(conc_timeout_end(), 0); /* its own timeout, not the scope's */
    return NULL;
}

static const char *sc_nested_inner_earlier(void)
{
    CHECK_RC(conc_timeout_begin(2.0), 0);
    CHECK_RC(conc_timeout_begin(0.04), 0);
    double t0 = tu_now();
    CHECK_RC(conc_event_wait(&never, CONC_FOREVER), CONC_ETIMEDOUT);
    CHECK_TOOK(tu_now() - t0, 0.04);
    CHECK_RC(conc_timeout_end(), 1);
    CHECK_RC(conc_timeout_end(), 0);
    return NULL;
}

static const char *sc_nested_outer_earlier(void)
{
    CHECK_RC(conc_timeout_begin(0.04), 0);
    CHECK_RC(conc_timeout_begin(2.0), 0);
    double t0 = tu_now();
    CHECK_RC(conc_event_wait(&never, CONC_FOREVER), CONC_ETIMEDOUT);
    CHECK_TOOK(tu_now() - t0, 0.04);
    CHECK_RC(conc_timeout_end(), 0);
    CHECK_RC(conc_timeout_end(), 1);
    return NULL;
}

static const char *sc_nested_both_fire_in_turn(void)
{
    double t0 = tu_now();
    CHECK_RC(conc_timeout_begin(0.12), 0);
    CHECK_RC(conc_timeout_begin(0.04), 0);
    CHECK_RC(conc_event_wait(&never, CONC_FOREVER), CONC_ETIMEDOUT);
    CHECK_TOOK(tu_now() - t0, 0.04);
    CHECK_RC(conc_event_wait(&never, CONC_FOREVER), CONC_ETIMEDOUT);
    CHECK_TOOK(tu_now() - t0, 0.12);
    CHECK_RC(conc_timeout_end(), 1);
    CHECK_RC(conc_timeout_end(), 1);
    return NULL;
}

static const char *sc_inner_scope_after_outer_fired(void)
{
    /* the outer fired; an inner scope opened afterwards still works */
    CHECK_RC(conc_timeout_begin(0.02), 0);
    CHECK_RC(conc_event_wait(&never, CONC_FOREVER), CONC_ETIMEDOUT);
    CHECK_RC(conc_timeout_begin(0.03), 0);
    double t0 = tu_now();
    CHECK_RC(conc_event_wait(&never, CONC_FOREVER), CONC_ETIMEDOUT);
    CHECK_TOOK(tu_now() - t0, 0.03);
    CHECK_RC(conc_timeout_end(), 1);
    CHECK_RC(conc_timeout_end(), 1);
    return NULL;
}

static const char *sc_satisfied_calls_succeed(void)
{
    conc_event_t set = CONC_EVENT_INIT;
    conc_event_set(&set);
    conc_lock_t l = CONC_LOCK_INIT;
    conc_semaphore_t s = CONC_SEMAPHORE_INIT(1);
    CHECK_RC(conc_timeout_begin(0.05), 0);
    CHECK_RC(conc_event_wait(&set, CONC_FOREVER), 0);
    CHECK_RC(conc_lock_acquire(&l, true, CONC_FOREVER), 0);
    CHECK_RC(conc_lock_release(&l), 0);
    CHECK_RC(conc_semaphore_acquire(&s, true, CONC_FOREVER), 0);
    CHECK_RC(conc_timeout_end(), 0);
    return NULL;
}

static const char *sc_zero_and_forever_scopes(void)
{
    conc_lock_t l = CONC_LOCK_INIT;
    CHECK_RC(conc_timeout_begin(0), 0);
    CHECK_RC(conc_lock_acquire(&l, true, CONC_FOREVER), 0); /* never blocked */
    double t0 = tu_now();
    CHECK_RC(conc_event_wait(&never, CONC_FOREVER), CONC_ETIMEDOUT);
    CHECK(tu_now() - t0 < 0.5, "a 0 s scope waited %.3fs", tu_now() - t0);
    CHECK_RC(conc_timeout_end(), 1);
    CHECK_RC(conc_lock_release(&l), 0);

    CHECK_RC(conc_timeout_begin(CONC_FOREVER), 0);
    t0 = tu_now();
    CHECK_RC(conc_event_wait(&never, 0.03), CONC_ETIMEDOUT);
    CHECK_TOOK(tu_now() - t0, 0.03);
    CHECK_RC(conc_timeout_end(), 0);
    return NULL;
}

static const char *sc_misuse(void)
{
    CHECK_RC(conc_timeout_end(), CONC_EPERM);
    CHECK_RC(conc_timeout_begin(NAN), CONC_EINVAL);
    CHECK_RC(conc_timeout_end(), CONC_EPERM); /* the failed begin opened nothing */
    for (int i = 0; i < 8; i++)
        CHECK_RC(conc_timeout_begin(10.0 + i), 0);
    CHECK_RC(conc_timeout_begin(1.0), CONC_ERANGE);
    for (int i = 0; i < 8; i++)
        CHECK_RC(conc_timeout_end(), 0);
    CHECK_RC(conc_timeout_end(), CONC_EPERM);
    return NULL;
}

static int int_cmp(const void *a, const void *b)
{
    return (uintptr_t)a < (uintptr_t)b ? -1 : (uintptr_t)a > (uintptr_t)b;
}

/* Every blocking primitive is cut by a scope. */
static const char *sc_cuts_every_primitive(void)
{
    conc_lock_t l = CONC_LOCK_INIT;
    conc_rlock_t rl = CONC_RLOCK_INIT;
    conc_semaphore_t s = CONC_SEMAPHORE_INIT(0);
    conc_cond_t c = CONC_COND_INIT;
    conc_barrier_t b;
    conc_queue_t *q = NULL, *pq = NULL;
    conc_future_t *f = NULL;
    void *item;
    (void)rl;
    CHECK_RC(conc_barrier_init(&b, 2, NULL, NULL, CONC_FOREVER), 0);
    CHECK_RC(conc_queue_new(&q, CONC_FIFO, 1), 0);
    CHECK_RC(conc_priority_queue_new(&pq, 0, int_cmp), 0);
    CHECK_RC(conc_future_new(&f), 0);
    CHECK_RC(conc_lock_acquire(&l, true, CONC_FOREVER), 0);

#define CUT(call, want)                                                      \
    do {                                                                     \
        CHECK_RC(conc_timeout_begin(0.02), 0);                               \
        double t0_ = tu_now();                                               \
        CHECK_RC(call, want);                                                \
        CHECK_TOOK(tu_now() - t0_, 0.02);                                    \
        CHECK_RC(conc_timeout_end(), 1);                                     \
    } while (0)
    CUT(conc_lock_acquire(&l, true, CONC_FOREVER), CONC_ETIMEDOUT);
    CUT(conc_semaphore_acquire(&s, true, CONC_FOREVER), CONC_ETIMEDOUT);
    CHECK_RC(conc_cond_acquire(&c, true, CONC_FOREVER), 0);
    CUT(conc_cond_wait(&c, CONC_FOREVER), CONC_ETIMEDOUT);
    CHECK(conc_rlock_is_owned(&c.own) || c.kind != 0, "cond wait cut by a scope lost its lock");
    CHECK_RC(conc_cond_release(&c), 0);
    CUT(conc_queue_get(q, &item, true, CONC_FOREVER), CONC_ETIMEDOUT);
    CUT(conc_queue_get(pq, &item, true, CONC_FOREVER), CONC_ETIMEDOUT);
    CHECK_RC(conc_queue_put(q, PTR(1), true, CONC_FOREVER), 0);
    CUT(conc_queue_put(q, PTR(2), true, CONC_FOREVER), CONC_ETIMEDOUT);
    CUT(conc_future_result(f, CONC_FOREVER, &item), CONC_ETIMEDOUT);
    CUT(conc_barrier_wait(&b, CONC_FOREVER, NULL), CONC_ETIMEDOUT);
#undef CUT
    /* the lock is still ours and unchanged; the queue still holds its item */
    CHECK(conc_lock_locked(&l), "lock state changed by a cut acquire");
    CHECK_RC(conc_lock_release(&l), 0);
    CHECK_RC(conc_lock_acquire(&l, false, CONC_FOREVER), 0);
    CHECK_RC(conc_lock_release(&l), 0);
    CHECK_RC(conc_queue_get(q, &item, false, 0), 0);
    CHECK(item == PTR(1), "queue item %p", item);
    CHECK(conc_semaphore_value(&s) == 0, "semaphore value %ld", conc_semaphore_value(&s));
    CHECK_RC(conc_future_set_result(f, PTR(5)), 0);
    CHECK_RC(conc_future_result(f, 0, &item), 0);
    conc_future_free(f);
    conc_queue_free(q, NULL);
    conc_queue_free(pq, NULL);
    return NULL;
}

static const struct {
    const char *name;
    scenario_fn fn;
} scenarios[] = {
    {"fires", sc_fires},
    {"fires_once", sc_fires_once},
    {"end_cancels", sc_end_cancels},
    {"own_shorter_timeout_unaffected", sc_own_shorter_timeout_unaffected},
    {"nested_inner_earlier", sc_nested_inner_earlier},
    {"nested_outer_earlier", sc_nested_outer_earlier},
    {"nested_both_fire_in_turn", sc_nested_both_fire_in_turn},
    {"inner_scope_after_outer_fired", sc_inner_scope_after_outer_fired},
    {"satisfied_calls_succeed", sc_satisfied_calls_succeed},
    {"zero_and_forever_scopes", sc_zero_and_forever_scopes},
    {"misuse", sc_misuse},
    {"cuts_every_primitive", sc_cuts_every_primitive},
};
#define NSC (sizeof scenarios / sizeof scenarios[0])

static void run_all_here(const char *where)
{
    for (size_t i = 0; i < NSC; i++) {
        const char *m = scenarios[i].fn();
        cr_expect_null(m, "%s on %s: %s", scenarios[i].name, where, m ? m : "");
    }
}

Test(green_timeout, scopes_on_the_main_os_context, .timeout = TU_TIMEOUT)
{
    run_all_here("the main OS context");
}

typedef struct {
    char msg[NSC][256];
} results_t;

static void *run_all_into(void *arg)
{
    results_t *r = arg;
    for (size_t i = 0; i < NSC; i++) {
        const char *m = scenarios[i].fn();
        r->msg[i][0] = 0;
        if (m)
            snprintf(r->msg[i], sizeof r->msg[i], "%s", m);
    }
    return NULL;
}

Test(green_timeout, scopes_on_a_plain_pthread, .timeout = TU_TIMEOUT)
{
    static results_t r;
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, run_all_into, &r), 0);
    pthread_join(th, NULL);
    for (size_t i = 0; i < NSC; i++)
        cr_expect_eq(r.msg[i][0], 0, "%s on a pthread: %s", scenarios[i].name, r.msg[i]);
}

/* A scope ending on another thread does not touch this one's. */
static void *open_scope_elsewhere(void *arg)
{
    (void)arg;
    int rc = conc_timeout_begin(0.01);
    tu_sleep(0.02);
    int e = conc_timeout_end();
    return PTR(rc == 0 && e == 0 ? 0 : 1);
}

Test(green_timeout, scopes_are_per_os_thread, .timeout = TU_TIMEOUT)
{
    cr_assert_eq(conc_timeout_begin(0.2), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, open_scope_elsewhere, NULL), 0);
    void *r = PTR(9);
    pthread_join(th, &r);
    cr_assert_eq(INT(r), 0, "the other thread's scope fired or could not be ended");
    cr_assert_eq(conc_timeout_end(), 0, "this thread's scope was disturbed");
    cr_assert_eq(conc_timeout_end(), CONC_EPERM);
}

/* ---------------------------------------------------- inside green threads */

static const char *sc_sleep_cut(void)
{
    CHECK_RC(conc_timeout_begin(0.03), 0);
    double t0 = tu_now();
    CHECK_RC(conc_sleep(2.0), CONC_ETIMEDOUT);
    CHECK_TOOK(tu_now() - t0, 0.03);
    CHECK_RC(conc_timeout_end(), 1);
    CHECK_RC(conc_timeout_begin(1.0), 0);
    CHECK_RC(conc_sleep(0.02), 0);
    CHECK_RC(conc_sleep(0), 0);
    CHECK_RC(conc_timeout_end(), 0);
    return NULL;
}

typedef struct {
    double secs;
    atomic_int rc;
} sleep_arg_t;

static void *sleep_arg(void *arg)
{
    sleep_arg_t *s = arg;
    atomic_store(&s->rc, conc_sleep(s->secs));
    return NULL;
}

static const char *sc_green_join_cut(void)
{
    static __thread sleep_arg_t s;
    s.secs = 2.0;
    atomic_store(&s.rc, 99);
    conc_green_t *g;
    CHECK_RC(conc_go(&g, sleep_arg, &s), 0);
    CHECK_RC(conc_timeout_begin(0.03), 0);
    double t0 = tu_now();
    int rc = conc_green_join(g, CONC_FOREVER);
    double dt = tu_now() - t0;
    int e = conc_timeout_end();
    int k = conc_green_kill(g, true, 5.0);
    bool killed = conc_green_killed(g);
    conc_green_free(g);
    CHECK(rc == CONC_ETIMEDOUT, "join in a scope returned %d", rc);
    CHECK_TOOK(dt, 0.03);
    CHECK(e == 1, "end returned %d", e);
    CHECK(k == 0, "kill returned %d", k);
    CHECK(killed, "not killed");
    CHECK(atomic_load(&s.rc) == CONC_EKILLED, "the joined green thread's sleep returned %d",
          atomic_load(&s.rc));
    return NULL;
}

static const char *(*const green_scenarios[])(void) = {sc_sleep_cut, sc_green_join_cut};

typedef struct {
    results_t r;
    char gmsg[2][256];
} green_results_t;

static void *run_all_green(void *arg)
{
    green_results_t *r = arg;
    run_all_into(&r->r);
    for (size_t i = 0; i < 2; i++) {
        const char *m = green_scenarios[i]();
        r->gmsg[i][0] = 0;
        if (m)
            snprintf(r->gmsg[i], sizeof r->gmsg[i], "%s", m);
    }
    return NULL;
}

Test(green_timeout, scopes_inside_a_green_thread, .timeout = TU_TIMEOUT)
{
    static green_results_t r;
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, run_all_green, &r), 0);
    cr_assert_eq(conc_green_join(g, 30.0), 0);
    for (size_t i = 0; i < NSC; i++)
        cr_expect_eq(r.r.msg[i][0], 0, "%s in a green thread: %s", scenarios[i].name, r.r.msg[i]);
    cr_expect_eq(r.gmsg[0][0], 0, "sleep_cut in a green thread: %s", r.gmsg[0]);
    cr_expect_eq(r.gmsg[1][0], 0, "green_join_cut in a green thread: %s", r.gmsg[1]);
    cr_assert_eq(conc_green_free(g), 0);
}

Test(green_timeout, sleep_and_green_join_cut_on_the_main_context, .timeout = TU_TIMEOUT)
{
    const char *m = sc_sleep_cut();
    cr_expect_null(m, "sleep_cut: %s", m ? m : "");
    m = sc_green_join_cut();
    cr_expect_null(m, "green_join_cut: %s", m ? m : "");
}

/* A scope belongs to the context that opened it: green threads without a
 * scope, and the main context, are not cut by another green thread's. */
typedef struct {
    double scope;   /* 0: none */
    double sleep;
    atomic_int rc, end;
    double took;
} scoped_t;

static void *scoped_sleeper(void *arg)
{
    scoped_t *s = arg;
    if (s->scope > 0)
        conc_timeout_begin(s->scope);
    double t0 = tu_now();
    atomic_store(&s->rc, conc_sleep(s->sleep));
    s->took = tu_now() - t0;
    atomic_store(&s->end, s->scope > 0 ? conc_timeout_end() : -100);
    return NULL;
}

Test(green_timeout, scopes_are_per_green_thread, .timeout = TU_TIMEOUT)
{
    scoped_t s[3] = {{.scope = 0.03, .sleep = 1.0}, {.sleep = 0.1}, {.scope = 0.5, .sleep = 0.06}};
    conc_green_t *g[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_go(&g[i], scoped_sleeper, &s[i]), 0);
    cr_assert_eq(conc_timeout_begin(0.2), 0);
    cr_assert_eq(conc_green_joinall(g, 3, 5.0), 0, "main's own roomy scope");
    cr_assert_eq(conc_timeout_end(), 0, "main's scope fired");
    cr_assert_eq(atomic_load(&s[0].rc), CONC_ETIMEDOUT);
    tu_assert_timeout(s[0].took, 0.03);
    cr_assert_eq(atomic_load(&s[0].end), 1);
    cr_assert_eq(atomic_load(&s[1].rc), 0, "a green thread without a scope was cut");
    tu_assert_timeout(s[1].took, 0.1);
    cr_assert_eq(atomic_load(&s[2].rc), 0);
    cr_assert_eq(atomic_load(&s[2].end), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_green_free(g[i]), 0);

    /* main's scope cuts main's join, not the joined green thread */
    scoped_t t = {.sleep = 0.1};
    conc_green_t *h;
    cr_assert_eq(conc_go(&h, scoped_sleeper, &t), 0);
    cr_assert_eq(conc_timeout_begin(0.02), 0);
    cr_assert_eq(conc_green_join(h, CONC_FOREVER), CONC_ETIMEDOUT);
    cr_assert_eq(conc_timeout_end(), 1);
    cr_assert_eq(conc_green_join(h, 5.0), 0);
    cr_assert_eq(atomic_load(&t.rc), 0, "main's scope cut the green thread it joined");
    cr_assert_eq(conc_green_free(h), 0);
}

Test(green_timeout, kill_inside_a_scope_is_a_kill, .timeout = TU_TIMEOUT)
{
    scoped_t s = {.scope = 1.0, .sleep = 5.0};
    atomic_store(&s.end, 99);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, scoped_sleeper, &s), 0);
    conc_yield();
    cr_assert_eq(conc_green_kill(g, true, 5.0), 0);
    cr_assert_eq(atomic_load(&s.rc), CONC_EKILLED);
    cr_assert_eq(atomic_load(&s.end), 0, "the scope was reported fired after a kill");
    cr_assert_eq(conc_green_free(g), 0);
}

static atomic_int slow_done;
static void *slow_task(void *arg)
{
    (void)arg;
    tu_sleep(0.15);
    atomic_store(&slow_done, 1);
    return PTR(5);
}

static void *offload_in_scope(void *arg)
{
    int *out = arg;
    conc_timeout_begin(0.03);
    void *r = NULL;
    out[0] = conc_green_offload(slow_task, NULL, &r);
    out[1] = conc_timeout_end();
    return NULL;
}

Test(green_timeout, offload_cut_by_a_scope, .timeout = TU_TIMEOUT)
{
    atomic_store(&slow_done, 0);
    int out[2] = {99, 99};
    conc_green_t *g;
    double t0 = tu_now();
    cr_assert_eq(conc_go(&g, offload_in_scope, out), 0);
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    double dt = tu_now() - t0;
    cr_assert_eq(out[0], CONC_ETIMEDOUT);
    cr_assert_eq(out[1], 1);
    cr_assert_lt(dt, 0.14, "the scope did not cut the offload (%.3fs)", dt);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&slow_done), 5.0), "the offloaded function did not keep running");
    cr_assert_eq(conc_green_free(g), 0);
}

/* ------------------------------------------------------------- LoopExit */

static int count_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

typedef struct {
    conc_event_t *ev;
    atomic_int rc;
} waitev_t;

static void *wait_event_forever(void *arg)
{
    waitev_t *w = arg;
    atomic_store(&w->rc, conc_event_wait(w->ev, CONC_FOREVER));
    return NULL;
}

static void *set_after(void *arg)
{
    tu_sleep(0.1);
    conc_event_set(arg);
    return NULL;
}

static void *raw_idle(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

static void *green_set_after(void *arg)
{
    conc_sleep(0.05);
    conc_event_set(arg);
    return NULL;
}

/* Run in a fresh process (CONC_TEST_SCENARIO); prints key=value lines. */
static int scenario(const char *name)
{
    alarm(10); /* a LoopExit that never comes is a hang: die of SIGALRM */
    conc_event_t ev = CONC_EVENT_INIT;
    printf("threads=%d\n", count_threads());
    if (strcmp(name, "loopexit_join") == 0) {
        waitev_t w = {.ev = &ev};
        atomic_store(&w.rc, 99);
        conc_green_t *g;
        if (conc_go(&g, wait_event_forever, &w) != 0)
            return 2;
        printf("join=%d\n", conc_green_join(g, CONC_FOREVER));
        printf("threads_after=%d\n", count_threads());
        /* the waiter is still there and can be killed */
        printf("dead=%d\n", conc_green_dead(g));
        printf("kill=%d\n", conc_green_kill(g, true, 5.0));
        printf("waiter=%d\n", atomic_load(&w.rc));
        conc_green_free(g);
        return 0;
    }
    if (strcmp(name, "loopexit_main_wait") == 0) {
        /* a green thread is alive but parked on an Event nobody sets; main
         * waits on another such Event */
        conc_event_t other = CONC_EVENT_INIT;
        waitev_t w = {.ev = &other};
        atomic_store(&w.rc, 99);
        conc_green_t *g;
        if (conc_go(&g, wait_event_forever, &w) != 0)
            return 2;
        printf("wait=%d\n", conc_event_wait(&ev, CONC_FOREVER));
        printf("kill=%d\n", conc_green_kill(g, true, 5.0));
        printf("waiter=%d\n", atomic_load(&w.rc));
        conc_green_free(g);
        return 0;
    }
    if (strcmp(name, "no_loopexit_with_timer") == 0) {
        conc_green_t *g;
        if (conc_go(&g, green_set_after, &ev) != 0)
            return 2;
        printf("wait=%d\n", conc_event_wait(&ev, CONC_FOREVER));
        printf("join=%d\n", conc_green_join(g, 5.0));
        conc_green_free(g);
        return 0;
    }
    if (strcmp(name, "no_loopexit_with_other_thread") == 0) {
        /* a conc thread will set the event: it could wake the waiter */
        waitev_t w = {.ev = &ev};
        atomic_store(&w.rc, 99);
        conc_green_t *g;
        if (conc_go(&g, wait_event_forever, &w) != 0)
            return 2;
        conc_thread_t *th;
        if (conc_thread_spawn(&th, set_after, &ev, NULL) != 0)
            return 4;
        printf("join=%d\n", conc_green_join(g, CONC_FOREVER));
        printf("waiter=%d\n", atomic_load(&w.rc));
        conc_thread_join(th, CONC_FOREVER, NULL);
        conc_thread_free(th);
        conc_green_free(g);
        return 0;
    }
    if (strcmp(name, "loopexit_despite_raw_thread") == 0) {
        /* a thread conc never saw (a sanitizer's, a library's) cannot
         * wake a conc waiter: it must not turn the LoopExit into a hang */
        waitev_t w = {.ev = &ev};
        atomic_store(&w.rc, 99);
        conc_green_t *g;
        if (conc_go(&g, wait_event_forever, &w) != 0)
            return 2;
        pthread_t th;
        if (pthread_create(&th, NULL, raw_idle, NULL) != 0)
            return 4;
        printf("threads_now=%d\n", count_threads());
        printf("join=%d\n", conc_green_join(g, CONC_FOREVER));
        printf("kill=%d\n", conc_green_kill(g, true, 5.0));
        printf("waiter=%d\n", atomic_load(&w.rc));
        conc_green_free(g);
        return 0; /* exit ends the raw thread */
    }
    return 3;
}

TU_MAIN_WITH_SCENARIOS(scenario)

static void run_sc(const char *name, char *out, size_t cap)
{
    double secs = 0;
    int st = tu_run_scenario(name, out, cap, &secs);
    cr_assert(WIFEXITED(st), "scenario %s died (signal %d%s) after %.2fs; output:\n%s", name,
              WIFSIGNALED(st) ? WTERMSIG(st) : 0,
              WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM ? ": hung, no LoopExit" : "", secs, out);
    cr_assert_eq(WEXITSTATUS(st), 0, "scenario %s exited %d; output:\n%s", name, WEXITSTATUS(st), out);
    cr_assert(strstr(out, "threads=1\n"), "scenario %s did not start single-threaded:\n%s", name, out);
}

Test(green_timeout, loopexit_join_of_a_green_thread_nobody_can_wake, .timeout = TU_TIMEOUT)
{
    char out[1024];
    run_sc("loopexit_join", out, sizeof out);
    char want[64];
    snprintf(want, sizeof want, "join=%d\n", CONC_ELOOPEXIT);
    cr_assert(strstr(out, want), "want %s; got:\n%s", want, out);
    cr_assert(strstr(out, "dead=0\n"), "%s", out);
    cr_assert(strstr(out, "kill=0\n"), "%s", out);
    snprintf(want, sizeof want, "waiter=%d\n", CONC_EKILLED);
    cr_assert(strstr(out, want), "want %s; got:\n%s", want, out);
}

Test(green_timeout, loopexit_main_waits_on_an_event_while_its_green_threads_are_stuck, .timeout = TU_TIMEOUT)
{
    char out[1024];
    run_sc("loopexit_main_wait", out, sizeof out);
    char want[64];
    snprintf(want, sizeof want, "wait=%d\n", CONC_ELOOPEXIT);
    cr_assert(strstr(out, want), "want %s; got:\n%s", want, out);
    cr_assert(strstr(out, "kill=0\n"), "%s", out);
    snprintf(want, sizeof want, "waiter=%d\n", CONC_EKILLED);
    cr_assert(strstr(out, want), "want %s; got:\n%s", want, out);
}

Test(green_timeout, no_loopexit_while_a_timer_is_pending, .timeout = TU_TIMEOUT)
{
    char out[1024];
    run_sc("no_loopexit_with_timer", out, sizeof out);
    cr_assert(strstr(out, "wait=0\n"), "%s", out);
    cr_assert(strstr(out, "join=0\n"), "%s", out);
}

Test(green_timeout, no_loopexit_while_another_thread_exists_scenario, .timeout = TU_TIMEOUT)
{
    char out[1024];
    run_sc("no_loopexit_with_other_thread", out, sizeof out);
    cr_assert(strstr(out, "join=0\n"), "%s", out);
    cr_assert(strstr(out, "waiter=0\n"), "%s", out);
}

Test(green_timeout, loopexit_despite_a_thread_conc_does_not_know, .timeout = TU_TIMEOUT)
{
    char out[1024];
    run_sc("loopexit_despite_raw_thread", out, sizeof out);
    const char *tn = strstr(out, "threads_now=");
    cr_assert(tn && atoi(tn + 12) >= 2, "the raw thread is not there: %s", out); /* TSan adds its own */
    char want[64];
    snprintf(want, sizeof want, "join=%d\n", CONC_ELOOPEXIT);
    cr_assert(strstr(out, want), "want %s; got:\n%s", want, out);
    cr_assert(strstr(out, "kill=0\n"), "%s", out);
    snprintf(want, sizeof want, "waiter=%d\n", CONC_EKILLED);
    cr_assert(strstr(out, want), "want %s; got:\n%s", want, out);
}

/* Inside Criterion's test child there are already other threads (the
 * runner keeps an I/O thread) that conc never saw: they do not count, so
 * LoopExit fires here too... */
Test(green_timeout, loopexit_ignores_criterions_threads, .timeout = 20)
{
    int n = count_threads();
    cr_log_info("threads in Criterion's test child: %d", n);
    conc_event_t ev = CONC_EVENT_INIT;
    waitev_t w = {.ev = &ev};
    atomic_store(&w.rc, 99);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, wait_event_forever, &w), 0);
    cr_assert_eq(conc_green_join(g, CONC_FOREVER), CONC_ELOOPEXIT);
    cr_assert_eq(conc_green_kill(g, true, 5.0), 0);
    cr_assert_eq(atomic_load(&w.rc), CONC_EKILLED);
    cr_assert_eq(conc_green_free(g), 0);
}

/* ...but a thread conc knows (one it started, or a foreign thread that
 * used conc) could wake the waiter: a FOREVER join of a green thread that
 * such a thread wakes later returns 0. */
static atomic_int foreign_known;

static void *foreign_set_after(void *arg)
{
    conc_current_thread(); /* conc knows this thread from now on */
    atomic_store(&foreign_known, 1);
    return set_after(arg);
}

Test(green_timeout, loopexit_not_raised_while_a_known_thread_exists, .timeout = 20)
{
    conc_event_t ev = CONC_EVENT_INIT;
    waitev_t w = {.ev = &ev};
    atomic_store(&w.rc, 99);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, wait_event_forever, &w), 0);
    conc_thread_t *th;
    cr_assert_eq(conc_thread_spawn(&th, set_after, &ev, NULL), 0);
    cr_assert_eq(conc_green_join(g, CONC_FOREVER), 0);
    cr_assert_eq(conc_thread_join(th, 10, NULL), 0);
    conc_thread_free(th);
    cr_assert_eq(atomic_load(&w.rc), 0);
    cr_assert_eq(conc_green_free(g), 0);

    /* a foreign thread that used conc */
    conc_event_clear(&ev);
    atomic_store(&w.rc, 99);
    cr_assert_eq(conc_go(&g, wait_event_forever, &w), 0);
    pthread_t pt;
    cr_assert_eq(pthread_create(&pt, NULL, foreign_set_after, &ev), 0);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&foreign_known), 10)); /* not a conc wait: no LoopExit */
    cr_assert_eq(conc_green_join(g, CONC_FOREVER), 0);
    pthread_join(pt, NULL);
    cr_assert_eq(atomic_load(&w.rc), 0);
    cr_assert_eq(conc_green_free(g), 0);
}
