/*
 * tests/deadlock_test.c — conc/deadlock.h: lock-order checking
 * (CONC_DEBUG=lockorder) and runtime deadlock detection
 * (CONC_DEBUG=deadlock), on OS threads and green threads.
 */
#include "test_util.h"

/* A library configured with -DCONC_OBSERVE=OFF has none of this. */
#define NEED_OBSERVE()                                                              \
    do {                                                                            \
        if (conc_debug_enable(0) == CONC_EINVAL)                                    \
            cr_skip_test("conc was built with -DCONC_OBSERVE=OFF: nothing to test"); \
    } while (0)

#include <signal.h>

#include "core/observe.h"
#include "core/park.h"

/* ------------------------------------------------ stderr capture */

static int cap_fd = -1, cap_saved = -1;

static void cap_begin(void)
{
    char path[] = "/tmp/conc_deadlock_testXXXXXX";
    cap_fd = mkstemp(path);
    cr_assert(cap_fd >= 0);
    unlink(path);
    fflush(stderr);
    cap_saved = dup(2);
    dup2(cap_fd, 2);
}

/* Ends the capture; returns what was written (malloc'd), and echoes it. */
static char *cap_end(void)
{
    fflush(stderr);
    dup2(cap_saved, 2);
    close(cap_saved);
    off_t n = lseek(cap_fd, 0, SEEK_END);
    char *buf = calloc(1, (size_t)n + 1);
    cr_assert(buf);
    if (n > 0)
        cr_assert_eq(pread(cap_fd, buf, (size_t)n, 0), n);
    close(cap_fd);
    fputs(buf, stderr);
    return buf;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static conc_thread_t *start(const char *name, void *(*fn)(void *), void *arg)
{
    conc_thread_t *t;
    conc_thread_opts_t o = {.name = name};
    cr_assert_eq(conc_thread_new(&t, fn, arg, &o), 0);
    cr_assert_eq(conc_thread_start(t), 0);
    return t;
}

static void run(const char *name, void *(*fn)(void *), void *arg)
{
    conc_thread_t *t = start(name, fn, arg);
    cr_assert_eq(conc_thread_join(t, 30, NULL), 0);
    conc_thread_free(t);
}

static conc_lock_t A = CONC_LOCK_INIT, B = CONC_LOCK_INIT, C = CONC_LOCK_INIT;

typedef struct {
    conc_lock_t *first, *second;
} pair_t;

static void *take_two(void *arg)
{
    pair_t *p = arg;
    conc_lock_acquire(p->first, true, CONC_FOREVER);
    conc_lock_acquire(p->second, true, CONC_FOREVER);
    conc_lock_release(p->second);
    conc_lock_release(p->first);
    return NULL;
}

/* ------------------------------------------------ lock order */

Test(lockorder, abba_on_two_threads_reported_once, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    cr_assert_eq(conc_debug_enable(CONC_DEBUG_LOCKORDER), 0);
    conc_set_name(&A, "lock-A");
    cap_begin();
    pair_t ab = {&A, &B}, ba = {&B, &A};
    run("first", take_two, &ab);
    run("second", take_two, &ba); /* closes the cycle: reported */
    run("third", take_two, &ba);  /* the same inversion: not again */
    run("fourth", take_two, &ab);
    char *out = cap_end();
    cr_expect_eq(count(out, "lock-order inversion"), 1, "%s", out);
    char wa[64], wb[64];
    snprintf(wa, sizeof wa, "Lock %p \"lock-A\"", (void *)&A);
    snprintf(wb, sizeof wb, "Lock %p", (void *)&B);
    cr_expect(strstr(out, wa) && strstr(out, wb), "%s", out);
    cr_expect(strstr(out, "second takes") && strstr(out, "earlier first took"), "%s", out);
    cr_expect(count(out, "#0 ") >= 2, "both acquisition stacks: %s", out);
    free(out);
}

Test(lockorder, consistent_order_not_reported, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    conc_debug_enable(CONC_DEBUG_LOCKORDER);
    cap_begin();
    pair_t ab = {&A, &B}, bc = {&B, &C}, ac = {&A, &C};
    for (int i = 0; i < 3; i++) {
        run("x", take_two, &ab);
        run("y", take_two, &bc);
        run("z", take_two, &ac);
    }
    char *out = cap_end();
    cr_expect_eq(count(out, "lock-order inversion"), 0, "%s", out);
    free(out);
}

Test(lockorder, three_lock_cycle, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    conc_debug_enable(CONC_DEBUG_LOCKORDER);
    cap_begin();
    pair_t ab = {&A, &B}, bc = {&B, &C}, ca = {&C, &A};
    run("x", take_two, &ab);
    run("y", take_two, &bc);
    run("z", take_two, &ca);
    char *out = cap_end();
    cr_expect_eq(count(out, "lock-order inversion"), 1, "%s", out);
    cr_expect_eq(count(out, "while earlier"), 2, "the path has two edges: %s", out);
    free(out);
}

Test(lockorder, forgotten_lock_leaves_the_graph, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    conc_debug_enable(CONC_DEBUG_LOCKORDER);
    cap_begin();
    conc_lock_t *a = malloc(sizeof *a);
    conc_lock_init(a);
    pair_t ab = {a, &B};
    run("x", take_two, &ab);
    conc_debug_forget(a); /* "freed": its edges go */
    free(a);
    conc_lock_t *a2 = malloc(sizeof *a2); /* may well get the same address */
    conc_lock_init(a2);
    pair_t ba = {&B, a2};
    run("y", take_two, &ba);
    char *out = cap_end();
    cr_expect_eq(count(out, "lock-order inversion"), 0, "%s", out);
    free(a2);
    free(out);
}

static conc_rlock_t RA = CONC_RLOCK_INIT, RB = CONC_RLOCK_INIT;

static void *green_rab(void *arg)
{
    bool ab = arg != NULL;
    conc_rlock_t *x = ab ? &RA : &RB, *y = ab ? &RB : &RA;
    conc_rlock_acquire(x, true, CONC_FOREVER);
    conc_rlock_acquire(x, true, CONC_FOREVER); /* reentrant: no edge to itself */
    conc_rlock_acquire(y, true, CONC_FOREVER);
    conc_rlock_release(y);
    conc_rlock_release(x);
    conc_rlock_release(x);
    return NULL;
}

Test(lockorder, rlocks_on_green_threads, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    conc_debug_enable(CONC_DEBUG_LOCKORDER);
    cap_begin();
    conc_green_t *g1, *g2;
    conc_green_opts_t o1 = {.name = "g-ab"}, o2 = {.name = "g-ba"};
    cr_assert_eq(conc_go_opts(&g1, &o1, green_rab, (void *)1), 0);
    cr_assert_eq(conc_green_join(g1, 10), 0);
    cr_assert_eq(conc_go_opts(&g2, &o2, green_rab, NULL), 0);
    cr_assert_eq(conc_green_join(g2, 10), 0);
    conc_green_free(g1);
    conc_green_free(g2);
    char *out = cap_end();
    cr_expect_eq(count(out, "lock-order inversion"), 1, "%s", out);
    cr_expect(strstr(out, "g-ba takes RLock") && strstr(out, "earlier g-ab took RLock"), "%s", out);
    free(out);
}

static conc_semaphore_t S1 = CONC_BOUNDED_SEMAPHORE_INIT(1);

static void *sem_then_a(void *arg)
{
    bool sem_first = arg != NULL;
    if (sem_first)
        conc_semaphore_acquire(&S1, true, CONC_FOREVER);
    conc_lock_acquire(&A, true, CONC_FOREVER);
    if (!sem_first)
        conc_semaphore_acquire(&S1, true, CONC_FOREVER);
    conc_semaphore_release(&S1, 1);
    conc_lock_release(&A);
    return NULL;
}

Test(lockorder, bounded_semaphore_of_one_is_a_lock, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    conc_debug_enable(CONC_DEBUG_LOCKORDER);
    cap_begin();
    run("s1", sem_then_a, (void *)1);
    run("s2", sem_then_a, NULL);
    char *out = cap_end();
    cr_expect_eq(count(out, "lock-order inversion"), 1, "%s", out);
    cr_expect(strstr(out, "Semaphore"), "%s", out);
    free(out);
}

static conc_cond_t CV;
static void *cond_then_b(void *arg)
{
    (void)arg;
    conc_cond_acquire(&CV, true, CONC_FOREVER);
    conc_cond_wait(&CV, 0.01); /* releases and re-acquires its lock */
    conc_lock_acquire(&B, true, CONC_FOREVER);
    conc_lock_release(&B);
    conc_cond_release(&CV);
    return NULL;
}

static void *b_then_cond(void *arg)
{
    (void)arg;
    conc_lock_acquire(&B, true, CONC_FOREVER);
    conc_cond_acquire(&CV, true, CONC_FOREVER);
    conc_cond_release(&CV);
    conc_lock_release(&B);
    return NULL;
}

Test(lockorder, condition_reacquire_counts, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    conc_debug_enable(CONC_DEBUG_LOCKORDER);
    conc_cond_init(&CV, &A);
    cap_begin();
    run("c1", cond_then_b, NULL);
    run("c2", b_then_cond, NULL);
    char *out = cap_end();
    cr_expect_eq(count(out, "lock-order inversion"), 1, "%s", out);
    free(out);
}

Test(lockorder, abort_setting, .signal = SIGABRT, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    conc_debug_enable(CONC_DEBUG_LOCKORDER | CONC_DEBUG_ABORT);
    pair_t ab = {&A, &B}, ba = {&B, &A};
    run("x", take_two, &ab);
    take_two(&ba); /* aborts */
}

Test(lockorder, env_comma_list, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    conc_debug_disable(CONC_DEBUG_LOCKORDER | CONC_DEBUG_DEADLOCK | CONC_DEBUG_ABORT);
    setenv("CONC_DEBUG", "1,lockorder,deadlock", 1);
    conc__debug_init();
    cr_expect_eq(conc_debug_flags(), CONC_DEBUG_LOCKORDER | CONC_DEBUG_DEADLOCK);
    conc_debug_disable(CONC_DEBUG_LOCKORDER | CONC_DEBUG_DEADLOCK);
    cr_expect_eq(conc_debug_flags(), 0u);
    cr_expect_eq(conc_debug_enable(0x100), CONC_EINVAL);
    cr_expect_eq(conc_debug_set_delay(0), CONC_EINVAL);
    cr_expect_eq(conc_debug_set_delay(NAN), CONC_EINVAL);
    cr_expect_eq(conc_debug_set_delay(0.05), 0);
    cr_expect_eq(conc_set_name(NULL, "x"), CONC_EINVAL);
}

Test(lockorder, env_unknown_word_is_reported, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    conc_debug_disable(CONC_DEBUG_LOCKORDER | CONC_DEBUG_DEADLOCK | CONC_DEBUG_ABORT);
    setenv("CONC_DEBUG", "deadlok,lockorder", 1);
    cap_begin();
    conc__debug_init();
    char *out = cap_end();
    cr_expect_eq(conc_debug_flags(), CONC_DEBUG_LOCKORDER);
    cr_expect(strstr(out, "CONC_DEBUG") && strstr(out, "\"deadlok\""), "a typo is said, not silently ignored");
    free(out);
    setenv("CONC_DEBUG", "1,deadlock", 1);
    cap_begin();
    conc__debug_init();
    out = cap_end();
    cr_expect_eq(out[0], 0, "known words are quiet");
    free(out);
    conc_debug_disable(CONC_DEBUG_LOCKORDER | CONC_DEBUG_DEADLOCK);
    unsetenv("CONC_DEBUG");
}

/* ------------------------------------------------ deadlock detection */

typedef struct {
    conc_lock_t *first, *second;
    conc_barrier_t *bar;
    int rc;
    double t_edeadlk;
} dl_arg_t;

static void *dl_take_two(void *arg)
{
    dl_arg_t *a = arg;
    conc_lock_acquire(a->first, true, CONC_FOREVER);
    conc_barrier_wait(a->bar, 10, NULL);
    a->rc = conc_lock_acquire(a->second, true, 20);
    if (a->rc == 0)
        conc_lock_release(a->second);
    else
        a->t_edeadlk = tu_now();
    conc_lock_release(a->first); /* backs off: the other proceeds */
    return NULL;
}

static void cycle_of(int n, bool detect, double timeout_expect)
{
    (void)timeout_expect;
    if (detect)
        conc_debug_enable(CONC_DEBUG_DEADLOCK);
    conc_lock_t locks[3] = {CONC_LOCK_INIT, CONC_LOCK_INIT, CONC_LOCK_INIT};
    conc_barrier_t bar;
    conc_barrier_init(&bar, n, NULL, NULL, 10);
    dl_arg_t args[3];
    conc_thread_t *ts[3];
    cap_begin();
    double t0 = tu_now();
    for (int i = 0; i < n; i++) {
        args[i] = (dl_arg_t){&locks[i], &locks[(i + 1) % n], &bar, -1, 0};
        char name[16];
        snprintf(name, sizeof name, "dl-%d", i);
        ts[i] = start(name, dl_take_two, &args[i]);
    }
    for (int i = 0; i < n; i++) {
        cr_assert_eq(conc_thread_join(ts[i], 30, NULL), 0);
        conc_thread_free(ts[i]);
    }
    double took = tu_now() - t0;
    char *out = cap_end();
    int ndl = 0, nok = 0;
    for (int i = 0; i < n; i++) {
        ndl += args[i].rc == CONC_EDEADLK;
        nok += args[i].rc == 0;
    }
    cr_expect_eq(ndl, 1, "exactly one victim (%d)", ndl);
    cr_expect_eq(nok, n - 1, "the others proceed");
    cr_expect_eq(count(out, "deadlock detected"), 1, "%s", out);
    cr_expect_eq(count(out, " waits for Lock "), n, "the cycle has %d waits: %s", n, out);
    cr_expect(took < 10, "found in %.2f s", took);
    free(out);
}

Test(deadlock, abba_two_threads, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    cycle_of(2, true, 0);
}

Test(deadlock, three_thread_cycle, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    cycle_of(3, true, 0);
}

static dl_arg_t gargs[2];

static void *g_take_two(void *arg)
{
    dl_arg_t *a = arg;
    conc_lock_acquire(a->first, true, CONC_FOREVER);
    conc_yield(); /* both hold their first lock */
    conc_yield();
    a->rc = conc_lock_acquire(a->second, true, 20);
    if (a->rc == 0)
        conc_lock_release(a->second);
    conc_lock_release(a->first);
    return NULL;
}

Test(deadlock, green_threads_abba, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    conc_debug_enable(CONC_DEBUG_DEADLOCK);
    conc_lock_t a = CONC_LOCK_INIT, b = CONC_LOCK_INIT;
    gargs[0] = (dl_arg_t){&a, &b, NULL, -1, 0};
    gargs[1] = (dl_arg_t){&b, &a, NULL, -1, 0};
    cap_begin();
    conc_green_t *g[2];
    cr_assert_eq(conc_go(&g[0], g_take_two, &gargs[0]), 0);
    cr_assert_eq(conc_go(&g[1], g_take_two, &gargs[1]), 0);
    cr_assert_eq(conc_green_join(g[0], 30), 0);
    cr_assert_eq(conc_green_join(g[1], 30), 0);
    conc_green_free(g[0]);
    conc_green_free(g[1]);
    char *out = cap_end();
    cr_expect_eq((gargs[0].rc == CONC_EDEADLK) + (gargs[1].rc == CONC_EDEADLK), 1, "rc %d %d", gargs[0].rc,
                 gargs[1].rc);
    cr_expect_eq((gargs[0].rc == 0) + (gargs[1].rc == 0), 1);
    cr_expect_eq(count(out, "deadlock detected"), 1, "%s", out);
    free(out);
}

static void *green_self_join(void *arg)
{
    *(int *)arg = conc_green_join(conc_green_current(), 5);
    return NULL;
}

Test(deadlock, self_relock_and_self_join, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    conc_debug_enable(CONC_DEBUG_DEADLOCK);
    conc_lock_t l = CONC_LOCK_INIT;
    cap_begin();
    cr_assert_eq(conc_lock_acquire(&l, true, CONC_FOREVER), 0);
    double t0 = tu_now();
    cr_expect_eq(conc_lock_acquire(&l, true, CONC_FOREVER), CONC_EDEADLK);
    cr_expect_eq(conc_lock_acquire(&l, true, 5), CONC_EDEADLK);
    cr_expect(tu_now() - t0 < 1, "at once");
    cr_expect_eq(conc_lock_acquire(&l, false, CONC_FOREVER), CONC_ETIMEDOUT, "a try is a try");
    cr_assert_eq(conc_lock_release(&l), 0);
    cr_expect_eq(conc_lock_acquire(&l, true, CONC_FOREVER), 0);
    conc_lock_release(&l);
    int rc = -1;
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, green_self_join, &rc), 0);
    cr_assert_eq(conc_green_join(g, 10), 0);
    conc_green_free(g);
    cr_expect_eq(rc, CONC_EPERM); /* joining yourself: refused at once, detection or not */
    cr_expect_eq(conc_thread_join(conc_current_thread(), 1, NULL), CONC_EPERM); /* Python's RuntimeError */
    char *out = cap_end();
    free(out);
}

