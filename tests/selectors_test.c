/*
 * tests/selectors_test.c — conc/selectors.h (Python's selectors), every
 * behaviour run against every backend (select, poll, epoll, uring, signal;
 * uring is skipped with a note where io_uring_setup fails). Ported from
 * CPython's Lib/test/test_selectors.py: register / unregister / modify /
 * close / get_key / get_map, unregister after close, select with and
 * without timeouts, EINTR (PEP 475), more fds than FD_SETSIZE, plus the
 * signal backend's overflow fallback, colorless waits and a stress.
 */
#include "test_util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/time.h>

#define PTR(x) ((void *)(intptr_t)(x))
#define INT(p) ((int)(intptr_t)(p))

static const conc_selector_backend_t ALL[] = {CONC_SEL_SELECT, CONC_SEL_POLL, CONC_SEL_EPOLL,
                                              CONC_SEL_URING, CONC_SEL_SIGNAL};
#define NALL ((int)(sizeof ALL / sizeof ALL[0]))

/* Open a selector of backend b; false (with a printed note) when the
 * kernel refuses io_uring. */
static bool open_sel(conc_selector_backend_t b, conc_selector_t **s)
{
    int rc = conc_selector_new(s, b);
    if (rc == CONC_ENOTSUP && b == CONC_SEL_URING) {
        static int noted;
        if (!noted++)
            fprintf(stderr, "note: io_uring_setup refused here (seccomp or io_uring_disabled): "
                            "uring backend skipped\n");
        return false;
    }
    cr_assert_eq(rc, 0, "%s: new: %s", conc_selector_backend_name(b), conc_strerror(rc));
    cr_assert_eq(conc_selector_backend(*s), b);
    return true;
}

#define EACH_BACKEND(s)                                                                         \
    for (int bi_ = 0; bi_ < NALL; bi_++)                                                        \
        for (conc_selector_t *s = NULL; !s && open_sel(ALL[bi_], &s); conc_selector_close(s))   \
            for (const char *name = conc_selector_backend_name(ALL[bi_]); name; name = NULL)

static void pair(int fds[2])
{
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
}

static void put(int fd, const char *what) { cr_assert_eq(write(fd, what, strlen(what)), (ssize_t)strlen(what)); }

/* Find fd's entry among n ready pairs; its events or 0. */
static int ready_for(const conc_selector_ready_t *ev, int n, int fd)
{
    for (int i = 0; i < n; i++)
        if (ev[i].key->fd == fd)
            return ev[i].events;
    return 0;
}

static void raise_nofile(rlim_t want)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* ---- registry (test_register, test_unregister, test_modify, test_get_key...) */

Test(selectors, register_get_key_count_iterate, .timeout = TU_TIMEOUT)
{
    EACH_BACKEND(s)
    {
        int a[2], b[2];
        pair(a);
        pair(b);
        int tag;
        const conc_selector_key_t *k = NULL, *k2;
        cr_assert_eq(conc_selector_register(s, a[0], CONC_SEL_READ, &tag, &k), 0, "%s", name);
        cr_assert_eq(k->fd, a[0]);
        cr_assert_eq(k->events, CONC_SEL_READ);
        cr_assert_eq(k->data, &tag);
        cr_assert_eq(conc_selector_register(s, b[1], CONC_SEL_READ | CONC_SEL_WRITE, NULL, NULL), 0);
        cr_assert_eq(conc_selector_count(s), 2);
        cr_assert_eq(conc_selector_get_key(s, a[0], &k2), 0);
        cr_assert_eq(k2, k);
        cr_assert_eq(conc_selector_get_key(s, a[1], &k2), CONC_EKEY, "%s: unregistered fd", name);
        /* get_map(): in fd order */
        int cur = 0, seen = 0, last = -1;
        for (const conc_selector_key_t *it; (it = conc_selector_next_key(s, &cur));) {
            cr_assert_gt(it->fd, last);
            last = it->fd;
            seen++;
        }
        cr_assert_eq(seen, 2);
        /* modify: same key, new events and data */
        cr_assert_eq(conc_selector_modify(s, a[0], CONC_SEL_READ, &k, &k2), 0, "%s: data only", name);
        cr_assert_eq(k2, k);
        cr_assert_eq(k->data, &k);
        cr_assert_eq(conc_selector_modify(s, a[0], CONC_SEL_WRITE, NULL, &k2), 0, "%s", name);
        cr_assert_eq(k2, k);
        cr_assert_eq(k->events, CONC_SEL_WRITE);
        cr_assert_null(k->data);
        conc_selector_key_t old;
        cr_assert_eq(conc_selector_unregister(s, a[0], &old), 0);
        cr_assert_eq(old.fd, a[0]);
        cr_assert_eq(old.events, CONC_SEL_WRITE);
        cr_assert_eq(conc_selector_count(s), 1);
        cr_assert_eq(conc_selector_unregister(s, b[1], NULL), 0);
        cr_assert_eq(conc_selector_count(s), 0);
        cr_assert_null(conc_selector_next_key(s, &(int){0}));
        close(a[0]), close(a[1]), close(b[0]), close(b[1]);
    }
}

