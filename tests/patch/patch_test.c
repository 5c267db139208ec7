/*
 * tests/patch/patch_test.c — libconc_patch.so (conc/patch.h): unmodified
 * blocking libc calls made from green threads park only the green thread
 * (a ticker green thread keeps ticking while another is blocked in read,
 * poll, sleep...), the same calls on OS threads behave as before, kills
 * and timeout scopes cut a patched call short (-1, EINTR), and real
 * blocking clients — hiredis's synchronous API against redis-server,
 * libcurl's easy API against a conc HTTP server — run concurrently on the
 * green threads of one OS thread.
 *
 * Runs under LD_PRELOAD=libconc_patch.so (tests/patch/CMakeLists.txt);
 * linked with libconc.so so that the patch and the test share one libconc.
 */
#include "../test_util.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <conc/patch.h>

#ifdef CONC_PATCH_TEST_HIREDIS
#include <hiredis/hiredis.h>
#endif
#ifdef CONC_PATCH_TEST_CURL
#include <curl/curl.h>
#endif
#include "redis_server.h"

static void need_patch(void)
{
    bool (*active)(void) = (bool (*)(void))dlsym(RTLD_DEFAULT, "conc_patch_active");
    cr_assert(active, "libconc_patch.so is not loaded: run under LD_PRELOAD (ctest does)");
    cr_assert(active());
}

/* conc_patch_set_cut_errno, found at run time (the test does not link the
 * patch: it is preloaded). */
static int set_cut_errno(int e)
{
    int (*f)(int) = (int (*)(int))dlsym(RTLD_DEFAULT, "conc_patch_set_cut_errno");
    cr_assert(f);
    return f(e);
}

/* ------------------------------------------------------------ ticker */

static _Atomic int ticks;
static _Atomic bool stop_ticking;

static void *ticker(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_ticking)) {
        atomic_fetch_add(&ticks, 1);
        conc_sleep(0.001);
    }
    return NULL;
}

static conc_green_t *ticker_start(void)
{
    atomic_store(&ticks, 0);
    atomic_store(&stop_ticking, false);
    conc_green_t *t;
    cr_assert_eq(conc_go(&t, ticker, NULL), 0);
    return t;
}

/* Stop the ticker; returns how often it ticked. */
static int ticker_stop(conc_green_t *t)
{
    atomic_store(&stop_ticking, true);
    cr_assert_eq(conc_green_join(t, 5), 0);
    conc_green_free(t);
    return atomic_load(&ticks);
}

/* A green thread that waits `delay` seconds, then writes `n` bytes to fd. */
struct later {
    int fd;
    double delay;
    size_t n;
};

static void *write_later(void *arg)
{
    struct later *l = arg;
    conc_sleep(l->delay);
    char buf[64];
    memset(buf, 'x', sizeof buf);
    size_t n = l->n < sizeof buf ? l->n : sizeof buf;
    ssize_t r = write(l->fd, buf, n);
    (void)r;
    return NULL;
}

static conc_green_t *go_write_later(struct later *l)
{
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, write_later, l), 0);
    return g;
}

static void join_free(conc_green_t *g)
{
    cr_assert_eq(conc_green_join(g, 10), 0);
    conc_green_free(g);
}

/* A blocked call under test, on a green thread: fn(fds) -> result. */
struct call {
    int fd;
    ssize_t (*fn)(struct call *c);
    ssize_t r;
    int err;
    double took;
    char buf[4096];
};

static void *do_call(void *arg)
{
    struct call *c = arg;
    double t0 = tu_now();
    errno = 0;
    c->r = c->fn(c);
    c->err = errno;
    c->took = tu_now() - t0;
    return NULL;
}

/* Run c->fn on a green thread while a ticker runs and another green thread
 * writes 5 bytes into wfd after 50 ms; the call must return those bytes
 * and the ticker must have ticked meanwhile. */
static void blocked_call_is_cooperative(struct call *c, int wfd)
{
    conc_green_t *t = ticker_start();
    struct later l = {wfd, 0.05, 5};
    conc_green_t *w = go_write_later(&l), *g;
    cr_assert_eq(conc_go(&g, do_call, c), 0);
    join_free(g);
    join_free(w);
    int n = ticker_stop(t);
    cr_assert_eq(c->r, 5, "r=%zd errno=%d", c->r, c->err);
    cr_assert_geq(c->took, 0.04);
    /* stalled, the ticker would have ticked once (before the call) */
    cr_assert_gt(n, 3, "the hub stalled: %d ticks while the call was blocked", n);
}

