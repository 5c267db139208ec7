/*
 * The rest of gevent's Greenlet API (issue 17), ported from gevent's
 * test__greenlet.py: link_value / link_exception / unlink / unlink_all /
 * has_links (TestLink, test_link_value...), Greenlet.value read in a link,
 * Greenlet(fn) + start() / start_later, spawn_later (TestStart,
 * test_start_later, test_kill_scheduled...), killall (TestBasic.test_killall,
 * test_killall_iterable, block and timeout).
 */
#include "test_util.h"

#define PTR(x) ((void *)(uintptr_t)(x))
#define INT(p) ((int)(uintptr_t)(p))

static void *ret_arg(void *arg) { return arg; }

static void *fail_it(void *arg)
{
    (void)arg;
    conc_fail(CONC_EBROKEN, "boom");
    return PTR(1);
}

static void *sleeper(void *arg)
{
    int rc = conc_sleep(arg ? *(double *)arg : 10.0);
    return PTR(rc == CONC_EKILLED ? 2 : 1);
}

typedef struct {
    int any, value, exc;
    void *seen; /* conc_green_value read in the link */
} linkrec_t;

static void on_any(conc_green_t *g, void *arg) { ((linkrec_t *)arg)->any++; ((linkrec_t *)arg)->seen = conc_green_value(g); }
static void on_value(conc_green_t *g, void *arg) { (void)g; ((linkrec_t *)arg)->value++; }
static void on_exc(conc_green_t *g, void *arg) { (void)g; ((linkrec_t *)arg)->exc++; }

Test(green_more, link_value_and_exception, .timeout = TU_TIMEOUT)
{
    linkrec_t ok = {0}, bad = {0};
    conc_green_t *a, *b;
    cr_assert_eq(conc_go(&a, ret_arg, PTR(42)), 0);
    cr_assert_eq(conc_go(&b, fail_it, NULL), 0);
    cr_assert_not(conc_green_has_links(a));
    cr_assert_eq(conc_green_link(a, on_any, &ok), 0);
    cr_assert_eq(conc_green_link_value(a, on_value, &ok), 0);
    cr_assert_eq(conc_green_link_exception(a, on_exc, &ok), 0);
    cr_assert(conc_green_has_links(a));
    cr_assert_eq(conc_green_link(b, on_any, &bad), 0);
    cr_assert_eq(conc_green_link_value(b, on_value, &bad), 0);
    cr_assert_eq(conc_green_link_exception(b, on_exc, &bad), 0);
    cr_assert_null(conc_green_value(a), "no value before the end");
    cr_assert_eq(conc_green_join(a, 5), 0);
    cr_assert_eq(conc_green_join(b, 5), 0);
    cr_assert(ok.any == 1 && ok.value == 1 && ok.exc == 0);
    cr_assert_eq(ok.seen, PTR(42), "a link reads the ended green thread's value");
    cr_assert(bad.any == 1 && bad.value == 0 && bad.exc == 1);
    cr_assert_null(bad.seen, "a failed one has no value");
    cr_assert_eq(conc_green_value(a), PTR(42));
    cr_assert_null(conc_green_value(b));
    cr_assert_not(conc_green_has_links(a), "links ran: none left");
    /* linking to an ended one runs the callback at once, by kind */
    linkrec_t late = {0};
    cr_assert_eq(conc_green_link_value(b, on_value, &late), 0);
    cr_assert_eq(conc_green_link_exception(b, on_exc, &late), 0);
    cr_assert(late.value == 0 && late.exc == 1);
    cr_assert_eq(conc_green_unlink(a, on_any, &ok), 0, "nothing left to unlink");
    conc_green_free(a);
    conc_green_free(b);
}

