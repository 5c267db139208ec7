/* conc green threads, core: the behaviours of gevent's test__greenlet.py,
 * test__sleep0.py and test__hub.py — spawn, join, get (result, failure
 * code and message), kill (before start, while sleeping, blocking, from
 * another OS thread, ignored once), sleep/yield ordering, links, names,
 * current, joinall, detached green threads, stack sizes, one hub per OS
 * thread and one failure slot per green thread.
 *
 * Every wait carries a timeout, so a broken implementation fails a test
 * instead of hanging it. Green threads never call cr_assert (they record;
 * the test's own context asserts) except where noted. */
#include "test_util.h"

#include "conc/green.h"

#define PTR(x) ((void *)(uintptr_t)(x))
#define INT(p) ((int)(uintptr_t)(p))

/* ------------------------------------------------------------ helpers */

static void *ret_arg(void *arg) { return arg; }

static void *noop(void *arg)
{
    (void)arg;
    return NULL;
}

static void *count_run(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
    return NULL;
}

/* Sleep for *(double *)arg seconds; return conc_sleep's code. */
typedef struct {
    double secs;
    atomic_int rc;
    atomic_int ran;
    atomic_int after; /* code of a second sleep after the first one */
    double second;    /* seconds of that second sleep; 0: none */
    double took;
} sleeper_t;

static void *sleeper(void *arg)
{
    sleeper_t *s = arg;
    atomic_store(&s->ran, 1);
    double t0 = tu_now();
    atomic_store(&s->rc, conc_sleep(s->secs));
    if (s->second > 0)
        atomic_store(&s->after, conc_sleep(s->second));
    s->took = tu_now() - t0;
    return PTR(0x5eed);
}

/* ------------------------------------------------------------ current */

typedef struct {
    conc_green_t *seen;
    atomic_int done;
} cur_t;

static void *record_current(void *arg)
{
    cur_t *c = arg;
    c->seen = conc_green_current();
    atomic_store(&c->done, 1);
    return NULL;
}

Test(green, current_null_on_os_context_and_self_inside, .timeout = TU_TIMEOUT)
{
    cr_assert_null(conc_green_current(), "the OS thread's own context is not a green thread");
    cur_t c = {0};
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, record_current, &c), 0);
    cr_assert_null(conc_green_current(), "spawning made the caller a green thread");
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    cr_assert(atomic_load(&c.done));
    cr_assert_eq(c.seen, g, "conc_green_current() inside is not the handle conc_go returned");
    cr_assert_null(conc_green_current(), "after join the main context is still not green");
    cr_assert_eq(conc_green_free(g), 0);
}

/* --------------------------------------------------- spawn, join, get */

Test(green, spawn_join_get_result, .timeout = TU_TIMEOUT)
{
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, ret_arg, PTR(42)), 0);
    cr_assert_not(conc_green_dead(g));
    cr_assert_not(conc_green_started(g), "started before the spawner blocked or yielded");
    void *r = NULL;
    cr_assert_eq(conc_green_get(g, 5.0, &r), 0);
    cr_assert_eq(r, PTR(42));
    cr_assert(conc_green_dead(g));
    cr_assert(conc_green_started(g));
    cr_assert(conc_green_successful(g));
    cr_assert_not(conc_green_killed(g));
    const char *msg = PTR(1);
    cr_assert_eq(conc_green_exception(g, &msg), 0);
    /* get and join again: the outcome stays */
    r = NULL;
    cr_assert_eq(conc_green_get(g, 0, &r), 0);
    cr_assert_eq(r, PTR(42));
    cr_assert_eq(conc_green_join(g, 0), 0);
    cr_assert_eq(conc_green_get(g, 1.0, NULL), 0, "get with a NULL result pointer");
    cr_assert_eq(conc_green_free(g), 0);
}

Test(green, starts_only_at_spawners_next_blocking_point, .timeout = TU_TIMEOUT)
{
    atomic_int n = 0;
    conc_green_t *g[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_go(&g[i], count_run, &n), 0);
    tu_sleep(0.02); /* a plain OS sleep is not a conc blocking point */
    cr_assert_eq(atomic_load(&n), 0, "a green thread ran before the spawner blocked");
    cr_assert_eq(conc_yield(), 0);
    cr_assert_eq(atomic_load(&n), 3, "conc_yield from the main context did not run the ready ones");
    for (int i = 0; i < 3; i++) {
        cr_assert(conc_green_dead(g[i]));
        cr_assert_eq(conc_green_free(g[i]), 0);
    }
}

static void *fail_fn(void *arg)
{
    (void)arg;
    return conc_fail(CONC_EBROKEN, "bad thing %d", 7);
}

static void *fail_zero_fn(void *arg)
{
    (void)arg;
    return conc_fail(0, "no code");
}

Test(green, get_returns_failure_code_and_message, .timeout = TU_TIMEOUT)
{
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, fail_fn, NULL), 0);
    cr_assert_eq(conc_green_exception(g, NULL), 0, "a failure before it ran");
    void *r = PTR(1);
    /* The outcomes rule (conc/base.h): a failed task is CONC_EFAILED for
     * every wait, whatever code it failed with; the code is its exception. */
    cr_assert_eq(conc_green_get(g, 5.0, &r), CONC_EFAILED);
    cr_assert_eq(r, PTR(1), "get stored a result for a failed green thread");
    cr_assert(conc_green_dead(g));
    cr_assert_not(conc_green_successful(g));
    cr_assert_not(conc_green_killed(g));
    const char *msg = NULL;
    cr_assert_eq(conc_green_exception(g, &msg), CONC_EBROKEN);
    cr_assert_not_null(msg);
    cr_assert_str_eq(msg, "bad thing 7");
    cr_assert_eq(conc_green_join(g, 1.0), 0, "join of a failed green thread is not an error");
    /* The failure is g's, not the joiner's. */
    cr_assert_eq(conc_failure(NULL), 0, "the green thread's failure leaked into the main context");
    cr_assert_eq(conc_green_free(g), 0);

    cr_assert_eq(conc_go(&g, fail_zero_fn, NULL), 0);
    cr_assert_eq(conc_green_get(g, 5.0, NULL), CONC_EFAILED);
    cr_assert_eq(conc_green_exception(g, &msg), CONC_EFAILED);
    cr_assert_str_eq(msg, "no code");
    cr_assert_eq(conc_green_free(g), 0);
}