static ssize_t call_read(struct call *c) { return read(c->fd, c->buf, sizeof c->buf); }
static ssize_t call_recv(struct call *c) { return recv(c->fd, c->buf, sizeof c->buf, 0); }
static ssize_t call_recvfrom(struct call *c)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    return recvfrom(c->fd, c->buf, sizeof c->buf, 0, (struct sockaddr *)&ss, &len);
}
static ssize_t call_recvmsg(struct call *c)
{
    struct iovec v = {c->buf, sizeof c->buf};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
    return recvmsg(c->fd, &m, 0);
}
static ssize_t call_readv(struct call *c)
{
    struct iovec v[2] = {{c->buf, 2}, {c->buf + 2, sizeof c->buf - 2}};
    return readv(c->fd, v, 2);
}
static ssize_t call_poll(struct call *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    int r = poll(&p, 1, 5000);
    return r == 1 && (p.revents & POLLIN) ? read(c->fd, c->buf, sizeof c->buf) : -100 - r;
}
static ssize_t call_ppoll(struct call *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    struct timespec ts = {5, 0};
    int r = ppoll(&p, 1, &ts, NULL);
    return r == 1 && (p.revents & POLLIN) ? read(c->fd, c->buf, sizeof c->buf) : -100 - r;
}
static ssize_t call_poll2(struct call *c)
{
    /* two fds: an idle one (stdin's copy) and ours */
    int idle[2];
    if (pipe(idle) != 0)
        return -200;
    struct pollfd p[2] = {{.fd = idle[0], .events = POLLIN}, {.fd = c->fd, .events = POLLIN}};
    int r = poll(p, 2, 5000);
    close(idle[0]);
    close(idle[1]);
    return r == 1 && (p[1].revents & POLLIN) ? read(c->fd, c->buf, sizeof c->buf) : -100 - r;
}
static ssize_t call_select(struct call *c)
{
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(c->fd, &rd);
    struct timeval tv = {5, 0};
    int r = select(c->fd + 1, &rd, NULL, NULL, &tv);
    return r == 1 && FD_ISSET(c->fd, &rd) && tv.tv_sec < 5 ? read(c->fd, c->buf, sizeof c->buf) : -100 - r;
}
static ssize_t call_epoll(struct call *c)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event e = {.events = EPOLLIN, .data.fd = c->fd}, out[4];
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
    int r = epoll_wait(ep, out, 4, 5000);
    close(ep);
    return r == 1 && out[0].data.fd == c->fd ? read(c->fd, c->buf, sizeof c->buf) : -100 - r;
}

/* a blocking pipe and a blocking socketpair: [0] read end, [1] write end */
static void blocking_pipe(int p[2]) { cr_assert_eq(pipe2(p, O_CLOEXEC), 0); }
static void blocking_socketpair(int p[2]) { cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p), 0); }

static void check_call(ssize_t (*fn)(struct call *), bool sock)
{
    need_patch();
    int p[2];
    if (sock)
        blocking_socketpair(p);
    else
        blocking_pipe(p);
    struct call c = {.fd = p[0], .fn = fn};
    blocked_call_is_cooperative(&c, p[1]);
    close(p[0]);
    close(p[1]);
}

TestSuite(patch, .timeout = TU_TIMEOUT);

Test(patch, loaded_and_shares_libconc)
{
    need_patch();
    /* The patch and the test see one libconc: the symbol comes from one place. */
    void *a = dlsym(RTLD_DEFAULT, "conc_context_kind");
    cr_assert_eq(a, (void *)conc_context_kind);
    cr_assert_eq(conc_context_kind(), CONC_CTX_THREAD);
}

Test(patch, read_pipe) { check_call(call_read, false); }
Test(patch, read_socket) { check_call(call_read, true); }
Test(patch, readv_pipe) { check_call(call_readv, false); }
Test(patch, readv_socket) { check_call(call_readv, true); }
Test(patch, recv) { check_call(call_recv, true); }
Test(patch, recvfrom) { check_call(call_recvfrom, true); }
Test(patch, recvmsg) { check_call(call_recvmsg, true); }
Test(patch, poll_one) { check_call(call_poll, false); }
Test(patch, poll_two) { check_call(call_poll2, true); }
Test(patch, ppoll) { check_call(call_ppoll, true); }
Test(patch, select) { check_call(call_select, false); }
Test(patch, epoll_wait) { check_call(call_epoll, true); }

/* A reader green thread that takes `total` bytes slowly. */
struct slow_reader {
    int fd;
    size_t total, got;
};

static void *slow_read(void *arg)
{
    struct slow_reader *s = arg;
    char buf[8192];
    while (s->got < s->total) {
        conc_sleep(0.001);
        ssize_t r = read(s->fd, buf, sizeof buf);
        if (r <= 0)
            break;
        s->got += (size_t)r;
    }
    return NULL;
}

/* A blocking write of more than the buffer holds writes all of it (a
 * blocking write's contract), parking while a slow reader catches up. The
 * work runs on a green thread, which records what it saw (cr_assert is
 * for the test's own context). */
struct bw {
    bool sock, vec;
};
static void *big_write_body(void *arg);
static void run_green(void *(*fn)(void *), void *arg)
{
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, fn, arg), 0);
    join_free(g);
}
static _Atomic int bw_result = -1;
static void big_write(bool sock, bool vec)
{
    need_patch();
    struct bw b = {sock, vec};
    run_green(big_write_body, &b);
    cr_assert_eq(atomic_load(&bw_result), 1);
}
Test(patch, write_all_socket) { big_write(true, false); }
Test(patch, writev_all_socket) { big_write(true, true); }
Test(patch, write_all_pipe) { big_write(false, false); }
Test(patch, writev_all_pipe) { big_write(false, true); }


static void *big_write_body(void *arg)
{
    /* cr_assert is only for the test's own context: do the work here and
     * let asserts run (Criterion asserts longjmp out of the test; inside a
     * green thread, we check results by hand instead). */
    struct bw *b = arg;
    int p[2];
    if (b->sock ? socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p) : pipe2(p, O_CLOEXEC))
        return NULL;
    size_t n = (size_t)1 << 20;
    char *data = malloc(n);
    memset(data, 'y', n);
    struct slow_reader s = {p[0], n, 0};
    atomic_store(&ticks, 0);
    atomic_store(&stop_ticking, false);
    conc_green_t *t, *r;
    conc_go(&t, ticker, NULL);
    conc_go(&r, slow_read, &s);
    ssize_t w;
    if (b->vec) {
        struct iovec v[3] = {{data, 1000}, {data + 1000, n / 2 - 1000}, {data + n / 2, n / 2}};
        w = writev(p[1], v, 3);
    } else {
        w = write(p[1], data, n);
    }
    conc_green_join(r, 10);
    conc_green_free(r);
    atomic_store(&stop_ticking, true);
    conc_green_join(t, 5);
    conc_green_free(t);
    atomic_store(&bw_result, w == (ssize_t)n && s.got == n && atomic_load(&ticks) > 5);
    free(data);
    close(p[0]);
    close(p[1]);
    return NULL;
}