Test(green_more, killed_counts_as_value, .timeout = TU_TIMEOUT)
{
    linkrec_t r = {0};
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, sleeper, NULL), 0);
    cr_assert_eq(conc_green_link_value(g, on_value, &r), 0);
    cr_assert_eq(conc_green_link_exception(g, on_exc, &r), 0);
    cr_assert_eq(conc_yield(), 0);
    cr_assert_eq(conc_green_kill(g, true, 5), 0);
    cr_assert(r.value == 1 && r.exc == 0, "GreenletExit is a success");
    cr_assert_null(conc_green_value(g));
    conc_green_free(g);
}

Test(green_more, unlink_and_unlink_all, .timeout = TU_TIMEOUT)
{
    linkrec_t r = {0};
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, ret_arg, PTR(1)), 0);
    cr_assert_eq(conc_green_unlink(NULL, on_any, &r), CONC_EINVAL);
    cr_assert_eq(conc_green_unlink(g, NULL, &r), CONC_EINVAL);
    cr_assert_eq(conc_green_unlink_all(NULL), CONC_EINVAL);
    cr_assert_eq(conc_green_link(g, on_any, &r), 0);
    cr_assert_eq(conc_green_link(g, on_any, &r), 0);
    cr_assert_eq(conc_green_link_value(g, on_value, &r), 0);
    cr_assert_eq(conc_green_unlink(g, on_any, &r), 1, "one at a time");
    cr_assert_eq(conc_green_unlink(g, on_any, NULL), 0, "arg must match");
    cr_assert_eq(conc_green_unlink(g, on_value, &r), 1, "any kind");
    cr_assert(conc_green_has_links(g));
    cr_assert_eq(conc_green_join(g, 5), 0);
    cr_assert_eq(r.any, 1, "the other on_any link ran");
    cr_assert_eq(r.value, 0);

    linkrec_t r2 = {0};
    conc_green_t *h;
    cr_assert_eq(conc_go(&h, ret_arg, PTR(1)), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_green_link(h, on_any, &r2), 0);
    cr_assert_eq(conc_green_unlink_all(h), 3);
    cr_assert_not(conc_green_has_links(h));
    cr_assert_eq(conc_green_join(h, 5), 0);
    cr_assert_eq(r2.any, 0);
    cr_assert_eq(conc_green_unlink_all(h), 0);
    conc_green_free(g);
    conc_green_free(h);
}

/* unlink from another OS thread while the green thread ends: every link
 * either runs once or is removed, never both, never lost */
static _Atomic int ran_links;
static void count_link(conc_green_t *g, void *arg) { (void)g; (void)arg; atomic_fetch_add(&ran_links, 1); }
static void *unlinker(void *arg)
{
    conc_green_t *g = arg;
    intptr_t removed = 0;
    for (int i = 0; i < 200; i++) {
        int rc = conc_green_unlink(g, count_link, PTR(i));
        if (rc > 0)
            removed += rc;
    }
    return (void *)removed;
}

Test(green_more, unlink_races_the_end, .timeout = TU_TIMEOUT)
{
    for (int round = 0; round < 20; round++) {
        atomic_store(&ran_links, 0);
        conc_green_t *g;
        cr_assert_eq(conc_go(&g, ret_arg, NULL), 0);
        for (int i = 0; i < 200; i++)
            cr_assert_eq(conc_green_link(g, count_link, PTR(i)), 0);
        conc_thread_t *t;
        cr_assert_eq(conc_thread_spawn(&t, unlinker, g, NULL), 0);
        cr_assert_eq(conc_green_join(g, 5), 0);
        void *removed = NULL;
        cr_assert_eq(conc_thread_join(t, 10, &removed), 0);
        conc_thread_free(t);
        cr_assert_eq(atomic_load(&ran_links) + (int)(intptr_t)removed, 200);
        conc_green_free(g);
    }
}

/* Links from another OS thread racing the end: the end closes the links
 * with plain stores unless a link or unlink from another thread is under
 * way (green.c end_green); every link runs exactly once, at the end on
 * the green thread or at once in the linker. */
static void *linker(void *arg)
{
    conc_green_t *g = arg;
    for (int i = 0; i < 200; i++)
        if (conc_green_link(g, count_link, PTR(i)) != 0)
            return PTR(1);
    return NULL;
}

