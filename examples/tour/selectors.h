/*
 * examples/tour/selectors.h — the "selectors" chapter of the tour:
 * 多路复用 (I/O multiplexing) with Python's selectors, in C.
 *
 *   selectors/backends   the same small readiness loop on select, poll,
 *                        epoll, io_uring and signal-driven I/O
 *   selectors/signal     signal-driven I/O up close: the signal, a write,
 *                        and a queue overflow turning into a full rescan
 *   selectors/green      select in a green thread while its siblings run
 *
 * Included by examples/tour.c (it uses struct section and CHECK).
 */
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>

enum { SEL_PAIRS = 8 };

/* One readiness loop: SEL_PAIRS socketpairs registered for reading, three
 * of them written; select until the three messages are read. Returns the
 * number of messages read, or -1. */
static int sel_loop(conc_selector_backend_t b, double *us_per_select)
{
    conc_selector_t *s;
    int rc = conc_selector_new(&s, b);
    if (rc == CONC_ENOTSUP) {
        printf("    %-7s skipped: io_uring refused by this kernel (seccomp / io_uring_disabled)\n",
               conc_selector_backend_name(b));
        return -2;
    }
    if (rc)
        return -1;
    int p[SEL_PAIRS][2];
    for (int i = 0; i < SEL_PAIRS; i++) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p[i]) != 0)
            return -1;
        conc_selector_register(s, p[i][0], CONC_SEL_READ, (void *)(intptr_t)i, NULL);
    }
    const int writes[3] = {1, 4, 6};
    for (int i = 0; i < 3; i++)
        if (write(p[writes[i]][1], "hello", 5) != 5)
            return -1;
    int got = 0, calls = 0;
    char order[64] = "";
    double t0 = conc_monotonic();
    while (got < 3) {
        conc_selector_ready_t ev[SEL_PAIRS];
        int n = conc_selector_select(s, 1.0, ev, SEL_PAIRS); /* for key, mask in sel.select(1): */
        calls++;
        if (n <= 0)
            break;
        for (int i = 0; i < n; i++) {
            char buf[8];
            int idx = (int)(intptr_t)ev[i].key->data;
            if (read(ev[i].key->fd, buf, sizeof buf) == 5) /* key.fileobj.recv(8) */
                got++;
            snprintf(order + strlen(order), sizeof order - strlen(order), " pair%d", idx);
        }
    }
    *us_per_select = (conc_monotonic() - t0) / calls * 1e6;
    printf("    %-7s %d select call(s), ready:%s\n", conc_selector_backend_name(b), calls, order);
    conc_selector_close(s);
    for (int i = 0; i < SEL_PAIRS; i++)
        close(p[i][0]), close(p[i][1]);
    return got;
}

static int sec_sel_backends(void)
{
    printf("  %d socketpairs registered for EVENT_READ; pairs 1, 4 and 6 get \"hello\".\n"
           "  The same loop on every backend (the loop does not change, the kernel call does):\n",
           SEL_PAIRS);
    const conc_selector_backend_t all[] = {CONC_SEL_SELECT, CONC_SEL_POLL, CONC_SEL_EPOLL,
                                           CONC_SEL_URING, CONC_SEL_SIGNAL};
    for (int i = 0; i < 5; i++) {
        double us = 0;
        int got = sel_loop(all[i], &us);
        if (got == -2)
            continue;
        CHECK(got == 3);
    }
    conc_selector_t *d;
    CHECK(conc_selector_new(&d, CONC_SEL_DEFAULT) == 0);
    printf("  DefaultSelector here is %s (io_uring polls must be re-armed for every reported fd,\n"
           "  so for readiness it is not faster; see docs/selectors.md)\n",
           conc_selector_backend_name(conc_selector_backend(d)));
    conc_selector_close(d);
    return 0;
}