/* ------------------------------------------------------------ sleeps */

struct sleeper {
    int kind;
    int rc;
    double took;
};

static void *do_sleep(void *arg)
{
    struct sleeper *s = arg;
    double t0 = tu_now();
    struct timespec ts = {0, 100000000}, abs;
    switch (s->kind) {
    case 0:
        s->rc = (int)sleep(1);
        break;
    case 1:
        s->rc = usleep(100000);
        break;
    case 2:
        s->rc = nanosleep(&ts, NULL);
        break;
    case 3:
        s->rc = clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
        break;
    case 4:
        clock_gettime(CLOCK_REALTIME, &abs);
        abs.tv_nsec += 100000000;
        if (abs.tv_nsec >= 1000000000) {
            abs.tv_sec++;
            abs.tv_nsec -= 1000000000;
        }
        s->rc = clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &abs, NULL);
        break;
    }
    s->took = tu_now() - t0;
    return NULL;
}

/* n green threads sleeping at once take the time of one, and the ticker
 * ticks meanwhile. */
static void sleeps_overlap(int kind, double each)
{
    need_patch();
    enum { N = 20 };
    struct sleeper s[N];
    conc_green_t *g[N];
    conc_green_t *t = ticker_start();
    double t0 = tu_now();
    for (int i = 0; i < N; i++) {
        s[i] = (struct sleeper){.kind = kind, .rc = -7};
        cr_assert_eq(conc_go(&g[i], do_sleep, &s[i]), 0);
    }
    for (int i = 0; i < N; i++)
        join_free(g[i]);
    double took = tu_now() - t0;
    int k = ticker_stop(t);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(s[i].rc, 0);
        cr_assert_geq(s[i].took, each - TU_EPS);
    }
    cr_assert_lt(took, each + TU_SLACK, "%d sleeps of %.1f s took %.2f s: they did not overlap", N, each, took);
    cr_assert_gt(k, (int)(each * 1000 / 25), "ticks: %d", k);
}

Test(patch, sleep_overlaps) { sleeps_overlap(0, 1.0); }
Test(patch, usleep_overlaps) { sleeps_overlap(1, 0.1); }
Test(patch, nanosleep_overlaps) { sleeps_overlap(2, 0.1); }
Test(patch, clock_nanosleep_overlaps) { sleeps_overlap(3, 0.1); }
Test(patch, clock_nanosleep_abstime_overlaps) { sleeps_overlap(4, 0.1); }

/* --------------------------------------------------- accept, connect */

struct conn_test {
    int lfd, port;
    int afd, cfd;
    int aerr, cerr;
    char got[8];
    ssize_t n;
};

static void *do_accept(void *arg)
{
    struct conn_test *c = arg;
    c->afd = accept(c->lfd, NULL, NULL);
    c->aerr = errno;
    if (c->afd >= 0)
        c->n = read(c->afd, c->got, sizeof c->got);
    return NULL;
}

static void *do_connect(void *arg)
{
    struct conn_test *c = arg;
    conc_sleep(0.03);
    c->cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(c->cfd, (struct sockaddr *)&a, sizeof a) != 0)
        c->cerr = errno;
    else if (write(c->cfd, "hello", 5) != 5)
        c->cerr = errno;
    return NULL;
}