/* Each green thread has its own failure slot. */
typedef struct {
    int code;
    atomic_int seen_before; /* conc_failure() at start */
    atomic_int seen_after;  /* after yielding to the others */
    char msg[64];
} slot_t;

static void *slot_fn(void *arg)
{
    slot_t *s = arg;
    atomic_store(&s->seen_before, conc_failure(NULL));
    if (s->code)
        conc_fail(s->code, "mine %d", s->code);
    conc_yield();
    conc_sleep(0.001);
    const char *m = NULL;
    atomic_store(&s->seen_after, conc_failure(&m));
    if (m)
        snprintf(s->msg, sizeof s->msg, "%s", m);
    conc_fail_clear();
    return NULL;
}

Test(green, each_green_thread_has_its_own_failure_slot, .timeout = TU_TIMEOUT)
{
    conc_fail(CONC_EEMPTY, "main's own");
    slot_t s[3] = {{.code = CONC_EFULL}, {.code = 0}, {.code = CONC_EBROKEN}};
    conc_green_t *g[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_go(&g[i], slot_fn, &s[i]), 0);
    cr_assert_eq(conc_green_joinall(g, 3, 5.0), 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(atomic_load(&s[i].seen_before), 0, "green %d started with someone's failure", i);
        cr_assert_eq(atomic_load(&s[i].seen_after), s[i].code, "green %d saw failure %d", i,
                     atomic_load(&s[i].seen_after));
        if (s[i].code) {
            char want[64];
            snprintf(want, sizeof want, "mine %d", s[i].code);
            cr_assert_str_eq(s[i].msg, want);
        }
        /* it cleared its failure before returning: a clean end */
        cr_assert_eq(conc_green_get(g[i], 0, NULL), 0);
        cr_assert_eq(conc_green_free(g[i]), 0);
    }
    const char *m = NULL;
    cr_assert_eq(conc_failure(&m), CONC_EEMPTY, "green threads overwrote the main context's failure");
    cr_assert_str_eq(m, "main's own");
    conc_fail_clear();
}

/* ----------------------------------------------------------------- kill */

Test(green, kill_before_start_never_runs, .timeout = TU_TIMEOUT)
{
    atomic_int n = 0;
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, count_run, &n), 0);
    cr_assert_eq(conc_green_kill(g, false, 0), 0);
    double t0 = tu_now();
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    cr_assert_lt(tu_now() - t0, 1.0, "join of a killed-before-start green thread waited");
    conc_yield();
    conc_sleep(0.01);
    cr_assert_eq(atomic_load(&n), 0, "a green thread killed before it started ran");
    cr_assert(conc_green_dead(g));
    cr_assert_not(conc_green_started(g));
    cr_assert(conc_green_killed(g));
    cr_assert(conc_green_successful(g), "a kill counts as successful (gevent)");
    void *r = PTR(1);
    cr_assert_eq(conc_green_get(g, 0, &r), 0);
    cr_assert_null(r);
    cr_assert_eq(conc_green_exception(g, NULL), 0);
    cr_assert_eq(conc_green_free(g), 0);

    /* The blocking kind returns at once too. */
    cr_assert_eq(conc_go(&g, count_run, &n), 0);
    t0 = tu_now();
    cr_assert_eq(conc_green_kill(g, true, 5.0), 0);
    cr_assert_lt(tu_now() - t0, 1.0);
    cr_assert(conc_green_dead(g));
    conc_sleep(0.01);
    cr_assert_eq(atomic_load(&n), 0);
    cr_assert_eq(conc_green_free(g), 0);
}

static void link_count_cb(conc_green_t *g, void *arg)
{
    (void)g;
    atomic_fetch_add((atomic_int *)arg, 1);
}

Test(green, kill_before_start_runs_links, .timeout = TU_TIMEOUT)
{
    atomic_int n = 0, links = 0;
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, count_run, &n), 0);
    cr_assert_eq(conc_green_link(g, link_count_cb, &links), 0);
    cr_assert_eq(conc_green_kill(g, true, 5.0), 0);
    cr_assert(TU_WAIT_UNTIL((conc_sleep(0.001), atomic_load(&links) == 1), 5.0),
              "the link of a green thread killed before it started did not run");
    conc_sleep(0.01);
    cr_assert_eq(atomic_load(&links), 1, "link ran more than once");
    cr_assert_eq(atomic_load(&n), 0);
    cr_assert_eq(conc_green_free(g), 0);
}

Test(green, kill_during_sleep_returns_ekilled, .timeout = TU_TIMEOUT)
{
    sleeper_t s = {.secs = 10};
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, sleeper, &s), 0);
    cr_assert_eq(conc_yield(), 0);
    cr_assert(atomic_load(&s.ran), "not started after the spawner yielded");
    cr_assert(conc_green_started(g));
    cr_assert_not(conc_green_dead(g));
    double t0 = tu_now();
    cr_assert_eq(conc_green_kill(g, true, 5.0), 0);
    cr_assert_lt(tu_now() - t0, 1.0, "kill(block) waited for the sleep");
    cr_assert(conc_green_dead(g));
    cr_assert_eq(atomic_load(&s.rc), CONC_EKILLED, "conc_sleep returned %d", atomic_load(&s.rc));
    cr_assert(conc_green_killed(g));
    cr_assert(conc_green_successful(g));
    cr_assert_eq(conc_green_get(g, 0, NULL), 0, "a kill is a clean end for get");
    cr_assert_eq(conc_green_free(g), 0);
}

Test(green, kill_nonblocking_then_join, .timeout = TU_TIMEOUT)
{
    sleeper_t s = {.secs = 10};
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, sleeper, &s), 0);
    cr_assert_eq(conc_sleep(0.01), 0);
    cr_assert(atomic_load(&s.ran));
    cr_assert_eq(conc_green_kill(g, false, 0), 0);
    /* non-blocking: the kill is delivered when the hub runs g again */
    double t0 = tu_now();
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    cr_assert_lt(tu_now() - t0, 1.0);
    cr_assert_eq(atomic_load(&s.rc), CONC_EKILLED);
    cr_assert(conc_green_killed(g));
    cr_assert_eq(conc_green_free(g), 0);
}

/* gevent raises GreenletExit once: only the next blocking call is cut;
 * a green thread that goes on blocking after it is not killed again. */