static conc_thread_t *jt[2];
static int jrc[2];
static conc_event_t jready;

static void *join_other(void *arg)
{
    int i = (int)(intptr_t)arg;
    conc_event_wait(&jready, 10);
    jrc[i] = conc_thread_join(jt[1 - i], 20, NULL);
    return NULL;
}

Test(deadlock, join_cycle, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    conc_debug_enable(CONC_DEBUG_DEADLOCK);
    conc_event_init(&jready);
    cap_begin();
    jt[0] = start("j0", join_other, (void *)0);
    jt[1] = start("j1", join_other, (void *)1);
    conc_event_set(&jready);
    double t0 = tu_now();
    /* one gets CONC_EDEADLK and ends; the other's join then succeeds */
    TU_WAIT_UNTIL(conc_thread_join(jt[0], 0, NULL) == 0 && conc_thread_join(jt[1], 0, NULL) == 0, 20);
    cr_expect(tu_now() - t0 < 15);
    char *out = cap_end();
    cr_expect_eq((jrc[0] == CONC_EDEADLK) + (jrc[1] == CONC_EDEADLK), 1, "rc %d %d", jrc[0], jrc[1]);
    cr_expect_eq((jrc[0] == 0) + (jrc[1] == 0), 1, "rc %d %d", jrc[0], jrc[1]);
    cr_expect(strstr(out, "waits for join of thread j"), "%s", out);
    conc_thread_free(jt[0]);
    conc_thread_free(jt[1]);
    free(out);
}