static int blocking_listener(int *port)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(s, 16), 0);
    cr_assert_eq(getsockname(s, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return s;
}

Test(patch, accept_and_connect)
{
    need_patch();
    struct conn_test c = {.afd = -1, .cfd = -1};
    c.lfd = blocking_listener(&c.port);
    conc_green_t *t = ticker_start(), *a, *b;
    cr_assert_eq(conc_go(&a, do_accept, &c), 0);
    cr_assert_eq(conc_go(&b, do_connect, &c), 0);
    join_free(a);
    join_free(b);
    int k = ticker_stop(t);
    cr_assert_geq(c.afd, 0, "accept: errno %d", c.aerr);
    cr_assert_eq(c.cerr, 0, "connect: errno %d", c.cerr);
    cr_assert_eq(c.n, 5);
    cr_assert_eq(memcmp(c.got, "hello", 5), 0);
    cr_assert_gt(k, 3);
    /* the flags are the caller's: blocking stays blocking */
    cr_assert_eq(fcntl(c.cfd, F_GETFL) & O_NONBLOCK, 0);
    cr_assert_eq(fcntl(c.afd, F_GETFL) & O_NONBLOCK, 0);
    close(c.afd);
    close(c.cfd);
    close(c.lfd);
}

struct refused {
    int rc, err;
};
static void *connect_refused(void *arg)
{
    struct refused *r = arg;
    int port;
    int l = blocking_listener(&port);
    close(l); /* nobody listens there now */
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    r->rc = connect(s, (struct sockaddr *)&a, sizeof a);
    r->err = errno;
    close(s);
    return NULL;
}

Test(patch, connect_refused_reports_the_error)
{
    need_patch();
    struct refused r = {0, 0};
    run_green(connect_refused, &r);
    cr_assert_eq(r.rc, -1);
    cr_assert_eq(r.err, ECONNREFUSED);
}

/* A connect whose wait the hub cannot do (select's hub, an fd past
 * FD_SETSIZE) waits as a plain thread would: it honours SO_SNDTIMEO
 * instead of spinning. The listener's accept queue is full, so the SYN
 * goes unanswered and the connection stays in progress. */
struct stuck {
    int port, rc, err;
    double took;
};
static void *connect_stuck(void *arg)
{
    struct stuck *st = arg;
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int hi = dup2(s, 1500);
    close(s);
    struct timeval tv = {0, 300000};
    setsockopt(hi, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)st->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    double t0 = tu_now();
    st->rc = connect(hi, (struct sockaddr *)&a, sizeof a);
    st->err = errno;
    st->took = tu_now() - t0;
    close(hi);
    return NULL;
}

Test(patch, connect_the_hub_cannot_wait_for_does_not_spin, .timeout = 30)
{
    need_patch();
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < 1600)
        cr_skip_test("RLIMIT_NOFILE's hard limit %ld is below 1600", (long)rl.rlim_max);
    rl.rlim_cur = rl.rlim_max;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    conc_hub_opts_t o = {.backend = CONC_HUB_SELECT};
    cr_assert_eq(conc_hub_init(&o), 0);
    struct stuck st = {0, 0, 0, 0};
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert_eq(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(l, 0), 0);
    cr_assert_eq(getsockname(l, (struct sockaddr *)&a, &len), 0);
    st.port = ntohs(a.sin_port);
    int fill[3];
    for (int i = 0; i < 3; i++) { /* fill the accept queue (from this OS thread: not patched) */
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        int r = connect(fill[i], (struct sockaddr *)&a, sizeof a);
        cr_assert(r == 0 || errno == EINPROGRESS);
    }
    tu_sleep(0.05);
    run_green(connect_stuck, &st);
    cr_assert_eq(st.rc, -1);
    cr_assert_eq(st.err, EINPROGRESS, "errno %d", st.err);
    cr_assert_geq(st.took, 0.25);
    cr_assert_lt(st.took, 0.3 + TU_SLACK);
    for (int i = 0; i < 3; i++)
        close(fill[i]);
    close(l);
}

/* ------------------------------------------------------- getaddrinfo */

struct gai {
    int rc;
    int family;
};
static void *do_gai(void *arg)
{
    struct gai *g = arg;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    g->rc = getaddrinfo("localhost", "http", &hints, &res);
    if (g->rc == 0 && res) {
        g->family = res->ai_family;
        freeaddrinfo(res);
    }
    return NULL;
}

Test(patch, getaddrinfo_offloaded)
{
    need_patch();
    enum { N = 8 };
    struct gai g[N];
    conc_green_t *h[N];
    conc_green_t *t = ticker_start();
    for (int i = 0; i < N; i++) {
        g[i] = (struct gai){-1, 0};
        cr_assert_eq(conc_go(&h[i], do_gai, &g[i]), 0);
    }
    for (int i = 0; i < N; i++)
        join_free(h[i]);
    ticker_stop(t);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(g[i].rc, 0, "getaddrinfo: %s", gai_strerror(g[i].rc));
        cr_assert(g[i].family == AF_INET || g[i].family == AF_INET6);
    }
}

/* ------------------------------------------ unchanged where it should be */

static void *write_after_50ms(void *arg)
{
    int fd = (int)(intptr_t)arg;
    tu_sleep(0.05);
    ssize_t r = write(fd, "12345", 5);
    (void)r;
    return NULL;
}

Test(patch, os_thread_blocks_as_before)
{
    need_patch();
    int p[2];
    blocking_pipe(p);
    conc_thread_t *th;
    cr_assert_eq(conc_thread_spawn(&th, write_after_50ms, (void *)(intptr_t)p[1], NULL), 0);
    char buf[8];
    double t0 = tu_now();
    cr_assert_eq(read(p[0], buf, sizeof buf), 5); /* a plain blocking read */
    cr_assert_geq(tu_now() - t0, 0.04);
    cr_assert_eq(conc_thread_join(th, 5, NULL), 0);
    conc_thread_free(th);
    t0 = tu_now();
    cr_assert_eq(usleep(20000), 0);
    cr_assert_geq(tu_now() - t0, 0.019);
    struct pollfd pf = {.fd = p[0], .events = POLLIN};
    t0 = tu_now();
    cr_assert_eq(poll(&pf, 1, 30), 0);
    cr_assert_geq(tu_now() - t0, 0.029);
    close(p[0]);
    close(p[1]);
}

struct nb {
    ssize_t r1, r2, r3;
    int e1, e2;
    double took;
};
static void *nonblocking_calls(void *arg)
{
    struct nb *n = arg;
    int p[2], s[2];
    char buf[8];
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s))
        return NULL;
    double t0 = tu_now();
    n->r1 = read(p[0], buf, sizeof buf); /* O_NONBLOCK: EAGAIN at once */
    n->e1 = errno;
    n->r2 = recv(s[0], buf, sizeof buf, MSG_DONTWAIT); /* MSG_DONTWAIT on a blocking socket */
    n->e2 = errno;
    struct pollfd pf = {.fd = s[0], .events = POLLIN};
    n->r3 = poll(&pf, 1, 0); /* a zero timeout only looks */
    n->took = tu_now() - t0;
    close(p[0]);
    close(p[1]);
    close(s[0]);
    close(s[1]);
    return NULL;
}

