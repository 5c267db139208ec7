/*
 * multiprocessing.connection.wait (conc_conn_wait in conc/ipc.h), ported
 * from CPython's _test_multiprocessing.py TestWait (test_wait,
 * test_wait_socket-like raw fds, test_wait_integer with sentinels and
 * fds, test_wait_timeout, test_neg_timeout) plus conc's cases: a message
 * already buffered inside a Connection (a poll(2) on its fd says "not
 * readable") makes it ready at once; bad input is CONC_EINVAL; the wait
 * is colorless (a green thread parks alone; kill and Timeout scopes cut
 * it, on a green thread and on an OS thread).
 */
#include "test_util.h"

#include <poll.h>
#include <sys/wait.h>

#include <conc/ipc.h>
#include <conc/process.h>

static void setup(void) { unsetenv("BXFI_MAP"); }
TestSuite(conn_wait, .init = setup, .timeout = TU_TIMEOUT);

static conc_conn_waitable_t wconn(conc_conn_t *c) { return (conc_conn_waitable_t){.kind = CONC_CONN_WAIT_CONN, .u.conn = c}; }
static conc_conn_waitable_t wfd(int fd) { return (conc_conn_waitable_t){.kind = CONC_CONN_WAIT_FD, .u.fd = fd}; }

/* A forked child that sleeps, then sends one message on c. */
static pid_t sender(conc_conn_t *c, double delay, int value)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        tu_sleep(delay);
        conc_conn_send_bytes(c, &value, sizeof value);
        _exit(0);
    }
    return pid;
}

/* test_wait: four pipes, four children, collect every message */
Test(conn_wait, collects_from_many)
{
    enum { N = 4 };
    conc_conn_t *r[N], *w[N];
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        cr_assert_eq(conc_pipe(false, &r[i], &w[i]), 0);
        pids[i] = sender(w[i], 0.02 * (N - i), i);
    }
    /* wait on those not yet heard from (test_wait's "while readers") */
    int seen = 0;
    size_t m = N;
    while (m) {
        conc_conn_waitable_t objs[N];
        int idx[N];
        m = 0;
        for (int i = 0; i < N; i++)
            if (!(seen & (1 << i)))
                idx[m] = i, objs[m++] = wconn(r[i]);
        if (!m)
            break;
        size_t k = 0;
        cr_assert_eq(conc_conn_wait(objs, m, 10, &k), 0);
        cr_assert_gt(k, 0);
        for (size_t j = 0; j < m; j++) {
            if (!objs[j].ready)
                continue;
            int v = -1;
            size_t len;
            cr_assert_eq(conc_conn_recv_bytes_into(r[idx[j]], &v, sizeof v, &len), 0);
            cr_assert_eq(v, idx[j]);
            seen |= 1 << v;
        }
    }
    cr_assert_eq(seen, (1 << N) - 1);
    for (int i = 0; i < N; i++) {
        waitpid(pids[i], NULL, 0);
        conc_conn_close(r[i]);
        conc_conn_close(w[i]);
    }
}

/* The case a plain poll(2) misses: two messages arrived in one read; the
 * second sits in the Connection's buffer, the fd has nothing more. */
Test(conn_wait, buffered_message_is_ready)
{
    conc_conn_t *a, *b;
    cr_assert_eq(conc_pipe(true, &a, &b), 0);
    int x = 1, y = 2;
    cr_assert_eq(conc_conn_send_bytes(b, &x, sizeof x), 0);
    cr_assert_eq(conc_conn_send_bytes(b, &y, sizeof y), 0);
    int v;
    size_t len;
    cr_assert_eq(conc_conn_recv_bytes_into(a, &v, sizeof v, &len), 0);
    cr_assert_eq(v, 1);
    struct pollfd p = {.fd = conc_conn_fileno(a), .events = POLLIN};
    cr_assert_eq(poll(&p, 1, 0), 0, "the second message should be in the buffer, not the kernel");
    conc_conn_waitable_t o = wconn(a);
    size_t k = 0;
    double t0 = tu_now();
    cr_assert_eq(conc_conn_wait(&o, 1, 5, &k), 0);
    cr_assert_lt(tu_now() - t0, 0.5);
    cr_assert(o.ready);
    cr_assert_eq(k, 1);
    cr_assert_eq(conc_conn_recv_bytes_into(a, &v, sizeof v, &len), 0);
    cr_assert_eq(v, 2);
    /* now really empty: times out */
    cr_assert_eq(conc_conn_wait(&o, 1, 0.05, &k), CONC_ETIMEDOUT);
    cr_assert_not(o.ready);
    cr_assert_eq(k, 0);
    conc_conn_close(a);
    conc_conn_close(b);
}