static void *dl_timed(void *arg)
{
    dl_arg_t *a = arg;
    conc_lock_acquire(a->first, true, CONC_FOREVER);
    conc_barrier_wait(a->bar, 10, NULL);
    a->rc = conc_lock_acquire(a->second, true, 0.3);
    if (a->rc == 0)
        conc_lock_release(a->second);
    conc_lock_release(a->first);
    return NULL;
}

Test(deadlock, off_keeps_the_timeout, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    conc_debug_disable(CONC_DEBUG_DEADLOCK);
    conc_lock_t a = CONC_LOCK_INIT, b = CONC_LOCK_INIT;
    conc_barrier_t bar;
    conc_barrier_init(&bar, 2, NULL, NULL, 10);
    dl_arg_t x = {&a, &b, &bar, -1, 0}, y = {&b, &a, &bar, -1, 0};
    conc_thread_t *t1 = start("t1", dl_timed, &x), *t2 = start("t2", dl_timed, &y);
    cr_assert_eq(conc_thread_join(t1, 10, NULL), 0);
    cr_assert_eq(conc_thread_join(t2, 10, NULL), 0);
    conc_thread_free(t1);
    conc_thread_free(t2);
    /* both time out (or, on a loaded machine, one times out first and the
     * other then gets its lock): never CONC_EDEADLK */
    cr_expect(x.rc != CONC_EDEADLK && y.rc != CONC_EDEADLK);
    cr_expect(x.rc == CONC_ETIMEDOUT || y.rc == CONC_ETIMEDOUT);
    /* a relock without detection just times out */
    conc_lock_acquire(&a, true, CONC_FOREVER);
    cr_expect_eq(conc_lock_acquire(&a, true, 0.05), CONC_ETIMEDOUT);
    conc_lock_release(&a);
}

Test(deadlock, a_shorter_delay_finds_it_sooner, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    cr_assert_eq(conc_debug_set_delay(0.02), 0);
    cycle_of(2, true, 0);
}

/* A Lock's last acquirer is known only while it is held by an acquire made
 * with detection on: one taken while detection was off (the inlined fast
 * path writes no owner) must not be blamed on whoever took it before. */
static void *take_and_keep(void *arg)
{
    cr_assert_eq(conc_lock_acquire((conc_lock_t *)arg, true, CONC_FOREVER), 0);
    return NULL; /* a Lock: another thread may release it */
}

Test(deadlock, stale_owner_is_not_the_holder, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    conc_debug_set_delay(0.05);
    conc_debug_enable(CONC_DEBUG_DEADLOCK);
    conc_lock_t l = CONC_LOCK_INIT;
    cr_assert_eq(conc_lock_acquire(&l, true, CONC_FOREVER), 0); /* owner: this thread */
    cr_assert_eq(conc_lock_release(&l), 0);
    conc_debug_disable(CONC_DEBUG_DEADLOCK);
    run("keeper", take_and_keep, &l); /* taken with detection off */
    conc_debug_enable(CONC_DEBUG_DEADLOCK);
    cap_begin();
    int rc = conc_lock_acquire(&l, true, 0.3);
    char *out = cap_end();
    cr_expect_eq(rc, CONC_ETIMEDOUT, "held by the keeper, not by this thread: got %d", rc);
    cr_expect_eq(count(out, "deadlock"), 0, "nothing reported");
    free(out);
    cr_assert_eq(conc_lock_release(&l), 0); /* any thread may release a Lock */
    conc_debug_disable(CONC_DEBUG_DEADLOCK);
    conc_debug_set_delay(0.1);
}