static void *yield_some(void *arg)
{
    for (int i = 0; i < (int)(intptr_t)arg; i++)
        conc_yield();
    return NULL;
}

Test(green_more, link_from_another_thread_races_the_end, .timeout = TU_TIMEOUT)
{
    for (int round = 0; round < 20; round++) {
        atomic_store(&ran_links, 0);
        conc_green_t *g;
        cr_assert_eq(conc_go(&g, yield_some, PTR(round * 3)), 0);
        conc_thread_t *t;
        cr_assert_eq(conc_thread_spawn(&t, linker, g, NULL), 0);
        if (round & 1)
            tu_sleep(0.0005);
        cr_assert_eq(conc_green_join(g, 5), 0);
        void *bad = PTR(1);
        cr_assert_eq(conc_thread_join(t, 10, &bad), 0);
        conc_thread_free(t);
        cr_assert_null(bad);
        cr_assert_eq(atomic_load(&ran_links), 200, "round %d", round);
        conc_green_free(g);
    }
}

/* ------------------------------------------------------ new + start */

Test(green_more, new_then_start, .timeout = TU_TIMEOUT)
{
    conc_green_t *g;
    cr_assert_eq(conc_green_new(NULL, NULL, ret_arg, NULL), CONC_EINVAL);
    cr_assert_eq(conc_green_new(&g, NULL, NULL, NULL), CONC_EINVAL);
    cr_assert_eq(conc_green_new(&g, NULL, ret_arg, PTR(5)), 0);
    cr_assert_eq(conc_sleep(0.01), 0);
    cr_assert_not(conc_green_started(g), "not scheduled until start");
    cr_assert_eq(conc_green_join(g, 0.02), CONC_ETIMEDOUT);
    cr_assert_eq(conc_green_start(g), 0);
    cr_assert_eq(conc_green_start(g), CONC_EPERM, "a second start is an error");
    void *r = NULL;
    cr_assert_eq(conc_green_get(g, 5, &r), 0);
    cr_assert_eq(r, PTR(5));
    cr_assert_eq(conc_green_start(g), CONC_EPERM);
    conc_green_free(g);

    conc_green_t *s;
    cr_assert_eq(conc_go(&s, ret_arg, NULL), 0);
    cr_assert_eq(conc_green_start(s), CONC_EPERM, "spawned ones are started");
    cr_assert_eq(conc_green_start(NULL), CONC_EINVAL);
    conc_green_free(s);
}

Test(green_more, kill_before_start, .timeout = TU_TIMEOUT)
{
    linkrec_t r = {0};
    conc_green_t *g;
    cr_assert_eq(conc_green_new(&g, NULL, ret_arg, PTR(5)), 0);
    cr_assert_eq(conc_green_link(g, on_any, &r), 0);
    cr_assert_eq(conc_green_kill(g, true, 5), 0);
    cr_assert(conc_green_dead(g));
    cr_assert(conc_green_killed(g));
    cr_assert_not(conc_green_started(g));
    cr_assert_eq(r.any, 1);
    cr_assert_eq(conc_green_start(g), CONC_EPERM);
    conc_green_free(g);
    /* a handle freed unstarted: it ends (killed), its links run */
    linkrec_t r2 = {0};
    cr_assert_eq(conc_green_new(&g, NULL, ret_arg, NULL), 0);
    cr_assert_eq(conc_green_link(g, on_any, &r2), 0);
    cr_assert_eq(conc_green_free(g), 0);
    cr_assert_eq(r2.any, 1);
}

static void *from_other_thread(void *arg) { return PTR(conc_green_start(arg)); }