/* test_wait_timeout / test_neg_timeout */
Test(conn_wait, timeout)
{
    conc_conn_t *a, *b;
    cr_assert_eq(conc_pipe(false, &a, &b), 0);
    conc_conn_waitable_t o = wconn(a);
    double t0 = tu_now();
    cr_assert_eq(conc_conn_wait(&o, 1, 0.2, NULL), CONC_ETIMEDOUT);
    double took = tu_now() - t0;
    cr_assert_geq(took, 0.2 - TU_EPS);
    cr_assert_lt(took, 0.2 + TU_SLACK);
    t0 = tu_now();
    cr_assert_eq(conc_conn_wait(&o, 1, -1, NULL), CONC_ETIMEDOUT);
    cr_assert_eq(conc_conn_wait(&o, 1, 0, NULL), CONC_ETIMEDOUT);
    cr_assert_lt(tu_now() - t0, 0.1);
    int x = 3;
    cr_assert_eq(conc_conn_send_bytes(b, &x, sizeof x), 0);
    cr_assert_eq(conc_conn_wait(&o, 1, -1, NULL), 0); /* a check still finds it */
    cr_assert(o.ready);
    /* an empty list waits for the timeout alone */
    t0 = tu_now();
    cr_assert_eq(conc_conn_wait(NULL, 0, 0.05, NULL), CONC_ETIMEDOUT);
    cr_assert_geq(tu_now() - t0, 0.05 - TU_EPS);
    conc_conn_close(a);
    conc_conn_close(b);
}

static int sleeper(const void *arg, size_t len)
{
    (void)len;
    double d;
    memcpy(&d, arg, sizeof d);
    tu_sleep(d);
    return 0;
}
CONC_REGISTER(sleeper);

/* test_wait_integer: process sentinels and raw fds side by side */
Test(conn_wait, sentinels_and_fds)
{
    double d = 0.15;
    conc_process_t *p;
    cr_assert_eq(conc_process_new(&p, sleeper, &d, sizeof d, NULL), 0);
    cr_assert_eq(conc_process_start(p), 0);
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    conc_conn_waitable_t objs[2] = {{.kind = CONC_CONN_WAIT_PROCESS, .u.process = p}, wfd(fds[0])};
    size_t k;
    cr_assert_eq(conc_conn_wait(objs, 2, 0, &k), CONC_ETIMEDOUT);
    double t0 = tu_now();
    cr_assert_eq(conc_conn_wait(objs, 2, 10, &k), 0);
    cr_assert_geq(tu_now() - t0, 0.05);
    cr_assert(objs[0].ready);
    cr_assert_not(objs[1].ready);
    cr_assert_eq(k, 1);
    cr_assert_eq(write(fds[1], "x", 1), 1);
    cr_assert_eq(conc_conn_wait(objs, 2, 10, &k), 0);
    cr_assert(objs[0].ready && objs[1].ready);
    cr_assert_eq(k, 2);
    cr_assert_eq(conc_process_join(p, 10), 0);
    conc_process_free(p);
    close(fds[0]);
    close(fds[1]);
}

Test(conn_wait, bad_input)
{
    conc_conn_t *a, *b;
    cr_assert_eq(conc_pipe(false, &a, &b), 0);
    conc_conn_waitable_t o = wconn(b); /* write-only end */
    cr_assert_eq(conc_conn_wait(&o, 1, 0, NULL), CONC_EINVAL);
    o = wconn(NULL);
    cr_assert_eq(conc_conn_wait(&o, 1, 0, NULL), CONC_EINVAL);
    o = wfd(-1);
    cr_assert_eq(conc_conn_wait(&o, 1, 0, NULL), CONC_EINVAL);
    o = (conc_conn_waitable_t){.kind = 99};
    cr_assert_eq(conc_conn_wait(&o, 1, 0, NULL), CONC_EINVAL);
    o = (conc_conn_waitable_t){.kind = CONC_CONN_WAIT_PROCESS};
    cr_assert_eq(conc_conn_wait(&o, 1, 0, NULL), CONC_EINVAL);
    o = wconn(a);
    cr_assert_eq(conc_conn_wait(&o, 1, NAN, NULL), CONC_EINVAL);
    cr_assert_eq(conc_conn_wait(NULL, 1, 0, NULL), CONC_EINVAL);
    conc_process_t *p;
    double d = 0;
    cr_assert_eq(conc_process_new(&p, sleeper, &d, sizeof d, NULL), 0);
    o = (conc_conn_waitable_t){.kind = CONC_CONN_WAIT_PROCESS, .u.process = p}; /* not started */
    cr_assert_eq(conc_conn_wait(&o, 1, 0, NULL), CONC_EINVAL);
    conc_process_free(p);
    /* a peer that closed: ready (recv says EOF) */
    conc_conn_close(b);
    o = wconn(a);
    cr_assert_eq(conc_conn_wait(&o, 1, 5, NULL), 0);
    void *buf;
    size_t len;
    cr_assert_eq(conc_conn_recv_bytes(a, &buf, &len, 0), CONC_EEOF);
    conc_conn_close(a);
}