static conc_lock_t SL = CONC_LOCK_INIT, SM = CONC_LOCK_INIT;
static conc_event_t s_done, s_go;

static void *stale_then_wait(void *arg)
{
    conc_lock_acquire(&SL, true, CONC_FOREVER); /* owner of SL: this thread */
    conc_lock_release(&SL);
    conc_event_set(&s_done);
    conc_event_wait(&s_go, CONC_FOREVER);
    int rc = conc_lock_acquire(&SM, true, 10); /* held by the main thread */
    if (rc == 0)
        conc_lock_release(&SM);
    *(int *)arg = rc;
    return NULL;
}

Test(deadlock, stale_owner_makes_no_cycle, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    conc_debug_set_delay(0.05);
    conc_debug_enable(CONC_DEBUG_DEADLOCK);
    conc_event_init(&s_done);
    conc_event_init(&s_go);
    int trc = -1;
    conc_thread_t *t = start("stale", stale_then_wait, &trc);
    cr_assert_eq(conc_event_wait(&s_done, 10), 0);
    conc_debug_disable(CONC_DEBUG_DEADLOCK);
    run("keeper", take_and_keep, &SL); /* SL held by the keeper, unknown to the detector */
    conc_debug_enable(CONC_DEBUG_DEADLOCK);
    cr_assert_eq(conc_lock_acquire(&SM, true, CONC_FOREVER), 0);
    conc_event_set(&s_go);
    tu_sleep(0.1); /* "stale" blocks on SM */
    cap_begin();
    int rc = conc_lock_acquire(&SL, true, 0.3);
    char *out = cap_end();
    cr_expect_eq(rc, CONC_ETIMEDOUT, "no cycle: SL is not held by \"stale\": got %d", rc);
    cr_expect_eq(count(out, "deadlock"), 0, "nothing reported");
    free(out);
    conc_lock_release(&SM);
    cr_assert_eq(conc_thread_join(t, 10, NULL), 0);
    conc_thread_free(t);
    cr_expect_eq(trc, 0);
    cr_assert_eq(conc_lock_release(&SL), 0);
    conc_debug_disable(CONC_DEBUG_DEADLOCK);
    conc_debug_set_delay(0.1);
}

/* ------------------------------------------------ process-shared locks
 * A shared Lock/RLock is seen by this process at its address here:
 * lock-order edges like any lock, and in the wait-for graph while a
 * context of this process holds it (observe/shlock.c's side table). */

typedef struct {
    conc_plock_t *sh;
    conc_lock_t *l;
    bool shared_first;
} mixed_t;

static void *take_mixed(void *arg)
{
    mixed_t *m = arg;
    if (m->shared_first) {
        conc_plock_acquire(m->sh, true, CONC_FOREVER);
        conc_lock_acquire(m->l, true, CONC_FOREVER);
        conc_lock_release(m->l);
        conc_plock_release(m->sh);
    } else {
        conc_lock_acquire(m->l, true, CONC_FOREVER);
        conc_plock_acquire(m->sh, true, CONC_FOREVER);
        conc_plock_release(m->sh);
        conc_lock_release(m->l);
    }
    return NULL;
}

Test(lockorder, shared_lock_and_lock_abba_reported_once, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    cr_assert_eq(conc_debug_enable(CONC_DEBUG_LOCKORDER), 0);
    conc_plock_t *sh;
    cr_assert_eq(conc_plock_new(&sh), 0);
    conc_lock_t l = CONC_LOCK_INIT;
    cap_begin();
    mixed_t sf = {sh, &l, true}, lf = {sh, &l, false};
    run("shared-first", take_mixed, &sf);
    run("lock-first", take_mixed, &lf); /* closes the cycle */
    run("again", take_mixed, &lf);
    run("again2", take_mixed, &sf);
    char *out = cap_end();
    cr_expect_eq(count(out, "lock-order inversion"), 1, "%s", out);
    char wsh[64];
    snprintf(wsh, sizeof wsh, "%p", (void *)sh);
    cr_expect(strstr(out, wsh), "the shared lock's address: %s", out);
    cr_expect(strstr(out, "lock-first takes") && strstr(out, "earlier shared-first took"), "%s", out);
    free(out);
    conc_debug_forget(sh);
    conc_debug_forget(&l);
    conc_shared_free(sh);
}

typedef struct {
    conc_plock_t *first, *second;
    conc_barrier_t *bar;
    int rc;
} sh_arg_t;

static void *sh_take_two(void *arg)
{
    sh_arg_t *a = arg;
    conc_plock_acquire(a->first, true, CONC_FOREVER);
    if (a->bar)
        conc_barrier_wait(a->bar, 10, NULL);
    else {
        conc_yield(); /* green: both hold their first lock */
        conc_yield();
    }
    a->rc = conc_plock_acquire(a->second, true, 20);
    if (a->rc == 0)
        conc_plock_release(a->second);
    conc_plock_release(a->first); /* backs off: the other proceeds */
    return NULL;
}

static void shared_abba(bool green)
{
    conc_debug_enable(CONC_DEBUG_DEADLOCK);
    conc_plock_t *a, *b;
    cr_assert_eq(conc_plock_new(&a), 0);
    cr_assert_eq(conc_plock_new(&b), 0);
    conc_barrier_t bar;
    conc_barrier_init(&bar, 2, NULL, NULL, 10);
    sh_arg_t args[2] = {{a, b, green ? NULL : &bar, -1}, {b, a, green ? NULL : &bar, -1}};
    cap_begin();
    double t0 = tu_now();
    if (green) {
        conc_green_t *g[2];
        cr_assert_eq(conc_go(&g[0], sh_take_two, &args[0]), 0);
        cr_assert_eq(conc_go(&g[1], sh_take_two, &args[1]), 0);
        cr_assert_eq(conc_green_join(g[0], 30), 0);
        cr_assert_eq(conc_green_join(g[1], 30), 0);
        conc_green_free(g[0]);
        conc_green_free(g[1]);
    } else {
        conc_thread_t *t0_ = start("sh-0", sh_take_two, &args[0]);
        conc_thread_t *t1_ = start("sh-1", sh_take_two, &args[1]);
        cr_assert_eq(conc_thread_join(t0_, 30, NULL), 0);
        cr_assert_eq(conc_thread_join(t1_, 30, NULL), 0);
        conc_thread_free(t0_);
        conc_thread_free(t1_);
    }
    double took = tu_now() - t0;
    char *out = cap_end();
    cr_expect_eq((args[0].rc == CONC_EDEADLK) + (args[1].rc == CONC_EDEADLK), 1, "rc %d %d", args[0].rc,
                 args[1].rc);
    cr_expect_eq((args[0].rc == 0) + (args[1].rc == 0), 1, "the other proceeds: rc %d %d", args[0].rc,
                 args[1].rc);
    cr_expect_eq(count(out, "deadlock detected"), 1, "%s", out);
    cr_expect(took < 10, "found in %.2f s", took);
    char w[64];
    snprintf(w, sizeof w, "waits for shared Lock %p", (void *)a);
    cr_expect(strstr(out, w) && !strstr(out, "shared word"), "named by kind (%s): %s", w, out);
    free(out);
    conc_shared_free(a);
    conc_shared_free(b);
}