Test(green, kill_is_delivered_once_and_kill_block_times_out, .timeout = TU_TIMEOUT)
{
    sleeper_t s = {.secs = 10, .second = 0.3};
    atomic_store(&s.after, 99);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, sleeper, &s), 0);
    cr_assert_eq(conc_yield(), 0);
    double t0 = tu_now();
    cr_assert_eq(conc_green_kill(g, true, 0.05), CONC_ETIMEDOUT,
                 "kill(block, 0.05) of a green thread that keeps sleeping 0.3 s");
    double dt = tu_now() - t0;
    tu_assert_timeout(dt, 0.05);
    cr_assert_eq(atomic_load(&s.rc), CONC_EKILLED);
    cr_assert_not(conc_green_dead(g));
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    cr_assert_eq(atomic_load(&s.after), 0, "the sleep after the kill returned %d (killed twice?)",
                 atomic_load(&s.after));
    cr_assert_geq(s.took, 0.3 - TU_EPS);
    cr_assert_eq(conc_green_free(g), 0);
}

Test(green, kill_of_an_ended_green_thread_does_nothing, .timeout = TU_TIMEOUT)
{
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, ret_arg, PTR(9)), 0);
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    cr_assert_eq(conc_green_kill(g, false, 0), 0);
    cr_assert_eq(conc_green_kill(g, true, 1.0), 0);
    cr_assert_not(conc_green_killed(g), "killing an ended green thread marked it killed");
    void *r = NULL;
    cr_assert_eq(conc_green_get(g, 0, &r), 0);
    cr_assert_eq(r, PTR(9), "killing an ended green thread lost its result");
    cr_assert(conc_green_successful(g));
    cr_assert_eq(conc_green_free(g), 0);
}

typedef struct {
    atomic_int join_rc, get_rc, kill_rc, after_rc, kill_nb_rc, next_rc;
} self_t;

static void *self_ops(void *arg)
{
    self_t *s = arg;
    conc_green_t *me = conc_green_current();
    atomic_store(&s->join_rc, conc_green_join(me, 0.1));
    atomic_store(&s->get_rc, conc_green_get(me, 0.1, NULL));
    /* gevent: killing yourself raises GreenletExit at once — delivered by
     * the kill call itself, and only once */
    atomic_store(&s->kill_rc, conc_green_kill(me, true, 0.1));
    atomic_store(&s->after_rc, conc_sleep(0.001));
    return NULL;
}

static void *self_kill_nonblocking(void *arg)
{
    self_t *s = arg;
    /* without block the kill is pending: the next blocking call gets it */
    atomic_store(&s->kill_nb_rc, conc_green_kill(conc_green_current(), false, 0));
    atomic_store(&s->next_rc, conc_sleep(0.001));
    atomic_store(&s->after_rc, conc_sleep(0.001));
    return NULL;
}

Test(green, joining_yourself_is_eperm_killing_yourself_raises_at_once, .timeout = TU_TIMEOUT)
{
    self_t s;
    atomic_store(&s.join_rc, 99);
    atomic_store(&s.get_rc, 99);
    atomic_store(&s.kill_rc, 99);
    atomic_store(&s.after_rc, 99);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, self_ops, &s), 0);
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    cr_assert_eq(atomic_load(&s.join_rc), CONC_EPERM);
    cr_assert_eq(atomic_load(&s.get_rc), CONC_EPERM);
    cr_assert_eq(atomic_load(&s.kill_rc), CONC_EKILLED, "kill(self, block) must deliver the kill at once");
    cr_assert_eq(atomic_load(&s.after_rc), 0, "the self-kill was delivered twice");
    cr_assert(conc_green_killed(g));
    cr_assert(conc_green_successful(g), "a kill is a successful end (GreenletExit)");
    cr_assert_eq(conc_green_free(g), 0);

    atomic_store(&s.kill_nb_rc, 99);
    atomic_store(&s.next_rc, 99);
    atomic_store(&s.after_rc, 99);
    cr_assert_eq(conc_go(&g, self_kill_nonblocking, &s), 0);
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    cr_assert_eq(atomic_load(&s.kill_nb_rc), 0);
    cr_assert_eq(atomic_load(&s.next_rc), CONC_EKILLED);
    cr_assert_eq(atomic_load(&s.after_rc), 0);
    cr_assert(conc_green_killed(g));
    cr_assert_eq(conc_green_free(g), 0);
}

/* A green thread blocked on an Event is cut by a kill too. */
typedef struct {
    conc_event_t ev;
    atomic_int rc;
} evw_t;

static void *event_waiter(void *arg)
{
    evw_t *w = arg;
    atomic_store(&w->rc, conc_event_wait(&w->ev, 10.0));
    return NULL;
}

Test(green, kill_cuts_a_blocking_conc_call, .timeout = TU_TIMEOUT)
{
    evw_t w = {.ev = CONC_EVENT_INIT};
    atomic_store(&w.rc, 99);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, event_waiter, &w), 0);
    cr_assert_eq(conc_yield(), 0);
    cr_assert_eq(conc_green_kill(g, true, 5.0), 0);
    cr_assert_eq(atomic_load(&w.rc), CONC_EKILLED);
    cr_assert_not(conc_event_is_set(&w.ev));
    cr_assert_eq(conc_green_free(g), 0);
}

/* --------------------------------------- other OS threads: kill, join */

typedef struct {
    conc_green_t *g;
    atomic_int rc;
    double delay;
} xthread_t;

static void *os_killer(void *arg)
{
    xthread_t *x = arg;
    tu_sleep(x->delay);
    atomic_store(&x->rc, conc_green_kill(x->g, false, 0));
    return NULL;
}

static void *os_joiner(void *arg)
{
    xthread_t *x = arg;
    void *r = NULL;
    atomic_store(&x->rc, conc_green_get(x->g, 5.0, &r));
    return r;
}

Test(green, kill_from_another_os_thread, .timeout = TU_TIMEOUT)
{
    sleeper_t s = {.secs = 10};
    xthread_t x = {.delay = 0.05};
    atomic_store(&x.rc, 99);
    cr_assert_eq(conc_go(&x.g, sleeper, &s), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, os_killer, &x), 0);
    double t0 = tu_now();
    /* the main context blocks in join: the hub sleeps until the kill wakes it */
    cr_assert_eq(conc_green_join(x.g, 5.0), 0);
    double dt = tu_now() - t0;
    pthread_join(th, NULL);
    cr_assert_eq(atomic_load(&x.rc), 0);
    cr_assert_eq(atomic_load(&s.rc), CONC_EKILLED);
    cr_assert_lt(dt, 2.0, "the hub did not wake for a kill from another thread");
    cr_assert(conc_green_killed(x.g));
    cr_assert_eq(conc_green_free(x.g), 0);
}

