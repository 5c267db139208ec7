/*
 * gevent.wait / iwait over mixed waitables and gevent.joinall with count
 * and raise_error (issue 17), ported from gevent's test__wait.py,
 * test__iwait.py (test_noiter, test_iwait_partial, test_count,
 * test_timeout) and test__joinall.py / test__greenlet.py (joinall
 * raise_error, count). Colorless: the caller may be the main context or a
 * green thread, and a kill or a Timeout scope cuts the wait.
 */
#include <fcntl.h>
#include <unistd.h>

#include "test_util.h"

#define PTR(x) ((void *)(uintptr_t)(x))
#define INT(p) ((int)(uintptr_t)(p))

static void *nap(void *arg)
{
    conc_sleep(INT(arg) / 1000.0);
    return arg;
}

static void *fail_after(void *arg)
{
    conc_sleep(INT(arg) / 1000.0);
    return conc_fail(CONC_EBROKEN, "late failure");
}

static conc_event_t ev;
static void *set_later(void *arg)
{
    conc_sleep(INT(arg) / 1000.0);
    conc_event_set(&ev);
    return NULL;
}

static conc_queue_t *wq;
static void *put_later(void *arg)
{
    conc_sleep(INT(arg) / 1000.0);
    conc_queue_put(wq, PTR(1), true, 1);
    return NULL;
}

static int wfd[2];
static void *write_later(void *arg)
{
    conc_sleep(INT(arg) / 1000.0);
    if (write(wfd[1], "x", 1) != 1)
        return PTR(1);
    return NULL;
}

static void *future_later(void *arg)
{
    conc_sleep(INT(arg) / 1000.0);
    return PTR(3);
}

Test(green_wait, mixed_in_completion_order, .timeout = TU_TIMEOUT)
{
    conc_event_init(&ev);
    cr_assert_eq(conc_queue_new(&wq, CONC_FIFO, 0), 0);
    cr_assert_eq(pipe(wfd), 0);
    conc_executor_t *ex;
    cr_assert_eq(conc_thread_pool_new(&ex, NULL), 0);
    conc_future_t *f;
    cr_assert_eq(conc_submit(ex, &f, future_later, PTR(90)), 0);
    conc_green_t *g, *h[3];
    cr_assert_eq(conc_go(&g, nap, PTR(10)), 0);
    cr_assert_eq(conc_go(&h[0], set_later, PTR(50)), 0);
    cr_assert_eq(conc_go(&h[1], put_later, PTR(130)), 0);
    cr_assert_eq(conc_go(&h[2], write_later, PTR(170)), 0);
    conc_event_t already;
    conc_event_init(&already);
    conc_event_set(&already);
    conc_waitable_t objs[6] = {
        {.kind = CONC_WAITABLE_FD, .fd = wfd[0]},
        {.kind = CONC_WAITABLE_QUEUE, .obj = wq},
        {.kind = CONC_WAITABLE_FUTURE, .obj = f},
        {.kind = CONC_WAITABLE_EVENT, .obj = &ev},
        {.kind = CONC_WAITABLE_GREEN, .obj = g},
        {.kind = CONC_WAITABLE_EVENT, .obj = &already},
    };
    size_t ready[6], nready = 9;
    cr_assert_eq(conc_green_wait(objs, 6, 0, 10, ready, &nready), 0);
    cr_assert_eq(nready, 6);
    size_t want[6] = {5, 4, 3, 2, 1, 0}; /* already set first, then by time (40 ms apart: a loaded machine delays each by more than 15) */
    for (int i = 0; i < 6; i++)
        cr_assert_eq(ready[i], want[i], "ready[%d] = %zu", i, ready[i]);
    void *item;
    cr_assert_eq(conc_queue_qsize(wq), 1, "nothing consumed");
    cr_assert(conc_event_is_set(&ev));
    cr_assert_eq(conc_queue_get(wq, &item, false, 0), 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(conc_green_join(h[i], 5), 0);
        conc_green_free(h[i]);
    }
    conc_green_free(g);
    conc_future_free(f);
    conc_executor_free(ex);
    close(wfd[0]);
    close(wfd[1]);
    conc_queue_free(wq, NULL);
}