static int sec_sel_signal(void)
{
    conc_selector_t *s;
    CHECK(conc_selector_new(&s, CONC_SEL_SIGNAL) == 0);
    if (!s)
        return 0;
    enum { N = 16 };
    int p[N][2];
    for (int i = 0; i < N; i++) {
        CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p[i]) == 0);
        conc_selector_register(s, p[i][0], CONC_SEL_READ, (void *)(intptr_t)i, NULL);
    }
    printf("  register(fd) set O_ASYNC=%s and F_SETSIG=SIGRTMIN+%d: the kernel now signals this\n"
           "  thread (through a signalfd) whenever an fd has an event.\n",
           (fcntl(p[0][0], F_GETFL) & O_ASYNC) ? "on" : "off", fcntl(p[0][0], F_GETSIG) - SIGRTMIN);
    conc_selector_ready_t ev[N];
    CHECK(conc_selector_select(s, 0, ev, N) == 0); /* nothing yet */
    CHECK(write(p[5][1], "x", 1) == 1);
    int n = conc_selector_select(s, 1.0, ev, N);
    CHECK(n == 1 && (intptr_t)ev[0].key->data == 5);
    printf("  a write to pair 5 -> one signal {si_fd, POLLIN} -> select reports pair %d\n",
           n == 1 ? (int)(intptr_t)ev[0].key->data : -1);
    char c;
    CHECK(read(p[5][0], &c, 1) == 1);

    struct rlimit rl, zero;
    getrlimit(RLIMIT_SIGPENDING, &rl);
    zero = (struct rlimit){0, rl.rlim_max};
    setrlimit(RLIMIT_SIGPENDING, &zero);
    for (int i = 0; i < N; i++)
        CHECK(write(p[i][1], "y", 1) == 1);
    n = conc_selector_select(s, 1.0, ev, N);
    setrlimit(RLIMIT_SIGPENDING, &rl);
    printf("  with RLIMIT_SIGPENDING=0 the real-time queue overflows: the kernel sends SIGIO,\n"
           "  the per-fd signals are lost, and select rescans all %d fds with poll: %d ready,\n"
           "  %ld rescan(s)\n",
           N, n, conc_selector_rescans(s));
    CHECK(n == N);
    CHECK(conc_selector_rescans(s) >= 1);
    conc_selector_close(s);
    for (int i = 0; i < N; i++)
        close(p[i][0]), close(p[i][1]);
    return 0;
}

typedef struct {
    conc_selector_t *s;
    int wfd;
    int ticks, ticks_seen, n;
} sel_green_t;

static void *sel_green_waiter(void *arg)
{
    sel_green_t *g = arg;
    conc_selector_ready_t ev[1];
    g->n = conc_selector_select(g->s, 5.0, ev, 1); /* parks only this green thread */
    g->ticks_seen = g->ticks;
    return NULL;
}

static void *sel_green_ticker(void *arg)
{
    sel_green_t *g = arg;
    for (int i = 0; i < 10; i++) {
        g->ticks++;
        conc_sleep(0.005);
    }
    return (void *)(intptr_t)write(g->wfd, "!", 1);
}

static int sec_sel_green(void)
{
    int p[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p) == 0);
    sel_green_t g = {.wfd = p[1]};
    CHECK(conc_selector_new(&g.s, CONC_SEL_POLL) == 0);
    conc_selector_register(g.s, p[0], CONC_SEL_READ, NULL, NULL);
    conc_green_t *a, *b;
    conc_go(&a, sel_green_waiter, &g);
    conc_go(&b, sel_green_ticker, &g);
    conc_green_join(a, 10.0);
    conc_green_join(b, 10.0);
    conc_green_free(a);
    conc_green_free(b);
    printf("  a green thread in select (poll backend) while a sibling ticks on the same OS\n"
           "  thread: the sibling ticked %d times before its write woke select (%d ready)\n",
           g.ticks_seen, g.n);
    CHECK(g.n == 1 && g.ticks_seen == 10);
    conc_selector_close(g.s);
    close(p[0]), close(p[1]);
    return 0;
}

static const struct section selectors_sections[] = {
    {"backends", "one readiness loop on select, poll, epoll, io_uring and signal-driven I/O",
     sec_sel_backends, "for key, mask in selectors.DefaultSelector().select(1): key.fileobj.recv(8)"},
    {"signal", "signal-driven I/O: O_ASYNC + F_SETSIG, and the SIGIO rescan on queue overflow",
     sec_sel_signal, "fcntl(fd, F_SETSIG, SIGRTMIN); fcntl(fd, F_SETFL, O_ASYNC)  # no Python API"},
    {"green", "select in a green thread parks only that green thread", sec_sel_green,
     "gevent.spawn(sel.select, 5)  # with gevent.monkey: only the greenlet waits"},
    {NULL, NULL, NULL, NULL},
};