Test(green_more, start_from_another_thread_refused, .timeout = TU_TIMEOUT)
{
    conc_green_t *g;
    cr_assert_eq(conc_green_new(&g, NULL, ret_arg, NULL), 0);
    conc_thread_t *t;
    void *rc = NULL;
    cr_assert_eq(conc_thread_spawn(&t, from_other_thread, g, NULL), 0);
    cr_assert_eq(conc_thread_join(t, 10, &rc), 0);
    conc_thread_free(t);
    cr_assert_eq((intptr_t)rc, CONC_EPERM);
    cr_assert_eq(conc_green_start(g), 0);
    cr_assert_eq(conc_green_join(g, 5), 0);
    conc_green_free(g);
}

Test(green_more, spawn_later, .timeout = TU_TIMEOUT)
{
    conc_green_t *g;
    cr_assert_eq(conc_green_spawn_later(&g, NAN, ret_arg, NULL), CONC_EINVAL);
    cr_assert_eq(conc_green_spawn_later(&g, CONC_FOREVER, ret_arg, NULL), CONC_EINVAL);
    cr_assert_eq(conc_green_spawn_later(&g, 0.1, NULL, NULL), CONC_EINVAL);
    double t0 = tu_now();
    cr_assert_eq(conc_green_spawn_later(&g, 0.1, ret_arg, PTR(7)), 0);
    cr_assert_eq(conc_sleep(0.03), 0);
    cr_assert_not(conc_green_started(g), "not before its time");
    void *r = NULL;
    cr_assert_eq(conc_green_get(g, 5, &r), 0);
    cr_assert_eq(r, PTR(7));
    cr_assert_geq(tu_now() - t0, 0.095);
    cr_assert_lt(tu_now() - t0, 0.1 + TU_SLACK);
    conc_green_free(g);

    /* start_later on a made one; negative: at once */
    cr_assert_eq(conc_green_new(&g, NULL, ret_arg, PTR(8)), 0);
    cr_assert_eq(conc_green_start_later(g, -1), 0);
    cr_assert_eq(conc_green_start_later(g, 1), CONC_EPERM);
    cr_assert_eq(conc_green_get(g, 5, &r), 0);
    cr_assert_eq(r, PTR(8));
    conc_green_free(g);

    /* detached */
    static _Atomic int hits;
    cr_assert_eq(conc_green_spawn_later(NULL, 0.01, ret_arg, NULL), 0);
    (void)hits;
    cr_assert_eq(conc_sleep(0.05), 0);
}

Test(green_more, kill_during_start_later, .timeout = TU_TIMEOUT)
{
    conc_green_t *g;
    linkrec_t r = {0};
    cr_assert_eq(conc_green_spawn_later(&g, 10, ret_arg, PTR(1)), 0);
    cr_assert_eq(conc_green_link(g, on_any, &r), 0);
    cr_assert_eq(conc_sleep(0.01), 0); /* it is now waiting out its delay */
    double t0 = tu_now();
    cr_assert_eq(conc_green_kill(g, true, 5), 0);
    cr_assert_lt(tu_now() - t0, TU_SLACK);
    cr_assert(conc_green_killed(g));
    cr_assert_not(conc_green_started(g), "fn never ran");
    cr_assert_eq(r.any, 1);
    conc_green_free(g);
}

/* ------------------------------------------------------------ killall */

Test(green_more, killall, .timeout = TU_TIMEOUT)
{
    conc_green_t *gs[4];
    cr_assert_eq(conc_go(&gs[0], sleeper, NULL), 0);
    cr_assert_eq(conc_go(&gs[1], sleeper, NULL), 0);
    cr_assert_eq(conc_go(&gs[2], ret_arg, NULL), 0);
    gs[3] = NULL;
    cr_assert_eq(conc_yield(), 0); /* 0 and 1 sleep; 2 ended */
    cr_assert_eq(conc_green_killall(NULL, 1, true, 1), CONC_EINVAL);
    cr_assert_eq(conc_green_killall(gs, 4, true, NAN), CONC_EINVAL);
    cr_assert_eq(conc_green_killall(gs, 4, true, 5), 0);
    for (int i = 0; i < 3; i++)
        cr_assert(conc_green_dead(gs[i]));
    cr_assert(conc_green_killed(gs[0]) && conc_green_killed(gs[1]));
    cr_assert_not(conc_green_killed(gs[2]));
    for (int i = 0; i < 3; i++)
        conc_green_free(gs[i]);

    /* not started yet: none of them ever runs */
    cr_assert_eq(conc_go(&gs[0], ret_arg, NULL), 0);
    cr_assert_eq(conc_go(&gs[1], ret_arg, NULL), 0);
    cr_assert_eq(conc_green_killall(gs, 2, false, 0), 0);
    cr_assert_eq(conc_sleep(0.01), 0);
    cr_assert(!conc_green_started(gs[0]) && !conc_green_started(gs[1]));
    conc_green_free(gs[0]);
    conc_green_free(gs[1]);
}