Test(patch, nonblocking_requests_are_kept)
{
    need_patch();
    struct nb n;
    memset(&n, 0, sizeof n);
    run_green(nonblocking_calls, &n);
    cr_assert_eq(n.r1, -1);
    cr_assert_eq(n.e1, EAGAIN);
    cr_assert_eq(n.r2, -1);
    cr_assert_eq(n.e2, EAGAIN);
    cr_assert_eq(n.r3, 0);
    cr_assert_lt(n.took, 0.5);
}

/* ------------------------------------------------------------ timeouts */

static ssize_t call_read_rcvtimeo(struct call *c)
{
    struct timeval tv = {0, 100000};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return read(c->fd, c->buf, sizeof c->buf);
}
static ssize_t call_poll_timeout(struct call *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    return poll(&p, 1, 100);
}
static ssize_t call_poll_none(struct call *c)
{
    (void)c;
    return poll(NULL, 0, 100);
}
static ssize_t call_select_timeout(struct call *c)
{
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(c->fd, &rd);
    struct timeval tv = {0, 100000};
    return select(c->fd + 1, &rd, NULL, NULL, &tv);
}
static ssize_t call_epoll_timeout(struct call *c)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event e = {.events = EPOLLIN, .data.fd = c->fd}, out[2];
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
    int r = epoll_wait(ep, out, 2, 100);
    close(ep);
    return r;
}
static ssize_t call_accept_rcvtimeo(struct call *c)
{
    int port;
    int l = blocking_listener(&port);
    struct timeval tv = {0, 100000};
    setsockopt(l, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int r = accept(l, NULL, NULL);
    int e = errno;
    close(l);
    (void)c;
    errno = e;
    return r;
}

/* The call times out after ~100 ms with `want` (and errno `err` if -1),
 * while the ticker ticks. */
static void times_out(ssize_t (*fn)(struct call *), ssize_t want, int err)
{
    need_patch();
    int p[2];
    blocking_socketpair(p);
    struct call c = {.fd = p[0], .fn = fn};
    conc_green_t *t = ticker_start(), *g;
    cr_assert_eq(conc_go(&g, do_call, &c), 0);
    join_free(g);
    int k = ticker_stop(t);
    cr_assert_eq(c.r, want, "r=%zd errno=%d", c.r, c.err);
    if (want == -1)
        cr_assert_eq(c.err, err, "errno=%d", c.err);
    cr_assert_geq(c.took, 0.1 - TU_EPS);
    cr_assert_lt(c.took, 0.1 + TU_SLACK);
    cr_assert_gt(k, 3);
    close(p[0]);
    close(p[1]);
}

Test(patch, so_rcvtimeo_read) { times_out(call_read_rcvtimeo, -1, EAGAIN); }
Test(patch, so_rcvtimeo_accept) { times_out(call_accept_rcvtimeo, -1, EAGAIN); }
Test(patch, poll_timeout) { times_out(call_poll_timeout, 0, 0); }
Test(patch, poll_no_fds_sleeps) { times_out(call_poll_none, 0, 0); }
Test(patch, select_timeout) { times_out(call_select_timeout, 0, 0); }
Test(patch, epoll_wait_timeout) { times_out(call_epoll_timeout, 0, 0); }

/* ------------------------------------------------- kills and scopes */

static ssize_t call_sleep(struct call *c)
{
    (void)c;
    return (ssize_t)sleep(10);
}
static ssize_t call_nanosleep(struct call *c)
{
    struct timespec ts = {10, 0}, rem = {0, 0};
    int r = nanosleep(&ts, &rem);
    int e = errno;
    snprintf(c->buf, sizeof c->buf, "%ld", (long)rem.tv_sec);
    errno = e;
    return r;
}

/* Kill a green thread blocked in fn after 50 ms: the call returns at once
 * with `want`, errno `err`. */
static void kill_cuts(ssize_t (*fn)(struct call *), ssize_t want, int err)
{
    need_patch();
    int p[2];
    blocking_pipe(p);
    struct call c = {.fd = p[0], .fn = fn};
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, do_call, &c), 0);
    conc_sleep(0.05);
    cr_assert_eq(conc_green_kill(g, true, 5), 0);
    conc_green_free(g);
    cr_assert_eq(c.r, want, "r=%zd", c.r);
    if (want == -1)
        cr_assert_eq(c.err, err, "errno=%d", c.err);
    cr_assert_lt(c.took, 2.0);
    close(p[0]);
    close(p[1]);
}

Test(patch, kill_cuts_read) { kill_cuts(call_read, -1, EINTR); }
Test(patch, kill_cuts_poll) { kill_cuts(call_poll, -99, 0); /* poll returned -1 (call_poll: -100 - r) */ }
Test(patch, kill_cuts_sleep) { kill_cuts(call_sleep, 10, 0); /* the seconds left */ }
Test(patch, kill_cuts_nanosleep) { kill_cuts(call_nanosleep, -1, EINTR); }

struct scoped {
    ssize_t r;
    int err, fired;
    double took;
    int fd;
};
static void *scoped_read(void *arg)
{
    struct scoped *s = arg;
    char buf[8];
    double t0 = tu_now();
    conc_timeout_begin(0.05);
    s->r = read(s->fd, buf, sizeof buf);
    s->err = errno;
    s->fired = conc_timeout_end();
    s->took = tu_now() - t0;
    return NULL;
}

Test(patch, timeout_scope_cuts_read)
{
    need_patch();
    int p[2];
    blocking_socketpair(p);
    struct scoped s = {.fd = p[0]};
    run_green(scoped_read, &s);
    cr_assert_eq(s.r, -1);
    cr_assert_eq(s.err, EINTR);
    cr_assert_eq(s.fired, 1);
    cr_assert_geq(s.took, 0.05 - TU_EPS);
    cr_assert_lt(s.took, 0.05 + TU_SLACK);
    close(p[0]);
    close(p[1]);
}