Test(green_wait, count_and_timeout, .timeout = TU_TIMEOUT)
{
    conc_green_t *gs[3];
    int ms[3] = {50, 5, 5000};
    conc_waitable_t objs[3];
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(conc_go(&gs[i], nap, PTR(ms[i])), 0);
        objs[i] = (conc_waitable_t){.kind = CONC_WAITABLE_GREEN, .obj = gs[i]};
    }
    size_t ready[3], n;
    cr_assert_eq(conc_green_wait(objs, 3, 1, 5, ready, &n), 0);
    cr_assert_eq(n, 1, "count = 1");
    cr_assert_eq(ready[0], 1);
    double t0 = tu_now();
    cr_assert_eq(conc_green_wait(objs, 3, 0, 0.1, ready, &n), 0, "a timeout returns what is ready");
    tu_assert_timeout(tu_now() - t0, 0.1);
    cr_assert_eq(n, 2);
    cr_assert_eq(ready[0], 1);
    cr_assert_eq(ready[1], 0);
    cr_assert_eq(conc_green_wait(objs, 3, 0, 0, ready, &n), 0, "a poll");
    cr_assert_eq(n, 2);
    cr_assert_eq(conc_green_wait(objs, 3, 0, NAN, ready, &n), CONC_EINVAL);
    conc_waitable_t bad = {.kind = 99, .obj = gs[0]};
    cr_assert_eq(conc_green_wait(&bad, 1, 0, 1, ready, &n), CONC_EINVAL);
    cr_assert_eq(conc_green_wait(objs, 3, 0, 1, NULL, &n), CONC_EINVAL);
    cr_assert_eq(conc_green_wait(NULL, 0, 0, 1, NULL, &n), 0);
    cr_assert_eq(n, 0);
    /* a scope cuts it; nready still tells */
    conc_timeout_begin(0.02);
    cr_assert_eq(conc_green_wait(objs, 3, 0, CONC_FOREVER, ready, &n), CONC_ETIMEDOUT);
    cr_assert_eq(conc_timeout_end(), 1);
    cr_assert_eq(n, 2);
    cr_assert_eq(conc_green_kill(gs[2], true, 5), 0);
    for (int i = 0; i < 3; i++)
        conc_green_free(gs[i]);
}

static void *wait_in_green(void *arg)
{
    conc_green_t *g = arg;
    conc_waitable_t o = {.kind = CONC_WAITABLE_GREEN, .obj = g};
    size_t r, n;
    return PTR(conc_green_wait(&o, 1, 0, CONC_FOREVER, &r, &n));
}

Test(green_wait, killed_waiter, .timeout = TU_TIMEOUT)
{
    conc_green_t *sleeper, *waiter;
    cr_assert_eq(conc_go(&sleeper, nap, PTR(5000)), 0);
    cr_assert_eq(conc_go(&waiter, wait_in_green, sleeper), 0);
    cr_assert_eq(conc_sleep(0.01), 0);
    cr_assert_eq(conc_green_kill(waiter, true, 5), 0);
    cr_assert(conc_green_dead(waiter));
    cr_assert_not(conc_green_dead(sleeper), "only the waiter was cut");
    cr_assert_eq(conc_green_kill(sleeper, true, 5), 0);
    conc_green_free(sleeper);
    conc_green_free(waiter);
}