Test(selectors, register_twice_and_unknown_fds_are_key_errors, .timeout = TU_TIMEOUT)
{
    EACH_BACKEND(s)
    {
        int a[2];
        pair(a);
        cr_assert_eq(conc_selector_register(s, a[0], CONC_SEL_READ, NULL, NULL), 0);
        cr_assert_eq(conc_selector_register(s, a[0], CONC_SEL_WRITE, NULL, NULL), CONC_EKEY, "%s", name);
        cr_assert_eq(conc_selector_count(s), 1);
        cr_assert_eq(conc_selector_unregister(s, a[1], NULL), CONC_EKEY, "%s", name);
        cr_assert_eq(conc_selector_unregister(s, 100000, NULL), CONC_EKEY, "%s", name);
        cr_assert_eq(conc_selector_modify(s, a[1], CONC_SEL_READ, NULL, NULL), CONC_EKEY, "%s", name);
        cr_assert_eq(conc_selector_unregister(s, a[0], NULL), 0);
        cr_assert_eq(conc_selector_unregister(s, a[0], NULL), CONC_EKEY, "%s: twice", name);
        close(a[0]), close(a[1]);
    }
}

Test(selectors, bad_arguments_are_einval, .timeout = TU_TIMEOUT)
{
    conc_selector_t *x;
    cr_assert_eq(conc_selector_new(NULL, CONC_SEL_POLL), CONC_EINVAL);
    cr_assert_eq(conc_selector_new(&x, (conc_selector_backend_t)42), CONC_EINVAL);
    cr_assert_eq(conc_selector_register(NULL, 0, CONC_SEL_READ, NULL, NULL), CONC_EINVAL);
    conc_selector_close(NULL);
    EACH_BACKEND(s)
    {
        int a[2];
        pair(a);
        conc_selector_ready_t ev[1];
        cr_assert_eq(conc_selector_register(s, a[0], 0, NULL, NULL), CONC_EINVAL, "%s: events 0", name);
        cr_assert_eq(conc_selector_register(s, a[0], 4, NULL, NULL), CONC_EINVAL, "%s: unknown bit", name);
        cr_assert_eq(conc_selector_register(s, a[0], -1, NULL, NULL), CONC_EINVAL, "%s", name);
        cr_assert_eq(conc_selector_register(s, -1, CONC_SEL_READ, NULL, NULL), CONC_EINVAL, "%s", name);
        cr_assert_eq(conc_selector_unregister(s, -1, NULL), CONC_EINVAL);
        cr_assert_eq(conc_selector_get_key(s, -1, &(const conc_selector_key_t *){0}), CONC_EINVAL);
        cr_assert_eq(conc_selector_count(s), 0);
        cr_assert_eq(conc_selector_register(s, a[0], CONC_SEL_READ, NULL, NULL), 0);
        cr_assert_eq(conc_selector_modify(s, a[0], 0, NULL, NULL), CONC_EINVAL, "%s", name);
        cr_assert_eq(conc_selector_modify(s, a[0], 8, NULL, NULL), CONC_EINVAL, "%s", name);
        cr_assert_eq(conc_selector_select(s, 0, NULL, 1), CONC_EINVAL);
        cr_assert_eq(conc_selector_select(s, 0, ev, 0), CONC_EINVAL);
        cr_assert_eq(conc_selector_select(s, NAN, ev, 1), CONC_EINVAL);
        cr_assert_eq(conc_selector_count(s), 1, "%s: the key survives bad calls", name);
        close(a[0]), close(a[1]);
    }
}

/* test_unregister_after_fd_close / _after_fd_close_and_reuse */
Test(selectors, unregister_after_close, .timeout = TU_TIMEOUT)
{
    EACH_BACKEND(s)
    {
        int a[2], b[2];
        pair(a);
        int r = a[0], w = a[1];
        cr_assert_eq(conc_selector_register(s, r, CONC_SEL_READ, NULL, NULL), 0);
        cr_assert_eq(conc_selector_register(s, w, CONC_SEL_WRITE, NULL, NULL), 0);
        conc_selector_ready_t ev[4];
        cr_assert_geq(conc_selector_select(s, 0, ev, 4), 1, "%s", name);
        close(r);
        close(w);
        cr_assert_eq(conc_selector_unregister(s, r, NULL), 0, "%s", name);
        cr_assert_eq(conc_selector_unregister(s, w, NULL), 0, "%s", name);
        cr_assert_eq(conc_selector_count(s), 0);
        /* the numbers come back for new sockets: register them afresh */
        pair(b);
        cr_assert_eq(conc_selector_register(s, b[0], CONC_SEL_READ, NULL, NULL), 0, "%s", name);
        cr_assert_eq(conc_selector_register(s, b[1], CONC_SEL_WRITE, NULL, NULL), 0, "%s", name);
        int n = conc_selector_select(s, 1.0, ev, 4);
        cr_assert_eq(n, 1, "%s: only the writer is ready (%d)", name, n);
        cr_assert_eq(ev[0].key->fd, b[1]);
        close(b[0]), close(b[1]);
    }
}