static void *stubborn(void *arg)
{
    (void)arg;
    while (conc_sleep(0.02) == CONC_EKILLED) { /* ignores kills for a while */
    }
    return NULL;
}

Test(green_more, killall_timeout, .timeout = TU_TIMEOUT)
{
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, stubborn, NULL), 0);
    cr_assert_eq(conc_yield(), 0);
    cr_assert_eq(conc_green_killall(&g, 1, true, 0.005), CONC_ETIMEDOUT);
    cr_assert_eq(conc_green_join(g, 5), 0);
    conc_green_free(g);
}

static void *killall_in_green(void *arg)
{
    conc_green_t **gs = arg;
    return PTR(conc_green_killall(gs, 1, true, CONC_FOREVER));
}

Test(green_more, killall_waiter_is_killable, .timeout = TU_TIMEOUT)
{
    /* the blocking wait of killall is colorless: it parks one green
     * thread, and a kill or a Timeout scope cuts it */
    conc_green_t *s, *k;
    cr_assert_eq(conc_go(&s, stubborn, NULL), 0);
    cr_assert_eq(conc_go(&k, killall_in_green, &s), 0);
    cr_assert_eq(conc_sleep(0.01), 0);
    cr_assert_eq(conc_green_kill(k, true, 5), 0);
    void *rc = NULL;
    cr_assert(conc_green_dead(k));
    (void)rc;
    conc_timeout_begin(0.01);
    cr_assert_eq(conc_green_killall(&s, 1, true, CONC_FOREVER), CONC_ETIMEDOUT);
    cr_assert_eq(conc_timeout_end(), 1);
    cr_assert_eq(conc_green_join(s, 5), 0);
    conc_green_free(s);
    conc_green_free(k);
}

static _Atomic int cb_order[4];
static _Atomic int cb_n;
static void cb_note(void *arg) { cb_order[atomic_fetch_add(&cb_n, 1)] = INT(arg); }
static void *green_note(void *arg) { cb_note(arg); return NULL; }

Test(green_more, run_callback_on_the_hub, .timeout = TU_TIMEOUT)
{
    atomic_store(&cb_n, 0);
    cr_assert_eq(conc_green_run_callback(NULL, NULL), CONC_EINVAL);
    conc_green_t *g;
    cr_assert_eq(conc_green_run_callback(cb_note, PTR(1)), 0);
    cr_assert_eq(conc_go(&g, green_note, PTR(2)), 0);
    cr_assert_eq(conc_green_run_callback(cb_note, PTR(3)), 0);
    cr_assert_eq(atomic_load(&cb_n), 0, "not before the caller blocks or yields");
    cr_assert_eq(conc_yield(), 0);
    cr_assert_eq(atomic_load(&cb_n), 3);
    cr_assert(cb_order[0] == 1 && cb_order[1] == 2 && cb_order[2] == 3, "in order with ready green threads");
    conc_green_free(g);
}

static void *free_elsewhere(void *arg) { return PTR(conc_green_free(arg)); }