Test(green, join_from_another_os_thread, .timeout = TU_TIMEOUT)
{
    sleeper_t s = {.secs = 0.05};
    xthread_t x;
    atomic_store(&x.rc, 99);
    cr_assert_eq(conc_go(&x.g, sleeper, &s), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, os_joiner, &x), 0);
    /* the joiner is parked on another OS thread: let the hub run g */
    double t0 = tu_now();
    cr_assert_eq(conc_green_join(x.g, 5.0), 0);
    void *r = NULL;
    pthread_join(th, &r);
    cr_assert_lt(tu_now() - t0, 2.0);
    cr_assert_eq(atomic_load(&x.rc), 0);
    cr_assert_eq(r, PTR(0x5eed), "the other OS thread got %p", r);
    cr_assert_eq(atomic_load(&s.rc), 0);
    cr_assert_eq(conc_green_free(x.g), 0);
}

/* Each OS thread has its own hub; green threads there are independent of
 * the main thread's, and conc_green_current() is NULL on that thread. */
typedef struct {
    atomic_int rc, cur_null, sum;
} hubthread_t;

static void *add_ticks(void *arg)
{
    hubthread_t *h = arg;
    for (int i = 0; i < 10; i++) {
        atomic_fetch_add(&h->sum, 1);
        conc_sleep(0);
    }
    return NULL;
}

static void *hub_thread(void *arg)
{
    hubthread_t *h = arg;
    conc_green_t *g[4] = {0};
    int rc = 0;
    for (int i = 0; i < 4 && rc == 0; i++)
        rc = conc_go(&g[i], add_ticks, h);
    if (rc == 0)
        rc = conc_green_joinall(g, 4, 5.0);
    for (int i = 0; i < 4; i++)
        conc_green_free(g[i]);
    atomic_store(&h->cur_null, conc_green_current() == NULL);
    atomic_store(&h->rc, rc);
    return NULL;
}

Test(green, a_hub_per_os_thread, .timeout = TU_TIMEOUT)
{
    hubthread_t h[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        atomic_store(&h[i].rc, 99);
        atomic_store(&h[i].cur_null, 0);
        atomic_store(&h[i].sum, 0);
        cr_assert_eq(pthread_create(&th[i], NULL, hub_thread, &h[i]), 0);
    }
    /* and one here at the same time */
    hubthread_t mine;
    atomic_store(&mine.sum, 0);
    hub_thread(&mine);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(atomic_load(&h[i].rc), 0);
        cr_assert(atomic_load(&h[i].cur_null));
        cr_assert_eq(atomic_load(&h[i].sum), 40);
    }
    cr_assert_eq(atomic_load(&mine.rc), 0);
    cr_assert_eq(atomic_load(&mine.sum), 40);
}

/* ------------------------------------------------------------ join timeouts */

Test(green, join_times_out_then_kill, .timeout = TU_TIMEOUT)
{
    sleeper_t s = {.secs = 10};
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, sleeper, &s), 0);
    double t0 = tu_now();
    cr_assert_eq(conc_green_join(g, 0.1), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t0, 0.1);
    cr_assert(atomic_load(&s.ran), "the hub did not run g while main waited in join");
    cr_assert_eq(conc_green_join(g, 0), CONC_ETIMEDOUT);
    cr_assert_eq(conc_green_get(g, 0.01, NULL), CONC_ETIMEDOUT);
    cr_assert_eq(conc_green_exception(g, NULL), 0, "exception() of a running green thread");
    cr_assert_not(conc_green_dead(g));
    cr_assert_eq(conc_green_kill(g, true, 5.0), 0);
    cr_assert_eq(conc_green_free(g), 0);
}

/* ------------------------------------------------------------ bad input */

Test(green, bad_arguments, .timeout = TU_TIMEOUT)
{
    conc_green_t *g = PTR(1);
    cr_assert_eq(conc_go(&g, NULL, NULL), CONC_EINVAL);
    cr_assert_eq(conc_go_opts(&g, NULL, NULL, NULL), CONC_EINVAL);
    conc_green_opts_t small = {.stack_size = 1000};
    cr_assert_eq(conc_go_opts(&g, &small, noop, NULL), CONC_EINVAL, "a 1000-byte stack");
    cr_assert_eq(conc_green_join(NULL, 1.0), CONC_EINVAL);
    cr_assert_eq(conc_green_get(NULL, 1.0, NULL), CONC_EINVAL);
    cr_assert_eq(conc_green_kill(NULL, false, 0), CONC_EINVAL);
    cr_assert_eq(conc_green_free(NULL), CONC_EINVAL);
    cr_assert_eq(conc_green_link(NULL, link_count_cb, NULL), CONC_EINVAL);
    cr_assert_not(conc_green_dead(NULL));
    cr_assert_not(conc_green_started(NULL));
    cr_assert_not(conc_green_successful(NULL));
    cr_assert_not(conc_green_killed(NULL));
    cr_assert_eq(conc_sleep(-0.5), 0); /* gevent.sleep(-1): a yield */
    cr_assert_eq(conc_sleep(NAN), CONC_EINVAL);
    cr_assert_eq(conc_green_joinall(NULL, 0, 1.0), 0);

    cr_assert_eq(conc_go(&g, noop, NULL), 0);
    cr_assert_eq(conc_green_join(g, NAN), CONC_EINVAL);
    cr_assert_eq(conc_green_get(g, NAN, NULL), CONC_EINVAL);
    cr_assert_eq(conc_green_kill(g, true, NAN), CONC_EINVAL);
    cr_assert_eq(conc_green_link(g, NULL, NULL), CONC_EINVAL);
    conc_green_t *arr[2] = {g, NULL};
    cr_assert_eq(conc_green_joinall(arr, 2, NAN), CONC_EINVAL);
    cr_assert_eq(conc_green_joinall(arr, 2, 5.0), 0, "NULL entries are skipped");
    cr_assert(conc_green_dead(g));
    cr_assert_eq(conc_green_free(g), 0);
}

/* ------------------------------------------------------------ names */

