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
 * LoopExit (CONC_ELOOPEXIT) needs a process with no other thread, and
 * Criterion's test child has two (its runner's I/O thread; checked in
 * loopexit_not_raised_while_another_thread_exists below), so those cases
 * run as scenarios in a fresh single-threaded exec of this binary
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
    CHECK_RC(conc_timeout_begin(-0.5), CONC_EINVAL);
    CHECK_RC(conc_timeout_begin(-INFINITY), CONC_EINVAL);
    CHECK_RC(conc_timeout_end(), CONC_EPERM); /* the failed begins opened nothing */
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