/* ---- readiness (test_select, test_select_read_write) */

Test(selectors, readiness_is_reported_level_triggered, .timeout = TU_TIMEOUT)
{
    EACH_BACKEND(s)
    {
        int a[2];
        pair(a);
        int tag = 7;
        cr_assert_eq(conc_selector_register(s, a[0], CONC_SEL_READ, &tag, NULL), 0);
        cr_assert_eq(conc_selector_register(s, a[1], CONC_SEL_WRITE, NULL, NULL), 0);
        conc_selector_ready_t ev[4];
        int n = conc_selector_select(s, 0, ev, 4);
        cr_assert_eq(n, 1, "%s: %d", name, n);
        cr_assert_eq(ev[0].key->fd, a[1]);
        cr_assert_eq(ev[0].events, CONC_SEL_WRITE);
        put(a[1], "hi");
        for (int round = 0; round < 3; round++) { /* unread data stays ready */
            n = conc_selector_select(s, 1.0, ev, 4);
            cr_assert_eq(n, 2, "%s: round %d: %d", name, round, n);
            cr_assert_eq(ready_for(ev, n, a[0]), CONC_SEL_READ, "%s", name);
            cr_assert_eq(ready_for(ev, n, a[1]), CONC_SEL_WRITE, "%s", name);
        }
        for (int i = 0; i < n; i++)
            if (ev[i].key->fd == a[0])
                cr_assert_eq(ev[i].key->data, &tag);
        char buf[8];
        cr_assert_eq(read(a[0], buf, sizeof buf), 2);
        cr_assert_eq(conc_selector_modify(s, a[1], CONC_SEL_READ, NULL, NULL), 0);
        n = conc_selector_select(s, 0, ev, 4);
        cr_assert_eq(n, 0, "%s: nothing after draining / modify (%d)", name, n);
        /* a hang-up counts as readable; a key registered for both gets
         * only what it asked for */
        cr_assert_eq(conc_selector_modify(s, a[1], CONC_SEL_READ | CONC_SEL_WRITE, NULL, NULL), 0);
        n = conc_selector_select(s, 0, ev, 4);
        cr_assert_eq(n, 1, "%s", name);
        cr_assert_eq(ev[0].events, CONC_SEL_WRITE, "%s", name);
        shutdown(a[0], SHUT_WR);
        n = conc_selector_select(s, 1.0, ev, 4);
        cr_assert_eq(ready_for(ev, n, a[1]), CONC_SEL_READ | CONC_SEL_WRITE, "%s: hang-up", name);
        close(a[0]), close(a[1]);
    }
}

Test(selectors, more_ready_than_max_come_in_later_calls, .timeout = TU_TIMEOUT)
{
    enum { N = 10 };
    EACH_BACKEND(s)
    {
        int p[N][2];
        for (int i = 0; i < N; i++) {
            pair(p[i]);
            cr_assert_eq(conc_selector_register(s, p[i][0], CONC_SEL_READ, PTR(i), NULL), 0);
            put(p[i][1], "x");
        }
        int seen[N] = {0}, total = 0;
        conc_selector_ready_t ev[3];
        for (int call = 0; call < 2 * N && total < N; call++) {
            int n = conc_selector_select(s, 1.0, ev, 3);
            cr_assert(n >= 1 && n <= 3, "%s: %d", name, n);
            for (int i = 0; i < n; i++) {
                int j = INT(ev[i].key->data);
                seen[j]++;
                total++;
                char c;
                cr_assert_eq(read(p[j][0], &c, 1), 1);
            }
        }
        for (int i = 0; i < N; i++)
            cr_assert_eq(seen[i], 1, "%s: pair %d seen %d times", name, i, seen[i]);
        cr_assert_eq(conc_selector_select(s, 0, ev, 3), 0, "%s", name);
        for (int i = 0; i < N; i++)
            close(p[i][0]), close(p[i][1]);
    }
}

/* ---- timeouts (test_timeout, test_select_timeout) */