Test(deadlock, shared_locks_abba_two_threads, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    shared_abba(false);
}

Test(deadlock, shared_locks_abba_green_threads, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    shared_abba(true);
}

Test(deadlock, shared_lock_self_relock, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    conc_debug_enable(CONC_DEBUG_DEADLOCK);
    conc_plock_t *a;
    cr_assert_eq(conc_plock_new(&a), 0);
    cr_assert_eq(conc_plock_acquire(a, true, CONC_FOREVER), 0);
    cap_begin();
    cr_expect_eq(conc_plock_acquire(a, true, 5), CONC_EDEADLK);
    cr_expect_eq(conc_plock_acquire(a, false, CONC_FOREVER), CONC_ETIMEDOUT, "non-blocking: just busy");
    free(cap_end());
    cr_expect_eq(conc_plock_release(a), 0);
    conc_shared_free(a);
}

/* A shared Lock taken with detection on, released with it off, then taken
 * by another thread of this process (its word names only the pid, the
 * same as before): the old acquirer must not be taken for the holder. */
static void *sh_take_and_keep(void *arg)
{
    cr_assert_eq(conc_plock_acquire((conc_plock_t *)arg, true, CONC_FOREVER), 0);
    return NULL; /* a Lock: another thread may release it */
}

Test(deadlock, shared_lock_stale_entry_is_not_the_holder, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    conc_debug_set_delay(0.05);
    conc_debug_enable(CONC_DEBUG_DEADLOCK);
    conc_plock_t *a;
    cr_assert_eq(conc_plock_new(&a), 0);
    cr_assert_eq(conc_plock_acquire(a, true, CONC_FOREVER), 0);
    conc_debug_disable(CONC_DEBUG_DEADLOCK);
    cr_assert_eq(conc_plock_release(a), 0); /* with detection off */
    run("keeper", sh_take_and_keep, a);
    conc_debug_enable(CONC_DEBUG_DEADLOCK);
    cap_begin();
    int rc = conc_plock_acquire(a, true, 0.3);
    char *out = cap_end();
    cr_expect_eq(rc, CONC_ETIMEDOUT, "held by the keeper, not by this thread: got %d", rc);
    cr_expect_eq(count(out, "deadlock"), 0, "nothing reported: %s", out);
    free(out);
    cr_assert_eq(conc_plock_release(a), 0);
    conc_shared_free(a);
}

/* ------------------------------------------------ mend: windows, overflow */

#include "sync/internal.h"

/* A debug acquire by another thread, paused between taking the Lock and
 * marking it TRACKED, while this thread's serial is still in the owner word
 * (from an acquire made with debugging off): that must not read as "held
 * by this thread" (a false CONC_EDEADLK). */
static conc_lock_t WL = CONC_LOCK_INIT;
static _Atomic int w_paused, w_go;
static void pause_in_window(conc_lock_t *l)
{
    if (l != &WL)
        return;
    atomic_store(&w_paused, 1);
    while (!atomic_load(&w_go))
        tu_sleep(0.001);
}
static void *take_wl(void *arg)
{
    (void)arg;
    conc_lock_acquire(&WL, true, CONC_FOREVER);
    conc_lock_release(&WL);
    return NULL;
}

Test(deadlock, owner_is_written_before_tracked, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    cr_assert_eq(conc_lock_acquire(&WL, true, 5.0), 0); /* slow path: the owner word is this thread */
    cr_assert_eq(conc_lock_release(&WL), 0);
    conc_debug_set_delay(0.05);
    conc_debug_enable(CONC_DEBUG_DEADLOCK);
    conc__lock_dbg_test_hook = pause_in_window;
    conc_thread_t *t = start("taker", take_wl, NULL);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&w_paused), 10.0));
    int rc = conc_lock_acquire(&WL, true, 0.2);
    atomic_store(&w_go, 1);
    cr_assert_eq(conc_thread_join(t, 10, NULL), 0);
    conc_thread_free(t);
    conc__lock_dbg_test_hook = NULL;
    conc_debug_disable(CONC_DEBUG_DEADLOCK);
    conc_debug_set_delay(0.1);
    cr_expect_eq(rc, CONC_ETIMEDOUT, "held by the taker: got %d", rc);
}

/* With lock debugging on, a Condition over a Lock marks the Lock as
 * taken (TRACKED, owner) after its wait's relock — unless the Lock was
 * released meanwhile (any thread may release a Lock; here the test hook
 * does, in that window): a free Lock must not carry TRACKED. */
static conc_lock_t CL = CONC_LOCK_INIT;
static _Atomic int cl_released;
static void release_in_window(conc_lock_t *l)
{
    if (l == &CL && !atomic_exchange(&cl_released, 1))
        conc_lock_release(l);
}

Test(deadlock, cond_relock_released_in_the_window_leaves_no_tracked_bit, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    conc_cond_t c;
    cr_assert_eq(conc_cond_init(&c, &CL), 0);
    cr_assert_eq(conc_debug_enable(CONC_DEBUG_LOCKORDER), 0);
    cr_assert_eq(conc_lock_acquire(&CL, true, CONC_FOREVER), 0);
    cr_expect_eq(CL.state, 1u | 4u, "taken with debugging on: LOCKED | TRACKED, got %#x", CL.state);
    atomic_store(&cl_released, 0);
    conc__lock_dbg_test_hook = release_in_window;
    int rc = conc_cond_wait(&c, 0.01); /* times out, relocks; the hook releases */
    conc__lock_dbg_test_hook = NULL;
    unsigned st = CL.state;
    cr_expect_eq(rc, CONC_ETIMEDOUT);
    cr_expect(atomic_load(&cl_released), "the relock did not pass the hook");
    cr_expect_eq(st, 0u, "a free lock with bits left: %#x", st);
    cr_assert_eq(conc_lock_acquire(&CL, false, CONC_FOREVER), 0);
    cr_expect_eq(CL.state, 1u | 4u, "taken again: LOCKED | TRACKED, got %#x", CL.state);
    cr_assert_eq(conc_lock_release(&CL), 0);
    cr_expect_eq(CL.state, 0u);
    conc_debug_disable(CONC_DEBUG_LOCKORDER);
    conc_debug_forget(&CL);
}

/* More Locks held than lockdep's held stack has room for (32), released
 * out of order: the stack must not keep a released lock (which would make
 * a false lock-order edge and report). */
Test(lockorder, held_stack_overflow_released_out_of_order, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    enum { N = 40 };
    static conc_lock_t many[N], X = CONC_LOCK_INIT;
    for (int i = 0; i < N; i++)
        conc_lock_init(&many[i]);
    cr_assert_eq(conc_debug_enable(CONC_DEBUG_LOCKORDER), 0);
    cap_begin();
    for (int i = 0; i < N; i++)
        cr_assert_eq(conc_lock_acquire(&many[i], true, CONC_FOREVER), 0);
    for (int i = 0; i < N; i++) /* oldest first: not the stack's order */
        cr_assert_eq(conc_lock_release(&many[i]), 0);
    /* nothing is held now: taking X, then each of them, is one order (a
     * lock still on the stack would also have been taken before X) */
    for (int k = 0; k < N; k++) {
        cr_assert_eq(conc_lock_acquire(&X, true, CONC_FOREVER), 0);
        cr_assert_eq(conc_lock_acquire(&many[k], true, CONC_FOREVER), 0);
        cr_assert_eq(conc_lock_release(&many[k]), 0);
        cr_assert_eq(conc_lock_release(&X), 0);
    }
    char *out = cap_end();
    conc_debug_disable(CONC_DEBUG_LOCKORDER);
    for (int i = 0; i < N; i++)
        conc_debug_forget(&many[i]);
    conc_debug_forget(&X);
    cr_expect_eq(count(out, "lock-order inversion"), 0, "%s", out);
    free(out);
}