static void *name_fn(void *arg)
{
    char *out = arg;
    snprintf(out, 64, "%s", conc_green_name(conc_green_current()));
    return NULL;
}

Test(green, names, .timeout = TU_TIMEOUT)
{
    char buf[64] = "", want[64];
    conc_green_t *a, *b;
    cr_assert_eq(conc_go(&a, noop, NULL), 0);
    cr_assert_eq(conc_go(&b, noop, NULL), 0);
    const char *na = conc_green_name(a), *nb = conc_green_name(b);
    cr_assert_not_null(na);
    cr_assert_not_null(nb);
    cr_assert_eq(strncmp(na, "Green-", 6), 0, "default name '%s'", na);
    cr_assert_eq(strncmp(nb, "Green-", 6), 0, "default name '%s'", nb);
    cr_assert_str_neq(na, nb, "two green threads got the same default name");
    cr_assert_gt(atoi(nb + 6), atoi(na + 6), "default numbers do not increase: %s, %s", na, nb);

    snprintf(want, sizeof want, "worker-7");
    char given[64];
    snprintf(given, sizeof given, "%s", want);
    conc_green_opts_t o = {.name = given};
    conc_green_t *c;
    cr_assert_eq(conc_go_opts(&c, &o, name_fn, buf), 0);
    memset(given, 'x', sizeof given - 1); /* the name was copied */
    cr_assert_str_eq(conc_green_name(c), want);
    cr_assert_eq(conc_green_join(c, 5.0), 0);
    cr_assert_str_eq(buf, want, "conc_green_name(conc_green_current()) inside");
    cr_assert_str_eq(conc_green_name(c), want, "the name changed once it ended");

    /* long names keep their first 31 bytes */
    char lng[80];
    memset(lng, 'n', sizeof lng - 1);
    lng[sizeof lng - 1] = 0;
    o.name = lng;
    conc_green_t *d;
    cr_assert_eq(conc_go_opts(&d, &o, noop, NULL), 0);
    cr_assert_eq(strlen(conc_green_name(d)), 31);
    cr_assert_eq(strncmp(conc_green_name(d), lng, 31), 0);

    conc_green_t *all[4] = {a, b, c, d};
    cr_assert_eq(conc_green_joinall(all, 4, 5.0), 0);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(conc_green_free(all[i]), 0);
}

/* ------------------------------------------------------------ stacks */

static void *use_stack(void *arg)
{
    size_t n = (size_t)arg;
    volatile char *buf = __builtin_alloca(n);
    for (size_t i = 0; i < n; i += 512)
        buf[i] = (char)i;
    conc_yield(); /* keep it across a switch */
    unsigned long sum = 0;
    for (size_t i = 0; i < n; i += 512)
        sum += (unsigned char)buf[i];
    return PTR(sum);
}

Test(green, stack_size_option, .timeout = TU_TIMEOUT)
{
    size_t sizes[] = {16 * 1024, 1u << 20, 8u << 20};
    size_t use[] = {4 * 1024, 900 * 1024, 7u << 20};
    for (int k = 0; k < 3; k++) {
        unsigned long want = 0;
        for (size_t i = 0; i < use[k]; i += 512)
            want += (unsigned char)(char)i;
        conc_green_opts_t o = {.stack_size = sizes[k]};
        conc_green_t *g;
        cr_assert_eq(conc_go_opts(&g, &o, use_stack, PTR(use[k])), 0, "stack %zu", sizes[k]);
        void *r = NULL;
        cr_assert_eq(conc_green_get(g, 10.0, &r), 0);
        cr_assert_eq((unsigned long)(uintptr_t)r, want, "stack contents changed across a switch");
        cr_assert_eq(conc_green_free(g), 0);
    }
    /* the default (128 KiB) holds 64 KiB of locals */
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, use_stack, PTR(64 * 1024)), 0);
    cr_assert_eq(conc_green_join(g, 10.0), 0);
    cr_assert_eq(conc_green_free(g), 0);
}

/* ------------------------------------------------------------ sleep / yield */

typedef struct {
    atomic_int log[64];
    atomic_int n;
} order_t;

typedef struct {
    order_t *o;
    int id;
    int rounds;
    double secs;
} orderer_t;

static void *orderer(void *arg)
{
    orderer_t *w = arg;
    for (int i = 0; i < w->rounds; i++) {
        int k = atomic_fetch_add(&w->o->n, 1);
        if (k < 64)
            atomic_store(&w->o->log[k], w->id);
        conc_sleep(w->secs);
    }
    return NULL;
}

Test(green, sleep0_lets_the_others_run_in_fifo_order, .timeout = TU_TIMEOUT)
{
    order_t o = {0};
    orderer_t w[3];
    conc_green_t *g[3];
    for (int i = 0; i < 3; i++) {
        w[i] = (orderer_t){.o = &o, .id = i, .rounds = 4, .secs = 0};
        cr_assert_eq(conc_go(&g[i], orderer, &w[i]), 0);
    }
    cr_assert_eq(conc_green_joinall(g, 3, 5.0), 0);
    cr_assert_eq(atomic_load(&o.n), 12);
    for (int k = 0; k < 12; k++)
        cr_assert_eq(atomic_load(&o.log[k]), k % 3, "step %d ran green %d (want round-robin 0 1 2)", k,
                     atomic_load(&o.log[k]));
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_green_free(g[i]), 0);
}

Test(green, yield_equals_sleep0_and_main_takes_part, .timeout = TU_TIMEOUT)
{
    /* gevent test__sleep0: sleep(0) from the main greenlet runs each ready
     * greenlet once, then main continues. */
    order_t o = {0};
    orderer_t w[2];
    conc_green_t *g[2];
    for (int i = 0; i < 2; i++) {
        w[i] = (orderer_t){.o = &o, .id = i, .rounds = 3, .secs = 0};
        cr_assert_eq(conc_go(&g[i], orderer, &w[i]), 0);
    }
    for (int r = 1; r <= 3; r++) {
        cr_assert_eq(r == 2 ? conc_sleep(0) : conc_yield(), 0);
        cr_assert_eq(atomic_load(&o.n), 2 * r, "after main's yield %d: %d steps", r, atomic_load(&o.n));
    }
    cr_assert_eq(conc_green_joinall(g, 2, 5.0), 0);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(conc_green_free(g[i]), 0);
}