Test(patch, cut_errno_can_be_chosen)
{
    need_patch();
    cr_assert_eq(set_cut_errno(0), CONC_EINVAL);
    cr_assert_eq(set_cut_errno(ECANCELED), EINTR);
    int p[2];
    blocking_pipe(p);
    struct scoped s = {.fd = p[0]};
    run_green(scoped_read, &s);
    cr_assert_eq(set_cut_errno(EINTR), ECANCELED);
    cr_assert_eq(s.r, -1);
    cr_assert_eq(s.err, ECANCELED);
    close(p[0]);
    close(p[1]);
}

/* close(2) makes the hub forget the fd: a new fd with the same number is
 * waited on afresh (else its reader would never wake). */
static void *close_then_reuse(void *arg)
{
    int *ok = arg;
    int p[2];
    if (pipe2(p, O_CLOEXEC))
        return NULL;
    struct timeval tv = {0, 0};
    (void)tv;
    char buf[8];
    conc_timeout_begin(0.02);
    ssize_t r = read(p[0], buf, sizeof buf); /* the hub now watches p[0] */
    conc_timeout_end();
    int old = p[0];
    close(p[0]);
    close(p[1]);
    int q[2];
    if (pipe2(q, O_CLOEXEC))
        return NULL;
    struct later l = {q[1], 0.03, 3};
    conc_green_t *w;
    conc_go(&w, write_later, &l);
    conc_timeout_begin(2);
    ssize_t r2 = read(q[0], buf, sizeof buf);
    conc_timeout_end();
    conc_green_join(w, 5);
    conc_green_free(w);
    *ok = r == -1 && (q[0] == old || q[1] == old) && r2 == 3;
    close(q[0]);
    close(q[1]);
    return NULL;
}

Test(patch, close_forgets_the_fd)
{
    need_patch();
    int ok = -1;
    run_green(close_then_reuse, &ok);
    cr_assert_eq(ok, 1);
}

/* The same when close(2) comes from the OS thread's own context after the
 * join of its last green thread: that context stays attached to its hub
 * (conc_context_kind says CONC_CTX_THREAD for it then), and the hub still
 * watches what its green threads waited on, so the close must still reach
 * the hub. A hub that forgot the old fd adds the new one when its reader
 * parks and sees the data that comes 10 ms later; one that did not waits
 * for an edge that never comes (before: the 90 ms Timeout cut the read;
 * the stale check finds it 0.1 s or more later). */
static void *watch_then_time_out(void *arg)
{
    int fd = *(int *)arg;
    char buf[8];
    conc_timeout_begin(0.02);
    ssize_t r = read(fd, buf, sizeof buf); /* the hub now watches fd */
    conc_timeout_end();
    return (void *)(intptr_t)r;
}

struct reread {
    int fd;
    ssize_t r;
    int err;
};

static void *read_with_short_timeout(void *arg)
{
    struct reread *rr = arg;
    char buf[8];
    conc_timeout_begin(0.09); /* the data comes after 0.01 s */
    rr->r = read(rr->fd, buf, sizeof buf);
    rr->err = errno;
    conc_timeout_end();
    return NULL;
}

Test(patch, close_from_the_idle_main_context_forgets_the_fd, .timeout = TU_TIMEOUT)
{
    need_patch();
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, watch_then_time_out, &p[0]), 0);
    void *res = NULL;
    cr_assert_eq(conc_green_join(g, CONC_FOREVER), 0); /* no deadline: main stays attached */
    cr_assert_eq(conc_green_get(g, 0, &res), 0);
    conc_green_free(g);
    cr_assert_eq((intptr_t)res, -1);
    cr_assert_eq(conc_context_kind(), CONC_CTX_THREAD);
    int old = p[0];
    close(p[0]); /* from the idle main context, through the patch */
    close(p[1]);
    int q[2];
    cr_assert_eq(pipe2(q, O_CLOEXEC), 0);
    cr_assert(q[0] == old || q[1] == old, "the number was not reused");
    int rd = q[0] == old ? q[0] : q[1] == old ? q[1] : q[0];
    if (rd == q[1]) { /* the write end got the number */
        close(q[0]);
        close(q[1]);
        cr_skip_test("the old number went to the write end");
    }
    struct reread rr = {q[0], 0, 0};
    cr_assert_eq(conc_go(&g, read_with_short_timeout, &rr), 0);
    struct later l = {q[1], 0.01, 3};
    conc_green_t *w = go_write_later(&l);
    cr_assert_eq(conc_green_join(g, 5), 0);
    conc_green_free(g);
    cr_assert_eq(conc_green_join(w, 5), 0);
    conc_green_free(w);
    cr_assert_eq(rr.r, 3, "the read of a reused fd number waited for an edge: r %zd errno %d", rr.r, rr.err);
    close(q[0]);
    close(q[1]);
}

/* ------------------------------------------------- hiredis, unmodified */

#ifdef CONC_PATCH_TEST_HIREDIS
static redis_server_t redis;

static void redis_up(void)
{
    need_patch();
    char why[256];
    if (redis_server_start(&redis, why, sizeof why) != 0)
        cr_skip_test("hiredis tests skipped: %s", why);
}

static void redis_down(void) { redis_server_stop(&redis); }

struct rclient {
    int id, ok, err;
    double took;
};

/* BLPOP on a key nobody pushes to: the server answers nil after 0.3 s.
 * 20 of them at once take 0.3 s, not 6 s. */