Test(green_more, unstarted_freed_from_another_thread, .timeout = TU_TIMEOUT)
{
    linkrec_t r = {0};
    conc_green_t *g;
    cr_assert_eq(conc_green_new(&g, NULL, ret_arg, NULL), 0);
    cr_assert_eq(conc_green_link(g, on_any, &r), 0);
    conc_thread_t *t;
    void *rc = PTR(1);
    cr_assert_eq(conc_thread_spawn(&t, free_elsewhere, g, NULL), 0);
    cr_assert_eq(conc_thread_join(t, 10, &rc), 0);
    conc_thread_free(t);
    cr_assert_eq(INT(rc), 0);
    for (int i = 0; i < 100 && r.any == 0; i++)
        conc_sleep(0.005); /* the hub takes the kill request and ends it unrun */
    cr_assert_eq(r.any, 1);
}

/* A hub reuses an ended green thread's record for the next spawn (kept
 * on its stack): nothing of the old one may show through — outcome,
 * name, links, kill — whatever way the old one ended. */
Test(green_more, recycled_green_is_fresh, .timeout = TU_TIMEOUT)
{
    for (int round = 0; round < 3; round++) {
        for (int how = 0; how < 3; how++) { /* 0: failed, named, linked; 1: killed; 2: ok */
            conc_green_t *old;
            linkrec_t oldl = {0};
            double forever = 10.0;
            if (how == 0) {
                conc_green_opts_t o = {0};
                o.name = "old-one";
                cr_assert_eq(conc_go_opts(&old, &o, fail_it, NULL), 0);
                cr_assert_eq(conc_green_link(old, on_any, &oldl), 0);
            } else if (how == 1) {
                cr_assert_eq(conc_go(&old, sleeper, &forever), 0);
                cr_assert_eq(conc_yield(), 0); /* it runs and sleeps */
                cr_assert_eq(conc_green_kill(old, true, CONC_FOREVER), 0);
            } else {
                cr_assert_eq(conc_go(&old, ret_arg, PTR(3)), 0);
            }
            cr_assert_eq(conc_green_join(old, CONC_FOREVER), 0);
            cr_assert_eq(conc_green_free(old), 0);

            conc_green_t *g;
            linkrec_t l = {0};
            cr_assert_eq(conc_go(&g, ret_arg, PTR(7)), 0);
            cr_assert_eq(conc_green_link(g, on_any, &l), 0);
            cr_assert_not(conc_green_dead(g));
            cr_assert_not(conc_green_started(g));
            cr_assert_eq(strncmp(conc_green_name(g), "Green-", 6), 0, "name %s", conc_green_name(g));
            void *r = NULL;
            cr_assert_eq(conc_green_get(g, CONC_FOREVER, &r), 0);
            cr_assert_eq(INT(r), 7);
            cr_assert(conc_green_successful(g));
            cr_assert_not(conc_green_killed(g));
            cr_assert_eq(conc_green_exception(g, NULL), 0);
            cr_assert_eq(l.any, 1);
            cr_assert_eq(oldl.any, how == 0 ? 1 : 0); /* the old link ran once, for the old one */
            cr_assert_eq(conc_green_free(g), 0);
        }
    }
}

/* Joins from another OS thread racing the end: the ending green thread
 * sets its `done` event only if it sees a remote join begun (a count it
 * reads after closing its links, a joiner bumps before reading them), so
 * every interleaving must still wake the joiner with the result. */
static conc_green_t *_Atomic rj_slot;
static atomic_int rj_acks, rj_bad, rj_quit;

static void *rj_body(void *arg)
{
    for (int k = (int)((uintptr_t)arg % 3); k > 0; k--)
        conc_yield();
    return arg;
}

static void *rj_joiner(void *arg)
{
    (void)arg;
    while (!atomic_load(&rj_quit)) {
        conc_green_t *g = atomic_exchange(&rj_slot, NULL);
        if (!g) {
            sched_yield();
            continue;
        }
        void *r = NULL;
        int rc = conc_green_get(g, 10, &r);
        if (rc != 0 || !conc_green_dead(g) || r == NULL)
            atomic_fetch_add(&rj_bad, 1);
        atomic_fetch_add(&rj_acks, 1);
    }
    return NULL;
}