/* Backtraces name functions that are not exported (static ones, a program
 * linked without -rdynamic) from the file's symbol table. */
Test(lockorder, report_names_static_functions, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    static conc_lock_t P = CONC_LOCK_INIT, Q = CONC_LOCK_INIT;
    cr_assert_eq(conc_debug_enable(CONC_DEBUG_LOCKORDER), 0);
    cap_begin();
    pair_t pq = {&P, &Q}, qp = {&Q, &P};
    run("first", take_two, &pq);
    run("second", take_two, &qp);
    char *out = cap_end();
    conc_debug_disable(CONC_DEBUG_LOCKORDER);
    conc_debug_forget(&P);
    conc_debug_forget(&Q);
    cr_expect_eq(count(out, "lock-order inversion"), 1, "%s", out);
    cr_expect(strstr(out, "(take_two+0x"), "a static function unnamed in: %s", out);
    free(out);
}

/* A BoundedSemaphore(1) in shared memory is a lock by another name: it is
 * in the lock-order graph and the wait-for graph like a shared Lock, and
 * reports name shared locks by their kind and name. */
typedef struct {
    conc_psemaphore_t *sem;
    conc_prlock_t *r;
    conc_barrier_t *bar;
    bool sem_first;
    int rc;
} semr_t;

static void *take_sem_r(void *arg)
{
    semr_t *a = arg;
    if (a->sem_first) {
        conc_psemaphore_acquire(a->sem, true, CONC_FOREVER);
        if (a->bar)
            conc_barrier_wait(a->bar, 10, NULL);
        if ((a->rc = conc_prlock_acquire(a->r, true, 20)) == 0)
            conc_prlock_release(a->r);
        conc_psemaphore_release(a->sem, 1);
    } else {
        conc_prlock_acquire(a->r, true, CONC_FOREVER);
        if (a->bar)
            conc_barrier_wait(a->bar, 10, NULL);
        if ((a->rc = conc_psemaphore_acquire(a->sem, true, 20)) == 0)
            conc_psemaphore_release(a->sem, 1);
        conc_prlock_release(a->r);
    }
    return NULL;
}

Test(lockorder, shared_semaphore_of_one_is_a_lock, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    cr_assert_eq(conc_debug_enable(CONC_DEBUG_LOCKORDER), 0);
    conc_psemaphore_t *sem, *sem2;
    conc_prlock_t *r;
    cr_assert_eq(conc_psemaphore_new(1, true, &sem), 0);
    cr_assert_eq(conc_psemaphore_new(2, true, &sem2), 0); /* not a lock */
    cr_assert_eq(conc_prlock_new(&r), 0);
    conc_set_name(sem, "slots");
    cap_begin();
    semr_t sf = {sem, r, NULL, true, -1}, rf = {sem, r, NULL, false, -1};
    run("sem-first", take_sem_r, &sf);
    run("rlock-first", take_sem_r, &rf); /* closes the cycle */
    semr_t sf2 = {sem2, r, NULL, true, -1}, rf2 = {sem2, r, NULL, false, -1};
    run("sem2-first", take_sem_r, &sf2);
    run("rlock-first2", take_sem_r, &rf2); /* a Semaphore(2) is no lock: no edge */
    char *out = cap_end();
    cr_expect_eq(count(out, "lock-order inversion"), 1, "%s", out);
    char w[96];
    snprintf(w, sizeof w, "shared Semaphore %p \"slots\"", (void *)sem);
    cr_expect(strstr(out, w), "named by kind and name (%s): %s", w, out);
    snprintf(w, sizeof w, "shared RLock %p", (void *)r);
    cr_expect(strstr(out, w), "named by kind (%s): %s", w, out);
    cr_expect(!strstr(out, "shared word"), "%s", out);
    free(out);
    conc_debug_forget(sem);
    conc_debug_forget(r);
    conc_debug_disable(CONC_DEBUG_LOCKORDER);
    conc_shared_free(sem);
    conc_shared_free(sem2);
    conc_shared_free(r);
}

Test(deadlock, shared_semaphore_and_rlock_abba, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    conc_debug_set_delay(0.05);
    conc_debug_enable(CONC_DEBUG_DEADLOCK);
    conc_psemaphore_t *sem;
    conc_prlock_t *r;
    cr_assert_eq(conc_psemaphore_new(1, true, &sem), 0);
    cr_assert_eq(conc_prlock_new(&r), 0);
    conc_set_name(r, "table");
    conc_barrier_t bar;
    conc_barrier_init(&bar, 2, NULL, NULL, 10);
    semr_t a = {sem, r, &bar, true, -1}, b = {sem, r, &bar, false, -1};
    cap_begin();
    double t0 = tu_now();
    conc_thread_t *ta = start("sem-side", take_sem_r, &a);
    conc_thread_t *tb = start("rlock-side", take_sem_r, &b);
    cr_assert_eq(conc_thread_join(ta, 30, NULL), 0);
    cr_assert_eq(conc_thread_join(tb, 30, NULL), 0);
    conc_thread_free(ta);
    conc_thread_free(tb);
    double took = tu_now() - t0;
    char *out = cap_end();
    cr_expect_eq((a.rc == CONC_EDEADLK) + (b.rc == CONC_EDEADLK), 1, "rc %d %d: %s", a.rc, b.rc, out);
    cr_expect_eq((a.rc == 0) + (b.rc == 0), 1, "the other proceeds: rc %d %d", a.rc, b.rc);
    cr_expect(took < 10, "found in %.2f s", took);
    char w[96];
    snprintf(w, sizeof w, "waits for shared Semaphore %p, held by", (void *)sem);
    cr_expect(strstr(out, w), "(%s): %s", w, out);
    snprintf(w, sizeof w, "waits for shared RLock %p \"table\", held by", (void *)r);
    cr_expect(strstr(out, w), "(%s): %s", w, out);
    cr_expect(!strstr(out, "shared word"), "%s", out);
    free(out);
    conc_set_name(r, NULL);
    conc_debug_disable(CONC_DEBUG_DEADLOCK);
    conc_debug_set_delay(0.1);
    conc_shared_free(sem);
    conc_shared_free(r);
}

/* ------------------------------------------------ a holder that ends during a walk */

/* Deterministic: the registry's test hook runs right after a lookup found
 * the green thread that holds a Lock (its hub's guard released); the hook
 * lets that green thread release, end and be freed before it returns.
 * Whatever the detector or the dump reads of it afterwards is a use after
 * free, which ASan reports (a freed green thread's record is poisoned);
 * they must use only the copy the lookup made. Both walks: the detector's
 * check of a waiting thread, and conc_dump's line for a blocked one. */
static conc_lock_t UE_L = CONC_LOCK_INIT;
static conc_event_t ue_go, ue_holding;
static const void *ue_target; /* the green holder's context */
static int ue_ended, ue_hooked;