Test(green_wait, joinall_count_and_raise_error, .timeout = TU_TIMEOUT)
{
    conc_green_t *gs[4];
    cr_assert_eq(conc_go(&gs[0], nap, PTR(60)), 0);
    cr_assert_eq(conc_go(&gs[1], nap, PTR(5)), 0);
    cr_assert_eq(conc_go(&gs[2], fail_after, PTR(20)), 0);
    gs[3] = NULL;
    size_t done[4], nd;
    cr_assert_eq(conc_green_joinall_ex(gs, 4, 5, 1, false, done, &nd), 0);
    cr_assert_eq(nd, 1);
    cr_assert_eq(done[0], 1);
    cr_assert_eq(conc_green_joinall_ex(gs, 4, 5, 0, true, done, &nd), CONC_EFAILED, "raise_error");
    cr_assert_eq(nd, 2);
    cr_assert_eq(done[0], 1);
    cr_assert_eq(done[1], 2, "the failed one, last");
    cr_assert_eq(conc_green_exception(gs[2], NULL), CONC_EBROKEN);
    cr_assert_not(conc_green_dead(gs[0]), "the wait stopped there");
    /* without raise_error: all (NULL skipped), failures not reported */
    cr_assert_eq(conc_green_joinall_ex(gs, 4, 5, 0, false, done, &nd), 0);
    cr_assert_eq(nd, 3);
    cr_assert_eq(done[2], 0);
    cr_assert_eq(conc_green_joinall_ex(gs, 4, 5, 0, false, NULL, &nd), CONC_EINVAL);
    for (int i = 0; i < 3; i++)
        conc_green_free(gs[i]);
}

static int short_child(const void *arg, size_t len)
{
    (void)arg;
    (void)len;
    tu_sleep(0.05);
    return 3;
}
CONC_REGISTER(short_child);

Test(green_wait, process, .timeout = TU_TIMEOUT)
{
    if (TU_SANITIZED)
        cr_skip_test("child processes under a sanitizer: covered by process_test");
    unsetenv("BXFI_MAP");
    conc_process_t *p;
    conc_process_opts_t o = {.method = CONC_FORK}; /* Criterion's main has no CONC_PROCESS_MAIN */
    cr_assert_eq(conc_process_new(&p, short_child, NULL, 0, &o), 0);
    int src = conc_process_start(p);
    cr_assert_eq(src, 0, "start: %s", conc_strerror(src));
    conc_event_t never;
    conc_event_init(&never);
    conc_waitable_t objs[2] = {{.kind = CONC_WAITABLE_EVENT, .obj = &never},
                               {.kind = CONC_WAITABLE_PROCESS, .obj = p}};
    size_t ready[2], n;
    cr_assert_eq(conc_green_wait(objs, 2, 1, 20, ready, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(ready[0], 1);
    int code = -1;
    cr_assert_eq(conc_process_exitcode(p, &code), 0);
    cr_assert_eq(code, 3);
    conc_process_free(p);
}

/* A waitable whose wait fails at once (a closed fd: the hub cannot watch
 * it) makes the wait return that error, as gevent.wait raises it, instead
 * of never becoming ready: the wait must not hang until its timeout. */
Test(green_wait, failing_fd_wait_is_reported, .timeout = TU_TIMEOUT)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    int bad = fcntl(p[0], F_DUPFD_CLOEXEC, 900); /* a number nothing else gets soon */
    cr_assert_geq(bad, 900);
    close(bad);
    close(p[0]);
    close(p[1]);
    p[0] = bad;
    int direct = conc_wait_read(p[0], 5);
    cr_assert_lt(direct, 0, "conc_wait_read of a closed fd: %d", direct);
    conc_green_t *sleeper;
    cr_assert_eq(conc_go(&sleeper, nap, PTR(5000)), 0);
    conc_waitable_t objs[2] = {{.kind = CONC_WAITABLE_FD, .fd = p[0]}, {.kind = CONC_WAITABLE_GREEN, .obj = sleeper}};
    size_t ready[2], nready = 99;
    double t0 = conc_monotonic();
    int rc = conc_green_wait(objs, 2, 0, 10, ready, &nready);
    double took = conc_monotonic() - t0;
    cr_assert_eq(rc, direct, "wait returned %d (the fd's own wait: %d) after %.2f s", rc, direct, took);
    cr_assert_lt(took, 3, "the wait hung for %.2f s", took);
    cr_assert_eq(conc_green_kill(sleeper, true, 5), 0);
    conc_green_free(sleeper);
}