Test(green_more, join_from_another_thread_races_the_end, .timeout = TU_TIMEOUT)
{
    conc_thread_t *t;
    cr_assert_eq(conc_thread_new(&t, rj_joiner, NULL, NULL), 0);
    cr_assert_eq(conc_thread_start(t), 0);
    int n = TU_SANITIZED ? 60 : 600;
    for (int i = 1; i <= n; i++) {
        conc_green_t *g;
        cr_assert_eq(conc_go(&g, rj_body, PTR(i)), 0);
        atomic_store(&rj_slot, g);
        if (i % 4 == 1) /* let the remote join begin first */
            while (atomic_load(&rj_slot))
                sched_yield();
        if (i % 4 == 2)
            conc_sleep(0.0002);
        cr_assert_eq(conc_green_join(g, 10), 0);
        while (atomic_load(&rj_acks) != i)
            sched_yield();
        conc_green_free(g);
    }
    atomic_store(&rj_quit, 1);
    cr_assert_eq(conc_thread_join(t, 10, NULL), 0);
    conc_thread_free(t);
    cr_expect_eq(atomic_load(&rj_bad), 0);
}

/* The usual join (no deadline, no scope) parks through the hub-local park
 * (green/hub.c conc__hub_park_local): a kill still cuts it short, from the
 * hub or from another OS thread, and leaves nothing behind on the joined
 * green thread's list; a kill that comes in the same turn as the joined
 * one's end lets the join succeed and stays pending for the next wait. */
typedef struct {
    conc_green_t *target;
    int rc, after;
} joiner_t;

static void *joiner_body(void *arg)
{
    joiner_t *j = arg;
    j->rc = conc_green_join(j->target, CONC_FOREVER);
    j->after = conc_sleep(0.001);
    return NULL;
}

static void *kill_arg(void *arg)
{
    conc_green_kill(arg, false, 0);
    return NULL;
}

static void *kill_from_thread(void *arg)
{
    tu_sleep(0.02);
    conc_green_kill(arg, false, 0);
    return NULL;
}

Test(green_more, usual_join_killed, .timeout = TU_TIMEOUT)
{
    double ten = 10.0;
    for (int from_thread = 0; from_thread < 2; from_thread++) {
        conc_green_t *g, *j;
        joiner_t jr = {0};
        cr_assert_eq(conc_go(&g, sleeper, &ten), 0);
        jr.target = g;
        cr_assert_eq(conc_go(&j, joiner_body, &jr), 0);
        conc_thread_t *t = NULL;
        if (from_thread) {
            cr_assert_eq(conc_thread_new(&t, kill_from_thread, j, NULL), 0);
            cr_assert_eq(conc_thread_start(t), 0);
        } else {
            conc_yield(); /* j joins g */
            conc_green_t *k;
            cr_assert_eq(conc_go(&k, kill_arg, j), 0);
            conc_green_free(k);
        }
        cr_assert_eq(conc_green_join(j, 10), 0);
        cr_expect_eq(jr.rc, CONC_EKILLED, "from_thread %d", from_thread);
        cr_expect(!conc_green_dead(g));
        cr_expect_eq(conc_green_kill(g, true, 10), 0); /* g's end finds no stale joiner */
        cr_expect(conc_green_killed(g));
        if (t) {
            cr_assert_eq(conc_thread_join(t, 10, NULL), 0);
            conc_thread_free(t);
        }
        conc_green_free(j);
        conc_green_free(g);
    }
}

static void *kill_then_end(void *arg)
{
    conc_green_kill(*(conc_green_t **)arg, false, 0); /* the joiner, parked on us */
    return PTR(7);
}