Test(green, sleeps_end_in_deadline_order_and_take_their_time, .timeout = TU_TIMEOUT)
{
    order_t o = {0};
    orderer_t w[3];
    conc_green_t *g[3];
    double secs[3] = {0.09, 0.03, 0.06};
    for (int i = 0; i < 3; i++) {
        w[i] = (orderer_t){.o = &o, .id = i, .rounds = 1, .secs = secs[i]};
        cr_assert_eq(conc_go(&g[i], orderer, &w[i]), 0);
    }
    /* each logs first, then sleeps: log order is spawn order; end order
     * is deadline order — measured with links below */
    double t0 = tu_now();
    cr_assert_eq(conc_green_joinall(g, 3, 5.0), 0);
    double dt = tu_now() - t0;
    cr_assert_geq(dt, 0.09 - TU_EPS);
    cr_assert_lt(dt, 0.09 + TU_SLACK, "sleeps ran one after another? %.3fs", dt);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_green_free(g[i]), 0);

    /* a single green sleep measured from inside */
    sleeper_t s = {.secs = 0.05};
    conc_green_t *h;
    cr_assert_eq(conc_go(&h, sleeper, &s), 0);
    cr_assert_eq(conc_green_join(h, 5.0), 0);
    cr_assert_eq(atomic_load(&s.rc), 0);
    tu_assert_timeout(s.took, 0.05);
    cr_assert_eq(conc_green_free(h), 0);
}

typedef struct {
    atomic_int order[3];
    atomic_int n;
} endlog_t;

static void end_order_cb(conc_green_t *g, void *arg)
{
    (void)g;
    endlog_t *e = ((void **)arg)[0];
    int id = INT(((void **)arg)[1]);
    int k = atomic_fetch_add(&e->n, 1);
    if (k < 3)
        atomic_store(&e->order[k], id);
}

Test(green, timers_fire_in_deadline_order, .timeout = TU_TIMEOUT)
{
    endlog_t e = {0};
    void *args[3][2];
    sleeper_t s[3] = {{.secs = 0.09}, {.secs = 0.01}, {.secs = 0.05}};
    conc_green_t *g[3];
    for (int i = 0; i < 3; i++) {
        args[i][0] = &e;
        args[i][1] = PTR(i);
        cr_assert_eq(conc_go(&g[i], sleeper, &s[i]), 0);
        cr_assert_eq(conc_green_link(g[i], end_order_cb, args[i]), 0);
    }
    cr_assert_eq(conc_green_joinall(g, 3, 5.0), 0);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&e.n) == 3, 2.0));
    cr_assert_eq(atomic_load(&e.order[0]), 1);
    cr_assert_eq(atomic_load(&e.order[1]), 2);
    cr_assert_eq(atomic_load(&e.order[2]), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_green_free(g[i]), 0);
}

static void *os_yield(void *arg)
{
    (void)arg;
    int rc = conc_yield();
    if (rc == 0)
        rc = conc_sleep(0);
    if (rc == 0) {
        double t0 = tu_now();
        rc = conc_sleep(0.03);
        if (rc == 0 && tu_now() - t0 < 0.03 - TU_EPS)
            rc = 1000;
    }
    return PTR(rc);
}

Test(green, sleep_and_yield_on_an_os_thread_without_hub, .timeout = TU_TIMEOUT)
{
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, os_yield, NULL), 0);
    void *r = PTR(1);
    pthread_join(th, &r);
    cr_assert_eq(INT(r), 0, "conc_yield/conc_sleep on a hubless thread: %d", INT(r));
}

/* ------------------------------------------------------------ links */

typedef struct {
    atomic_int calls;
    atomic_int dead_inside;
    conc_green_t *got;
    long tid;
    void *marker;
} linkrec_t;

static void link_rec_cb(conc_green_t *g, void *arg)
{
    linkrec_t *l = arg;
    atomic_fetch_add(&l->calls, 1);
    l->got = g;
    l->tid = tu_gettid();
    atomic_store(&l->dead_inside, conc_green_dead(g));
}

Test(green, links_run_once_after_the_end, .timeout = TU_TIMEOUT)
{
    linkrec_t a = {0}, b = {0};
    sleeper_t s = {.secs = 0.02};
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, sleeper, &s), 0);
    cr_assert_eq(conc_green_link(g, link_rec_cb, &a), 0);
    cr_assert_eq(conc_green_link(g, link_rec_cb, &b), 0);
    cr_assert_eq(atomic_load(&a.calls), 0, "link ran before the end");
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    cr_assert(TU_WAIT_UNTIL((conc_sleep(0.001), atomic_load(&a.calls) && atomic_load(&b.calls)), 5.0),
              "links did not run");
    conc_sleep(0.02);
    cr_assert_eq(atomic_load(&a.calls), 1);
    cr_assert_eq(atomic_load(&b.calls), 1);
    cr_assert_eq(a.got, g);
    cr_assert(atomic_load(&a.dead_inside), "the link ran before the end was visible");
    cr_assert_eq(a.tid, tu_gettid(), "a link ran on another OS thread");
    cr_assert_eq(conc_green_free(g), 0);
}

Test(green, link_after_the_end_runs_right_away_on_the_caller, .timeout = TU_TIMEOUT)
{
    linkrec_t a = {0};
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, ret_arg, PTR(3)), 0);
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    cr_assert_eq(conc_green_link(g, link_rec_cb, &a), 0);
    cr_assert_eq(atomic_load(&a.calls), 1, "a link on an ended green thread did not run at once");
    cr_assert_eq(a.got, g);
    cr_assert_eq(a.tid, tu_gettid());
    conc_sleep(0.01);
    cr_assert_eq(atomic_load(&a.calls), 1);
    cr_assert_eq(conc_green_free(g), 0);
}

static void *fail_after_sleep(void *arg)
{
    (void)arg;
    conc_sleep(0.01);
    return conc_fail(CONC_EEOF, "eof");
}

typedef struct {
    atomic_int calls, code, successful;
} linkfail_t;

static void link_fail_cb(conc_green_t *g, void *arg)
{
    linkfail_t *l = arg;
    atomic_store(&l->code, conc_green_exception(g, NULL));
    atomic_store(&l->successful, conc_green_successful(g));
    atomic_fetch_add(&l->calls, 1);
}