Test(selectors, timeouts_zero_negative_and_positive, .timeout = TU_TIMEOUT)
{
    EACH_BACKEND(s)
    {
        int a[2];
        pair(a);
        cr_assert_eq(conc_selector_register(s, a[0], CONC_SEL_READ, NULL, NULL), 0);
        conc_selector_ready_t ev[2];
        double t = tu_now();
        cr_assert_eq(conc_selector_select(s, 0, ev, 2), 0);
        cr_assert_eq(conc_selector_select(s, -1.0, ev, 2), 0, "%s: negative = 0", name);
        cr_assert_eq(conc_selector_select(s, -INFINITY, ev, 2), 0);
        cr_assert_lt(tu_now() - t, 0.5, "%s: polls do not wait", name);
        t = tu_now();
        cr_assert_eq(conc_selector_select(s, 0.1, ev, 2), 0, "%s", name);
        double took = tu_now() - t;
        cr_assert_geq(took, 0.1 - TU_EPS, "%s: returned early (%.3f)", name, took);
        cr_assert_lt(took, 0.1 + TU_SLACK, "%s", name);
        close(a[0]), close(a[1]);
    }
}

/* An empty selector waits for its timeout, as CPython's does. */
Test(selectors, empty_selector_waits_for_timeout, .timeout = TU_TIMEOUT)
{
    EACH_BACKEND(s)
    {
        conc_selector_ready_t ev[1];
        double t = tu_now();
        cr_assert_eq(conc_selector_select(s, 0.05, ev, 1), 0, "%s", name);
        cr_assert_geq(tu_now() - t, 0.05 - TU_EPS, "%s", name);
    }
}

typedef struct {
    int fd;
    double delay;
} later_t;

static void *write_later(void *arg)
{
    later_t *l = arg;
    tu_sleep(l->delay);
    if (write(l->fd, "!", 1) != 1)
        return PTR(-1);
    return NULL;
}

Test(selectors, forever_wakes_on_another_threads_write, .timeout = TU_TIMEOUT)
{
    EACH_BACKEND(s)
    {
        int a[2];
        pair(a);
        cr_assert_eq(conc_selector_register(s, a[0], CONC_SEL_READ, NULL, NULL), 0);
        later_t l = {a[1], 0.05};
        pthread_t th;
        pthread_create(&th, NULL, write_later, &l);
        conc_selector_ready_t ev[2];
        int n = conc_selector_select(s, CONC_FOREVER, ev, 2);
        pthread_join(th, NULL);
        cr_assert_eq(n, 1, "%s: %d", name, n);
        cr_assert_eq(ev[0].key->fd, a[0]);
        close(a[0]), close(a[1]);
    }
}

/* test_select_interrupt_noraise / PEP 475: a handler that runs during the
 * wait neither ends it early nor restarts the whole timeout. */
static atomic_int alarms;
static void on_alarm(int sig)
{
    (void)sig;
    atomic_fetch_add(&alarms, 1);
}

Test(selectors, eintr_resumes_with_the_time_left, .timeout = TU_TIMEOUT)
{
    struct sigaction sa = {.sa_handler = on_alarm}; /* no SA_RESTART */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    EACH_BACKEND(s)
    {
        int a[2];
        pair(a);
        cr_assert_eq(conc_selector_register(s, a[0], CONC_SEL_READ, NULL, NULL), 0);
        atomic_store(&alarms, 0);
        struct itimerval it = {.it_value = {.tv_usec = 60000}, .it_interval = {.tv_usec = 60000}};
        setitimer(ITIMER_REAL, &it, NULL);
        conc_selector_ready_t ev[2];
        double t = tu_now();
        int n = conc_selector_select(s, 0.3, ev, 2);
        double took = tu_now() - t;
        setitimer(ITIMER_REAL, &(struct itimerval){0}, NULL);
        cr_assert_eq(n, 0, "%s: %d", name, n);
        cr_assert_geq(atomic_load(&alarms), 2, "%s: the handler ran", name);
        cr_assert_geq(took, 0.3 - TU_EPS, "%s: ended early (%.3f)", name, took);
        /* a wait that restarted its full timeout at each alarm (every 60 ms)
         * would never end; one that overslept would show here */
        cr_assert_lt(took, 0.3 + TU_SLACK, "%s: the timeout restarted (%.3f)", name, took);
        close(a[0]), close(a[1]);
    }
    signal(SIGALRM, SIG_IGN);
}

/* ---- FD_SETSIZE (test_above_fd_setsize) */

Test(selectors, fd_above_fd_setsize, .timeout = TU_TIMEOUT)
{
    raise_nofile(FD_SETSIZE + 64);
    int a[2];
    pair(a);
    int big = fcntl(a[0], F_DUPFD_CLOEXEC, FD_SETSIZE + 10);
    if (big < 0) {
        fprintf(stderr, "note: RLIMIT_NOFILE too small for fds above FD_SETSIZE: skipped\n");
        close(a[0]), close(a[1]);
        return;
    }
    EACH_BACKEND(s)
    {
        int rc = conc_selector_register(s, big, CONC_SEL_READ, NULL, NULL);
        if (ALL[bi_] == CONC_SEL_SELECT) {
            cr_assert_eq(rc, CONC_ERANGE, "select: fd %d >= FD_SETSIZE", big);
            cr_assert_eq(conc_selector_count(s), 0);
            cr_assert_eq(conc_selector_get_key(s, big, &(const conc_selector_key_t *){0}), CONC_EKEY);
            continue;
        }
        cr_assert_eq(rc, 0, "%s: %s", name, conc_strerror(rc));
        conc_selector_ready_t ev[2];
        cr_assert_eq(conc_selector_select(s, 0, ev, 2), 0, "%s", name);
        put(a[1], "z");
        cr_assert_eq(conc_selector_select(s, 1.0, ev, 2), 1, "%s", name);
        cr_assert_eq(ev[0].key->fd, big);
        char c;
        cr_assert_eq(read(big, &c, 1), 1);
    }
    close(big), close(a[0]), close(a[1]);
}