static void *blpop_client(void *arg)
{
    struct rclient *c = arg;
    double t0 = tu_now();
    redisContext *rc = redisConnect("127.0.0.1", redis.port);
    if (!rc || rc->err) {
        c->err = rc ? rc->err : -1;
        if (rc)
            redisFree(rc);
        return NULL;
    }
    redisReply *r = redisCommand(rc, "BLPOP conc:nothing:%d 0.3", c->id);
    c->ok = r && r->type == REDIS_REPLY_NIL;
    if (!r)
        c->err = rc->err;
    if (r)
        freeReplyObject(r);
    redisFree(rc);
    c->took = tu_now() - t0;
    return NULL;
}

/* 20 SETs and GETs of this client's keys, checked. */
static void *setget_client(void *arg)
{
    struct rclient *c = arg;
    redisContext *rc = redisConnect("127.0.0.1", redis.port);
    if (!rc || rc->err) {
        c->err = rc ? rc->err : -1;
        if (rc)
            redisFree(rc);
        return NULL;
    }
    int good = 0;
    for (int i = 0; i < 20; i++) {
        redisReply *r = redisCommand(rc, "SET conc:%d:%d v%d.%d", c->id, i, c->id, i);
        if (r)
            freeReplyObject(r);
        r = redisCommand(rc, "GET conc:%d:%d", c->id, i);
        char want[32];
        snprintf(want, sizeof want, "v%d.%d", c->id, i);
        if (r && r->type == REDIS_REPLY_STRING && strcmp(r->str, want) == 0)
            good++;
        if (r)
            freeReplyObject(r);
    }
    c->ok = good == 20;
    redisFree(rc);
    return NULL;
}

Test(hiredis, blocking_commands_overlap, .init = redis_up, .fini = redis_down)
{
    enum { N = 20 };
    struct rclient c[N];
    conc_green_t *g[N];
    conc_green_t *t = ticker_start();
    double t0 = tu_now();
    for (int i = 0; i < N; i++) {
        c[i] = (struct rclient){.id = i};
        cr_assert_eq(conc_go(&g[i], blpop_client, &c[i]), 0);
    }
    for (int i = 0; i < N; i++)
        join_free(g[i]);
    double took = tu_now() - t0;
    int k = ticker_stop(t);
    for (int i = 0; i < N; i++)
        cr_assert(c[i].ok, "client %d: err %d", i, c[i].err);
    cr_assert_lt(took, 0.3 * 5, "%d BLPOPs of 0.3 s took %.2f s: they did not overlap", N, took);
    cr_assert_gt(k, 20, "ticks: %d", k);
}

Test(hiredis, many_clients_set_get, .init = redis_up, .fini = redis_down)
{
    enum { N = 50 };
    struct rclient c[N];
    conc_green_t *g[N];
    for (int i = 0; i < N; i++) {
        c[i] = (struct rclient){.id = i};
        cr_assert_eq(conc_go(&g[i], setget_client, &c[i]), 0);
    }
    for (int i = 0; i < N; i++)
        join_free(g[i]);
    for (int i = 0; i < N; i++)
        cr_assert(c[i].ok, "client %d: err %d", i, c[i].err);
}

/* With a cut errno hiredis does not retry (it retries EINTR), a kill
 * ends redisCommand with an I/O error at once. */
Test(hiredis, kill_ends_a_blocked_command, .init = redis_up, .fini = redis_down)
{
    set_cut_errno(ECANCELED);
    struct rclient c = {.id = 99};
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, blpop_client, &c), 0);
    conc_sleep(0.1);
    double t0 = tu_now();
    cr_assert_eq(conc_green_kill(g, true, 5), 0);
    conc_green_free(g);
    set_cut_errno(EINTR);
    cr_assert_lt(tu_now() - t0, 0.25, "the kill waited for the server's answer");
    cr_assert_eq(c.ok, 0);
    cr_assert_eq(c.err, REDIS_ERR_IO);
}
#else
Test(hiredis, not_built)
{
    cr_skip_test("hiredis tests skipped: libhiredis-dev was not found at configure time");
}
#endif

/* ---------------------------------------------------- libcurl, unmodified */

#ifdef CONC_PATCH_TEST_CURL
/* A small HTTP/1.1 keep-alive server on the green threads of its own OS
 * thread, answering every request after `delay` seconds. */
static struct {
    int lfd, port;
    double delay;
    _Atomic bool stop;
    _Atomic int served;
} srv;

static void *http_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello";
    char buf[8192];
    size_t have = 0;
    for (;;) {
        ssize_t r = conc_read(fd, buf + have, sizeof buf - have, 10);
        if (r <= 0)
            break;
        have += (size_t)r;
        char *end;
        while ((end = memmem(buf, have, "\r\n\r\n", 4))) {
            size_t used = (size_t)(end + 4 - buf);
            conc_sleep(srv.delay);
            if (conc_write_all(fd, resp, sizeof resp - 1, NULL, 10) != 0)
                goto out;
            atomic_fetch_add(&srv.served, 1);
            memmove(buf, buf + used, have - used);
            have -= used;
        }
        if (have == sizeof buf)
            break;
    }
out:
    conc_close(fd);
    return NULL;
}

static void *http_server(void *arg)
{
    (void)arg;
    while (!atomic_load(&srv.stop)) {
        int c = conc_accept(srv.lfd, NULL, NULL, 0.05);
        if (c >= 0)
            conc_go(NULL, http_conn, (void *)(intptr_t)c);
    }
    conc_sleep(0.2); /* let the connections see their clients close */
    return NULL;
}