Test(green, links_see_failures_and_kills, .timeout = TU_TIMEOUT)
{
    linkfail_t lf = {0};
    atomic_store(&lf.successful, 99);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, fail_after_sleep, NULL), 0);
    cr_assert_eq(conc_green_link(g, link_fail_cb, &lf), 0);
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    cr_assert(TU_WAIT_UNTIL((conc_sleep(0.001), atomic_load(&lf.calls) == 1), 5.0));
    cr_assert_eq(atomic_load(&lf.code), CONC_EEOF);
    cr_assert_eq(atomic_load(&lf.successful), 0);
    cr_assert_eq(conc_green_free(g), 0);

    linkfail_t lk = {0};
    sleeper_t s = {.secs = 10};
    cr_assert_eq(conc_go(&g, sleeper, &s), 0);
    cr_assert_eq(conc_green_link(g, link_fail_cb, &lk), 0);
    conc_yield();
    cr_assert_eq(conc_green_kill(g, true, 5.0), 0);
    cr_assert(TU_WAIT_UNTIL((conc_sleep(0.001), atomic_load(&lk.calls) == 1), 5.0));
    cr_assert_eq(atomic_load(&lk.code), 0);
    cr_assert_eq(atomic_load(&lk.successful), 1);
    cr_assert_eq(conc_green_free(g), 0);
}

/* A link may spawn (it must not block for long, but conc_go never blocks). */
static atomic_int spawned_by_link;
static void link_spawn_cb(conc_green_t *g, void *arg)
{
    (void)g;
    (void)arg;
    conc_go(NULL, count_run, &spawned_by_link);
}

Test(green, link_may_spawn_a_detached_green_thread, .timeout = TU_TIMEOUT)
{
    atomic_store(&spawned_by_link, 0);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, noop, NULL), 0);
    cr_assert_eq(conc_green_link(g, link_spawn_cb, NULL), 0);
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    cr_assert(TU_WAIT_UNTIL((conc_sleep(0.001), atomic_load(&spawned_by_link) == 1), 5.0));
    cr_assert_eq(conc_green_free(g), 0);
}

/* ------------------------------------------------------------ joinall */

Test(green, joinall_waits_for_all, .timeout = TU_TIMEOUT)
{
    sleeper_t s[5];
    conc_green_t *g[6];
    for (int i = 0; i < 5; i++) {
        s[i] = (sleeper_t){.secs = 0.01 * (5 - i)};
        cr_assert_eq(conc_go(&g[i], sleeper, &s[i]), 0);
    }
    g[5] = NULL;
    cr_assert_eq(conc_green_joinall(g, 6, 5.0), 0);
    for (int i = 0; i < 5; i++) {
        cr_assert(conc_green_dead(g[i]));
        cr_assert_eq(atomic_load(&s[i].rc), 0);
        cr_assert_eq(conc_green_free(g[i]), 0);
    }
}

Test(green, joinall_with_timeout, .timeout = TU_TIMEOUT)
{
    sleeper_t s[3] = {{.secs = 0.01}, {.secs = 10}, {.secs = 0.02}};
    conc_green_t *g[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_go(&g[i], sleeper, &s[i]), 0);
    double t0 = tu_now();
    cr_assert_eq(conc_green_joinall(g, 3, 0.1), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t0, 0.1);
    cr_assert(conc_green_dead(g[0]));
    cr_assert_not(conc_green_dead(g[1]));
    cr_assert(conc_green_dead(g[2]));
    cr_assert_eq(conc_green_joinall(g, 3, 0), CONC_ETIMEDOUT);
    cr_assert_eq(conc_green_kill(g[1], true, 5.0), 0);
    cr_assert_eq(conc_green_joinall(g, 3, 0), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_green_free(g[i]), 0);
}

typedef struct {
    conc_green_t **gs;
    size_t n;
    atomic_int rc;
} joinall_arg_t;

static void *green_joinall(void *arg)
{
    joinall_arg_t *j = arg;
    atomic_store(&j->rc, conc_green_joinall(j->gs, j->n, 10.0));
    return NULL;
}

Test(green, joinall_interrupted_by_a_kill, .timeout = TU_TIMEOUT)
{
    sleeper_t s = {.secs = 10};
    conc_green_t *sl;
    cr_assert_eq(conc_go(&sl, sleeper, &s), 0);
    joinall_arg_t j = {.gs = &sl, .n = 1};
    atomic_store(&j.rc, 99);
    conc_green_t *w;
    cr_assert_eq(conc_go(&w, green_joinall, &j), 0);
    conc_sleep(0.01);
    cr_assert_eq(conc_green_kill(w, true, 5.0), 0);
    cr_assert_eq(atomic_load(&j.rc), CONC_EKILLED);
    cr_assert_not(conc_green_dead(sl));
    cr_assert_eq(conc_green_kill(sl, true, 5.0), 0);
    cr_assert_eq(conc_green_free(w), 0);
    cr_assert_eq(conc_green_free(sl), 0);
}

/* ------------------------------------------ green threads spawning others */

static void *spawn_child_and_get(void *arg)
{
    (void)arg;
    conc_green_t *c;
    if (conc_go(&c, ret_arg, PTR(77)) != 0)
        return PTR(-1);
    void *r = NULL;
    int rc = conc_green_get(c, 5.0, &r);
    conc_green_free(c);
    return rc == 0 ? r : PTR(-2);
}

Test(green, green_thread_spawns_and_joins_a_child, .timeout = TU_TIMEOUT)
{
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, spawn_child_and_get, NULL), 0);
    void *r = NULL;
    cr_assert_eq(conc_green_get(g, 5.0, &r), 0);
    cr_assert_eq(r, PTR(77));
    cr_assert_eq(conc_green_free(g), 0);
}

Test(green, detached_green_threads_run_and_free_themselves, .timeout = TU_TIMEOUT)
{
    atomic_int n = 0;
    for (int i = 0; i < 100; i++)
        cr_assert_eq(conc_go(NULL, count_run, &n), 0);
    cr_assert(TU_WAIT_UNTIL((conc_sleep(0.001), atomic_load(&n) == 100), 5.0), "ran %d of 100",
              atomic_load(&n));
}

typedef struct {
    conc_event_t go;
    atomic_int done;
} freed_t;

static void *wait_then_mark(void *arg)
{
    freed_t *f = arg;
    if (conc_event_wait(&f->go, 5.0) == 0)
        atomic_store(&f->done, 1);
    return NULL;
}