static void ue_hook(const conc__ctx_t *found)
{
    const void *t = __atomic_load_n(&ue_target, __ATOMIC_ACQUIRE);
    if (!t || (const void *)found != t ||
        !__atomic_compare_exchange_n(&ue_target, &t, NULL, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return;
    __atomic_store_n(&ue_hooked, 1, __ATOMIC_RELEASE);
    conc_event_set(&ue_go); /* the holder releases and ends */
    double t0 = tu_now();
    while (!__atomic_load_n(&ue_ended, __ATOMIC_ACQUIRE) && tu_now() - t0 < 10)
        tu_sleep(0.001);
    tu_sleep(0.05); /* its hub frees it right after switching away */
}

static void *ue_green(void *arg)
{
    (void)arg;
    conc_lock_acquire(&UE_L, true, CONC_FOREVER);
    __atomic_store_n(&ue_target, (const void *)conc__ctx(), __ATOMIC_RELEASE);
    conc_event_set(&ue_holding);
    conc_event_wait(&ue_go, 20);
    conc_lock_release(&UE_L);
    __atomic_store_n(&ue_ended, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void *ue_hub(void *arg)
{
    (void)arg;
    conc_go(NULL, ue_green, NULL); /* detached: freed when it ends */
    while (!__atomic_load_n(&ue_ended, __ATOMIC_ACQUIRE))
        conc_sleep(0.001);
    conc_sleep(0.1);
    return NULL;
}

static void *ue_wait(void *arg)
{
    (void)arg;
    if (conc_lock_acquire(&UE_L, true, 20) == 0)
        conc_lock_release(&UE_L);
    return NULL;
}

static void ue_phase(bool dump)
{
    conc_event_init(&ue_go);
    conc_event_init(&ue_holding);
    __atomic_store_n(&ue_ended, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&ue_hooked, 0, __ATOMIC_RELEASE);
    conc_debug_set_delay(dump ? 60 : 0.02); /* the dump phase: no checks of their own */
    conc_debug_enable(CONC_DEBUG_DEADLOCK);
    conc_thread_t *hub = start("ue-hub", ue_hub, NULL);
    cr_assert_eq(conc_event_wait(&ue_holding, 10), 0);
    conc_thread_t *w = NULL;
    if (dump) {
        w = start("ue-waiter", ue_wait, NULL);
        tu_sleep(0.1); /* blocked on UE_L by now */
        __atomic_store_n(&conc__reg_found_hook, ue_hook, __ATOMIC_RELEASE);
        FILE *f = fopen("/dev/null", "w");
        cr_assert(f);
        conc_dump(f);
        fclose(f);
    } else {
        __atomic_store_n(&conc__reg_found_hook, ue_hook, __ATOMIC_RELEASE);
        int rc = conc_lock_acquire(&UE_L, true, 10);
        cr_expect_eq(rc, 0, "the holder ended and released it: got %d", rc);
        if (rc == 0)
            conc_lock_release(&UE_L);
    }
    __atomic_store_n(&conc__reg_found_hook, NULL, __ATOMIC_RELEASE);
    cr_expect(__atomic_load_n(&ue_hooked, __ATOMIC_ACQUIRE), "the walk found the green holder");
    conc_event_set(&ue_go);
    if (w) {
        cr_assert_eq(conc_thread_join(w, 30, NULL), 0);
        conc_thread_free(w);
    }
    cr_assert_eq(conc_thread_join(hub, 30, NULL), 0);
    conc_thread_free(hub);
    conc_debug_disable(CONC_DEBUG_DEADLOCK);
    conc_debug_set_delay(0.1);
}

Test(deadlock, holder_ends_during_the_walk, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    ue_phase(false); /* the detector */
    ue_phase(true);  /* conc_dump */
}

/* ------------------------------------------------ walks racing ending green threads */

/* The detector and the dump look a Lock's holder up in the registry; a
 * green holder may end and be freed (its stack reused) right after. They
 * must copy what they need while the hub pins it, never read it after:
 * under ASan a freed green thread's record is poisoned, so a late read is
 * a use after free. Bounded stress: one hub spawns short green threads
 * that take WLK; two OS threads wait on WLK with a 1 µs detection delay
 * (a check per slice) and dump in a loop. */
static conc_lock_t WLK = CONC_LOCK_INIT;
static int wl_stop, wl_live;

static void *wl_green(void *arg)
{
    (void)arg;
    if (conc_lock_acquire(&WLK, true, 5) == 0) {
        conc_yield();
        conc_lock_release(&WLK);
    }
    __atomic_fetch_sub(&wl_live, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void *wl_hub(void *arg)
{
    (void)arg;
    while (!__atomic_load_n(&wl_stop, __ATOMIC_ACQUIRE)) {
        for (int i = 0; i < 16; i++)
            if (conc_go(NULL, wl_green, NULL) == 0) /* detached: freed when it ends */
                __atomic_fetch_add(&wl_live, 1, __ATOMIC_RELAXED);
        for (int i = 0; i < 64; i++)
            conc_yield();
    }
    while (__atomic_load_n(&wl_live, __ATOMIC_ACQUIRE)) /* the last ones end */
        conc_sleep(0.001);
    return NULL;
}

static void *wl_waiter(void *arg)
{
    (void)arg;
    while (!__atomic_load_n(&wl_stop, __ATOMIC_ACQUIRE))
        if (conc_lock_acquire(&WLK, true, 0.002) == 0)
            conc_lock_release(&WLK);
    return NULL;
}

static void *wl_dumper(void *arg)
{
    FILE *f = arg;
    while (!__atomic_load_n(&wl_stop, __ATOMIC_ACQUIRE)) {
        conc_dump(f);
        rewind(f);
    }
    return NULL;
}

Test(deadlock, walks_race_ending_green_threads, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    FILE *devnull = fopen("/dev/null", "w");
    cr_assert(devnull);
    conc_debug_enable(CONC_DEBUG_DEADLOCK);
    conc_debug_set_delay(1e-6);
    __atomic_store_n(&wl_stop, 0, __ATOMIC_RELEASE);
    conc_thread_t *hub = start("wl-hub", wl_hub, NULL);
    conc_thread_t *w1 = start("wl-wait1", wl_waiter, NULL);
    conc_thread_t *w2 = start("wl-wait2", wl_waiter, NULL);
    conc_thread_t *d = start("wl-dump", wl_dumper, devnull);
    tu_sleep(TU_SANITIZED ? 1.0 : 0.5);
    __atomic_store_n(&wl_stop, 1, __ATOMIC_RELEASE);
    conc_thread_t *ts[] = {hub, w1, w2, d};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(conc_thread_join(ts[i], 20, NULL), 0);
        conc_thread_free(ts[i]);
    }
    conc_debug_set_delay(0.1);
    conc_debug_disable(CONC_DEBUG_DEADLOCK);
    fclose(devnull);
}

/* ------------------------------------------------ the shared-lock hooks
 * observe/shlock.c's hooks (conc__shlock_*), called directly on plain
 * 64-bit words standing for shared locks' owner pairs: what the ipc
 * locks call while lock debugging is on, one by one. */

static uint64_t sh_words[256];

static void *sh_holder_elsewhere(void *arg)
{
    uint64_t *w = arg;
    /* another context: the holder is named, but it is not "mine" here */
    uint32_t s = conc__shlock_holder(w, NULL);
    bool mine = conc__shlock_mine(w, *w);
    return (void *)(uintptr_t)(s && !mine && s != conc__ctx()->serial);
}

Test(shlock, hooks_record_name_and_forget_holders, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    uint64_t *w = &sh_words[0];
    uint32_t me = conc__ctx()->serial;
    cr_assert_neq(me, 0u);
    int kind = -1;

    /* detection off: nothing is recorded, nothing named */
    *w = 0x1234;
    conc__shlock_acquired(w, CONC__WAIT_SHARED_LOCK, 0x1234);
    cr_assert_eq(conc__shlock_holder(w, &kind), 0u);
    cr_assert_eq(kind, -1, "kind untouched when there is no holder");
    cr_assert_eq(conc__shlock_kind(w), 0);
    cr_assert_not(conc__shlock_mine(w, 0x1234));
    conc__shlock_released(w);

    cr_assert_eq(conc_debug_enable(CONC_DEBUG_DEADLOCK), 0);
    /* unknown words and NULL: no holder, no kind; an unknown word is not read */
    cr_assert_eq(conc__shlock_holder(NULL, NULL), 0u);
    cr_assert_eq(conc__shlock_kind(NULL), 0);
    cr_assert_eq(conc__shlock_holder(&sh_words[1], NULL), 0u);

    /* recorded: named while the word still holds the recorded pair */
    conc__shlock_acquired(w, CONC__WAIT_SHARED_LOCK, 0x1234);
    cr_assert_eq(conc__shlock_holder(w, &kind), me);
    cr_assert_eq(kind, CONC__WAIT_SHARED_LOCK);
    cr_assert_eq(conc__shlock_kind(w), CONC__WAIT_SHARED_LOCK);
    cr_assert(conc__shlock_mine(w, 0x1234));
    cr_assert_not(conc__shlock_mine(w, 0x1235), "another pair is not mine");
    void *r;
    conc_thread_t *t = start("elsewhere", sh_holder_elsewhere, w);
    cr_assert_eq(conc_thread_join(t, 30, &r), 0);
    conc_thread_free(t);
    cr_assert_eq((uintptr_t)r, 1u, "another thread sees the holder but not as its own");
    /* the word changed (released elsewhere, another incarnation): stale */
    *w = 0x9999;
    cr_assert_eq(conc__shlock_holder(w, NULL), 0u);
    cr_assert_not(conc__shlock_mine(w, 0x1234));
    cr_assert_not(conc__shlock_mine(w, 0x9999), "the pair is right, the table is not");
    cr_assert_eq(conc__shlock_kind(w), CONC__WAIT_SHARED_LOCK, "the entry stays until released");
    /* recorded again (the same entry, new pair and kind); one release clears it */
    conc__shlock_acquired(w, CONC__WAIT_SHARED_RLOCK, 0x9999);
    cr_assert_eq(conc__shlock_holder(w, &kind), me);
    cr_assert_eq(kind, CONC__WAIT_SHARED_RLOCK);
    conc__shlock_released(w);
    cr_assert_eq(conc__shlock_holder(w, NULL), 0u);
    cr_assert_eq(conc__shlock_kind(w), 0);
    cr_assert_not(conc__shlock_mine(w, 0x9999));
    conc__shlock_released(w); /* releasing an unknown word is harmless */

    /* a semaphore's word: held while its value (low 32 bits) is 0, however
     * many sleepers the high half counts */
    uint64_t *s = &sh_words[2];
    *s = 0;
    conc__shlock_acquired(s, CONC__WAIT_SHARED_SEM, 0);
    *s = (uint64_t)3 << 32;
    cr_assert_eq(conc__shlock_holder(s, &kind), me);
    cr_assert_eq(kind, CONC__WAIT_SHARED_SEM);
    *s = ((uint64_t)3 << 32) | 1; /* a unit is back: nobody holds it */
    cr_assert_eq(conc__shlock_holder(s, NULL), 0u);
    /* a Lock's word is compared whole: the high half counts there */
    *w = 0x77;
    conc__shlock_acquired(w, CONC__WAIT_SHARED_LOCK, 0x77);
    *w = ((uint64_t)1 << 32) | 0x77;
    cr_assert_eq(conc__shlock_holder(w, NULL), 0u);
    *w = 0x77;

    /* many words, so buckets chain: releasing some keeps the others */
    for (int i = 8; i < 256; i++) {
        sh_words[i] = (uint64_t)i;
        conc__shlock_acquired(&sh_words[i], CONC__WAIT_SHARED_LOCK, (uint64_t)i);
    }
    for (int i = 8; i < 256; i += 3)
        conc__shlock_released(&sh_words[i]);
    for (int i = 8; i < 256; i++)
        cr_assert_eq(conc__shlock_holder(&sh_words[i], NULL), (i - 8) % 3 ? me : 0u, "word %d", i);

    /* switched off: every entry forgotten (stale otherwise), none named
     * when switched on again */
    cr_assert_eq(conc_debug_disable(CONC_DEBUG_DEADLOCK), 0);
    cr_assert_eq(conc_debug_enable(CONC_DEBUG_DEADLOCK), 0);
    cr_assert_eq(conc__shlock_holder(w, NULL), 0u);
    cr_assert_eq(conc__shlock_holder(s, NULL), 0u);
    for (int i = 8; i < 256; i++)
        cr_assert_eq(conc__shlock_holder(&sh_words[i], NULL), 0u, "word %d", i);
    conc_debug_disable(CONC_DEBUG_DEADLOCK);
}

/* With lock-order checking on, the hooks feed the lock-order graph: two
 * words taken in both orders are one inversion; a release takes a word
 * off the held stack (no edge from it afterwards). */
Test(shlock, hooks_feed_the_lock_order_graph, .timeout = TU_TIMEOUT)
{
    NEED_OBSERVE();
    cr_assert_eq(conc_debug_enable(CONC_DEBUG_LOCKORDER), 0);
    uint64_t *x = &sh_words[3], *y = &sh_words[4], *z = &sh_words[5];
    cap_begin();
    conc__shlock_acquired(x, CONC__WAIT_SHARED_LOCK, 1);
    conc__shlock_released(x);
    /* x was released: no edge x -> z, so z -> x closes no cycle */
    conc__shlock_acquired(z, CONC__WAIT_SHARED_LOCK, 1);
    conc__shlock_acquired(x, CONC__WAIT_SHARED_LOCK, 1);
    conc__shlock_released(x);
    conc__shlock_released(z);
    conc__shlock_acquired(x, CONC__WAIT_SHARED_LOCK, 1); /* x -> y */
    conc__shlock_acquired(y, CONC__WAIT_SHARED_RLOCK, 1);
    conc__shlock_released(y);
    conc__shlock_released(x);
    char *quiet = cap_end();
    cr_expect_eq(count(quiet, "lock-order inversion"), 0, "a released lock left an edge: %s", quiet);
    free(quiet);
    cap_begin();
    conc__shlock_acquired(y, CONC__WAIT_SHARED_RLOCK, 1); /* y -> x: closes the cycle */
    conc__shlock_acquired(x, CONC__WAIT_SHARED_LOCK, 1);
    conc__shlock_released(x);
    conc__shlock_released(y);
    char *out = cap_end();
    cr_expect_eq(count(out, "lock-order inversion"), 1, "%s", out);
    free(out);
    conc_debug_forget(x), conc_debug_forget(y), conc_debug_forget(z);
    conc_debug_disable(CONC_DEBUG_LOCKORDER);
}