Test(green_more, usual_join_kill_in_the_same_turn_as_the_end, .timeout = TU_TIMEOUT)
{
    conc_green_t *g, *j;
    joiner_t jr = {0};
    cr_assert_eq(conc_green_new(&g, NULL, kill_then_end, &j), 0);
    jr.target = g;
    cr_assert_eq(conc_go(&j, joiner_body, &jr), 0);
    conc_yield();                          /* j parks in its join of g */
    cr_assert_eq(conc_green_start(g), 0); /* g kills j, then ends */
    cr_assert_eq(conc_green_join(j, 10), 0);
    cr_expect_eq(jr.rc, 0, "the join was satisfied in the same turn");
    cr_expect_eq(jr.after, CONC_EKILLED, "the kill stays pending for the next wait");
    cr_expect(conc_green_killed(j));
    cr_expect_eq(INT(conc_green_value(g)), 7);
    conc_green_free(j);
    conc_green_free(g);
}

/* An ended green thread's "alive" reference is kept pending on its hub
 * while its handle is held, so that the usual free after a join drops
 * both at once (green.c conc__green_off_stack): the other orders must
 * still free every record exactly once (ASan checks the poisoning of
 * freed records) and reuse them. */
static void *ret_one(void *arg)
{
    (void)arg;
    return PTR(1);
}

static void *free_it(void *arg)
{
    conc_green_free(arg);
    return NULL;
}

static void *spawn_join_no_free(void *arg)
{
    conc_green_t **out = arg;
    if (conc_go(out, ret_one, NULL) != 0 || conc_green_join(*out, 10) != 0)
        *out = NULL;
    return NULL; /* the thread ends with the ended one pending on its hub */
}

Test(green_more, pending_alive_reference_orders, .timeout = TU_TIMEOUT)
{
    for (int round = 0; round < 3; round++) {
        /* two ended back to back, freed in both orders */
        conc_green_t *a, *b;
        cr_assert_eq(conc_go(&a, ret_one, NULL), 0);
        cr_assert_eq(conc_go(&b, ret_one, NULL), 0);
        cr_assert_eq(conc_green_join(a, 10), 0);
        cr_assert_eq(conc_green_join(b, 10), 0);
        cr_expect_eq(INT(conc_green_value(a)), 1);
        cr_expect_eq(INT(conc_green_value(b)), 1);
        conc_green_free(round & 1 ? b : a);
        conc_green_free(round & 1 ? a : b);

        /* the handle freed by another OS thread while pending: the next
         * end on the hub drops the alive reference */
        conc_green_t *c, *d;
        cr_assert_eq(conc_go(&c, ret_one, NULL), 0);
        cr_assert_eq(conc_green_join(c, 10), 0);
        conc_thread_t *t;
        cr_assert_eq(conc_thread_new(&t, free_it, c, NULL), 0);
        cr_assert_eq(conc_thread_start(t), 0);
        cr_assert_eq(conc_thread_join(t, 10, NULL), 0);
        conc_thread_free(t);
        cr_assert_eq(conc_go(&d, ret_one, NULL), 0);
        cr_assert_eq(conc_green_join(d, 10), 0);
        cr_expect_eq(INT(conc_green_value(d)), 1);
        conc_green_free(d);

        /* a thread that ends with one pending: its handle freed here */
        conc_green_t *e = NULL;
        cr_assert_eq(conc_thread_new(&t, spawn_join_no_free, &e, NULL), 0);
        cr_assert_eq(conc_thread_start(t), 0);
        cr_assert_eq(conc_thread_join(t, 10, NULL), 0);
        conc_thread_free(t);
        cr_assert(e);
        cr_expect(conc_green_dead(e));
        cr_expect_eq(INT(conc_green_value(e)), 1);
        cr_expect_eq(conc_green_free(e), 0);
    }
    /* and the records are reused as usual */
    long ran = 0;
    for (int i = 0; i < 100; i++) {
        conc_green_t *g;
        cr_assert_eq(conc_go(&g, rj_body, PTR(1)), 0);
        cr_assert_eq(conc_green_join(g, 10), 0);
        ran += conc_green_dead(g);
        conc_green_free(g);
    }
    cr_expect_eq(ran, 100);
}