/* ---- backend-specific refusals */

Test(selectors, kernel_refusals, .timeout = TU_TIMEOUT)
{
    char path[] = "/tmp/conc_sel_XXXXXX";
    int file = mkstemp(path);
    cr_assert_geq(file, 0);
    unlink(path);
    EACH_BACKEND(s)
    {
        int gone = dup(file); /* a number surely not open (after the selector's own fds) */
        close(gone);
        int rc = conc_selector_register(s, file, CONC_SEL_READ, NULL, NULL);
        if (ALL[bi_] == CONC_SEL_EPOLL) {
            cr_assert_eq(rc, CONC_ESYS, "epoll refuses regular files (EPERM), as Python's");
            cr_assert_eq(conc_selector_count(s), 0);
        } else {
            cr_assert_eq(rc, 0, "%s", name);
            conc_selector_ready_t ev[2];
            cr_assert_eq(conc_selector_select(s, 1.0, ev, 2), 1, "%s: a file is always ready", name);
        }
        rc = conc_selector_register(s, gone, CONC_SEL_READ, NULL, NULL);
        if (ALL[bi_] == CONC_SEL_EPOLL || ALL[bi_] == CONC_SEL_SIGNAL)
        {
            cr_assert_eq(rc, CONC_ESYS, "%s: closed fd", name);
            cr_assert_eq(conc_selector_get_key(s, gone, &(const conc_selector_key_t *){0}), CONC_EKEY,
                         "%s: no key left behind", name);
        }
        else if (rc == 0)
            cr_assert_eq(conc_selector_unregister(s, gone, NULL), 0);
    }
    close(file);
}

/* ---- the uring backend */

extern int conc__uring_refuse_submit; /* src/selectors/uring.c, tests only */

/* The kernel refuses new submissions (io_uring_enter: EAGAIN) until the
 * SQ ring is full, then a registered fd is unregistered and closed: its
 * poll's cancel finds no free SQE. It must not be lost: once the kernel
 * takes submissions again the poll is removed, so the kernel lets go of
 * the file (the peer sees EOF) and nothing is reported for the gone key
 * or for a new key that reuses its number. */
Test(selectors_uring, cancel_with_the_submission_queue_full_is_not_lost, .timeout = TU_TIMEOUT)
{
    conc_selector_t *s;
    if (!open_sel(CONC_SEL_URING, &s))
        return;
    enum { FILL = 300 }; /* more keys to arm than the SQ ring's 256 entries */
    raise_nofile(FILL + 64);
    int a[2], quiet[2];
    pair(a);
    cr_assert_eq(pipe2(quiet, O_CLOEXEC), 0);
    cr_assert_eq(conc_selector_register(s, a[0], CONC_SEL_READ, NULL, NULL), 0);
    conc_selector_ready_t ev[8];
    cr_assert_eq(conc_selector_select(s, 0, ev, 8), 0); /* a[0]'s poll is in the kernel */
    conc__uring_refuse_submit = 1;
    int fill[FILL];
    for (int i = 0; i < FILL; i++) {
        fill[i] = dup(quiet[0]);
        cr_assert_geq(fill[i], 0);
        cr_assert_eq(conc_selector_register(s, fill[i], CONC_SEL_READ, NULL, NULL), 0);
    }
    cr_assert_eq(conc_selector_select(s, 0, ev, 8), 0); /* arms 256: the SQ ring is full */
    cr_assert_eq(conc_selector_unregister(s, a[0], NULL), 0);
    int gone = a[0];
    close(a[0]);
    conc__uring_refuse_submit = 0;
    cr_assert_eq(conc_selector_select(s, 0, ev, 8), 0);
    struct pollfd pf = {a[1], POLLIN, 0};
    cr_assert_eq(poll(&pf, 1, 2000), 1, "the kernel still holds the unregistered, closed fd's file");
    char c;
    cr_assert_eq(recv(a[1], &c, 1, MSG_DONTWAIT), 0, "EOF");
    /* the number comes back for a quiet fd: no stale completion is reported */
    cr_assert_eq(dup2(quiet[0], gone), gone);
    cr_assert_eq(conc_selector_register(s, gone, CONC_SEL_READ, NULL, NULL), 0);
    cr_assert_eq(conc_selector_select(s, 0.05, ev, 8), 0);
    cr_assert_eq(conc_selector_unregister(s, gone, NULL), 0);
    close(gone);
    for (int i = 0; i < FILL; i++) {
        cr_assert_eq(conc_selector_unregister(s, fill[i], NULL), 0);
        close(fill[i]);
    }
    conc_selector_close(s);
    close(a[1]), close(quiet[0]), close(quiet[1]);
}