/* ------------------------------------------------------------ colorless */

typedef struct {
    conc_conn_waitable_t o;
    double scope;
    int rc, fired;
} gw_t;

static void *green_wait(void *arg)
{
    gw_t *w = arg;
    if (w->scope > 0)
        conc_timeout_begin(w->scope);
    w->rc = conc_conn_wait(&w->o, 1, CONC_FOREVER, NULL);
    if (w->scope > 0)
        w->fired = conc_timeout_end();
    return NULL;
}

typedef struct {
    _Atomic int stop;
    int ticks;
} ticker_t;

static void *tick(void *arg)
{
    ticker_t *t = arg;
    while (!atomic_load(&t->stop)) {
        conc_sleep(0.002);
        t->ticks++;
    }
    return NULL;
}

Test(conn_wait, green_parks_alone)
{
    conc_conn_t *a, *b;
    cr_assert_eq(conc_pipe(true, &a, &b), 0);
    pid_t pid = sender(b, 0.4, 9);
    ticker_t tk = {0};
    gw_t w = {.o = wconn(a)};
    conc_green_t *gt, *g;
    cr_assert_eq(conc_go(&gt, tick, &tk), 0);
    cr_assert_eq(conc_go(&g, green_wait, &w), 0);
    cr_assert_eq(conc_green_join(g, 10), 0);
    atomic_store(&tk.stop, 1);
    cr_assert_eq(conc_green_join(gt, 5), 0);
    cr_assert_eq(w.rc, 0);
    cr_assert(w.o.ready);
    cr_assert_geq(tk.ticks, 20, "the ticker stopped: %d ticks", tk.ticks);
    conc_green_free(gt);
    conc_green_free(g);
    waitpid(pid, NULL, 0);
    conc_conn_close(a);
    conc_conn_close(b);
}

Test(conn_wait, kill_and_scopes_cut_it)
{
    conc_conn_t *a, *b;
    cr_assert_eq(conc_pipe(true, &a, &b), 0);
    /* kill */
    gw_t w = {.o = wconn(a)};
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, green_wait, &w), 0);
    conc_sleep(0.05);
    double t0 = tu_now();
    cr_assert_eq(conc_green_kill(g, true, 5), 0);
    cr_assert_lt(tu_now() - t0, TU_SANITIZED ? 2.0 : 0.3);
    cr_assert_eq(w.rc, CONC_EKILLED, "%s", conc_strerror(w.rc));
    conc_green_free(g);
    /* a Timeout scope, on a green thread */
    gw_t s = {.o = wconn(a), .scope = 0.05};
    cr_assert_eq(conc_go(&g, green_wait, &s), 0);
    cr_assert_eq(conc_green_join(g, 5), 0);
    cr_assert_eq(s.rc, CONC_ETIMEDOUT);
    cr_assert_eq(s.fired, 1);
    conc_green_free(g);
    /* and on this OS thread */
    gw_t o = {.o = wconn(a), .scope = 0.05};
    t0 = tu_now();
    green_wait(&o);
    cr_assert_eq(o.rc, CONC_ETIMEDOUT);
    cr_assert_eq(o.fired, 1);
    cr_assert_lt(tu_now() - t0, 0.05 + TU_SLACK);
    /* the connection still works */
    int x = 4;
    cr_assert_eq(conc_conn_send_bytes(b, &x, sizeof x), 0);
    o.scope = 0;
    green_wait(&o);
    cr_assert_eq(o.rc, 0);
    conc_conn_close(a);
    conc_conn_close(b);
}

TU_MAIN_WITH_PROCESS_GUARD()