Test(green, freeing_the_handle_does_not_stop_it, .timeout = TU_TIMEOUT)
{
    freed_t f = {.go = CONC_EVENT_INIT};
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, wait_then_mark, &f), 0);
    conc_yield();
    cr_assert_eq(conc_green_free(g), 0);
    conc_event_set(&f.go);
    cr_assert(TU_WAIT_UNTIL((conc_sleep(0.001), atomic_load(&f.done)), 5.0),
              "a green thread whose handle was freed did not finish");
}

/* The main context blocking in any conc call runs the hub. */
static void *set_event_later(void *arg)
{
    conc_sleep(0.02);
    conc_event_set(arg);
    return NULL;
}

Test(green, main_blocking_on_an_event_runs_green_threads, .timeout = TU_TIMEOUT)
{
    conc_event_t e = CONC_EVENT_INIT;
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, set_event_later, &e), 0);
    double t0 = tu_now();
    cr_assert_eq(conc_event_wait(&e, 5.0), 0);
    cr_assert_lt(tu_now() - t0, 2.0);
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    cr_assert_eq(conc_green_free(g), 0);
}

Test(green, many_spawn_join_cycles_reuse_stacks, .timeout = TU_TIMEOUT)
{
    long n = tu_iters(20000);
    for (long i = 0; i < n; i++) {
        conc_green_t *g;
        cr_assert_eq(conc_go(&g, ret_arg, PTR(i + 1)), 0, "spawn %ld", i);
        void *r = NULL;
        cr_assert_eq(conc_green_get(g, 5.0, &r), 0);
        cr_assert_eq(r, PTR(i + 1));
        cr_assert_eq(conc_green_free(g), 0);
    }
}

/* ------------------------------------------------------ stack overflow */

#include <signal.h>
#include <sys/wait.h>

static volatile int keep_recursing = 1;

__attribute__((noinline)) static int recurse(int n)
{
    volatile char buf[512];
    buf[0] = (char)n;
    buf[511] = (char)n;
    if (!keep_recursing)
        return n;
    return recurse(n + 1) + buf[0] + buf[511];
}

static void *overflow(void *arg)
{
    (void)arg;
    return PTR(recurse(0));
}

static void *sit(void *arg)
{
    (void)arg;
    conc_sleep(60);
    return NULL;
}

/* An overflow hits the guard page; a SIGSEGV handler on an alternate stack
 * names the green thread, then the process dies of SIGSEGV. Sanitizers
 * install their own SIGSEGV handling, so this runs only without them.
 * `spacers` green threads of the same stack size are started first, so
 * the overflower's slot is the next one: with 0 and 1 both stack colours
 * (conc__stack_record: the record 2 KiB lower on every other slot) are
 * found back from the faulting address. */
static void overflow_in_child(int spacers)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        dup2(p[1], 2);
        close(p[0]);
        close(p[1]);
        alarm(10);
        conc_green_opts_t o = {.name = "overflower-1", .stack_size = 16 * 1024};
        conc_green_t *g;
        for (int i = 0; i < spacers; i++)
            if (conc_go_opts(&g, &o, sit, NULL) != 0)
                _exit(2);
        if (conc_go_opts(&g, &o, overflow, NULL) != 0)
            _exit(2);
        conc_green_join(g, 5.0);
        _exit(3); /* survived the overflow */
    }
    close(p[1]);
    char out[4096];
    size_t n = 0;
    for (;;) {
        ssize_t r = read(p[0], out + n, sizeof out - 1 - n);
        if (r > 0 && n + (size_t)r < sizeof out - 1) {
            n += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        break;
    }
    out[n] = 0;
    close(p[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    cr_assert(WIFSIGNALED(st), "the child did not die of a signal (status %d); stderr:\n%s", st, out);
    cr_assert_eq(WTERMSIG(st), SIGSEGV, "died of signal %d; stderr:\n%s", WTERMSIG(st), out);
    cr_assert(strstr(out, "overflower-1"), "the message does not name the green thread:\n%s", out);
}

Test(green, stack_overflow_names_the_green_thread_and_dies_of_sigsegv, .timeout = TU_TIMEOUT)
{
    if (TU_SANITIZED) {
        cr_skip_test("sanitizers handle SIGSEGV themselves");
    }
    overflow_in_child(0);
    overflow_in_child(1);
}

/* ------------------------------------------------- green-thread locals */

static atomic_int local_dtors;
static void local_dtor(void *v)
{
    (void)v;
    atomic_fetch_add(&local_dtors, 1);
}

typedef struct {
    conc_local_t *l;
    int id;
    atomic_int saw_null, kept;
} gl_t;

static void *use_local(void *arg)
{
    gl_t *x = arg;
    atomic_store(&x->saw_null, conc_local_get(x->l) == NULL);
    conc_local_set(x->l, PTR(100 + x->id), NULL);
    conc_yield();
    conc_sleep(0.005);
    atomic_store(&x->kept, conc_local_get(x->l) == PTR(100 + x->id));
    return NULL;
}

Test(green, conc_local_holds_one_value_per_green_thread, .timeout = TU_TIMEOUT)
{
    atomic_store(&local_dtors, 0);
    conc_local_t *l;
    cr_assert_eq(conc_local_new(&l, local_dtor), 0);
    cr_assert_eq(conc_local_set(l, PTR(7), NULL), 0); /* the OS thread's own value */
    gl_t x[3];
    conc_green_t *g[3];
    for (int i = 0; i < 3; i++) {
        x[i] = (gl_t){.l = l, .id = i};
        cr_assert_eq(conc_go(&g[i], use_local, &x[i]), 0);
    }
    cr_assert_eq(conc_green_joinall(g, 3, 5.0), 0);
    for (int i = 0; i < 3; i++) {
        cr_assert(atomic_load(&x[i].saw_null), "green %d saw a value before setting one", i);
        cr_assert(atomic_load(&x[i].kept), "green %d lost its value or saw a sibling's", i);
        cr_assert_eq(conc_green_free(g[i]), 0);
    }
    cr_assert_eq(conc_local_get(l), PTR(7), "green threads overwrote the OS thread's value");
    cr_assert(TU_WAIT_UNTIL((conc_sleep(0.001), atomic_load(&local_dtors) == 3), 5.0),
              "destructor ran %d times for 3 ended green threads", atomic_load(&local_dtors));
    cr_assert_eq(conc_local_free(l), 0);
    cr_assert_eq(atomic_load(&local_dtors), 4, "conc_local_free did not destroy the OS thread's value");
}