/* ---- the signal backend */

Test(selectors_signal, queue_overflow_falls_back_to_a_full_rescan, .timeout = TU_TIMEOUT)
{
    enum { N = 20 };
    conc_selector_t *s;
    cr_assert_eq(conc_selector_new(&s, CONC_SEL_SIGNAL), 0);
    int p[N][2];
    for (int i = 0; i < N; i++) {
        pair(p[i]);
        cr_assert_eq(conc_selector_register(s, p[i][0], CONC_SEL_READ, PTR(i), NULL), 0);
    }
    conc_selector_ready_t ev[N + 1];
    cr_assert_eq(conc_selector_select(s, 0, ev, N + 1), 0); /* the initial candidates go */
    /* No real-time signal can be queued now: the kernel sends SIGIO. */
    struct rlimit rl = {0, 0};
    getrlimit(RLIMIT_SIGPENDING, &rl);
    struct rlimit zero = {0, rl.rlim_max};
    cr_assert_eq(setrlimit(RLIMIT_SIGPENDING, &zero), 0);
    for (int i = 0; i < N; i++)
        put(p[i][1], "x");
    int n = conc_selector_select(s, 2.0, ev, N + 1);
    cr_assert_eq(n, N, "every fd found by the rescan (%d)", n);
    cr_assert_geq(conc_selector_rescans(s), 1, "a SIGIO caused a rescan");
    setrlimit(RLIMIT_SIGPENDING, &rl);
    /* with room again: ordinary per-fd signals */
    for (int i = 0; i < N; i++) {
        char c;
        cr_assert_eq(read(p[i][0], &c, 1), 1);
    }
    cr_assert_eq(conc_selector_select(s, 0, ev, N + 1), 0);
    long before = conc_selector_rescans(s);
    put(p[3][1], "y");
    n = conc_selector_select(s, 2.0, ev, N + 1);
    cr_assert_eq(n, 1);
    cr_assert_eq(INT(ev[0].key->data), 3);
    cr_assert_eq(conc_selector_rescans(s), before, "no rescan without an overflow");
    conc_selector_close(s);
    for (int i = 0; i < N; i++)
        close(p[i][0]), close(p[i][1]);
}

static void *select_elsewhere(void *arg)
{
    conc_selector_ready_t ev[1];
    return PTR(conc_selector_select(arg, 0, ev, 1));
}

Test(selectors_signal, owner_thread_async_flag_and_mask, .timeout = TU_TIMEOUT)
{
    sigset_t before, after;
    pthread_sigmask(SIG_SETMASK, NULL, &before);
    conc_selector_t *s, *s2;
    cr_assert_eq(conc_selector_new(&s, CONC_SEL_SIGNAL), 0);
    cr_assert_eq(conc_selector_new(&s2, CONC_SEL_SIGNAL), CONC_EAGAIN, "one per thread");
    conc_selector_opts_t bad = {.backend = CONC_SEL_SIGNAL, .signo = SIGUSR1};
    cr_assert_eq(conc_selector_new_opts(&s2, &bad), CONC_EINVAL, "not a real-time signal");
    int a[2];
    pair(a);
    cr_assert_eq(conc_selector_register(s, a[0], CONC_SEL_READ, NULL, NULL), 0);
    cr_assert(fcntl(a[0], F_GETFL) & O_ASYNC);
    cr_assert_eq(fcntl(a[0], F_GETSIG), SIGRTMIN + 4);
    pthread_t th;
    void *r;
    pthread_create(&th, NULL, select_elsewhere, s);
    pthread_join(th, &r);
    cr_assert_eq(INT(r), CONC_EPERM, "signals go to the creating thread only");
    cr_assert_eq(conc_selector_unregister(s, a[0], NULL), 0);
    cr_assert_not(fcntl(a[0], F_GETFL) & O_ASYNC, "unregister clears O_ASYNC");
    cr_assert_eq(conc_selector_register(s, a[0], CONC_SEL_READ, NULL, NULL), 0);
    put(a[1], "q");
    conc_selector_close(s);
    cr_assert_not(fcntl(a[0], F_GETFL) & O_ASYNC, "close clears O_ASYNC");
    pthread_sigmask(SIG_SETMASK, NULL, &after);
    cr_assert_eq(sigismember(&after, SIGRTMIN + 4), sigismember(&before, SIGRTMIN + 4), "mask restored");
    cr_assert_eq(sigismember(&after, SIGIO), sigismember(&before, SIGIO));
    put(a[1], "r"); /* no signal, no death */
    cr_assert_eq(conc_selector_new(&s, CONC_SEL_SIGNAL), 0, "a new one after close");
    conc_selector_close(s);
    close(a[0]), close(a[1]);
}