static size_t sink(char *p, size_t size, size_t n, void *ud)
{
    size_t *got = ud;
    (void)p;
    *got += size * n;
    return size * n;
}

struct cclient {
    int reqs, ok;
};

static void *curl_client(void *arg)
{
    struct cclient *c = arg;
    CURL *h = curl_easy_init();
    if (!h)
        return NULL;
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", srv.port);
    size_t got = 0;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &got);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
    for (int i = 0; i < c->reqs; i++) {
        got = 0;
        long code = 0;
        if (curl_easy_perform(h) == CURLE_OK && curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK &&
            code == 200 && got == 5)
            c->ok++;
    }
    curl_easy_cleanup(h);
    return NULL;
}

/* n green threads, each making reqs requests; returns the seconds taken. */
static double curl_run(int n, int reqs)
{
    struct cclient *c = calloc((size_t)n, sizeof *c);
    conc_green_t **g = calloc((size_t)n, sizeof *g);
    double t0 = tu_now();
    for (int i = 0; i < n; i++) {
        c[i].reqs = reqs;
        cr_assert_eq(conc_go(&g[i], curl_client, &c[i]), 0);
    }
    for (int i = 0; i < n; i++)
        join_free(g[i]);
    double took = tu_now() - t0;
    for (int i = 0; i < n; i++)
        cr_assert_eq(c[i].ok, reqs, "client %d: %d of %d requests succeeded", i, c[i].ok, reqs);
    free(c);
    free(g);
    return took;
}

/* 100 green threads × 20 requests on one OS thread finish in about the
 * time of one client, not 100 times it (the server takes 5 ms a request,
 * so one client needs at least 0.1 s). */
Test(curl, hundred_green_clients_overlap, .timeout = 120)
{
    need_patch();
    cr_assert_eq(curl_global_init(CURL_GLOBAL_DEFAULT), 0);
    srv.delay = 0.005;
    cr_assert_eq(conc_tcp_listen("127.0.0.1", 0, 0, &srv.lfd), 0);
    srv.port = conc_socket_port(srv.lfd);
    conc_thread_t *th;
    cr_assert_eq(conc_thread_spawn(&th, http_server, NULL, NULL), 0);
    double one = curl_run(1, 20);
    double hundred = curl_run(100, 20);
    atomic_store(&srv.stop, true);
    cr_assert_eq(conc_thread_join(th, 10, NULL), 0);
    conc_thread_free(th);
    conc_close(srv.lfd);
    curl_global_cleanup();
    fprintf(stderr, "curl: 1 client x 20 requests: %.3f s; 100 green clients x 20: %.3f s (%.1fx)\n", one,
            hundred, hundred / one);
    cr_assert_geq(one, 20 * srv.delay);
    cr_assert_eq(atomic_load(&srv.served), 20 + 2000);
    cr_assert_lt(hundred, 20 * one, "100 clients took %.2f s, one took %.2f s: not concurrent", hundred, one);
}
#else
Test(curl, not_built) { cr_skip_test("libcurl tests skipped: libcurl was not found at configure time"); }
#endif

/* libconc's own calls are not patched: conc_sleep_thread ("sleep the
 * calling thread", time.sleep) still blocks the OS thread when a green
 * thread calls it, so the ticker cannot run meanwhile. (Under a sanitizer
 * its interceptor sits between libconc and the patch and hides who
 * called: not checked there.) */
static void *sleep_thread_body(void *arg)
{
    int *rc = arg;
    *rc = conc_sleep_thread(0.1);
    return NULL;
}

Test(patch, libconc_own_calls_pass_through)
{
    need_patch();
    if (TU_SANITIZED)
        cr_skip_test("a sanitizer's interceptor hides the caller of clock_nanosleep");
    conc_green_t *t = ticker_start();
    conc_yield(); /* the ticker ticks once, then sleeps 1 ms */
    int rc = -7;
    run_green(sleep_thread_body, &rc);
    int k = ticker_stop(t);
    cr_assert_eq(rc, 0);
    cr_assert_lt(k, 10, "the ticker ran %d times during an OS-thread sleep", k);
}

/* MSG_WAITALL has no effect on datagram sockets (recv(2)): a recv with a
 * buffer larger than the datagram returns that one datagram, and never
 * glues the next one onto it. */
static _Atomic ssize_t dg_got = -2;
static char dg_buf[64];

static void *dgram_waitall_body(void *arg)
{
    int fd = *(int *)arg;
    atomic_store(&dg_got, recv(fd, dg_buf, sizeof dg_buf, MSG_WAITALL));
    return NULL;
}

Test(patch, recv_waitall_datagram_is_one_datagram, .timeout = TU_TIMEOUT)
{
    need_patch();
    int types[2] = {SOCK_DGRAM, SOCK_SEQPACKET};
    for (int i = 0; i < 2; i++) {
        int p[2];
        cr_assert_eq(socketpair(AF_UNIX, types[i] | SOCK_CLOEXEC, 0, p), 0);
        cr_assert_eq(send(p[1], "0123456789", 10, 0), 10);
        cr_assert_eq(send(p[1], "abcde", 5, 0), 5);
        atomic_store(&dg_got, -2);
        memset(dg_buf, 0, sizeof dg_buf);
        run_green(dgram_waitall_body, &p[0]);
        cr_assert_eq(atomic_load(&dg_got), 10, "type %d: recv returned %zd (%.15s)", types[i],
                     (ssize_t)atomic_load(&dg_got), dg_buf);
        char rest[16];
        cr_assert_eq(recv(p[0], rest, sizeof rest, MSG_DONTWAIT), 5);
        close(p[0]);
        close(p[1]);
    }
}