/* ---- colorless: select from green threads */

typedef struct {
    conc_selector_t *s;
    int fd;
    double timeout;
    double scope;
    atomic_int ticks, ticks_seen;
    int n;
    double took;
} green_sel_t;

static void *green_select(void *arg)
{
    green_sel_t *g = arg;
    conc_selector_ready_t ev[2];
    double t = tu_now();
    if (g->scope > 0)
        conc_timeout_begin(g->scope);
    g->n = conc_selector_select(g->s, g->timeout, ev, 2);
    if (g->scope > 0 && conc_timeout_end() != 1 && g->n == CONC_ETIMEDOUT)
        g->n = -1000; /* the scope did not say it fired */
    g->took = tu_now() - t;
    atomic_store(&g->ticks_seen, atomic_load(&g->ticks));
    return NULL;
}

static void *green_ticker(void *arg)
{
    green_sel_t *g = arg;
    for (int i = 0; i < 20; i++) {
        atomic_fetch_add(&g->ticks, 1);
        if (conc_sleep(0.002))
            return PTR(-1);
    }
    if (g->fd >= 0 && write(g->fd, "g", 1) != 1)
        return PTR(-2);
    return NULL;
}

static void green_run(green_sel_t *g)
{
    conc_green_t *a, *b;
    cr_assert_eq(conc_go(&a, green_select, g), 0);
    cr_assert_eq(conc_go(&b, green_ticker, g), 0);
    cr_assert_eq(conc_green_join(a, 10.0), 0);
    cr_assert_eq(conc_green_join(b, 10.0), 0);
    conc_green_free(a);
    conc_green_free(b);
}

Test(selectors_green, select_parks_only_the_green_thread, .timeout = TU_TIMEOUT)
{
    EACH_BACKEND(s)
    {
        int a[2];
        pair(a);
        cr_assert_eq(conc_selector_register(s, a[0], CONC_SEL_READ, NULL, NULL), 0);
        green_sel_t g = {.s = s, .fd = a[1], .timeout = 10.0};
        green_run(&g);
        cr_assert_eq(g.n, 1, "%s: %d", name, g.n);
        cr_assert_eq(atomic_load(&g.ticks_seen), 20, "%s: the sibling ran while select waited", name);
        /* and a timeout with siblings running */
        char c;
        cr_assert_eq(read(a[0], &c, 1), 1);
        g = (green_sel_t){.s = s, .fd = -1, .timeout = 0.15};
        green_run(&g);
        cr_assert_eq(g.n, 0, "%s: %d", name, g.n);
        cr_assert_geq(g.took, 0.15 - TU_EPS, "%s", name);
        cr_assert_eq(atomic_load(&g.ticks), 20, "%s", name);
        close(a[0]), close(a[1]);
    }
}

Test(selectors_green, kill_and_timeout_scope_cut_select_short, .timeout = TU_TIMEOUT)
{
    EACH_BACKEND(s)
    {
        int a[2];
        pair(a);
        cr_assert_eq(conc_selector_register(s, a[0], CONC_SEL_READ, NULL, NULL), 0);
        /* kill */
        green_sel_t g = {.s = s, .fd = -1, .timeout = CONC_FOREVER};
        conc_green_t *t;
        cr_assert_eq(conc_go(&t, green_select, &g), 0);
        cr_assert_eq(conc_sleep(0.05), 0);
        cr_assert_not(conc_green_dead(t), "%s: select did not block", name);
        cr_assert_eq(conc_green_kill(t, true, 5.0), 0);
        cr_assert(conc_green_killed(t));
        cr_assert_eq(g.n, CONC_EKILLED, "%s: %d", name, g.n);
        conc_green_free(t);
        /* Timeout scope in a green thread */
        g = (green_sel_t){.s = s, .fd = -1, .timeout = CONC_FOREVER, .scope = 0.1};
        cr_assert_eq(conc_go(&t, green_select, &g), 0);
        cr_assert_eq(conc_green_join(t, 10.0), 0);
        conc_green_free(t);
        cr_assert_eq(g.n, CONC_ETIMEDOUT, "%s: %d", name, g.n);
        cr_assert_geq(g.took, 0.1 - TU_EPS);
        /* ... and on a plain OS thread */
        conc_selector_ready_t ev[1];
        cr_assert_eq(conc_timeout_begin(0.1), 0);
        double t0 = tu_now();
        int n = conc_selector_select(s, 5.0, ev, 1);
        cr_assert_eq(conc_timeout_end(), 1, "%s: the scope fired", name);
        cr_assert_eq(n, CONC_ETIMEDOUT, "%s: %d", name, n);
        cr_assert_lt(tu_now() - t0, 0.1 + TU_SLACK);
        /* the selector's own timeout inside a longer scope is not the scope's */
        cr_assert_eq(conc_timeout_begin(5.0), 0);
        cr_assert_eq(conc_selector_select(s, 0.05, ev, 1), 0, "%s", name);
        cr_assert_eq(conc_timeout_end(), 0);
        close(a[0]), close(a[1]);
    }
}

/* ---- stress: 500 socketpairs, random writes, exactly what readiness says */

Test(selectors_stress, random_writes_500_pairs, .timeout = TU_TIMEOUT)
{
    enum { NP = 500 };
    raise_nofile(2 * NP + 64);
    static int p[NP][2];
    int np = 0;
    for (; np < NP; np++)
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p[np]) != 0)
            break;
    if (np < NP)
        fprintf(stderr, "note: only %d socketpairs (RLIMIT_NOFILE)\n", np);
    int rounds = TU_SANITIZED ? 5 : 20;
    unsigned seed = 12345;
    static conc_selector_ready_t ev[NP + 1];
    static char written[NP];
    EACH_BACKEND(s)
    {
        int reg = 0;
        for (int i = 0; i < np; i++) {
            int rc = conc_selector_register(s, p[i][0], CONC_SEL_READ, PTR(i), NULL);
            if (rc == CONC_ERANGE && ALL[bi_] == CONC_SEL_SELECT)
                continue; /* past FD_SETSIZE */
            cr_assert_eq(rc, 0, "%s: %s", name, conc_strerror(rc));
            reg++;
        }
        for (int r = 0; r < rounds; r++) {
            memset(written, 0, sizeof written);
            int want = 0;
            for (int i = 0; i < np; i++)
                if (rand_r(&seed) % 7 == 0 && conc_selector_get_key(s, p[i][0], &(const conc_selector_key_t *){0}) == 0) {
                    put(p[i][1], "s");
                    written[i] = 1;
                    want++;
                }
            int got = 0;
            while (got < want) {
                int n = conc_selector_select(s, 2.0, ev, NP + 1);
                cr_assert_gt(n, 0, "%s: round %d: %d of %d then %d", name, r, got, want, n);
                for (int k = 0; k < n; k++) {
                    int i = INT(ev[k].key->data);
                    cr_assert_eq(written[i], 1, "%s: round %d: pair %d reported %s", name, r, i,
                                 written[i] ? "twice" : "without data");
                    cr_assert_eq(ev[k].events, CONC_SEL_READ);
                    written[i] = 2;
                    char c;
                    cr_assert_eq(read(p[i][0], &c, 1), 1);
                }
                got += n;
            }
            cr_assert_eq(conc_selector_select(s, 0, ev, NP + 1), 0, "%s: round %d: extra", name, r);
        }
        (void)reg;
    }
    for (int i = 0; i < np; i++)
        close(p[i][0]), close(p[i][1]);
}

/* Selectors made and closed inside a green thread, each parked on: the
 * numbers of their epoll / ring / signal fds are reused from one to the
 * next, and the hub must not confuse them. */
typedef struct {
    conc_selector_backend_t b;
    int fds[2];
    int fails;
} green_reuse_t;

static void *write_soon(void *arg)
{
    int fd = INT(arg);
    conc_sleep(0.01);
    return PTR(write(fd, "w", 1));
}

static void *green_reuse(void *arg)
{
    green_reuse_t *r = arg;
    for (int i = 0; i < 4; i++) {
        conc_selector_t *s;
        if (conc_selector_new(&s, r->b) != 0)
            return PTR(-1);
        conc_selector_register(s, r->fds[0], CONC_SEL_READ, NULL, NULL);
        conc_green_t *w;
        conc_go(&w, write_soon, PTR(r->fds[1]));
        conc_selector_ready_t ev[1];
        int n = conc_selector_select(s, 5.0, ev, 1);
        char c;
        r->fails += n != 1 || read(r->fds[0], &c, 1) != 1;
        conc_green_join(w, 5.0);
        conc_green_free(w);
        conc_selector_close(s);
    }
    return NULL;
}

Test(selectors_green, selectors_made_and_closed_in_a_green_thread, .timeout = TU_TIMEOUT)
{
    for (int i = 0; i < NALL; i++) {
        conc_selector_t *probe;
        if (!open_sel(ALL[i], &probe))
            continue;
        conc_selector_close(probe);
        green_reuse_t r = {.b = ALL[i]};
        pair(r.fds);
        conc_green_t *g;
        cr_assert_eq(conc_go(&g, green_reuse, &r), 0);
        cr_assert_eq(conc_green_join(g, 20.0), 0);
        conc_green_free(g);
        cr_assert_eq(r.fails, 0, "%s: %d selects missed their wake-up", conc_selector_backend_name(ALL[i]), r.fails);
        close(r.fds[0]), close(r.fds[1]);
    }
}
